//! `[streams]`, `[limits]` and `[publish]`: history bounds, the bounds that protect
//! the node, and publishing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// `[streams]`: per-stream replay buffers and the registry sweeper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Events kept per stream for replay.
    pub buffer_size: usize,
    /// Maximum age of a buffered event; `0s` keeps events until `buffer_size` evicts them.
    #[serde(with = "duration")]
    pub buffer_ttl: Duration,
    /// How often expired events are evicted and idle streams reclaimed.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
    /// History the node holds in all (encoded events plus 176 bytes each); over it,
    /// the deployment's oldest events are evicted first (memory and disk).
    pub max_history_bytes: usize,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            buffer_size: 1000,
            buffer_ttl: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(10),
            max_history_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[limits]`: bounds that protect the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open event streams allowed on this node.
    pub max_connections: usize,
    /// Distinct streams one subscription may name.
    pub max_streams_per_connection: usize,
    /// Streams the registry may hold at once.
    pub max_streams: usize,
    /// Largest event `data` (bytes, as sent on the wire before line splitting).
    pub max_event_bytes: usize,
    /// Largest publish request body.
    pub max_body_bytes: usize,
    /// Events one publish request may carry.
    pub max_batch_events: usize,
    /// Events queued per subscriber before it counts as too slow and is disconnected.
    pub subscriber_queue: usize,
    /// Open event streams per token subject (`sub`, else the token itself); 0 = no limit.
    pub max_connections_per_subject: usize,
    /// Distinct streams the open event streams of one subject may hold (a pattern
    /// counts as one); 0 = no limit.
    pub max_streams_per_subject: usize,
    /// Whether `stream=*` (every stream) may be subscribed to, by tokens whose
    /// `subscribe` claim holds `*`.
    pub firehose: bool,
    /// Open `stream=*` subscriptions per subject; 0 = no limit.
    pub max_firehose_per_subject: usize,
    /// Bytes of publish request bodies being received at once, across all requests.
    pub max_body_bytes_in_flight: usize,
    /// Bytes of webhook bodies being received before their signature is checked, at
    /// once, across all requests.
    pub max_unverified_body_bytes_in_flight: usize,
    /// Events per second one subject may publish; 0 = no limit.
    pub publish_rate_per_subject: u32,
    /// Events a subject may publish in a burst above the rate; 0 = the rate.
    pub publish_burst: u32,
    /// New event streams per second this node accepts; 0 = no limit.
    pub subscribe_rate: u32,
    /// New event streams accepted in a burst above the rate; 0 = the rate.
    pub subscribe_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_streams_per_connection: 32,
            max_streams: 100_000,
            max_event_bytes: 64 * 1024,
            max_body_bytes: 1024 * 1024,
            max_batch_events: 1000,
            subscriber_queue: 1024,
            max_connections_per_subject: 1000,
            max_streams_per_subject: 1000,
            firehose: true,
            max_firehose_per_subject: 4,
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_unverified_body_bytes_in_flight: 8 * 1024 * 1024,
            publish_rate_per_subject: 0,
            publish_burst: 0,
            subscribe_rate: 0,
            subscribe_burst: 0,
        }
    }
}

/// `[publish]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// How long an `Idempotency-Key` is remembered: a retry within it answers the
    /// original ids and publishes nothing.
    #[serde(with = "duration")]
    pub idempotency_window: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            idempotency_window: Duration::from_secs(300),
        }
    }
}
