//! Authentication: JWT verification, stream grants, and where tokens come from.
//!
//! `keys` turns `[auth]` into a [`Verifier`], with `jwks` keeping keys from a JWKS
//! fresh; `claims` reads what a token grants;
//! `extract` finds the token in a request; `mint` signs tokens for the CLI and tests.
//! Nothing here knows HTTP statuses: [`AuthError`] is mapped in `error.rs`.

pub mod claims;
pub mod extract;
pub mod jwks;
pub mod keys;
pub mod mint;
pub mod webhook;

pub use claims::Claims;
pub use keys::{KeyError, Verified, Verifier};

/// Why a request was not authenticated or not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no access token")]
    MissingToken,
    #[error("access token is malformed")]
    MalformedToken,
    #[error("access token is too large")]
    TokenTooLarge,
    #[error("token algorithm is not accepted")]
    AlgorithmNotAllowed,
    #[error("token names a key the gateway does not have")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    TokenExpired,
    #[error("token is not valid yet")]
    TokenNotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token lacks a required claim")]
    MissingClaim,
    #[error("token claims are invalid")]
    InvalidClaims,
    #[error("token header names a critical extension the gateway does not support")]
    UnsupportedExtension,
    #[error("token does not grant access to this stream")]
    StreamNotPermitted,
    #[error("token has been revoked")]
    TokenRevoked,
    #[error("token lacks the admin claim")]
    NotAdmin,
    #[error("webhook delivery is older than the hook's max_age (or dated in the future)")]
    StaleDelivery,
}

impl AuthError {
    /// Stable machine-readable reason, used in error bodies and metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::TokenTooLarge => "token_too_large",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::InvalidClaims => "invalid_claims",
            Self::UnsupportedExtension => "unsupported_extension",
            Self::StreamNotPermitted => "stream_not_permitted",
            Self::TokenRevoked => "token_revoked",
            Self::NotAdmin => "admin_required",
            Self::StaleDelivery => "stale_delivery",
        }
    }
}
