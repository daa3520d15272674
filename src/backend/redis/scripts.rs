//! Lua scripts run atomically by Redis. Keys, for prefix `P`:
//! - `P` `meta`: hash `epoch` (changes when Redis lost its data), `floor` (every
//!   event of this epoch has a greater id), `reclaimed` (events of streams whose
//!   history key was reclaimed are known only above this id);
//! - `P` `seq`: a one-entry Redis Stream whose auto-generated `ms-seq` ids are the
//!   gateway's ids: strictly increasing across all streams and nodes;
//! - `P` `s:NAME`: a Redis Stream per gateway stream, trimmed to the buffer size/age;
//! - `P` `idle`: sorted set of stream names by last publish, for reclamation;
//! - channel `P` `n:NAME`: one notification per event, `id \n type \n data`.
//!
//! Redis Cluster is not supported: these scripts touch keys in many hash slots.

/// Shared prelude: ids as `ms-seq` strings, and the epoch (created when missing, which
/// is how a flushed or restarted-empty Redis is noticed).
const PRELUDE: &str = r"
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local function ensure_epoch(meta, seq, new_epoch)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then return epoch end
  local floor = redis.call('XADD', seq, 'MAXLEN', '1', '*', 'e', '1')
  redis.call('HSET', meta, 'epoch', new_epoch, 'floor', floor, 'reclaimed', '0-0')
  return new_epoch
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function max_deleted(key)
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'max-deleted-entry-id' then return info[i + 1] end
  end
  return '0-0'
end
";

/// KEYS: meta, seq, idle. ARGV: prefix, buffer_size, ttl_ms (0 = none), new_epoch,
/// then `stream, type, data` per event. Returns `{epoch, id…}`.
pub(super) fn publish() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq, idle = KEYS[1], KEYS[2], KEYS[3]
local prefix, size, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local epoch = ensure_epoch(meta, seq, ARGV[4])
local now = now_ms()
local result = {epoch}
for i = 5, #ARGV, 3 do
  local stream, kind, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = redis.call('XADD', seq, 'MAXLEN', '1', '*', 'e', '1')
  local key = prefix .. 's:' .. stream
  redis.call('XADD', key, 'MAXLEN', size, id, 't', kind, 'd', data)
  if ttl > 0 then
    redis.call('XTRIM', key, 'MINID', tostring(now - ttl))
    redis.call('ZADD', idle, now, stream)
  end
  redis.call('PUBLISH', prefix .. 'n:' .. stream, id .. '\n' .. kind .. '\n' .. data)
  result[#result + 1] = id
end
return result
"
    )
}

/// KEYS: meta, seq. ARGV: prefix, ttl_ms, new_epoch, after (`ms-seq`), streams…
/// Returns `{epoch, floor, reclaimed, last_id, {name, present, max_deleted, entries}…}`,
/// read in one atomic step so the replay is a consistent cut across streams.
pub(super) fn replay() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq = KEYS[1], KEYS[2]
local prefix, ttl, after = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local epoch = ensure_epoch(meta, seq, ARGV[3])
local state = redis.call('HMGET', meta, 'floor', 'reclaimed')
local last = redis.call('XREVRANGE', seq, '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then last_id = last[1][1] end
local now = now_ms()
local result = {epoch, state[1], state[2], last_id}
for i = 5, #ARGV do
  local key = prefix .. 's:' .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    if ttl > 0 then redis.call('XTRIM', key, 'MINID', tostring(now - ttl)) end
    result[#result + 1] = {ARGV[i], 1, max_deleted(key), redis.call('XRANGE', key, '(' .. after, '+')}
  else
    result[#result + 1] = {ARGV[i], 0, '0-0', {}}
  end
end
return result
"
    )
}

/// KEYS: meta, idle. ARGV: prefix, ttl_ms. Trims and deletes history keys idle for
/// longer than the age limit, raising `reclaimed` so resumes stay provable. Bounded
/// to 100 streams per run.
pub(super) fn reclaim() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, idle = KEYS[1], KEYS[2]
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local cutoff = now_ms() - ttl
local names = redis.call('ZRANGEBYSCORE', idle, '-inf', cutoff, 'LIMIT', 0, 100)
local reclaimed = redis.call('HGET', meta, 'reclaimed') or '0-0'
for _, name in ipairs(names) do
  local key = prefix .. 's:' .. name
  if redis.call('EXISTS', key) == 1 then
    redis.call('XTRIM', key, 'MINID', tostring(cutoff))
    if redis.call('XLEN', key) == 0 then
      local deleted = max_deleted(key)
      if id_lt(reclaimed, deleted) then reclaimed = deleted end
      redis.call('DEL', key)
    end
  end
  redis.call('ZREM', idle, name)
end
if redis.call('EXISTS', meta) == 1 then redis.call('HSET', meta, 'reclaimed', reclaimed) end
return #names
"
    )
}
