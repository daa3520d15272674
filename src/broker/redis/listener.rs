//! The notification listener: one task per node that owns the node's link to Redis.
//!
//! It finds the master (directly or through Sentinel), connects, verifies it
//! ([`super::verify`]) before handing out command connections, and verifies it again
//! at every health check. It subscribes to the channel of every stream and the
//! channel pattern of every stream pattern with local subscribers (on request,
//! confirming before the subscriber reads its replay), drops those no local
//! subscriber needs, delivers notifications to the registry in the order Redis
//! sent them, and keeps a cursor: the newest id it has delivered or knows to be
//! covered. When the link comes back it re-subscribes and reads history after the
//! cursor, so events stored meanwhile reach subscribers in order, exactly once;
//! where history no longer holds them (or Redis lost its data), subscribers get a
//! gap notice instead. All channel changes happen in this one task, so a clean-up
//! can never race a new subscription.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::link::connect;
use super::reply::encode_frame;
use super::verify::{Instance, Verdict};
use super::{Keys, Shared, id_from_redis, id_to_redis};
use crate::broker::BrokerError;
use crate::event::{DataKind, EventId};
use crate::history;
use crate::metrics as m;
use crate::revocation::Revocation;
use crate::stream::StreamPattern;

/// Requests from the backend to its listener.
#[derive(Debug)]
pub(super) enum ListenerCommand {
    /// Subscribe to these names' channels and patterns' channel patterns; reply
    /// once Redis confirmed.
    Subscribe {
        patterns: Vec<StreamPattern>,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
}

/// Health checks between reclamation runs.
const RECLAIM_EVERY_TICKS: u64 = 10;

pub(super) struct Listener {
    shared: Arc<Shared>,
    sink: Option<PubSubSink>,
    messages: Option<PubSubStream>,
    /// Names and patterns subscribed (or to subscribe again on reconnect).
    channels: HashSet<StreamPattern>,
    cursor: Option<EventId>,
    epoch: Option<String>,
    ticks: u64,
    lag: metrics::Histogram,
}

impl Listener {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            sink: None,
            messages: None,
            channels: HashSet::new(),
            cursor: None,
            epoch: None,
            ticks: 0,
            lag: metrics::histogram!(m::NOTIFICATION_LAG),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<ListenerCommand>, stop: CancellationToken) {
        let mut health = tokio::time::interval(self.shared.settings.redis.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(command) = commands.recv() => self.handle(command).await,
                message = next_message(&mut self.messages) => match message {
                    Some(message) => self.on_message(&message).await,
                    None => self.on_link_lost(),
                },
                _ = health.tick() => self.check_health().await,
                () = self.shared.reconnect.notified() => self.check_health().await,
            }
        }
    }

    async fn handle(&mut self, command: ListenerCommand) {
        match command {
            ListenerCommand::Subscribe { patterns, reply } => {
                let result = self.subscribe(&patterns).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn subscribe(&mut self, patterns: &[StreamPattern]) -> Result<(), BrokerError> {
        let Some(sink) = &mut self.sink else {
            return Err(BrokerError::Unavailable("Redis notification link is down".to_owned()));
        };
        let new: Vec<StreamPattern> = patterns
            .iter()
            .filter(|pattern| !self.channels.contains(*pattern))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let subscribed = tokio::time::timeout(
            self.shared.settings.redis.response_timeout,
            subscribe_all(sink, &self.shared.keys, &new),
        )
        .await;
        self.channels.extend(new);
        match subscribed {
            Ok(Ok(())) => Ok(()),
            // The link broke under us (a failover closes clients): connect again,
            // which subscribes every channel, these included.
            Ok(Err(_)) | Err(_) => self.reconnect().await,
        }
    }

    async fn on_message(&mut self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        if channel == self.shared.keys.revocations_channel() {
            self.on_revocation(message.get_payload_bytes());
            return;
        }
        let Some(stream) = self.shared.keys.stream_of_channel(channel) else {
            return;
        };
        let payload = String::from_utf8_lossy(message.get_payload_bytes());
        let mut parts = payload.splitn(5, '\n');
        let (Some(epoch), Some(id), Some(event_type), Some(kind), Some(data)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!("malformed notification ignored");
            return;
        };
        if self.epoch.as_deref().is_some_and(|known| known != epoch) {
            // Redis lost its data since the last event: tell subscribers first, then
            // deliver from history (this event included).
            tracing::warn!("Redis lost its data (new epoch); sending gap notices");
            self.recover().await;
            return;
        }
        let Ok(id) = id_from_redis(id) else { return };
        // Recovery may already have delivered it, or it came twice (a channel and a
        // channel pattern of this node both match its stream).
        if self.cursor.is_some_and(|cursor| id <= cursor) {
            return;
        }
        self.lag.record(lag_seconds(id));
        self.shared.observe(id);
        let kind = if kind == "j" { DataKind::Json } else { DataKind::Text };
        let frame = encode_frame(id, &stream, event_type, data.to_owned(), kind);
        self.shared.registry.deliver(&stream, &Arc::new(frame));
        self.cursor = Some(id);
    }

    fn on_revocation(&self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload)
            .ok()
            .and_then(|text| text.split_once('\n'))
            .and_then(|(key, value)| Revocation::parse(key, value));
        match parsed {
            Some(revocation) => self.shared.revocations.receive(&revocation, "peer"),
            None => tracing::warn!("malformed revocation message ignored"),
        }
    }

    /// Puts every stored revocation in force (after subscribing to the channel, so
    /// one made meanwhile arrives there).
    async fn load_revocations(&self) -> Result<(), BrokerError> {
        let mut connection = self.shared.connections.get()?;
        let stored: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.revoked())
            .query_async(&mut connection)
            .await
            .map_err(|error| Shared::unavailable(&error))?;
        for (key, value) in stored {
            if let Some(revocation) = Revocation::parse(&key, &value) {
                self.shared.revocations.receive(&revocation, "store");
            }
        }
        Ok(())
    }

    fn on_link_lost(&mut self) {
        if self.messages.take().is_some() {
            tracing::warn!("Redis notification link lost; reconnecting");
        }
        self.sink = None;
        self.shared.notifications_ok.store(false, Ordering::Release);
    }

    async fn check_health(&mut self) {
        self.ticks += 1;
        if !self.shared.commands_ok.load(Ordering::Acquire) || self.messages.is_none() {
            if let Err(error) = self.reconnect().await {
                metrics::counter!(m::BACKEND_ERRORS, "reason" => "health_check").increment(1);
                tracing::debug!(%error, "cannot reach a verified Redis master yet");
            }
        } else if let Err(error) = self.reverify().await {
            metrics::counter!(m::BACKEND_ERRORS, "reason" => "health_check").increment(1);
            tracing::warn!(%error, "Redis health check failed; reconnecting");
            self.disconnect();
        }
        self.drop_unused_channels().await;
        if self.shared.settings.ttl_ms > 0 && self.ticks.is_multiple_of(RECLAIM_EVERY_TICKS) {
            self.reclaim().await;
        }
    }

    fn disconnect(&mut self) {
        self.shared.commands_ok.store(false, Ordering::Release);
        self.shared.connections.clear();
        self.on_link_lost();
    }

    /// Finds the master, connects, verifies it, then subscribes and catches up.
    async fn reconnect(&mut self) -> Result<(), BrokerError> {
        self.disconnect();
        let settings = &self.shared.settings.redis;
        let client = tokio::time::timeout(settings.connect_timeout, self.shared.endpoint.master())
            .await
            .map_err(|_| BrokerError::Unavailable("finding the master timed out".to_owned()))??;
        let mut connections = Vec::with_capacity(settings.connections);
        for _ in 0..settings.connections {
            connections.push(connect(&client, settings).await?);
        }
        let instance = Instance::query(&mut connections[0]).await?;
        let verdict = self.shared.verify(&mut connections[0], &instance).await?;
        let pubsub = tokio::time::timeout(settings.connect_timeout, client.get_async_pubsub())
            .await
            .map_err(|_| BrokerError::Unavailable("pub/sub connection timed out".to_owned()))?
            .map_err(|error| BrokerError::Unavailable(format!("pub/sub connection: {error}")))?;
        let (mut sink, messages) = pubsub.split();
        let channels: Vec<StreamPattern> = self.channels.iter().cloned().collect();
        let keys = &self.shared.keys;
        let subscribed = async {
            sink.subscribe(keys.revocations_channel()).await?;
            subscribe_all(&mut sink, keys, &channels).await
        };
        match tokio::time::timeout(settings.response_timeout, subscribed).await {
            Ok(Ok(())) => {}
            _ => return Err(BrokerError::Unavailable("re-subscribing timed out".to_owned())),
        }
        self.shared.connections.set(connections);
        if let Err(error) = self.load_revocations().await {
            self.shared.connections.clear();
            return Err(error);
        }
        self.shared.commands_ok.store(true, Ordering::Release);
        self.sink = Some(sink);
        self.messages = Some(messages);
        if self.cursor.is_some() {
            metrics::counter!(m::BACKEND_RECONNECTS).increment(1);
        }
        tracing::info!(verdict = verdict.label(), "connected to a verified Redis master");
        if self.recover().await {
            self.shared.notifications_ok.store(true, Ordering::Release);
            Ok(())
        } else {
            self.disconnect();
            Err(BrokerError::Unavailable("cannot read history to catch up".to_owned()))
        }
    }

    /// The periodic check on a healthy link: still the verified master? When the
    /// data turned out to be missing events, live subscribers are told at once.
    async fn reverify(&mut self) -> Result<(), BrokerError> {
        let mut connection = self.shared.connections.get()?;
        let instance = Instance::query(&mut connection).await?;
        let verdict = self.shared.verify(&mut connection, &instance).await?;
        if matches!(verdict, Verdict::Lost | Verdict::New) {
            self.recover().await;
            return Ok(());
        }
        // The epoch (a flush under a running node) is checked as recover does.
        let cursor = self.cursor.unwrap_or(EventId::ZERO);
        let history = self.shared.read_history(&[], &id_to_redis(cursor)).await?;
        if self.epoch.as_ref().is_some_and(|epoch| *epoch != history.epoch) {
            tracing::warn!("Redis lost its data (new epoch); sending gap notices");
            self.recover().await;
        }
        Ok(())
    }

    /// Delivers what history holds after the cursor on every subscribed stream, in
    /// id order, and gap notices where it cannot (the node's gap logic, through
    /// [`history::catch_up`]). Returns whether Redis answered.
    async fn recover(&mut self) -> bool {
        let patterns: Vec<StreamPattern> = self.channels.iter().cloned().collect();
        let cursor = self.cursor.unwrap_or(EventId::ZERO);
        let history = match self.shared.read_history(&patterns, &id_to_redis(cursor)).await {
            Ok(history) => history,
            Err(error) => {
                tracing::debug!(%error, "cannot read history to recover");
                return false;
            }
        };
        let Some(known_epoch) = self.epoch.replace(history.epoch.clone()) else {
            // First contact: nothing was delivered before, so nothing to recover.
            self.cursor = Some(history.last_issued);
            return true;
        };
        let epoch_changed = known_epoch != history.epoch;
        let mut read = history.into_read();
        if epoch_changed {
            // Redis lost its data: nothing before now can be proven complete.
            for stream in &mut read.streams {
                stream.known_after = EventId::MAX;
            }
            read.others_known_after = EventId::MAX;
        }
        self.cursor = Some(history::catch_up(&read, &patterns, cursor, &self.shared.registry));
        true
    }

    async fn drop_unused_channels(&mut self) {
        let Some(sink) = &mut self.sink else { return };
        let unused: Vec<StreamPattern> = self
            .channels
            .iter()
            .filter(|pattern| !self.shared.registry.contains(pattern))
            .cloned()
            .collect();
        if unused.is_empty() {
            return;
        }
        let keys = &self.shared.keys;
        let (names, prefixes) = split(keys, &unused);
        let unsubscribed = async {
            if !names.is_empty() {
                sink.unsubscribe(&names).await?;
            }
            if !prefixes.is_empty() {
                sink.punsubscribe(&prefixes).await?;
            }
            Ok::<_, redis::RedisError>(())
        };
        if let Ok(Ok(())) = tokio::time::timeout(self.shared.settings.redis.response_timeout, unsubscribed).await {
            for pattern in &unused {
                self.channels.remove(pattern);
            }
        }
    }

    async fn reclaim(&self) {
        let Ok(mut connection) = self.shared.connections.get() else {
            return;
        };
        let mut invocation = self.shared.reclaim_script.prepare_invoke();
        invocation
            .key(self.shared.keys.meta())
            .key(self.shared.keys.idle())
            .key(self.shared.keys.trimmed())
            .key(self.shared.keys.names())
            .arg(&self.shared.keys.prefix)
            .arg(self.shared.settings.ttl_ms);
        if let Err(error) = invocation.invoke_async::<i64>(&mut connection).await {
            tracing::debug!(%error, "reclaiming idle streams failed");
        }
    }
}

/// The channels (names) and channel patterns (patterns) of `patterns`.
fn split(keys: &Keys, patterns: &[StreamPattern]) -> (Vec<String>, Vec<String>) {
    let (prefixes, names): (Vec<&StreamPattern>, Vec<&StreamPattern>) =
        patterns.iter().partition(|pattern| pattern.prefix().is_some());
    let subscription = |pattern: &&StreamPattern| keys.subscription(pattern);
    (
        names.iter().map(subscription).collect(),
        prefixes.iter().map(subscription).collect(),
    )
}

/// Subscribes the channels and channel patterns of `patterns`.
async fn subscribe_all(sink: &mut PubSubSink, keys: &Keys, patterns: &[StreamPattern]) -> redis::RedisResult<()> {
    let (names, prefixes) = split(keys, patterns);
    if !names.is_empty() {
        sink.subscribe(&names).await?;
    }
    if !prefixes.is_empty() {
        sink.psubscribe(&prefixes).await?;
    }
    Ok(())
}

async fn next_message(messages: &mut Option<PubSubStream>) -> Option<redis::Msg> {
    match messages {
        Some(messages) => messages.next().await,
        None => std::future::pending().await,
    }
}

/// Seconds between the event's id timestamp (Redis clock) and now (local clock).
fn lag_seconds(id: EventId) -> f64 {
    let id_ms = id.millis();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    now_ms.saturating_sub(id_ms) as f64 / 1000.0
}
