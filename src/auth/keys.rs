//! Verification keys per algorithm, built from `[auth]`, and token verification.
//!
//! A static key per enabled algorithm (PEM files, the HS256 secret) and, with
//! `auth.jwks_url`, the keys of a JWKS by `kid` ([`Jwks`]). A token is checked only
//! with a key of the algorithm its header names, and only when that algorithm is
//! enabled (so an RS256 public key can never be used as an HS256 secret, a JWKS
//! never supplies HS256 keys, and `none` never verifies).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};

use super::jwks::Jwks;
use super::{AuthError, Claims};
use crate::config::{Algorithm, AuthConfig, Secret};

/// Where `serve` keeps a generated HS256 secret when none is configured.
pub const DEFAULT_SECRET_FILE: &str = ".sse-gateway-secret";

/// Shorter HS256 secrets work but earn a startup warning.
pub const MIN_SECRET_BYTES: usize = 32;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// A key that could not be loaded; names the configuration key, never the key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read `{key}` from {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{key}` does not hold a valid {alg:?} key")]
    Invalid { key: &'static str, alg: Algorithm },
    #[error("HS256 is enabled but no secret is configured (set auth.hs256_secret or auth.hs256_secret_file)")]
    MissingSecret,
    #[error("the HS256 secret in `{key}` is empty")]
    EmptySecret { key: &'static str },
    #[error("cannot create the secret file {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
}

/// A verified token: its claims, when it expires, and whom limits count it against.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    pub expires_at: Option<SystemTime>,
    /// The `sub` claim, or the token's signature when it has none.
    pub subject: String,
}

/// Checks signatures and registered claims as `[auth]` says.
pub struct Verifier {
    /// Enabled algorithms.
    algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Static keys: algorithm, key, the `kid` it answers to (if configured).
    keys: Vec<(jsonwebtoken::Algorithm, Arc<DecodingKey>, Option<String>)>,
    jwks: Option<Arc<Jwks>>,
    require_exp: bool,
    validate_nbf: bool,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: Duration,
    /// Tokens verified recently, by their text, with the JWKS generation they were
    /// verified under. A publisher's keep-alive requests and a client's reconnects
    /// present the same token again and again, and verification (two base64 decodes,
    /// two JSON parses and an HMAC, about 6 µs for HS256; far more for RS256) would
    /// otherwise be the largest cost of an authenticated request. Only successful
    /// verifications are kept; `exp` and `nbf` are checked again on every use, and
    /// revocation is checked by the caller on every use. Bounded by weight (the
    /// token's length plus its claims'), evicted by `quick_cache`'s S3-FIFO policy.
    recent: quick_cache::sync::Cache<Box<str>, (Arc<Verified>, u64), TokenWeight>,
}

/// Bytes the verified-token cache holds at most.
const RECENT_TOKENS_BYTES: u64 = 4 * 1024 * 1024;
/// Expected entries (sizes the cache's table).
const RECENT_TOKENS_ESTIMATE: usize = 8192;

/// An entry's weight in the verified-token cache: its bytes, roughly.
#[derive(Debug, Clone, Copy)]
struct TokenWeight;

impl quick_cache::Weighter<Box<str>, (Arc<Verified>, u64)> for TokenWeight {
    fn weight(&self, token: &Box<str>, (verified, _): &(Arc<Verified>, u64)) -> u64 {
        // Claims are parsed from the token's payload, so they take about as many
        // bytes again; plus the fixed parts of an entry.
        (2 * token.len() + verified.subject.len() + 256) as u64
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms)
            .field("jwks", &self.jwks.is_some())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads the key of every enabled algorithm.
    ///
    /// # Errors
    /// [`KeyError`] when a key file is unreadable or not a key of its algorithm.
    pub fn from_config(auth: &AuthConfig) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        let jwks = Jwks::from_config(auth);
        for &alg in &auth.algorithms {
            let pem_file = match alg {
                Algorithm::HS256 => None,
                Algorithm::RS256 => auth.rs256_public_key_file.as_ref(),
                Algorithm::ES256 => auth.es256_public_key_file.as_ref(),
                Algorithm::EdDSA => auth.eddsa_public_key_file.as_ref(),
            };
            if alg != Algorithm::HS256 && pem_file.is_none() && jwks.is_some() {
                // This algorithm's keys come from the JWKS only.
                continue;
            }
            let key = match alg {
                Algorithm::HS256 => {
                    let secret = hs256_secret(auth)?.ok_or(KeyError::MissingSecret)?;
                    if secret.expose().len() < MIN_SECRET_BYTES {
                        tracing::warn!(
                            "the HS256 secret is shorter than {MIN_SECRET_BYTES} bytes; \
                             use a longer random secret in production (RFC 7518 section 3.2)"
                        );
                    }
                    DecodingKey::from_secret(secret.expose().as_bytes())
                }
                Algorithm::RS256 => load_pem(
                    "auth.rs256_public_key_file",
                    auth.rs256_public_key_file.as_deref(),
                    alg,
                    DecodingKey::from_rsa_pem,
                )?,
                Algorithm::ES256 => load_pem(
                    "auth.es256_public_key_file",
                    auth.es256_public_key_file.as_deref(),
                    alg,
                    DecodingKey::from_ec_pem,
                )?,
                Algorithm::EdDSA => load_pem(
                    "auth.eddsa_public_key_file",
                    auth.eddsa_public_key_file.as_deref(),
                    alg,
                    DecodingKey::from_ed_pem,
                )?,
            };
            keys.push((alg.to_jwt(), Arc::new(key), auth.key_ids.get(alg).map(str::to_owned)));
        }
        Ok(Self {
            algorithms: auth.algorithms.iter().map(|alg| alg.to_jwt()).collect(),
            keys,
            jwks,
            require_exp: auth.require_exp,
            validate_nbf: auth.validate_nbf,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            leeway: auth.leeway,
            recent: quick_cache::sync::Cache::with_weighter(RECENT_TOKENS_ESTIMATE, RECENT_TOKENS_BYTES, TokenWeight),
        })
    }

    /// The JWKS in use, if `auth.jwks_url` is set.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    /// [`Verifier::verify`], and when the token names a `kid` the JWKS lacks,
    /// fetches the JWKS again (at most once per cooldown) and tries once more.
    ///
    /// # Errors
    /// As [`Verifier::verify`].
    pub async fn verify_fetching(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        match self.verify(token) {
            Err(AuthError::UnknownKey) => {
                let kid = jsonwebtoken::decode_header(token).ok().and_then(|header| header.kid);
                match (&self.jwks, kid) {
                    (Some(jwks), Some(kid)) if jwks.refresh_for_unknown(&kid).await => self.verify(token),
                    _ => Err(AuthError::UnknownKey),
                }
            }
            other => other,
        }
    }

    /// Verifies `token` with the keys in use and returns its claims: from the cache
    /// of recently verified tokens when it is there (its times checked again).
    ///
    /// # Errors
    /// [`AuthError`] naming why the token is not acceptable.
    pub fn verify(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TokenTooLarge);
        }
        let generation = self.jwks.as_ref().map_or(0, |jwks| jwks.generation());
        let cached = self.recent.get(token);
        if let Some((verified, verified_under)) = &cached
            && *verified_under == generation
        {
            self.check_times(&verified.claims)?;
            return Ok(Arc::clone(verified));
        }
        let verified = match self.verify_uncached(token) {
            Ok(verified) => Arc::new(verified),
            Err(error) => {
                if cached.is_some() {
                    // Verified under a key set no longer in use, and not under this one.
                    self.recent.remove(token);
                }
                return Err(error);
            }
        };
        self.recent.insert(token.into(), (Arc::clone(&verified), generation));
        Ok(verified)
    }

    /// [`Verifier::verify`] without the cache.
    fn verify_uncached(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        // RFC 7515 section 4.1.11: a recipient must reject a token whose `crit` names
        // an extension it does not understand, and this gateway understands none.
        if header.crit.is_some() {
            return Err(AuthError::UnsupportedExtension);
        }
        if !self.algorithms.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let key = self.key_for(&header)?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(header.alg))
            .map_err(|error| map_jwt_error(&error))?;
        self.check_times(&data.claims)?;
        // An `exp` beyond what the clock can represent means "never", not a panic.
        let expires_at = data
            .claims
            .exp
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)));
        let subject = match &data.claims.sub {
            Some(sub) => format!("sub:{sub}"),
            None => format!("token:{}", token.rsplit('.').next().unwrap_or_default()),
        };
        Ok(Verified {
            claims: data.claims,
            expires_at,
            subject,
        })
    }

    /// The key for a token with `header` (whose algorithm is enabled): the JWKS key
    /// its `kid` names, else the algorithm's static key.
    fn key_for(&self, header: &jsonwebtoken::Header) -> Result<Arc<DecodingKey>, AuthError> {
        if let (Some(jwks), Some(kid)) = (&self.jwks, &header.kid)
            && header.alg != jsonwebtoken::Algorithm::HS256
            && let Some((alg, key)) = jwks.key(kid)
        {
            // A key is used only for the algorithm it is for.
            return if alg == header.alg {
                Ok(key)
            } else {
                Err(AuthError::AlgorithmNotAllowed)
            };
        }
        match self.keys.iter().find(|(alg, _, _)| *alg == header.alg) {
            Some((_, key, Some(key_id))) if header.kid.as_deref() == Some(key_id.as_str()) => Ok(Arc::clone(key)),
            Some((_, _, Some(_))) => Err(AuthError::UnknownKey),
            Some((_, key, None)) => Ok(Arc::clone(key)),
            // Enabled, keys from the JWKS only, and it has none by this `kid`.
            None => Err(AuthError::UnknownKey),
        }
    }

    /// `exp` and `nbf`, checked here rather than by `jsonwebtoken` because RFC 7519
    /// allows fractional NumericDates, which that crate refuses. A token is expired
    /// from the second its `exp` names (plus leeway).
    fn check_times(&self, claims: &Claims) -> Result<(), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let leeway = self.leeway.as_secs();
        match claims.exp {
            None if self.require_exp => return Err(AuthError::MissingClaim),
            Some(exp) if now >= exp.saturating_add(leeway) => return Err(AuthError::TokenExpired),
            _ => {}
        }
        if self.validate_nbf && claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(AuthError::TokenNotYetValid);
        }
        Ok(())
    }

    fn validation(&self, alg: jsonwebtoken::Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        // Times are checked by `check_times`; signature, `iss` and `aud` here.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = Vec::new();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}

fn map_jwt_error(error: &jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim,
        ErrorKind::InvalidAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::Json(_) => AuthError::InvalidClaims,
        _ => AuthError::MalformedToken,
    }
}

fn load_pem(
    key: &'static str,
    path: Option<&Path>,
    alg: Algorithm,
    parse: fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>,
) -> Result<DecodingKey, KeyError> {
    let path = path.ok_or(KeyError::Invalid { key, alg })?;
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        key,
        path: path.to_owned(),
        source,
    })?;
    parse(&pem).map_err(|_| KeyError::Invalid { key, alg })
}

/// The configured HS256 secret: `hs256_secret`, else the contents of
/// `hs256_secret_file` (surrounding whitespace trimmed); `None` when neither is set.
///
/// # Errors
/// [`KeyError`] when the file cannot be read or holds no secret.
pub fn hs256_secret(auth: &AuthConfig) -> Result<Option<Secret>, KeyError> {
    if let Some(secret) = &auth.hs256_secret {
        return Ok(Some(secret.clone()));
    }
    let Some(path) = &auth.hs256_secret_file else {
        return Ok(None);
    };
    let key = "auth.hs256_secret_file";
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        key,
        path: path.clone(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(KeyError::EmptySecret { key });
    }
    Ok(Some(Secret::new(secret)))
}

/// Creates `path` with a fresh random secret (mode 0600) unless it exists.
/// Returns whether it was created.
///
/// # Errors
/// [`KeyError::Create`] when the file cannot be written.
pub fn ensure_secret_file(path: &Path) -> Result<bool, KeyError> {
    if path.exists() {
        return Ok(false);
    }
    let create_error = |source| KeyError::Create {
        path: path.to_owned(),
        source,
    };
    let mut bytes = [0_u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(create_error)?;
    writeln!(file, "{hex}").map_err(create_error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint::{SigningKey, mint};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs_config() -> AuthConfig {
        AuthConfig {
            hs256_secret: Some(Secret::new(SECRET)),
            ..AuthConfig::default()
        }
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims(exp: Option<u64>) -> Claims {
        Claims {
            sub: Some("t".to_owned()),
            exp,
            ..Claims::default()
        }
    }

    fn sign(claims: &Claims) -> String {
        mint(claims, &SigningKey::hs256(SECRET)).unwrap()
    }

    #[test]
    fn a_valid_token_verifies() {
        let verifier = Verifier::from_config(&hs_config()).unwrap();
        let verified = verifier.verify(&sign(&claims(Some(now() + 60)))).unwrap();
        assert_eq!(verified.claims.sub.as_deref(), Some("t"));
        assert!(verified.expires_at.is_some());
    }

    #[test]
    fn exp_is_required_by_default_and_checked_without_leeway() {
        let verifier = Verifier::from_config(&hs_config()).unwrap();
        assert_eq!(
            verifier.verify(&sign(&claims(None))).unwrap_err(),
            AuthError::MissingClaim
        );
        assert_eq!(
            verifier.verify(&sign(&claims(Some(now() - 2)))).unwrap_err(),
            AuthError::TokenExpired
        );
        let lenient = Verifier::from_config(&AuthConfig {
            require_exp: false,
            ..hs_config()
        })
        .unwrap();
        assert!(lenient.verify(&sign(&claims(None))).is_ok());
    }

    #[test]
    fn a_cached_token_has_its_times_checked_again_on_every_use() {
        let verifier = Verifier::from_config(&hs_config()).unwrap();
        let token = sign(&claims(Some(now() + 60)));
        let first = verifier.verify(&token).unwrap();
        let again = verifier.verify(&token).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the second use is served from the cache");
        // The same entry, as it is once its `exp` has passed.
        let expired = Verified {
            claims: claims(Some(now() - 2)),
            ..(*first).clone()
        };
        verifier.recent.insert(token.as_str().into(), (Arc::new(expired), 0));
        assert_eq!(verifier.verify(&token).unwrap_err(), AuthError::TokenExpired);
    }

    #[test]
    fn a_token_cached_under_another_key_set_is_verified_again() {
        let verifier = Verifier::from_config(&hs_config()).unwrap();
        let forged = "e30.e30.forged";
        let entry = Verified {
            claims: claims(Some(now() + 60)),
            expires_at: None,
            subject: "sub:t".to_owned(),
        };
        // Cached under a key set that is no longer in use (generation 1, not 0).
        verifier.recent.insert(forged.into(), (Arc::new(entry), 1));
        assert!(verifier.verify(forged).is_err(), "verified again, and refused");
        assert!(verifier.recent.get(forged).is_none(), "and no longer cached");
    }

    #[test]
    fn wrong_secret_and_garbage_are_refused() {
        let verifier = Verifier::from_config(&hs_config()).unwrap();
        let other = mint(&claims(Some(now() + 60)), &SigningKey::hs256("x".repeat(40))).unwrap();
        assert_eq!(verifier.verify(&other).unwrap_err(), AuthError::BadSignature);
        assert_eq!(verifier.verify("not-a-jwt").unwrap_err(), AuthError::MalformedToken);
        assert_eq!(
            verifier.verify(&"a".repeat(9000)).unwrap_err(),
            AuthError::TokenTooLarge
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let verifier = Verifier::from_config(&AuthConfig {
            issuer: Some("me".to_owned()),
            audience: vec!["gw".to_owned()],
            ..hs_config()
        })
        .unwrap();
        let mut good = claims(Some(now() + 60));
        good.iss = Some("me".to_owned());
        good.aud = vec!["gw".to_owned()];
        assert!(verifier.verify(&sign(&good)).is_ok());
        let wrong_iss = Claims {
            iss: Some("you".to_owned()),
            ..good.clone()
        };
        assert_eq!(verifier.verify(&sign(&wrong_iss)).unwrap_err(), AuthError::WrongIssuer);
        let wrong_aud = Claims {
            aud: vec!["other".to_owned()],
            ..good
        };
        assert_eq!(
            verifier.verify(&sign(&wrong_aud)).unwrap_err(),
            AuthError::WrongAudience
        );
    }

    #[test]
    fn secret_files_are_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        assert!(ensure_secret_file(&path).unwrap());
        assert!(!ensure_secret_file(&path).unwrap());
        let auth = AuthConfig {
            hs256_secret_file: Some(path),
            ..AuthConfig::default()
        };
        assert_eq!(hs256_secret(&auth).unwrap().unwrap().expose().len(), 64);
    }
}
