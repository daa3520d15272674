//! `HeldHistory`: the history a node holds in memory, with every bound on it.
//!
//! Per stream: `streams.buffer_size` events and `streams.buffer_ttl` of age. For the
//! whole node: `streams.max_history_bytes` (over it, the deployment's oldest events
//! are evicted first, whatever their stream) and `limits.max_streams` histories.
//! Every eviction raises the evicted stream's `known_after`, so resumes across it
//! earn gap notices. A stream whose history emptied is reclaimed and leaves a
//! tombstone with what it knew; past `max_streams` tombstones they fold into one
//! floor. What is evicted is reported ([`Evicted`]) so a durable store can mirror it.
//!
//! Plain data, no locks and no I/O: the broker that owns it decides both.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::broker::Position;
use crate::event::{EventId, NewEvent};
use crate::frame::Frame;
use crate::history::{HistoryRead, StreamHistory};
use crate::metrics as m;
use crate::stream::{ReplayBuffer, StreamName, StreamPattern};

/// What an event costs against `max_history_bytes` besides its encoded bytes: the
/// frame (with its `Arc`), its place in its stream's buffer and in the node's id
/// order (checked by a test against the sizes of those types).
pub const EVENT_OVERHEAD_BYTES: usize = 176;

/// The bounds on held history.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub buffer_size: usize,
    /// `None`: no age limit.
    pub ttl: Option<Duration>,
    pub max_bytes: usize,
    pub max_streams: usize,
}

/// What an operation evicted, for a durable store to mirror.
#[derive(Debug, Default)]
pub struct Evicted {
    /// Ids of the events no longer held.
    pub ids: Vec<EventId>,
    /// Streams whose `known_after` rose, with its new value (the last one wins).
    pub known_after: Vec<(StreamName, EventId)>,
    /// Streams reclaimed (history empty); their tombstone holds what they knew.
    pub reclaimed: Vec<StreamName>,
    /// The new floor, when tombstones were folded into it.
    pub floor: Option<EventId>,
    /// Idempotency keys that expired.
    pub keys: Vec<String>,
}

impl Evicted {
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.known_after.is_empty()
            && self.reclaimed.is_empty()
            && self.floor.is_none()
            && self.keys.is_empty()
    }

    /// Moves everything of `other` into this.
    pub fn absorb(&mut self, other: Self) {
        self.ids.extend(other.ids);
        self.known_after.extend(other.known_after);
        self.reclaimed.extend(other.reclaimed);
        self.keys.extend(other.keys);
        if other.floor.is_some() {
            self.floor = other.floor;
        }
    }
}

/// Why an event was evicted: a bounded metric label.
#[derive(Debug, Clone, Copy)]
enum Reason {
    Count,
    Age,
    Bytes,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Age => "age",
            Self::Bytes => "bytes",
        }
    }
}

/// The node's held history.
#[derive(Debug)]
pub struct HeldHistory {
    bounds: Bounds,
    streams: HashMap<StreamName, ReplayBuffer>,
    /// What a reclaimed history knew, per stream, so a stream that went quiet still
    /// proves completeness; at most `max_streams` entries.
    tombstones: HashMap<StreamName, EventId>,
    /// Events of streams with neither history nor tombstone are known only above this.
    floor: EventId,
    /// Names with history or a tombstone, in order: what a pattern matches.
    names: BTreeSet<StreamName>,
    /// Every held event's id and stream in id order, for evicting the oldest of the
    /// node; entries of events already evicted otherwise are skipped (and compacted).
    order: VecDeque<(EventId, StreamName)>,
    held: usize,
    bytes: usize,
}

fn cost(frame: &Frame) -> usize {
    frame.bytes.len() + EVENT_OVERHEAD_BYTES
}

impl HeldHistory {
    /// Empty history whose events are all known above `floor`.
    pub fn new(bounds: Bounds, floor: EventId) -> Self {
        Self {
            bounds,
            streams: HashMap::new(),
            tombstones: HashMap::new(),
            floor,
            names: BTreeSet::new(),
            order: VecDeque::new(),
            held: 0,
            bytes: 0,
        }
    }

    /// Bytes held, as counted against `max_history_bytes`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Number of streams with history.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Restores what a reclaimed stream knew (loading a durable store).
    pub fn restore_tombstone(&mut self, stream: StreamName, known_after: EventId) {
        self.names.insert(stream.clone());
        self.tombstones.insert(stream, known_after);
    }

    /// Whether publishing `events` would create more histories than `max_streams`.
    pub fn exceeds_stream_limit(&self, events: &[NewEvent]) -> bool {
        let mut new_streams: Vec<&StreamName> = events
            .iter()
            .map(|event| &event.stream)
            .filter(|stream| !self.streams.contains_key(*stream))
            .collect();
        new_streams.sort_unstable();
        new_streams.dedup();
        self.streams.len() + new_streams.len() > self.bounds.max_streams
    }

    fn known_after_without_history(&self, stream: &StreamName) -> EventId {
        self.tombstones
            .get(stream)
            .copied()
            .unwrap_or(EventId::ZERO)
            .max(self.floor)
    }

    /// Appends `frame` (newer than everything held) to `stream`, then applies every
    /// bound.
    pub fn append(&mut self, stream: &StreamName, frame: Arc<Frame>, evicted: &mut Evicted) {
        let now = frame.published_at;
        if !self.streams.contains_key(stream) {
            let known_after = self.known_after_without_history(stream);
            if self.tombstones.remove(stream).is_none() {
                self.names.insert(stream.clone());
            }
            self.streams.insert(stream.clone(), ReplayBuffer::new(known_after));
        }
        self.bytes += cost(&frame);
        self.held += 1;
        self.order.push_back((frame.id, stream.clone()));
        if let Some(buffer) = self.streams.get_mut(stream) {
            buffer.push(frame);
        }
        while self
            .streams
            .get(stream)
            .is_some_and(|buffer| buffer.len() > self.bounds.buffer_size)
        {
            self.evict_front(stream, Reason::Count, evicted);
        }
        self.evict_expired(stream, now, evicted);
        while self.bytes > self.bounds.max_bytes && self.evict_oldest(evicted) {}
    }

    fn evict_front(&mut self, stream: &StreamName, reason: Reason, evicted: &mut Evicted) -> bool {
        let Some(buffer) = self.streams.get_mut(stream) else {
            return false;
        };
        let Some(frame) = buffer.evict_front() else {
            return false;
        };
        self.bytes -= cost(&frame);
        self.held -= 1;
        evicted.ids.push(frame.id);
        evicted.known_after.push((stream.clone(), buffer.known_after()));
        metrics::counter!(m::HISTORY_EVICTIONS, "reason" => reason.label()).increment(1);
        true
    }

    fn evict_expired(&mut self, stream: &StreamName, now: Instant, evicted: &mut Evicted) {
        let Some(ttl) = self.bounds.ttl else { return };
        while self
            .streams
            .get(stream)
            .and_then(ReplayBuffer::front)
            .is_some_and(|front| now.saturating_duration_since(front.published_at) > ttl)
        {
            self.evict_front(stream, Reason::Age, evicted);
        }
    }

    /// Evicts the node's oldest held event; `false` when nothing is held.
    fn evict_oldest(&mut self, evicted: &mut Evicted) -> bool {
        while let Some((id, stream)) = self.order.pop_front() {
            let is_held = self
                .streams
                .get(&stream)
                .and_then(ReplayBuffer::front)
                .is_some_and(|front| front.id == id);
            if is_held {
                return self.evict_front(&stream, Reason::Bytes, evicted);
            }
        }
        false
    }

    /// Drops order entries of events evicted otherwise, once they outnumber the
    /// held ones (amortised: each entry is dropped at most once).
    fn compact_order(&mut self) {
        if self.order.len() <= 2 * self.held + 1024 {
            return;
        }
        let streams = &self.streams;
        self.order.retain(|(id, stream)| {
            streams
                .get(stream)
                .and_then(ReplayBuffer::front)
                .is_some_and(|front| front.id <= *id)
        });
    }

    /// The names `patterns` match that have history or a tombstone (and the names
    /// given exactly, whether or not they do), once each.
    fn matching(&self, patterns: &[StreamPattern]) -> BTreeSet<StreamName> {
        let mut names = BTreeSet::new();
        for pattern in patterns {
            match pattern.prefix() {
                None => names.extend(pattern.as_name().cloned()),
                Some(prefix) => names.extend(
                    self.names
                        .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                        .take_while(|name| name.as_str().starts_with(prefix))
                        .cloned(),
                ),
            }
        }
        names
    }

    /// History of the streams `patterns` name or match after `after` (everything
    /// held when `after` is above `last_issued`, an id never given out); expired
    /// events are evicted first.
    pub fn read(
        &mut self,
        patterns: &[StreamPattern],
        after: EventId,
        last_issued: EventId,
        evicted: &mut Evicted,
    ) -> HistoryRead {
        let after = if after > last_issued { EventId::ZERO } else { after };
        let now = Instant::now();
        let streams = self
            .matching(patterns)
            .into_iter()
            .map(|stream| {
                self.evict_expired(&stream, now, evicted);
                match self.streams.get(&stream) {
                    Some(buffer) => StreamHistory {
                        known_after: buffer.known_after(),
                        frames: buffer.events_after(after).cloned().collect(),
                        name: stream,
                    },
                    None => StreamHistory {
                        known_after: self.known_after_without_history(&stream),
                        frames: Vec::new(),
                        name: stream,
                    },
                }
            })
            .collect();
        HistoryRead {
            last_issued,
            streams,
            others_known_after: self.floor,
        }
    }

    /// The newest held event of each stream `patterns` name or match.
    pub fn latest(&mut self, patterns: &[StreamPattern], evicted: &mut Evicted) -> Vec<Arc<Frame>> {
        let now = Instant::now();
        let mut frames = Vec::new();
        for stream in self.matching(patterns) {
            self.evict_expired(&stream, now, evicted);
            frames.extend(self.streams.get(&stream).and_then(ReplayBuffer::back).cloned());
        }
        frames
    }

    /// Where `stream` stands, with `head` the newest id issued.
    pub fn position(&mut self, stream: &StreamName, head: EventId, evicted: &mut Evicted) -> Position {
        self.evict_expired(stream, Instant::now(), evicted);
        let buffer = self.streams.get(stream);
        Position {
            head,
            last_id: buffer.and_then(ReplayBuffer::back).map(|frame| frame.id),
            buffered: buffer.map_or(0, ReplayBuffer::len),
        }
    }

    /// Evicts expired events everywhere, reclaims emptied histories (leaving
    /// tombstones) and folds tombstones into the floor past `max_streams`.
    pub fn sweep(&mut self, now: Instant, evicted: &mut Evicted) {
        let names: Vec<StreamName> = self.streams.keys().cloned().collect();
        for stream in &names {
            self.evict_expired(stream, now, evicted);
            if self.streams.get(stream).is_some_and(ReplayBuffer::is_empty)
                && let Some(buffer) = self.streams.remove(stream)
            {
                self.tombstones.insert(stream.clone(), buffer.known_after());
                evicted.reclaimed.push(stream.clone());
            }
        }
        if self.tombstones.len() > self.bounds.max_streams {
            let newest = self.tombstones.values().copied().max().unwrap_or(EventId::ZERO);
            self.floor = self.floor.max(newest);
            self.tombstones.clear();
            let streams = &self.streams;
            self.names.retain(|name| streams.contains_key(name));
            evicted.floor = Some(self.floor);
        }
        self.compact_order();
        metrics::gauge!(m::STREAMS_BUFFERED).set(self.streams.len() as f64);
        metrics::gauge!(m::HISTORY_BYTES).set(self.bytes as f64);
    }

    /// The floor: events of streams without history or tombstone are known above it.
    pub fn floor(&self) -> EventId {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bounds(buffer_size: usize, max_bytes: usize) -> Bounds {
        Bounds {
            buffer_size,
            ttl: None,
            max_bytes,
            max_streams: 100,
        }
    }

    fn frame(id: u64, size: usize) -> Arc<Frame> {
        Arc::new(Frame::notice(EventId::from_u64(id), Bytes::from(vec![b'x'; size])))
    }

    fn name(text: &str) -> StreamName {
        StreamName::try_new(text).unwrap()
    }

    fn known_after(history: &mut HeldHistory, stream: &str) -> u64 {
        history
            .read(
                &[StreamPattern::Exact(name(stream))],
                EventId::ZERO,
                EventId::MAX,
                &mut Evicted::default(),
            )
            .streams[0]
            .known_after
            .as_u64()
    }

    #[test]
    fn the_node_total_evicts_the_oldest_events_of_any_stream_first() {
        // Room for three events of 4 bytes (plus overhead) in all.
        let mut history = HeldHistory::new(bounds(100, 3 * (4 + EVENT_OVERHEAD_BYTES)), EventId::ZERO);
        let mut evicted = Evicted::default();
        history.append(&name("a"), frame(1, 4), &mut evicted);
        history.append(&name("b"), frame(2, 4), &mut evicted);
        history.append(&name("a"), frame(3, 4), &mut evicted);
        assert!(evicted.ids.is_empty());
        history.append(&name("c"), frame(4, 4), &mut evicted);
        assert_eq!(evicted.ids, [EventId::from_u64(1)], "the oldest, of stream a");
        history.append(&name("c"), frame(5, 4), &mut evicted);
        assert_eq!(evicted.ids, [EventId::from_u64(1), EventId::from_u64(2)]);
        assert_eq!(known_after(&mut history, "a"), 1);
        assert_eq!(known_after(&mut history, "b"), 2);
        assert!(history.bytes() <= 3 * (4 + EVENT_OVERHEAD_BYTES));
    }

    #[test]
    fn per_stream_evictions_leave_the_node_order_consistent() {
        let mut history = HeldHistory::new(bounds(2, usize::MAX), EventId::ZERO);
        let mut evicted = Evicted::default();
        for id in 1..=5000 {
            history.append(&name("a"), frame(id, 1), &mut evicted);
        }
        history.sweep(Instant::now(), &mut evicted);
        assert!(
            history.order.len() <= 2 * history.held + 1024,
            "stale entries are compacted"
        );
        assert_eq!(history.held, 2);
        assert_eq!(known_after(&mut history, "a"), 4998);
    }

    #[test]
    fn reclaimed_streams_keep_what_they_knew_until_folded() {
        let mut history = HeldHistory::new(
            Bounds {
                buffer_size: 10,
                ttl: Some(Duration::from_millis(1)),
                max_bytes: usize::MAX,
                max_streams: 1,
            },
            EventId::from_u64(1),
        );
        let mut evicted = Evicted::default();
        history.append(&name("a"), frame(5, 1), &mut evicted);
        let later = Instant::now() + Duration::from_secs(1);
        history.sweep(later, &mut evicted);
        assert_eq!(evicted.reclaimed, [name("a")]);
        assert_eq!(known_after(&mut history, "a"), 5);
        assert_eq!(known_after(&mut history, "never"), 1, "the floor");
        history.append(&name("b"), frame(6, 1), &mut evicted);
        history.sweep(later + Duration::from_secs(1), &mut evicted);
        assert_eq!(
            evicted.floor,
            Some(EventId::from_u64(6)),
            "two tombstones > max_streams fold"
        );
        assert_eq!(known_after(&mut history, "a"), 6);
    }

    #[test]
    fn a_pattern_reads_every_matching_stream_including_reclaimed_ones() {
        let mut history = HeldHistory::new(
            Bounds {
                buffer_size: 10,
                ttl: Some(Duration::from_secs(60)),
                max_bytes: usize::MAX,
                max_streams: 10,
            },
            EventId::from_u64(1),
        );
        let mut evicted = Evicted::default();
        history.append(&name("ci.a"), frame(5, 1), &mut evicted);
        history.append(&name("ci.b"), frame(6, 1), &mut evicted);
        history.append(&name("cd"), frame(7, 1), &mut evicted);
        history.sweep(Instant::now() + Duration::from_secs(120), &mut evicted);
        history.append(&name("ci.b"), frame(8, 1), &mut evicted);
        let read = history.read(
            &[StreamPattern::try_new("ci.*").unwrap()],
            EventId::from_u64(4),
            EventId::MAX,
            &mut evicted,
        );
        let names: Vec<&str> = read.streams.iter().map(|stream| stream.name.as_str()).collect();
        assert_eq!(names, ["ci.a", "ci.b"], "ci.a only as a tombstone; cd does not match");
        assert_eq!(
            read.known_after(&StreamPattern::try_new("ci.*").unwrap()),
            EventId::from_u64(6)
        );
        assert_eq!(read.others_known_after, EventId::from_u64(1));
        let latest = history.latest(&[StreamPattern::Any], &mut evicted);
        assert_eq!(latest.iter().map(|frame| frame.id.as_u64()).collect::<Vec<_>>(), [8]);
        let position = history.position(&name("ci.b"), EventId::from_u64(9), &mut evicted);
        assert_eq!(
            (position.head, position.last_id, position.buffered),
            (EventId::from_u64(9), Some(EventId::from_u64(8)), 1)
        );
    }

    #[test]
    fn the_overhead_per_event_covers_what_an_event_holds() {
        let arc_header = 2 * size_of::<usize>();
        let buffer_slot = size_of::<Arc<Frame>>();
        let order_entry = size_of::<(EventId, StreamName)>();
        let held = arc_header + size_of::<Frame>() + buffer_slot + order_entry;
        assert!(held <= EVENT_OVERHEAD_BYTES, "{held} bytes per event");
    }
}
