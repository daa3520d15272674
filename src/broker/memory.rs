//! `MemoryBroker`: the embedded default. Ids from an [`IdClock`], history in
//! per-stream [`ReplayBuffer`]s, events pushed straight into the local registry.
//!
//! One sequencer mutex orders every publish and every read. Holding it while an
//! event gets its id, joins its history and reaches the subscriber queues makes all
//! queues see events in id order; reading under it gives a read that is a prefix of
//! that order, which is what makes listen-then-read exact. The critical section does
//! no I/O and no allocation per subscriber, so one lock is cheaper than the
//! reordering a sharded design would need.
//!
//! Durability: none. A restarted node starts a new id range above the old one, so
//! resumes from before the restart cannot be proven complete (gap notice).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::{Broker, BrokerError};
use crate::config::Config;
use crate::event::{EventId, Frame, IdClock, NewEvent};
use crate::history::{HistoryRead, StreamHistory};
use crate::metrics as m;
use crate::sse;
use crate::stream::{ReplayBuffer, StreamName, StreamRegistry};

/// The in-process broker.
#[derive(Debug)]
pub struct MemoryBroker {
    sequencer: Mutex<IdClock>,
    histories: DashMap<StreamName, ReplayBuffer>,
    /// What a reclaimed history knew (`known_after`), per stream, so a stream that
    /// went quiet still proves completeness; at most `limits.max_streams` entries.
    tombstones: DashMap<StreamName, EventId>,
    /// Events of streams with neither history nor tombstone are known only above
    /// this id: the clock's start, raised when tombstones are folded into it.
    floor: AtomicU64,
    registry: Arc<StreamRegistry>,
    buffer_size: usize,
    buffer_ttl: Duration,
    max_streams: usize,
    sweeper: CancellationToken,
}

impl MemoryBroker {
    /// Creates the broker and starts its sweeper, which evicts expired events and
    /// reclaims empty histories every `streams.sweep_interval`.
    pub fn start(config: &Config, registry: Arc<StreamRegistry>) -> Arc<Self> {
        let clock = IdClock::start_now();
        let backend = Arc::new(Self {
            floor: AtomicU64::new(clock.start_floor().as_u64()),
            sequencer: Mutex::new(clock),
            histories: DashMap::new(),
            tombstones: DashMap::new(),
            registry,
            buffer_size: config.streams.buffer_size,
            buffer_ttl: config.streams.buffer_ttl,
            max_streams: config.limits.max_streams,
            sweeper: CancellationToken::new(),
        });
        tokio::spawn(sweep_periodically(
            Arc::downgrade(&backend),
            config.streams.sweep_interval,
            backend.sweeper.clone(),
        ));
        backend
    }

    fn lock_sequencer(&self) -> MutexGuard<'_, IdClock> {
        // A panic inside the critical section cannot leave a half-written id; the
        // clock stays monotonic, so a poisoned lock is still safe to use.
        self.sequencer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Above which id every event of `stream` is known when it has no history.
    /// Reads the tombstone before the floor: folding raises the floor before it
    /// clears tombstones, so this never misses both.
    fn known_after_without_history(&self, stream: &StreamName) -> EventId {
        let tombstone = self.tombstones.get(stream).map_or(EventId::ZERO, |known| *known);
        tombstone.max(EventId::from_u64(self.floor.load(Ordering::Acquire)))
    }

    /// Refuses a batch that would create more histories than `limits.max_streams`.
    fn check_stream_limit(&self, events: &[NewEvent]) -> Result<(), BrokerError> {
        let mut new_streams: Vec<&StreamName> = events
            .iter()
            .map(|event| &event.stream)
            .filter(|stream| !self.histories.contains_key(*stream))
            .collect();
        new_streams.sort_unstable();
        new_streams.dedup();
        if self.histories.len() + new_streams.len() > self.max_streams {
            return Err(BrokerError::StreamLimit);
        }
        Ok(())
    }

    fn append(&self, stream: &StreamName, frame: Arc<Frame>) {
        self.histories
            .entry(stream.clone())
            .or_insert_with(|| {
                // Under the shard lock, so a concurrent reclaim of this stream has
                // either finished (its tombstone is visible) or not begun.
                let known_after = self.known_after_without_history(stream);
                self.tombstones.remove(stream);
                ReplayBuffer::new(self.buffer_size, self.buffer_ttl, known_after)
            })
            .push(frame);
    }

    /// History of `streams` after `after`, read under the sequencer lock.
    fn read_history(&self, streams: &[StreamName], after: EventId, last_issued: EventId) -> HistoryRead {
        // An id never issued reads everything held (the node sends a gap notice).
        let after = if after > last_issued { EventId::ZERO } else { after };
        let now = Instant::now();
        let streams = streams
            .iter()
            .map(|stream| match self.histories.get_mut(stream) {
                Some(mut history) => {
                    history.evict_expired(now);
                    StreamHistory {
                        name: stream.clone(),
                        known_after: history.known_after(),
                        frames: history.events_after(after).cloned().collect(),
                    }
                }
                // Read after the lookup: a reclaim that removed the history wrote
                // its tombstone first.
                None => StreamHistory {
                    name: stream.clone(),
                    known_after: self.known_after_without_history(stream),
                    frames: Vec::new(),
                },
            })
            .collect();
        HistoryRead { last_issued, streams }
    }

    /// Evicts expired events and reclaims histories left empty, leaving a tombstone
    /// with what each knew; folds tombstones into the floor past `max_streams`.
    fn sweep(&self) {
        let now = Instant::now();
        self.histories.retain(|stream, history| {
            history.evict_expired(now);
            if history.is_empty() {
                // Before the entry disappears, so a resume that no longer finds this
                // history still sees what it lost.
                self.tombstones.insert(stream.clone(), history.known_after());
                return false;
            }
            true
        });
        if self.tombstones.len() > self.max_streams {
            let newest = self
                .tombstones
                .iter()
                .map(|entry| *entry.value())
                .max()
                .unwrap_or(EventId::ZERO);
            self.floor.fetch_max(newest.as_u64(), Ordering::AcqRel);
            self.tombstones.clear();
        }
        metrics::gauge!(m::STREAMS_BUFFERED).set(self.histories.len() as f64);
    }
}

async fn sweep_periodically(backend: Weak<MemoryBroker>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(backend) = backend.upgrade() else {
            return;
        };
        backend.sweep();
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>, BrokerError> {
        let mut clock = self.lock_sequencer();
        self.check_stream_limit(&events)?;
        let published_at = Instant::now();
        let mut ids = Vec::with_capacity(events.len());
        for event in events {
            let id = clock.next_id();
            let frame = Arc::new(Frame {
                id,
                published_at,
                bytes: sse::encode_event(id, event.event_type.as_ref(), &event.data),
            });
            self.registry.deliver(&event.stream, &frame);
            self.append(&event.stream, frame);
            ids.push(id);
        }
        Ok(ids)
    }

    async fn listen(&self, _streams: &[StreamName]) -> Result<(), BrokerError> {
        // Every publish reaches the registry under the sequencer lock.
        Ok(())
    }

    async fn read(&self, streams: &[StreamName], after: EventId) -> Result<HistoryRead, BrokerError> {
        let clock = self.lock_sequencer();
        Ok(self.read_history(streams, after, clock.last()))
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn close(&self) {
        self.sweeper.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(ttl: Duration, max_streams: usize) -> Arc<MemoryBroker> {
        let mut config = Config::default();
        config.streams.buffer_ttl = ttl;
        config.limits.max_streams = max_streams;
        MemoryBroker::start(&config, Arc::new(StreamRegistry::new(10, 8)))
    }

    fn event(stream: &str) -> NewEvent {
        NewEvent {
            stream: StreamName::try_new(stream).unwrap(),
            event_type: None,
            data: "x".to_owned(),
        }
    }

    async fn gaps(backend: &MemoryBroker, stream: &str, after: EventId) -> Vec<StreamName> {
        let streams = [StreamName::try_new(stream).unwrap()];
        let read = backend.read(&streams, after).await.unwrap();
        crate::history::resolve(read, crate::history::Resume::After(after)).gaps
    }

    #[tokio::test]
    async fn reclaiming_one_quiet_stream_does_not_raise_gaps_on_others() {
        let backend = backend(Duration::from_millis(1), 100);
        let quiet = backend.publish(vec![event("quiet")]).await.unwrap()[0];
        let busy = backend.publish(vec![event("busy")]).await.unwrap()[0];
        tokio::time::sleep(Duration::from_millis(5)).await;
        backend.sweep();
        assert!(
            backend.histories.is_empty(),
            "both histories expired and were reclaimed"
        );
        // Resuming exactly where each stream stopped proves completeness.
        assert!(gaps(&backend, "quiet", quiet).await.is_empty());
        assert!(gaps(&backend, "busy", busy).await.is_empty());
        assert!(gaps(&backend, "brand-new", busy).await.is_empty());
        // Resuming from before an expired event is a gap.
        assert_eq!(gaps(&backend, "busy", quiet).await.len(), 1);
    }

    #[tokio::test]
    async fn tombstones_past_the_stream_limit_fold_into_the_floor() {
        let backend = backend(Duration::from_millis(1), 2);
        let mut ids = Vec::new();
        for stream in ["a", "b", "c"] {
            ids.push(backend.publish(vec![event(stream)]).await.unwrap()[0]);
            tokio::time::sleep(Duration::from_millis(5)).await;
            backend.sweep();
        }
        assert!(backend.tombstones.is_empty());
        // Conservative after folding: resuming before the newest reclaimed event is a gap.
        assert_eq!(gaps(&backend, "a", ids[0]).await.len(), 1);
        assert!(gaps(&backend, "c", ids[2]).await.is_empty());
    }
}
