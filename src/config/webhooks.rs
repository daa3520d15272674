//! `[webhooks]` and `[demo]`: inbound webhooks, the demo page and its publisher.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Secret, duration};

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
    /// Lifetime of the demo page's token; the page fetches a fresh one from
    /// `/demo/token` when the stream warns that it expires (`auth.expiry_warning`).
    #[serde(with = "duration")]
    pub token_ttl: Duration,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            publisher: true,
            publish_interval: Duration::from_secs(1),
            max_connections: 100,
            token_ttl: Duration::from_secs(3600),
        }
    }
}
