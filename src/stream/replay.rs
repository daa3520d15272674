//! `ReplayBuffer`: one stream's held history, oldest first.
//!
//! Besides the events it holds, a buffer remembers `known_after`: every event of the
//! stream with a greater id is in the buffer. Evicting raises it; a resume from an
//! id below it cannot be proven complete and earns a gap notice. Which events to
//! evict (count, age, the node's total bytes) is the owner's decision.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::event::EventId;
use crate::frame::Frame;

/// An id-ordered history of one stream.
#[derive(Debug)]
pub struct ReplayBuffer {
    frames: VecDeque<Arc<Frame>>,
    known_after: EventId,
}

impl ReplayBuffer {
    /// An empty buffer that knows every event after `known_after` (none yet).
    pub fn new(known_after: EventId) -> Self {
        Self {
            frames: VecDeque::new(),
            known_after,
        }
    }

    /// Appends `frame`, whose id must exceed every id held.
    pub fn push(&mut self, frame: Arc<Frame>) {
        debug_assert!(self.frames.back().is_none_or(|last| last.id < frame.id));
        self.frames.push_back(frame);
    }

    /// The oldest event held.
    pub fn front(&self) -> Option<&Arc<Frame>> {
        self.frames.front()
    }

    /// The newest event held.
    pub fn back(&self) -> Option<&Arc<Frame>> {
        self.frames.back()
    }

    /// Drops the oldest event; every event after it is still known.
    pub fn evict_front(&mut self) -> Option<Arc<Frame>> {
        let evicted = self.frames.pop_front()?;
        self.known_after = self.known_after.max(evicted.id);
        Some(evicted)
    }

    /// Held events with an id greater than `after`, oldest first.
    pub fn events_after(&self, after: EventId) -> impl Iterator<Item = &Arc<Frame>> {
        let start = self.frames.partition_point(|frame| frame.id <= after);
        self.frames.range(start..)
    }

    /// Every event of the stream with a greater id is held.
    pub fn known_after(&self) -> EventId {
        self.known_after
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(id: u64) -> Arc<Frame> {
        Arc::new(Frame::notice(EventId::from_u64(id), Bytes::new()))
    }

    fn ids<'a>(frames: impl Iterator<Item = &'a Arc<Frame>>) -> Vec<u64> {
        frames.map(|f| f.id.as_u64()).collect()
    }

    #[test]
    fn evicting_remembers_what_was_lost() {
        let mut buffer = ReplayBuffer::new(EventId::from_u64(10));
        for id in 11..=15 {
            buffer.push(frame(id));
        }
        buffer.evict_front();
        buffer.evict_front();
        assert_eq!(ids(buffer.events_after(EventId::ZERO)), [13, 14, 15]);
        assert_eq!(buffer.known_after(), EventId::from_u64(12));
        assert_eq!(ids(buffer.events_after(EventId::from_u64(13))), [14, 15]);
    }

    #[test]
    fn a_fresh_buffer_knows_everything_after_its_floor() {
        let mut buffer = ReplayBuffer::new(EventId::from_u64(100));
        assert_eq!(buffer.known_after(), EventId::from_u64(100));
        assert!(buffer.evict_front().is_none());
        assert_eq!(buffer.known_after(), EventId::from_u64(100));
    }
}
