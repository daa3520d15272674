//! The notification listener: one task per node that owns the Redis pub/sub link.
//!
//! It subscribes to the channel of every stream with local subscribers (on request,
//! confirming before the subscriber reads its replay), drops channels no local
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
use redis::aio::{ConnectionManagerConfig, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Shared, encode_frame, id_from_redis, id_to_redis};
use crate::broker::BrokerError;
use crate::config::RedisConfig;
use crate::event::EventId;
use crate::history;
use crate::metrics as m;
use crate::stream::StreamName;

/// Requests from the backend to its listener.
#[derive(Debug)]
pub(super) enum ListenerCommand {
    /// Subscribe to these streams' channels; reply once Redis confirmed.
    Subscribe {
        streams: Vec<StreamName>,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
}

/// Health checks between reclamation runs.
const RECLAIM_EVERY_TICKS: u64 = 10;

pub(super) struct Listener {
    shared: Arc<Shared>,
    config: RedisConfig,
    sink: Option<PubSubSink>,
    messages: Option<PubSubStream>,
    channels: HashSet<StreamName>,
    cursor: Option<EventId>,
    epoch: Option<String>,
    ticks: u64,
    lag: metrics::Histogram,
}

impl Listener {
    pub(super) fn new(shared: Arc<Shared>, config: RedisConfig) -> Self {
        Self {
            shared,
            config,
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
        let mut health = tokio::time::interval(self.config.health_interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                Some(command) = commands.recv() => self.handle(command).await,
                message = next_message(&mut self.messages) => match message {
                    Some(message) => self.on_message(&message),
                    None => self.on_link_lost(),
                },
                _ = health.tick() => self.check_health().await,
            }
        }
    }

    async fn handle(&mut self, command: ListenerCommand) {
        match command {
            ListenerCommand::Subscribe { streams, reply } => {
                let result = self.subscribe(&streams).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn subscribe(&mut self, streams: &[StreamName]) -> Result<(), BrokerError> {
        let Some(sink) = &mut self.sink else {
            return Err(BrokerError::Unavailable("Redis notification link is down".to_owned()));
        };
        let new: Vec<&StreamName> = streams.iter().filter(|s| !self.channels.contains(*s)).collect();
        if new.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = new.iter().map(|s| self.shared.keys.channel(s)).collect();
        match tokio::time::timeout(self.config.response_timeout, sink.subscribe(&names)).await {
            Ok(Ok(())) => {
                self.channels.extend(new.into_iter().cloned());
                Ok(())
            }
            Ok(Err(error)) => Err(BrokerError::Unavailable(format!("redis subscribe: {error}"))),
            Err(_) => Err(BrokerError::Unavailable("redis subscribe timed out".to_owned())),
        }
    }

    fn on_message(&mut self, message: &redis::Msg) {
        let Some(stream) = self.shared.keys.stream_of_channel(message.get_channel_name()) else {
            return;
        };
        let payload = String::from_utf8_lossy(message.get_payload_bytes());
        let mut parts = payload.splitn(3, '\n');
        let (Some(id), Some(event_type), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            tracing::warn!("malformed notification ignored");
            return;
        };
        let Ok(id) = id_from_redis(id) else { return };
        // Recovery may already have delivered it.
        if self.cursor.is_some_and(|cursor| id <= cursor) {
            return;
        }
        self.lag.record(lag_seconds(id));
        self.shared
            .registry
            .deliver(&stream, &Arc::new(encode_frame(id, event_type, data)));
        self.cursor = Some(id);
    }

    fn on_link_lost(&mut self) {
        tracing::warn!("Redis notification link lost; reconnecting");
        self.messages = None;
        self.sink = None;
        self.shared.notifications_ok.store(false, Ordering::Release);
    }

    async fn check_health(&mut self) {
        self.ticks += 1;
        if self.shared.connections.is_empty() {
            self.connect_commands().await;
        }
        if self.messages.is_none() {
            self.connect_notifications().await;
        }
        let cursor = self.cursor.unwrap_or(EventId::ZERO);
        match self.shared.read_history(&[], &id_to_redis(cursor)).await {
            Ok(history) => {
                self.shared.commands_ok.store(true, Ordering::Release);
                if self.epoch.as_ref().is_some_and(|epoch| *epoch != history.epoch) {
                    tracing::warn!("Redis lost its data (new epoch); sending gap notices");
                    self.recover().await;
                }
            }
            Err(error) => {
                self.shared.commands_ok.store(false, Ordering::Release);
                metrics::counter!(m::BACKEND_ERRORS, "reason" => "health_check").increment(1);
                tracing::debug!(%error, "Redis health check failed");
            }
        }
        self.drop_unused_channels().await;
        if self.shared.ttl_ms > 0 && self.ticks.is_multiple_of(RECLAIM_EVERY_TICKS) {
            self.reclaim().await;
        }
    }

    async fn connect_commands(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout))
            .set_number_of_retries(1);
        let mut managers = Vec::with_capacity(self.config.connections);
        for _ in 0..self.config.connections {
            let connect = self.shared.client.get_connection_manager_with_config(config.clone());
            match tokio::time::timeout(self.config.connect_timeout, connect).await {
                Ok(Ok(manager)) => managers.push(manager),
                _ => return,
            }
        }
        self.shared.connections.set(managers);
        tracing::info!("connected to Redis");
    }

    async fn connect_notifications(&mut self) {
        let connect = self.shared.client.get_async_pubsub();
        let Ok(Ok(pubsub)) = tokio::time::timeout(self.config.connect_timeout, connect).await else {
            return;
        };
        let (mut sink, messages) = pubsub.split();
        let names: Vec<String> = self.channels.iter().map(|s| self.shared.keys.channel(s)).collect();
        if !names.is_empty() {
            let subscribed = tokio::time::timeout(self.config.response_timeout, sink.subscribe(&names)).await;
            if !matches!(subscribed, Ok(Ok(()))) {
                return;
            }
        }
        self.sink = Some(sink);
        self.messages = Some(messages);
        if self.cursor.is_some() {
            metrics::counter!(m::BACKEND_RECONNECTS).increment(1);
        }
        if self.recover().await {
            self.shared.notifications_ok.store(true, Ordering::Release);
        } else {
            self.on_link_lost();
        }
    }

    /// Delivers what history holds after the cursor on every subscribed stream, in
    /// id order, and gap notices where it cannot (the node's gap logic, through
    /// [`history::catch_up`]). Returns whether Redis answered.
    async fn recover(&mut self) -> bool {
        let streams: Vec<StreamName> = self.channels.iter().cloned().collect();
        let cursor = self.cursor.unwrap_or(EventId::ZERO);
        let history = match self.shared.read_history(&streams, &id_to_redis(cursor)).await {
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
        }
        self.cursor = Some(history::catch_up(&read, cursor, &self.shared.registry));
        true
    }

    async fn drop_unused_channels(&mut self) {
        let Some(sink) = &mut self.sink else { return };
        let unused: Vec<StreamName> = self
            .channels
            .iter()
            .filter(|stream| !self.shared.registry.contains(stream))
            .cloned()
            .collect();
        if unused.is_empty() {
            return;
        }
        let names: Vec<String> = unused.iter().map(|s| self.shared.keys.channel(s)).collect();
        if let Ok(Ok(())) = tokio::time::timeout(self.config.response_timeout, sink.unsubscribe(&names)).await {
            for stream in &unused {
                self.channels.remove(stream);
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
            .arg(&self.shared.keys.prefix)
            .arg(self.shared.ttl_ms);
        if let Err(error) = invocation.invoke_async::<i64>(&mut connection).await {
            tracing::debug!(%error, "reclaiming idle streams failed");
        }
    }
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
