//! `RedisBroker`: ids and history in Redis, so any number of nodes share one
//! ordered history and a client may resume on any node.
//!
//! Publish runs one Lua script that assigns ids (from a Redis Stream's `ms-seq`
//! ids, so they are unique and increasing across all nodes), appends each event to
//! its stream's history (a Redis Stream trimmed to the buffer size and age),
//! records its idempotency key, and publishes a notification, atomically; with
//! `min_replicas` it then waits (`WAIT`) until that many replicas hold it. Each
//! node's `listener` subscribes to the channels of the streams its own
//! subscribers need, receives notifications in id order on one connection, encodes
//! each event once and feeds the local registry. `listen` waits for the channel
//! subscription, `read` is one atomic script over several streams, so
//! listen-then-read is exact (the node drops seam duplicates).
//!
//! Revocations are stored in a hash (with their expiry) and announced on one
//! channel every listener subscribes; a listener that (re)connects loads the hash
//! after subscribing, so none is missed across a reconnect.
//!
//! Faults: a node publishes and reads only through connections to a master it has
//! verified (`link`, `verify`); any connection failure drops them, and the
//! listener finds the master again (directly or through Sentinel) and verifies it.
//! Meanwhile publishes answer 503 (not sent) and `/readyz` fails; a publish sent
//! but not answered is 504 (outcome unknown). Connected subscribers stay
//! connected; when the link returns, the listener catches them up from history, or
//! sends gap notices where history no longer holds what they missed.

mod link;
mod listener;
mod reply;
mod scripts;
mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError, Position, Published};
use crate::config::{Config, RedisConfig};
use crate::event::{DataKind, EventId, EventType, NewEvent};
use crate::frame::Frame;
use crate::history::HistoryRead;
use crate::idempotency::IdempotencyKey;
use crate::revocation::{Revocation, Revocations};
use crate::stream::{StreamName, StreamPattern, StreamRegistry};

use link::{Connections, Endpoint};
use listener::{Listener, ListenerCommand};
use reply::RedisHistory;

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
    fn names(&self) -> String {
        format!("{}names", self.prefix)
    }
    fn revoked(&self) -> String {
        format!("{}revoked", self.prefix)
    }
    fn revoked_expiry(&self) -> String {
        format!("{}revoked:exp", self.prefix)
    }
    fn revocations_channel(&self) -> String {
        format!("{}revocations", self.prefix)
    }
    fn channel(&self, stream: &StreamName) -> String {
        format!("{}n:{stream}", self.prefix)
    }
    /// The `PSUBSCRIBE` pattern of every channel whose stream starts with `prefix`:
    /// the key prefix with glob characters escaped (names have none).
    fn channel_pattern(&self, prefix: &str) -> String {
        let mut pattern = String::with_capacity(self.prefix.len() + prefix.len() + 4);
        for character in self.prefix.chars() {
            if matches!(character, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(character);
        }
        pattern.push_str("n:");
        pattern.push_str(prefix);
        pattern.push('*');
        pattern
    }
    /// The channel (name) or channel pattern (pattern) that carries `pattern`'s events.
    fn subscription(&self, pattern: &StreamPattern) -> String {
        match pattern.prefix() {
            Some(prefix) => self.channel_pattern(prefix),
            None => pattern.as_name().map(|name| self.channel(name)).unwrap_or_default(),
        }
    }
    fn stream_of_channel(&self, channel: &str) -> Option<StreamName> {
        let name = channel.strip_prefix(&self.prefix)?.strip_prefix("n:")?;
        StreamName::try_new(name).ok()
    }
}

/// What the broker takes from `[backend.redis]` and `[streams]`.
#[derive(Debug, Clone)]
struct Settings {
    redis: RedisConfig,
    buffer_size: usize,
    ttl_ms: u64,
    min_replicas: usize,
    min_replicas_timeout: Duration,
    trust_restarts: bool,
}

/// State shared by the broker and its listener task.
#[derive(Debug)]
struct Shared {
    endpoint: Endpoint,
    keys: Keys,
    connections: Connections,
    registry: Arc<StreamRegistry>,
    /// Where revocations from other nodes (and the stored ones) are put in force.
    revocations: Arc<Revocations>,
    settings: Settings,
    /// This node's part of a new epoch's name (a random value per process).
    epoch_seed: String,
    publish_script: redis::Script,
    replay_script: redis::Script,
    latest_script: redis::Script,
    position_script: redis::Script,
    reclaim_script: redis::Script,
    verify_script: redis::Script,
    revoke_script: redis::Script,
    /// Whether the node holds connections to a verified master.
    commands_ok: AtomicBool,
    /// Whether the notification link is subscribed and caught up.
    notifications_ok: AtomicBool,
    /// The newest id this node knows the deployment issued (acknowledged or
    /// delivered): evidence against a Redis that no longer reaches it.
    high_water: AtomicU64,
    /// Wakes the listener to reconnect at once after a connection failed.
    reconnect: Notify,
}

impl Shared {
    /// A connection to write through. Not verified: refuse without sending, so the
    /// answer is a clean "not stored" (503) rather than "outcome unknown" (504).
    fn writing_connection(&self) -> Result<redis::aio::MultiplexedConnection, BrokerError> {
        if !self.commands_ok.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable(
                "not connected to a verified Redis master".to_owned(),
            ));
        }
        self.connections.get()
    }

    fn unavailable(error: &redis::RedisError) -> BrokerError {
        BrokerError::Unavailable(format!("redis: {error}"))
    }

    /// A fresh epoch name, unique to this creation (two flushes in a row differ).
    fn new_epoch(&self) -> String {
        let mut nonce = [0_u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut nonce);
        format!("{}-{}", self.epoch_seed, hex::encode(nonce))
    }

    fn observe(&self, id: EventId) {
        self.high_water.fetch_max(id.as_u64(), Ordering::AcqRel);
    }

    /// A command failed: drop the connections until the master is verified again.
    fn connection_failed(&self, error: &redis::RedisError) {
        let connection_level = error.is_io_error()
            || error.is_timeout()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || matches!(error.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"));
        if connection_level {
            self.commands_ok.store(false, Ordering::Release);
            self.connections.clear();
            self.reconnect.notify_one();
        }
    }

    /// Prepares `script` with the keys and leading arguments the read scripts share.
    fn read_invocation<'a>(&self, script: &'a redis::Script, names: bool) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.keys.meta())
            .key(self.keys.seq())
            .key(self.keys.trimmed());
        if names {
            invocation.key(self.keys.names());
        }
        invocation
            .arg(&self.keys.prefix)
            .arg(self.settings.buffer_size)
            .arg(self.settings.ttl_ms)
            .arg(self.new_epoch());
        invocation
    }

    async fn run_read(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<Value, BrokerError> {
        let mut connection = self.connections.get()?;
        invocation.invoke_async(&mut connection).await.map_err(|error| {
            self.connection_failed(&error);
            Self::unavailable(&error)
        })
    }

    /// Runs the replay script for the streams `patterns` cover, after `after`.
    async fn read_history(&self, patterns: &[StreamPattern], after: &str) -> Result<RedisHistory, BrokerError> {
        let mut invocation = self.read_invocation(&self.replay_script, true);
        invocation.arg(after);
        for pattern in patterns {
            invocation.arg(selector(pattern));
        }
        RedisHistory::parse(&self.run_read(&invocation).await?)
    }

    /// Waits until `min_replicas` replicas hold every write sent on `connection`.
    async fn wait_for_replicas(&self, connection: &mut redis::aio::MultiplexedConnection) -> Result<(), BrokerError> {
        let wanted = self.settings.min_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let timeout_ms = u64::try_from(self.settings.min_replicas_timeout.as_millis()).unwrap_or(u64::MAX);
        let confirmed: usize = redis::cmd("WAIT")
            .arg(wanted)
            .arg(timeout_ms)
            .query_async(connection)
            .await
            .map_err(|error| {
                self.connection_failed(&error);
                BrokerError::Timeout(format!("redis WAIT: {error}"))
            })?;
        if confirmed < wanted {
            return Err(BrokerError::Timeout(format!(
                "stored on the master, but only {confirmed} of {wanted} replicas confirmed it within \
                 backend.redis.min_replicas_timeout"
            )));
        }
        Ok(())
    }
}

/// A pattern as the read scripts take it: `=NAME` or `*PREFIX`.
fn selector(pattern: &StreamPattern) -> String {
    match pattern.prefix() {
        Some(prefix) => format!("*{prefix}"),
        None => format!("={pattern}"),
    }
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
    /// until a verified master answers.
    ///
    /// # Errors
    /// [`BrokerError::Startup`] when the URL or a sentinel address cannot be read.
    pub fn start(
        config: &Config,
        registry: Arc<StreamRegistry>,
        revocations: Arc<Revocations>,
    ) -> Result<Arc<Self>, BrokerError> {
        let redis = &config.backend.redis;
        if redis.url.expose().starts_with("rediss://") {
            // rustls needs one process-wide crypto provider; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let mut seed = [0_u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut seed);
        let shared = Arc::new(Shared {
            endpoint: Endpoint::from_config(redis)?,
            keys: Keys {
                prefix: redis.key_prefix.clone(),
            },
            connections: Connections::default(),
            registry,
            revocations,
            settings: Settings {
                redis: redis.clone(),
                buffer_size: config.streams.buffer_size,
                ttl_ms: u64::try_from(config.streams.buffer_ttl.as_millis()).unwrap_or(u64::MAX),
                min_replicas: redis.min_replicas,
                min_replicas_timeout: redis.min_replicas_timeout,
                trust_restarts: redis.trust_restarts,
            },
            epoch_seed: hex::encode(seed),
            publish_script: redis::Script::new(&scripts::publish()),
            replay_script: redis::Script::new(&scripts::replay()),
            latest_script: redis::Script::new(&scripts::latest()),
            position_script: redis::Script::new(&scripts::position()),
            reclaim_script: redis::Script::new(&scripts::reclaim()),
            verify_script: redis::Script::new(&scripts::verify()),
            revoke_script: redis::Script::new(&scripts::revoke()),
            commands_ok: AtomicBool::new(false),
            notifications_ok: AtomicBool::new(false),
            high_water: AtomicU64::new(0),
            reconnect: Notify::new(),
        });
        let stop = CancellationToken::new();
        let (listener, commands) = mpsc::channel(1024);
        tokio::spawn(Listener::new(Arc::clone(&shared)).run(commands, stop.clone()));
        Ok(Arc::new(Self { shared, listener, stop }))
    }

    /// Asks the listener to subscribe to the channels (names) and channel patterns
    /// (patterns) of `patterns` and waits until Redis confirmed, so no notification
    /// after this point is missed.
    async fn ensure_channels(&self, patterns: &[StreamPattern]) -> Result<(), BrokerError> {
        let (reply, confirmed) = oneshot::channel();
        let command = ListenerCommand::Subscribe {
            patterns: patterns.to_vec(),
            reply,
        };
        let closed = || BrokerError::Unavailable("listener stopped".to_owned());
        self.listener.send(command).await.map_err(|_| closed())?;
        confirmed.await.map_err(|_| closed())?
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, events: Vec<NewEvent>, key: Option<&IdempotencyKey>) -> Result<Published, BrokerError> {
        let shared = &self.shared;
        let mut connection = shared.writing_connection()?;
        let mut invocation = shared.publish_script.prepare_invoke();
        invocation
            .key(shared.keys.meta())
            .key(shared.keys.seq())
            .key(shared.keys.idle())
            .key(shared.keys.trimmed())
            .key(shared.keys.names())
            .arg(&shared.keys.prefix)
            .arg(shared.settings.buffer_size)
            .arg(shared.settings.ttl_ms)
            .arg(shared.new_epoch())
            .arg(key.map_or("", |key| key.key.as_str()))
            .arg(key.map(|key| hex::encode(key.fingerprint)).unwrap_or_default())
            .arg(key.map_or(0, |key| u64::try_from(key.ttl.as_millis()).unwrap_or(u64::MAX).max(1)));
        for event in &events {
            invocation
                .arg(event.stream.as_str())
                .arg(event.event_type.as_ref().map_or("", EventType::as_str))
                .arg(match event.kind {
                    DataKind::Text => "t",
                    DataKind::Json => "j",
                })
                .arg(event.data.as_str());
        }
        let reply: Vec<String> = invocation.invoke_async(&mut connection).await.map_err(|error| {
            shared.connection_failed(&error);
            publish_error(&error)
        })?;
        let (status, ids) = reply.split_first().ok_or_else(reply::malformed)?;
        let ids: Vec<EventId> = ids.iter().map(|id| id_from_redis(id)).collect::<Result<_, _>>()?;
        if let Some(newest) = ids.last() {
            shared.observe(*newest);
        }
        match status.as_str() {
            "conflict" => return Ok(Published::KeyConflict),
            "new" | "repeated" => {}
            _ => return Err(reply::malformed()),
        }
        // A repeated key touched its entry, so this also waits for the first
        // request's events to reach the replicas.
        shared.wait_for_replicas(&mut connection).await?;
        Ok(if status == "new" {
            Published::New(ids)
        } else {
            Published::Repeated(ids)
        })
    }

    async fn listen(&self, patterns: &[StreamPattern]) -> Result<(), BrokerError> {
        self.ensure_channels(patterns).await
    }

    async fn read(&self, patterns: &[StreamPattern], after: EventId) -> Result<HistoryRead, BrokerError> {
        let history = self.shared.read_history(patterns, &id_to_redis(after)).await?;
        Ok(history.into_read())
    }

    async fn latest(&self, patterns: &[StreamPattern]) -> Result<Vec<Arc<Frame>>, BrokerError> {
        let shared = &self.shared;
        let mut invocation = shared.read_invocation(&shared.latest_script, true);
        for pattern in patterns {
            invocation.arg(selector(pattern));
        }
        reply::latest_frames(&shared.run_read(&invocation).await?)
    }

    async fn position(&self, stream: &StreamName) -> Result<Position, BrokerError> {
        let shared = &self.shared;
        let mut invocation = shared.read_invocation(&shared.position_script, false);
        invocation.arg(stream.as_str());
        reply::position(&shared.run_read(&invocation).await?)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError> {
        let shared = &self.shared;
        let mut connection = shared.writing_connection()?;
        let mut invocation = shared.revoke_script.prepare_invoke();
        invocation
            .key(shared.keys.revoked())
            .key(shared.keys.revoked_expiry())
            .arg(shared.keys.revocations_channel())
            .arg(revocation.target.key())
            .arg(revocation.value())
            .arg(revocation.expires_ms);
        let _: i64 = invocation.invoke_async(&mut connection).await.map_err(|error| {
            shared.connection_failed(&error);
            publish_error(&error)
        })?;
        shared.wait_for_replicas(&mut connection).await
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

    #[test]
    fn channel_patterns_escape_the_key_prefix() {
        let keys = Keys {
            prefix: "a*[b]?:".to_owned(),
        };
        assert_eq!(keys.channel_pattern("ci."), "a\\*\\[b\\]\\?:n:ci.*");
        assert_eq!(keys.subscription(&StreamPattern::Any), "a\\*\\[b\\]\\?:n:*");
        assert_eq!(selector(&StreamPattern::try_new("ci.*").unwrap()), "*ci.");
        assert_eq!(selector(&StreamPattern::try_new("ci").unwrap()), "=ci");
    }
}
