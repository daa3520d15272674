//! `GET /metrics`: Prometheus text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::metrics;
use crate::state::AppState;

pub async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.node.upkeep();
    state.metrics.run_upkeep();
    metrics::collect_process_metrics();
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}
