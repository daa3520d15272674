//! `RedisBackend`: ids and history in Redis, so any number of nodes share one
//! ordered history and a client may resume on any node.
//!
//! Publish runs one Lua script that assigns ids (from a Redis Stream's `ms-seq`
//! ids, so they are unique and increasing across all nodes), appends each event to
//! its stream's history (a Redis Stream trimmed to the buffer size and age) and
//! publishes a notification, atomically. Each node's [`listener`] subscribes to the
//! channels of the streams its own subscribers need, receives notifications in id
//! order on one connection, encodes each event once and feeds the local registry.
//! A subscriber attaches locally, waits for the channel subscription, then reads the
//! replay in one atomic script; the subscription drops seam duplicates by id.
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

use super::{Backend, BackendError, Replay, Resume};
use crate::config::Config;
use crate::event::{EventId, EventType, Frame, NewEvent};
use crate::sse;
use crate::stream::{StreamName, StreamRegistry, SubscriberQueue};

use listener::{Listener, ListenerCommand};

/// Bits of an [`EventId`] below the millisecond part, as in `event.rs`.
const SEQUENCE_BITS: u32 = 20;

/// A Redis Stream id `ms-seq` as a gateway id.
fn id_from_redis(text: &str) -> Result<EventId, BackendError> {
    let invalid = || BackendError::Unavailable(format!("unexpected Redis stream id `{text}`"));
    let (ms, seq) = text.split_once('-').ok_or_else(invalid)?;
    let (ms, seq): (u64, u64) = (ms.parse().map_err(|_| invalid())?, seq.parse().map_err(|_| invalid())?);
    if seq >= 1 << SEQUENCE_BITS || ms >= 1 << (64 - SEQUENCE_BITS) {
        return Err(invalid());
    }
    Ok(EventId::from_u64((ms << SEQUENCE_BITS) | seq))
}

/// A gateway id as a Redis Stream id.
fn id_to_redis(id: EventId) -> String {
    let raw = id.as_u64();
    format!("{}-{}", raw >> SEQUENCE_BITS, raw & ((1 << SEQUENCE_BITS) - 1))
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
    fn get(&self) -> Result<ConnectionManager, BackendError> {
        let managers = self.managers.lock().unwrap_or_else(PoisonError::into_inner);
        if managers.is_empty() {
            return Err(BackendError::Unavailable("not connected to Redis".to_owned()));
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
    fn unavailable(error: &redis::RedisError) -> BackendError {
        BackendError::Unavailable(format!("redis: {error}"))
    }

    /// Runs the replay script for `streams` after `after`.
    async fn read_history(&self, streams: &[StreamName], after: &str) -> Result<History, BackendError> {
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
        History::parse(&value)
    }
}

/// One consistent read of several streams' history.
#[derive(Debug)]
struct History {
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

impl History {
    fn parse(value: &Value) -> Result<Self, BackendError> {
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

    /// Whether every event of `stream` after `after` is in this read.
    fn is_complete_after(&self, stream: &StreamHistory, after: EventId) -> bool {
        let known_after = if stream.present {
            stream.trimmed_through
        } else {
            self.reclaimed
        };
        after >= self.floor && after >= known_after
    }
}

impl StreamHistory {
    fn parse(value: &Value) -> Result<Self, BackendError> {
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
fn frame_from_entry(entry: &Value) -> Result<Arc<Frame>, BackendError> {
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

fn array(value: &Value) -> Result<&[Value], BackendError> {
    match value {
        Value::Array(items) => Ok(items),
        _ => Err(malformed()),
    }
}

fn text(value: &Value) -> Result<String, BackendError> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).map_err(|_| malformed()),
        Value::SimpleString(text) => Ok(text.clone()),
        Value::Int(number) => Ok(number.to_string()),
        _ => Err(malformed()),
    }
}

fn malformed() -> BackendError {
    BackendError::Unavailable("unexpected reply from Redis".to_owned())
}

/// A failed publish: "not stored" when Redis refused it or was never reached,
/// "outcome unknown" when the request may have reached Redis but no answer came.
fn publish_error(error: &redis::RedisError) -> BackendError {
    let reached_redis = error.is_timeout() || error.is_connection_dropped() || error.is_io_error();
    // A server error reply means the script was refused or failed before writing.
    if reached_redis && error.code().is_none() && !error.is_connection_refusal() {
        BackendError::Timeout(format!("redis: {error}"))
    } else {
        Shared::unavailable(error)
    }
}

/// The Redis backend.
#[derive(Debug)]
pub struct RedisBackend {
    shared: Arc<Shared>,
    listener: mpsc::Sender<ListenerCommand>,
    stop: CancellationToken,
}

impl RedisBackend {
    /// Creates the backend and starts its listener, which connects (and reconnects)
    /// in the background: a node starts even while Redis is down, and is not ready
    /// until Redis answers.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the URL cannot be parsed.
    pub fn start(config: &Config, registry: Arc<StreamRegistry>) -> Result<Arc<Self>, BackendError> {
        let redis = &config.backend.redis;
        if redis.url.expose().starts_with("rediss://") {
            // rustls needs one process-wide crypto provider; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(redis.url.expose())
            .map_err(|_| BackendError::Unavailable("backend.redis.url is not a valid Redis URL".to_owned()))?;
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
    async fn ensure_channels(&self, streams: &[StreamName]) -> Result<(), BackendError> {
        let (reply, confirmed) = oneshot::channel();
        let command = ListenerCommand::Subscribe {
            streams: streams.to_vec(),
            reply,
        };
        let closed = || BackendError::Unavailable("listener stopped".to_owned());
        self.listener.send(command).await.map_err(|_| closed())?;
        confirmed.await.map_err(|_| closed())?
    }

    async fn replay(&self, streams: &[StreamName], resume: Resume) -> Result<Replay, BackendError> {
        let after = match resume {
            Resume::After(id) => id,
            Resume::Unrecognised => EventId::ZERO,
        };
        let history = self.shared.read_history(streams, &id_to_redis(after)).await?;
        let recognised = matches!(resume, Resume::After(id) if id <= history.last_issued);
        let mut replay = Replay::default();
        for stream in &history.streams {
            if !recognised || !history.is_complete_after(stream, after) {
                replay.gaps.push(stream.name.clone());
            }
            replay.frames.extend(stream.frames.iter().cloned());
        }
        replay.frames.sort_unstable_by_key(|frame| frame.id);
        replay.resumed_from = recognised.then_some(after);
        Ok(replay)
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>, BackendError> {
        let shared = &self.shared;
        // Known to be unreachable: refuse without sending, so the answer is a clean
        // "not stored" (503) rather than "outcome unknown" (504).
        if !shared.commands_ok.load(Ordering::Acquire) {
            return Err(BackendError::Unavailable(
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

    async fn subscribe(
        &self,
        streams: &[StreamName],
        queue: &SubscriberQueue,
        resume: Option<Resume>,
    ) -> Result<Replay, BackendError> {
        let registry = &self.shared.registry;
        registry.attach_all(streams, queue)?;
        let replay = async {
            self.ensure_channels(streams).await?;
            match resume {
                Some(resume) => self.replay(streams, resume).await,
                None => Ok(Replay::default()),
            }
        };
        match replay.await {
            Ok(replay) => Ok(replay),
            Err(error) => {
                registry.detach(streams, queue);
                Err(error)
            }
        }
    }

    fn unsubscribe(&self, streams: &[StreamName], queue: &SubscriberQueue) {
        // Channels of streams left without local subscribers are dropped by the
        // listener's periodic clean-up, which is ordered with new subscriptions.
        self.shared.registry.detach(streams, queue);
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
