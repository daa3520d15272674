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

use crate::event::EventId;
use crate::frame::Frame;
use crate::metrics as m;
use crate::sse;
use crate::stream::{StreamName, StreamPattern, StreamRegistry};

/// One consistent read of some streams' history, taken at one point of the
/// deployment's id order.
#[derive(Debug)]
pub struct HistoryRead {
    /// The newest id the deployment had issued when the read was taken.
    pub last_issued: EventId,
    /// Every stream read by name or matched by a pattern, once each.
    pub streams: Vec<StreamHistory>,
    /// Streams not in `streams` have no event with a greater id (nothing of them
    /// is held, and what was forgotten is below this): what a pattern relies on
    /// for the streams it matches that the broker holds nothing of.
    pub others_known_after: EventId,
}

impl HistoryRead {
    /// Every event of a stream `pattern` matches with a greater id is in the read
    /// (or was published after it).
    pub fn known_after(&self, pattern: &StreamPattern) -> EventId {
        match pattern {
            StreamPattern::Exact(name) => self
                .streams
                .iter()
                .find(|stream| stream.name == *name)
                .map_or(self.others_known_after, |stream| stream.known_after),
            _ => self
                .streams
                .iter()
                .filter(|stream| pattern.matches(&stream.name))
                .map(|stream| stream.known_after)
                .fold(self.others_known_after, EventId::max),
        }
    }
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
    /// Subscribed names and patterns whose replay cannot be proven complete.
    pub gaps: Vec<StreamPattern>,
    /// The resume id, when it is one this deployment could have issued (the client
    /// holds every event up to it); `None` for no resume or an unusable id.
    pub resumed_from: Option<EventId>,
}

impl Replay {
    /// The newest held event of each subscribed stream (`replay=latest`), in id order.
    pub fn latest(mut frames: Vec<Arc<Frame>>) -> Self {
        sort_and_dedup(&mut frames);
        Self {
            frames,
            ..Self::default()
        }
    }

    /// Every event up to this id reached the subscriber (before the resume point or
    /// in the replay): live frames not newer are duplicates at the seam. The larger
    /// of the two, so a node whose live feed lags behind history never repeats what
    /// the client already has.
    pub fn seam(&self) -> EventId {
        let replayed = self.frames.last().map_or(EventId::ZERO, |frame| frame.id);
        replayed.max(self.resumed_from.unwrap_or(EventId::ZERO))
    }
}

fn sort_and_dedup(frames: &mut Vec<Arc<Frame>>) {
    frames.sort_unstable_by_key(|frame| frame.id);
    frames.dedup_by_key(|frame| frame.id);
}

/// The replay for a subscriber of `patterns` resuming from `resume`, from a read
/// taken after `resume.read_after()`. An id above every id issued was never given
/// out: like an unreadable one it earns a gap notice for every name and pattern
/// and all that is held.
pub fn resolve(read: HistoryRead, patterns: &[StreamPattern], resume: Resume) -> Replay {
    let recognised = matches!(resume, Resume::After(id) if id <= read.last_issued);
    let after = if recognised { resume.read_after() } else { EventId::ZERO };
    let gaps = patterns
        .iter()
        .filter(|pattern| !recognised || after < read.known_after(pattern))
        .cloned()
        .collect();
    // The first stream's list is the replay's: a subscriber of one stream (the
    // usual case) resumes with no second list and no regrowth of one. In a storm
    // of 5,000 resumes that regrowth took about a third of the pages the server
    // touched (`perf record -e page-faults`: docs/BENCHMARKS.md, "The storm's
    // pages").
    let mut streams = read.streams.into_iter();
    let mut frames = streams.next().map(|stream| stream.frames).unwrap_or_default();
    for stream in streams {
        frames.extend(stream.frames);
    }
    frames.retain(|frame| frame.id > after);
    sort_and_dedup(&mut frames);
    Replay {
        frames,
        gaps,
        resumed_from: recognised.then_some(after),
    }
}

/// Brings this node's subscribers of `patterns` (every name and pattern with local
/// subscribers, as read) up to date after their live feed was interrupted at
/// `delivered_through`: a gap notice for each name or pattern whose history after
/// that point is incomplete, then every held event after it in id order. Returns
/// the new point: everything up to it has been delivered.
pub fn catch_up(
    read: &HistoryRead,
    patterns: &[StreamPattern],
    delivered_through: EventId,
    registry: &StreamRegistry,
) -> EventId {
    for pattern in patterns {
        if read.known_after(pattern) > delivered_through {
            metrics::counter!(m::GAP_NOTICES).increment(1);
            registry.deliver_to(pattern, &Arc::new(gap_frame(pattern, delivered_through)));
        }
    }
    let mut missed: Vec<(&StreamName, &Arc<Frame>)> = read
        .streams
        .iter()
        .flat_map(|stream| stream.frames.iter().map(move |frame| (&stream.name, frame)))
        .filter(|(_, frame)| frame.id > delivered_through)
        .collect();
    missed.sort_unstable_by_key(|(_, frame)| frame.id);
    missed.dedup_by_key(|(_, frame)| frame.id);
    for (stream, frame) in missed {
        registry.deliver(stream, frame);
    }
    delivered_through.max(read.last_issued)
}

/// A gap notice for the live subscribers of one name or pattern, carrying
/// `delivered_through` (every earlier event was already queued for them). Not an
/// event: its frame id sorts after every id at the replay seam.
fn gap_frame(pattern: &StreamPattern, delivered_through: EventId) -> Frame {
    Frame::notice(
        EventId::MAX,
        sse::encode_gap_notice(std::slice::from_ref(pattern), Some(delivered_through)),
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(id: u64) -> Arc<Frame> {
        Arc::new(Frame::notice(EventId::from_u64(id), Bytes::new()))
    }

    fn pattern(text: &str) -> StreamPattern {
        StreamPattern::try_new(text).unwrap()
    }

    fn patterns(texts: &[&str]) -> Vec<StreamPattern> {
        texts.iter().map(|text| pattern(text)).collect()
    }

    fn read(last: u64, others: u64, streams: &[(&str, u64, &[u64])]) -> HistoryRead {
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
            others_known_after: EventId::from_u64(others),
        }
    }

    fn ids(replay: &Replay) -> Vec<u64> {
        replay.frames.iter().map(|f| f.id.as_u64()).collect()
    }

    fn after(id: u64) -> Resume {
        Resume::After(EventId::from_u64(id))
    }

    #[test]
    fn a_recognised_resume_is_complete_only_above_what_each_stream_lost() {
        let replay = resolve(
            read(20, 0, &[("a", 10, &[12, 15]), ("b", 3, &[11, 20])]),
            &patterns(&["a", "b"]),
            after(5),
        );
        assert_eq!(ids(&replay), [11, 12, 15, 20], "merged in id order");
        assert_eq!(replay.gaps, [pattern("a")]);
        assert_eq!(replay.resumed_from, Some(EventId::from_u64(5)));
        assert_eq!(replay.seam(), EventId::from_u64(20));
    }

    #[test]
    fn a_pattern_is_complete_only_when_every_matching_stream_and_the_rest_are() {
        let streams: &[(&str, u64, &[u64])] = &[("ci.a", 3, &[11]), ("ci.b", 9, &[12]), ("other", 15, &[16])];
        let replay = resolve(read(20, 2, streams), &patterns(&["ci.*", "other"]), after(5));
        assert_eq!(replay.gaps, [pattern("ci.*"), pattern("other")], "ci.b lost up to 9");
        assert_eq!(ids(&replay), [11, 12, 16]);
        let replay = resolve(read(20, 2, streams), &patterns(&["ci.*"]), after(9));
        assert!(replay.gaps.is_empty());
        // Streams the broker forgot entirely (folded into the floor) may have matched.
        let replay = resolve(read(20, 10, &[]), &patterns(&["ci.*"]), after(9));
        assert_eq!(replay.gaps, [pattern("ci.*")]);
        let replay = resolve(read(20, 10, &[]), &patterns(&["*"]), after(10));
        assert!(replay.gaps.is_empty());
    }

    #[test]
    fn an_id_never_issued_earns_a_gap_everywhere_and_all_that_is_held() {
        let replay = resolve(read(20, 0, &[("a", 0, &[12])]), &patterns(&["a", "b.*"]), after(99));
        assert_eq!(ids(&replay), [12]);
        assert_eq!(replay.gaps.len(), 2);
        assert_eq!(replay.resumed_from, None, "nothing received");
        let replay = resolve(read(20, 0, &[("a", 0, &[12])]), &patterns(&["a"]), Resume::Unrecognised);
        assert_eq!(
            (ids(&replay), replay.gaps.len(), replay.resumed_from),
            (vec![12], 1, None)
        );
    }

    #[test]
    fn the_seam_is_never_below_the_resume_id() {
        let replay = resolve(read(20, 0, &[("a", 0, &[])]), &patterns(&["a"]), after(18));
        assert!(replay.frames.is_empty());
        assert_eq!(replay.seam(), EventId::from_u64(18));
    }

    #[test]
    fn the_latest_events_come_in_id_order_once() {
        let replay = Replay::latest(vec![frame(9), frame(4), frame(9)]);
        assert_eq!(ids(&replay), [4, 9]);
        assert!(replay.gaps.is_empty() && replay.resumed_from.is_none());
        assert_eq!(replay.seam(), EventId::from_u64(9));
    }

    fn drain(receiver: &mut crate::stream::QueueReceiver) -> Vec<u64> {
        std::iter::from_fn(|| receiver.try_recv())
            .map(|frame| frame.id.as_u64())
            .collect()
    }

    #[tokio::test]
    async fn catching_up_sends_gap_notices_then_the_missed_events_in_order() {
        let registry = Arc::new(StreamRegistry::new(10, 16));
        let (queue, mut names) = registry.new_queue(tokio_util::sync::CancellationToken::new());
        let _names = registry.attach(&patterns(&["a", "b"]), &queue).unwrap();
        let (queue, mut prefix) = registry.new_queue(tokio_util::sync::CancellationToken::new());
        let _prefix = registry.attach(&patterns(&["b*"]), &queue).unwrap();
        let cursor = catch_up(
            &read(30, 0, &[("a", 12, &[13, 21]), ("b", 0, &[9, 14])]),
            &registry.patterns(),
            EventId::from_u64(10),
            &registry,
        );
        assert_eq!(cursor, EventId::from_u64(30));
        assert_eq!(drain(&mut names), [u64::MAX, 13, 14, 21], "gap for a, then 13, 14, 21");
        assert_eq!(drain(&mut prefix), [14], "b* was complete");
    }
}
