//! `[ingest.amqp]`: consumes a RabbitMQ queue (AMQP 0-9-1, with `lapin`, the
//! maintained pure-Rust client) and publishes each message through the node.
//!
//! - **At least once, without duplicates for messages with a `message_id`.** A
//!   message is acked only after its events are in the history (what a 2xx means
//!   on `POST /events`), so a gateway crash before the ack makes the broker deliver
//!   it again. The redelivery carries the same `message_id`, which is the
//!   idempotency key of the publication (`amqp`, the queue and the id, for
//!   `publish.idempotency_window`): a message whose events were stored but not acked
//!   is acked again without publishing twice, on any node and across a restart
//!   where the backend keeps keys (disk, Redis). Messages without a `message_id`
//!   may be published twice after a crash.
//! - **Invalid messages are rejected without requeue** (dead-lettered when the
//!   queue has a dead-letter exchange) and counted; messages the node cannot take
//!   now (backend away, draining, rate limit) are returned to the queue after a
//!   pause, so nothing is lost and the consumer does not spin.
//! - **Memory is bounded by `prefetch`**: the broker sends at most that many
//!   unacknowledged messages (each up to the broker's `max_message_size`; messages
//!   over `limits.max_body_bytes` are rejected unread); they are processed one after
//!   another, in queue order.
//! - **Reconnects by itself** with a doubling back-off (`reconnect_min` to
//!   `reconnect_max`); `/readyz` fails while it is away when `gates_readiness`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::{Ingest, IngestStatus};
use crate::body::{BodyError, parse_json};
use crate::config::{AmqpBody, AmqpConfig};
use crate::event::{DataKind, EventType, NewEvent};
use crate::idempotency::{IdempotencyKey, events_fingerprint};
use crate::metrics as m;
use crate::node::{Node, Source};
use crate::stream::StreamName;

/// Pause before a message the node could not take is returned to the queue.
const REQUEUE_PAUSE: Duration = Duration::from_millis(500);

/// What to do with one delivery.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Stored (or stored before, by its `message_id`): ack.
    Ack,
    /// Never publishable: reject without requeue (dead-letter).
    Reject,
    /// Not now: return it to the queue.
    Requeue,
}

/// Consumes `[ingest.amqp]` until `stop`, reconnecting after every failure.
pub async fn consume(
    node: Arc<Node>,
    config: AmqpConfig,
    limits: AmqpLimits,
    status: Arc<IngestStatus>,
    stop: CancellationToken,
) {
    let ingest = Ingest::new(node, Source::Amqp, &config.allowed_streams);
    let mut backoff = config.reconnect_min;
    let mut first = true;
    loop {
        let session = tokio::select! {
            () = stop.cancelled() => return,
            session = session(&ingest, &config, limits, &status, &stop) => session,
        };
        status.set_amqp_connected(false);
        match session {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Consumed) => {
                // It ran: start the back-off over.
                backoff = config.reconnect_min;
                tracing::warn!("AMQP consumer ended; reconnecting");
            }
            Err(error) if first => tracing::warn!(%error, "cannot consume from AMQP yet; retrying"),
            Err(error) => tracing::warn!(%error, retry_in = ?backoff, "AMQP connection failed; retrying"),
        }
        first = false;
        metrics::counter!(m::INGEST_RECONNECTS, "source" => "amqp").increment(1);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(config.reconnect_max);
    }
}

/// What the consumer takes from `[limits]` and `[publish]`.
#[derive(Debug, Clone, Copy)]
pub struct AmqpLimits {
    /// `limits.max_body_bytes`: larger messages are rejected unread.
    pub max_body_bytes: usize,
    /// `publish.idempotency_window`: how long a `message_id` is remembered.
    pub idempotency_window: Duration,
}

enum Ended {
    Stopped,
    Consumed,
}

/// One connection: set up, then consume until it breaks or `stop`.
async fn session(
    ingest: &Ingest,
    config: &AmqpConfig,
    limits: AmqpLimits,
    status: &IngestStatus,
    stop: &CancellationToken,
) -> Result<Ended, lapin::Error> {
    let connection = Connection::connect(config.url.expose(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.basic_qos(config.prefetch, BasicQosOptions::default()).await?;
    if config.declare {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(config.queue.as_str().into(), options, FieldTable::default())
            .await?;
        if !config.exchange.is_empty() {
            channel
                .queue_bind(
                    config.queue.as_str().into(),
                    config.exchange.as_str().into(),
                    config.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    let mut consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            "sse-gateway".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    status.set_amqp_connected(true);
    tracing::info!(queue = %config.queue, prefetch = config.prefetch, "consuming from AMQP");
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => {
                // Unacked messages go back to the queue when the connection closes.
                let _ = connection.close(200, "shutting down".into()).await;
                return Ok(Ended::Stopped);
            }
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(error),
            None => return Ok(Ended::Consumed),
        };
        let verdict = handle(ingest, config, limits, &delivery).await;
        match verdict {
            Verdict::Ack => delivery.ack(BasicAckOptions::default()).await?,
            Verdict::Reject => delivery.reject(BasicRejectOptions { requeue: false }).await?,
            Verdict::Requeue => {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(REQUEUE_PAUSE) => {}
                }
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?
            }
        };
    }
}

/// Parses and publishes one message; what to tell the broker.
async fn handle(
    ingest: &Ingest,
    config: &AmqpConfig,
    limits: AmqpLimits,
    delivery: &lapin::message::Delivery,
) -> Verdict {
    if delivery.data.len() > limits.max_body_bytes {
        ingest.rejected("payload_too_large");
        return Verdict::Reject;
    }
    let events = match events_of(config, delivery) {
        Ok(events) => events,
        Err(error) => {
            ingest.rejected(error.reason());
            return Verdict::Reject;
        }
    };
    let idempotency = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| idempotency_key(&config.queue, id.as_str(), &events, limits.idempotency_window));
    match ingest.publish(events, idempotency).await {
        Ok(_) => {
            ingest.published();
            Verdict::Ack
        }
        Err(refused) if refused.is_transient() => {
            ingest.requeued(refused.reason());
            Verdict::Requeue
        }
        Err(refused) => {
            ingest.rejected(refused.reason());
            Verdict::Reject
        }
    }
}

/// The events of a message: a JSON publish body, or (`body = "raw"`) its data to
/// the stream its routing key names, typed by its `type` property.
fn events_of(config: &AmqpConfig, delivery: &lapin::message::Delivery) -> Result<Vec<NewEvent>, BodyError> {
    match config.body {
        AmqpBody::Json => Ok(parse_json(&delivery.data)?.events),
        AmqpBody::Raw => {
            let stream = StreamName::try_new(delivery.routing_key.as_str())?;
            let event_type = delivery
                .properties
                .kind()
                .as_ref()
                .map(|kind| EventType::try_new(kind.as_str()))
                .transpose()?;
            let data = String::from_utf8(delivery.data.clone())
                .map_err(|_| BodyError::Invalid("the message body is not UTF-8".to_owned()))?;
            Ok(vec![NewEvent {
                stream,
                event_type,
                data,
                kind: DataKind::Text,
            }])
        }
    }
}

/// The publication's idempotency key: the queue and the message id, bound to the
/// events (a different message with a reused id is refused, not swallowed).
fn idempotency_key(queue: &str, message_id: &str, events: &[NewEvent], window: Duration) -> IdempotencyKey {
    IdempotencyKey {
        key: format!("amqp\n{queue}\n{message_id}"),
        fingerprint: events_fingerprint(b"amqp", events),
        ttl: window,
    }
}
