//! Lua scripts run atomically by Redis. Keys, for prefix `P`:
//! - `P` `meta`: hash `epoch` (changes when Redis lost its data), `floor` (every
//!   event that may have been lost has a smaller id: resumes from below it cannot
//!   be proven complete), `reclaimed` (events of streams whose history key was
//!   reclaimed are known only above this id), `names_since` (the `names` index
//!   lists every stream with history published after this id: a deployment that
//!   ran an older version before has history the index does not know), `instance`
//!   and `replid` (the Redis instance and replication history a node last verified
//!   the data on);
//! - `P` `seq`: a one-entry Redis Stream whose auto-generated `ms-seq` ids are the
//!   gateway's ids: strictly increasing across all streams and nodes;
//! - `P` `s:NAME`: a Redis Stream per gateway stream, trimmed to the buffer size/age;
//!   entries `t` (type), `d` (data) and `j` = `1` when the data is JSON;
//! - `P` `names`: sorted set of the names with history (all scores 0, so a pattern
//!   finds its streams by lexical range), for pattern subscriptions;
//! - `P` `idle`: sorted set of stream names by last publish, for reclamation;
//! - `P` `trimmed`: hash of stream name → newest id removed from its history;
//! - `P` `k:KEY`: an idempotency key: `fingerprint:id,id,…`, expiring with its window;
//! - `P` `revoked`: hash of revocations in force, `s:SUB` / `j:JTI` → `revoked_ms
//!   expires_ms`, with `P` `revoked:exp` (sorted set by expiry) to drop them in time;
//! - channel `P` `revocations`: one message per revocation, `key \n value`;
//! - channel `P` `n:NAME`: one notification per event, `epoch \n id \n type \n kind
//!   \n data` with kind `t` (text) or `j` (JSON); the epoch lets a node notice a
//!   flush before it delivers what came after it. Pattern subscriptions are
//!   `PSUBSCRIBE P n:PREFIX*`, so a node learns of new matching streams without
//!   polling.
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
  redis.call('HSET', meta, 'epoch', new_epoch, 'floor', floor, 'reclaimed', '0-0', 'names_since', floor)
  return new_epoch
end
local function last_id(seq)
  local last = redis.call('XREVRANGE', seq, '+', '-', 'COUNT', 1)
  if #last > 0 then return last[1][1] end
  return '0-0'
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Trims a history to `size` entries and, when `cutoff` (ms) is given, to entries not
-- older than it, recording the newest id removed in the `trimmed` hash: Redis does
-- not remember ids removed by trimming, and resumes need it to prove completeness.
local function trim(trimmed, key, stream, size, cutoff)
  local mark = nil
  local excess = redis.call('XLEN', key) - size
  if excess > 0 then
    local removed = redis.call('XRANGE', key, '-', '+', 'COUNT', excess)
    mark = removed[#removed][1]
    redis.call('XTRIM', key, 'MAXLEN', size)
  end
  if cutoff then
    local expired = redis.call('XREVRANGE', key, '(' .. cutoff .. '-0', '-', 'COUNT', 1)
    if #expired > 0 then
      mark = expired[1][1]
      redis.call('XTRIM', key, 'MINID', cutoff .. '-0')
    end
  end
  if mark then
    local previous = redis.call('HGET', trimmed, stream)
    if (not previous) or id_lt(previous, mark) then redis.call('HSET', trimmed, stream, mark) end
  end
end
-- The stream names a list of selectors covers, once each: `=NAME` for a name,
-- `*PREFIX` for every name with history starting with PREFIX (all for an empty one).
local function matching(names, selectors, first)
  local seen, result = {}, {}
  local function add(name)
    if not seen[name] then
      seen[name] = true
      result[#result + 1] = name
    end
  end
  for i = first, #selectors do
    local kind, rest = string.sub(selectors[i], 1, 1), string.sub(selectors[i], 2)
    if kind == '=' then
      add(rest)
    elseif rest == '' then
      for _, name in ipairs(redis.call('ZRANGE', names, '-', '+', 'BYLEX')) do add(name) end
    else
      for _, name in ipairs(redis.call('ZRANGE', names, '[' .. rest, '[' .. rest .. '\255', 'BYLEX')) do add(name) end
    end
  end
  return result
end
";

/// KEYS: meta, seq, idle, trimmed, names. ARGV: prefix, buffer_size, ttl_ms (0 =
/// none), new_epoch, idempotency key ('' = none), its fingerprint, its ttl_ms, then
/// `stream, type, kind (t or j), data` per event. Returns `{'new', id…}`, `{'repeated', id…}` (the
/// key's first ids; nothing stored, the key's entry touched so a WAIT after this
/// covers it) or `{'conflict'}`.
pub(super) fn publish() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq, idle, trimmed, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, size, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local key, fingerprint, key_ttl = ARGV[5], ARGV[6], ARGV[7]
local key_name = prefix .. 'k:' .. key
if key ~= '' then
  local existing = redis.call('GET', key_name)
  if existing then
    local seen, ids = string.match(existing, '^(%x+):(.*)$')
    if seen ~= fingerprint then return {'conflict'} end
    redis.call('PEXPIRE', key_name, math.max(redis.call('PTTL', key_name), 1))
    local result = {'repeated'}
    for id in string.gmatch(ids, '[^,]+') do result[#result + 1] = id end
    return result
  end
end
local epoch = ensure_epoch(meta, seq, ARGV[4])
local now = now_ms()
local cutoff = nil
if ttl > 0 then cutoff = now - ttl end
local result = {'new'}
for i = 8, #ARGV, 4 do
  local stream, kind, data_kind, data = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local id = redis.call('XADD', seq, 'MAXLEN', '1', '*', 'e', '1')
  local history = prefix .. 's:' .. stream
  if data_kind == 'j' then
    redis.call('XADD', history, id, 't', kind, 'd', data, 'j', '1')
  else
    redis.call('XADD', history, id, 't', kind, 'd', data)
  end
  trim(trimmed, history, stream, size, cutoff)
  if cutoff then redis.call('ZADD', idle, now, stream) end
  redis.call('ZADD', names, 0, stream)
  redis.call('PUBLISH', prefix .. 'n:' .. stream, epoch .. '\n' .. id .. '\n' .. kind .. '\n' .. data_kind .. '\n' .. data)
  result[#result + 1] = id
end
if key ~= '' then
  redis.call('SET', key_name, fingerprint .. ':' .. table.concat(result, ',', 2), 'PX', key_ttl)
end
return result
"
    )
}

/// KEYS: meta, seq. ARGV: run_id, replid, replid2 of the instance, whether a
/// promotion is proven safe ('1': every publish waited for a replica), whether a
/// restart is ('1': trusted and the instance fsyncs every write), the newest id this
/// node knows was issued (`ms-seq`), new_epoch. Decides whether the data on this
/// instance can be missing acknowledged events; when it can, raises the floor to
/// a fresh id (every resume from before gets a gap notice). Also makes sure new ids
/// start above what the node knows was issued. Returns `{verdict, floor}`:
/// `same` (the instance verified before), `proven`, `lost`, or `new` (no data).
pub(super) fn verify() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq = KEYS[1], KEYS[2]
local run_id, replid, replid2 = ARGV[1], ARGV[2], ARGV[3]
local promotion_safe, restart_safe, known, new_epoch = ARGV[4] == '1', ARGV[5] == '1', ARGV[6], ARGV[7]
local verdict
if not redis.call('HGET', meta, 'epoch') then
  ensure_epoch(meta, seq, new_epoch)
  verdict = 'new'
else
  local state = redis.call('HMGET', meta, 'instance', 'replid')
  local instance, known_replid = state[1], state[2]
  if instance == run_id then
    verdict = 'same'
  elseif known_replid and replid2 == known_replid and promotion_safe then
    verdict = 'proven'
  elseif instance and restart_safe and replid2 ~= known_replid then
    verdict = 'proven'
  else
    verdict = 'lost'
  end
end
-- Evidence: an id this node knows was issued that the data does not reach.
if id_lt(last_id(seq), known) then
  redis.call('XADD', seq, 'MAXLEN', '1', known, 'e', '1')
  verdict = 'lost'
end
if verdict == 'lost' then
  local floor = redis.call('XADD', seq, 'MAXLEN', '1', '*', 'e', '1')
  redis.call('HSET', meta, 'floor', floor)
end
-- A deployment started by a version without the names index: patterns resuming
-- from before now cannot see the older streams.
redis.call('HSETNX', meta, 'names_since', last_id(seq))
redis.call('HSET', meta, 'instance', run_id, 'replid', replid)
return {verdict, redis.call('HGET', meta, 'floor')}
"
    )
}

/// KEYS: meta, seq, trimmed, names. ARGV: prefix, buffer_size, ttl_ms, new_epoch,
/// after (`ms-seq`), selectors (`=NAME` or `*PREFIX`)… Returns `{epoch, floor,
/// reclaimed, names_since, last_id, {name, present, trimmed_through, entries}…}`
/// for every stream the selectors cover, read in one atomic step so the replay is
/// a consistent cut across streams. An `after` above every id issued is one this
/// deployment never gave out: everything held is returned (the caller sends a gap
/// notice).
pub(super) fn replay() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq, trimmed, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, size, ttl, after = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
local epoch = ensure_epoch(meta, seq, ARGV[4])
local state = redis.call('HMGET', meta, 'floor', 'reclaimed', 'names_since')
local last = last_id(seq)
if id_lt(last, after) then after = '0-0' end
local cutoff = nil
if ttl > 0 then cutoff = now_ms() - ttl end
local result = {epoch, state[1], state[2], state[3] or last, last}
for _, stream in ipairs(matching(names, ARGV, 6)) do
  local key = prefix .. 's:' .. stream
  if redis.call('EXISTS', key) == 1 then
    trim(trimmed, key, stream, size, cutoff)
    local through = redis.call('HGET', trimmed, stream) or '0-0'
    result[#result + 1] = {stream, 1, through, redis.call('XRANGE', key, '(' .. after, '+')}
  else
    result[#result + 1] = {stream, 0, '0-0', {}}
  end
end
return result
"
    )
}

/// KEYS: meta, seq, trimmed, names. ARGV: prefix, buffer_size, ttl_ms, new_epoch,
/// selectors… Returns `{{name, entry}…}`: the newest held entry of every stream the
/// selectors cover that holds one, read in one atomic step.
pub(super) fn latest() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq, trimmed, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, size, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
ensure_epoch(meta, seq, ARGV[4])
local cutoff = nil
if ttl > 0 then cutoff = now_ms() - ttl end
local result = {}
for _, stream in ipairs(matching(names, ARGV, 5)) do
  local key = prefix .. 's:' .. stream
  if redis.call('EXISTS', key) == 1 then
    trim(trimmed, key, stream, size, cutoff)
    local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    if #newest > 0 then result[#result + 1] = {stream, newest[1]} end
  end
end
return result
"
    )
}

/// KEYS: meta, seq, trimmed. ARGV: prefix, buffer_size, ttl_ms, new_epoch, stream.
/// Returns `{head, newest id or '', held}`: the newest id issued and what the
/// stream holds.
pub(super) fn position() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, seq, trimmed = KEYS[1], KEYS[2], KEYS[3]
local prefix, size, ttl, stream = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
ensure_epoch(meta, seq, ARGV[4])
local key = prefix .. 's:' .. stream
local cutoff = nil
if ttl > 0 then cutoff = now_ms() - ttl end
local newest, held = '', 0
if redis.call('EXISTS', key) == 1 then
  trim(trimmed, key, stream, size, cutoff)
  local entries = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #entries > 0 then newest = entries[1][1] end
  held = redis.call('XLEN', key)
end
return {last_id(seq), newest, held}
"
    )
}

/// KEYS: revoked, revoked:exp. ARGV: channel, key, value, expires_ms. Stores a
/// revocation (keeping the later one of a target), drops expired ones and tells
/// every node.
pub(super) fn revoke() -> String {
    r"
local revoked, expiry = KEYS[1], KEYS[2]
local channel, key, value, expires = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local stale = redis.call('ZRANGEBYSCORE', expiry, '-inf', now_ms, 'LIMIT', 0, 1000)
for _, old in ipairs(stale) do
  redis.call('HDEL', revoked, old)
  redis.call('ZREM', expiry, old)
end
redis.call('HSET', revoked, key, value)
redis.call('ZADD', expiry, expires, key)
redis.call('PUBLISH', channel, key .. '\n' .. value)
return #stale
"
    .to_owned()
}

/// KEYS: meta, idle, trimmed, names. ARGV: prefix, ttl_ms. Deletes history keys idle for
/// longer than the age limit, folding what they lost into `reclaimed` so resumes stay
/// provable. Bounded to 100 streams per run.
pub(super) fn reclaim() -> String {
    format!(
        "{PRELUDE}{}",
        r"
local meta, idle, trimmed, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local cutoff = now_ms() - ttl
local idle_names = redis.call('ZRANGEBYSCORE', idle, '-inf', cutoff, 'LIMIT', 0, 100)
local reclaimed = redis.call('HGET', meta, 'reclaimed') or '0-0'
for _, name in ipairs(idle_names) do
  local key = prefix .. 's:' .. name
  if redis.call('EXISTS', key) == 1 then
    trim(trimmed, key, name, redis.call('XLEN', key), cutoff)
    if redis.call('XLEN', key) == 0 then
      local through = redis.call('HGET', trimmed, name) or '0-0'
      if id_lt(reclaimed, through) then reclaimed = through end
      redis.call('DEL', key)
      redis.call('HDEL', trimmed, name)
      redis.call('ZREM', names, name)
    end
  end
  redis.call('ZREM', idle, name)
end
if redis.call('EXISTS', meta) == 1 then redis.call('HSET', meta, 'reclaimed', reclaimed) end
return #idle_names
"
    )
}
