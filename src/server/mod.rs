//! `run`: build the state, serve the router, shut down in order. Used by `main` and
//! by the integration tests, so tests exercise exactly the production wiring.
//! `http` holds the accept loop.

mod event_conn;
mod http;
mod pool;
pub mod tls;

pub use http::HttpSettings;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use crate::auth::keys::hs256_secret;
use crate::auth::mint::SigningKey;
use crate::auth::webhook::{WebhookError, Webhooks};
use crate::auth::{KeyError, Verifier};
use crate::broker::BrokerError;
use crate::config::{Algorithm, Config};
use crate::demo::{self, DEMO_STREAMS, DEMO_SUBJECT};
use crate::ingest::{self, IngestStatus};
use crate::limits::{BodyBudget, SubjectLimits};
use crate::metrics;
use crate::node::Node;
use crate::router;
use crate::state::{AppState, Handles};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Webhooks(#[from] WebhookError),
    #[error(transparent)]
    Backend(#[from] BrokerError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// The sockets a server listens on.
#[derive(Debug)]
pub struct Listeners {
    pub main: TcpListener,
    /// Set when `/metrics` is served on its own address.
    pub metrics: Option<TcpListener>,
    /// Set when `[ingest.udp]` is enabled.
    pub udp: Option<UdpSocket>,
}

impl Listeners {
    /// Binds `server.addr` and, if configured, `metrics.addr` and `ingest.udp.addr`.
    ///
    /// # Errors
    /// [`ServerError::Bind`] naming the address.
    pub async fn bind(config: &Config) -> Result<Self, ServerError> {
        let main = bind(config.server.addr)?;
        let metrics = match config.metrics.addr {
            Some(addr) if config.metrics.enabled => Some(bind(addr)?),
            _ => None,
        };
        Ok(Self {
            main,
            metrics,
            udp: bind_udp(config)?,
        })
    }
}

/// Binds `ingest.udp.addr` when UDP ingest is enabled.
///
/// # Errors
/// [`ServerError::Bind`] naming the address.
pub fn bind_udp(config: &Config) -> Result<Option<UdpSocket>, ServerError> {
    let udp = &config.ingest.udp;
    if !udp.enabled {
        return Ok(None);
    }
    ingest::udp::bind(udp)
        .map(Some)
        .map_err(|source| ServerError::Bind { addr: udp.addr, source })
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
        // Small event writes leave at once. On Linux, accepted sockets inherit it
        // from the listener, which saves a system call per connection.
        socket.set_nodelay(true)?;
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
    let shutdown = state.node.shutdown().clone();
    let grace = state.config.server.shutdown_grace;

    if let Some(jwks) = state.verifier.jwks() {
        // The first fetch is awaited (bounded by its timeout), so tokens are
        // verifiable when the listener serves; a failure is logged and retried.
        jwks.start(shutdown.token().clone()).await;
    }
    let upkeep = tokio::spawn(upkeep_periodically(state.clone()));
    if let Some(socket) = listeners.udp {
        let (node, config, stop) = (state.node.clone(), state.config.clone(), shutdown.token().clone());
        tokio::spawn(async move {
            ingest::udp::listen(socket, node, &config.ingest.udp, config.limits.max_body_bytes, stop).await;
        });
    }
    if state.config.ingest.amqp.enabled {
        let limits = ingest::amqp::AmqpLimits {
            max_body_bytes: state.config.limits.max_body_bytes,
            idempotency_window: state.config.publish.idempotency_window,
        };
        tokio::spawn(ingest::amqp::consume(
            state.node.clone(),
            state.config.ingest.amqp.clone(),
            limits,
            state.ingest.clone(),
            shutdown.token().clone(),
        ));
    }
    if state.config.demo.publisher {
        tokio::spawn(demo::publish_samples(
            state.node.clone(),
            state.config.demo.publish_interval,
            shutdown.token().clone(),
        ));
    }
    let settings = http_settings(&state.config);
    let metrics_server = listeners.metrics.map(|listener| {
        let router = router::metrics_router(state.clone());
        tokio::spawn(http::serve(listener, router, settings, None, shutdown.token().clone()))
    });
    // Draining first (readyz fails, publishes get 503), ending every event stream
    // and stopping the accept loops.
    let on_signal = {
        let node = Arc::clone(&state.node);
        tokio::spawn(async move {
            signal.await;
            node.begin_shutdown();
        })
    };
    let acceptor = match state.config.server.tls.enabled() {
        true => {
            let certificates = tls::Certificates::load(&state.config.server.tls)?;
            tokio::spawn(reload_on_sighup(Arc::clone(&certificates), shutdown.token().clone()));
            Some(certificates.acceptor())
        }
        false => None,
    };
    // Spawned, not awaited here: `run` is the runtime's `block_on` future, which
    // tokio polls on the calling thread, not on a worker. An accept loop there costs
    // two thread switches per new connection (the worker wakes it, it hands the
    // connection back to the worker); measured with `bench/compare-nchan.sh idle`.
    let mut serve = tokio::spawn(http::serve(
        listeners.main,
        router::router(state.clone()),
        settings,
        acceptor,
        shutdown.token().clone(),
    ));
    let deadline = async {
        shutdown.token().cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = &mut serve => result.map_err(std::io::Error::other)??,
        () = deadline => {
            serve.abort();
            tracing::warn!(?grace, "shutdown grace elapsed; abandoning open connections");
        }
    }
    on_signal.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    upkeep.abort();
    state.node.close().await;
    tracing::info!("shut down");
    Ok(())
}

/// Reads the certificate and key again on every SIGHUP (open connections go on).
async fn reload_on_sighup(certificates: Arc<tls::Certificates>, stop: tokio_util::sync::CancellationToken) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; certificates will not be reloaded");
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            signal = hangups.recv() => {
                if signal.is_none() {
                    return;
                }
                match certificates.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                    Err(error) => tracing::error!(%error, "SIGHUP: keeping the certificate in use"),
                }
            }
        }
    }
}

fn http_settings(config: &Config) -> HttpSettings {
    HttpSettings {
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        keep_alive_interval: config.server.heartbeat_interval,
        max_other_connections: other_connection_bound(config),
    }
}

/// Descriptors kept free of client connections (listeners, Redis, files, logs).
const RESERVED_FDS: u64 = 64;

/// `server.max_other_connections`, capped at half the open-file limit so that
/// connections that are not event streams can never use every descriptor. Warns
/// when the limit cannot hold every configured connection.
fn other_connection_bound(config: &Config) -> usize {
    let configured = config.server.max_other_connections;
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return configured;
    };
    let wanted = (config.limits.max_connections + configured) as u64 + RESERVED_FDS;
    if soft < wanted {
        tracing::warn!(
            open_file_limit = soft,
            wanted,
            "the open-file limit is below limits.max_connections + server.max_other_connections + {RESERVED_FDS}; \
             raise it (ulimit -n, LimitNOFILE=) or lower those limits"
        );
    }
    configured.min(usize::try_from(soft / 2).unwrap_or(usize::MAX)).max(1)
}

/// Raises the soft open-file limit to the hard limit (every connection is a
/// descriptor) and returns the new soft limit.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            None
        }
    }
}

fn build_state(config: Config) -> Result<AppState, ServerError> {
    // First: what the node reports while starting (the store's size) is recorded.
    let metrics = metrics::install_recorder();
    let verifier = Verifier::from_config(&config.auth)?;
    let webhooks = Webhooks::from_config(&config.webhooks.hooks)?;
    let demo_signer = match hs256_secret(&config.auth)? {
        Some(secret) if config.demo.enabled && config.auth.algorithms.contains(&Algorithm::HS256) => {
            Some(Arc::new(SigningKey::hs256(secret.expose())))
        }
        _ => None,
    };
    // Every visitor of the demo page shares its token: keep what it can hold small.
    let demo_limits = SubjectLimits {
        max_connections: config.demo.max_connections,
        max_streams: DEMO_STREAMS.len() + 1,
    };
    let node = Node::start(&config, HashMap::from([(format!("sub:{DEMO_SUBJECT}"), demo_limits)]))?;
    Ok(AppState::new(Handles {
        node,
        publish_bodies: Arc::new(BodyBudget::new(
            config.limits.max_body_bytes_in_flight,
            "limits.max_body_bytes_in_flight",
        )),
        unverified_bodies: Arc::new(BodyBudget::new(
            config.limits.max_unverified_body_bytes_in_flight,
            "limits.max_unverified_body_bytes_in_flight",
        )),
        ingest: IngestStatus::new(config.ingest.amqp.enabled && config.ingest.amqp.gates_readiness),
        config: Arc::new(config),
        verifier: Arc::new(verifier),
        metrics,
        webhooks: Arc::new(webhooks),
        demo_signer,
    }))
}

async fn upkeep_periodically(state: AppState) {
    let mut ticks = tokio::time::interval(metrics::UPKEEP_INTERVAL);
    loop {
        ticks.tick().await;
        state.node.upkeep();
        state.metrics.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accept loop relies on this to skip `set_nodelay` per connection.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
