//! `POST /events`: publish one event or a batch.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{authenticate, read_body};
use crate::auth::extract::TokenSources;
use crate::body::{PublishBody, parse_body};
use crate::error::ApiError;
use crate::event::NewEvent;
use crate::idempotency::{IdempotencyKey, events_fingerprint};
use crate::metrics as m;
use crate::node::{Allowed, Publication, Publisher, Source};
use crate::state::AppState;

/// Authenticates, reads and parses the whole body, then publishes through the
/// node. Replies `{"id"}` or `{"ids"}` once the events are in the history.
///
/// Takes the request whole and reads its head in place: the `HeaderMap` and
/// `RawQuery` extractors would copy theirs on every publish.
pub async fn publish_events(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let result = publish(&state, &parts.headers, parts.uri.query(), body).await;
    // The node counts its own refusals.
    if let Err(error) = &result
        && !matches!(error, ApiError::Publish(_))
    {
        metrics::counter!(m::PUBLISH_REJECTIONS, "reason" => error.reason()).increment(1);
    }
    result
}

async fn publish(state: &AppState, headers: &HeaderMap, query: Option<&str>, body: Body) -> Result<Response, ApiError> {
    if state.node.is_draining() {
        return Err(ApiError::Draining);
    }
    let verified = authenticate(state, headers, query, TokenSources { cookie_name: None }).await?;
    let limits = &state.config.limits;
    let timeout = state.config.server.request_timeout;
    let body = read_body(body, limits.max_body_bytes, timeout, &state.publish_bodies).await?;
    let content_type = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok());
    let PublishBody { events, is_batch } = parse_body(content_type, &body.bytes)?;
    let idempotency = idempotency_key(headers, &verified.subject, &events, is_batch, state)?;
    let publisher = Publisher {
        subject: &verified.subject,
        source: Source::Http,
        allowed: Allowed::Patterns(&verified.claims.publish),
    };
    let ids = state
        .node
        .publish(Publication {
            publisher,
            events,
            idempotency,
        })
        .await?;
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let reply = match (is_batch, ids.as_slice()) {
        (false, [id]) => json!({ "id": id }),
        _ => json!({ "ids": ids }),
    };
    Ok(Json(reply).into_response())
}

/// The header that makes a retried publish safe.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The request's `Idempotency-Key`, scoped by the publisher's subject and bound to
/// the events (and whether they came as a batch, which shapes the reply).
fn idempotency_key(
    headers: &HeaderMap,
    subject: &str,
    events: &[NewEvent],
    is_batch: bool,
    state: &AppState,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.as_bytes();
    if key.is_empty() || key.len() > 255 || !key.iter().all(|byte| (0x21..=0x7e).contains(byte)) {
        return Err(ApiError::InvalidRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters".to_owned(),
        ));
    }
    let kind: &[u8] = if is_batch { b"batch" } else { b"single" };
    Ok(Some(IdempotencyKey {
        key: format!("publish\n{subject}\n{}", String::from_utf8_lossy(key)),
        fingerprint: events_fingerprint(kind, events),
        ttl: state.config.publish.idempotency_window,
    }))
}
