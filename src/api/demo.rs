//! `GET /demo` (and `/`): the live demo page, embedded in the binary at build time.
//! It is served with a short-lived, subscribe-only token for `demo.*` when the
//! gateway has an HS256 secret to sign it with; otherwise the visitor pastes one.
//! The page subscribes to `demo.*` with envelopes, so each event says its stream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub async fn demo_page(State(state): State<AppState>) -> impl IntoResponse {
    let token = state.demo_signer.as_deref().and_then(|key| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let claims = Claims {
            sub: Some(DEMO_SUBJECT.to_owned()),
            exp: Some(now + DEMO_TOKEN_TTL.as_secs()),
            // Only demo streams; every visitor shares this token, so the node keeps
            // its subject to `demo.max_connections` and a few streams.
            subscribe: StreamPattern::try_new(DEMO_PATTERN).into_iter().collect(),
            iss: state.config.auth.issuer.clone(),
            aud: state.config.auth.audience.clone(),
            ..Claims::default()
        };
        mint(&claims, key).ok()
    });
    let config = json!({
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
