//! What differs between the servers measured: the publish request. Subscribing is
//! the same for all (`GET /events?stream=NAME`, `Accept: text/event-stream`).

use std::fmt::Write as _;
use std::net::SocketAddr;

/// The kind of server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// sse-gateway: `POST /events` with a JSON body (an array for a batch), bearer token.
    Gateway,
    /// nginx + nchan: `POST /pub?stream=NAME` with the raw data as body (no batches).
    Nchan,
}

/// Where and how to subscribe and publish.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) addr: SocketAddr,
    pub(crate) publish_addr: SocketAddr,
    pub(crate) token: Option<String>,
}

/// One event to publish: the stream's index and its data.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) stream: usize,
    pub(crate) data: &'a str,
}

pub(crate) fn stream_name(index: usize) -> String {
    format!("bench-{index}")
}

impl Target {
    pub(crate) fn subscribe_request(&self, stream: usize, last_event_id: Option<&str>) -> Vec<u8> {
        let mut request = format!(
            "GET /events?stream={} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n",
            stream_name(stream),
            self.addr
        );
        self.authorize(&mut request);
        if let Some(id) = last_event_id {
            let _ = write!(request, "Last-Event-ID: {id}\r\n");
        }
        request.push_str("\r\n");
        request.into_bytes()
    }

    /// One HTTP request carrying `events` (more than one only for the gateway).
    pub(crate) fn publish_request(&self, events: &[Outgoing<'_>]) -> Vec<u8> {
        let (path, content_type, body) = match self.kind {
            Kind::Gateway => {
                let mut body = String::with_capacity(events.len() * 160);
                if events.len() > 1 {
                    body.push('[');
                }
                for (i, event) in events.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    // Generated data is ASCII letters and digits: no JSON escaping needed.
                    let _ = write!(
                        body,
                        r#"{{"stream":"{}","data":"{}"}}"#,
                        stream_name(event.stream),
                        event.data
                    );
                }
                if events.len() > 1 {
                    body.push(']');
                }
                ("/events".to_owned(), "application/json", body)
            }
            Kind::Nchan => {
                assert_eq!(events.len(), 1, "nchan has no batch publish");
                (
                    format!("/pub?stream={}", stream_name(events[0].stream)),
                    "text/plain",
                    events[0].data.to_owned(),
                )
            }
        };
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            self.publish_addr,
            body.len()
        );
        self.authorize(&mut request);
        request.push_str("\r\n");
        request.push_str(&body);
        request.into_bytes()
    }

    fn authorize(&self, request: &mut String) {
        if let Some(token) = &self.token {
            let _ = write!(request, "Authorization: Bearer {token}\r\n");
        }
    }
}
