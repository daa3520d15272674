//! `[server]`, `[cors]`, `[metrics]` and `[log]`: the listener and what it serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::duration;

/// `[server]`: listener, SSE timing and shutdown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP listener.
    pub addr: SocketAddr,
    /// Interval between heartbeat comments on an open event stream.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Reconnection delay advertised to clients in the `retry:` line.
    #[serde(with = "duration")]
    pub retry: Duration,
    /// How long shutdown may take before remaining work is abandoned.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Tokio worker threads; 0 means one per CPU core.
    pub worker_threads: usize,
    /// Time allowed to receive a publish request body.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Time a client has to send complete request headers (slowloris protection).
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Spread added to `retry` in the last `retry:` line sent when the gateway ends a
    /// stream (shutdown, token expiry), so clients do not all come back at once.
    #[serde(with = "duration")]
    pub retry_jitter: Duration,
    /// Connections with no request in flight for this long are closed (HTTP/2 and
    /// keep-alive connections; idle HTTP/1.1 connections also meet `header_read_timeout`).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Connections that are not event streams (reading their first request, HTTP/2,
    /// keep-alive for other requests) held at once; when full, the oldest idle one is
    /// closed to make room. Capped at half the open-file limit.
    pub max_other_connections: usize,
    /// `[server.tls]`: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on `addr`.
    pub tls: TlsConfig,
}

/// `[server.tls]`: PEM files; both set turns TLS on. Reloaded on SIGHUP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            heartbeat_interval: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            shutdown_grace: Duration::from_secs(10),
            worker_threads: 0,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            retry_jitter: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_other_connections: 4096,
            tls: TlsConfig::default(),
        }
    }
}

/// `[cors]`: closed unless origins are listed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed to call the gateway from a browser; empty disables CORS.
    pub allowed_origins: Vec<String>,
    /// Allow cookies (`withCredentials`) on cross-origin requests.
    pub allow_credentials: bool,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Separate listener for `/metrics`; unset serves it on `server.addr`.
    pub addr: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive; `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
    /// One `info` line per request (target `access`): method, route template,
    /// status, duration, subject. Never tokens or query strings.
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
            access: true,
        }
    }
}
