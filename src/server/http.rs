//! The accept loop: HTTP/1.1 and HTTP/2 over `hyper-util`, with what `axum::serve`
//! does not offer:
//! - a deadline for the whole first request head, protocol detection included (a
//!   client that sends one byte, or half an HTTP/2 preface, is dropped after
//!   `server.header_read_timeout`; hyper's own header timer covers later requests);
//! - `server.idle_timeout` for connections with no request in flight (HTTP/2 has no
//!   idle limit of its own) and HTTP/2 keep-alive pings every `heartbeat_interval`;
//! - the [`ConnectionPool`] bound on connections that are not event streams;
//! - accept errors (EMFILE) answered with exponential back-off, never a busy loop;
//! - `TCP_NODELAY` (set on the listener; Linux hands it to every accepted socket),
//!   so small event writes leave at once, and ordered draining.
//!
//! A connection whose first request is a plain `GET /events` is served by the lean
//! path in `event_conn` instead (same router, no hyper buffers per open stream).
//! With `[server.tls]`, every connection first completes its TLS handshake (within
//! the same first-request deadline) and is then served by hyper, HTTP/2 or
//! HTTP/1.1 as ALPN chose.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::event_conn::{self, FirstRequest, Prefixed};
use super::pool::{ConnectionPool, Membership, RequestGuard};
use crate::connection::ClientConnection;
use crate::metrics as m;
use crate::router::AppService;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Time a client has to send a complete request head (the first one including
    /// protocol detection).
    pub header_read_timeout: Duration,
    /// Connections with no request in flight for this long are closed.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings (a peer that does not answer within the
    /// same interval is dropped).
    pub keep_alive_interval: Duration,
    /// Connections that are not event streams this listener keeps at once.
    pub max_other_connections: usize,
}

/// First and last pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting and
/// waits for open connections to finish (the caller bounds that wait).
///
/// # Errors
/// Never for accept errors (logged, then retried after a growing pause); the
/// `Result` is kept for symmetry with other servers.
pub(super) async fn serve(
    listener: TcpListener,
    router: AppService,
    settings: HttpSettings,
    tls: Option<TlsAcceptor>,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.keep_alive_interval)
        .keep_alive_timeout(settings.keep_alive_interval);
    let builder = Arc::new(builder);
    let pool = ConnectionPool::new(settings.max_other_connections);
    let connections = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF.0;
                stream
            }
            Err(error) => {
                // Typically EMFILE: free a descriptor held by an idle connection,
                // then pause (growing) instead of spinning; open connections go on.
                metrics::counter!(m::ACCEPT_ERRORS).increment(1);
                tracing::warn!(%error, pause = ?backoff, "accept failed");
                pool.evict_one();
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Some(membership) = pool.admit() else {
            // Every connection that is not an event stream has a request in flight.
            drop(stream);
            continue;
        };
        if !cfg!(target_os = "linux") {
            // Elsewhere the listener's `TCP_NODELAY` may not be inherited.
            let _ = stream.set_nodelay(true);
        }
        let (router, builder, stop) = (router.clone(), Arc::clone(&builder), stop.clone());
        match &tls {
            None => connections.spawn(serve_connection(stream, router, builder, settings, membership, stop)),
            Some(tls) => connections.spawn(serve_tls_connection(
                stream,
                tls.clone(),
                router,
                builder,
                settings,
                membership,
                stop,
            )),
        };
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// One connection's task: every open event stream is one. Its future is kept small
/// enough that the task (1,920 bytes with tokio's header and trailer, 2026-12-01)
/// stays in jemalloc's 2 KiB size class rather than the 2.5 KiB one: 512 bytes less
/// per open stream, and the class whose slabs `.cargo/config.toml` sizes for reuse
/// after a reconnect storm. Large, short-lived state (the router's future, hyper's
/// connection) is boxed for that reason.
async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    router: AppService,
    builder: Arc<Builder<TokioExecutor>>,
    settings: HttpSettings,
    mut membership: Membership,
    stop: CancellationToken,
) {
    let client = ClientConnection::default();
    let evicted = membership.activity().evicted().clone();
    let first = tokio::select! {
        () = evicted.cancelled() => return,
        first = event_conn::read_first_request(&mut stream, settings.header_read_timeout, &stop) => first,
    };
    match first {
        FirstRequest::Gone => {}
        FirstRequest::EventStream(request) => {
            membership.leave();
            event_conn::serve(stream, request, router, client).await;
        }
        FirstRequest::Other(read) => {
            // Boxed: hyper's connection state would otherwise size every connection
            // task, event streams included.
            let io = Prefixed::new(read, stream);
            Box::pin(serve_with_hyper(
                io, router, &builder, settings, membership, client, stop,
            ))
            .await;
        }
    }
}

/// A TLS connection: the handshake within `header_read_timeout`, then hyper.
async fn serve_tls_connection(
    stream: tokio::net::TcpStream,
    tls: TlsAcceptor,
    router: AppService,
    builder: Arc<Builder<TokioExecutor>>,
    settings: HttpSettings,
    membership: Membership,
    stop: CancellationToken,
) {
    let evicted = membership.activity().evicted().clone();
    let handshake = tokio::time::timeout(settings.header_read_timeout, tls.accept(stream));
    let io = tokio::select! {
        () = evicted.cancelled() => return,
        () = stop.cancelled() => return,
        handshake = handshake => match handshake {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                metrics::counter!(m::TCP_CONNECTIONS_CLOSED, "reason" => "first_request_timeout").increment(1);
                return;
            }
        },
    };
    Box::pin(serve_with_hyper(
        io,
        router,
        &builder,
        settings,
        membership,
        ClientConnection::default(),
        stop,
    ))
    .await;
}

/// Any connection whose first request is not a plain event-stream request.
async fn serve_with_hyper<I>(
    io: I,
    router: AppService,
    builder: &Builder<TokioExecutor>,
    settings: HttpSettings,
    mut membership: Membership,
    client: ClientConnection,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(membership.activity());
    let service = {
        let (activity, client) = (Arc::clone(&activity), client.clone());
        tower::service_fn(move |request: hyper::Request<Incoming>| {
            let guard = activity.begin_request();
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(client.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, _guard: guard })))
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    // An HTTP/2 graceful close waits for the peer to answer a ping; a silent peer
    // gets `header_read_timeout` to do so, then the socket is dropped.
    let close_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_deadline);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::trace!(%error, "connection ended with an error");
                }
                return;
            }
            // Dropping the connection closes the socket.
            () = client.close_token().cancelled() => return,
            () = activity.evicted().cancelled() => return,
            () = client.event_stream_token().cancelled(), if !membership.has_left() => membership.leave(),
            () = &mut close_deadline, if closing => return,
            () = stop.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            () = activity.idle_for(settings.idle_timeout), if !closing => {
                closing = true;
                metrics::counter!(m::TCP_CONNECTIONS_CLOSED, "reason" => "idle").increment(1);
                connection.as_mut().graceful_shutdown();
                close_deadline.as_mut().reset(tokio::time::Instant::now() + settings.header_read_timeout);
            }
        }
    }
}

/// A response body that ends its request's activity when dropped.
struct Tracked {
    body: Body,
    _guard: RequestGuard,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked").finish_non_exhaustive()
    }
}
