//! HTTP handlers: extract, call the core, map the result. No business logic here.

pub mod health;
pub mod publish;
pub mod subscribe;

use axum::http::HeaderMap;

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
