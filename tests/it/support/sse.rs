//! An incremental event-stream reader following the WHATWG parsing rules.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use super::within;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id` field of this record, if it had one.
    pub id: Option<String>,
    /// The event type (`message` when none was given).
    pub event: String,
    pub data: String,
}

/// Anything the stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(SseEvent),
    Comment(String),
    Retry(u64),
}

/// A response body (or a subscription's chunks) read as SSE.
pub struct SseStream {
    pub headers: reqwest::header::HeaderMap,
    body: BoxStream<'static, Result<Bytes, String>>,
    buffer: String,
    pending: std::collections::VecDeque<Item>,
    id: Option<String>,
    event: String,
    data: Option<String>,
    ended: bool,
}

impl SseStream {
    pub fn new(response: reqwest::Response) -> Self {
        let headers = response.headers().clone();
        let body = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|error| error.to_string()));
        Self::from_chunks(headers, body.boxed())
    }

    /// Reads SSE from any stream of chunks (a subscription's, in node-level tests).
    pub fn from_chunks(headers: reqwest::header::HeaderMap, body: BoxStream<'static, Result<Bytes, String>>) -> Self {
        Self {
            headers,
            body,
            buffer: String::new(),
            pending: Default::default(),
            id: None,
            event: String::new(),
            data: None,
            ended: false,
        }
    }

    /// The next item, or `None` when the server ended the stream.
    pub async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.ended {
                return None;
            }
            match within("SSE bytes", self.body.next()).await {
                Some(Ok(chunk)) => {
                    self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8 stream"));
                    self.parse_lines();
                }
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The next event, skipping comments and retry lines.
    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            match self.next_item().await {
                Some(Item::Event(event)) => return event,
                Some(_) => {}
                None => panic!("stream ended while an event was expected"),
            }
        }
    }

    /// The next `n` events.
    pub async fn events(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next_event().await);
        }
        events
    }

    /// Reads until the server ends the stream; returns the events seen on the way.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(item) = self.next_item().await {
            if let Item::Event(event) = item {
                events.push(event);
            }
        }
        events
    }

    fn parse_lines(&mut self) {
        while let Some(end) = self.buffer.find(['\r', '\n']) {
            // A CR at the very end may be the first half of CRLF: wait for more.
            if self.buffer[end..].starts_with('\r') && end + 1 == self.buffer.len() {
                return;
            }
            let line: String = self.buffer[..end].to_owned();
            let len = if self.buffer[end..].starts_with("\r\n") { 2 } else { 1 };
            self.buffer.drain(..end + len);
            self.process_line(&line);
        }
    }

    fn process_line(&mut self, line: &str) {
        if line.is_empty() {
            if let Some(mut data) = self.data.take() {
                if data.ends_with('\n') {
                    data.pop();
                }
                let event = if self.event.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut self.event)
                };
                self.pending.push_back(Item::Event(SseEvent {
                    id: self.id.take(),
                    event,
                    data,
                }));
            }
            self.id = None;
            self.event.clear();
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.pending.push_back(Item::Comment(comment.trim_start().to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = value.to_owned(),
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                data.push_str(value);
                data.push('\n');
            }
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.pending.push_back(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }
}
