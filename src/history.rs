//! History reads and the gap logic: the one place that decides whether what a
//! subscriber is about to receive is complete.
//!
//! A broker answers a read of some streams after an id with, per stream, the held
//! events after that id and `known_after`: every event of that stream with a
//! greater id is held. Replaying a stream after `after` is complete exactly when
//! `after >= known_after`; otherwise the subscriber is told with a gap notice. The
//! same rule serves a new subscriber ([`resolve`]) and a node whose live feed broke
//! and must catch up ([`catch_up`]).

use std::sync::Arc;
use std::time::Instant;

use crate::event::{EventId, Frame};
use crate::metrics as m;
use crate::sse;
use crate::stream::{StreamName, StreamRegistry};

/// One consistent read of several streams' history, taken at one point of the
/// deployment's id order.
#[derive(Debug)]
pub struct HistoryRead {
    /// The newest id the deployment had issued when the read was taken.
    pub last_issued: EventId,
    pub streams: Vec<StreamHistory>,
}

/// What one stream's history holds after the id that was read after.
#[derive(Debug)]
pub struct StreamHistory {
    pub name: StreamName,
    /// Every event of this stream with a greater id is in `frames` (or was
    /// published after the read).
    pub known_after: EventId,
    /// Held events after the id read after, in id order.
    pub frames: Vec<Arc<Frame>>,
}

impl StreamHistory {
    /// Whether every event of this stream after `after` is held.
    pub fn is_complete_after(&self, after: EventId) -> bool {
        after >= self.known_after
    }
}

/// Where a subscriber wants to resume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Replay the events after this id.
    After(EventId),
    /// The client sent an id that cannot be read: gap notice, then all history.
    Unrecognised,
}

impl Resume {
    /// The id to read history after (from the start for an unreadable id).
    pub fn read_after(self) -> EventId {
        match self {
            Self::After(id) => id,
            Self::Unrecognised => EventId::ZERO,
        }
    }
}

/// What a new subscriber receives before live events.
#[derive(Debug, Default)]
pub struct Replay {
    /// Held events of the subscribed streams after the resume point, in id order.
    pub frames: Vec<Arc<Frame>>,
    /// Streams whose replay cannot be proven complete.
    pub gaps: Vec<StreamName>,
    /// The resume id, when it is one this deployment could have issued (the client
    /// holds every event up to it); `None` for no resume or an unusable id.
    pub resumed_from: Option<EventId>,
}

impl Replay {
    /// Every event up to this id reached the subscriber (before the resume point or
    /// in the replay): live frames not newer are duplicates at the seam. The larger
    /// of the two, so a node whose live feed lags behind history never repeats what
    /// the client already has.
    pub fn seam(&self) -> EventId {
        let replayed = self.frames.last().map_or(EventId::ZERO, |frame| frame.id);
        replayed.max(self.resumed_from.unwrap_or(EventId::ZERO))
    }
}

/// The replay for a subscriber resuming from `resume`, from a read taken after
/// `resume.read_after()`. An id above every id issued was never given out: like an
/// unreadable one it earns a gap notice for every stream and all that is held.
pub fn resolve(read: HistoryRead, resume: Resume) -> Replay {
    let recognised = matches!(resume, Resume::After(id) if id <= read.last_issued);
    let after = if recognised { resume.read_after() } else { EventId::ZERO };
    let mut replay = Replay {
        resumed_from: recognised.then_some(after),
        ..Replay::default()
    };
    for stream in read.streams {
        if !recognised || !stream.is_complete_after(after) {
            replay.gaps.push(stream.name.clone());
        }
        replay
            .frames
            .extend(stream.frames.into_iter().filter(|frame| frame.id > after));
    }
    replay.frames.sort_unstable_by_key(|frame| frame.id);
    replay
}

/// Brings this node's subscribers of the streams in `read` up to date after their
/// live feed was interrupted at `delivered_through`: a gap notice for each stream
/// whose history after that point is incomplete, then every held event after it in
/// id order. Returns the new point: everything up to it has been delivered.
pub fn catch_up(read: &HistoryRead, delivered_through: EventId, registry: &StreamRegistry) -> EventId {
    let mut missed: Vec<(&StreamName, &Arc<Frame>)> = Vec::new();
    for stream in &read.streams {
        if !stream.is_complete_after(delivered_through) {
            metrics::counter!(m::GAP_NOTICES).increment(1);
            registry.deliver(&stream.name, &Arc::new(gap_frame(&stream.name, delivered_through)));
        }
        missed.extend(
            stream
                .frames
                .iter()
                .filter(|frame| frame.id > delivered_through)
                .map(|frame| (&stream.name, frame)),
        );
    }
    missed.sort_unstable_by_key(|(_, frame)| frame.id);
    for (stream, frame) in missed {
        registry.deliver(stream, frame);
    }
    delivered_through.max(read.last_issued)
}

/// A gap notice for the live subscribers of one stream, carrying `delivered_through`
/// (every earlier event was already queued for them). Not an event: its frame id
/// sorts after every id at the replay seam.
fn gap_frame(stream: &StreamName, delivered_through: EventId) -> Frame {
    Frame {
        id: EventId::MAX,
        published_at: Instant::now(),
        bytes: sse::encode_gap_notice(std::slice::from_ref(stream), Some(delivered_through)),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(id: u64) -> Arc<Frame> {
        Arc::new(Frame {
            id: EventId::from_u64(id),
            published_at: Instant::now(),
            bytes: Bytes::new(),
        })
    }

    fn read(last: u64, streams: &[(&str, u64, &[u64])]) -> HistoryRead {
        HistoryRead {
            last_issued: EventId::from_u64(last),
            streams: streams
                .iter()
                .map(|(name, known_after, ids)| StreamHistory {
                    name: StreamName::try_new(name).unwrap(),
                    known_after: EventId::from_u64(*known_after),
                    frames: ids.iter().map(|id| frame(*id)).collect(),
                })
                .collect(),
        }
    }

    fn ids(replay: &Replay) -> Vec<u64> {
        replay.frames.iter().map(|f| f.id.as_u64()).collect()
    }

    #[test]
    fn a_recognised_resume_is_complete_only_above_what_each_stream_lost() {
        let replay = resolve(
            read(20, &[("a", 10, &[12, 15]), ("b", 3, &[11, 20])]),
            Resume::After(EventId::from_u64(5)),
        );
        assert_eq!(ids(&replay), [11, 12, 15, 20], "merged in id order");
        assert_eq!(replay.gaps, [StreamName::try_new("a").unwrap()]);
        assert_eq!(replay.resumed_from, Some(EventId::from_u64(5)));
        assert_eq!(replay.seam(), EventId::from_u64(20));
    }

    #[test]
    fn an_id_never_issued_earns_a_gap_everywhere_and_all_that_is_held() {
        let replay = resolve(read(20, &[("a", 0, &[12])]), Resume::After(EventId::from_u64(99)));
        assert_eq!(ids(&replay), [12]);
        assert_eq!(replay.gaps.len(), 1);
        assert_eq!(replay.resumed_from, None, "nothing received");
        let replay = resolve(read(20, &[("a", 0, &[12])]), Resume::Unrecognised);
        assert_eq!(
            (ids(&replay), replay.gaps.len(), replay.resumed_from),
            (vec![12], 1, None)
        );
    }

    #[test]
    fn the_seam_is_never_below_the_resume_id() {
        let replay = resolve(read(20, &[("a", 0, &[])]), Resume::After(EventId::from_u64(18)));
        assert!(replay.frames.is_empty());
        assert_eq!(replay.seam(), EventId::from_u64(18));
    }

    #[tokio::test]
    async fn catching_up_sends_gap_notices_then_the_missed_events_in_order() {
        let registry = StreamRegistry::new(10, 16);
        let (queue, mut receiver) = registry.new_queue(tokio_util::sync::CancellationToken::new());
        let streams = [StreamName::try_new("a").unwrap(), StreamName::try_new("b").unwrap()];
        registry.attach_all(&streams, &queue).unwrap();
        let cursor = catch_up(
            &read(30, &[("a", 12, &[13, 21]), ("b", 0, &[9, 14])]),
            EventId::from_u64(10),
            &registry,
        );
        assert_eq!(cursor, EventId::from_u64(30));
        let mut received = Vec::new();
        while let Some(frame) = receiver.try_recv() {
            received.push(frame.id.as_u64());
        }
        assert_eq!(received, [u64::MAX, 13, 14, 21], "gap for a, then 13, 14, 21");
    }
}
