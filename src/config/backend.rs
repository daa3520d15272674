//! `[backend]`: which broker keeps ids and history, and its settings.

use std::path::PathBuf;
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
    /// Embedded, on disk: one node, ids and history in a data directory, so restarts
    /// and crashes lose nothing acknowledged.
    Disk,
    /// Redis: ids and history in Redis, every node fans out to its own subscribers.
    Redis,
}

/// `[backend]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub disk: DiskConfig,
    pub redis: RedisConfig,
}

/// `[backend.disk]`: used when `backend.kind = "disk"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// The data directory (created when missing; a non-empty directory that is not
    /// one stops startup).
    pub path: PathBuf,
    /// fsync every group of publishes before acknowledging them (power loss loses
    /// nothing acknowledged). `false`: acknowledged writes reach the OS first (a
    /// gateway crash loses nothing) and are synced within a second.
    pub fsync: bool,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data"),
            fsync: true,
        }
    }
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
