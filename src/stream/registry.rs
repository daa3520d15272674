//! `StreamRegistry`: this node's subscribers per stream and per pattern, and local
//! fan-out.
//!
//! Sharded with `DashMap`; a stream (or pattern) appears when its first local
//! subscriber attaches and is reclaimed when its last one leaves, so random names
//! cannot grow memory without bound (and `limits.max_streams` caps how many exist
//! at once). History is
//! not kept here: backends own it and call [`StreamRegistry::deliver`] in id order.
//!
//! Overflow policy: every subscriber has a bounded queue. When a frame does not fit,
//! the subscriber is detached from that stream and its `overflowed` token is
//! cancelled; the subscription then ends at once without writing anything it
//! dequeues afterwards, so the client resumes from the last id it really received.
//!
//! A subscriber whose socket is lent out ([`super::direct`]) gets its frames through
//! the flusher's claims instead, and through its queue once the socket is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use tokio_util::sync::CancellationToken;

use super::flusher::{Claims, Flusher};
use super::queue::{self, Direct, Ending, QueueReceiver, SubscriberQueue};
use crate::frame::Frame;
use crate::metrics as m;
use crate::stream::{StreamName, StreamPattern};

/// Why a subscriber could not be attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the node already holds the maximum number of streams")]
    StreamLimit,
}

/// Local subscribers per stream name and per pattern prefix.
///
/// A pattern subscription (`ci.*`, `*`) is kept under its prefix (`ci.`, ``). To
/// deliver an event of stream `S` the registry looks up `S` by name and then each
/// prefix of `S` whose length some pattern has (`PrefixLengths`): a few hash
/// lookups per event however many pattern subscribers there are, never a scan.
#[derive(Debug)]
pub struct StreamRegistry {
    streams: DashMap<StreamName, Subscribers>,
    prefixes: DashMap<Arc<str>, Subscribers>,
    prefix_lengths: PrefixLengths,
    max_streams: usize,
    queue_capacity: usize,
    next_subscriber: AtomicU64,
    /// Writes to lent sockets.
    flusher: Flusher,
}

/// The subscribers of one stream or pattern. Most streams have a few, kept in a
/// `Vec` (a subscriber leaves by a short scan); from [`INDEXED_FROM`] on they are
/// indexed by queue id, so a subscriber leaves in constant time: with a `Vec` alone,
/// 15,000 subscribers of one stream closing at once cost 13 % of the server's samples
/// (each leave walked the whole list). Delivery walks a dense array either way.
#[derive(Debug)]
enum Subscribers {
    Few(Vec<SubscriberQueue>),
    /// Keyed by queue id, the registry's own sequence: hashed with `FxHash`.
    Many(IndexMap<u64, SubscriberQueue, FxBuildHasher>),
}

/// Subscribers of one stream or pattern from which they are indexed. The index
/// would cost a stream of one subscriber about 100 bytes more than the `Vec`, and
/// most streams have few subscribers.
const INDEXED_FROM: usize = 64;

impl Default for Subscribers {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

impl Subscribers {
    fn insert(&mut self, queue: SubscriberQueue) {
        match self {
            Self::Few(list) if list.len() < INDEXED_FROM => list.push(queue),
            Self::Few(list) => {
                let mut indexed: IndexMap<u64, SubscriberQueue, FxBuildHasher> =
                    list.drain(..).map(|q| (q.id(), q)).collect();
                indexed.insert(queue.id(), queue);
                *self = Self::Many(indexed);
            }
            Self::Many(indexed) => {
                indexed.insert(queue.id(), queue);
            }
        }
    }

    /// Removes the queue `id`; whether it was there.
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Self::Few(list) => list
                .iter()
                .position(|queue| queue.id() == id)
                .map(|at| list.swap_remove(at))
                .is_some(),
            Self::Many(indexed) => indexed.swap_remove(&id).is_some(),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&SubscriberQueue) -> bool) {
        match self {
            Self::Few(list) => list.retain(|queue| keep(queue)),
            Self::Many(indexed) => indexed.retain(|_, queue| keep(queue)),
        }
    }

    fn for_each(&self, f: impl FnMut(&SubscriberQueue)) {
        match self {
            Self::Few(list) => list.iter().for_each(f),
            Self::Many(indexed) => indexed.values().for_each(f),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Few(list) => list.len(),
            Self::Many(indexed) => indexed.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a pattern's subscribers are kept.
enum Key<'a> {
    Name(&'a StreamName),
    /// `""` for `*`.
    Prefix(&'a str),
}

impl<'a> Key<'a> {
    fn of(pattern: &'a StreamPattern) -> Self {
        match pattern {
            StreamPattern::Exact(stream) => Self::Name(stream),
            StreamPattern::Prefix(prefix) => Self::Prefix(prefix),
            StreamPattern::Any => Self::Prefix(""),
        }
    }
}

/// Which prefix lengths have subscribers: a bit per length 0–128 that the publish
/// path reads without a lock, and the count of prefixes per length behind it.
#[derive(Debug, Default)]
struct PrefixLengths {
    bits: [AtomicU64; 3],
    counts: std::sync::Mutex<Vec<usize>>,
}

impl PrefixLengths {
    fn added(&self, length: usize) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() <= length {
            counts.resize(length + 1, 0);
        }
        counts[length] += 1;
        self.bits[length / 64].fetch_or(1 << (length % 64), Ordering::Release);
    }

    fn removed(&self, length: usize) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = counts.get_mut(length) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.bits[length / 64].fetch_and(!(1 << (length % 64)), Ordering::Release);
            }
        }
    }

    /// Calls `each` with every length up to `max` that has a prefix.
    fn for_each_up_to(&self, max: usize, mut each: impl FnMut(usize)) {
        for (word_index, word) in self.bits.iter().enumerate() {
            let mut bits = word.load(Ordering::Acquire);
            while bits != 0 {
                let length = word_index * 64 + bits.trailing_zeros() as usize;
                if length > max {
                    return;
                }
                each(length);
                bits &= bits - 1;
            }
        }
    }
}

impl StreamRegistry {
    pub fn new(max_streams: usize, queue_capacity: usize) -> Self {
        Self {
            streams: DashMap::new(),
            prefixes: DashMap::new(),
            prefix_lengths: PrefixLengths::default(),
            max_streams,
            queue_capacity,
            next_subscriber: AtomicU64::new(1),
            flusher: Flusher::default(),
        }
    }

    /// A new subscriber queue holding up to `limits.subscriber_queue` frames;
    /// `overflowed` is cancelled when a frame does not fit (the server passes the
    /// token that closes the client's connection, so a client that stopped reading
    /// is cut off at once, whether or not its response is being polled).
    pub fn new_queue(&self, overflowed: CancellationToken) -> (SubscriberQueue, QueueReceiver) {
        self.new_queue_writing_to(overflowed, None)
    }

    /// [`Self::new_queue`] for a subscriber whose socket deliveries may write to
    /// directly while its task lends it out.
    pub fn new_queue_writing_to(
        &self,
        overflowed: CancellationToken,
        direct: Option<Direct>,
    ) -> (SubscriberQueue, QueueReceiver) {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        queue::new(id, overflowed, direct.filter(|_| self.flusher.start()))
    }

    /// Adds `queue` to every one of `patterns`, or to none of them; the returned
    /// attachment detaches it again when dropped.
    ///
    /// # Errors
    /// [`RegistryError::StreamLimit`] when a new stream does not fit.
    pub fn attach(
        self: &Arc<Self>,
        patterns: &[StreamPattern],
        queue: &SubscriberQueue,
    ) -> Result<Attachment, RegistryError> {
        self.attach_all(patterns, queue)?;
        Ok(Attachment {
            registry: Arc::clone(self),
            patterns: patterns.to_vec(),
            queue: queue.clone(),
        })
    }

    /// Adds `queue` to the subscribers of `pattern`, creating its entry if needed.
    /// Names and patterns with subscribers count together against `max_streams`.
    ///
    /// # Errors
    /// [`RegistryError::StreamLimit`] when the entry is new and the registry is full.
    pub fn attach_one(&self, pattern: &StreamPattern, queue: &SubscriberQueue) -> Result<(), RegistryError> {
        let full = self.len() >= self.max_streams;
        match Key::of(pattern) {
            Key::Name(stream) => {
                if full && !self.streams.contains_key(stream) {
                    return Err(RegistryError::StreamLimit);
                }
                // Pushing through `entry` holds the shard lock, so a concurrent
                // reclaim of the same (empty) stream cannot orphan this subscriber.
                self.streams.entry(stream.clone()).or_default().insert(queue.clone());
            }
            Key::Prefix(prefix) => {
                if full && !self.prefixes.contains_key(prefix) {
                    return Err(RegistryError::StreamLimit);
                }
                match self.prefixes.entry(Arc::from(prefix)) {
                    Entry::Occupied(mut entry) => {
                        entry.get_mut().insert(queue.clone());
                    }
                    Entry::Vacant(entry) => {
                        // Announced before the entry exists: a publish that sees the
                        // length but not yet the entry only looks up in vain.
                        self.prefix_lengths.added(prefix.len());
                        entry.insert(Subscribers::Few(vec![queue.clone()]));
                    }
                }
            }
        }
        m::series().subscriptions_open.increment(1.0);
        Ok(())
    }

    /// Adds `queue` to every one of `patterns`, or to none of them.
    ///
    /// # Errors
    /// [`RegistryError::StreamLimit`] when a new entry does not fit; those attached
    /// so far are detached again.
    pub fn attach_all(&self, patterns: &[StreamPattern], queue: &SubscriberQueue) -> Result<(), RegistryError> {
        for (attached, pattern) in patterns.iter().enumerate() {
            if let Err(error) = self.attach_one(pattern, queue) {
                self.detach(&patterns[..attached], queue);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Removes `queue` from each of `patterns` and reclaims entries left empty.
    pub fn detach(&self, patterns: &[StreamPattern], queue: &SubscriberQueue) {
        for pattern in patterns {
            match Key::of(pattern) {
                Key::Name(stream) => {
                    if let Some(mut subscribers) = self.streams.get_mut(stream) {
                        record_removed(usize::from(subscribers.remove(queue.id())));
                    }
                    self.streams.remove_if(stream, |_, subscribers| subscribers.is_empty());
                }
                Key::Prefix(prefix) => {
                    if let Some(mut subscribers) = self.prefixes.get_mut(prefix) {
                        record_removed(usize::from(subscribers.remove(queue.id())));
                    }
                    if self
                        .prefixes
                        .remove_if(prefix, |_, subscribers| subscribers.is_empty())
                        .is_some()
                    {
                        self.prefix_lengths.removed(prefix.len());
                    }
                }
            }
        }
    }

    /// Offers `frame` of `stream` to every local subscriber of the stream and of
    /// every pattern matching it, detaching those whose queue is full or closed.
    /// Never blocks and allocates nothing per subscriber.
    pub fn deliver(&self, stream: &StreamName, frame: &Arc<Frame>) -> usize {
        self.deliveries().deliver(stream, frame)
    }

    /// Deliveries of several frames (one publish request's events) that write to
    /// lent sockets together, when dropped: a subscriber that gets several of them
    /// gets one chunk (see [`super::direct`]). A broker drops it after its lock.
    pub fn deliveries(&self) -> Deliveries<'_> {
        Deliveries {
            registry: self,
            claims: self.flusher.lock(),
        }
    }

    /// Ends every attached subscription (at shutdown).
    pub fn end_all(&self, ending: Ending) {
        for entry in &self.streams {
            entry.value().for_each(|queue| {
                queue.end(ending);
            });
        }
        for entry in &self.prefixes {
            entry.value().for_each(|queue| {
                queue.end(ending);
            });
        }
    }

    /// Offers `frame` to the subscribers of exactly `pattern` (a notice about that
    /// subscription), not to those of other matching names or patterns.
    pub fn deliver_to(&self, pattern: &StreamPattern, frame: &Arc<Frame>) -> usize {
        let mut claims = self.flusher.lock();
        match Key::of(pattern) {
            Key::Name(stream) => self
                .streams
                .get_mut(stream)
                .map_or(0, |mut subscribers| self.offer(&mut subscribers, frame, &mut claims)),
            Key::Prefix(prefix) => self
                .prefixes
                .get_mut(prefix)
                .map_or(0, |mut subscribers| self.offer(&mut subscribers, frame, &mut claims)),
        }
    }

    fn offer(&self, subscribers: &mut Subscribers, frame: &Arc<Frame>, claims: &mut Claims<'_>) -> usize {
        let before = subscribers.len();
        let capacity = self.queue_capacity;
        subscribers.retain(|queue| claims.take(queue.state(), frame) || queue.offer(frame, capacity));
        record_removed(before - subscribers.len());
        subscribers.len()
    }

    /// Whether `pattern` has local subscribers.
    pub fn contains(&self, pattern: &StreamPattern) -> bool {
        match Key::of(pattern) {
            Key::Name(stream) => self.streams.contains_key(stream),
            Key::Prefix(prefix) => self.prefixes.contains_key(prefix),
        }
    }

    /// Every name and pattern with local subscribers.
    pub fn patterns(&self) -> Vec<StreamPattern> {
        let names = self
            .streams
            .iter()
            .map(|entry| StreamPattern::Exact(entry.key().clone()));
        let prefixes = self.prefixes.iter().map(|entry| match &**entry.key() {
            "" => StreamPattern::Any,
            _ => StreamPattern::Prefix(Arc::clone(entry.key())),
        });
        names.chain(prefixes).collect()
    }

    /// Names and patterns with at least one local subscriber.
    pub fn len(&self) -> usize {
        self.streams.len() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.prefixes.is_empty()
    }
}

/// Frames offered in id order, whose writes to lent sockets happen when this is
/// dropped.
#[derive(Debug)]
pub struct Deliveries<'a> {
    registry: &'a StreamRegistry,
    claims: Claims<'a>,
}

impl Deliveries<'_> {
    /// [`StreamRegistry::deliver`], the writes to lent sockets left for the drop.
    pub fn deliver(&mut self, stream: &StreamName, frame: &Arc<Frame>) -> usize {
        let registry = self.registry;
        let mut delivered = 0;
        if let Some(mut subscribers) = registry.streams.get_mut(stream) {
            delivered += registry.offer(&mut subscribers, frame, &mut self.claims);
        }
        let name = stream.as_str();
        registry.prefix_lengths.for_each_up_to(name.len(), |length| {
            if let Some(mut subscribers) = registry.prefixes.get_mut(&name[..length]) {
                delivered += registry.offer(&mut subscribers, frame, &mut self.claims);
            }
        });
        delivered
    }
}

/// A queue attached to some names and patterns; detached when dropped.
#[derive(Debug)]
pub struct Attachment {
    registry: Arc<StreamRegistry>,
    patterns: Vec<StreamPattern>,
    queue: SubscriberQueue,
}

impl Attachment {
    pub fn patterns(&self) -> &[StreamPattern] {
        &self.patterns
    }

    pub fn queue(&self) -> &SubscriberQueue {
        &self.queue
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.registry.detach(&self.patterns, &self.queue);
    }
}

fn record_removed(count: usize) {
    if count > 0 {
        m::series().subscriptions_open.decrement(count as f64);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::EventId;

    fn frame(id: u64) -> Arc<Frame> {
        Arc::new(Frame::notice(EventId::from_u64(id), Bytes::from_static(b"x")))
    }

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
    }

    fn pattern(text: &str) -> StreamPattern {
        StreamPattern::try_new(text).unwrap()
    }

    #[test]
    fn streams_are_reclaimed_when_their_last_subscriber_leaves() {
        let registry = StreamRegistry::new(10, 4);
        let (queue, _rx) = registry.new_queue(CancellationToken::new());
        let streams = [pattern("a"), pattern("b.*")];
        let registry = Arc::new(registry);
        let attachment = registry.attach(&streams, &queue).unwrap();
        assert_eq!(registry.len(), 2);
        drop(attachment);
        assert!(registry.is_empty());
    }

    #[test]
    fn small_and_crowded_streams_keep_their_subscribers_as_they_come_and_go() {
        for count in [6, 3 * INDEXED_FROM] {
            subscribers_come_and_go(count);
        }
    }

    fn subscribers_come_and_go(count: usize) {
        let registry = Arc::new(StreamRegistry::new(10, 4));
        let stream = name("crowded");
        let queues: Vec<_> = (0..count)
            .map(|_| registry.new_queue(CancellationToken::new()))
            .collect();
        let mut attachments: Vec<_> = queues
            .iter()
            .map(|(queue, _)| Some(registry.attach(&[pattern("crowded")], queue).unwrap()))
            .collect();
        let indexed = matches!(registry.streams.get(&stream).as_deref(), Some(Subscribers::Many(_)));
        assert_eq!(indexed, count > INDEXED_FROM);
        // Every other subscriber leaves; the rest still receive, each once.
        for attachment in attachments.iter_mut().step_by(2) {
            attachment.take();
        }
        assert_eq!(registry.deliver(&stream, &frame(1)), count / 2);
        let mut receivers: Vec<_> = queues.into_iter().map(|(_, receiver)| receiver).collect();
        for (at, receiver) in receivers.iter_mut().enumerate() {
            let got = receiver.try_recv().map(|frame| frame.id);
            let expected = (at % 2 == 1).then(|| EventId::from_u64(1));
            assert_eq!(got, expected, "subscriber {at}");
            assert!(receiver.try_recv().is_none());
        }
        attachments.clear();
        assert!(registry.is_empty(), "the stream is reclaimed when the last one leaves");
    }

    #[test]
    fn the_stream_limit_refuses_new_streams_only() {
        let registry = StreamRegistry::new(1, 4);
        let (queue, _rx) = registry.new_queue(CancellationToken::new());
        registry.attach_one(&pattern("a"), &queue).unwrap();
        assert_eq!(
            registry.attach_one(&pattern("b"), &queue),
            Err(RegistryError::StreamLimit)
        );
        assert_eq!(
            registry.attach_one(&pattern("b.*"), &queue),
            Err(RegistryError::StreamLimit)
        );
        let (other, _rx2) = registry.new_queue(CancellationToken::new());
        registry.attach_one(&pattern("a"), &other).unwrap();
    }

    #[test]
    fn attaching_to_several_streams_is_all_or_nothing() {
        let registry = StreamRegistry::new(1, 4);
        let (queue, _rx) = registry.new_queue(CancellationToken::new());
        assert_eq!(
            registry.attach_all(&[pattern("a"), pattern("b")], &queue),
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
        // The firehose subscriber that cannot keep up goes like any other.
        registry.attach_one(&pattern("*"), &slow).unwrap();
        registry.attach_one(&pattern("a"), &fast).unwrap();
        for id in 1..=3 {
            registry.deliver(&stream, &frame(id));
            assert_eq!(fast_rx.try_recv().unwrap().id, EventId::from_u64(id));
        }
        assert!(slow.overflowed().is_cancelled() && slow.has_overflowed());
        assert!(!fast.overflowed().is_cancelled() && !fast.has_overflowed());
        assert_eq!(registry.deliver(&stream, &frame(4)), 1);
    }

    fn received(receiver: &mut QueueReceiver) -> Vec<u64> {
        std::iter::from_fn(|| receiver.try_recv())
            .map(|frame| frame.id.as_u64())
            .collect()
    }

    #[test]
    fn patterns_receive_every_matching_stream_and_nothing_else() {
        let registry = Arc::new(StreamRegistry::new(100, 64));
        let subscribe = |text: &str| {
            let (queue, receiver) = registry.new_queue(CancellationToken::new());
            (registry.attach(&[pattern(text)], &queue).unwrap(), receiver)
        };
        let (_ci, mut ci) = subscribe("ci.*");
        let (_ci_main, mut ci_main) = subscribe("ci.main.*");
        let (_all, mut all) = subscribe("*");
        let (_exact, mut exact) = subscribe("ci.main.build");
        for (id, stream) in [
            (1, "ci.main.build"),
            (2, "ci.dev"),
            (3, "cia"),
            (4, "ci."),
            (5, "other"),
        ] {
            registry.deliver(&name(stream), &frame(id));
        }
        assert_eq!(received(&mut ci), [1, 2, 4]);
        assert_eq!(received(&mut ci_main), [1]);
        assert_eq!(received(&mut all), [1, 2, 3, 4, 5]);
        assert_eq!(received(&mut exact), [1]);
    }

    #[test]
    fn a_notice_for_a_pattern_reaches_only_its_own_subscribers() {
        let registry = Arc::new(StreamRegistry::new(100, 64));
        let (queue, mut pattern_rx) = registry.new_queue(CancellationToken::new());
        let _pattern = registry.attach(&[pattern("ci.*")], &queue).unwrap();
        let (queue, mut name_rx) = registry.new_queue(CancellationToken::new());
        let _name = registry.attach(&[pattern("ci.a")], &queue).unwrap();
        assert_eq!(registry.deliver_to(&pattern("ci.*"), &frame(9)), 1);
        assert_eq!(received(&mut pattern_rx), [9]);
        assert!(received(&mut name_rx).is_empty());
    }

    #[tokio::test]
    async fn an_ending_reaches_every_attached_queue_and_stops_its_receiver() {
        let registry = Arc::new(StreamRegistry::new(100, 64));
        let (queue, mut by_name) = registry.new_queue(CancellationToken::new());
        let _by_name = registry.attach(&[pattern("a"), pattern("b")], &queue).unwrap();
        let (queue, mut by_prefix) = registry.new_queue(CancellationToken::new());
        let _by_prefix = registry.attach(&[pattern("a*")], &queue).unwrap();
        registry.deliver(&name("a"), &frame(1));
        let waiting = tokio::spawn(async move {
            let first = by_prefix.recv().await.map(|frame| frame.id.as_u64());
            (first, by_prefix.recv().await.is_none(), by_prefix.ending())
        });
        // The receiver takes the queued frame and waits.
        tokio::task::yield_now().await;
        registry.end_all(Ending::Shutdown);
        registry.end_all(Ending::Revoked);
        // Queued before the ending, but the ending is read first.
        assert!(by_name.recv().await.is_none());
        assert_eq!(
            by_name.ending(),
            Some(Ending::Shutdown),
            "the first in order of precedence"
        );
        // A drain after the ending stops at the wake-up behind what was queued.
        assert_eq!(received(&mut by_name), [1]);
        let (first, ended, ending) = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(first, Some(1));
        assert!(ended, "woken by the ending");
        assert_eq!(ending, Some(Ending::Shutdown));
        assert!(!queue.has_overflowed(), "shutdown is not an overflow");
    }

    #[test]
    fn an_overflow_is_an_ending() {
        let registry = Arc::new(StreamRegistry::new(100, 1));
        let (queue, mut receiver) = registry.new_queue(CancellationToken::new());
        let _attachment = registry.attach(&[pattern("a")], &queue).unwrap();
        assert_eq!(registry.deliver(&name("a"), &frame(1)), 1);
        assert_eq!(registry.deliver(&name("a"), &frame(2)), 0);
        assert_eq!(receiver.ending(), Some(Ending::Overflow));
        assert!(receiver.try_recv().is_some(), "what fitted is still there");
        assert!(receiver.try_recv().is_none(), "then the wake-up, read as nothing");
    }

    #[test]
    fn prefix_lengths_follow_the_patterns_that_have_subscribers() {
        let registry = Arc::new(StreamRegistry::new(100, 64));
        let (queue, mut receiver) = registry.new_queue(CancellationToken::new());
        let long = "x".repeat(127);
        let attachment = registry
            .attach(&[pattern("a.*"), pattern(&format!("{long}*"))], &queue)
            .unwrap();
        registry.deliver(&name(&format!("{long}y")), &frame(1));
        registry.deliver(&name("a.b"), &frame(2));
        assert_eq!(received(&mut receiver), [1, 2], "lengths 2 and 127 are looked up");
        drop(attachment);
        assert!(registry.is_empty());
        assert_eq!(
            registry
                .prefix_lengths
                .bits
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .sum::<u64>(),
            0
        );
    }
}
