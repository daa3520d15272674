//! `[backend]`: which broker keeps ids and history, and its settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Secret, duration};

/// Which backend stores history and moves events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Embedded, in-process: one node, history lost on restart (announced by gap notices).
    #[default]
    Memory,
    /// Redis: ids and history in Redis, every node fans out to its own subscribers.
    Redis,
}

/// `[backend]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub redis: RedisConfig,
}

/// `[backend.redis]`: used when `backend.kind = "redis"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS.
    pub url: Secret,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub key_prefix: String,
    /// Multiplexed command connections (each pipelines many requests).
    pub connections: usize,
    /// Time allowed to establish a connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for one command; a publish that takes longer answers 503.
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    /// How often the node checks Redis (readiness, lost data) and retries a lost link.
    #[serde(with = "duration")]
    pub health_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("redis://127.0.0.1:6379"),
            key_prefix: "sse:".to_owned(),
            connections: 2,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
        }
    }
}
