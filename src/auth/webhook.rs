//! Webhook authentication: each configured hook names a stream, a provider and a
//! shared secret. GitLab sends the secret itself in `X-Gitlab-Token`; GitHub signs
//! the raw body with HMAC-SHA256 in `X-Hub-Signature-256: sha256=<hex>`. Both are
//! compared in constant time.

use std::collections::HashMap;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AuthError;
use crate::config::{Secret, WebhookConfig, WebhookProvider};
use crate::event::EventType;
use crate::stream::StreamName;

/// A configuration problem with a webhook, naming the hook by its stream.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks.hooks: `{0}` is not a valid stream name")]
    InvalidStream(String),
    #[error("webhooks.hooks: stream `{0}` has more than one hook")]
    Duplicate(String),
    #[error("webhooks.hooks: the hook for `{0}` needs `secret` or `secret_file`")]
    MissingSecret(String),
    #[error("webhooks.hooks: cannot read the secret file of `{stream}`: {source}")]
    Read { stream: String, source: std::io::Error },
    #[error("webhooks.hooks: invalid `event` for `{0}`")]
    InvalidEventType(String),
}

/// One configured hook.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub provider: WebhookProvider,
    secret: Secret,
    /// Fixed event type; otherwise taken from the provider's event header.
    event_type: Option<EventType>,
}

/// Hooks by stream.
#[derive(Debug, Default)]
pub struct Webhooks {
    hooks: HashMap<StreamName, Webhook>,
}

impl Webhooks {
    /// Validates the hooks and reads their secrets.
    ///
    /// # Errors
    /// [`WebhookError`] naming the hook at fault.
    pub fn from_config(hooks: &[WebhookConfig]) -> Result<Self, WebhookError> {
        let mut by_stream = HashMap::new();
        for hook in hooks {
            let stream =
                StreamName::try_new(&hook.stream).map_err(|_| WebhookError::InvalidStream(hook.stream.clone()))?;
            let secret = match (&hook.secret, &hook.secret_file) {
                (Some(secret), _) if !secret.expose().is_empty() => secret.clone(),
                (_, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|source| WebhookError::Read {
                        stream: hook.stream.clone(),
                        source,
                    })?;
                    Secret::new(text.trim())
                }
                _ => return Err(WebhookError::MissingSecret(hook.stream.clone())),
            };
            if secret.expose().is_empty() {
                return Err(WebhookError::MissingSecret(hook.stream.clone()));
            }
            let event_type = hook
                .event
                .as_deref()
                .map(EventType::try_new)
                .transpose()
                .map_err(|_| WebhookError::InvalidEventType(hook.stream.clone()))?;
            let webhook = Webhook {
                provider: hook.provider,
                secret,
                event_type,
            };
            if by_stream.insert(stream, webhook).is_some() {
                return Err(WebhookError::Duplicate(hook.stream.clone()));
            }
        }
        Ok(Self { hooks: by_stream })
    }

    pub fn get(&self, stream: &StreamName) -> Option<&Webhook> {
        self.hooks.get(stream)
    }
}

impl Webhook {
    /// Checks the request's proof of the shared secret.
    ///
    /// # Errors
    /// [`AuthError::MissingToken`] without the provider's header,
    /// [`AuthError::BadSignature`] when it does not match.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), AuthError> {
        match self.provider {
            WebhookProvider::Gitlab => {
                let token = header(headers, "x-gitlab-token").ok_or(AuthError::MissingToken)?;
                let matches: bool = token.as_bytes().ct_eq(self.secret.expose().as_bytes()).into();
                matches.then_some(()).ok_or(AuthError::BadSignature)
            }
            WebhookProvider::Github => {
                let signature = header(headers, "x-hub-signature-256").ok_or(AuthError::MissingToken)?;
                let hex_digest = signature.strip_prefix("sha256=").ok_or(AuthError::MalformedToken)?;
                let digest = hex::decode(hex_digest).map_err(|_| AuthError::MalformedToken)?;
                let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
                    .map_err(|_| AuthError::BadSignature)?;
                mac.update(body);
                // `verify_slice` compares in constant time.
                mac.verify_slice(&digest).map_err(|_| AuthError::BadSignature)
            }
        }
    }

    /// The configured event type, else the provider's event header when it is a
    /// valid type (`X-GitHub-Event: push`, `X-Gitlab-Event: Pipeline Hook`), else none.
    pub fn event_type(&self, headers: &HeaderMap) -> Option<EventType> {
        if let Some(event_type) = &self.event_type {
            return Some(event_type.clone());
        }
        let name = match self.provider {
            WebhookProvider::Gitlab => "x-gitlab-event",
            WebhookProvider::Github => "x-github-event",
        };
        header(headers, name).and_then(|value| EventType::try_new(value).ok())
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn hook(provider: WebhookProvider) -> Webhook {
        Webhook {
            provider,
            secret: Secret::new("s3cret"),
            event_type: None,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn gitlab_tokens_must_match_exactly() {
        let gitlab = hook(WebhookProvider::Gitlab);
        assert!(gitlab.verify(&headers(&[("x-gitlab-token", "s3cret")]), b"{}").is_ok());
        assert_eq!(
            gitlab.verify(&headers(&[("x-gitlab-token", "s3cre")]), b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(gitlab.verify(&headers(&[]), b"{}"), Err(AuthError::MissingToken));
    }

    #[test]
    fn github_signatures_are_hmac_sha256_of_the_body() {
        let github = hook(WebhookProvider::Github);
        // Computed independently: printf '{"a":1}' | openssl dgst -sha256 -hmac s3cret
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(br#"{"a":1}"#);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(
            github
                .verify(&headers(&[("x-hub-signature-256", &good)]), br#"{"a":1}"#)
                .is_ok()
        );
        assert_eq!(
            github.verify(&headers(&[("x-hub-signature-256", &good)]), br#"{"a":2}"#),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            github.verify(&headers(&[("x-hub-signature-256", "sha1=00")]), b"{}"),
            Err(AuthError::MalformedToken)
        );
    }

    #[test]
    fn event_types_come_from_config_or_a_valid_provider_header() {
        let github = hook(WebhookProvider::Github);
        assert_eq!(
            github
                .event_type(&headers(&[("x-github-event", "push")]))
                .unwrap()
                .as_str(),
            "push"
        );
        assert!(github.event_type(&headers(&[("x-github-event", "gap")])).is_none());
        let fixed = Webhook {
            event_type: Some(EventType::try_new("ci").unwrap()),
            ..hook(WebhookProvider::Gitlab)
        };
        assert_eq!(fixed.event_type(&headers(&[])).unwrap().as_str(), "ci");
    }
}
