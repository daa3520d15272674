//! HTTP handlers: extract, call the core, map the result. No business logic here.

pub mod demo;
pub mod health;
pub mod metrics;
pub mod publish;
pub mod revocations;
pub mod streams;
pub mod subscribe;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::HOST;
use axum::http::{HeaderMap, Version};
use axum::response::{IntoResponse as _, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use crate::auth::extract::{TokenSources, find_token};
use crate::auth::{AuthError, Verified};
use crate::error::ApiError;
use crate::limits::{BodyBudget, BodyPermit};
use crate::state::AppState;

/// RFC 9112 section 3.2: an HTTP/1.1 request without exactly one `Host` header is a
/// bad request, on hyper's path and on the lean event-stream path alike.
/// A step of the router's one middleware (`router::AroundRequests`): the response
/// that refuses the request, if it must be refused.
pub fn host_rejection(request: &Request) -> Option<Response> {
    let one_host = request.version() != Version::HTTP_11 || request.headers().get_all(HOST).iter().count() == 1;
    (!one_host).then(|| {
        ApiError::InvalidRequest("an HTTP/1.1 request needs exactly one Host header".to_owned()).into_response()
    })
}

/// Finds and verifies the request's token, and refuses it when revoked.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    sources: TokenSources<'_>,
) -> Result<Arc<Verified>, ApiError> {
    let token = find_token(headers, query, sources)?;
    let verified = state.verifier.verify_fetching(&token).await?;
    crate::access_log::record_subject(verified.claims.sub.as_deref());
    if state.node.revocations().refuses(&verified.claims) {
        return Err(AuthError::TokenRevoked.into());
    }
    Ok(verified)
}

/// A request body read in full, holding its share of the body budget until dropped.
#[derive(Debug)]
pub(crate) struct ReceivedBody {
    pub(crate) bytes: Bytes,
    _permit: BodyPermit,
}

/// Reads the body within `limits.max_body_bytes`, the request timeout (slow senders
/// must not hold a connection forever) and `budget`, the bytes all requests may be
/// receiving at once. A declared `Content-Length` is checked and charged before
/// anything is read, so an oversized or over-budget upload is refused at once.
pub(crate) async fn read_body(
    body: Body,
    max_bytes: usize,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<ReceivedBody, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "request body exceeds limits.max_body_bytes ({max_bytes} bytes)"
        ))
    };
    let declared = http_body::Body::size_hint(&body).exact();
    let declared = match declared.map(usize::try_from) {
        Some(Ok(length)) if length <= max_bytes => length,
        Some(_) => return Err(too_large()),
        None => 0,
    };
    let mut permit = BodyPermit::empty();
    budget.take(&mut permit, declared)?;
    let read = async {
        let mut body = body;
        let mut received = BytesMut::with_capacity(declared);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ApiError::InvalidRequest("request body could not be read".to_owned()))?;
            let Ok(data) = frame.into_data() else { continue };
            let total = received.len() + data.len();
            if total > max_bytes {
                return Err(too_large());
            }
            let more = total.saturating_sub(permit.bytes());
            budget.take(&mut permit, more)?;
            received.extend_from_slice(&data);
        }
        Ok(received.freeze())
    };
    let bytes = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout)??;
    Ok(ReceivedBody { bytes, _permit: permit })
}
