//! `StreamRegistry`: this node's subscribers per stream, and local fan-out.
//!
//! Sharded with `DashMap`; a stream appears when its first local subscriber attaches
//! and is reclaimed when its last one leaves, so random names cannot grow memory
//! without bound (and `limits.max_streams` caps how many exist at once). History is
//! not kept here: backends own it and call [`StreamRegistry::deliver`] in id order.
//!
//! Overflow policy: every subscriber has a bounded queue. When a frame does not fit,
//! the subscriber is detached from that stream and its `overflowed` token is
//! cancelled; the subscription then ends at once without writing anything it
//! dequeues afterwards, so the client resumes from the last id it really received.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::Frame;
use crate::metrics as m;
use crate::stream::StreamName;

/// Why a subscriber could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the node already holds the maximum number of streams")]
    StreamLimit,
}

/// The sending half of one subscriber's bounded queue, shared by all its streams.
///
/// Bounded by hand: tokio's bounded channel takes a mutex in its semaphore for every
/// message received, i.e. a lock per event per subscriber. An unbounded channel plus
/// a shared length counter gives the same bound with two atomic operations.
#[derive(Debug, Clone)]
pub struct SubscriberQueue {
    id: u64,
    sender: mpsc::UnboundedSender<Arc<Frame>>,
    queued: Arc<AtomicUsize>,
    overflowed: CancellationToken,
}

impl SubscriberQueue {
    /// Cancelled when a frame for this subscriber did not fit in its queue.
    pub fn overflowed(&self) -> &CancellationToken {
        &self.overflowed
    }

    /// Offers `frame` to a queue of `capacity`; `false` means the subscriber must be
    /// detached.
    fn offer(&self, frame: &Arc<Frame>, capacity: usize) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= capacity {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if !self.overflowed.is_cancelled() {
                self.overflowed.cancel();
                metrics::counter!(m::SLOW_CONSUMER_DISCONNECTS).increment(1);
            }
            return false;
        }
        // Fails only when the subscription is gone: detach it.
        self.sender.send(Arc::clone(frame)).is_ok()
    }
}

/// The receiving half of a subscriber's queue.
#[derive(Debug)]
pub struct QueueReceiver {
    receiver: mpsc::UnboundedReceiver<Arc<Frame>>,
    queued: Arc<AtomicUsize>,
}

impl QueueReceiver {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Arc<Frame>> {
        let frame = self.receiver.recv().await?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(frame)
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Frame>> {
        let frame = self.receiver.try_recv().ok()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        Some(frame)
    }
}

/// Local subscribers per stream.
#[derive(Debug)]
pub struct StreamRegistry {
    streams: DashMap<StreamName, Vec<SubscriberQueue>>,
    max_streams: usize,
    queue_capacity: usize,
    next_subscriber: AtomicU64,
}

impl StreamRegistry {
    pub fn new(max_streams: usize, queue_capacity: usize) -> Self {
        Self {
            streams: DashMap::new(),
            max_streams,
            queue_capacity,
            next_subscriber: AtomicU64::new(1),
        }
    }

    /// A new subscriber queue holding up to `limits.subscriber_queue` frames;
    /// `overflowed` is cancelled when a frame does not fit (the server passes the
    /// token that closes the client's connection, so a client that stopped reading
    /// is cut off at once, whether or not its response is being polled).
    pub fn new_queue(&self, overflowed: CancellationToken) -> (SubscriberQueue, QueueReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let queue = SubscriberQueue {
            id: self.next_subscriber.fetch_add(1, Ordering::Relaxed),
            sender,
            queued: Arc::clone(&queued),
            overflowed,
        };
        (queue, QueueReceiver { receiver, queued })
    }

    /// Adds `queue` to every one of `streams`, or to none of them; the returned
    /// attachment detaches it again when dropped.
    ///
    /// # Errors
    /// [`RegistryError::StreamLimit`] when a new stream does not fit.
    pub fn attach(
        self: &Arc<Self>,
        streams: &[StreamName],
        queue: &SubscriberQueue,
    ) -> Result<Attachment, RegistryError> {
        self.attach_all(streams, queue)?;
        Ok(Attachment {
            registry: Arc::clone(self),
            streams: streams.to_vec(),
            queue: queue.clone(),
        })
    }

    /// Adds `queue` to `stream`'s subscribers, creating the stream if needed.
    ///
    /// # Errors
    /// [`RegistryError::StreamLimit`] when the stream is new and the registry is full.
    pub fn attach_one(&self, stream: &StreamName, queue: &SubscriberQueue) -> Result<(), RegistryError> {
        if !self.streams.contains_key(stream) && self.streams.len() >= self.max_streams {
            return Err(RegistryError::StreamLimit);
        }
        // Pushing through `entry` holds the shard lock, so a concurrent reclaim of
        // the same (empty) stream cannot orphan this subscriber.
        self.streams.entry(stream.clone()).or_default().push(queue.clone());
        metrics::gauge!(m::SUBSCRIPTIONS_OPEN).increment(1.0);
        Ok(())
    }

    /// Adds `queue` to every one of `streams`, or to none of them.
    ///
    /// # Errors
    /// [`RegistryError::StreamLimit`] when a new stream does not fit; the streams
    /// attached so far are detached again.
    pub fn attach_all(&self, streams: &[StreamName], queue: &SubscriberQueue) -> Result<(), RegistryError> {
        for (attached, stream) in streams.iter().enumerate() {
            if let Err(error) = self.attach_one(stream, queue) {
                self.detach(&streams[..attached], queue);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Removes `queue` from each of `streams` and reclaims streams left empty.
    pub fn detach(&self, streams: &[StreamName], queue: &SubscriberQueue) {
        for stream in streams {
            if let Some(mut subscribers) = self.streams.get_mut(stream) {
                let before = subscribers.len();
                subscribers.retain(|q| q.id != queue.id);
                record_removed(before - subscribers.len());
            }
            self.streams.remove_if(stream, |_, subscribers| subscribers.is_empty());
        }
    }

    /// Offers `frame` to every local subscriber of `stream`, detaching those whose
    /// queue is full or closed. Never blocks and allocates nothing per subscriber.
    pub fn deliver(&self, stream: &StreamName, frame: &Arc<Frame>) -> usize {
        let Some(mut subscribers) = self.streams.get_mut(stream) else {
            return 0;
        };
        let before = subscribers.len();
        let capacity = self.queue_capacity;
        subscribers.retain(|queue| queue.offer(frame, capacity));
        record_removed(before - subscribers.len());
        subscribers.len()
    }

    /// Whether `stream` has local subscribers.
    pub fn contains(&self, stream: &StreamName) -> bool {
        self.streams.contains_key(stream)
    }

    /// Streams with at least one local subscriber.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

/// A queue attached to some streams; detached when dropped.
#[derive(Debug)]
pub struct Attachment {
    registry: Arc<StreamRegistry>,
    streams: Vec<StreamName>,
    queue: SubscriberQueue,
}

impl Attachment {
    pub fn streams(&self) -> &[StreamName] {
        &self.streams
    }

    pub fn queue(&self) -> &SubscriberQueue {
        &self.queue
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.registry.detach(&self.streams, &self.queue);
    }
}

fn record_removed(count: usize) {
    if count > 0 {
        metrics::gauge!(m::SUBSCRIPTIONS_OPEN).decrement(count as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::event::EventId;

    fn frame(id: u64) -> Arc<Frame> {
        Arc::new(Frame {
            id: EventId::from_u64(id),
            published_at: Instant::now(),
            bytes: Bytes::from_static(b"x"),
        })
    }

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
    }

    #[test]
    fn streams_are_reclaimed_when_their_last_subscriber_leaves() {
        let registry = StreamRegistry::new(10, 4);
        let (queue, _rx) = registry.new_queue(CancellationToken::new());
        let streams = [name("a"), name("b")];
        let registry = Arc::new(registry);
        let attachment = registry.attach(&streams, &queue).unwrap();
        assert_eq!(registry.len(), 2);
        drop(attachment);
        assert!(registry.is_empty());
    }

    #[test]
    fn the_stream_limit_refuses_new_streams_only() {
        let registry = StreamRegistry::new(1, 4);
        let (queue, _rx) = registry.new_queue(CancellationToken::new());
        registry.attach_one(&name("a"), &queue).unwrap();
        assert_eq!(registry.attach_one(&name("b"), &queue), Err(RegistryError::StreamLimit));
        let (other, _rx2) = registry.new_queue(CancellationToken::new());
        registry.attach_one(&name("a"), &other).unwrap();
    }

    #[test]
    fn attaching_to_several_streams_is_all_or_nothing() {
        let registry = StreamRegistry::new(1, 4);
        let (queue, _rx) = registry.new_queue(CancellationToken::new());
        assert_eq!(
            registry.attach_all(&[name("a"), name("b")], &queue),
            Err(RegistryError::StreamLimit)
        );
        assert!(registry.is_empty(), "the first stream was detached again");
    }

    #[test]
    fn an_overflowing_subscriber_is_detached_and_flagged_while_others_keep_receiving() {
        let registry = StreamRegistry::new(10, 2);
        let (slow, _slow_rx) = registry.new_queue(CancellationToken::new());
        let (fast, mut fast_rx) = registry.new_queue(CancellationToken::new());
        let stream = name("a");
        registry.attach_one(&stream, &slow).unwrap();
        registry.attach_one(&stream, &fast).unwrap();
        for id in 1..=3 {
            registry.deliver(&stream, &frame(id));
            assert_eq!(fast_rx.try_recv().unwrap().id, EventId::from_u64(id));
        }
        assert!(slow.overflowed().is_cancelled());
        assert!(!fast.overflowed().is_cancelled());
        assert_eq!(registry.deliver(&stream, &frame(4)), 1);
    }
}
