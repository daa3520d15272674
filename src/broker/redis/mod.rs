//! `RedisBroker`: ids and history in Redis, so any number of nodes share one
//! ordered history and a client may resume on any node.
//!
//! Publish runs one Lua script that assigns ids (from a Redis Stream's `ms-seq`
//! ids, so they are unique and increasing across all nodes), appends each event to
//! its stream's history (a Redis Stream trimmed to the buffer size and age) and
//! publishes a notification, atomically. Each node's [`listener`] subscribes to the
//! channels of the streams its own subscribers need, receives notifications in id
//! order on one connection, encodes each event once and feeds the local registry.
//! `listen` waits for the channel subscription, `read` is one atomic script over
//! several streams, so listen-then-read is exact (the node drops seam duplicates).
//!
//! Faults: publishes and new subscriptions answer 503 while Redis is unreachable;
//! `/readyz` fails; connected subscribers stay connected; when the link returns, the
//! listener re-subscribes and delivers what was stored meanwhile from history (or a
//! gap notice where history no longer holds it). A Redis that lost its data is
//! noticed by its missing epoch: clients get gap notices, ids keep increasing.

mod listener;
mod scripts;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError};
use crate::config::Config;
use crate::event::{EventId, EventType, Frame, NewEvent};
use crate::history::{HistoryRead, StreamHistory as StreamRead};
use crate::sse;
use crate::stream::{StreamName, StreamRegistry};

use listener::{Listener, ListenerCommand};

/// A Redis Stream id `ms-seq` as a gateway id.
fn id_from_redis(text: &str) -> Result<EventId, BrokerError> {
    let invalid = || BrokerError::Unavailable(format!("unexpected Redis stream id `{text}`"));
    let (ms, seq) = text.split_once('-').ok_or_else(invalid)?;
    let (ms, seq): (u64, u64) = (ms.parse().map_err(|_| invalid())?, seq.parse().map_err(|_| invalid())?);
    EventId::from_parts(ms, seq).ok_or_else(invalid)
}

/// A gateway id as a Redis Stream id.
fn id_to_redis(id: EventId) -> String {
    format!("{}-{}", id.millis(), id.sequence())
}

/// Key names for one prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }
    fn seq(&self) -> String {
        format!("{}seq", self.prefix)
    }
    fn idle(&self) -> String {
        format!("{}idle", self.prefix)
    }
    fn trimmed(&self) -> String {
        format!("{}trimmed", self.prefix)
    }
    fn channel(&self, stream: &StreamName) -> String {
        format!("{}n:{stream}", self.prefix)
    }
    fn stream_of_channel(&self, channel: &str) -> Option<StreamName> {
        let name = channel.strip_prefix(&self.prefix)?.strip_prefix("n:")?;
        StreamName::try_new(name).ok()
    }
}

/// Command connections, created in the background and replaced when lost.
#[derive(Debug, Default)]
struct Connections {
    managers: Mutex<Vec<ConnectionManager>>,
    next: AtomicUsize,
}

impl Connections {
    fn get(&self) -> Result<ConnectionManager, BrokerError> {
        let managers = self.managers.lock().unwrap_or_else(PoisonError::into_inner);
        if managers.is_empty() {
            return Err(BrokerError::Unavailable("not connected to Redis".to_owned()));
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % managers.len();
        Ok(managers[index].clone())
    }

    fn set(&self, managers: Vec<ConnectionManager>) {
        *self.managers.lock().unwrap_or_else(PoisonError::into_inner) = managers;
    }

    fn is_empty(&self) -> bool {
        self.managers.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }
}

/// State shared by the backend and its listener task.
#[derive(Debug)]
struct Shared {
    client: redis::Client,
    keys: Keys,
    connections: Connections,
    registry: Arc<StreamRegistry>,
    buffer_size: usize,
    ttl_ms: u64,
    /// Proposed epoch if this node finds Redis without one.
    epoch_seed: String,
    publish_script: redis::Script,
    replay_script: redis::Script,
    reclaim_script: redis::Script,
    /// Whether the last health check reached Redis.
    commands_ok: AtomicBool,
    /// Whether the notification link is subscribed and caught up.
    notifications_ok: AtomicBool,
}

impl Shared {
    fn unavailable(error: &redis::RedisError) -> BrokerError {
        BrokerError::Unavailable(format!("redis: {error}"))
    }

    /// Runs the replay script for `streams` after `after`.
    async fn read_history(&self, streams: &[StreamName], after: &str) -> Result<RedisHistory, BrokerError> {
        let mut connection = self.connections.get()?;
        let mut invocation = self.replay_script.prepare_invoke();
        invocation
            .key(self.keys.meta())
            .key(self.keys.seq())
            .key(self.keys.trimmed())
            .arg(&self.keys.prefix)
            .arg(self.buffer_size)
            .arg(self.ttl_ms)
            .arg(&self.epoch_seed)
            .arg(after);
        for stream in streams {
            invocation.arg(stream.as_str());
        }
        let value: Value = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| Self::unavailable(&error))?;
        RedisHistory::parse(&value)
    }
}

/// One consistent read of several streams' history, as the script returns it.
#[derive(Debug)]
struct RedisHistory {
    epoch: String,
    floor: EventId,
    reclaimed: EventId,
    last_issued: EventId,
    streams: Vec<StreamHistory>,
}

#[derive(Debug)]
struct StreamHistory {
    name: StreamName,
    present: bool,
    trimmed_through: EventId,
    frames: Vec<Arc<Frame>>,
}

impl RedisHistory {
    fn parse(value: &Value) -> Result<Self, BrokerError> {
        let items = array(value)?;
        let [epoch, floor, reclaimed, last, streams @ ..] = items else {
            return Err(malformed());
        };
        let streams = streams.iter().map(StreamHistory::parse).collect::<Result<_, _>>()?;
        Ok(Self {
            epoch: text(epoch)?,
            floor: id_from_redis(&text(floor)?)?,
            reclaimed: id_from_redis(&text(reclaimed)?)?,
            last_issued: id_from_redis(&text(last)?)?,
            streams,
        })
    }

    /// The read as the node's gap logic takes it: a stream's events are known
    /// above the epoch's floor and above what its history lost (trimmed, or the whole
    /// history reclaimed).
    fn into_read(self) -> HistoryRead {
        let streams = self
            .streams
            .into_iter()
            .map(|stream| {
                let lost = if stream.present {
                    stream.trimmed_through
                } else {
                    self.reclaimed
                };
                StreamRead {
                    name: stream.name,
                    known_after: lost.max(self.floor),
                    frames: stream.frames,
                }
            })
            .collect();
        HistoryRead {
            last_issued: self.last_issued,
            streams,
        }
    }
}

impl StreamHistory {
    fn parse(value: &Value) -> Result<Self, BrokerError> {
        let [name, present, trimmed_through, entries] = array(value)? else {
            return Err(malformed());
        };
        let name = StreamName::try_new(&text(name)?).map_err(|_| malformed())?;
        let present = matches!(present, Value::Int(1));
        let frames = array(entries)?.iter().map(frame_from_entry).collect::<Result<_, _>>()?;
        Ok(Self {
            name,
            present,
            trimmed_through: id_from_redis(&text(trimmed_through)?)?,
            frames,
        })
    }
}

/// `[id, [t, type, d, data]]` from XRANGE, encoded once.
fn frame_from_entry(entry: &Value) -> Result<Arc<Frame>, BrokerError> {
    let [id, fields] = array(entry)? else {
        return Err(malformed());
    };
    let id = id_from_redis(&text(id)?)?;
    let (mut event_type, mut data) = (String::new(), String::new());
    for pair in array(fields)?.chunks(2) {
        match (pair.first().map(text).transpose()?.as_deref(), pair.get(1)) {
            (Some("t"), Some(value)) => event_type = text(value)?,
            (Some("d"), Some(value)) => data = text(value)?,
            _ => {}
        }
    }
    Ok(Arc::new(encode_frame(id, &event_type, &data)))
}

/// Encodes an event read from Redis; an empty type means untyped.
fn encode_frame(id: EventId, event_type: &str, data: &str) -> Frame {
    // Types were validated at publish; an invalid one read back is dropped, not sent.
    let event_type = EventType::try_new(event_type).ok();
    Frame {
        id,
        published_at: Instant::now(),
        bytes: sse::encode_event(id, event_type.as_ref(), data),
    }
}

fn array(value: &Value) -> Result<&[Value], BrokerError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed()),
    }
}

fn text(value: &Value) -> Result<String, BrokerError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| malformed()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(number) => Ok(number.to_string()),
        _ => Err(malformed()),
    }
}

fn malformed() -> BrokerError {
    BrokerError::Unavailable("unexpected reply from Redis".to_owned())
}

/// A failed publish: "not stored" when Redis refused it or was never reached,
/// "outcome unknown" when the request may have reached Redis but no answer came.
fn publish_error(error: &redis::RedisError) -> BrokerError {
    let reached_redis = error.is_timeout() || error.is_connection_dropped() || error.is_io_error();
    // A server error reply means the script was refused or failed before writing.
    if reached_redis && error.code().is_none() && !error.is_connection_refusal() {
        BrokerError::Timeout(format!("redis: {error}"))
    } else {
        Shared::unavailable(error)
    }
}

/// The Redis broker.
#[derive(Debug)]
pub struct RedisBroker {
    shared: Arc<Shared>,
    listener: mpsc::Sender<ListenerCommand>,
    stop: CancellationToken,
}

impl RedisBroker {
    /// Creates the broker and starts its listener, which connects (and reconnects)
    /// in the background: a node starts even while Redis is down, and is not ready
    /// until Redis answers.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the URL cannot be parsed.
    pub fn start(config: &Config, registry: Arc<StreamRegistry>) -> Result<Arc<Self>, BrokerError> {
        let redis = &config.backend.redis;
        if redis.url.expose().starts_with("rediss://") {
            // rustls needs one process-wide crypto provider; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(redis.url.expose())
            .map_err(|_| BrokerError::Unavailable("backend.redis.url is not a valid Redis URL".to_owned()))?;
        let mut seed = [0_u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut seed);
        let shared = Arc::new(Shared {
            client,
            keys: Keys {
                prefix: redis.key_prefix.clone(),
            },
            connections: Connections::default(),
            registry,
            buffer_size: config.streams.buffer_size,
            ttl_ms: u64::try_from(config.streams.buffer_ttl.as_millis()).unwrap_or(u64::MAX),
            epoch_seed: hex::encode(seed),
            publish_script: redis::Script::new(&scripts::publish()),
            replay_script: redis::Script::new(&scripts::replay()),
            reclaim_script: redis::Script::new(&scripts::reclaim()),
            commands_ok: AtomicBool::new(false),
            notifications_ok: AtomicBool::new(false),
        });
        let stop = CancellationToken::new();
        let (listener, commands) = mpsc::channel(1024);
        tokio::spawn(Listener::new(Arc::clone(&shared), redis.clone()).run(commands, stop.clone()));
        Ok(Arc::new(Self { shared, listener, stop }))
    }

    /// Asks the listener to subscribe to the channels of `streams` and waits until
    /// Redis confirmed, so no notification after this point is missed.
    async fn ensure_channels(&self, streams: &[StreamName]) -> Result<(), BrokerError> {
        let (reply, confirmed) = oneshot::channel();
        let command = ListenerCommand::Subscribe {
            streams: streams.to_vec(),
            reply,
        };
        let closed = || BrokerError::Unavailable("listener stopped".to_owned());
        self.listener.send(command).await.map_err(|_| closed())?;
        confirmed.await.map_err(|_| closed())?
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>, BrokerError> {
        let shared = &self.shared;
        // Known to be unreachable: refuse without sending, so the answer is a clean
        // "not stored" (503) rather than "outcome unknown" (504).
        if !shared.commands_ok.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable(
                "Redis did not answer the last health check".to_owned(),
            ));
        }
        let mut connection = shared.connections.get()?;
        let mut invocation = shared.publish_script.prepare_invoke();
        invocation
            .key(shared.keys.meta())
            .key(shared.keys.seq())
            .key(shared.keys.idle())
            .key(shared.keys.trimmed())
            .arg(&shared.keys.prefix)
            .arg(shared.buffer_size)
            .arg(shared.ttl_ms)
            .arg(&shared.epoch_seed);
        for event in &events {
            invocation
                .arg(event.stream.as_str())
                .arg(event.event_type.as_ref().map_or("", EventType::as_str))
                .arg(event.data.as_str());
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|error| publish_error(&error))?;
        reply.iter().skip(1).map(|id| id_from_redis(id)).collect()
    }

    async fn listen(&self, streams: &[StreamName]) -> Result<(), BrokerError> {
        self.ensure_channels(streams).await
    }

    async fn read(&self, streams: &[StreamName], after: EventId) -> Result<HistoryRead, BrokerError> {
        let history = self.shared.read_history(streams, &id_to_redis(after)).await?;
        Ok(history.into_read())
    }

    fn is_ready(&self) -> bool {
        self.shared.commands_ok.load(Ordering::Acquire) && self.shared.notifications_ok.load(Ordering::Acquire)
    }

    async fn close(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_stream_ids_map_to_gateway_ids_and_back() {
        let id = id_from_redis("1882449449004-3").unwrap();
        assert_eq!(id.as_u64(), (1_882_449_449_004 << 20) | 3);
        assert_eq!(id_to_redis(id), "1882449449004-3");
        assert!(id_from_redis("1-1048576").is_err());
        assert!(id_from_redis("nope").is_err());
        assert!(id_from_redis("1-2").unwrap() < id_from_redis("2-0").unwrap());
    }

    #[test]
    fn channels_map_back_to_streams() {
        let keys = Keys {
            prefix: "gw:".to_owned(),
        };
        let stream = StreamName::try_new("prices.eur").unwrap();
        assert_eq!(keys.stream_of_channel(&keys.channel(&stream)), Some(stream));
        assert_eq!(keys.stream_of_channel("other:n:x"), None);
    }
}
