//! `GET /demo` (and `/`): the live demo page, embedded in the binary at build time.
//! It is served with a short-lived, subscribe-only token for `demo.*` when the
//! gateway has an HS256 secret to sign it with; otherwise the visitor pastes one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::mint::mint;
use crate::auth::{Claims, StreamPattern};
use crate::demo::{DEMO_STREAMS, DEMO_SUBJECT};
use crate::state::AppState;

const PAGE: &str = include_str!("../../assets/demo.html");
const CONFIG_PLACEHOLDER: &str = "/*SSE_DEMO_CONFIG*/null";
const DEMO_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub async fn demo_page(State(state): State<AppState>) -> impl IntoResponse {
    let token = state.demo_signer.as_deref().and_then(|key| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let claims = Claims {
            sub: Some(DEMO_SUBJECT.to_owned()),
            exp: Some(now + DEMO_TOKEN_TTL.as_secs()),
            // Exactly the demo streams: every visitor shares this token, so it must
            // not be able to create streams of its own.
            subscribe: DEMO_STREAMS
                .iter()
                .filter_map(|name| StreamPattern::try_new(name).ok())
                .collect(),
            iss: state.config.auth.issuer.clone(),
            aud: state.config.auth.audience.clone(),
            ..Claims::default()
        };
        mint(&claims, key).ok()
    });
    let config = json!({
        "token": token.unwrap_or_default(),
        "streams": DEMO_STREAMS,
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
