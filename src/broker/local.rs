//! `LocalBroker`: one node whose history is held in this process ([`HeldHistory`]),
//! in two kinds:
//! - **memory**: nothing survives the process; a restarted node starts a new id
//!   range above the old one, so resumes from before it earn gap notices;
//! - **disk**: every publish is written to a data directory with group commit
//!   before it is acknowledged ([`disk::Journal`]), and the history is loaded back
//!   at start, so resumes across a restart or a `kill -9` are exact. Ids go on after
//!   the newest stored one, whatever the wall clock says.
//!
//! One sequencer mutex orders every publish and every read. Holding it while an
//! event gets its id, joins its history and reaches the subscriber queues (memory),
//! or while it is staged for the journal in id order (disk), makes all queues see
//! events in id order; reading under it gives a read that is a prefix of that
//! order. The critical section does no I/O and no allocation per subscriber.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::disk::{self, DataDir, Journal, RevocationStore, Staged, StagedKey, StoredEvent, StoredKey};
use super::held::{Bounds, Evicted, HeldHistory};
use super::{Broker, BrokerError, Position, Published};
use crate::config::Config;
use crate::event::{EventId, IdClock, NewEvent, unix_millis};
use crate::frame::Frame;
use crate::history::HistoryRead;
use crate::idempotency::{Claim, ClaimGuard, IdempotencyCache, IdempotencyKey};
use crate::revocation::{Revocation, Revocations, now_ms};
use crate::stream::{StreamName, StreamPattern, StreamRegistry};

/// Idempotency keys a node remembers at once (each about 200 bytes).
const KEYS_REMEMBERED: usize = 100_000;

/// The broker of a single node.
#[derive(Debug)]
pub struct LocalBroker {
    state: Arc<Mutex<Local>>,
    registry: Arc<StreamRegistry>,
    /// Idempotency keys (written with their events on disk, loaded at start).
    keys: IdempotencyCache,
    /// Set for the disk kind.
    journal: Option<Journal>,
    /// Set for the disk kind, with the expiry of each stored revocation (to remove
    /// the expired ones with the next write).
    revocation_store: Option<(RevocationStore, Mutex<HashMap<String, u64>>)>,
    sweeper: CancellationToken,
}

#[derive(Debug)]
struct Local {
    clock: IdClock,
    held: HeldHistory,
}

fn lock(state: &Mutex<Local>) -> MutexGuard<'_, Local> {
    // A panic inside the critical section cannot leave a half-written id; the clock
    // stays monotonic, so a poisoned lock is still safe to use.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn bounds(config: &Config) -> Bounds {
    let ttl = config.streams.buffer_ttl;
    Bounds {
        buffer_size: config.streams.buffer_size,
        ttl: (!ttl.is_zero()).then_some(ttl),
        max_bytes: config.streams.max_history_bytes,
        max_streams: config.limits.max_streams,
    }
}

impl LocalBroker {
    /// The memory kind; starts the sweeper, which evicts expired events and
    /// reclaims empty histories every `streams.sweep_interval`.
    pub fn memory(config: &Config, registry: Arc<StreamRegistry>) -> Arc<Self> {
        let clock = IdClock::start_now();
        let held = HeldHistory::new(bounds(config), clock.start_floor());
        let state = Arc::new(Mutex::new(Local { clock, held }));
        Self::start_with_state(
            config,
            registry,
            state,
            IdempotencyCache::new(KEYS_REMEMBERED),
            None,
            None,
        )
    }

    /// The disk kind: opens `backend.disk.path`, loads the history back and starts
    /// the journal.
    ///
    /// # Errors
    /// [`BrokerError::Startup`] naming the data directory when it cannot be used.
    pub fn disk(
        config: &Config,
        registry: Arc<StreamRegistry>,
        revocations: &Revocations,
    ) -> Result<Arc<Self>, BrokerError> {
        Self::disk_with_clock(config, registry, revocations, unix_millis)
    }

    /// Like [`LocalBroker::disk`], with ids from another time source (tests).
    ///
    /// # Errors
    /// As [`LocalBroker::disk`].
    pub fn disk_with_clock(
        config: &Config,
        registry: Arc<StreamRegistry>,
        revocations: &Revocations,
        now: fn() -> u64,
    ) -> Result<Arc<Self>, BrokerError> {
        let disk_config = &config.backend.disk;
        let startup = |error: disk::StoreError| BrokerError::Startup(error.to_string());
        let started = Instant::now();
        let (dir, opened) = DataDir::open(&disk_config.path, disk_config.fsync).map_err(startup)?;
        let clock = IdClock::resume_after(opened.last_id.unwrap_or(EventId::ZERO), now);
        let floor = opened.floor.unwrap_or_else(|| clock.start_floor());
        let mut held = HeldHistory::new(bounds(config), floor);
        for (stream, known_after) in opened.known_after {
            held.restore_tombstone(stream, known_after);
        }
        let mut evicted = Evicted::default();
        let (now_wall, now_instant) = (unix_millis(), Instant::now());
        let loaded = dir
            .for_each_event(|stored| {
                let age = Duration::from_millis(now_wall.saturating_sub(stored.published_ms));
                let published_at = now_instant.checked_sub(age).unwrap_or(now_instant);
                let frame = Arc::new(Frame::event(stored.id, published_at, &stored.event));
                held.append(&stored.event.stream, frame, &mut evicted);
            })
            .map_err(startup)?;
        held.sweep(Instant::now(), &mut evicted);
        let keys = IdempotencyCache::new(KEYS_REMEMBERED);
        let now_ms = unix_millis();
        dir.for_each_key(|stored| {
            if stored.expires_ms <= now_ms {
                evicted.keys.push(stored.key);
                return;
            }
            let key = IdempotencyKey {
                key: stored.key,
                fingerprint: stored.fingerprint,
                ttl: Duration::from_millis(stored.expires_ms - now_ms),
            };
            keys.restore(&key, stored.ids);
        })
        .map_err(startup)?;
        let mut stored_revocations = HashMap::new();
        dir.for_each_revocation(|revocation| {
            revocations.receive(&revocation, "store");
            stored_revocations.insert(revocation.target.key(), revocation.expires_ms);
        })
        .map_err(startup)?;
        let revocation_store = Some((dir.revocation_store(), Mutex::new(stored_revocations)));
        tracing::info!(
            path = %disk_config.path.display(),
            events = loaded,
            held_bytes = held.bytes(),
            elapsed = ?started.elapsed(),
            "loaded durable history"
        );
        let state = Arc::new(Mutex::new(Local { clock, held }));
        let apply = apply_committed(Arc::downgrade(&state), Arc::clone(&registry));
        let journal = Journal::start(dir, apply, evicted, floor);
        Ok(Self::start_with_state(
            config,
            registry,
            state,
            keys,
            Some(journal),
            revocation_store,
        ))
    }

    fn start_with_state(
        config: &Config,
        registry: Arc<StreamRegistry>,
        state: Arc<Mutex<Local>>,
        keys: IdempotencyCache,
        journal: Option<Journal>,
        revocation_store: Option<(RevocationStore, Mutex<HashMap<String, u64>>)>,
    ) -> Arc<Self> {
        let broker = Arc::new(Self {
            state,
            registry,
            keys,
            journal,
            revocation_store,
            sweeper: CancellationToken::new(),
        });
        tokio::spawn(sweep_periodically(
            Arc::downgrade(&broker),
            config.streams.sweep_interval,
            broker.sweeper.clone(),
        ));
        broker
    }

    fn sweep(&self) {
        let mut evicted = Evicted::default();
        lock(&self.state).held.sweep(Instant::now(), &mut evicted);
        evicted.keys = self.keys.sweep();
        self.forget(evicted);
    }

    /// Runs `read` under the sequencer lock (a consistent cut of the id order), then
    /// mirrors what it evicted (expired events) to the store.
    fn with_history<T>(&self, read: impl FnOnce(&mut Local, &mut Evicted) -> T) -> T {
        let mut evicted = Evicted::default();
        let result = read(&mut lock(&self.state), &mut evicted);
        self.forget(evicted);
        result
    }

    fn forget(&self, evicted: Evicted) {
        if let Some(journal) = &self.journal {
            journal.forget(evicted);
        }
    }
}

/// The answer of the journal once a publish is durable (disk kind).
type Durable = tokio::sync::oneshot::Receiver<Result<(), BrokerError>>;

impl LocalBroker {
    /// Gives `events` their ids under the lock. Memory: into the history and out to
    /// local subscribers at once. Disk: staged for the journal, in id order; the
    /// receiver answers when they are durable.
    fn stage(
        &self,
        events: Vec<NewEvent>,
        claim: Option<(ClaimGuard, &IdempotencyKey)>,
    ) -> Result<(Vec<EventId>, Option<Durable>), BrokerError> {
        let mut local = lock(&self.state);
        if local.held.exceeds_stream_limit(&events) {
            return Err(BrokerError::StreamLimit);
        }
        let published_at = Instant::now();
        let next_frame =
            |local: &mut Local, event: &NewEvent| Arc::new(Frame::event(local.clock.next_id(), published_at, event));
        let Some(journal) = &self.journal else {
            let mut ids = Vec::with_capacity(events.len());
            let mut evicted = Evicted::default();
            let mut deliveries = self.registry.deliveries();
            for event in events {
                let frame = next_frame(&mut local, &event);
                ids.push(frame.id);
                deliveries.deliver(&event.stream, &frame);
                local.held.append(&event.stream, frame, &mut evicted);
            }
            if let Some((guard, _)) = claim {
                guard.complete(ids.clone());
            }
            // Writes to lent sockets after the lock.
            drop(local);
            drop(deliveries);
            return Ok((ids, None));
        };
        let published_ms = unix_millis();
        let mut staged = Vec::with_capacity(events.len());
        for event in events {
            let frame = next_frame(&mut local, &event);
            staged.push(Staged {
                stream: event.stream.clone(),
                stored: StoredEvent {
                    id: frame.id,
                    event,
                    published_ms,
                },
                frame,
            });
        }
        let ids: Vec<EventId> = staged.iter().map(|staged| staged.frame.id).collect();
        let key = claim.map(|(claim, key)| StagedKey {
            stored: StoredKey {
                key: key.key.clone(),
                fingerprint: key.fingerprint,
                expires_ms: published_ms.saturating_add(u64::try_from(key.ttl.as_millis()).unwrap_or(u64::MAX)),
                ids: ids.clone(),
            },
            claim,
        });
        Ok((ids, Some(journal.submit(staged, key)?)))
    }
}

/// What the journal does with committed events: into the history and out to local
/// subscribers, in id order.
fn apply_committed(state: Weak<Mutex<Local>>, registry: Arc<StreamRegistry>) -> disk::Apply {
    Box::new(move |staged: Vec<Staged>| {
        let mut evicted = Evicted::default();
        let Some(state) = state.upgrade() else {
            return evicted;
        };
        let mut local = lock(&state);
        let mut deliveries = registry.deliveries();
        for Staged { stream, frame, .. } in staged {
            deliveries.deliver(&stream, &frame);
            local.held.append(&stream, frame, &mut evicted);
        }
        // Writes to lent sockets after the lock.
        drop(local);
        drop(deliveries);
        evicted
    })
}

async fn sweep_periodically(broker: Weak<LocalBroker>, every: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(broker) = broker.upgrade() else {
            return;
        };
        broker.sweep();
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, events: Vec<NewEvent>, key: Option<&IdempotencyKey>) -> Result<Published, BrokerError> {
        let claim = match key.map(|key| (self.keys.claim(key), key)) {
            None => None,
            Some((Claim::New(guard), key)) => Some((guard, key)),
            Some((Claim::Repeated(ids), _)) => return Ok(Published::Repeated(ids)),
            Some((Claim::Conflict, _)) => return Ok(Published::KeyConflict),
            Some((Claim::InProgress, _)) => return Ok(Published::KeyInProgress),
        };
        let (ids, durable) = self.stage(events, claim)?;
        if let Some(durable) = durable {
            durable
                .await
                .map_err(|_| BrokerError::Unavailable("the disk journal stopped".to_owned()))??;
        }
        Ok(Published::New(ids))
    }

    async fn listen(&self, _patterns: &[StreamPattern]) -> Result<(), BrokerError> {
        // Every event reaches the registry from this process, in id order.
        Ok(())
    }

    async fn read(&self, patterns: &[StreamPattern], after: EventId) -> Result<HistoryRead, BrokerError> {
        Ok(self.with_history(|local, evicted| {
            let last_issued = local.clock.last();
            local.held.read(patterns, after, last_issued, evicted)
        }))
    }

    async fn latest(&self, patterns: &[StreamPattern]) -> Result<Vec<Arc<Frame>>, BrokerError> {
        Ok(self.with_history(|local, evicted| local.held.latest(patterns, evicted)))
    }

    async fn position(&self, stream: &StreamName) -> Result<Position, BrokerError> {
        Ok(self.with_history(|local, evicted| {
            let head = local.clock.last();
            local.held.position(stream, head, evicted)
        }))
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), BrokerError> {
        // Memory: one node, nothing to carry or keep. Disk: kept, synced.
        let Some((store, stored)) = &self.revocation_store else {
            return Ok(());
        };
        let expired: Vec<String> = {
            let mut stored = stored.lock().unwrap_or_else(PoisonError::into_inner);
            let now = now_ms();
            let expired = stored
                .iter()
                .filter(|(_, expires_ms)| **expires_ms <= now)
                .map(|(key, _)| key.clone())
                .collect::<Vec<_>>();
            for key in &expired {
                stored.remove(key);
            }
            stored.insert(revocation.target.key(), revocation.expires_ms);
            expired
        };
        let (store, revocation) = (store.clone(), revocation.clone());
        tokio::task::spawn_blocking(move || store.put(&revocation, &expired))
            .await
            .map_err(|_| BrokerError::Unavailable("the revocation write stopped".to_owned()))?
            .map_err(|error| BrokerError::Unavailable(error.to_string()))
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn close(&self) {
        self.sweeper.cancel();
        if let Some(journal) = &self.journal {
            journal.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Resume, resolve};

    fn config(adjust: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config::default();
        adjust(&mut config);
        config
    }

    fn event(stream: &str) -> NewEvent {
        NewEvent::text(StreamName::try_new(stream).unwrap(), None, "x")
    }

    async fn gaps(broker: &LocalBroker, stream: &str, after: EventId) -> Vec<StreamPattern> {
        let patterns = [StreamPattern::try_new(stream).unwrap()];
        let read = broker.read(&patterns, after).await.unwrap();
        resolve(read, &patterns, Resume::After(after)).gaps
    }

    fn registry() -> Arc<StreamRegistry> {
        Arc::new(StreamRegistry::new(10, 8))
    }

    fn ids(published: Result<Published, BrokerError>) -> Vec<EventId> {
        match published {
            Ok(Published::New(ids)) => ids,
            other => panic!("not published: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_retry_with_the_same_key_answers_the_first_ids_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(|c| c.backend.disk.path = dir.path().join("data"));
        let key = IdempotencyKey {
            key: "publish\nsubject\nretry-1".to_owned(),
            fingerprint: crate::idempotency::fingerprint(&[b"body"]),
            ttl: Duration::from_secs(300),
        };
        let broker = LocalBroker::disk(&config, registry(), &Revocations::default()).unwrap();
        let first = ids(broker.publish(vec![event("k")], Some(&key)).await);
        assert_eq!(
            broker.publish(vec![event("k")], Some(&key)).await.unwrap(),
            Published::Repeated(first.clone())
        );
        broker.close().await;
        drop(broker);
        let restarted = LocalBroker::disk(&config, registry(), &Revocations::default()).unwrap();
        assert_eq!(
            restarted.publish(vec![event("k")], Some(&key)).await.unwrap(),
            Published::Repeated(first),
            "remembered on disk"
        );
        let other = IdempotencyKey {
            fingerprint: crate::idempotency::fingerprint(&[b"another body"]),
            ..key
        };
        assert_eq!(
            restarted.publish(vec![event("k")], Some(&other)).await.unwrap(),
            Published::KeyConflict
        );
        restarted.close().await;
    }

    #[tokio::test]
    async fn reclaiming_one_quiet_stream_does_not_raise_gaps_on_others() {
        let broker = LocalBroker::memory(&config(|c| c.streams.buffer_ttl = Duration::from_millis(1)), registry());
        let quiet = ids(broker.publish(vec![event("quiet")], None).await)[0];
        let busy = ids(broker.publish(vec![event("busy")], None).await)[0];
        tokio::time::sleep(Duration::from_millis(5)).await;
        broker.sweep();
        assert_eq!(lock(&broker.state).held.stream_count(), 0, "both reclaimed");
        // Resuming exactly where each stream stopped proves completeness.
        assert!(gaps(&broker, "quiet", quiet).await.is_empty());
        assert!(gaps(&broker, "busy", busy).await.is_empty());
        assert!(gaps(&broker, "brand-new", busy).await.is_empty());
        // Resuming from before an expired event is a gap.
        assert_eq!(gaps(&broker, "busy", quiet).await.len(), 1);
    }

    #[tokio::test]
    async fn tombstones_past_the_stream_limit_fold_into_the_floor() {
        let broker = LocalBroker::memory(
            &config(|c| {
                c.streams.buffer_ttl = Duration::from_millis(1);
                c.limits.max_streams = 2;
            }),
            registry(),
        );
        let mut published = Vec::new();
        for stream in ["a", "b", "c"] {
            published.push(ids(broker.publish(vec![event(stream)], None).await)[0]);
            tokio::time::sleep(Duration::from_millis(5)).await;
            broker.sweep();
        }
        // Conservative after folding: resuming before the newest reclaimed event is a gap.
        assert_eq!(gaps(&broker, "a", published[0]).await.len(), 1);
        assert!(gaps(&broker, "c", published[2]).await.is_empty());
    }

    /// A wall clock ten days behind the one of the run before.
    fn ten_days_ago() -> u64 {
        unix_millis() - 10 * 24 * 3600 * 1000
    }

    #[tokio::test]
    async fn ids_keep_increasing_after_a_restart_even_when_the_clock_stepped_back() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(|c| c.backend.disk.path = dir.path().join("data"));
        let broker = LocalBroker::disk(&config, registry(), &Revocations::default()).unwrap();
        let before = ids(broker.publish(vec![event("a"), event("b")], None).await);
        broker.close().await;
        drop(broker);
        let restarted =
            LocalBroker::disk_with_clock(&config, registry(), &Revocations::default(), ten_days_ago).unwrap();
        let after = ids(restarted.publish(vec![event("a")], None).await);
        assert!(after[0] > before[1], "{after:?} after {before:?}");
        // And the history from before the restart is still there, complete.
        let read = restarted
            .read(&[StreamPattern::try_new("a").unwrap()], EventId::ZERO)
            .await
            .unwrap();
        assert_eq!(read.streams[0].frames.len(), 2);
        restarted.close().await;
    }
}
