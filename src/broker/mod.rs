//! Brokers: where ids are assigned, history is kept and events move between nodes
//! (`[backend]` in the configuration). A broker knows nothing of subscribers,
//! limits or gap notices; the node ([`crate::node`]) does that once for every
//! broker. What a broker must do:
//!
//! - **publish**: give every event of a batch an id (unique and strictly increasing
//!   across all streams and nodes, never reused), append it to its stream's history,
//!   all or nothing, and push every `(stream, frame)` into the node's sink (the
//!   [`StreamRegistry`] it was started with) in id order — the memory broker before
//!   it returns, the Redis broker through every node's listener;
//! - **listen**: make sure events of some names and patterns published from now on
//!   reach this node's sink (Redis subscribes their channels and patterns and waits
//!   for the confirmation);
//! - **read**: one consistent read of the history of the streams some names and
//!   patterns cover, after an id, with the facts that prove it complete
//!   ([`HistoryRead`]); **latest**: the newest event of each; **position**: the
//!   newest id issued and what one stream holds. Together with listen-before-read
//!   this makes the replay/live seam exact: every event is in the read or arrives
//!   live afterwards (the subscription drops what arrives twice, by id);
//! - after its live feed was interrupted, catch up through [`history::catch_up`];
//! - **revoke**: keep a revocation as long as it is in force where the broker keeps
//!   history (the disk store, Redis) and carry it to every other node, which put it
//!   in force through the [`Revocations`] they were started with (and on start, the
//!   ones stored).
//!
//! [`Revocations`]: crate::revocation::Revocations
//!
//! Kinds: [`LocalBroker`] (`memory`, and `disk` with its journal in [`disk`]) and
//! [`RedisBroker`]. A new backend is one file implementing [`Broker`] and one arm in
//! [`start`]; the
//! conformance suite (`tests/it/conformance.rs`) takes it with one line.
//!
//! [`StreamRegistry`]: crate::stream::StreamRegistry
//! [`history::catch_up`]: crate::history::catch_up

pub mod disk;
pub mod held;
pub mod local;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{BackendKind, Config};
use crate::event::{EventId, NewEvent};
use crate::frame::Frame;
use crate::history::HistoryRead;
use crate::idempotency::IdempotencyKey;
use crate::revocation::{Revocation, Revocations};
use crate::stream::{StreamName, StreamPattern, StreamRegistry};

pub use local::LocalBroker;
pub use redis::RedisBroker;

/// Why a broker could not do what was asked. Never silently: a publish that fails
/// is answered with an error and, unless the outcome is unknown, nothing is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker holds history of as many streams as `limits.max_streams` allows.
    #[error("stream limit reached")]
    StreamLimit,
    /// The broker cannot be reached or refused the operation: nothing was stored.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request reached the broker but no answer came in time: the outcome is
    /// unknown (the events may be stored).
    #[error("backend timed out: {0}")]
    Timeout(String),
    /// The broker cannot start (its settings or its data are unusable).
    #[error("cannot start the backend: {0}")]
    Startup(String),
}

impl BrokerError {
    /// Stable machine-readable reason, for error bodies and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::StreamLimit => "stream_limit",
            Self::Unavailable(_) | Self::Startup(_) => "backend_unavailable",
            Self::Timeout(_) => "backend_timeout",
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored now, with these ids in request order.
    New(Vec<EventId>),
    /// The idempotency key was used before with the same request: its ids again;
    /// nothing stored.
    Repeated(Vec<EventId>),
    /// The key was used before with another request: nothing stored.
    KeyConflict,
    /// The first request with the key is still being stored: nothing stored.
    KeyInProgress,
}

/// Where a stream stands (`GET /streams/NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The newest id the deployment had issued: a client that resumes from it gets
    /// exactly what was published afterwards.
    pub head: EventId,
    /// The newest event of the stream still held.
    pub last_id: Option<EventId>,
    /// Events of the stream held.
    pub buffered: usize,
}

/// Ids, history and movement of events.
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Assigns ids and appends every event to its stream's history, all or nothing;
    /// every event reaches the sink in id order. With `key`, a request seen before
    /// is answered from what it was first given (remembered with the events, so on
    /// Redis a retry on any node finds it). When this returns [`Published::New`],
    /// the events are in the history, with the ids in request order.
    ///
    /// # Errors
    /// [`BrokerError::Timeout`] when the outcome is unknown; any other error means
    /// nothing was stored.
    async fn publish(&self, events: Vec<NewEvent>, key: Option<&IdempotencyKey>) -> Result<Published, BrokerError>;

    /// Makes sure that events of the streams `patterns` name or match (existing and
    /// future ones) published after this returns reach this node's sink.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when that cannot be promised now.
    async fn listen(&self, patterns: &[StreamPattern]) -> Result<(), BrokerError>;

    /// Reads the history of the streams `patterns` name or match after `after` in
    /// one consistent step, with what proves it complete (streams the broker holds
    /// nothing of included, through [`HistoryRead::others_known_after`]). An
    /// `after` above every id issued was never given out: everything held is read
    /// (the caller sees that from [`HistoryRead::last_issued`]).
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when history cannot be read now.
    async fn read(&self, patterns: &[StreamPattern], after: EventId) -> Result<HistoryRead, BrokerError>;

    /// The newest held event of each stream `patterns` name or match, read in one
    /// consistent step.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when history cannot be read now.
    async fn latest(&self, patterns: &[StreamPattern]) -> Result<Vec<Arc<Frame>>, BrokerError>;

    /// Where `stream` stands now.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when history cannot be read now.
    async fn position(&self, stream: &StreamName) -> Result<Position, BrokerError>;

    /// Keeps `revocation` until it expires (the memory broker: nowhere) and carries
    /// it to every other node of the deployment, which put it in force.
    ///
    /// # Errors
    /// [`BrokerError`] when it could not be stored or sent.
    async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError>;

    /// Whether the broker can take publishes now.
    fn is_ready(&self) -> bool;

    /// Stops background work; called once at shutdown.
    async fn close(&self);
}

/// Starts the broker `[backend]` configures, feeding `registry` with events and
/// `revocations` with what other nodes (or the store) revoked.
///
/// # Errors
/// [`BrokerError`] when its settings are unusable.
pub fn start(
    config: &Config,
    registry: Arc<StreamRegistry>,
    revocations: Arc<Revocations>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    Ok(match config.backend.kind {
        BackendKind::Memory => LocalBroker::memory(config, registry),
        BackendKind::Disk => LocalBroker::disk(config, registry, &revocations)?,
        BackendKind::Redis => RedisBroker::start(config, registry, revocations)?,
    })
}
