//! `ReplayBuffer`: one stream's bounded history, by count and by age.
//!
//! Besides the events it holds, a buffer remembers `known_after`: every event of the
//! stream with a greater id is in the buffer. Eviction raises it; a resume from an id
//! below it cannot be proven complete and earns a gap notice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::{EventId, Frame};

/// A bounded, id-ordered history of one stream.
#[derive(Debug)]
pub struct ReplayBuffer {
    frames: VecDeque<Arc<Frame>>,
    capacity: usize,
    ttl: Option<Duration>,
    known_after: EventId,
}

impl ReplayBuffer {
    /// An empty buffer that knows every event after `known_after` (none yet).
    /// A zero `ttl` means no age limit.
    pub fn new(capacity: usize, ttl: Duration, known_after: EventId) -> Self {
        Self {
            frames: VecDeque::new(),
            capacity,
            ttl: (!ttl.is_zero()).then_some(ttl),
            known_after,
        }
    }

    /// Appends `frame`, whose id must exceed every id held, evicting the oldest
    /// events beyond the capacity or the age limit.
    pub fn push(&mut self, frame: Arc<Frame>) {
        debug_assert!(self.frames.back().is_none_or(|last| last.id < frame.id));
        let now = frame.published_at;
        self.frames.push_back(frame);
        while self.frames.len() > self.capacity {
            self.evict_front();
        }
        self.evict_expired(now);
    }

    /// Drops events older than the age limit at `now`.
    pub fn evict_expired(&mut self, now: Instant) {
        let Some(ttl) = self.ttl else { return };
        while self
            .frames
            .front()
            .is_some_and(|front| now.saturating_duration_since(front.published_at) > ttl)
        {
            self.evict_front();
        }
    }

    fn evict_front(&mut self) {
        if let Some(evicted) = self.frames.pop_front() {
            self.known_after = self.known_after.max(evicted.id);
        }
    }

    /// Held events with an id greater than `after`, oldest first.
    pub fn events_after(&self, after: EventId) -> impl Iterator<Item = &Arc<Frame>> {
        let start = self.frames.partition_point(|frame| frame.id <= after);
        self.frames.range(start..)
    }

    /// Whether every event of this stream after `after` is held.
    pub fn is_complete_after(&self, after: EventId) -> bool {
        after >= self.known_after
    }

    /// Every event of the stream with a greater id is held.
    pub fn known_after(&self) -> EventId {
        self.known_after
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(id: u64, at: Instant) -> Arc<Frame> {
        Arc::new(Frame {
            id: EventId::from_u64(id),
            published_at: at,
            bytes: Bytes::new(),
        })
    }

    fn ids<'a>(frames: impl Iterator<Item = &'a Arc<Frame>>) -> Vec<u64> {
        frames.map(|f| f.id.as_u64()).collect()
    }

    #[test]
    fn evicts_by_count_and_remembers_what_it_lost() {
        let now = Instant::now();
        let mut buffer = ReplayBuffer::new(3, Duration::ZERO, EventId::from_u64(10));
        for id in 11..=15 {
            buffer.push(frame(id, now));
        }
        assert_eq!(ids(buffer.events_after(EventId::ZERO)), [13, 14, 15]);
        assert_eq!(buffer.known_after(), EventId::from_u64(12));
        assert!(buffer.is_complete_after(EventId::from_u64(12)));
        assert!(!buffer.is_complete_after(EventId::from_u64(11)));
        assert_eq!(ids(buffer.events_after(EventId::from_u64(13))), [14, 15]);
    }

    #[test]
    fn a_fresh_buffer_is_complete_only_after_its_floor() {
        let buffer = ReplayBuffer::new(3, Duration::ZERO, EventId::from_u64(100));
        assert!(buffer.is_complete_after(EventId::from_u64(100)));
        assert!(!buffer.is_complete_after(EventId::from_u64(99)));
    }

    #[test]
    fn evicts_by_age() {
        let start = Instant::now();
        let mut buffer = ReplayBuffer::new(100, Duration::from_secs(10), EventId::ZERO);
        buffer.push(frame(1, start));
        buffer.push(frame(2, start + Duration::from_secs(5)));
        buffer.evict_expired(start + Duration::from_secs(12));
        assert_eq!(ids(buffer.events_after(EventId::ZERO)), [2]);
        assert_eq!(buffer.known_after(), EventId::from_u64(1));
        buffer.evict_expired(start + Duration::from_secs(30));
        assert!(buffer.is_empty());
        assert_eq!(buffer.known_after(), EventId::from_u64(2));
    }
}
