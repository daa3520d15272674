//! The accept loop: HTTP/1.1 and HTTP/2 over `hyper-util`, with the settings
//! `axum::serve` does not expose — a timer, so idle clients cannot hold a
//! connection by sending request headers slowly (slowloris), `TCP_NODELAY` so small
//! event writes leave at once — and graceful draining of open connections. A
//! connection whose first request is a plain `GET /events` is served by the lean
//! path in `event_conn` instead (same router, no hyper buffers per open stream).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::event_conn::{self, FirstRequest, Prefixed};
use crate::app::ConnectionCloser;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    /// Time a client has to send complete request headers.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled, then stops accepting and
/// waits for open connections to finish (the caller bounds that wait).
///
/// # Errors
/// Never for accept errors (logged, then retried after a pause); the `Result` is
/// kept for symmetry with other servers.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: HttpSettings,
    stop: CancellationToken,
) -> io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // Event streams served outside hyper are waited for here.
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Typically EMFILE: back off instead of spinning; open connections go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (router, builder, watcher, stop) = (router.clone(), Arc::clone(&builder), graceful.watcher(), stop.clone());
        connections.spawn(async move {
            let mut stream = stream;
            let closer = ConnectionCloser::default();
            match event_conn::read_first_request(&mut stream, settings.header_read_timeout, &stop).await {
                FirstRequest::Gone => {}
                FirstRequest::EventStream(request) => event_conn::serve(stream, request, router, closer).await,
                FirstRequest::Other(read) => {
                    // Boxed: hyper's connection state would otherwise size every
                    // connection task, event streams included.
                    Box::pin(serve_with_hyper(
                        Prefixed::new(read, stream),
                        router,
                        &builder,
                        watcher,
                        closer,
                    ))
                    .await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Any connection whose first request is not a plain event-stream request.
async fn serve_with_hyper(
    io: Prefixed,
    router: Router,
    builder: &Builder<TokioExecutor>,
    watcher: Watcher,
    closer: ConnectionCloser,
) {
    let close = closer.0.clone();
    let service = router.map_request(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(closer.clone());
        request
    });
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::trace!(%error, "connection ended with an error");
            }
        }
        // Dropping the connection closes the socket.
        () = close.cancelled() => tracing::debug!("connection closed by the gateway"),
    }
}
