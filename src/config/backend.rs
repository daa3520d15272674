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
    /// Sentinel addresses (`host:port`); when set, the master is the one they name
    /// `master_name`, and `url` only gives its password, database and TLS.
    pub sentinels: Vec<String>,
    /// The master's name at the sentinels.
    pub master_name: String,
    /// Password of the sentinels themselves, when they require one.
    pub sentinel_password: Option<Secret>,
    /// Replicas that must hold a publish before it is acknowledged (Redis `WAIT`);
    /// with 1 or more a failover loses no acknowledged event. 0 = do not wait.
    pub min_replicas: usize,
    /// How long a publish waits for `min_replicas`; past it the answer is 504.
    #[serde(with = "duration")]
    pub min_replicas_timeout: Duration,
    /// Trust that a restarted Redis kept every acknowledged event when it runs with
    /// `appendonly yes` and `appendfsync always` (checked at every connection).
    /// Without it every restart is treated as possible loss (gap notices).
    pub trust_restarts: bool,
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
            sentinels: Vec::new(),
            master_name: "mymaster".to_owned(),
            sentinel_password: None,
            min_replicas: 0,
            min_replicas_timeout: Duration::from_secs(1),
            trust_restarts: false,
        }
    }
}
