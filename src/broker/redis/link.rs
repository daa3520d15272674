//! How a node reaches Redis: the current master (given directly, or found through
//! Sentinel), and the command connections to it.
//!
//! Command connections do not reconnect by themselves (plain multiplexed
//! connections, not `ConnectionManager`): after any failure they are dropped, and
//! the listener connects again, to whichever instance is master by then, and
//! verifies it ([`super::verify`]) before the node publishes or reads again. So a
//! node never writes to a restarted or newly promoted Redis whose data it has not
//! checked, and never keeps talking to a demoted master.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use crate::broker::BrokerError;
use crate::config::RedisConfig;

/// Where the master is.
pub(super) enum Endpoint {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(_) => f.write_str("Endpoint::Direct"),
            Self::Sentinel(_) => f.write_str("Endpoint::Sentinel"),
        }
    }
}

impl Endpoint {
    /// The endpoint `[backend.redis]` describes.
    ///
    /// # Errors
    /// [`BrokerError::Startup`] when the URL or a sentinel address cannot be read.
    pub(super) fn from_config(config: &RedisConfig) -> Result<Self, BrokerError> {
        let invalid_url = || BrokerError::Startup("backend.redis.url is not a valid Redis URL".to_owned());
        if config.sentinels.is_empty() {
            let client = redis::Client::open(config.url.expose()).map_err(|_| invalid_url())?;
            return Ok(Self::Direct(client));
        }
        // The URL says how to talk to the master (password, database, TLS); the
        // sentinels say where it is.
        let master = config.url.expose().into_connection_info().map_err(|_| invalid_url())?;
        let tls = config.url.expose().starts_with("rediss://");
        let sentinel_auth = config
            .sentinel_password
            .as_ref()
            .map(|password| {
                format!(
                    ":{}@",
                    percent_encoding::utf8_percent_encode(password.expose(), percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .unwrap_or_default();
        let scheme = if tls { "rediss" } else { "redis" };
        let sentinels: Vec<String> = config
            .sentinels
            .iter()
            .map(|address| format!("{scheme}://{sentinel_auth}{address}"))
            .collect();
        let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(master.redis_settings().clone());
        if tls {
            node = node.set_tls_mode(redis::TlsMode::Secure);
        }
        let client = SentinelClient::build(
            sentinels,
            config.master_name.as_str(),
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(|_| BrokerError::Startup("backend.redis.sentinels holds an address that cannot be read".to_owned()))?;
        Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
    }

    /// A client for the current master (asking the sentinels, which check its role).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when no master is known.
    pub(super) async fn master(&self) -> Result<redis::Client, BrokerError> {
        match self {
            Self::Direct(client) => Ok(client.clone()),
            Self::Sentinel(sentinel) => sentinel
                .lock()
                .await
                .async_get_client()
                .await
                .map_err(|error| BrokerError::Unavailable(format!("no master known to the sentinels: {error}"))),
        }
    }
}

/// Opens one command connection to `client` with the node's timeouts.
///
/// # Errors
/// [`BrokerError::Unavailable`] when it cannot be opened in time.
pub(super) async fn connect(
    client: &redis::Client,
    config: &RedisConfig,
) -> Result<MultiplexedConnection, BrokerError> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&settings)
        .await
        .map_err(|error| BrokerError::Unavailable(format!("cannot connect to Redis: {error}")))
}

/// The verified command connections; empty while none is.
#[derive(Debug, Default)]
pub(super) struct Connections {
    connections: Mutex<Vec<MultiplexedConnection>>,
    next: AtomicUsize,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Vec<MultiplexedConnection>> {
        // Replaced or cleared whole: a panic cannot leave the list half-written.
        self.connections.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One of the connections, round-robin.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when there is none (Redis not verified).
    pub(super) fn get(&self) -> Result<MultiplexedConnection, BrokerError> {
        let connections = self.lock();
        if connections.is_empty() {
            return Err(BrokerError::Unavailable("not connected to a verified Redis".to_owned()));
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % connections.len();
        Ok(connections[index].clone())
    }

    pub(super) fn set(&self, connections: Vec<MultiplexedConnection>) {
        *self.lock() = connections;
    }

    pub(super) fn clear(&self) {
        self.lock().clear();
    }
}
