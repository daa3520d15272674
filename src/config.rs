//! The configuration tree, mirroring `config.toml` section by section.
//!
//! Sources, later ones winning: built-in defaults (the `Default` impls below, the
//! only place defaults live), the TOML file, then environment variables
//! `SSE_GATEWAY_<SECTION>__<KEY>` (for example `SSE_GATEWAY_SERVER__ADDR=0.0.0.0:8080`).
//! Durations are human-readable strings (`"15s"`, `"1h"`); sizes end in `_bytes`.
//! [`Config::validate`] runs at startup and names the offending key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SSE_GATEWAY_";

/// A configuration problem, naming the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment variable could not be read or parsed.
    #[error("cannot load configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub streams: StreamsConfig,
    pub limits: LimitsConfig,
    pub cors: CorsConfig,
    pub metrics: MetricsConfig,
    pub backend: BackendConfig,
    pub webhooks: WebhooksConfig,
    pub demo: DemoConfig,
    pub log: LogConfig,
}

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
        }
    }
}

/// A JWT signature algorithm the gateway can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

impl Algorithm {
    /// The `jsonwebtoken` equivalent.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// `[auth]`: accepted algorithms, their keys and claim checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Algorithms accepted in token headers; nothing else (never `none`) is.
    pub algorithms: Vec<Algorithm>,
    /// HS256 shared secret. Prefer the environment or `hs256_secret_file`.
    pub hs256_secret: Option<Secret>,
    /// File holding the HS256 secret. When HS256 is enabled and neither this nor
    /// `hs256_secret` is set, `serve` creates `.sse-gateway-secret` (mode 0600).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM public key for RS256.
    pub rs256_public_key_file: Option<PathBuf>,
    /// PEM public key for ES256 (P-256).
    pub es256_public_key_file: Option<PathBuf>,
    /// PEM public key for EdDSA (Ed25519).
    pub eddsa_public_key_file: Option<PathBuf>,
    /// Key ids (`kid`) per algorithm. When one is set, tokens of that algorithm must
    /// name it in their header; unset, the header's `kid` is not checked.
    pub key_ids: KeyIds,
    /// Reject tokens without `exp`.
    pub require_exp: bool,
    /// Reject tokens whose `nbf` lies in the future.
    pub validate_nbf: bool,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of), when set.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Cookie that may carry the token on subscribe.
    pub cookie_name: String,
    /// End an event stream when its token expires.
    pub close_on_expiry: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::HS256],
            hs256_secret: None,
            hs256_secret_file: None,
            rs256_public_key_file: None,
            es256_public_key_file: None,
            eddsa_public_key_file: None,
            key_ids: KeyIds::default(),
            require_exp: true,
            validate_nbf: true,
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::ZERO,
            cookie_name: "sse_token".to_owned(),
            close_on_expiry: true,
        }
    }
}

/// `[auth.key_ids]`: the `kid` each algorithm's key answers to, if any.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyIds {
    #[serde(rename = "HS256")]
    pub hs256: Option<String>,
    #[serde(rename = "RS256")]
    pub rs256: Option<String>,
    #[serde(rename = "ES256")]
    pub es256: Option<String>,
    #[serde(rename = "EdDSA")]
    pub eddsa: Option<String>,
}

impl KeyIds {
    /// The key id configured for `alg`.
    pub fn get(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::HS256 => self.hs256.as_deref(),
            Algorithm::RS256 => self.rs256.as_deref(),
            Algorithm::ES256 => self.es256.as_deref(),
            Algorithm::EdDSA => self.eddsa.as_deref(),
        }
    }
}

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
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            buffer_size: 1000,
            buffer_ttl: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(10),
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
    /// Distinct streams the open event streams of one subject may hold; 0 = no limit.
    pub max_streams_per_subject: usize,
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
            max_body_bytes_in_flight: 64 * 1024 * 1024,
            max_unverified_body_bytes_in_flight: 8 * 1024 * 1024,
            publish_rate_per_subject: 0,
            publish_burst: 0,
            subscribe_rate: 0,
            subscribe_burst: 0,
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

/// Who sends a webhook, which decides how it proves the shared secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookProvider {
    /// The secret in `X-Gitlab-Token`.
    Gitlab,
    /// An HMAC-SHA256 of the body in `X-Hub-Signature-256`.
    Github,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`):
    /// an HMAC-SHA256 of id, timestamp and body, so replays are bounded by `max_age`.
    Standard,
}

/// One `[[webhooks.hooks]]` entry: `POST /webhooks/{stream}` publishes the JSON body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub stream: String,
    pub provider: WebhookProvider,
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    /// Fixed event type; default: the provider's event header.
    pub event: Option<String>,
    /// For providers that sign a timestamp (`standard`): deliveries older than this,
    /// or this far in the future, are refused.
    #[serde(default = "default_webhook_max_age", with = "duration")]
    pub max_age: Duration,
}

fn default_webhook_max_age() -> Duration {
    Duration::from_secs(300)
}

/// `[webhooks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// How long a delivery is remembered: the same delivery again within it answers
    /// the original reply and publishes nothing.
    #[serde(with = "duration")]
    pub replay_window: Duration,
    pub hooks: Vec<WebhookConfig>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            replay_window: Duration::from_secs(24 * 3600),
            hooks: Vec::new(),
        }
    }
}

/// `[demo]`: the live demo page and its sample publisher.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Serve the live demo page at `/demo` (and `/`).
    pub enabled: bool,
    /// Publish sample server-health and CI events to `demo.servers` and `demo.ci`.
    pub publisher: bool,
    /// Interval between sample events.
    #[serde(with = "duration")]
    pub publish_interval: Duration,
    /// Open event streams allowed to the demo page's token (every visitor shares it).
    pub max_connections: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            publisher: true,
            publish_interval: Duration::from_secs(1),
            max_connections: 100,
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
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// A secret string whose `Debug` and `Serialize` never reveal it.
///
/// Deserializes from a string or a number, because environment overrides such as
/// `SSE_GATEWAY_AUTH__HS256_SECRET=123456` arrive typed as numbers.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Uint(u64),
            Float(f64),
        }
        Ok(Self(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text,
            Raw::Int(n) => n.to_string(),
            Raw::Uint(n) => n.to_string(),
            Raw::Float(n) => n.to_string(),
        }))
    }
}

impl Config {
    /// Loads defaults, then `path` (when given, it must exist; otherwise
    /// `config.toml` in the working directory if present), then the environment.
    ///
    /// # Errors
    /// [`ConfigError`] when a source cannot be parsed or a value is invalid.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        match path {
            Some(path) if !path.exists() => {
                return Err(ConfigError::Invalid {
                    key: "--config",
                    reason: format!("file {} does not exist", path.display()),
                });
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("config.toml").exists() => {
                figment = figment.merge(Toml::file_exact("config.toml"));
            }
            None => {}
        }
        Self::extract(&figment.merge(env_provider()))
    }

    /// Parses a TOML document on top of the defaults, without the environment.
    ///
    /// # Errors
    /// [`ConfigError`] as for [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::extract(&Figment::from(Serialized::defaults(Self::default())).merge(Toml::string(text)))
    }

    fn extract(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense, naming the key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.server.header_read_timeout.is_zero() {
            return invalid("server.header_read_timeout", "must be greater than 0s");
        }
        if self.server.idle_timeout.is_zero() {
            return invalid("server.idle_timeout", "must be greater than 0s");
        }
        if self.server.heartbeat_interval.is_zero() {
            return invalid("server.heartbeat_interval", "must be greater than 0s");
        }
        if self.streams.buffer_size == 0 {
            return invalid("streams.buffer_size", "must be at least 1");
        }
        if self.demo.publisher && self.demo.publish_interval.is_zero() {
            return invalid("demo.publish_interval", "must be greater than 0s");
        }
        if self.backend.redis.connections == 0 {
            return invalid("backend.redis.connections", "must be at least 1");
        }
        if self.backend.redis.health_interval.is_zero() {
            return invalid("backend.redis.health_interval", "must be greater than 0s");
        }
        if self.backend.kind == BackendKind::Redis && !self.backend.redis.url.expose().starts_with("redis") {
            return invalid("backend.redis.url", "must start with redis:// or rediss://");
        }
        if self.streams.sweep_interval.is_zero() {
            return invalid("streams.sweep_interval", "must be greater than 0s");
        }
        for (key, value) in [
            ("limits.max_connections", self.limits.max_connections),
            (
                "limits.max_streams_per_connection",
                self.limits.max_streams_per_connection,
            ),
            ("limits.max_streams", self.limits.max_streams),
            ("limits.max_event_bytes", self.limits.max_event_bytes),
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.max_batch_events", self.limits.max_batch_events),
            ("limits.subscriber_queue", self.limits.subscriber_queue),
            ("limits.max_body_bytes_in_flight", self.limits.max_body_bytes_in_flight),
            (
                "limits.max_unverified_body_bytes_in_flight",
                self.limits.max_unverified_body_bytes_in_flight,
            ),
            ("server.max_other_connections", self.server.max_other_connections),
            ("demo.max_connections", self.demo.max_connections),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.auth.algorithms.is_empty() {
            return invalid("auth.algorithms", "list at least one algorithm");
        }
        let key_for = |alg| match alg {
            Algorithm::HS256 => true, // a missing secret is generated by `serve`
            Algorithm::RS256 => self.auth.rs256_public_key_file.is_some(),
            Algorithm::ES256 => self.auth.es256_public_key_file.is_some(),
            Algorithm::EdDSA => self.auth.eddsa_public_key_file.is_some(),
        };
        if let Some(alg) = self.auth.algorithms.iter().find(|alg| !key_for(**alg)) {
            return Err(ConfigError::Invalid {
                key: "auth.algorithms",
                reason: format!("{alg:?} is enabled but its public key file is not set"),
            });
        }
        if self.auth.hs256_secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
            return invalid("auth.hs256_secret", "must not be empty (unset it instead)");
        }
        if self.auth.cookie_name.is_empty() {
            return invalid("auth.cookie_name", "must not be empty");
        }
        if self.limits.max_body_bytes_in_flight < self.limits.max_body_bytes {
            return invalid(
                "limits.max_body_bytes_in_flight",
                "must be at least limits.max_body_bytes (one whole body)",
            );
        }
        if self.cors.allowed_origins.iter().any(|o| o == "*") && self.cors.allow_credentials {
            return invalid("cors.allowed_origins", "`*` cannot be combined with allow_credentials");
        }
        Ok(())
    }
}

/// Durations: human-readable strings (`"250ms"`, `"15s"`, `"1h"`) or plain numbers
/// of seconds (`SSE_GATEWAY_SERVER__HEARTBEAT_INTERVAL=5` arrives as a number).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
            Fractional(f64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => humantime::parse_duration(text.trim())
                .map_err(|error| de::Error::custom(format!("invalid duration `{text}`: {error}"))),
            Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Raw::Fractional(seconds) => Duration::try_from_secs_f64(seconds)
                .map_err(|_| de::Error::custom(format!("invalid duration {seconds}"))),
        }
    }
}

/// Environment overrides: `SSE_GATEWAY_SECTION__KEY`. Variables without a section
/// (such as `SSE_GATEWAY_CONFIG`, the CLI's own) are not configuration keys.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_toml_matches_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"))
            .expect("config.toml is checked in");
        let shipped: Config = Figment::new()
            .merge(Toml::string(&text))
            .extract()
            .expect("config.toml parses on its own");
        assert_eq!(
            serde_json::to_value(&shipped).unwrap(),
            serde_json::to_value(Config::default()).unwrap(),
            "config.toml must show every default"
        );
    }

    #[test]
    fn the_production_example_parses_and_turns_the_demo_off() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/production.toml")).unwrap();
        let config = Config::from_toml(&text).expect("deploy/production.toml is valid");
        assert!(!config.demo.enabled && !config.demo.publisher);
        assert_eq!(config.webhooks.hooks.len(), 1);
    }

    #[test]
    fn durations_are_human_readable() {
        let config = Config::from_toml("[server]\nheartbeat_interval = \"250ms\"").unwrap();
        assert_eq!(config.server.heartbeat_interval, Duration::from_millis(250));
    }

    #[test]
    fn durations_may_be_plain_seconds() {
        let config = Config::from_toml("[server]\nretry = 2\nshutdown_grace = 0.5").unwrap();
        assert_eq!(config.server.retry, Duration::from_secs(2));
        assert_eq!(config.server.shutdown_grace, Duration::from_millis(500));
        assert!(Config::from_toml("[server]\nretry = \"soon\"").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[server]\nadress = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = Config::from_toml("[limits]\nsubscriber_queue = 0").unwrap_err();
        assert!(err.to_string().contains("limits.subscriber_queue"), "{err}");
        let err = Config::from_toml("[auth]\nalgorithms = [\"RS256\"]").unwrap_err();
        assert!(err.to_string().contains("auth.algorithms"), "{err}");
    }

    #[test]
    fn algorithm_none_is_not_an_algorithm() {
        assert!(Config::from_toml("[auth]\nalgorithms = [\"none\"]").is_err());
    }

    #[test]
    #[expect(clippy::result_large_err, reason = "figment::Jail's closure signature is fixed")]
    fn environment_overrides_file_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gw.toml", "[server]\naddr = \"127.0.0.1:1111\"")?;
            jail.set_env("SSE_GATEWAY_SERVER__ADDR", "127.0.0.1:2222");
            jail.set_env("SSE_GATEWAY_AUTH__HS256_SECRET", "12345678901234567890123456789012345");
            jail.set_env("SSE_GATEWAY_CONFIG", "ignored.toml");
            let config = Config::load(Some(Path::new("gw.toml"))).expect("loads");
            assert_eq!(config.server.addr.port(), 2222);
            assert_eq!(
                config.auth.hs256_secret.unwrap().expose(),
                "12345678901234567890123456789012345"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let secret = Secret::new("hunter2-hunter2-hunter2-hunter2-x");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
