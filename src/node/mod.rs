//! The node: what every way in and every broker meet through.
//!
//! **Publish** ([`Node::publish`]): draining check, permission, batch and event
//! sizes, the publisher's rate limit, replay keys, ids and history through the
//! broker, metrics (`source` label), pacing. HTTP, webhooks and the demo publisher
//! call it; so will every other ingest path.
//!
//! **Subscribe** ([`Node::subscribe`]): draining check, permission (names and
//! patterns), the subject's and the node's slots, attach a bounded queue to the
//! local registry, make the broker listen, read history, decide gaps
//! ([`crate::history`]) or read the latest events, and hand back a
//! [`Subscription`](crate::subscription::Subscription) whose seam drops what
//! arrives twice. [`Node::position`] answers where a stream stands, for
//! snapshot-then-subscribe.
//!
//! **Revoke** ([`Node::revoke`]): stores a revocation through the broker (which
//! carries it to the other nodes) and puts it in force here, ending the live
//! streams it refuses ([`crate::revocation`]).
//!
//! The node holds the registry (local fan-out), the broker, the limiters and the
//! shutdown state. It knows nothing of HTTP: its errors are typed and mapped to
//! responses in `error.rs`.

mod publish;
mod revoke;
mod subscribe;

pub use publish::{Allowed, Publication, PublishError, Publisher, Source};
pub use revoke::Revoked;
pub use subscribe::{SubscribeError, SubscribeRequest};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::broker::{self, Broker, BrokerError};
use crate::config::Config;
use crate::limits::{ConnectionLimiter, Limiter, SubjectLimits};
use crate::metrics as m;
use crate::revocation::Revocations;
use crate::shutdown::Shutdown;
use crate::stream::{Ending, StreamRegistry};
use crate::subscription::StreamTiming;

/// One gateway node; shared by every handler and task through an `Arc`.
#[derive(Debug)]
pub struct Node {
    broker: Arc<dyn Broker>,
    registry: Arc<StreamRegistry>,
    limiter: Arc<Limiter>,
    connections: Arc<ConnectionLimiter>,
    revocations: Arc<Revocations>,
    shutdown: Shutdown,
    settings: Settings,
}

/// What the node needs of the configuration on its paths.
#[derive(Debug, Clone, Copy)]
struct Settings {
    max_event_bytes: usize,
    max_batch_events: usize,
    /// `limits.firehose`: whether `*` may be subscribed to.
    firehose: bool,
    /// `auth.expiry_warning`; zero turns it off.
    expiry_warning: Duration,
    /// `auth.revocation_ttl`.
    revocation_ttl: Duration,
    timing: StreamTiming,
}

impl Node {
    /// Builds the registry, starts the broker `[backend]` configures and sets the
    /// limits; `subject_limits` lowers the limits of particular subjects (the demo
    /// page's shared token).
    ///
    /// # Errors
    /// [`BrokerError`] when the broker cannot start.
    pub fn start(config: &Config, subject_limits: HashMap<String, SubjectLimits>) -> Result<Arc<Self>, BrokerError> {
        let limits = &config.limits;
        let registry = Arc::new(StreamRegistry::new(limits.max_streams, limits.subscriber_queue));
        let revocations = Revocations::new();
        let broker = broker::start(config, Arc::clone(&registry), Arc::clone(&revocations))?;
        Ok(Arc::new(Self {
            broker,
            registry,
            limiter: Limiter::with_overrides(limits, subject_limits),
            connections: ConnectionLimiter::new(limits.max_connections),
            revocations,
            shutdown: Shutdown::new(),
            settings: Settings {
                max_event_bytes: limits.max_event_bytes,
                max_batch_events: limits.max_batch_events,
                firehose: limits.firehose,
                expiry_warning: config.auth.expiry_warning,
                revocation_ttl: config.auth.revocation_ttl,
                timing: StreamTiming {
                    heartbeat: config.server.heartbeat_interval,
                    retry: config.server.retry,
                    retry_jitter: config.server.retry_jitter,
                },
            },
        }))
    }

    /// The node's shutdown state (draining flag, stream cancellation).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Starts shutting down: draining (publishes and new subscriptions refused), the
    /// shutdown token cancelled, and every open subscription ended.
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
        self.registry.end_all(Ending::Shutdown);
    }

    /// Whether the node is shutting down (publishes and new subscriptions refused).
    pub fn is_draining(&self) -> bool {
        self.shutdown.is_draining()
    }

    /// Whether the broker can take publishes now.
    pub fn broker_is_ready(&self) -> bool {
        self.broker.is_ready()
    }

    /// The revocations in force on this node (checked when a token is presented).
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// Periodic housekeeping: gauges, the trimming of rate-limit state and of
    /// revocations past their time.
    pub fn upkeep(&self) {
        metrics::gauge!(m::STREAMS_SUBSCRIBED).set(self.registry.len() as f64);
        self.limiter.retain_recent();
        self.revocations.prune();
    }

    /// Stops the broker's background work; called once at shutdown.
    pub async fn close(&self) {
        self.broker.close().await;
    }
}
