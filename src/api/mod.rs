//! HTTP handlers: extract, call the core, map the result. No business logic here.

pub mod demo;
pub mod health;
pub mod publish;
pub mod subscribe;
pub mod webhook;

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;

use crate::app::AppState;
use crate::auth::Verified;
use crate::auth::extract::{TokenSources, find_token};
use crate::error::ApiError;

/// Finds and verifies the request's token.
fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    sources: TokenSources<'_>,
) -> Result<Verified, ApiError> {
    let token = find_token(headers, query, sources)?;
    Ok(state.verifier.verify(&token)?)
}

/// Reads the body within the size limit and the request timeout (slow senders
/// must not hold a connection forever).
pub(crate) async fn read_body(body: Body, max_bytes: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, max_bytes)).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(error)) if is_length_limit(&error) => Err(ApiError::PayloadTooLarge(format!(
            "request body exceeds limits.max_body_bytes ({max_bytes} bytes)"
        ))),
        Ok(Err(_)) => Err(ApiError::InvalidRequest("request body could not be read".to_owned())),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}
