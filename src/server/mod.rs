//! `run`: build the state, serve the router, shut down in order. Used by `main` and
//! by the integration tests, so tests exercise exactly the production wiring.
//! `http` holds the accept loop.

mod event_conn;
mod http;

pub use http::HttpSettings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};

use crate::app::{self, AppState};
use crate::auth::keys::hs256_secret;
use crate::auth::mint::SigningKey;
use crate::auth::webhook::{WebhookError, Webhooks};
use crate::auth::{KeyError, Verifier};
use crate::backend::{Backend, BackendError, MemoryBackend, RedisBackend};
use crate::config::Algorithm;
use crate::config::{BackendKind, Config};
use crate::demo;
use crate::limits::Limiter;
use crate::metrics;
use crate::shutdown::Shutdown;
use crate::stream::StreamRegistry;
use crate::subscription::ConnectionLimiter;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Listeners {
    pub main: TcpListener,
    /// Set when `/metrics` is served on its own address.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds `server.addr` and, if configured, `metrics.addr`.
    ///
    /// # Errors
    /// [`ServerError::Bind`] naming the address.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let main = bind(config.server.addr)?;
        let metrics = match config.metrics.addr {
            Some(addr) if config.metrics.enabled => Some(bind(addr)?),
            _ => None,
        };
        Ok(Self { main, metrics })
    }
}

/// Pending-connection queue of the listening sockets. Tokio's default (1024) makes a
/// reconnect storm of thousands of clients overflow it, and every dropped SYN costs
/// that client a one-second retransmit; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 8192;

fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        // As `TcpListener::bind` does: rebinding right after a restart must not fail
        // on the old process's TIME_WAIT connections.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| ServerError::Bind { addr, source })
}

/// Serves until `signal` resolves, then shuts down in the documented order and
/// returns within `server.shutdown_grace`.
///
/// # Errors
/// [`ServerError`] when keys cannot be loaded or the listener fails.
pub async fn run(
    config: Config,
    listeners: Listeners,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = build_state(config)?;
    let shutdown = state.shutdown.clone();
    let grace = state.config.server.shutdown_grace;

    let upkeep = tokio::spawn(upkeep_periodically(state.clone()));
    if state.config.demo.publisher {
        tokio::spawn(demo::publish_samples(
            state.backend.clone(),
            state.config.demo.publish_interval,
            shutdown.token().clone(),
        ));
    }
    let settings = HttpSettings {
        header_read_timeout: state.config.server.header_read_timeout,
    };
    let metrics_server = listeners.metrics.map(|listener| {
        let router = app::metrics_router(state.clone());
        tokio::spawn(http::serve(listener, router, settings, shutdown.token().clone()))
    });
    // Draining first (readyz fails, publishes get 503), ending every event stream
    // (the token the subscriptions select on) and stopping the accept loops.
    let on_signal = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            signal.await;
            shutdown.begin();
        })
    };
    let serve = http::serve(
        listeners.main,
        app::router(state.clone()),
        settings,
        shutdown.token().clone(),
    );
    let deadline = async {
        shutdown.token().cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = serve => result?,
        () = deadline => tracing::warn!(?grace, "shutdown grace elapsed; abandoning open connections"),
    }
    on_signal.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    upkeep.abort();
    state.backend.close().await;
    tracing::info!("shut down");
    Ok(())
}

fn build_state(config: Config) -> Result<AppState, ServerError> {
    let verifier = Verifier::from_config(&config.auth)?;
    let webhooks = Webhooks::from_config(&config.webhooks.hooks)?;
    let demo_signer = match hs256_secret(&config.auth)? {
        Some(secret) if config.demo.enabled && config.auth.algorithms.contains(&Algorithm::HS256) => {
            Some(Arc::new(SigningKey::hs256(secret.expose())))
        }
        _ => None,
    };
    let registry = Arc::new(StreamRegistry::new(
        config.limits.max_streams,
        config.limits.subscriber_queue,
    ));
    let backend: Arc<dyn Backend> = match config.backend.kind {
        BackendKind::Memory => MemoryBackend::start(&config, Arc::clone(&registry)),
        BackendKind::Redis => RedisBackend::start(&config, Arc::clone(&registry))?,
    };
    Ok(AppState {
        connections: ConnectionLimiter::new(config.limits.max_connections),
        limiter: Limiter::from_config(&config.limits),
        config: Arc::new(config),
        verifier: Arc::new(verifier),
        backend,
        registry,
        shutdown: Shutdown::new(),
        metrics: metrics::install_recorder(),
        webhooks: Arc::new(webhooks),
        demo_signer,
    })
}

async fn upkeep_periodically(state: AppState) {
    let mut ticks = tokio::time::interval(metrics::UPKEEP_INTERVAL);
    loop {
        ticks.tick().await;
        metrics::run_upkeep(&state.metrics, &state);
        state.limiter.retain_recent();
    }
}
