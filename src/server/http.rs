//! The accept loop: HTTP/1.1 and HTTP/2 over `hyper-util`, with the settings
//! `axum::serve` does not expose — a timer, so idle clients cannot hold a
//! connection by sending request headers slowly (slowloris), `TCP_NODELAY` so small
//! event writes leave at once — and graceful draining of open connections.

use std::io;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

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
    let graceful = GracefulShutdown::new();
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
        let closer = ConnectionCloser::default();
        let close = closer.0.clone();
        let service = router.clone().map_request(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(closer.clone());
            request
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::trace!(%error, "connection ended with an error");
                    }
                }
                // Dropping the connection closes the socket.
                () = close.cancelled() => tracing::debug!("connection closed by the gateway"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
