//! `POST /revocations` (admin token): `{"sub":"…"}` or `{"jti":"…"}` ends every
//! live stream of that subject or token on every node and refuses those tokens for
//! `auth.revocation_ttl`. Answers `{"revoked":{"sub"|"jti":…},"until":<unix s>,
//! "ended":N}` (`ended`: streams this node ended; the others end theirs).

use axum::Json;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{authenticate, read_body};
use crate::auth::AuthError;
use crate::auth::extract::TokenSources;
use crate::error::ApiError;
use crate::revocation::{MAX_TARGET_BYTES, Target};
use crate::state::AppState;

/// The largest revocation body read.
const MAX_BODY_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationBody {
    sub: Option<String>,
    jti: Option<String>,
}

pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let verified = authenticate(&state, &headers, query.as_deref(), TokenSources { cookie_name: None }).await?;
    if !verified.claims.admin {
        return Err(AuthError::NotAdmin.into());
    }
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_none_or(crate::body::is_json_media_type);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "send the revocation as JSON with Content-Type: application/json".to_owned(),
        ));
    }
    let body = read_body(
        body,
        MAX_BODY_BYTES,
        state.config.server.request_timeout,
        &state.publish_bodies,
    )
    .await?;
    let target = parse_target(&body.bytes)?;
    let revoked = state.node.revoke(target).await.map_err(ApiError::Revoke)?;
    let named = match &revoked.revocation.target {
        Target::Subject(sub) => json!({ "sub": sub }),
        Target::Token(jti) => json!({ "jti": jti }),
    };
    Ok(Json(json!({
        "revoked": named,
        "until": revoked.revocation.expires_ms / 1000,
        "ended": revoked.ended,
    })))
}

fn parse_target(body: &[u8]) -> Result<Target, ApiError> {
    let invalid = |text: &str| ApiError::InvalidRequest(text.to_owned());
    let parsed: RevocationBody =
        serde_json::from_slice(body).map_err(|_| invalid("the body must be {\"sub\":\"…\"} or {\"jti\":\"…\"}"))?;
    let target = match (parsed.sub, parsed.jti) {
        (Some(sub), None) => Target::Subject(sub),
        (None, Some(jti)) => Target::Token(jti),
        _ => return Err(invalid("name exactly one of `sub` and `jti`")),
    };
    let (Target::Subject(value) | Target::Token(value)) = &target;
    if value.is_empty() || value.len() > MAX_TARGET_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "`sub` or `jti` must be 1 to {MAX_TARGET_BYTES} bytes"
        )));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_target_of_bounded_size_is_read() {
        assert_eq!(
            parse_target(br#"{"sub":"alice"}"#).unwrap(),
            Target::Subject("alice".to_owned())
        );
        assert_eq!(
            parse_target(br#"{"jti":"t-1"}"#).unwrap(),
            Target::Token("t-1".to_owned())
        );
        for bad in [
            &br#"{"sub":"a","jti":"b"}"#[..],
            br"{}",
            br#"{"sub":""}"#,
            br#"{"sub":"a","x":1}"#,
            br"not json",
        ] {
            assert!(parse_target(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"sub":"{}"}}"#, "a".repeat(MAX_TARGET_BYTES + 1));
        assert!(parse_target(long.as_bytes()).is_err());
    }
}
