//! Public keys by `kid` from a JWKS (`auth.jwks_url`), so an identity provider can
//! rotate its signing keys without a gateway restart.
//!
//! The set is fetched at start, every `auth.jwks_refresh`, and when a token names
//! a `kid` the set lacks, but then at most once per `auth.jwks_cooldown`: a flood
//! of tokens with random `kid`s costs one fetch per cooldown, not one per token.
//! Fetches are one at a time; a token that triggered one waits for it (bounded by
//! the fetch timeout). A failed fetch, or a set without one usable key, keeps the
//! last good set. Only RS256, ES256 (P-256) and EdDSA (Ed25519) signature keys of
//! enabled algorithms are taken; symmetric (`oct`) and encryption keys never are.
//!
//! Parsing uses `jsonwebtoken`'s JWK types. The fetching and caching are ours: no
//! well-kept crate does refresh-with-cooldown over `jsonwebtoken` keys.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use tokio_util::sync::CancellationToken;

use crate::config::AuthConfig;
use crate::metrics as m;

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A key of the set: its algorithm and the key.
pub type SetKey = (jsonwebtoken::Algorithm, Arc<DecodingKey>);

/// Why a fetch did not give a usable set (logged; never shown to clients).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS is not a JSON key set: {0}")]
    Parse(String),
    #[error("the JWKS holds no signature key with a `kid` for an enabled algorithm")]
    NoUsableKey,
}

#[derive(Debug)]
enum Source {
    Http { url: String, client: reqwest::Client },
    File(PathBuf),
}

/// The key set in use and how it is kept fresh.
#[derive(Debug)]
pub struct Jwks {
    source: Source,
    algorithms: Vec<jsonwebtoken::Algorithm>,
    keys: RwLock<Arc<HashMap<String, SetKey>>>,
    refresh: Duration,
    cooldown: Duration,
    /// When the last fetch started; held while one runs, so fetches are one at a time.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Counts the key sets installed: a token verified under an older set is
    /// verified again (the verifier's cache compares it).
    generation: AtomicU64,
}

impl Jwks {
    /// The JWKS `auth` configures, if any (nothing is fetched yet).
    pub fn from_config(auth: &AuthConfig) -> Option<Arc<Self>> {
        let url = auth.jwks_url.as_deref()?;
        let source = match url.strip_prefix("file://") {
            Some(path) => Source::File(PathBuf::from(path)),
            None => {
                // rustls needs one process-wide crypto provider; a second install is a no-op.
                let _ = rustls::crypto::ring::default_provider().install_default();
                Source::Http {
                    url: url.to_owned(),
                    client: reqwest::Client::builder()
                        .timeout(FETCH_TIMEOUT)
                        .redirect(reqwest::redirect::Policy::limited(3))
                        .build()
                        .unwrap_or_default(),
                }
            }
        };
        Some(Arc::new(Self {
            source,
            algorithms: auth
                .algorithms
                .iter()
                .map(|alg| alg.to_jwt())
                .filter(|alg| *alg != jsonwebtoken::Algorithm::HS256)
                .collect(),
            keys: RwLock::new(Arc::new(HashMap::new())),
            refresh: auth.jwks_refresh,
            cooldown: auth.jwks_cooldown,
            last_fetch: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }))
    }

    /// The key `kid` names in the set in use.
    pub fn key(&self, kid: &str) -> Option<SetKey> {
        let keys = self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        keys.get(kid).cloned()
    }

    /// Changes whenever a key set is installed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Keys in the set in use.
    pub fn len(&self) -> usize {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fetches the set at start, then every `auth.jwks_refresh` until `stop`.
    pub async fn start(self: &Arc<Self>, stop: CancellationToken) {
        self.refresh_now("startup").await;
        let jwks = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(jwks.refresh) => jwks.refresh_now("periodic").await,
                }
            }
        });
    }

    /// Fetches again because a token named `kid`, unless a fetch started within
    /// the cooldown. Returns whether the set in use now holds `kid`.
    pub async fn refresh_for_unknown(&self, kid: &str) -> bool {
        let mut last_fetch = self.last_fetch.lock().await;
        if self.key(kid).is_some() {
            return true;
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.cooldown) {
            return false;
        }
        *last_fetch = Some(Instant::now());
        self.fetch_and_install("unknown_kid").await;
        self.key(kid).is_some()
    }

    async fn refresh_now(&self, trigger: &'static str) {
        let mut last_fetch = self.last_fetch.lock().await;
        *last_fetch = Some(Instant::now());
        self.fetch_and_install(trigger).await;
    }

    async fn fetch_and_install(&self, trigger: &'static str) {
        let result = self.fetch().await.and_then(|document| self.parse(&document));
        let label = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!(m::JWKS_REFRESHES, "trigger" => trigger, "result" => label).increment(1);
        match result {
            Ok(keys) => {
                let count = keys.len();
                *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                self.generation.fetch_add(1, Ordering::AcqRel);
                metrics::gauge!(m::JWKS_KEYS).set(count as f64);
                tracing::info!(trigger, keys = count, "JWKS loaded");
            }
            Err(error) => {
                tracing::warn!(trigger, %error, kept = self.len(), "JWKS refresh failed; keeping the last good set");
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        match &self.source {
            Source::File(path) => {
                let read = async {
                    let metadata = tokio::fs::metadata(path).await?;
                    if metadata.len() > MAX_JWKS_BYTES as u64 {
                        return Ok(None);
                    }
                    tokio::fs::read(path).await.map(Some)
                };
                match read.await {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => Err(JwksError::TooLarge),
                    Err(error) => Err(JwksError::Fetch(format!("{}: {error}", path.display()))),
                }
            }
            Source::Http { url, client } => {
                let fetch_error = |error: reqwest::Error| JwksError::Fetch(error.without_url().to_string());
                let mut response = client
                    .get(url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(fetch_error)?;
                if response
                    .content_length()
                    .is_some_and(|length| length > MAX_JWKS_BYTES as u64)
                {
                    return Err(JwksError::TooLarge);
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(JwksError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }

    /// The usable keys of a JWKS document.
    fn parse(&self, document: &[u8]) -> Result<HashMap<String, SetKey>, JwksError> {
        let set: JwkSet = serde_json::from_slice(document).map_err(|error| JwksError::Parse(error.to_string()))?;
        let keys: HashMap<String, SetKey> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let alg = algorithm_of(jwk).filter(|alg| self.algorithms.contains(alg))?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, (alg, Arc::new(key))))
            })
            .collect();
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey);
        }
        Ok(keys)
    }
}

/// The signature algorithm a JWK is for: its `alg`, else what its key type and
/// curve imply. `None` for encryption keys, symmetric keys and anything else.
fn algorithm_of(jwk: &Jwk) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm as Alg;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Alg::RS256),
        AlgorithmParameters::EllipticCurve(params) if params.curve == EllipticCurve::P256 => Some(Alg::ES256),
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => Some(Alg::EdDSA),
        _ => None,
    }?;
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Alg::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Alg::ES256 => Some(implied),
        Some(KeyAlgorithm::EdDSA) if implied == Alg::EdDSA => Some(implied),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Algorithm;

    fn jwks(algorithms: Vec<Algorithm>) -> Arc<Jwks> {
        Jwks::from_config(&AuthConfig {
            algorithms,
            jwks_url: Some("file:///nonexistent".to_owned()),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    #[test]
    fn signature_keys_of_enabled_algorithms_are_taken_by_kid() {
        let jwks = jwks(vec![Algorithm::RS256]);
        let document = format!(
            r#"{{"keys":[
                {{"kty":"RSA","kid":"rsa-1","use":"sig","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","kid":"rsa-enc","use":"enc","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"RSA","n":"{RSA_N}","e":"AQAB"}},
                {{"kty":"oct","kid":"shared","k":"c2VjcmV0"}},
                {{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}
            ]}}"#
        );
        let keys = jwks.parse(document.as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), ["rsa-1"], "EdDSA is not enabled");
        assert_eq!(keys["rsa-1"].0, jsonwebtoken::Algorithm::RS256);
    }

    #[test]
    fn a_document_without_usable_keys_is_a_failure() {
        let jwks = jwks(vec![Algorithm::ES256]);
        assert!(matches!(jwks.parse(br#"{"keys":[]}"#), Err(JwksError::NoUsableKey)));
        assert!(matches!(jwks.parse(b"<html>"), Err(JwksError::Parse(_))));
    }

    #[test]
    fn an_alg_that_contradicts_the_key_type_is_not_taken() {
        let jwk: Jwk = serde_json::from_str(&format!(
            r#"{{"kty":"RSA","kid":"k","alg":"ES256","n":"{RSA_N}","e":"AQAB"}}"#
        ))
        .unwrap();
        assert_eq!(algorithm_of(&jwk), None);
    }
}
