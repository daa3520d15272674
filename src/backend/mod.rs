//! The backend boundary: where ids are assigned, history is stored and events move
//! between nodes. Handlers and subscriptions only see `Arc<dyn Backend>`.
//!
//! Every backend feeds this node's [`StreamRegistry`] in id order, so each
//! subscriber queue receives events in increasing id order across all its streams.
//! That is what lets one `Last-Event-ID` resume a multi-stream connection.
//!
//! [`StreamRegistry`]: crate::stream::StreamRegistry

pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;

use crate::event::{EventId, Frame, NewEvent};
use crate::stream::{RegistryError, StreamName, SubscriberQueue};

pub use memory::MemoryBackend;
pub use redis::RedisBackend;

/// Why a backend could not do what was asked. Never silently: publishes that fail
/// are answered `503` and nothing of the request is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The node holds as many streams as `limits.max_streams` allows.
    #[error("stream limit reached")]
    StreamLimit,
    /// The backend cannot be reached or refused the operation: nothing was stored.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request reached the backend but no answer came in time: the outcome is
    /// unknown (the events may be stored).
    #[error("backend timed out: {0}")]
    Timeout(String),
}

impl From<RegistryError> for BackendError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::StreamLimit => Self::StreamLimit,
        }
    }
}

/// Where a subscriber wants to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Replay the events after this id.
    After(EventId),
    /// The client sent an id this gateway never issued: gap notice, then all history.
    Unrecognised,
}

/// What a new subscriber receives before live events.
#[derive(Debug, Default)]
pub struct Replay {
    /// Held events of the subscribed streams after the resume point, in id order.
    pub frames: Vec<Arc<Frame>>,
    /// Streams whose replay cannot be proven complete.
    pub gaps: Vec<StreamName>,
    /// The resume id, when it is one this deployment could have issued (the client
    /// holds every event up to it); `None` for no resume or an unrecognised id.
    pub resumed_from: Option<EventId>,
}

impl Replay {
    /// Every event up to this id reached the subscriber (before the resume point or
    /// in the replay): live frames not newer are duplicates at the seam.
    pub fn seam(&self) -> EventId {
        let replayed = self.frames.last().map_or(EventId::ZERO, |frame| frame.id);
        replayed.max(self.resumed_from.unwrap_or(EventId::ZERO))
    }
}

/// Storage and movement of events.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Assigns ids, appends every event to its stream's history and hands it to the
    /// local registry, all or nothing. Returns ids in request order; ids are unique
    /// and increasing across streams and nodes. When this returns `Ok`, the events
    /// are already in the replay history.
    ///
    /// # Errors
    /// [`BackendError`] when nothing was stored.
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>, BackendError>;

    /// Attaches `queue` to `streams` for live events, then reads the replay after
    /// `resume`. Every event is delivered either in the replay or live (a subscriber
    /// drops live frames not newer than the replay's last at the seam).
    ///
    /// # Errors
    /// [`BackendError`] when the subscriber could not be attached; it is then
    /// attached to none of the streams.
    async fn subscribe(
        &self,
        streams: &[StreamName],
        queue: &SubscriberQueue,
        resume: Option<Resume>,
    ) -> Result<Replay, BackendError>;

    /// Detaches `queue` from `streams`; called when a subscription ends.
    fn unsubscribe(&self, streams: &[StreamName], queue: &SubscriberQueue);

    /// Whether the backend can take publishes now.
    fn is_ready(&self) -> bool;

    /// Stops background work; called once at shutdown.
    async fn close(&self);
}
