//! Durable history on one node: the data directory ([`store`]) and the journal, a
//! thread that writes publishes to it with group commit.
//!
//! A publish is staged with its ids (in id order, under the broker's lock) and
//! handed to the journal, which takes every publish waiting at that moment (up to
//! [`MAX_GROUP_EVENTS`]) into one batch and one fsync, then applies them to the
//! held history and the local registry in id order and answers each. So when a
//! publish is acknowledged its events are on disk, and subscribers never see an
//! event a crash could take back. Evictions (count, age, the node's bytes) are
//! written with the next batch; a crash before that only means a restart applies
//! the same bounds again.

pub mod store;

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::BrokerError;
use super::held::Evicted;
use crate::event::EventId;
use crate::frame::Frame;
use crate::idempotency::ClaimGuard;
use crate::stream::StreamName;

pub use store::{DataDir, Opened, RevocationStore, StoreError, StoredEvent, StoredKey};

/// Events written in one batch at most.
pub const MAX_GROUP_EVENTS: usize = 4096;
/// Publishes waiting for the journal at most; more are refused (503) at once.
const QUEUE: usize = 4096;
/// How often the acknowledged id is recorded at most.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// One event on its way to disk.
#[derive(Debug)]
pub struct Staged {
    pub stream: StreamName,
    pub frame: Arc<Frame>,
    pub stored: StoredEvent,
}

/// The idempotency key a publish answers, written with its events.
#[derive(Debug)]
pub struct StagedKey {
    pub stored: StoredKey,
    /// Completed once the events are durable; dropped on failure, freeing the key.
    pub claim: ClaimGuard,
}

/// Applies committed events to the held history and the registry, in id order,
/// returning what that evicted.
pub type Apply = Box<dyn FnMut(Vec<Staged>) -> Evicted + Send>;

enum Entry {
    Publish {
        events: Vec<Staged>,
        key: Option<StagedKey>,
        reply: oneshot::Sender<Result<(), BrokerError>>,
    },
    /// Write pending evictions even without a publish.
    Flush,
}

/// The journal thread's handle.
pub struct Journal {
    sender: Mutex<Option<SyncSender<Entry>>>,
    forgets: Arc<Mutex<Evicted>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks: a panic elsewhere cannot leave it half-written
    // in a way that matters, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// Starts the journal thread on `dir`; `pending` are evictions not yet written
    /// (from loading), `floor` the floor to record.
    pub fn start(dir: DataDir, apply: Apply, pending: Evicted, floor: EventId) -> Self {
        let (sender, receiver) = mpsc::sync_channel(QUEUE);
        let forgets = Arc::new(Mutex::new(pending));
        let thread = {
            let forgets = Arc::clone(&forgets);
            std::thread::Builder::new()
                .name("sse-journal".to_owned())
                .spawn(move || write_loop(&dir, &receiver, apply, &forgets, floor))
                .ok()
        };
        if let Some(sender) = thread.is_some().then(|| sender.clone()) {
            let _ = sender.try_send(Entry::Flush);
        }
        Self {
            sender: Mutex::new(thread.is_some().then_some(sender)),
            forgets,
            thread: Mutex::new(thread),
        }
    }

    /// Hands `events` to the journal; the receiver answers once they are durable
    /// and applied. Called under the broker's lock, so events reach the journal in
    /// id order.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when the journal is full or stopped.
    pub fn submit(
        &self,
        events: Vec<Staged>,
        key: Option<StagedKey>,
    ) -> Result<oneshot::Receiver<Result<(), BrokerError>>, BrokerError> {
        let (reply, answer) = oneshot::channel();
        let sender = lock(&self.sender);
        let Some(sender) = sender.as_ref() else {
            return Err(BrokerError::Unavailable("the disk journal is stopped".to_owned()));
        };
        match sender.try_send(Entry::Publish { events, key, reply }) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(BrokerError::Unavailable(
                "the disk journal is behind; retry shortly".to_owned(),
            )),
            Err(TrySendError::Disconnected(_)) => Err(BrokerError::Unavailable("the disk journal stopped".to_owned())),
        }
    }

    /// Records evictions to mirror on disk with the next batch.
    pub fn forget(&self, evicted: Evicted) {
        if evicted.is_empty() {
            return;
        }
        lock(&self.forgets).absorb(evicted);
        if let Some(sender) = lock(&self.sender).as_ref() {
            let _ = sender.try_send(Entry::Flush);
        }
    }

    /// Writes what is pending and stops the thread.
    pub async fn close(&self) {
        lock(&self.sender).take();
        let thread = lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn write_loop(
    dir: &DataDir,
    receiver: &Receiver<Entry>,
    mut apply: Apply,
    forgets: &Mutex<Evicted>,
    mut floor: EventId,
) {
    let mut acknowledged: Option<EventId> = None;
    let mut recorded_at = Instant::now();
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        let mut events = group_events(&group);
        while events < MAX_GROUP_EVENTS {
            let Ok(entry) = receiver.try_recv() else { break };
            group.push(entry);
            events = group_events(&group);
        }
        let evicted = std::mem::take(&mut *lock(forgets));
        if let Some(folded) = evicted.floor {
            floor = floor.max(folded);
        }
        let stored: Vec<&StoredEvent> = group
            .iter()
            .flat_map(|entry| match entry {
                Entry::Publish { events, .. } => events.as_slice(),
                Entry::Flush => &[],
            })
            .map(|staged| &staged.stored)
            .collect();
        let keys: Vec<&StoredKey> = group
            .iter()
            .filter_map(|entry| match entry {
                Entry::Publish { key: Some(key), .. } => Some(&key.stored),
                _ => None,
            })
            .collect();
        let newest = stored.last().map(|event| event.id);
        if let Err(error) = dir.commit(&stored, &keys, &evicted, floor) {
            // A write that failed stored nothing (503); a write whose sync failed may
            // still be read back after a restart, so its outcome is unknown (504).
            let unsynced = matches!(error, StoreError::Unsynced { .. });
            tracing::error!(%error, unsynced, "cannot write to the data directory; publishes are refused");
            lock(forgets).absorb(evicted);
            for entry in group {
                if let Entry::Publish { reply, .. } = entry {
                    let _ = reply.send(Err(if unsynced {
                        BrokerError::Timeout(error.to_string())
                    } else {
                        BrokerError::Unavailable(error.to_string())
                    }));
                }
            }
            continue;
        }
        for entry in group {
            if let Entry::Publish { events, key, reply } = entry {
                let more = apply(events);
                lock(forgets).absorb(more);
                if let Some(StagedKey { stored, claim }) = key {
                    claim.complete(stored.ids);
                }
                let _ = reply.send(Ok(()));
            }
        }
        acknowledged = acknowledged.max(newest);
        if recorded_at.elapsed() >= RECORD_EVERY
            && let Some(id) = acknowledged
        {
            record(dir, id);
            recorded_at = Instant::now();
        }
    }
    // Closing: what is still pending, then the final acknowledged id.
    let evicted = std::mem::take(&mut *lock(forgets));
    if let Err(error) = dir.commit(&[], &[], &evicted, evicted.floor.unwrap_or(floor).max(floor)) {
        tracing::warn!(%error, "cannot write the last evictions; they are applied again at start");
    }
    if let Some(id) = acknowledged {
        record(dir, id);
    }
}

fn group_events(group: &[Entry]) -> usize {
    group
        .iter()
        .map(|entry| match entry {
            Entry::Publish { events, .. } => events.len(),
            Entry::Flush => 0,
        })
        .sum()
}

fn record(dir: &DataDir, id: EventId) {
    if let Err(error) = dir.record_acknowledged(id) {
        tracing::warn!(%error, "cannot record the acknowledged id");
    }
}
