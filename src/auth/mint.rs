//! Signs tokens: used by `sse-gateway token` and by the tests.

use std::path::Path;

use jsonwebtoken::{EncodingKey, Header};

use super::Claims;
use crate::config::Algorithm;

/// A private key (or HS256 secret) with its algorithm.
pub struct SigningKey {
    alg: Algorithm,
    key: EncodingKey,
    /// Written as the header's `kid`, when set.
    kid: Option<String>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A signing key that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("HS256 signs with the shared secret, not a PEM file")]
    SecretIsNotPem,
    #[error("cannot read the private key: {0}")]
    Read(#[from] std::io::Error),
    #[error("not a PEM private key for {0:?}")]
    InvalidKey(Algorithm),
    #[error("cannot sign the token")]
    Sign,
}

impl SigningKey {
    /// An HS256 key from the shared secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Self {
        Self {
            alg: Algorithm::HS256,
            key: EncodingKey::from_secret(secret.as_ref()),
            kid: None,
        }
    }

    /// A private key in PEM form for RS256, ES256 (PKCS#8) or EdDSA.
    ///
    /// # Errors
    /// [`MintError`] when `pem` is not a private key of `alg`.
    pub fn from_pem(alg: Algorithm, pem: &[u8]) -> Result<Self, MintError> {
        let key = match alg {
            Algorithm::HS256 => return Err(MintError::SecretIsNotPem),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|_| MintError::InvalidKey(alg))?;
        Ok(Self { alg, key, kid: None })
    }

    /// The same key, naming `kid` in the header of the tokens it signs.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Reads a PEM private key file.
    ///
    /// # Errors
    /// [`MintError`] when the file is unreadable or not a key of `alg`.
    pub fn from_pem_file(alg: Algorithm, path: &Path) -> Result<Self, MintError> {
        Self::from_pem(alg, &std::fs::read(path)?)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// Signs `claims` into a compact JWT.
///
/// # Errors
/// [`MintError::Sign`] if signing fails (a key unfit for its algorithm).
pub fn mint(claims: &Claims, key: &SigningKey) -> Result<String, MintError> {
    let mut header = Header::new(key.alg.to_jwt());
    header.kid.clone_from(&key.kid);
    jsonwebtoken::encode(&header, claims, &key.key).map_err(|_| MintError::Sign)
}
