//! `sse-floor`: the least a server can do for the scenarios of `bench/compare-nchan.sh`
//! — the same sockets, the same bytes per delivery, the same publish requests read and
//! answered — and nothing else: no authentication, no JSON parser, no limits, no
//! metrics, no timers, no heartbeats. One thread, like the servers it is compared
//! with. Its figures are the floor the gateway's are measured against, so "the kernel
//! is the limit" is a ratio in the table rather than a guess.
//!
//! Written by hand on purpose: any framework would add the very work it must not do.
//! It understands only what the load generator sends, and is not a server to deploy.
//!
//! - `GET /events?stream=NAME` (optional `Last-Event-ID`): the SSE head with chunked
//!   framing, then the held frames after that id, then only writes. The request's
//!   socket is never read again (like the gateway's event streams).
//! - `POST /events` with the gateway's JSON body (an object or an array of objects
//!   with `"stream"` then `"data"`, data that needs no unescaping, as the generator
//!   sends) or `POST /pub?stream=NAME` with the raw data (nchan's shape): ids are
//!   assigned, the last 1,000 frames per stream kept, `202` answered with the ids.
//! - Delivery: each frame is encoded once; every subscriber's pending frames leave as
//!   one chunk in one `write` once the publishing connection yields, so events
//!   published together leave together (as in the gateway); a subscriber whose socket
//!   is full keeps its bytes until it is writable.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::LocalSet;

#[derive(Debug, Parser)]
#[command(about = "The floor for bench/compare-nchan.sh: socket work only, no gateway logic")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: SocketAddr,
}

/// Frames kept per stream for `Last-Event-ID` (the benchmark's nchan keeps 1,000).
const HISTORY: usize = 1000;

const EVENT_STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    LocalSet::new().block_on(&runtime, async move {
        let listener = bind(cli.addr)?;
        let floor = Rc::new(Floor::new());
        tokio::task::spawn_local(flusher(Rc::clone(&floor)));
        loop {
            let (socket, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors: wait rather than spin.
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            tokio::task::spawn_local(connection(Rc::clone(&floor), socket));
        }
    })
}

/// The same backlog as both servers of the comparison (8,192).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

struct Subscriber {
    socket: TcpStream,
    /// Frames not yet framed as a chunk.
    queued: RefCell<Vec<u8>>,
    /// The chunk being written, and how much of it is written.
    out: RefCell<Vec<u8>>,
    written: Cell<usize>,
    /// On the flusher's list or owned by a task waiting for writability.
    scheduled: Cell<bool>,
    dead: Cell<bool>,
}

impl Subscriber {
    /// Writes what the socket takes without waiting; `true` once nothing is left.
    fn try_flush(&self) -> io::Result<bool> {
        let mut out = self.out.borrow_mut();
        loop {
            if self.written.get() == out.len() {
                out.clear();
                self.written.set(0);
                let mut queued = self.queued.borrow_mut();
                if queued.is_empty() {
                    return Ok(true);
                }
                write!(out, "{:x}\r\n", queued.len())?;
                out.extend_from_slice(&queued);
                out.extend_from_slice(b"\r\n");
                queued.clear();
            }
            match self.socket.try_write(&out[self.written.get()..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written.set(self.written.get() + n),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
    }
}

#[derive(Default)]
struct Stream {
    subscribers: Vec<Rc<Subscriber>>,
    history: VecDeque<(u64, Rc<[u8]>)>,
}

struct Floor {
    streams: RefCell<HashMap<String, Stream>>,
    next_id: Cell<u64>,
    dirty: RefCell<Vec<Rc<Subscriber>>>,
    flush: Notify,
}

impl Floor {
    fn new() -> Self {
        // Ids as long as the gateway's (milliseconds and a sequence: 19 digits).
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            streams: RefCell::default(),
            next_id: Cell::new(ms << 20),
            dirty: RefCell::default(),
            flush: Notify::new(),
        }
    }

    fn schedule(&self, subscriber: &Rc<Subscriber>) {
        if !subscriber.scheduled.replace(true) {
            self.dirty.borrow_mut().push(Rc::clone(subscriber));
            self.flush.notify_one();
        }
    }

    fn publish(&self, stream: &str, data: &str) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let frame: Rc<[u8]> = format!("id: {id}\ndata: {data}\n\n").into_bytes().into();
        let mut streams = self.streams.borrow_mut();
        let stream = streams.entry(stream.to_owned()).or_default();
        stream.subscribers.retain(|subscriber| {
            if subscriber.dead.get() {
                return false;
            }
            subscriber.queued.borrow_mut().extend_from_slice(&frame);
            self.schedule(subscriber);
            true
        });
        if stream.history.len() == HISTORY {
            stream.history.pop_front();
        }
        stream.history.push_back((id, frame));
        id
    }

    fn subscribe(&self, socket: TcpStream, stream: &str, last_id: Option<u64>) {
        let mut streams = self.streams.borrow_mut();
        let stream = streams.entry(stream.to_owned()).or_default();
        // The head and the missed frames leave in one vectored write straight from the
        // history (no copy); only what the socket does not take is copied.
        let missed: Vec<&[u8]> = match last_id {
            Some(last_id) => stream
                .history
                .iter()
                .filter(|(id, _)| *id > last_id)
                .map(|(_, frame)| &frame[..])
                .collect(),
            None => Vec::new(),
        };
        let missed_len: usize = missed.iter().map(|frame| frame.len()).sum();
        let chunk_head = format!("{missed_len:x}\r\n");
        let mut parts = vec![EVENT_STREAM_HEAD];
        if missed_len > 0 {
            parts.push(chunk_head.as_bytes());
            parts.extend(missed);
            parts.push(b"\r\n");
        }
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|part| IoSlice::new(part)).collect();
        let written = match socket.try_write_vectored(&slices) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return,
        };
        let mut rest = Vec::new();
        let mut skip = written;
        for part in &parts {
            if skip >= part.len() {
                skip -= part.len();
            } else {
                rest.extend_from_slice(&part[skip..]);
                skip = 0;
            }
        }
        let subscriber = Rc::new(Subscriber {
            socket,
            queued: RefCell::default(),
            out: RefCell::new(rest),
            written: Cell::new(0),
            scheduled: Cell::new(false),
            dead: Cell::new(false),
        });
        if !subscriber.out.borrow().is_empty() {
            self.schedule(&subscriber);
        }
        stream.subscribers.push(subscriber);
    }
}

/// Writes every scheduled subscriber's frames once the publishing tasks have yielded.
async fn flusher(floor: Rc<Floor>) {
    let mut batch = Vec::new();
    loop {
        floor.flush.notified().await;
        std::mem::swap(&mut batch, &mut *floor.dirty.borrow_mut());
        for subscriber in batch.drain(..) {
            match subscriber.try_flush() {
                Ok(true) => subscriber.scheduled.set(false),
                Ok(false) => drop(tokio::task::spawn_local(drain(subscriber))),
                Err(_) => subscriber.dead.set(true),
            }
        }
    }
}

/// A subscriber whose socket is full: waits until it takes the rest.
async fn drain(subscriber: Rc<Subscriber>) {
    loop {
        if subscriber.socket.writable().await.is_err() {
            subscriber.dead.set(true);
            return;
        }
        match subscriber.try_flush() {
            Ok(true) => {
                subscriber.scheduled.set(false);
                return;
            }
            Ok(false) => {}
            Err(_) => {
                subscriber.dead.set(true);
                return;
            }
        }
    }
}

/// What the floor needs of a request head.
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    content_length: usize,
    last_event_id: Option<u64>,
}

fn parse_head(head: &str) -> anyhow::Result<Request<'_>> {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().context("no target")?);
    let mut request = Request {
        method,
        target,
        content_length: 0,
        last_event_id: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            request.content_length = value.trim().parse()?;
        } else if name.eq_ignore_ascii_case("last-event-id") {
            request.last_event_id = value.trim().parse().ok();
        }
    }
    Ok(request)
}

fn query_stream(target: &str) -> Option<&str> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix("stream="))
}

/// `(stream, data)` of each object in the generator's JSON publish bodies.
fn json_events(body: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let stream = string_after(&mut rest, "\"stream\":\"")?;
        let data = string_after(&mut rest, "\"data\":\"")?;
        Some((stream, data))
    })
}

fn string_after<'a>(rest: &mut &'a str, key: &str) -> Option<&'a str> {
    let start = rest.find(key)? + key.len();
    let len = rest[start..].find('"')?;
    let value = &rest[start..start + len];
    *rest = &rest[start + len..];
    Some(value)
}

async fn connection(floor: Rc<Floor>, mut socket: TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut response = Vec::new();
    loop {
        let head_len = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = std::str::from_utf8(&buf[..head_len])?;
        let request = parse_head(head)?;
        let total = head_len + request.content_length;
        let (method, last_event_id) = (request.method.to_owned(), request.last_event_id);
        let target = request.target.to_owned();
        while buf.len() < total {
            if socket.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        let body = std::str::from_utf8(&buf[head_len..total])?;
        response.clear();
        match (method.as_str(), target.split('?').next().unwrap_or_default()) {
            ("GET", "/events") => {
                let stream = query_stream(&target).context("no stream")?;
                floor.subscribe(socket, stream, last_event_id);
                return Ok(());
            }
            ("POST", "/events") => {
                let ids: Vec<u64> = json_events(body)
                    .map(|(stream, data)| floor.publish(stream, data))
                    .collect();
                let mut json = String::from("{\"ids\":[");
                for (i, id) in ids.iter().enumerate() {
                    json += &format!("{}\"{id}\"", if i > 0 { "," } else { "" });
                }
                json += "]}";
                accepted(&mut response, &json)?;
            }
            ("POST", "/pub") => {
                let stream = query_stream(&target).context("no stream")?;
                let id = floor.publish(stream, body);
                accepted(&mut response, &format!("{{\"ids\":[\"{id}\"]}}"))?;
            }
            _ => write!(
                response,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nfloor\n"
            )?,
        }
        buf.drain(..total);
        socket.write_all(&response).await?;
    }
}

fn accepted(response: &mut Vec<u8>, json: &str) -> io::Result<()> {
    write!(
        response,
        "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_generators_bodies() {
        let one: Vec<_> = json_events(r#"{"stream":"bench-1","data":"p0s1t2xx"}"#).collect();
        assert_eq!(one, [("bench-1", "p0s1t2xx")]);
        let batch: Vec<_> = json_events(r#"[{"stream":"a","data":"x"},{"stream":"b","data":"y"}]"#).collect();
        assert_eq!(batch, [("a", "x"), ("b", "y")]);
    }

    #[test]
    fn parses_what_it_needs_of_a_head() {
        let head = "GET /events?stream=bench-7 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 42\r\ncontent-length: 3\r\n\r\n";
        let request = parse_head(head).unwrap();
        assert_eq!((request.method, request.target), ("GET", "/events?stream=bench-7"));
        assert_eq!((request.content_length, request.last_event_id), (3, Some(42)));
        assert_eq!(query_stream(request.target), Some("bench-7"));
    }
}
