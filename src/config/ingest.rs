//! `[ingest.udp]` and `[ingest.amqp]`: ways in besides HTTP, both off by default.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Secret, duration};
use crate::stream::StreamPattern;

/// `[ingest]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    pub udp: UdpConfig,
    pub amqp: AmqpConfig,
}

/// `[ingest.udp]`: one JSON publish body per datagram, at most once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    pub enabled: bool,
    /// Where to listen; bind it to an internal interface.
    pub addr: SocketAddr,
    /// Streams datagrams may publish to; empty = any stream.
    pub allowed_streams: Vec<StreamPattern>,
    /// Kernel receive buffer asked for (`SO_RCVBUF`): what absorbs bursts while the
    /// listener is busy. Datagrams that do not fit are dropped by the kernel.
    pub receive_buffer_bytes: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            addr: SocketAddr::from(([127, 0, 0, 1], 8125)),
            allowed_streams: Vec::new(),
            receive_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What an AMQP message body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AmqpBody {
    /// A JSON publish body (one event or a batch), as `POST /events` takes.
    Json,
    /// The event data as is (UTF-8), to the stream named by the routing key; the
    /// message's `type` property, when set, is the event type.
    Raw,
}

/// `[ingest.amqp]`: consume a RabbitMQ queue; ack once the events are in the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    pub enabled: bool,
    /// `amqp://user:password@host:5672/vhost` (or `amqps://`).
    pub url: Secret,
    /// The queue to consume.
    pub queue: String,
    /// Declare the queue (durable) at connect; otherwise it must exist.
    pub declare: bool,
    /// With `declare`: bind the queue to this exchange (must exist) with `routing_key`.
    pub exchange: String,
    pub routing_key: String,
    pub body: AmqpBody,
    /// Streams messages may publish to; empty = any stream.
    pub allowed_streams: Vec<StreamPattern>,
    /// Unacknowledged messages the broker sends ahead (`basic.qos`): bounds memory.
    pub prefetch: u16,
    /// Whether `/readyz` fails while the consumer is not connected.
    pub gates_readiness: bool,
    /// Reconnection delay after a failure, doubling up to `reconnect_max`.
    #[serde(with = "duration")]
    pub reconnect_min: Duration,
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: Secret::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue: "sse-gateway".to_owned(),
            declare: false,
            exchange: String::new(),
            routing_key: "#".to_owned(),
            body: AmqpBody::Json,
            allowed_streams: Vec::new(),
            prefetch: 100,
            gates_readiness: true,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
        }
    }
}
