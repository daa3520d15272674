//! `GET /demo`: the live demo page, embedded in the binary at build time; `GET /`:
//! a small index pointing to it (both only with `demo.enabled`).
//! It is served with a short-lived, subscribe-only token for `demo.*` when the
//! gateway has an HS256 secret to sign it with; otherwise the visitor pastes one.
//! The page subscribes to `demo.*` with envelopes, so each event says its stream.
//! When the stream warns that the token expires (`token-expiring`), the page
//! fetches a fresh one from `GET /demo/token` and switches streams without losing
//! or repeating an event: the pattern the README shows for any page.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::Claims;
use crate::auth::mint::mint;
use crate::demo::{DEMO_PATTERN, DEMO_SUBJECT};
use crate::state::AppState;
use crate::stream::StreamPattern;

const PAGE: &str = include_str!("../../assets/demo.html");
const CONFIG_PLACEHOLDER: &str = "/*SSE_DEMO_CONFIG*/null";

/// A fresh subscribe-only demo token, when the gateway can sign one.
fn demo_token_for(state: &AppState) -> Option<String> {
    let key = state.demo_signer.as_deref()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    let ttl: Duration = state.config.demo.token_ttl;
    let claims = Claims {
        sub: Some(DEMO_SUBJECT.to_owned()),
        exp: Some(now + ttl.as_secs().max(1)),
        iat: Some(now),
        // Only demo streams; every visitor shares this token, so the node keeps
        // its subject to `demo.max_connections` and a few streams.
        subscribe: StreamPattern::try_new(DEMO_PATTERN).into_iter().collect(),
        iss: state.config.auth.issuer.clone(),
        aud: state.config.auth.audience.clone(),
        ..Claims::default()
    };
    mint(&claims, key).ok()
}

/// `GET /` (with the demo on): what this server is and where to go.
pub async fn index(State(state): State<AppState>) -> impl IntoResponse {
    let metrics = if state.config.metrics.enabled && state.config.metrics.addr.is_none() {
        "<li><a href=\"/metrics\">/metrics</a> — Prometheus metrics</li>"
    } else {
        ""
    };
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sse-gateway</title></head>\n\
         <body style=\"font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto\">\n\
         <h1>sse-gateway <small>{version}</small></h1>\n\
         <p>An authenticated Server-Sent Events gateway: subscribe with <code>GET /events?stream=NAME</code>, \
         publish with <code>POST /events</code>.</p>\n<ul>\n\
         <li><a href=\"/demo\">/demo</a> — the live demo page</li>\n\
         <li><a href=\"/healthz\">/healthz</a> and <a href=\"/readyz\">/readyz</a> — health and readiness</li>\n\
         {metrics}\n\
         <li>Documentation: the README beside the binary's sources (HTTP API, tokens, configuration), \
         and <code>sse-gateway --help</code></li>\n</ul>\n</body></html>\n",
        version = crate::VERSION,
    );
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-cache")],
        page,
    )
}

/// `GET /demo/token`: `{"token": "…"}` (empty when the gateway cannot sign one).
pub async fn demo_token(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CACHE_CONTROL, "no-store")],
        Json(json!({ "token": demo_token_for(&state).unwrap_or_default() })),
    )
}

pub async fn demo_page(State(state): State<AppState>) -> impl IntoResponse {
    let token = demo_token_for(&state);
    let config = json!({
        "tokenUrl": if token.is_some() { "/demo/token" } else { "" },
        "token": token.unwrap_or_default(),
        "streams": [DEMO_PATTERN],
        "envelope": true,
        "eventsUrl": "/events",
    });
    // JSON inside a <script>: escape `<` so no value can close the element.
    let config = config.to_string().replace('<', "\\u003c");
    let page = PAGE.replacen(CONFIG_PLACEHOLDER, &config, 1);
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8"), (CACHE_CONTROL, "no-store")],
        page,
    )
}
