//! Publish bodies: JSON (one event or an array, all or nothing) and form-encoded
//! (`curl -d stream=…&data=…`), parsed into validated [`NewEvent`]s. Shared by
//! every way in that carries a publish body; sizes and permissions are the node's.
//!
//! A string `data` is sent as is; any other JSON value is sent as compact JSON,
//! preserving the publisher's key order and number spelling.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{DataKind, EventType, InvalidEventType, NewEvent};
use crate::stream::{InvalidStreamName, StreamName};

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not a publish body: the text says what is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error("invalid stream name: {0}")]
    StreamName(#[from] InvalidStreamName),
    #[error("invalid event type: {0}")]
    EventType(#[from] InvalidEventType),
    /// What is wrong with one element of a batch.
    #[error("batch element {index}: {error}")]
    Element { index: usize, error: Box<Self> },
    /// A body in a media type publish bodies do not come in; the text says which
    /// header to send.
    #[error("{0}")]
    MediaType(String),
}

impl BodyError {
    /// Stable machine-readable reason, for error bodies and metric labels.
    pub fn reason(&self) -> &'static str {
        match self.innermost() {
            Self::StreamName(_) => "invalid_stream_name",
            Self::EventType(_) => "invalid_event_type",
            Self::MediaType(_) => "unsupported_media_type",
            Self::Invalid(_) | Self::Element { .. } => "invalid_request",
        }
    }

    /// The error itself, without the batch element it was found in.
    pub fn innermost(&self) -> &Self {
        match self {
            Self::Element { error, .. } => error.innermost(),
            other => other,
        }
    }
}

/// Where in a request an event is, for messages: ` (batch element N)` when the
/// request held several events, nothing otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At(pub Option<usize>);

impl At {
    /// Element `index` of a request of `count` events.
    pub fn element(index: usize, count: usize) -> Self {
        Self((count > 1).then_some(index))
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(index) => write!(f, " (batch element {index})"),
            None => Ok(()),
        }
    }
}

/// Whether a `Content-Type` value names JSON (`application/json` or `…+json`).
pub fn is_json_media_type(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A hint for a body that looks like JSON but was not sent as JSON.
const JSON_HEADER_HINT: &str = "send JSON bodies with the header Content-Type: application/json \
     (curl: -H 'Content-Type: application/json')";

/// A validated publish request.
#[derive(Debug)]
pub struct PublishBody {
    pub events: Vec<NewEvent>,
    /// Whether the request was an array (answered with `{"ids"}`).
    pub is_batch: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent<'a> {
    stream: String,
    #[serde(default)]
    event: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Parses and validates a whole body: form-encoded when `content_type` says so,
/// JSON when it names JSON or is missing; any other media type is refused.
///
/// # Errors
/// [`BodyError`] for malformed bodies, names or types; [`BodyError::MediaType`]
/// for a body in another media type (with a hint when it looks like JSON).
pub fn parse_body(content_type: Option<&str>, body: &[u8]) -> Result<PublishBody, BodyError> {
    let Some(content_type) = content_type else {
        return parse_json(body);
    };
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return parse_form(body).map_err(|error| match error {
            BodyError::Invalid(text) if looks_like_json(body) => BodyError::Invalid(format!(
                "{text}: the body looks like JSON sent as a form; {JSON_HEADER_HINT}"
            )),
            other => other,
        });
    }
    if is_json_media_type(content_type) {
        return parse_json(body);
    }
    let what = if looks_like_json(body) {
        format!("the body looks like JSON but Content-Type is `{mime}`; {JSON_HEADER_HINT}")
    } else {
        format!(
            "Content-Type `{mime}` is not accepted: publish JSON (application/json) or a form \
             (application/x-www-form-urlencoded)"
        )
    };
    Err(BodyError::MediaType(what))
}

/// Whether `body` starts like a JSON object or array.
fn looks_like_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'['))
}

/// Parses a JSON publish body (one event or a batch).
///
/// # Errors
/// [`BodyError`] for malformed bodies, names or types.
pub fn parse_json(body: &[u8]) -> Result<PublishBody, BodyError> {
    let invalid = |error: serde_json::Error| BodyError::Invalid(format!("invalid JSON body: {error}"));
    let is_batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_batch {
        let event: JsonEvent<'_> = serde_json::from_slice(body).map_err(invalid)?;
        return Ok(PublishBody {
            events: vec![json_event(&event)?],
            is_batch,
        });
    }
    let elements: Vec<&RawValue> = serde_json::from_slice(body).map_err(invalid)?;
    let events = elements
        .iter()
        .enumerate()
        .map(|(index, element)| {
            serde_json::from_str::<JsonEvent<'_>>(element.get())
                .map_err(|error| BodyError::Invalid(format!("invalid event: {error}")))
                .and_then(|event| json_event(&event))
                .map_err(|error| BodyError::Element {
                    index,
                    error: Box::new(error),
                })
        })
        .collect::<Result<_, _>>()?;
    Ok(PublishBody { events, is_batch })
}

fn json_event(event: &JsonEvent<'_>) -> Result<NewEvent, BodyError> {
    let raw = event.data.get();
    let (data, kind) = if raw.starts_with('"') {
        let text = serde_json::from_str::<String>(raw)
            .map_err(|error| BodyError::Invalid(format!("`data` is not a valid JSON string: {error}")))?;
        (text, DataKind::Text)
    } else {
        (compact_json(raw), DataKind::Json)
    };
    new_event(&event.stream, event.event.as_deref(), data, kind)
}

fn parse_form(body: &[u8]) -> Result<PublishBody, BodyError> {
    let (mut stream, mut event, mut data) = (None, None, None);
    for (key, value) in form_pairs(body)? {
        let slot = match key.as_str() {
            "stream" => &mut stream,
            "event" => &mut event,
            "data" => &mut data,
            other => {
                return Err(BodyError::Invalid(format!("unknown form field `{other}`")));
            }
        };
        if slot.replace(value).is_some() {
            return Err(BodyError::Invalid(format!("form field `{key}` appears twice")));
        }
    }
    let missing = |field| BodyError::Invalid(format!("form field `{field}` is required"));
    let stream = stream.ok_or_else(|| missing("stream"))?;
    let data = data.ok_or_else(|| missing("data"))?;
    Ok(PublishBody {
        events: vec![new_event(&stream, event.as_deref(), data, DataKind::Text)?],
        is_batch: false,
    })
}

/// `application/x-www-form-urlencoded` pairs, refusing invalid UTF-8 rather than
/// replacing it (`form_urlencoded::parse` would substitute U+FFFD silently).
fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, BodyError> {
    let decode = |part: &[u8]| {
        let spaced: Vec<u8> = part.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
        String::from_utf8(bytes).map_err(|_| BodyError::Invalid("form body is not valid UTF-8".to_owned()))
    };
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut halves = pair.splitn(2, |&b| b == b'=');
            let key = decode(halves.next().unwrap_or_default())?;
            let value = decode(halves.next().unwrap_or_default())?;
            Ok((key, value))
        })
        .collect()
}

/// An empty `event` means untyped (browsers dispatch it to `onmessage`).
fn new_event(stream: &str, event_type: Option<&str>, data: String, kind: DataKind) -> Result<NewEvent, BodyError> {
    Ok(NewEvent {
        stream: StreamName::try_new(stream)?,
        event_type: event_type
            .filter(|t| !t.is_empty())
            .map(EventType::try_new)
            .transpose()?,
        data,
        kind,
    })
}

/// Removes insignificant whitespace from already-validated JSON text. Hand-written
/// because re-serialising through `serde_json::Value` would reorder keys and round
/// large numbers.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for ch in text.chars() {
        if in_string {
            out.push(ch);
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if ch == '"' {
            in_string = true;
            out.push(ch);
        } else if !matches!(ch, ' ' | '\t' | '\n' | '\r') {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn json(body: &str) -> Result<PublishBody, BodyError> {
        parse_body(Some("application/json"), body.as_bytes())
    }

    #[test]
    fn string_data_is_sent_as_is_and_other_json_compactly_in_order() {
        let parsed = json(r#"{"stream":"a","data":"line1\nline2"}"#).unwrap();
        assert_eq!(parsed.events[0].data, "line1\nline2");
        assert_eq!(parsed.events[0].kind, DataKind::Text);
        assert!(!parsed.is_batch);
        let parsed = json(r#"{"stream":"a","event":"t","data":{ "z" : [1, 2.50], "a": "x y" }}"#).unwrap();
        assert_eq!(parsed.events[0].data, r#"{"z":[1,2.50],"a":"x y"}"#);
        assert_eq!(parsed.events[0].kind, DataKind::Json);
        assert_eq!(parsed.events[0].event_type.as_ref().unwrap().as_str(), "t");
    }

    #[test]
    fn batch_errors_name_the_element() {
        let error = json(r#"[{"stream":"a","data":1},{"stream":"b c","data":1}]"#).unwrap_err();
        assert!(matches!(error, BodyError::Element { index: 1, .. }), "{error:?}");
        assert!(matches!(error.innermost(), BodyError::StreamName(_)));
        assert!(error.to_string().starts_with("batch element 1: "), "{error}");
        let error = json(r#"[{"stream":"a","data":1},{"stream":"b"}]"#).unwrap_err();
        assert!(error.to_string().contains("batch element 1"), "{error}");
    }

    #[test]
    fn media_types_other_than_json_and_forms_are_refused_with_a_hint() {
        let body = br#"{"stream":"a","data":"x"}"#;
        assert!(parse_body(None, body).is_ok());
        assert!(parse_body(Some("application/json; charset=utf-8"), body).is_ok());
        assert!(parse_body(Some("application/cloudevents+json"), body).is_ok());
        let error = parse_body(Some("text/plain"), body).unwrap_err();
        assert!(matches!(error, BodyError::MediaType(_)));
        assert!(error.to_string().contains("Content-Type: application/json"), "{error}");
        let error = parse_body(Some("application/x-www-form-urlencoded"), body).unwrap_err();
        assert!(error.to_string().contains("looks like JSON sent as a form"), "{error}");
        assert!(parse_body(Some("application/octet-stream"), b"abc").is_err());
    }

    #[test]
    fn batches_are_validated_as_a_whole() {
        let parsed = json(r#"[{"stream":"a","data":1},{"stream":"b","data":null}]"#).unwrap();
        assert!(parsed.is_batch);
        assert_eq!(parsed.events[1].data, "null");
        assert!(json(r#"[{"stream":"a","data":1},{"stream":"b c","data":1}]"#).is_err());
        // An empty batch parses; the node refuses it (it also bounds sizes).
        assert!(json("[]").unwrap().events.is_empty());
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        for body in [
            "",
            "not json",
            r#"{"stream":"a"}"#,
            r#"{"data":"x"}"#,
            r#"{"stream":"a","data":"x","id":"5"}"#,
            r#"{"stream":"a","data":"x","event":"gap"}"#,
            r#"{"stream":"a","data":"x","event":"a\nb"}"#,
            r#"{"stream":"a","data":"\ud800abc"}"#,
        ] {
            assert!(json(body).is_err(), "{body}");
        }
    }

    #[test]
    fn forms_carry_one_event() {
        let form = |body: &str| parse_body(Some("application/x-www-form-urlencoded"), body.as_bytes());
        let parsed = form("stream=a&event=t&data=hello+world%0Aline").unwrap();
        assert_eq!(parsed.events[0].data, "hello world\nline");
        assert!(form("stream=a").is_err());
        assert!(form("stream=a&data=1&data=2").is_err());
        assert!(form("stream=a&data=1&extra=2").is_err());
        assert!(form("stream=a&data=1&event=").unwrap().events[0].event_type.is_none());
    }

    proptest! {
        #[test]
        fn compaction_preserves_the_json_value(value in arb_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let compact = compact_json(&pretty);
            prop_assert_eq!(&serde_json::from_str::<serde_json::Value>(&compact).unwrap(), &value);
            prop_assert_eq!(compact, serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256), form in any::<bool>()) {
            let content_type = if form { "application/x-www-form-urlencoded" } else { "application/json" };
            let _ = parse_body(Some(content_type), &body);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "(\\PC| |\"|\\\\|\n|\t){0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z ]{0,4}", inner, 0..4)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }
}
