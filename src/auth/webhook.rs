//! Webhook authentication: each configured hook names a stream, a provider and a
//! shared secret.
//! - GitLab sends the secret itself in `X-Gitlab-Token` (checked before the body is
//!   read, compared as SHA-256 digests so the comparison reveals neither content nor
//!   length);
//! - GitHub signs the raw body with HMAC-SHA256 in `X-Hub-Signature-256`;
//! - Standard Webhooks (<https://www.standardwebhooks.com>) sign
//!   `id.timestamp.body` in `webhook-signature`, so a delivery older than the hook's
//!   `max_age` is refused.
//!
//! A caller without the secret learns nothing about which hooks exist: an unknown
//! hook answers exactly what a known hook answers to a wrong secret.
//!
//! Replays: each verified delivery has a replay key (GitHub: its signature, i.e.
//! the body; Standard Webhooks: `webhook-id`; GitLab: its `Idempotency-Key` or
//! `X-Gitlab-Event-UUID` header), remembered for `webhooks.replay_window`. GitHub
//! signs no timestamp and GitLab's token is a bearer secret, so a delivery replayed
//! after the window (GitHub) or replayed with a new id header (GitLab) cannot be
//! told apart from a new one; Standard Webhooks deliveries are bounded by `max_age`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
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
    #[error(
        "webhooks.hooks: `{0}` and `{1}` share a secret, so a delivery signed for one would be \
         accepted by the other; give every hook its own secret"
    )]
    SharedSecret(String, String),
    #[error("webhooks.hooks: the secret of `{0}` starts with `whsec_` but is not valid base64")]
    InvalidStandardSecret(String),
}

/// Key bytes whose `Debug` never shows them.
#[derive(Clone)]
struct KeyBytes(Vec<u8>);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

/// One configured hook.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub provider: WebhookProvider,
    /// The bytes the HMAC is keyed with (GitHub, Standard Webhooks).
    key: KeyBytes,
    /// SHA-256 of the GitLab token, compared with the digest of the presented one.
    token_digest: [u8; 32],
    /// Fixed event type; otherwise taken from the provider's event header.
    event_type: Option<EventType>,
    max_age: Duration,
}

/// Hooks by stream.
#[derive(Debug, Default)]
pub struct Webhooks {
    hooks: HashMap<StreamName, Webhook>,
}

/// How a request claims to know a hook's secret, read from its headers.
#[derive(Debug)]
pub enum Proof {
    /// `X-Gitlab-Token`: the secret itself.
    Token(String),
    /// `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the body.
    BodySignature(Vec<u8>),
    /// Standard Webhooks: HMAC-SHA256 of `id.timestamp.body`, one or more `v1,` values.
    Standard {
        id: String,
        timestamp: u64,
        signatures: Vec<Vec<u8>>,
    },
}

/// A verified delivery.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub hook: &'a Webhook,
    /// Identifies this delivery for replay detection, when the provider gives one.
    pub replay_key: Option<String>,
}

impl Proof {
    /// Reads the proof from the headers, before any body is read.
    ///
    /// # Errors
    /// [`AuthError::MissingToken`] without any provider's header,
    /// [`AuthError::MalformedToken`] when it cannot be read.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AuthError> {
        if let Some(token) = header(headers, "x-gitlab-token") {
            return Ok(Self::Token(token.to_owned()));
        }
        if let Some(signature) = header(headers, "x-hub-signature-256") {
            let hex_digest = signature.strip_prefix("sha256=").ok_or(AuthError::MalformedToken)?;
            let digest = hex::decode(hex_digest).map_err(|_| AuthError::MalformedToken)?;
            return Ok(Self::BodySignature(digest));
        }
        if let Some(signature) = header(headers, "webhook-signature") {
            let id = header(headers, "webhook-id").ok_or(AuthError::MalformedToken)?;
            let timestamp = header(headers, "webhook-timestamp")
                .and_then(|text| text.parse().ok())
                .ok_or(AuthError::MalformedToken)?;
            let signatures = signature
                .split_whitespace()
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|encoded| BASE64.decode(encoded).ok())
                .collect::<Vec<_>>();
            if signatures.is_empty() || id.is_empty() {
                return Err(AuthError::MalformedToken);
            }
            return Ok(Self::Standard {
                id: id.to_owned(),
                timestamp,
                signatures,
            });
        }
        Err(AuthError::MissingToken)
    }

    /// Whether checking this proof needs the body (GitLab's token does not).
    pub fn signs_body(&self) -> bool {
        !matches!(self, Self::Token(_))
    }
}

impl Webhooks {
    /// Validates the hooks and reads their secrets.
    ///
    /// # Errors
    /// [`WebhookError`] naming the hook at fault.
    pub fn from_config(hooks: &[WebhookConfig]) -> Result<Self, WebhookError> {
        let mut by_stream: HashMap<StreamName, Webhook> = HashMap::new();
        let mut by_secret: HashMap<[u8; 32], String> = HashMap::new();
        for hook in hooks {
            let stream =
                StreamName::try_new(&hook.stream).map_err(|_| WebhookError::InvalidStream(hook.stream.clone()))?;
            let secret = read_secret(hook)?;
            let key = match hook.provider {
                WebhookProvider::Standard => standard_key(&hook.stream, &secret)?,
                WebhookProvider::Gitlab | WebhookProvider::Github => secret.expose().as_bytes().to_vec(),
            };
            let token_digest: [u8; 32] = Sha256::digest(&key).into();
            if let Some(other) = by_secret.insert(token_digest, hook.stream.clone()) {
                return Err(WebhookError::SharedSecret(other, hook.stream.clone()));
            }
            let event_type = hook
                .event
                .as_deref()
                .map(EventType::try_new)
                .transpose()
                .map_err(|_| WebhookError::InvalidEventType(hook.stream.clone()))?;
            let webhook = Webhook {
                provider: hook.provider,
                key: KeyBytes(key),
                token_digest,
                event_type,
                max_age: hook.max_age,
            };
            if by_stream.insert(stream, webhook).is_some() {
                return Err(WebhookError::Duplicate(hook.stream.clone()));
            }
        }
        Ok(Self { hooks: by_stream })
    }

    /// Checks `proof` (and `body`, when the proof signs it) against the hook of
    /// `stream`. An unknown hook fails exactly as a wrong secret does.
    ///
    /// # Errors
    /// [`AuthError::BadSignature`] when the proof does not match (or there is no such
    /// hook), [`AuthError::StaleDelivery`] for a signed timestamp outside `max_age`.
    pub fn verify(
        &self,
        stream: &StreamName,
        proof: &Proof,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Delivery<'_>, AuthError> {
        let hook = self.hooks.get(stream);
        let provider = hook.map(|hook| hook.provider);
        // Without a hook, the same work against a key nobody holds: equal answers
        // and similar timing for known and unknown hooks.
        let unknown = Webhook::unknown();
        let checked = hook.unwrap_or(&unknown);
        let verified = match proof {
            Proof::Token(token) => {
                let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                bool::from(digest.ct_eq(&checked.token_digest)) && provider == Some(WebhookProvider::Gitlab)
            }
            Proof::BodySignature(signature) => {
                let mut mac = checked.mac();
                mac.update(body);
                mac.verify_slice(signature).is_ok() && provider == Some(WebhookProvider::Github)
            }
            Proof::Standard {
                id,
                timestamp,
                signatures,
            } => {
                let mut mac = checked.mac();
                mac.update(format!("{id}.{timestamp}.").as_bytes());
                mac.update(body);
                let expected = mac.finalize().into_bytes();
                let matches = signatures.iter().fold(false, |found, signature| {
                    found | bool::from(expected[..].ct_eq(signature))
                });
                matches && provider == Some(WebhookProvider::Standard)
            }
        };
        let Some(hook) = hook.filter(|_| verified) else {
            return Err(AuthError::BadSignature);
        };
        let replay_key = match proof {
            Proof::Token(_) => ["idempotency-key", "x-gitlab-event-uuid"]
                .iter()
                .find_map(|name| header(headers, name))
                .map(|key| format!("gitlab:{key}")),
            Proof::BodySignature(signature) => Some(format!("github:{}", hex::encode(signature))),
            Proof::Standard { id, timestamp, .. } => {
                if !hook.is_fresh(*timestamp) {
                    return Err(AuthError::StaleDelivery);
                }
                Some(format!("standard:{id}"))
            }
        };
        Ok(Delivery { hook, replay_key })
    }
}

fn read_secret(hook: &WebhookConfig) -> Result<Secret, WebhookError> {
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
    Ok(secret)
}

/// Standard Webhooks secrets are `whsec_` + base64 of the key; others are used as is.
fn standard_key(stream: &str, secret: &Secret) -> Result<Vec<u8>, WebhookError> {
    let Some(encoded) = secret.expose().strip_prefix("whsec_") else {
        return Ok(secret.expose().as_bytes().to_vec());
    };
    BASE64
        .decode(encoded)
        .map_err(|_| WebhookError::InvalidStandardSecret(stream.to_owned()))
}

impl Webhook {
    /// A hook that verifies nothing, checked in place of one that does not exist.
    fn unknown() -> Self {
        Self {
            provider: WebhookProvider::Gitlab,
            key: KeyBytes(b"\0 no such hook".to_vec()),
            token_digest: [0; 32],
            event_type: None,
            max_age: Duration::ZERO,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length (RFC 2104 hashes longer ones), so this cannot fail.
        Hmac::<Sha256>::new_from_slice(&self.key.0).expect("HMAC accepts keys of any length")
    }

    fn is_fresh(&self, timestamp: u64) -> bool {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        now.abs_diff(timestamp) <= self.max_age.as_secs()
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
            WebhookProvider::Standard => return None,
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

    fn config(stream: &str, provider: WebhookProvider, secret: &str) -> WebhookConfig {
        WebhookConfig {
            stream: stream.to_owned(),
            provider,
            secret: Some(Secret::new(secret)),
            secret_file: None,
            event: None,
            max_age: Duration::from_secs(300),
        }
    }

    fn hooks() -> Webhooks {
        Webhooks::from_config(&[
            config("ci.gitlab", WebhookProvider::Gitlab, "s3cret"),
            config("ci.github", WebhookProvider::Github, "g1thub"),
            config("ci.std", WebhookProvider::Standard, "whsec_c3RhbmRhcmQta2V5"),
        ])
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
    }

    fn check(stream: &str, pairs: &[(&'static str, &str)], body: &[u8]) -> Result<Option<String>, AuthError> {
        let headers = headers(pairs);
        let proof = Proof::from_headers(&headers)?;
        hooks()
            .verify(&name(stream), &proof, &headers, body)
            .map(|delivery| delivery.replay_key)
    }

    fn github_signature(secret: &[u8], body: &[u8]) -> String {
        // Computed independently: printf '{"a":1}' | openssl dgst -sha256 -hmac SECRET
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn gitlab_tokens_must_match_exactly() {
        assert!(check("ci.gitlab", &[("x-gitlab-token", "s3cret")], b"{}").is_ok());
        assert_eq!(
            check("ci.gitlab", &[("x-gitlab-token", "s3cre")], b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(check("ci.gitlab", &[], b"{}"), Err(AuthError::MissingToken));
        assert_eq!(
            check(
                "ci.gitlab",
                &[("x-gitlab-token", "s3cret"), ("idempotency-key", "k1")],
                b"{}"
            ),
            Ok(Some("gitlab:k1".to_owned()))
        );
    }

    #[test]
    fn github_signatures_are_hmac_sha256_of_the_body() {
        let good = github_signature(b"g1thub", br#"{"a":1}"#);
        assert!(check("ci.github", &[("x-hub-signature-256", &good)], br#"{"a":1}"#).is_ok());
        assert_eq!(
            check("ci.github", &[("x-hub-signature-256", &good)], br#"{"a":2}"#),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check("ci.github", &[("x-hub-signature-256", "sha1=00")], b"{}"),
            Err(AuthError::MalformedToken)
        );
    }

    #[test]
    fn unknown_hooks_answer_as_a_wrong_secret_does() {
        let github = github_signature(b"wrong", b"{}");
        for (pairs, expected) in [
            (vec![("x-gitlab-token", "guess")], AuthError::BadSignature),
            (vec![("x-hub-signature-256", github.as_str())], AuthError::BadSignature),
            (vec![], AuthError::MissingToken),
        ] {
            let known = if pairs.first().is_some_and(|(n, _)| *n == "x-hub-signature-256") {
                "ci.github"
            } else {
                "ci.gitlab"
            };
            assert_eq!(check(known, &pairs, b"{}"), Err(expected));
            assert_eq!(check("ci.nothing-here", &pairs, b"{}"), Err(expected));
        }
        // A right secret for the wrong kind of hook is no better.
        assert_eq!(
            check("ci.github", &[("x-gitlab-token", "g1thub")], b"{}"),
            Err(AuthError::BadSignature)
        );
    }

    fn standard_headers(id: &str, timestamp: u64, body: &[u8]) -> Vec<(&'static str, String)> {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"standard-key").unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let signature = BASE64.encode(mac.finalize().into_bytes());
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", format!("v1,bm90LWl0 v1,{signature}")),
        ]
    }

    #[test]
    fn standard_webhooks_sign_id_timestamp_and_body_and_expire() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let fresh = standard_headers("msg_1", now, b"{}");
        let pairs: Vec<(&'static str, &str)> = fresh.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(check("ci.std", &pairs, b"{}"), Ok(Some("standard:msg_1".to_owned())));
        assert_eq!(check("ci.std", &pairs, b"{ }"), Err(AuthError::BadSignature));
        let stale = standard_headers("msg_2", now - 3600, b"{}");
        let pairs: Vec<(&'static str, &str)> = stale.iter().map(|(n, v)| (*n, v.as_str())).collect();
        assert_eq!(check("ci.std", &pairs, b"{}"), Err(AuthError::StaleDelivery));
    }

    #[test]
    fn hooks_sharing_a_secret_are_a_configuration_error() {
        let error = Webhooks::from_config(&[
            config("a", WebhookProvider::Github, "same"),
            config("b", WebhookProvider::Gitlab, "same"),
        ])
        .unwrap_err();
        assert!(matches!(error, WebhookError::SharedSecret(..)), "{error}");
    }

    #[test]
    fn event_types_come_from_config_or_a_valid_provider_header() {
        let hooks = hooks();
        let github = hooks.hooks.get(&name("ci.github")).unwrap();
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
            ..github.clone()
        };
        assert_eq!(fixed.event_type(&headers(&[])).unwrap().as_str(), "ci");
    }
}
