//! `GET /streams/{name}`: where a stream stands, for snapshot-then-subscribe.
//!
//! `head` is the newest id the deployment had issued when the request was served:
//! a client that reads it, loads its own snapshot, then subscribes with
//! `last_event_id=<head>` gets exactly what was published after the read.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::authenticate;
use crate::auth::extract::TokenSources;
use crate::error::ApiError;
use crate::state::AppState;
use crate::stream::StreamName;

/// Authenticates (the `subscribe` claim must cover the stream) and answers
/// `{"stream","head","last_id","buffered"}`.
pub async fn stream_position(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let sources = TokenSources {
        cookie_name: Some(&state.config.auth.cookie_name),
    };
    let verified = authenticate(&state, &headers, query.as_deref(), sources).await?;
    let stream = StreamName::try_new(&name)?;
    let position = state.node.position(&verified.claims.subscribe, &stream).await?;
    Ok(Json(json!({
        "stream": stream.as_str(),
        "head": position.head.to_string(),
        "last_id": position.last_id.map(|id| id.to_string()),
        "buffered": position.buffered,
    })))
}
