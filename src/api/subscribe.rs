//! `GET /events?stream=A&stream=prices.*[&envelope=1][&replay=latest]`: open an
//! event stream.

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::authenticate;
use crate::auth::extract::TokenSources;
use crate::connection::ClientConnection;
use crate::error::ApiError;
use crate::event::EventId;
use crate::history::Resume;
use crate::metrics as m;
use crate::node::SubscribeRequest;
use crate::state::AppState;
use crate::stream::StreamPattern;

/// Header browsers send when they reconnect.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Authenticates and parses the request, subscribes through the node, then
/// streams replay and live events.
///
/// Takes the request whole and reads its parts in place: the `HeaderMap`,
/// `RawQuery` and `Extension` extractors would each copy theirs, on the path every
/// new subscriber takes.
pub async fn open_subscription(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let fallback;
    let client = match parts.extensions.get::<ClientConnection>() {
        Some(client) => client,
        None => {
            fallback = ClientConnection::default();
            &fallback
        }
    };
    let result = open(&state, &parts.headers, parts.uri.query(), client).await;
    // The node counts its own refusals.
    if let Err(error) = &result
        && !matches!(error, ApiError::Subscribe(_))
    {
        metrics::counter!(m::CONNECTIONS_REJECTED, "reason" => error.reason()).increment(1);
    }
    result
}

async fn open(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    client: &ClientConnection,
) -> Result<Response, ApiError> {
    if state.node.is_draining() {
        return Err(ApiError::Draining);
    }
    let sources = TokenSources {
        cookie_name: Some(&state.config.auth.cookie_name),
    };
    let verified = authenticate(state, headers, query, sources).await?;
    let params = SubscribeParams::parse(query, state.config.limits.max_streams_per_connection)?;
    let close_at = verified
        .expires_at
        .filter(|_| state.config.auth.close_on_expiry)
        .and_then(|at| at.checked_add(state.config.auth.leeway));
    let request = SubscribeRequest {
        subject: &verified.subject,
        allowed: &verified.claims.subscribe,
        streams: params.streams,
        resume: header_resume(headers).or(params.resume),
        latest: params.latest,
        envelope: params.envelope,
        token: Some(&verified.claims),
        close_at,
        close_connection: client.close_token().clone(),
        direct: client.direct_socket().cloned(),
    };
    let subscription = state.node.subscribe(request).await?;
    client.mark_event_stream();
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        ),
    ];
    Ok((headers, subscription.into_body()).into_response())
}

/// The query of a subscribe request, validated.
#[derive(Debug, PartialEq)]
struct SubscribeParams {
    streams: Vec<StreamPattern>,
    resume: Option<Resume>,
    latest: bool,
    envelope: bool,
}

impl SubscribeParams {
    /// Reads `stream` (a name or pattern, repeated; duplicates collapse),
    /// `last_event_id`, `envelope` and `replay`; other parameters (`access_token`,
    /// cache busters) are ignored.
    fn parse(query: Option<&str>, max_streams: usize) -> Result<Self, ApiError> {
        let mut streams: Vec<StreamPattern> = Vec::new();
        let (mut resume, mut latest, mut envelope) = (None, false, false);
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*key {
                "stream" => {
                    let stream = StreamPattern::try_new(&value)?;
                    if !streams.contains(&stream) {
                        if streams.len() == max_streams {
                            return Err(ApiError::TooManyStreams { max: max_streams });
                        }
                        streams.push(stream);
                    }
                }
                "last_event_id" => resume = parse_resume(&value),
                "envelope" => {
                    envelope = match &*value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(ApiError::InvalidRequest("envelope must be 1 or 0".to_owned())),
                    };
                }
                "replay" => {
                    latest = match &*value {
                        "latest" => true,
                        _ => {
                            return Err(ApiError::InvalidRequest(
                                "replay must be `latest` (the newest event of each stream on connect)".to_owned(),
                            ));
                        }
                    };
                }
                _ => {}
            }
        }
        if streams.is_empty() {
            return Err(ApiError::NoStream);
        }
        Ok(Self {
            streams,
            resume,
            latest,
            envelope,
        })
    }
}

fn header_resume(headers: &HeaderMap) -> Option<Resume> {
    let value = headers.get(LAST_EVENT_ID)?;
    match value.to_str() {
        Ok(text) => parse_resume(text),
        Err(_) => Some(Resume::Unrecognised),
    }
}

/// An empty id means "no resume" (browsers send none before the first event);
/// anything we could not have issued is resumed with a gap notice.
fn parse_resume(text: &str) -> Option<Resume> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(text.parse::<EventId>().map_or(Resume::Unrecognised, Resume::After))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn streams_repeat_and_collapse() {
        let params = SubscribeParams::parse(Some("stream=a&stream=b&stream=a&access_token=x"), 2).unwrap();
        assert_eq!(params.streams.len(), 2);
        assert_eq!(params.resume, None);
    }

    #[test]
    fn percent_encoding_is_decoded_before_validation() {
        let params = SubscribeParams::parse(Some("stream=prices%2Eeur%3Ausd&stream=ci%2E%2A"), 4).unwrap();
        assert_eq!(params.streams[0].to_string(), "prices.eur:usd");
        assert_eq!(params.streams[1].to_string(), "ci.*");
        assert!(matches!(
            SubscribeParams::parse(Some("stream=a%2Fb"), 4),
            Err(ApiError::InvalidPattern(_))
        ));
    }

    #[test]
    fn missing_too_many_and_reserved_streams_are_refused() {
        assert!(matches!(SubscribeParams::parse(None, 4), Err(ApiError::NoStream)));
        assert!(matches!(
            SubscribeParams::parse(Some("stream="), 4),
            Err(ApiError::InvalidPattern(_))
        ));
        assert!(matches!(
            SubscribeParams::parse(Some("stream=a&stream=b&stream=c"), 2),
            Err(ApiError::TooManyStreams { max: 2 })
        ));
        for bad in ["stream=a*b", "stream=*a", "stream=**"] {
            assert!(
                matches!(SubscribeParams::parse(Some(bad), 4), Err(ApiError::InvalidPattern(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn patterns_envelopes_and_latest_are_read() {
        let params = SubscribeParams::parse(Some("stream=*&stream=ci.*&envelope=1&replay=latest"), 4).unwrap();
        assert_eq!(
            params.streams,
            [StreamPattern::Any, StreamPattern::try_new("ci.*").unwrap()]
        );
        assert!(params.envelope && params.latest);
        let params = SubscribeParams::parse(Some("stream=a&envelope=0"), 4).unwrap();
        assert!(!params.envelope && !params.latest);
        for bad in ["stream=a&envelope=yes", "stream=a&replay=all", "stream=a&replay="] {
            assert!(
                matches!(SubscribeParams::parse(Some(bad), 4), Err(ApiError::InvalidRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn last_event_ids_parse_or_are_unrecognised() {
        assert_eq!(parse_resume("42"), Some(Resume::After(EventId::from_u64(42))));
        assert_eq!(parse_resume(""), None);
        assert_eq!(parse_resume("abc"), Some(Resume::Unrecognised));
    }

    proptest! {
        #[test]
        fn query_parsing_never_panics(query in "\\PC{0,200}") {
            let _ = SubscribeParams::parse(Some(&query), 8);
        }

        #[test]
        fn resume_parsing_never_panics(text in "\\PC{0,40}") {
            let _ = parse_resume(&text);
        }
    }
}
