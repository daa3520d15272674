//! Shutdown: the OS-signal future, the draining flag and the cancellation token.
//!
//! Order (driven by `server::run` through `Node::begin_shutdown`): set draining
//! (`/readyz` fails, publishes and new subscriptions get 503) → cancel the token
//! (accept loops and background tasks stop) and end every open event stream through
//! its queue (graceful shutdown would otherwise wait on them forever) → let
//! in-flight requests finish under `server.shutdown_grace` → close the backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Shared shutdown state; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    draining: Arc<AtomicBool>,
    streams: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the node as draining and cancels the token (the node then ends its
    /// event streams).
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
        self.streams.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Cancelled once shutdown has begun; accept loops and background tasks select
    /// on it.
    pub fn token(&self) -> &CancellationToken {
        &self.streams
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn os_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}
