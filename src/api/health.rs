//! `GET /healthz` (the process is up) and `GET /readyz` (backend reachable, not
//! draining, and the AMQP consumer connected when it gates readiness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.node.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })));
    }
    if !state.node.broker_is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "backend_unavailable" })),
        );
    }
    if let Some(status) = state.ingest.not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": status })));
    }
    (StatusCode::OK, Json(json!({ "status": "ready" })))
}
