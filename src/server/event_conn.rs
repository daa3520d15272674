//! A lean HTTP/1.1 connection for event streams.
//!
//! Open event streams are the gateway's steady state: thousands per node, idle most
//! of the time. Served by hyper, each one keeps an 8 KiB write buffer and an 8–16 KiB
//! read buffer for a connection that will never send another request (measured with
//! massif: 24 of the 28 KiB heap per idle subscriber). So the accept loop reads the
//! first request head itself, into a small buffer. A plain `GET /events` over
//! HTTP/1.1 goes through the same axum router (authentication, limits, CORS, metrics
//! and tracing are unchanged) and its response is written here: the head once, then
//! each body frame, with the others the body has ready, as one chunk in one vectored
//! write, straight from the shared encoded bytes (a replay is not copied). The
//! connection closes when the response ends. While the response has nothing to
//! write, the socket is lent to direct deliveries ([`crate::stream::direct`]); what a
//! direct write left unwritten is written here before anything else. Every other
//! request, and any head this code does not fully understand, is handed to hyper
//! with the bytes already read. Parsing is `httparse`, the parser hyper itself uses.

use std::cell::RefCell;
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tower::ServiceExt as _;

use crate::chunked::SizeLine;
use crate::connection::ClientConnection;
use crate::metrics as m;
use crate::router::AppService;
use crate::stream::DirectSocket;

/// The request target this path serves; anything else goes to hyper.
const EVENTS_PATH: &[u8] = b"/events";
/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest request head parsed here; a longer one goes to hyper, which answers it.
const MAX_HEAD_BYTES: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
/// Bytes a client may send after its event-stream request before the connection is
/// closed. An EventSource sends nothing; reading and discarding an unbounded flood
/// would let one client spend the node's CPU.
const MAX_BYTES_AFTER_REQUEST: usize = 1024;

/// What the first request on a new connection turned out to be.
#[derive(Debug)]
pub(super) enum FirstRequest {
    /// `GET /events…` over HTTP/1.1 without a body: served here.
    EventStream(Box<Request<Body>>),
    /// Anything else, complete (a whole HTTP/1 head or the HTTP/2 preface): the bytes
    /// read so far, to be replayed to hyper.
    Other(Bytes),
    /// The client went away, did not finish in time, or the server is stopping.
    Gone,
}

/// What the bytes read so far say.
enum Classified {
    EventStream(Box<Request<Body>>),
    Other,
}

/// Reads until the first request head (or the HTTP/2 preface) is complete, within
/// `timeout`: protocol detection has the same deadline as the head itself.
pub(super) async fn read_first_request(
    stream: &mut TcpStream,
    timeout: Duration,
    stop: &CancellationToken,
) -> FirstRequest {
    let mut buf = BytesMut::with_capacity(1024);
    let read = async {
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            if let Some(classified) = classify(&buf) {
                return Some(classified);
            }
        }
    };
    tokio::select! {
        () = stop.cancelled() => FirstRequest::Gone,
        classified = tokio::time::timeout(timeout, read) => match classified {
            Ok(Some(Classified::EventStream(request))) => FirstRequest::EventStream(request),
            Ok(Some(Classified::Other)) => FirstRequest::Other(buf.freeze()),
            Ok(None) => FirstRequest::Gone,
            // Like hyper's header timer: the client is dropped.
            Err(_) => {
                metrics::counter!(m::TCP_CONNECTIONS_CLOSED, "reason" => "first_request_timeout").increment(1);
                FirstRequest::Gone
            }
        },
    }
}

/// `None` while more bytes are needed.
fn classify(buf: &[u8]) -> Option<Classified> {
    let seen = buf.len().min(H2_PREFACE.len());
    if buf[..seen] == H2_PREFACE[..seen] {
        return (buf.len() >= H2_PREFACE.len()).then_some(Classified::Other);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            Some(build_request(&head).map_or(Classified::Other, |request| Classified::EventStream(Box::new(request))))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => None,
        // Too long or malformed: hyper answers it (431 or 400).
        _ => Some(Classified::Other),
    }
}

/// The parsed head as a request for the router, or `None` when hyper should decide
/// (HTTP/1.0, a body, an upgrade, a header hyper might treat differently).
fn build_request(head: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let path = head.path?.as_bytes();
    let is_events = path
        .strip_prefix(EVENTS_PATH)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'?');
    if head.method != Some("GET") || !is_events || head.version != Some(1) {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for header in head.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let body_or_upgrade = name == CONTENT_LENGTH && header.value != b"0"
            || name == TRANSFER_ENCODING
            || name == axum::http::header::UPGRADE
            || name == axum::http::header::EXPECT;
        if body_or_upgrade {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    let uri: Uri = std::str::from_utf8(path).ok()?.parse().ok()?;
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some(request)
}

/// Routes the request and writes its response; the connection closes after it.
/// An event stream's subscription may be given the socket to write to directly
/// while this task has nothing to write (see [`crate::stream::direct`]).
pub(super) async fn serve(
    stream: TcpStream,
    request: Box<Request<Body>>,
    router: AppService,
    client: ClientConnection,
) {
    let closed = client.close_token().clone();
    let direct = Arc::new(DirectSocket::new(stream));
    // Boxed: the router's future is large and needed only until the response exists;
    // outside this task's state it does not weigh on every open stream. The request
    // is moved in within a block for the same reason: a local of this function's
    // scope would keep its 240 bytes in the state while the response is written.
    let routed = {
        let mut request = *request;
        request
            .extensions_mut()
            .insert(client.with_direct_socket(Arc::clone(&direct)));
        Box::pin(router.oneshot(request))
    };
    let response = match routed.await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    if let Err(error) = write_response(response, &closed, &direct).await {
        tracing::trace!(%error, "event stream connection ended with an error");
    }
}

async fn write_response(response: Response<Body>, closed: &CancellationToken, direct: &DirectSocket) -> io::Result<()> {
    let stream = direct.socket();
    let (parts, mut body) = response.into_parts();
    let length = http_body::Body::size_hint(&body).exact();
    let mut head = Vec::with_capacity(512);
    let status = parts.status;
    if status == StatusCode::OK {
        head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        write!(
            head,
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )?;
    }
    for (name, value) in &parts.headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING && name != CONNECTION {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
    }
    drop(parts);
    head.extend_from_slice(b"date: ");
    put_http_date(&mut head);
    head.extend_from_slice(b"\r\n");
    match length {
        Some(length) => write!(head, "content-length: {length}\r\nconnection: close\r\n\r\n")?,
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
    }
    if length.is_some() {
        write_all(stream, &head).await?;
        drop(head);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(io::Error::other)?.into_data() {
                write_all(stream, &data).await?;
            }
        }
        return Ok(());
    }
    // Reading only tells when the client goes away; what it sends is discarded, up
    // to a small allowance.
    let mut probe = [0_u8; 64];
    let mut received = 0_usize;
    // Cancelled when the subscriber overflowed its queue: it may have stopped
    // reading, so a write that waits must not wait forever. Polled only while a write
    // waits (a token's poll takes its mutex), and one future for the whole stream.
    let closed = closed.cancelled();
    tokio::pin!(closed);
    // The head goes out with the first chunk (an event stream's preamble is ready at
    // once): one write and one segment for a new subscriber, not two.
    let mut head = Some(head);
    // Driven by hand rather than with `select!`, which polls every branch on every
    // wake-up: here the body is polled until it has nothing, and not once more after
    // a write that did not wait (its waker is still registered), which saves a poll
    // of the whole subscription per wake-up.
    loop {
        loop {
            // What a direct write left unwritten goes before anything else.
            if let Some(rest) = direct.take_remainder() {
                let mut slices: Vec<IoSlice<'_>> = rest.iter().map(|piece| IoSlice::new(piece)).collect();
                unless_closed(write_all_vectored(stream, &mut slices), closed.as_mut()).await?;
            }
            let data = match futures::poll!(body.frame()) {
                Poll::Pending => {
                    if let Some(head) = head.take() {
                        unless_closed(write_all(stream, &head), closed.as_mut()).await?;
                    }
                    break;
                }
                // The last chunk: the response is complete.
                Poll::Ready(None) => {
                    let mut end = head.take().unwrap_or_default();
                    end.extend_from_slice(b"0\r\n\r\n");
                    return unless_closed(write_all(stream, &end), closed.as_mut()).await.map(drop);
                }
                // Without the last chunk the client sees the stream broke.
                Poll::Ready(Some(Err(error))) => {
                    if let Some(head) = head.take() {
                        unless_closed(write_all(stream, &head), closed.as_mut()).await?;
                    }
                    return Err(io::Error::other(error));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            // What else the body has ready goes out in the same chunk and the same
            // vectored write, each piece from its shared bytes: a replay is written
            // without being copied.
            let mut more = Vec::new();
            let mut bytes = data.len();
            let mut after = After::Full;
            while bytes < MAX_GATHERED_BYTES && more.len() < MAX_GATHERED_PIECES {
                match futures::poll!(body.frame()) {
                    Poll::Pending => {
                        after = After::Pending;
                        break;
                    }
                    Poll::Ready(None) => {
                        after = After::End;
                        break;
                    }
                    Poll::Ready(Some(Err(error))) => {
                        after = After::Error(io::Error::other(error));
                        break;
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(next) = frame.into_data() {
                            bytes += next.len();
                            // One allocation for the whole gathering.
                            more.reserve_exact(MAX_GATHERED_PIECES);
                            more.push(next);
                        }
                    }
                }
            }
            let head = head.take().unwrap_or_default();
            let waited = unless_closed(write_chunk(stream, &head, &data, &more), closed.as_mut()).await?;
            drop(more);
            match after {
                // Nothing more now, and the task did not wait since the body said so.
                After::Pending if !waited => break,
                After::Pending | After::Full => {}
                After::End => {
                    return unless_closed(write_all(stream, b"0\r\n\r\n"), closed.as_mut())
                        .await
                        .map(drop);
                }
                After::Error(error) => return Err(error),
            }
        }
        // Everything is written and the body has nothing: deliveries may write
        // to the socket until the body's subscription takes it back.
        std::future::poll_fn(|cx| {
            direct.lend(cx.waker());
            Poll::Ready(())
        })
        .await;
        // The client's side: gone, or sending what an event stream never needs.
        match std::future::poll_fn(|cx| Poll::Ready(poll_read_some(stream, cx, &mut probe))).await {
            Poll::Pending => {}
            Poll::Ready(Ok(0) | Err(_)) => return Ok(()),
            Poll::Ready(Ok(read)) => {
                received += read;
                if received > MAX_BYTES_AFTER_REQUEST {
                    metrics::counter!(m::TCP_CONNECTIONS_CLOSED, "reason" => "unexpected_input").increment(1);
                    return Ok(());
                }
                continue;
            }
        }
        // Both sides have this task's waker: sleep until one of them has something.
        futures::pending!();
    }
}

/// Appends the `date` header's value, formatted once a second per thread (as hyper
/// caches its own): formatting it for every new subscriber was a tenth of the
/// instructions of writing the response head (callgrind).
fn put_http_date(head: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(formatted_at, date)| {
        if *formatted_at != second {
            *date = httpdate::fmt_http_date(now);
            *formatted_at = second;
        }
        head.extend_from_slice(date.as_bytes());
    });
}

/// Most bytes and pieces gathered into one chunk.
const MAX_GATHERED_BYTES: usize = 64 * 1024;
const MAX_GATHERED_PIECES: usize = 64;

/// What the body said after the frames gathered for a write.
enum After {
    /// The gathering is full: the body may have more.
    Full,
    /// Nothing more for now (the body's waker is registered).
    Pending,
    End,
    Error(io::Error),
}

/// `write`, unless `closed` is cancelled while it waits for the socket (a write that
/// completes at once does not look at the token). `Ok(true)` when it had to wait.
async fn unless_closed(
    write: impl Future<Output = io::Result<()>>,
    closed: Pin<&mut WaitForCancellationFuture<'_>>,
) -> io::Result<bool> {
    tokio::pin!(write);
    if let Poll::Ready(result) = futures::poll!(write.as_mut()) {
        return result.map(|()| false);
    }
    tokio::select! {
        biased;
        () = closed => Err(io::ErrorKind::ConnectionAborted.into()),
        result = write => result.map(|()| true),
    }
}

/// `head` (the response head before the first chunk, else empty), then one chunk
/// (`<hex size>\r\n<data…>\r\n`), in one vectored write when the socket takes it.
async fn write_chunk(stream: &TcpStream, head: &[u8], data: &[u8], more: &[Bytes]) -> io::Result<()> {
    let len = data.len() + more.iter().map(Bytes::len).sum::<usize>();
    if len == 0 {
        return write_all(stream, head).await;
    }
    let size_line = SizeLine::new(len);
    if more.is_empty() {
        let mut slices = [
            IoSlice::new(head),
            IoSlice::new(size_line.as_bytes()),
            IoSlice::new(data),
            IoSlice::new(b"\r\n"),
        ];
        return write_all_vectored(stream, &mut slices).await;
    }
    let mut slices = Vec::with_capacity(more.len() + 4);
    slices.push(IoSlice::new(head));
    slices.push(IoSlice::new(size_line.as_bytes()));
    slices.push(IoSlice::new(data));
    slices.extend(more.iter().map(|piece| IoSlice::new(piece)));
    slices.push(IoSlice::new(b"\r\n"));
    write_all_vectored(stream, &mut slices).await
}

/// Writes every slice, as few `writev` calls as the socket allows. Through a shared
/// reference: direct deliveries write to the same socket while it is lent out.
/// Waits with `poll_write_ready`, which keeps the waker in the socket's own slot:
/// the `writable()` future would add its waiter to every connection task's size.
async fn write_all_vectored(stream: &TcpStream, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    std::future::poll_fn(|cx| {
        while !slices.is_empty() {
            match stream.try_write_vectored(slices) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(written) => IoSlice::advance_slices(&mut slices, written),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(error) = std::task::ready!(stream.poll_write_ready(cx)) {
                        return Poll::Ready(Err(error));
                    }
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

async fn write_all(stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    write_all_vectored(stream, &mut [IoSlice::new(bytes)]).await
}

/// Reads what the client sends (`Ok(0)`: it closed its side).
fn poll_read_some(stream: &TcpStream, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    loop {
        match stream.try_read(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::task::ready!(stream.poll_read_ready(cx))?;
            }
            read => return Poll::Ready(read),
        }
    }
}

/// The client's connection with the bytes already read put back in front, for hyper.
#[derive(Debug)]
pub(super) struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl Prefixed {
    pub(super) fn new(prefix: Bytes, inner: TcpStream) -> Self {
        Self { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(head: &[u8]) -> &'static str {
        match classify(head) {
            None => "more",
            Some(Classified::EventStream(_)) => "event stream",
            Some(Classified::Other) => "hyper",
        }
    }

    #[test]
    fn the_date_header_is_an_http_date_of_now() {
        let before = SystemTime::now() - Duration::from_secs(1);
        let mut head = Vec::new();
        put_http_date(&mut head);
        let date = httpdate::parse_http_date(std::str::from_utf8(&head).unwrap()).unwrap();
        assert!(date >= before && date <= SystemTime::now(), "{head:?}");
        // The second time, from the cache (or formatted anew in the next second).
        let mut again = Vec::new();
        put_http_date(&mut again);
        assert!(httpdate::parse_http_date(std::str::from_utf8(&again).unwrap()).unwrap() >= date);
    }

    #[test]
    fn only_plain_http11_event_stream_requests_take_the_lean_path() {
        assert_eq!(
            kind(b"GET /events?stream=a HTTP/1.1\r\nHost: x\r\n\r\n"),
            "event stream"
        );
        assert_eq!(kind(b"GET /events HTTP/1.1\r\n\r\n"), "event stream");
        assert_eq!(kind(b"GET /events?stream=a HTTP/1.1\r\nHost: x\r\n"), "more");
        assert_eq!(kind(b"GET /ev"), "more");
        // Every other request is handed over only once its head is complete, so the
        // first-request deadline covers protocol detection too.
        assert_eq!(kind(b"GET /healthz HTTP/1.1\r\n"), "more");
        assert_eq!(kind(b"GET /healthz HTTP/1.1\r\n\r\n"), "hyper");
        assert_eq!(kind(b"POST /events HTTP/1.1\r\n\r\n"), "hyper");
        assert_eq!(kind(b"P"), "more");
        assert_eq!(kind(b"PRI * HTTP/2.0\r\n"), "more");
        assert_eq!(kind(b"\x16\x03\x01"), "hyper", "not HTTP: hyper answers 400");
        assert_eq!(kind(b"GET /events/x HTTP/1.1\r\n\r\n"), "hyper");
        assert_eq!(kind(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), "hyper");
        assert_eq!(kind(b"GET /events HTTP/1.0\r\n\r\n"), "hyper");
        assert_eq!(kind(b"GET /events HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), "hyper");
        assert_eq!(
            kind(b"GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "hyper"
        );
        assert_eq!(kind(b"GET /events HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"), "hyper");
        assert_eq!(kind(b"GET /events HTTP/1.1\r\nBad Header: x\r\n\r\n"), "hyper");
        let mut huge = b"GET /events HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(kind(&huge), "hyper");
    }
}
