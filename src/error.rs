//! `ApiError`: everything that can reach a client, mapped to HTTP in one place.
//!
//! Policy: statuses follow DESIGN.md (401 with `WWW-Authenticate: Bearer`, 403, 400,
//! 413, 429, 503, 504). Bodies are JSON `{"error": "<stable reason>", "message":
//! "<short text>"}`; messages are written here or come from our own validation
//! types, never from internal errors, keys or tokens. The node's typed errors keep
//! their own reasons ([`PublishError::reason`], [`SubscribeError::reason`]); their
//! statuses are decided here. Server-side failures are logged once, here, where they
//! become responses; auth rejections and backend errors are counted here.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;
use crate::body::BodyError;
use crate::broker::BrokerError;
use crate::limits::LimitError;
use crate::metrics as m;
use crate::node::{PublishError, SubscribeError};
use crate::stream::{InvalidPattern, InvalidStreamName};

/// A request that cannot be served, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no stream requested: add ?stream=NAME")]
    NoStream,
    #[error("invalid stream name: {0}")]
    InvalidStreamName(#[from] InvalidStreamName),
    #[error("invalid stream: {0}")]
    InvalidPattern(#[from] InvalidPattern),
    #[error("too many streams: at most {max} per connection")]
    TooManyStreams { max: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("request body not received in time")]
    RequestTimeout,
    #[error("server is shutting down")]
    Draining,
    #[error(transparent)]
    Limited(#[from] LimitError),
    #[error("{}", publish_message(.0))]
    Publish(#[from] PublishError),
    #[error("{}", subscribe_message(.0))]
    Subscribe(#[from] SubscribeError),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{}", revoke_message(.0))]
    Revoke(BrokerError),
    #[error("not found")]
    NotFound,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
}

impl ApiError {
    /// Stable machine-readable reason for the body and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Auth(error) => error.reason(),
            Self::NoStream => "no_stream",
            Self::InvalidStreamName(_) | Self::InvalidPattern(_) => "invalid_stream_name",
            Self::Body(error) => error.reason(),
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Revoke(error) => error.reason(),
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooManyStreams { .. } => "too_many_streams",
            Self::InvalidRequest(_) => "invalid_request",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Draining => "draining",
            Self::Limited(error) => error.reason(),
            Self::Publish(error) => error.reason(),
            Self::Subscribe(error) => error.reason(),
            Self::NotFound => "not_found",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthError::StreamNotPermitted | AuthError::NotAdmin) => StatusCode::FORBIDDEN,
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::NoStream
            | Self::InvalidStreamName(_)
            | Self::InvalidPattern(_)
            | Self::TooManyStreams { .. }
            | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::Body(error) => match error.innermost() {
                BodyError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Revoke(error) => broker_status(error),
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Self::Limited(error) => limit_status(*error),
            Self::Publish(error) => publish_status(error),
            Self::Subscribe(error) => subscribe_status(error),
            Self::NotFound => StatusCode::NOT_FOUND,
        }
    }

    fn broker_error(&self) -> Option<&BrokerError> {
        match self {
            Self::Publish(PublishError::Broker(error))
            | Self::Subscribe(SubscribeError::Broker(error))
            | Self::Revoke(error) => Some(error),
            _ => None,
        }
    }

    fn limit_error(&self) -> Option<LimitError> {
        match self {
            Self::Limited(error)
            | Self::Publish(PublishError::Limited(error))
            | Self::Subscribe(SubscribeError::Limited(error)) => Some(*error),
            _ => None,
        }
    }
}

fn publish_status(error: &PublishError) -> StatusCode {
    match error {
        PublishError::Draining => StatusCode::SERVICE_UNAVAILABLE,
        PublishError::NotPermitted { .. } => StatusCode::FORBIDDEN,
        PublishError::EmptyBatch => StatusCode::BAD_REQUEST,
        PublishError::BatchTooLarge { .. } | PublishError::EventTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        PublishError::Limited(error) => limit_status(*error),
        PublishError::InProgress => StatusCode::CONFLICT,
        PublishError::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        PublishError::Broker(error) => broker_status(error),
    }
}

fn subscribe_status(error: &SubscribeError) -> StatusCode {
    match error {
        SubscribeError::Draining | SubscribeError::ConnectionLimit => StatusCode::SERVICE_UNAVAILABLE,
        SubscribeError::NotPermitted(_) | SubscribeError::FirehoseDisabled => StatusCode::FORBIDDEN,
        SubscribeError::Limited(error) => limit_status(*error),
        SubscribeError::Broker(error) => broker_status(error),
    }
}

fn limit_status(error: LimitError) -> StatusCode {
    match error {
        LimitError::SubjectConnections { .. }
        | LimitError::SubjectStreams { .. }
        | LimitError::SubjectFirehose { .. }
        | LimitError::PublishRate { .. } => StatusCode::TOO_MANY_REQUESTS,
        LimitError::SubscribeRate { .. } | LimitError::BodiesInFlight { .. } => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn broker_status(error: &BrokerError) -> StatusCode {
    match error {
        BrokerError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        BrokerError::StreamLimit | BrokerError::Unavailable(_) | BrokerError::Startup(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

fn publish_message(error: &PublishError) -> String {
    match error {
        PublishError::Broker(error) => broker_message(error).to_owned(),
        PublishError::Draining => "server is shutting down".to_owned(),
        _ => error.to_string(),
    }
}

fn subscribe_message(error: &SubscribeError) -> String {
    match error {
        SubscribeError::Broker(error) => broker_message(error).to_owned(),
        SubscribeError::Draining => "server is shutting down".to_owned(),
        SubscribeError::ConnectionLimit => format!("{error}; try another node or later"),
        _ => error.to_string(),
    }
}

fn revoke_message(error: &BrokerError) -> &'static str {
    match error {
        BrokerError::Timeout(_) => {
            "the backend did not answer in time; the revocation may or may not be in force: retry"
        }
        _ => "the backend cannot store the revocation now; it is not in force: retry",
    }
}

/// What a client is told about a backend failure: which limit, or whether the
/// events were stored, never the internal detail.
fn broker_message(error: &BrokerError) -> &'static str {
    match error {
        BrokerError::StreamLimit => {
            "this node holds as many streams as limits.max_streams allows; no new stream fits until some are reclaimed"
        }
        BrokerError::Unavailable(_) | BrokerError::Startup(_) => {
            "the backend cannot take the events now; nothing was stored"
        }
        BrokerError::Timeout(_) => {
            "the backend did not answer in time; the events may or may not be stored: retry with the same \
             Idempotency-Key to publish them exactly once"
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reason = self.reason();
        if let Some(error) = self.broker_error() {
            // Backend detail stays in the log; the client gets the generic text.
            metrics::counter!(m::BACKEND_ERRORS, "reason" => reason).increment(1);
            match error {
                BrokerError::Unavailable(detail) | BrokerError::Startup(detail) => {
                    tracing::error!(%detail, "backend unavailable");
                }
                BrokerError::Timeout(detail) => tracing::error!(%detail, "backend did not answer in time"),
                BrokerError::StreamLimit => tracing::warn!("limits.max_streams reached"),
            }
        }
        if matches!(
            self,
            Self::Auth(_)
                | Self::Publish(PublishError::NotPermitted { .. })
                | Self::Subscribe(SubscribeError::NotPermitted(_))
        ) {
            metrics::counter!(m::AUTH_REJECTIONS, "reason" => reason).increment(1);
        }
        let message = self.to_string();
        let mut response = (status, Json(json!({ "error": reason, "message": message }))).into_response();
        let headers = response.headers_mut();
        if let Self::Auth(error) = &self
            && status == StatusCode::UNAUTHORIZED
        {
            headers.insert(WWW_AUTHENTICATE, www_authenticate(*error));
        }
        let retry_after = match self.limit_error() {
            Some(LimitError::PublishRate { retry_after } | LimitError::SubscribeRate { retry_after }) => {
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

/// `405` for a known route with another method, in the same JSON shape (the router
/// keeps the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
