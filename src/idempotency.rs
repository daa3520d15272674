//! Idempotency keys: a repeated request answers what the first one did and
//! publishes nothing again.
//!
//! A key is scoped by its caller (a publisher's subject, a webhook's stream) and
//! bound to a fingerprint of the request: the same key with a different request is
//! a conflict, not a repetition. Only successful publishes are remembered; a failed
//! one frees its key so a retry can succeed. Each key lives for its own time to live
//! (`publish.idempotency_window`, `webhooks.replay_window`).
//!
//! Brokers keep them: Redis in the publish script (so a retry on any node finds
//! them, and they replicate with the events), the local brokers in an
//! [`IdempotencyCache`] (the disk kind writes them with the events and loads them
//! back). The cache holds at most a fixed number of keys (oldest dropped first), so
//! no sequence of requests grows it without bound.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::event::{EventId, EventType, NewEvent};

/// The request a key was first used with.
pub type Fingerprint = [u8; 32];

/// Hashes a request's parts into its fingerprint.
pub fn fingerprint(parts: &[&[u8]]) -> Fingerprint {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The fingerprint of a publication: `kind` (how the request was shaped) and each
/// event's stream, type and data. A retry must match it to be answered.
pub fn events_fingerprint(kind: &[u8], events: &[NewEvent]) -> Fingerprint {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(1 + 3 * events.len());
    parts.push(kind);
    for event in events {
        parts.push(event.stream.as_str().as_bytes());
        parts.push(event.event_type.as_ref().map_or("", EventType::as_str).as_bytes());
        parts.push(event.data.as_bytes());
    }
    fingerprint(&parts)
}

/// A key that makes a repeated publish answer the first one's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Unique within the deployment: scoped by the caller.
    pub key: String,
    pub fingerprint: Fingerprint,
    /// How long the key is remembered.
    pub ttl: Duration,
}

/// What a key says about a new request.
#[derive(Debug)]
pub enum Claim {
    /// First use: go ahead, then [`ClaimGuard::complete`] with the ids.
    New(ClaimGuard),
    /// Seen before with the same request: answer these ids.
    Repeated(Vec<EventId>),
    /// The first request with this key is still running.
    InProgress,
    /// Seen before with a different request.
    Conflict,
}

#[derive(Debug, Clone)]
enum State {
    InProgress,
    Done(Vec<EventId>),
}

#[derive(Debug)]
struct Entry {
    fingerprint: Fingerprint,
    state: State,
    expires: Instant,
    /// Orders entries for expiry and the size bound.
    seq: u64,
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<String, Entry>,
    by_expiry: BTreeMap<(Instant, u64), String>,
    next_seq: u64,
}

impl Entries {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.by_key.remove(key)?;
        self.by_expiry.remove(&(entry.expires, entry.seq));
        Some(entry)
    }
}

/// Keys remembered by one node.
#[derive(Debug)]
pub struct IdempotencyCache {
    max_entries: usize,
    entries: Arc<Mutex<Entries>>,
}

/// A claimed key; dropped without [`ClaimGuard::complete`], it frees the key.
#[derive(Debug)]
pub struct ClaimGuard {
    key: Option<String>,
    entries: Arc<Mutex<Entries>>,
}

fn lock(entries: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    // Inserts and removals only: a panic cannot leave the maps half-updated in a
    // way that matters (a stale expiry entry is skipped when it comes up).
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IdempotencyCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            entries: Arc::default(),
        }
    }

    /// Looks `key` up, claiming it when new.
    pub fn claim(&self, key: &IdempotencyKey) -> Claim {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        expire(&mut entries, now);
        if let Some(entry) = entries.by_key.get(&key.key) {
            return match (&entry.state, entry.fingerprint == key.fingerprint) {
                (_, false) => Claim::Conflict,
                (State::InProgress, true) => Claim::InProgress,
                (State::Done(ids), true) => Claim::Repeated(ids.clone()),
            };
        }
        self.insert(&mut entries, key, State::InProgress, now + key.ttl);
        Claim::New(ClaimGuard {
            key: Some(key.key.clone()),
            entries: Arc::clone(&self.entries),
        })
    }

    /// Restores a completed key (loading a durable store), `ttl` from now.
    pub fn restore(&self, key: &IdempotencyKey, ids: Vec<EventId>) {
        let mut entries = lock(&self.entries);
        entries.remove(&key.key);
        self.insert(&mut entries, key, State::Done(ids), Instant::now() + key.ttl);
    }

    fn insert(&self, entries: &mut Entries, key: &IdempotencyKey, state: State, expires: Instant) {
        while entries.by_key.len() >= self.max_entries {
            let Some((_, oldest)) = entries.by_expiry.pop_first() else {
                break;
            };
            entries.by_key.remove(&oldest);
        }
        let seq = entries.next_seq;
        entries.next_seq += 1;
        entries.by_expiry.insert((expires, seq), key.key.clone());
        entries.by_key.insert(
            key.key.clone(),
            Entry {
                fingerprint: key.fingerprint,
                state,
                expires,
                seq,
            },
        );
    }

    /// Forgets expired keys and returns them (a durable store deletes them too).
    pub fn sweep(&self) -> Vec<String> {
        expire(&mut lock(&self.entries), Instant::now())
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        lock(&self.entries).by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn expire(entries: &mut Entries, now: Instant) -> Vec<String> {
    let mut expired = Vec::new();
    while let Some(entry) = entries.by_expiry.first_entry() {
        if entry.key().0 > now {
            break;
        }
        let key = entry.remove();
        entries.by_key.remove(&key);
        expired.push(key);
    }
    expired
}

impl ClaimGuard {
    /// Remembers `ids` as the answer to this key.
    pub fn complete(mut self, ids: Vec<EventId>) {
        if let Some(key) = self.key.take()
            && let Some(entry) = lock(&self.entries).by_key.get_mut(&key)
        {
            entry.state = State::Done(ids);
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut entries = lock(&self.entries);
            if entries
                .by_key
                .get(&key)
                .is_some_and(|entry| matches!(entry.state, State::InProgress))
            {
                entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, body: &[u8], ttl: Duration) -> IdempotencyKey {
        IdempotencyKey {
            key: name.to_owned(),
            fingerprint: fingerprint(&[body]),
            ttl,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_completed_key_repeats_its_ids_and_refuses_other_requests() {
        let cache = IdempotencyCache::new(10);
        let Claim::New(guard) = cache.claim(&key("k", b"a", HOUR)) else {
            panic!("first use")
        };
        assert!(matches!(cache.claim(&key("k", b"a", HOUR)), Claim::InProgress));
        guard.complete(vec![EventId::from_u64(7)]);
        assert!(matches!(cache.claim(&key("k", b"a", HOUR)), Claim::Repeated(ids) if ids == [EventId::from_u64(7)]));
        assert!(matches!(cache.claim(&key("k", b"b", HOUR)), Claim::Conflict));
    }

    #[test]
    fn a_failed_request_frees_its_key() {
        let cache = IdempotencyCache::new(10);
        drop(cache.claim(&key("k", b"a", HOUR)));
        assert!(matches!(cache.claim(&key("k", b"a", HOUR)), Claim::New(_)));
    }

    #[test]
    fn keys_are_bounded_in_number_and_time() {
        let cache = IdempotencyCache::new(3);
        for name in ["a", "b", "c", "d"] {
            if let Claim::New(guard) = cache.claim(&key(name, b"x", HOUR)) {
                guard.complete(Vec::new());
            }
        }
        assert_eq!(cache.len(), 3, "the oldest was dropped");
        assert!(matches!(cache.claim(&key("a", b"x", HOUR)), Claim::New(_)));
        let cache = IdempotencyCache::new(10);
        cache.restore(&key("short", b"x", Duration::ZERO), Vec::new());
        cache.restore(&key("long", b"x", HOUR), Vec::new());
        assert_eq!(cache.sweep(), ["short"], "each key its own time to live");
        assert_eq!(cache.len(), 1);
    }
}
