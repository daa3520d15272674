//! `POST /webhooks/{stream}`: CI systems and other tools post their own JSON, which
//! becomes the event data; the hook's shared secret authenticates the request.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use serde_json::value::RawValue;

use super::publish::{check_event_size, compact_json};
use super::read_body;
use crate::app::AppState;
use crate::error::ApiError;
use crate::event::NewEvent;
use crate::metrics as m;
use crate::stream::StreamName;

/// Verifies the hook's secret against the raw body, then publishes the body as one
/// event on the hook's stream. A wrong secret publishes nothing.
pub async fn receive_webhook(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = receive(&state, &stream, &headers, body).await;
    let outcome = match &result {
        Ok(_) => "published",
        Err(error) => error.reason(),
    };
    metrics::counter!(m::WEBHOOKS, "outcome" => outcome).increment(1);
    result
}

async fn receive(state: &AppState, stream: &str, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    if state.shutdown.is_draining() {
        return Err(ApiError::Draining);
    }
    let stream = StreamName::try_new(stream)?;
    let hook = state.webhooks.get(&stream).ok_or(ApiError::NotFound)?;
    let limits = &state.config.limits;
    let bytes = read_body(body, limits.max_body_bytes, state.config.server.request_timeout).await?;
    hook.verify(headers, &bytes)?;
    let raw: &RawValue = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::InvalidRequest(format!("webhook body is not JSON: {error}")))?;
    let data = compact_json(raw.get());
    check_event_size(&data, limits.max_event_bytes)?;
    let event = NewEvent {
        stream,
        event_type: hook.event_type(headers),
        data,
    };
    let ids = state.backend.publish(vec![event]).await?;
    metrics::counter!(m::EVENTS_PUBLISHED).increment(1);
    let id = ids.first().map(ToString::to_string);
    Ok(Json(json!({ "id": id })).into_response())
}
