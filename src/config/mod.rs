//! The configuration tree, mirroring `config.toml` section by section (one file per
//! group of sections).
//!
//! Sources, later ones winning: built-in defaults (the `Default` impls, the only
//! place defaults live), the TOML file, then environment variables
//! `SSE_GATEWAY_<SECTION>__<KEY>` (for example `SSE_GATEWAY_SERVER__ADDR=0.0.0.0:8080`).
//! Durations are human-readable strings (`"15s"`, `"1h"`); sizes end in `_bytes`.
//! [`Config::validate`] runs at startup and names the offending key.

mod auth;
mod backend;
mod ingest;
mod limits;
mod server;
mod values;
mod webhooks;

pub use auth::{Algorithm, AuthConfig, KeyIds};
pub use backend::{BackendConfig, BackendKind, DiskConfig, RedisConfig};
pub use ingest::{AmqpBody, AmqpConfig, IngestConfig, UdpConfig};
pub use limits::{LimitsConfig, PublishConfig, StreamsConfig};
pub use server::{CorsConfig, LogConfig, LogFormat, MetricsConfig, ServerConfig, TlsConfig};
pub use values::Secret;
pub use webhooks::{DemoConfig, WebhookConfig, WebhookProvider, WebhooksConfig};

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

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
    pub publish: PublishConfig,
    pub cors: CorsConfig,
    pub metrics: MetricsConfig,
    pub backend: BackendConfig,
    pub webhooks: WebhooksConfig,
    pub ingest: IngestConfig,
    pub demo: DemoConfig,
    pub log: LogConfig,
}

impl Config {
    /// Loads defaults, then `path` (when given, it must exist; otherwise
    /// `config.toml` in the working directory if present), then the environment.
    ///
    /// # Errors
    /// [`ConfigError`] when a source cannot be parsed or a value is invalid.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        // Defaults come from the `Default` impls through `#[serde(default)]`, not from
        // a serialized copy: secrets serialize redacted, so a serialized default URL
        // would read back as `<redacted>`.
        let mut figment = Figment::new();
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
        Self::extract(&Figment::new().merge(Toml::string(text)))
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
        if self.publish.idempotency_window.is_zero() {
            return invalid("publish.idempotency_window", "must be greater than 0s");
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
        if self.streams.max_history_bytes < self.limits.max_event_bytes {
            return invalid(
                "streams.max_history_bytes",
                "must hold at least one event of limits.max_event_bytes",
            );
        }
        if self.backend.kind == BackendKind::Disk && self.backend.disk.path.as_os_str().is_empty() {
            return invalid("backend.disk.path", "must name a directory");
        }
        if self.demo.publisher && self.demo.publish_interval.is_zero() {
            return invalid("demo.publish_interval", "must be greater than 0s");
        }
        if self.backend.redis.connections == 0 {
            return invalid("backend.redis.connections", "must be at least 1");
        }
        if self.backend.kind == BackendKind::Redis
            && !self.backend.redis.sentinels.is_empty()
            && self.backend.redis.master_name.is_empty()
        {
            return invalid(
                "backend.redis.master_name",
                "must name the master when sentinels are set",
            );
        }
        if self.backend.redis.min_replicas > 0
            && self.backend.redis.min_replicas_timeout >= self.backend.redis.response_timeout
        {
            return invalid(
                "backend.redis.min_replicas_timeout",
                "must be shorter than backend.redis.response_timeout, which bounds every command",
            );
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
        let jwks = self.auth.jwks_url.is_some();
        let key_for = |alg| match alg {
            Algorithm::HS256 => true, // a missing secret is generated by `serve`
            Algorithm::RS256 => jwks || self.auth.rs256_public_key_file.is_some(),
            Algorithm::ES256 => jwks || self.auth.es256_public_key_file.is_some(),
            Algorithm::EdDSA => jwks || self.auth.eddsa_public_key_file.is_some(),
        };
        if let Some(alg) = self.auth.algorithms.iter().find(|alg| !key_for(**alg)) {
            return Err(ConfigError::Invalid {
                key: "auth.algorithms",
                reason: format!("{alg:?} is enabled but neither its public key file nor auth.jwks_url is set"),
            });
        }
        if let Some(url) = &self.auth.jwks_url {
            if !["https://", "http://", "file://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return invalid("auth.jwks_url", "must start with https://, http:// or file://");
            }
            if !self.auth.algorithms.iter().any(|alg| *alg != Algorithm::HS256) {
                return invalid(
                    "auth.jwks_url",
                    "enable RS256, ES256 or EdDSA in auth.algorithms to use it",
                );
            }
        }
        if self.auth.jwks_refresh.is_zero() {
            return invalid("auth.jwks_refresh", "must be more than 0");
        }
        let tls = &self.server.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return invalid("server.tls", "set both cert_file and key_file (or neither)");
        }
        let amqp = &self.ingest.amqp;
        if amqp.enabled {
            if amqp.queue.is_empty() {
                return invalid("ingest.amqp.queue", "must not be empty");
            }
            if amqp.prefetch == 0 {
                return invalid("ingest.amqp.prefetch", "must be at least 1 (0 would mean unbounded)");
            }
            if !["amqp://", "amqps://"]
                .iter()
                .any(|scheme| amqp.url.expose().starts_with(scheme))
            {
                return invalid("ingest.amqp.url", "must start with amqp:// or amqps://");
            }
            if amqp.reconnect_min.is_zero() || amqp.reconnect_max < amqp.reconnect_min {
                return invalid(
                    "ingest.amqp.reconnect_min",
                    "must be more than 0 and at most ingest.amqp.reconnect_max",
                );
            }
        }
        if self.auth.revocation_ttl.is_zero() {
            return invalid("auth.revocation_ttl", "must be more than 0");
        }
        if self.demo.token_ttl <= self.auth.expiry_warning && self.demo.enabled {
            return invalid(
                "demo.token_ttl",
                "must be longer than auth.expiry_warning, or the page would switch tokens at once",
            );
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

/// Environment overrides: `SSE_GATEWAY_SECTION__KEY`. Variables without a section
/// (such as `SSE_GATEWAY_CONFIG`, the CLI's own) are not configuration keys.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
    fn secret_defaults_survive_loading_without_a_file() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config.backend.redis.url.expose(), "redis://127.0.0.1:6379");
        assert_eq!(config.ingest.amqp.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
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
