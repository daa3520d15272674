//! The SSE wire format (WHATWG HTML, "Server-sent events"), encoded once into `Bytes`.
//!
//! Written by hand rather than with `axum::response::sse::Event` because that type
//! encodes per response: here each event is encoded once at publish time and the same
//! `Bytes` go to every subscriber.
//!
//! Rules kept here: `data` is split on CRLF, LF and CR into one `data:` line each
//! (clients rebuild it with LF line endings); every field is written as `name: value`
//! so a value starting with a space survives the parser's removal of one space;
//! `id` and `event` never contain CR, LF or NUL (validated before they get here).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::{DataKind, EventId, EventType, GAP_EVENT_TYPE};
use crate::stream::{StreamName, StreamPattern};

/// A heartbeat: a comment line that keeps proxies from timing the stream out.
pub const HEARTBEAT: Bytes = Bytes::from_static(b": heartbeat\n\n");

/// Encodes one event record, ending with the blank line that dispatches it.
///
/// ```
/// use sse_gateway::event::{EventId, EventType};
/// let kind = EventType::try_new("update").unwrap();
/// let frame = sse_gateway::sse::encode_event(EventId::from_u64(42), Some(&kind), "a\r\nb");
/// assert_eq!(&frame[..], b"id: 42\nevent: update\ndata: a\ndata: b\n\n");
/// ```
pub fn encode_event(id: EventId, event_type: Option<&EventType>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 48);
    put_id(&mut out, id);
    if let Some(event_type) = event_type {
        put_field(&mut out, "event", event_type.as_str());
    }
    put_data(&mut out, data);
    out.put_u8(b'\n');
    out.freeze()
}

/// The first bytes of every event stream: the reconnection delay and a comment,
/// flushed at once so clients see the stream open. Appended to `out` (the
/// opening a new subscriber is sent) with `itoa`: `core::fmt` and its `String`
/// were about 600 instructions of every new subscriber (callgrind).
pub fn put_preamble(out: &mut BytesMut, retry: Duration) {
    put_retry(out, retry);
    out.put_slice(b": connected\n\n");
}

/// A lone `retry:` line (and the blank line ending the record, which dispatches
/// nothing): sets the client's reconnection delay.
pub fn encode_retry(retry: Duration) -> Bytes {
    let mut out = BytesMut::with_capacity(32);
    put_retry(&mut out, retry);
    out.put_u8(b'\n');
    out.freeze()
}

/// The `retry:` line, in milliseconds.
fn put_retry(out: &mut BytesMut, retry: Duration) {
    out.put_slice(b"retry: ");
    out.put_slice(itoa::Buffer::new().format(retry.as_millis()).as_bytes());
    out.put_u8(b'\n');
}

/// The token-expiry warning: `event: token-expiring` with `{"exp":EXP}` and no
/// `id:` line, so it does not move the client's resume point.
pub fn encode_expiry_warning(exp: u64) -> Bytes {
    Bytes::from(format!("event: token-expiring\ndata: {{\"exp\":{exp}}}\n\n"))
}

/// A gap notice: an event of type `gap` whose data is JSON naming the subscribed
/// streams and patterns (as subscribed) whose replay could not be proven complete. Its `id` is one the client already holds
/// (the id it resumed from, or the last one delivered before a live gap): a
/// spec-strict client sets its last event id from every dispatched event, so an
/// id-less notice would erase its resume point. When the client's id means nothing
/// here (unreadable, or never issued), the `id` is empty, meaning "nothing
/// received": browsers then reconnect without `Last-Event-ID` instead of sending
/// the same unusable id (and earning the same gap notice) again.
pub fn encode_gap_notice(streams: &[StreamPattern], id: Option<EventId>) -> Bytes {
    let names: Vec<String> = streams.iter().map(ToString::to_string).collect();
    let data = serde_json::json!({ "streams": names }).to_string();
    let mut out = BytesMut::with_capacity(data.len() + 48);
    match id {
        Some(id) => put_id(&mut out, id),
        None => out.put_slice(b"id:\n"),
    }
    put_field(&mut out, "event", GAP_EVENT_TYPE);
    put_data(&mut out, &data);
    out.put_u8(b'\n');
    out.freeze()
}

/// Encodes an event's envelope (`envelope=1`): the same `id` and `event` lines, data
/// `{"stream":…,"event":…,"data":…}` (`event` left out when untyped; `data` the
/// published JSON value, or the string as published).
///
/// ```
/// use sse_gateway::event::{DataKind, EventId};
/// use sse_gateway::stream::StreamName;
/// let stream = StreamName::try_new("ci.main").unwrap();
/// let record = sse_gateway::sse::encode_envelope(EventId::from_u64(7), &stream, None, r#"{"ok":true}"#, DataKind::Json);
/// assert_eq!(&record[..], br#"id: 7
/// data: {"stream":"ci.main","data":{"ok":true}}
///
/// "#);
/// ```
pub fn encode_envelope(
    id: EventId,
    stream: &StreamName,
    event_type: Option<&str>,
    data: &str,
    kind: DataKind,
) -> Bytes {
    let mut json = String::with_capacity(data.len() + stream.as_str().len() + 48);
    // Stream names are letters, digits and `.`, `_`, `-`, `:`: nothing to escape.
    json.push_str("{\"stream\":\"");
    json.push_str(stream.as_str());
    json.push('"');
    if let Some(event_type) = event_type {
        json.push_str(",\"event\":");
        json.push_str(&serde_json::Value::from(event_type).to_string());
    }
    json.push_str(",\"data\":");
    match kind {
        DataKind::Json => json.push_str(data),
        DataKind::Text => json.push_str(&serde_json::Value::from(data).to_string()),
    }
    json.push('}');
    let mut out = BytesMut::with_capacity(json.len() + 48);
    put_id(&mut out, id);
    if let Some(event_type) = event_type {
        put_field(&mut out, "event", event_type);
    }
    put_field(&mut out, "data", &json);
    out.put_u8(b'\n');
    out.freeze()
}

/// The envelope of an event, from its SSE record as [`encode_event`] wrote it (its
/// data lines joined with LF are the data, exact for data without CR).
pub fn envelope_record(record: &[u8], stream: &StreamName, kind: DataKind) -> Bytes {
    let text = String::from_utf8_lossy(record);
    let (mut id, mut event_type, mut data) = (EventId::ZERO, None, String::new());
    let mut first_data = true;
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id: ") {
            id = value.parse().unwrap_or(EventId::ZERO);
        } else if let Some(value) = line.strip_prefix("event: ") {
            event_type = Some(value);
        } else if let Some(value) = line.strip_prefix("data: ") {
            if !first_data {
                data.push('\n');
            }
            data.push_str(value);
            first_data = false;
        }
    }
    encode_envelope(id, stream, event_type, &data, kind)
}

fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_u8(b'\n');
}

/// The `id:` line. Every event is encoded once, but by `itoa` and `memchr` (in
/// `put_data`) rather than `core::fmt` and a per-character search: together they
/// were about 1,500 instructions of an event's encoding (callgrind).
fn put_id(out: &mut BytesMut, id: EventId) {
    out.put_slice(b"id: ");
    out.put_slice(itoa::Buffer::new().format(id.as_u64()).as_bytes());
    out.put_u8(b'\n');
}

/// One `data:` line per line of `data`, splitting on CRLF, LF and CR.
fn put_data(out: &mut BytesMut, data: &str) {
    let mut rest = data;
    loop {
        let Some(end) = memchr::memchr2(b'\r', b'\n', rest.as_bytes()) else {
            put_field(out, "data", rest);
            return;
        };
        put_field(out, "data", &rest[..end]);
        let break_len = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[end + break_len..];
    }
}

#[cfg(test)]
pub(crate) mod whatwg {
    //! A parser that follows the WHATWG event-stream interpretation rules, used to
    //! check the encoder (and by integration tests through the same rules).

    /// One dispatched event as a browser would see it.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub(crate) struct Dispatched {
        pub(crate) event_type: String,
        pub(crate) data: String,
        pub(crate) last_event_id: String,
    }

    /// Parses a whole stream and returns the dispatched events and the last
    /// `retry` value seen.
    pub(crate) fn parse(stream: &str) -> (Vec<Dispatched>, Option<u64>) {
        let mut events = Vec::new();
        let (mut data, mut event_type, mut last_id) = (String::new(), String::new(), String::new());
        let mut retry = None;
        let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
        for line in split_lines(stream) {
            if line.is_empty() {
                if !data.is_empty() {
                    if data.ends_with('\n') {
                        data.pop();
                    }
                    let kind = if event_type.is_empty() {
                        "message".to_owned()
                    } else {
                        event_type.clone()
                    };
                    events.push(Dispatched {
                        event_type: kind,
                        data: std::mem::take(&mut data),
                        last_event_id: last_id.clone(),
                    });
                }
                data.clear();
                event_type.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
                }
                None => (line, ""),
            };
            match field {
                "event" => event_type = value.to_owned(),
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "id" if !value.contains('\0') => last_id = value.to_owned(),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    retry = value.parse().ok();
                }
                _ => {}
            }
        }
        (events, retry)
    }

    /// Complete lines only: a trailing line without its terminator is not processed.
    fn split_lines(stream: &str) -> Vec<&str> {
        let mut lines = Vec::new();
        let mut rest = stream;
        while let Some(end) = rest.find(['\r', '\n']) {
            lines.push(&rest[..end]);
            let len = if rest[end..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[end + len..];
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::whatwg::{Dispatched, parse};
    use super::*;

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn encodes_id_type_and_each_line_of_data() {
        let event_type = EventType::try_new("update").unwrap();
        let frame = encode_event(EventId::from_u64(7), Some(&event_type), "a\r\nb\rc\nd");
        assert_eq!(
            text(&frame),
            "id: 7\nevent: update\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn empty_and_space_prefixed_data_survive() {
        let (events, _) = parse(text(&encode_event(EventId::from_u64(1), None, "")));
        assert_eq!(events[0].data, "");
        let (events, _) = parse(text(&encode_event(EventId::from_u64(1), None, "  two spaces\n")));
        assert_eq!(events[0].data, "  two spaces\n");
    }

    #[test]
    fn the_expiry_warning_is_a_typed_event_without_an_id() {
        let bytes = encode_expiry_warning(1_767_225_600);
        assert!(!text(&bytes).contains("id:"));
        let (events, _) = parse(text(&bytes));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "token-expiring");
        assert_eq!(events[0].data, r#"{"exp":1767225600}"#);
    }

    #[test]
    fn a_lone_retry_line_sets_retry_and_dispatches_nothing() {
        let retry = encode_retry(Duration::from_secs(3600));
        assert_eq!(&retry[..], b"retry: 3600000\n\n");
        let (events, retry) = parse(text(&retry));
        assert!(events.is_empty());
        assert_eq!(retry, Some(3_600_000));
    }

    #[test]
    fn preamble_sets_retry_and_dispatches_nothing() {
        let mut preamble = BytesMut::new();
        put_preamble(&mut preamble, Duration::from_millis(2500));
        let preamble = preamble.freeze();
        assert_eq!(&preamble[..], b"retry: 2500\n: connected\n\n");
        let (events, retry) = parse(text(&preamble));
        assert!(events.is_empty());
        assert_eq!(retry, Some(2500));
    }

    #[test]
    fn gap_notice_is_json_naming_streams_and_keeps_the_resume_id() {
        let streams = [
            StreamPattern::try_new("a").unwrap(),
            StreamPattern::try_new("b.*").unwrap(),
        ];
        let (events, _) = parse(text(&encode_gap_notice(&streams, Some(EventId::from_u64(41)))));
        assert_eq!(events[0].event_type, "gap");
        assert_eq!(events[0].last_event_id, "41");
        let (events, _) = parse(text(&encode_gap_notice(&streams, None)));
        assert_eq!(events[0].last_event_id, "", "an unusable resume id is reset");
        let json: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(json, serde_json::json!({"streams": ["a", "b.*"]}));
    }

    fn envelope_of(record: &Bytes) -> (Dispatched, serde_json::Value) {
        let (events, _) = parse(text(record));
        let event = events.into_iter().next().unwrap();
        let json = serde_json::from_str(&event.data).unwrap();
        (event, json)
    }

    #[test]
    fn envelopes_wrap_strings_json_values_and_untyped_events() {
        let stream = StreamName::try_new("ci.main").unwrap();
        let kind = EventType::try_new("build").unwrap();
        for (data, data_kind, expected) in [
            ("plain", DataKind::Text, serde_json::json!("plain")),
            ("{\"a\":[1,2]}", DataKind::Json, serde_json::json!({"a": [1, 2]})),
            ("42", DataKind::Json, serde_json::json!(42)),
            ("42", DataKind::Text, serde_json::json!("42")),
            (
                "two\nlines \"quoted\"",
                DataKind::Text,
                serde_json::json!("two\nlines \"quoted\""),
            ),
            ("", DataKind::Text, serde_json::json!("")),
        ] {
            let record = encode_event(EventId::from_u64(9), Some(&kind), data);
            let (event, json) = envelope_of(&envelope_record(&record, &stream, data_kind));
            assert_eq!(
                (event.event_type.as_str(), event.last_event_id.as_str()),
                ("build", "9")
            );
            assert_eq!(
                json,
                serde_json::json!({"stream": "ci.main", "event": "build", "data": expected})
            );
        }
        let untyped = encode_event(EventId::from_u64(3), None, "x");
        let (event, json) = envelope_of(&envelope_record(&untyped, &stream, DataKind::Text));
        assert_eq!(event.event_type, "message");
        assert_eq!(json, serde_json::json!({"stream": "ci.main", "data": "x"}));
    }

    fn arb_event_type() -> impl Strategy<Value = Option<EventType>> {
        proptest::option::of("[^\r\n\0]{1,20}".prop_filter_map("valid type", |t| EventType::try_new(&t).ok()))
    }

    proptest! {
        // 2000 cases in CI; `PROPTEST_CASES` raises it for longer campaigns.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2000)
        ))]

        /// An envelope made from the record equals the one made from the data, for
        /// any text without CR (frames with CR make theirs from the data).
        #[test]
        fn envelopes_from_records_are_exact(data in "[^\r]{0,40}", event_type in arb_event_type()) {
            let stream = StreamName::try_new("s").unwrap();
            let record = encode_event(EventId::from_u64(5), event_type.as_ref(), &data);
            let direct = encode_envelope(EventId::from_u64(5), &stream, event_type.as_ref().map(EventType::as_str), &data, DataKind::Text);
            prop_assert_eq!(envelope_record(&record, &stream, DataKind::Text), direct);
        }

        /// Any data, type and id round-trip through a WHATWG parser, with line
        /// endings normalised to LF as browsers do.
        #[test]
        fn encoder_round_trips_through_a_whatwg_parser(
            id in any::<u64>(),
            event_type in arb_event_type(),
            data in "(\\PC|\r|\n|\r\n| |:){0,64}",
        ) {
            let frame = encode_event(EventId::from_u64(id), event_type.as_ref(), &data);
            let (events, _) = parse(text(&frame));
            let expected = Dispatched {
                event_type: event_type.map_or_else(|| "message".to_owned(), |t| t.as_str().to_owned()),
                data: data.replace("\r\n", "\n").replace('\r', "\n"),
                last_event_id: id.to_string(),
            };
            prop_assert_eq!(events, vec![expected]);
        }

        /// Concatenated records stay separate events, in order.
        #[test]
        fn consecutive_records_do_not_bleed_into_each_other(
            payloads in proptest::collection::vec("(\\PC|\r|\n){0,16}", 1..8),
        ) {
            let mut stream = String::new();
            for (i, data) in payloads.iter().enumerate() {
                stream.push_str(text(&encode_event(EventId::from_u64(i as u64 + 1), None, data)));
                stream.push_str(text(&HEARTBEAT));
            }
            let (events, _) = parse(&stream);
            prop_assert_eq!(events.len(), payloads.len());
            for (event, data) in events.iter().zip(&payloads) {
                prop_assert_eq!(&event.data, &data.replace("\r\n", "\n").replace('\r', "\n"));
            }
        }
    }
}
