//! `[auth]`: accepted algorithms, their keys and claim checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::{Secret, duration};

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
    /// How long before a live stream's token expires the gateway sends
    /// `event: token-expiring` (at connect when already that close); 0 turns it off.
    #[serde(with = "duration")]
    pub expiry_warning: Duration,
    /// How long a revocation (`POST /revocations`) refuses its tokens; at least the
    /// longest token lifetime.
    #[serde(with = "duration")]
    pub revocation_ttl: Duration,
    /// JWKS with the public keys of RS256, ES256 and EdDSA tokens by `kid`:
    /// `https://…`, `http://…` or `file:///path`.
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again.
    #[serde(with = "duration")]
    pub jwks_refresh: Duration,
    /// Least time between two fetches caused by tokens naming an unknown `kid`.
    #[serde(with = "duration")]
    pub jwks_cooldown: Duration,
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
            expiry_warning: Duration::from_secs(60),
            revocation_ttl: Duration::from_secs(24 * 3600),
            jwks_url: None,
            jwks_refresh: Duration::from_secs(300),
            jwks_cooldown: Duration::from_secs(30),
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
