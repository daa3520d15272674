//! `ApiError`: everything that can reach a client, mapped to HTTP in one `match`.
//!
//! Policy: statuses follow DESIGN.md (401 with `WWW-Authenticate: Bearer`, 403, 400,
//! 413, 503). Bodies are JSON `{"error": "<stable reason>", "message": "<short
//! text>"}`; messages are written here or come from our own validation types, never
//! from internal errors, keys or tokens. Server-side failures are logged once, here,
//! where they become responses; auth rejections are counted here by reason.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::backend::BackendError;
use crate::event::InvalidEventType;
use crate::limits::LimitError;
use crate::metrics as m;
use crate::stream::InvalidStreamName;

/// A request that cannot be served, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no stream requested: add ?stream=NAME")]
    NoStream,
    #[error("invalid stream name: {0}")]
    InvalidStreamName(#[from] InvalidStreamName),
    #[error("too many streams: at most {max} per connection")]
    TooManyStreams { max: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid event type: {0}")]
    InvalidEventType(#[from] InvalidEventType),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("this node serves as many event streams as limits.max_connections allows; try another node or later")]
    ConnectionLimit,
    #[error("server is shutting down")]
    Draining,
    #[error("{}", backend_message(.0))]
    Backend(#[from] BackendError),
    #[error("a request with this idempotency key is still being processed; retry shortly")]
    InProgress,
    #[error("this idempotency key was used with a different request")]
    KeyReused,
    #[error(transparent)]
    Limited(#[from] LimitError),
    #[error("not found")]
    NotFound,
}

impl ApiError {
    /// Stable machine-readable reason for the body and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Auth(error) => error.reason(),
            Self::NoStream => "no_stream",
            Self::InvalidStreamName(_) => "invalid_stream_name",
            Self::TooManyStreams { .. } => "too_many_streams",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidEventType(_) => "invalid_event_type",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::ConnectionLimit => "connection_limit",
            Self::Draining => "draining",
            Self::Backend(BackendError::StreamLimit) => "stream_limit",
            Self::Backend(BackendError::Unavailable(_)) => "backend_unavailable",
            Self::Backend(BackendError::Timeout(_)) => "backend_timeout",
            Self::InProgress => "request_in_progress",
            Self::KeyReused => "idempotency_key_reused",
            Self::Limited(LimitError::SubjectConnections { .. }) => "subject_connection_limit",
            Self::Limited(LimitError::SubjectStreams { .. }) => "subject_stream_limit",
            Self::Limited(LimitError::BodiesInFlight { .. }) => "bodies_in_flight_limit",
            Self::Limited(LimitError::PublishRate { .. }) => "publish_rate_limit",
            Self::Limited(LimitError::SubscribeRate { .. }) => "subscribe_rate_limit",
            Self::NotFound => "not_found",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthError::StreamNotPermitted) => StatusCode::FORBIDDEN,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::NoStream
            | Self::InvalidStreamName(_)
            | Self::TooManyStreams { .. }
            | Self::InvalidRequest(_)
            | Self::InvalidEventType(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Limited(
                LimitError::SubjectConnections { .. }
                | LimitError::SubjectStreams { .. }
                | LimitError::PublishRate { .. },
            ) => StatusCode::TOO_MANY_REQUESTS,
            Self::InProgress => StatusCode::CONFLICT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Backend(BackendError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectionLimit
            | Self::Draining
            | Self::Backend(_)
            | Self::Limited(LimitError::SubscribeRate { .. } | LimitError::BodiesInFlight { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = self.reason();
        let message = match &self {
            // Backend detail stays in the log; the client gets the generic text.
            Self::Backend(error) => {
                metrics::counter!(m::BACKEND_ERRORS, "reason" => reason).increment(1);
                match error {
                    BackendError::Unavailable(detail) => tracing::error!(%detail, "backend unavailable"),
                    BackendError::Timeout(detail) => tracing::error!(%detail, "backend did not answer in time"),
                    BackendError::StreamLimit => tracing::warn!("limits.max_streams reached"),
                }
                self.to_string()
            }
            Self::Auth(error) => {
                metrics::counter!(m::AUTH_REJECTIONS, "reason" => reason).increment(1);
                error.to_string()
            }
            _ => self.to_string(),
        };
        let mut response = (status, Json(json!({ "error": reason, "message": message }))).into_response();
        let headers = response.headers_mut();
        if let Self::Auth(error) = &self
            && status == StatusCode::UNAUTHORIZED
        {
            headers.insert(WWW_AUTHENTICATE, www_authenticate(*error));
        }
        let retry_after = match &self {
            Self::Limited(LimitError::PublishRate { retry_after } | LimitError::SubscribeRate { retry_after }) => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// What a client is told about a backend failure: which limit, or whether the
/// events were stored, never the internal detail.
fn backend_message(error: &BackendError) -> &'static str {
    match error {
        BackendError::StreamLimit => {
            "this node holds as many streams as limits.max_streams allows; no new stream fits until some are reclaimed"
        }
        BackendError::Unavailable(_) => "the backend cannot take the events now; nothing was stored",
        BackendError::Timeout(_) => {
            "the backend did not answer in time; the events may or may not be stored: retry with the same \
             Idempotency-Key to publish them exactly once"
        }
    }
}

/// RFC 6750 challenge: no error code when the token is simply missing.
fn www_authenticate(error: AuthError) -> HeaderValue {
    match error {
        AuthError::MissingToken => HeaderValue::from_static("Bearer realm=\"sse-gateway\""),
        AuthError::MalformedToken | AuthError::TokenTooLarge => {
            HeaderValue::from_static("Bearer realm=\"sse-gateway\", error=\"invalid_request\"")
        }
        _ => HeaderValue::from_static("Bearer realm=\"sse-gateway\", error=\"invalid_token\""),
    }
}

/// `404` for unknown routes, in the same JSON shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
