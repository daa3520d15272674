//! Replies remembered by key, so a retried or replayed request answers what the
//! first one did and publishes nothing again.
//!
//! A key is scoped by its caller (a webhook's stream, a publisher's subject) and
//! bound to a fingerprint of the request: the same key with a different request is
//! a conflict, not a replay. Only successful replies are remembered; a failed
//! request frees its key so a retry can succeed. Entries live for a window and the
//! cache holds at most a fixed number (oldest dropped first), so no sequence of
//! requests grows it without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::event::EventId;

/// What a first request answered, replayed to its repetitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    pub ids: Vec<EventId>,
    /// Whether the request was a batch (answered `{"ids"}`).
    pub batch: bool,
}

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

/// What a key says about a new request.
#[derive(Debug)]
pub enum Claim {
    /// First use: go ahead, then [`ClaimGuard::complete`] with the reply.
    New(ClaimGuard),
    /// Seen before with the same request: answer this.
    Replay(StoredReply),
    /// The first request with this key is still running.
    InProgress,
    /// Seen before with a different request.
    Conflict,
}

#[derive(Debug)]
enum Entry {
    InProgress(Fingerprint),
    Done(Fingerprint, StoredReply),
}

#[derive(Debug, Default)]
struct Entries {
    by_key: HashMap<String, (Instant, Entry)>,
    /// Keys in insertion order, for expiry and the size bound.
    order: VecDeque<(Instant, String)>,
}

/// Remembered replies of one node.
#[derive(Debug)]
pub struct IdempotencyCache {
    window: Duration,
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
    // way that matters (a stale order entry is skipped when it expires).
    entries.lock().unwrap_or_else(PoisonError::into_inner)
}

impl IdempotencyCache {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window,
            max_entries: max_entries.max(1),
            entries: Arc::default(),
        }
    }

    /// Looks `key` up for a request with `fingerprint`, claiming it when new.
    pub fn claim(&self, key: String, fingerprint: Fingerprint) -> Claim {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        self.expire(&mut entries, now);
        match entries.by_key.get(&key) {
            Some((_, Entry::InProgress(seen) | Entry::Done(seen, _))) if *seen != fingerprint => {
                return Claim::Conflict;
            }
            Some((_, Entry::InProgress(_))) => return Claim::InProgress,
            Some((_, Entry::Done(_, reply))) => return Claim::Replay(reply.clone()),
            None => {}
        }
        // Freed keys leave their place in the order behind: bound that too.
        while entries.by_key.len() >= self.max_entries || entries.order.len() >= 2 * self.max_entries {
            let Some((at, oldest)) = entries.order.pop_front() else {
                break;
            };
            remove_if_inserted_at(&mut entries, &oldest, at);
        }
        entries
            .by_key
            .insert(key.clone(), (now, Entry::InProgress(fingerprint)));
        entries.order.push_back((now, key.clone()));
        Claim::New(ClaimGuard {
            key: Some(key),
            entries: Arc::clone(&self.entries),
        })
    }

    fn expire(&self, entries: &mut Entries, now: Instant) {
        while let Some((at, _)) = entries.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((at, key)) = entries.order.pop_front() {
                remove_if_inserted_at(entries, &key, at);
            }
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        lock(&self.entries).by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes `key` only if its entry is the one inserted at `at` (a key freed and
/// claimed again has a newer entry and a second place in the order).
fn remove_if_inserted_at(entries: &mut Entries, key: &str, at: Instant) {
    if entries.by_key.get(key).is_some_and(|(inserted, _)| *inserted == at) {
        entries.by_key.remove(key);
    }
}

impl ClaimGuard {
    /// Remembers `reply` as the answer to this key.
    pub fn complete(mut self, reply: StoredReply) {
        if let Some(key) = self.key.take() {
            let mut entries = lock(&self.entries);
            if let Some((_, entry)) = entries.by_key.get_mut(&key)
                && let Entry::InProgress(fingerprint) = entry
            {
                *entry = Entry::Done(*fingerprint, reply);
            }
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut entries = lock(&self.entries);
            if matches!(entries.by_key.get(&key), Some((_, Entry::InProgress(_)))) {
                entries.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u64) -> StoredReply {
        StoredReply {
            ids: vec![EventId::from_u64(id)],
            batch: false,
        }
    }

    #[test]
    fn a_completed_key_replays_its_reply_and_refuses_other_requests() {
        let cache = IdempotencyCache::new(Duration::from_secs(60), 10);
        let Claim::New(guard) = cache.claim("k".to_owned(), fingerprint(&[b"a"])) else {
            panic!("first use")
        };
        assert!(matches!(
            cache.claim("k".to_owned(), fingerprint(&[b"a"])),
            Claim::InProgress
        ));
        guard.complete(reply(7));
        assert!(matches!(cache.claim("k".to_owned(), fingerprint(&[b"a"])), Claim::Replay(r) if r == reply(7)));
        assert!(matches!(
            cache.claim("k".to_owned(), fingerprint(&[b"b"])),
            Claim::Conflict
        ));
    }

    #[test]
    fn a_failed_request_frees_its_key() {
        let cache = IdempotencyCache::new(Duration::from_secs(60), 10);
        drop(cache.claim("k".to_owned(), fingerprint(&[b"a"])));
        assert!(matches!(
            cache.claim("k".to_owned(), fingerprint(&[b"a"])),
            Claim::New(_)
        ));
    }

    #[test]
    fn the_cache_is_bounded_in_size_and_time() {
        let cache = IdempotencyCache::new(Duration::from_secs(3600), 3);
        for key in ["a", "b", "c", "d"] {
            if let Claim::New(guard) = cache.claim(key.to_owned(), fingerprint(&[b"x"])) {
                guard.complete(reply(1));
            }
        }
        assert_eq!(cache.len(), 3, "the oldest was dropped");
        assert!(matches!(
            cache.claim("a".to_owned(), fingerprint(&[b"x"])),
            Claim::New(_)
        ));
        let cache = IdempotencyCache::new(Duration::from_millis(1), 3);
        for key in ["a", "b"] {
            if let Claim::New(guard) = cache.claim(key.to_owned(), fingerprint(&[b"x"])) {
                guard.complete(reply(1));
            }
        }
        // Sleeping longer than the window can only make the entries older.
        std::thread::sleep(Duration::from_millis(20));
        let claim = cache.claim("e".to_owned(), fingerprint(&[b"x"]));
        assert!(matches!(claim, Claim::New(_)));
        assert_eq!(cache.len(), 1, "expired entries are gone");
    }
}
