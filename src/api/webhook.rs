//! `POST /webhooks/{stream}`: CI systems and other tools post their own JSON, which
//! becomes the event data; the hook's shared secret authenticates the request.
//!
//! What can be checked before the body is read is checked first (a GitLab token);
//! bodies that must be read to be verified (signatures) come out of their own
//! budget, so unauthenticated uploads cannot crowd out publishers. An unknown hook
//! answers like a wrong secret. A delivery seen before answers its original reply.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use serde_json::value::RawValue;

use super::read_body;
use crate::auth::webhook::Proof;
use crate::body::compact_json;
use crate::error::ApiError;
use crate::event::{DataKind, NewEvent};
use crate::idempotency::{IdempotencyKey, fingerprint};
use crate::metrics as m;
use crate::node::{Allowed, Publication, Publisher, Source};
use crate::state::AppState;
use crate::stream::StreamName;

/// Verifies the hook's secret, then publishes the body as one event on the hook's
/// stream. A wrong secret publishes nothing.
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
    if state.node.is_draining() {
        return Err(ApiError::Draining);
    }
    let stream = StreamName::try_new(stream)?;
    let proof = Proof::from_headers(headers)?;
    let budget = if proof.signs_body() {
        &state.unverified_bodies
    } else {
        // The token alone proves the secret: refuse before reading anything.
        state.webhooks.verify(&stream, &proof, headers, &[])?;
        &state.publish_bodies
    };
    let limits = &state.config.limits;
    let body = read_body(body, limits.max_body_bytes, state.config.server.request_timeout, budget).await?;
    let delivery = state.webhooks.verify(&stream, &proof, headers, &body.bytes)?;
    let raw: &RawValue = serde_json::from_slice(&body.bytes)
        .map_err(|error| ApiError::InvalidRequest(format!("webhook body is not JSON: {error}")))?;
    let event = NewEvent {
        stream: stream.clone(),
        event_type: delivery.hook.event_type(headers),
        data: compact_json(raw.get()),
        kind: DataKind::Json,
    };
    let idempotency = delivery.replay_key.map(|key| IdempotencyKey {
        key: format!("webhook\n{stream}\n{key}"),
        fingerprint: fingerprint(&[
            event.event_type.as_ref().map_or("", |t| t.as_str()).as_bytes(),
            &body.bytes,
        ]),
        ttl: state.config.webhooks.replay_window,
    });
    let subject = format!("webhook:{stream}");
    let publisher = Publisher {
        subject: &subject,
        source: Source::Webhook,
        allowed: Allowed::Stream(&stream),
    };
    let ids = state
        .node
        .publish(Publication {
            publisher,
            events: vec![event],
            idempotency,
        })
        .await?;
    let id = ids.first().map(ToString::to_string);
    Ok(Json(json!({ "id": id })).into_response())
}
