//! The data directory of the disk broker: an fjall keyspace plus two small files.
//!
//! ```text
//! DIR/sse-gateway.json   format marker, written first; a directory without it that
//!                        holds anything is foreign and never touched
//! DIR/lock               held (flock) while a gateway uses the directory
//! DIR/acknowledged       the newest id acknowledged, rewritten about once a second
//! DIR/store/             fjall: partitions `events` (id -> stream, type, time, data),
//!                        `known_after` (stream -> id), `meta` (last_id, floor),
//!                        `keys` (idempotency key -> fingerprint, expiry, ids),
//!                        `revocations` (`s:SUB` / `j:JTI` -> revoked and expiry ms)
//! ```
//!
//! fjall (pure Rust, LSM tree with a write-ahead journal) was chosen over redb after
//! measuring both under this write pattern (`bench/store-choice`): 2.1–2.8× the
//! events/s at every group size, and a commit reaches the OS before it returns, so a
//! process crash loses nothing even without fsync. Its journal recovery drops only a
//! torn last batch (never acknowledged, since acknowledgement waits for the commit);
//! any other inconsistency is an error. `acknowledged` catches what that cannot: a
//! store rolled back or cut short behind the gateway's back stops startup instead of
//! silently losing acknowledged events.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fjall::{Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::broker::held::Evicted;
use crate::event::{DataKind, EventId, EventType, NewEvent};
use crate::idempotency::Fingerprint;
use crate::metrics as m;
use crate::revocation::Revocation;
use crate::stream::StreamName;

const MARKER: &str = "sse-gateway.json";
const FORMAT: &str = r#"{"format":"sse-gateway-disk","version":1}"#;
const VALUE_VERSION: u8 = 2;

/// Why the data directory cannot be used; always names it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data directory {path}: the store failed: {source}")]
    Store { path: PathBuf, source: fjall::Error },
    /// Written, but the sync failed: the write may or may not survive a crash.
    #[error("data directory {path}: written but not synced: {source}")]
    Unsynced { path: PathBuf, source: fjall::Error },
}

/// One event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub event: NewEvent,
    /// When it was published, in milliseconds since the Unix epoch (for the age bound).
    pub published_ms: u64,
}

/// An idempotency key as stored: the ids it answers until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key: String,
    pub fingerprint: Fingerprint,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: u64,
    pub ids: Vec<EventId>,
}

/// What the directory held when it was opened.
#[derive(Debug)]
pub struct Opened {
    /// The newest id ever stored (`None` for a new directory).
    pub last_id: Option<EventId>,
    /// Events of streams without history are known above this (`None`: new).
    pub floor: Option<EventId>,
    /// What each stream that lost events knew (its `known_after`).
    pub known_after: Vec<(StreamName, EventId)>,
}

/// An open data directory.
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    keyspace: Keyspace,
    events: PartitionHandle,
    known_after: PartitionHandle,
    meta: PartitionHandle,
    keys: PartitionHandle,
    revocations: PartitionHandle,
    fsync: bool,
}

/// Writes revocations into the data directory, beside the journal's writes.
#[derive(Clone)]
pub struct RevocationStore {
    path: PathBuf,
    keyspace: Keyspace,
    revocations: PartitionHandle,
}

impl std::fmt::Debug for RevocationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevocationStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RevocationStore {
    /// Stores `revocation` and removes `expired` ones, then syncs (always: a
    /// revocation is rare and must not be lost to a crash).
    ///
    /// # Errors
    /// [`StoreError`] when the write or the sync failed.
    pub fn put(&self, revocation: &Revocation, expired: &[String]) -> Result<(), StoreError> {
        let store_error = |source| StoreError::Store {
            path: self.path.clone(),
            source,
        };
        let mut batch = self.keyspace.batch();
        for key in expired {
            batch.remove(&self.revocations, key.as_str());
        }
        batch.insert(&self.revocations, revocation.target.key(), revocation.value());
        batch.commit().map_err(store_error)?;
        self.keyspace.persist(PersistMode::SyncAll).map_err(store_error)
    }
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DataDir {
    /// Opens (or creates, when missing or empty) the data directory at `path`.
    ///
    /// # Errors
    /// [`StoreError`] naming the path: a foreign or newer-format directory, one in
    /// use, an unreadable or corrupt store, or one that lost acknowledged events.
    pub fn open(path: &Path, fsync: bool) -> Result<(Self, Opened), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        let invalid = |what: String| StoreError::Invalid {
            path: path.to_owned(),
            what,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let marker = path.join(MARKER);
        if !marker.exists() {
            let is_empty = std::fs::read_dir(path).map_err(io)?.next().is_none();
            if !is_empty {
                return Err(invalid(format!(
                    "not an sse-gateway data directory (no {MARKER}) and not empty; refusing to touch it"
                )));
            }
            write_synced(&marker, FORMAT.as_bytes()).map_err(io)?;
        }
        let format = std::fs::read_to_string(&marker).map_err(io)?;
        if format.trim() != FORMAT {
            return Err(invalid(format!(
                "{MARKER} says {:?}, this gateway reads {FORMAT}",
                format.trim()
            )));
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))
            .map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(invalid("in use by another sse-gateway process".to_owned()));
        }
        let store_error = |source| StoreError::Store {
            path: path.to_owned(),
            source,
        };
        let keyspace = fjall::Config::new(path.join("store"))
            .flush_workers(1)
            .compaction_workers(1)
            // Without fsync per commit, bound what a power loss can take.
            .fsync_ms((!fsync).then_some(1000))
            .open()
            .map_err(store_error)?;
        let open = |name: &str| {
            keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(store_error)
        };
        let dir = Self {
            events: open("events")?,
            known_after: open("known_after")?,
            meta: open("meta")?,
            keys: open("keys")?,
            revocations: open("revocations")?,
            keyspace,
            path: path.to_owned(),
            _lock: lock,
            fsync,
        };
        let opened = dir.read_state()?;
        dir.check_acknowledged(opened.last_id)?;
        // The size is known from the start, not only after the first commit.
        metrics::gauge!(m::DISK_BYTES).set(dir.keyspace.disk_space() as f64);
        Ok((dir, opened))
    }

    fn invalid(&self, what: String) -> StoreError {
        StoreError::Invalid {
            path: self.path.clone(),
            what,
        }
    }

    fn store_error(&self, source: fjall::Error) -> StoreError {
        StoreError::Store {
            path: self.path.clone(),
            source,
        }
    }

    fn meta_id(&self, key: &str) -> Result<Option<EventId>, StoreError> {
        let Some(value) = self.meta.get(key).map_err(|error| self.store_error(error))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = value
            .as_ref()
            .try_into()
            .map_err(|_| self.invalid(format!("meta `{key}` is not an id")))?;
        Ok(Some(EventId::from_u64(u64::from_be_bytes(bytes))))
    }

    fn read_state(&self) -> Result<Opened, StoreError> {
        let mut known_after = Vec::new();
        for entry in self.known_after.iter() {
            let (key, value) = entry.map_err(|error| self.store_error(error))?;
            let stream = std::str::from_utf8(&key)
                .ok()
                .and_then(|name| StreamName::try_new(name).ok())
                .ok_or_else(|| self.invalid("a stream name in `known_after` is not valid".to_owned()))?;
            let id: [u8; 8] = value
                .as_ref()
                .try_into()
                .map_err(|_| self.invalid(format!("`known_after` of {stream} is not an id")))?;
            known_after.push((stream, EventId::from_u64(u64::from_be_bytes(id))));
        }
        Ok(Opened {
            last_id: self.meta_id("last_id")?,
            floor: self.meta_id("floor")?,
            known_after,
        })
    }

    /// Refuses a store that holds less than was acknowledged from it.
    fn check_acknowledged(&self, last_id: Option<EventId>) -> Result<(), StoreError> {
        let file = self.path.join("acknowledged");
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let acknowledged: EventId = text
            .trim()
            .parse()
            .map_err(|_| self.invalid("`acknowledged` does not hold an id".to_owned()))?;
        let held = last_id.unwrap_or(EventId::ZERO);
        if held < acknowledged {
            return Err(self.invalid(format!(
                "the store ends at id {held} but id {acknowledged} was acknowledged from it: it was truncated \
                 or rolled back; restore the directory or move it away to start empty"
            )));
        }
        Ok(())
    }

    /// Calls `load` with every stored event, in id order.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or holds an event it cannot decode.
    pub fn for_each_event(&self, mut load: impl FnMut(StoredEvent)) -> Result<usize, StoreError> {
        let mut count = 0;
        for entry in self.events.iter() {
            let (key, value) = entry.map_err(|error| self.store_error(error))?;
            let event = decode(&key, &value).ok_or_else(|| self.invalid("an event cannot be decoded".to_owned()))?;
            load(event);
            count += 1;
        }
        Ok(count)
    }

    /// Calls `load` with every stored idempotency key.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or holds a key it cannot decode.
    pub fn for_each_key(&self, mut load: impl FnMut(StoredKey)) -> Result<(), StoreError> {
        for entry in self.keys.iter() {
            let (key, value) = entry.map_err(|error| self.store_error(error))?;
            let stored = decode_key(&key, &value)
                .ok_or_else(|| self.invalid("an idempotency key cannot be decoded".to_owned()))?;
            load(stored);
        }
        Ok(())
    }

    /// Calls `load` with every stored revocation (expired ones included).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read or holds one it cannot decode.
    pub fn for_each_revocation(&self, mut load: impl FnMut(Revocation)) -> Result<(), StoreError> {
        for entry in self.revocations.iter() {
            let (key, value) = entry.map_err(|error| self.store_error(error))?;
            let revocation = std::str::from_utf8(&key)
                .ok()
                .zip(std::str::from_utf8(&value).ok())
                .and_then(|(key, value)| Revocation::parse(key, value))
                .ok_or_else(|| self.invalid("a revocation cannot be decoded".to_owned()))?;
            load(revocation);
        }
        Ok(())
    }

    /// A handle that stores revocations beside the journal.
    pub fn revocation_store(&self) -> RevocationStore {
        RevocationStore {
            path: self.path.clone(),
            keyspace: self.keyspace.clone(),
            revocations: self.revocations.clone(),
        }
    }

    /// Writes `events` (and the idempotency `keys` they answer) and mirrors
    /// `evicted` in one batch, with `last_id` and the floor, then makes it durable
    /// (fsync, unless configured off). When this returns `Ok`, they survive a crash.
    ///
    /// # Errors
    /// [`StoreError`] when the write failed (nothing stored), or
    /// [`StoreError::Unsynced`] when only the sync failed (the outcome is unknown);
    /// nothing is acknowledged either way.
    pub fn commit(
        &self,
        events: &[&StoredEvent],
        keys: &[&StoredKey],
        evicted: &Evicted,
        floor: EventId,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let mut batch = self.keyspace.batch();
        for event in events {
            batch.insert(&self.events, event.id.as_u64().to_be_bytes(), encode(event));
        }
        for key in keys {
            batch.insert(&self.keys, key.key.as_str(), encode_key(key));
        }
        for key in &evicted.keys {
            batch.remove(&self.keys, key.as_str());
        }
        for id in &evicted.ids {
            batch.remove(&self.events, id.as_u64().to_be_bytes());
        }
        for (stream, known_after) in &evicted.known_after {
            batch.insert(&self.known_after, stream.as_str(), known_after.as_u64().to_be_bytes());
        }
        if let Some(last) = events.last() {
            batch.insert(&self.meta, "last_id", last.id.as_u64().to_be_bytes());
        }
        batch.insert(&self.meta, "floor", floor.as_u64().to_be_bytes());
        batch.commit().map_err(|error| self.store_error(error))?;
        if self.fsync {
            self.keyspace
                .persist(PersistMode::SyncAll)
                .map_err(|source| StoreError::Unsynced {
                    path: self.path.clone(),
                    source,
                })?;
        }
        metrics::histogram!(m::DISK_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::DISK_COMMIT_EVENTS).record(events.len() as f64);
        Ok(())
    }

    /// Records `id` as acknowledged (see the module doc).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be written.
    pub fn record_acknowledged(&self, id: EventId) -> Result<(), StoreError> {
        let temporary = self.path.join("acknowledged.new");
        write_synced(&temporary, id.to_string().as_bytes())
            .and_then(|()| std::fs::rename(&temporary, self.path.join("acknowledged")))
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        metrics::gauge!(m::DISK_BYTES).set(self.keyspace.disk_space() as f64);
        Ok(())
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `version (2), kind (0 text, 1 JSON), stream length, stream, type length (u16),
/// type, published ms (u64), data`. Version 1 had no kind byte (text).
fn encode(stored: &StoredEvent) -> Vec<u8> {
    let event = &stored.event;
    let stream = event.stream.as_str().as_bytes();
    let event_type = event.event_type.as_ref().map_or("", EventType::as_str).as_bytes();
    let mut value = Vec::with_capacity(13 + stream.len() + event_type.len() + event.data.len());
    value.push(VALUE_VERSION);
    value.push(match event.kind {
        DataKind::Text => 0,
        DataKind::Json => 1,
    });
    // Stream names are at most 128 bytes, event types at most 256.
    value.push(stream.len() as u8);
    value.extend_from_slice(stream);
    value.extend_from_slice(&(event_type.len() as u16).to_be_bytes());
    value.extend_from_slice(event_type);
    value.extend_from_slice(&stored.published_ms.to_be_bytes());
    value.extend_from_slice(event.data.as_bytes());
    value
}

/// `fingerprint (32), expires ms (u64), ids (u64 each)`.
fn encode_key(key: &StoredKey) -> Vec<u8> {
    let mut value = Vec::with_capacity(40 + 8 * key.ids.len());
    value.extend_from_slice(&key.fingerprint);
    value.extend_from_slice(&key.expires_ms.to_be_bytes());
    for id in &key.ids {
        value.extend_from_slice(&id.as_u64().to_be_bytes());
    }
    value
}

fn decode_key(key: &[u8], value: &[u8]) -> Option<StoredKey> {
    let (fingerprint, rest) = value.split_at_checked(32)?;
    let (expires_ms, ids) = rest.split_at_checked(8)?;
    if ids.len() % 8 != 0 {
        return None;
    }
    Some(StoredKey {
        key: String::from_utf8(key.to_vec()).ok()?,
        fingerprint: fingerprint.try_into().ok()?,
        expires_ms: u64::from_be_bytes(expires_ms.try_into().ok()?),
        ids: ids
            .chunks_exact(8)
            .map(|id| EventId::from_u64(u64::from_be_bytes(id.try_into().unwrap_or_default())))
            .collect(),
    })
}

fn decode(key: &[u8], value: &[u8]) -> Option<StoredEvent> {
    let id = EventId::from_u64(u64::from_be_bytes(key.try_into().ok()?));
    let (&version, rest) = value.split_first()?;
    let (kind, rest) = match version {
        1 => (DataKind::Text, rest),
        VALUE_VERSION => match rest.split_first()? {
            (0, rest) => (DataKind::Text, rest),
            (1, rest) => (DataKind::Json, rest),
            _ => return None,
        },
        _ => return None,
    };
    let (&stream_len, rest) = rest.split_first()?;
    let (stream, rest) = rest.split_at_checked(usize::from(stream_len))?;
    let (type_len, rest) = rest.split_at_checked(2)?;
    let (event_type, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(type_len.try_into().ok()?)))?;
    let (published_ms, data) = rest.split_at_checked(8)?;
    let event_type = std::str::from_utf8(event_type).ok()?;
    Some(StoredEvent {
        id,
        event: NewEvent {
            stream: StreamName::try_new(std::str::from_utf8(stream).ok()?).ok()?,
            event_type: if event_type.is_empty() {
                None
            } else {
                Some(EventType::try_new(event_type).ok()?)
            },
            data: String::from_utf8(data.to_vec()).ok()?,
            kind,
        },
        published_ms: u64::from_be_bytes(published_ms.try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: u64) -> StoredEvent {
        StoredEvent {
            id: EventId::from_u64(id),
            event: NewEvent {
                stream: StreamName::try_new("a.b").unwrap(),
                event_type: Some(EventType::try_new("t").unwrap()),
                data: "line\nline".to_owned(),
                kind: DataKind::Text,
            },
            published_ms: 1_767_225_600_000,
        }
    }

    #[test]
    fn events_round_trip_through_the_value_format() {
        let stored = event(42);
        let key = 42_u64.to_be_bytes();
        assert_eq!(decode(&key, &encode(&stored)), Some(stored));
        let mut untyped = event(7);
        untyped.event.event_type = None;
        untyped.event.kind = DataKind::Json;
        assert_eq!(decode(&7_u64.to_be_bytes(), &encode(&untyped)), Some(untyped));
        assert_eq!(decode(&key, &encode(&event(42))[..10]), None, "truncated");
    }

    #[test]
    fn events_written_before_data_kinds_read_as_text() {
        let mut value = encode(&event(42));
        value.remove(1);
        value[0] = 1;
        assert_eq!(decode(&42_u64.to_be_bytes(), &value), Some(event(42)));
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("precious.txt"), "not ours").unwrap();
        let error = DataDir::open(dir.path(), true).unwrap_err();
        assert!(
            error.to_string().contains("not an sse-gateway data directory"),
            "{error}"
        );
        assert!(error.to_string().contains(&dir.path().display().to_string()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "nothing written");
    }

    #[test]
    fn a_directory_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = DataDir::open(dir.path(), true).unwrap();
        let error = DataDir::open(dir.path(), true).unwrap_err();
        assert!(error.to_string().contains("in use"), "{error}");
    }

    #[test]
    fn committed_events_and_state_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, opened) = DataDir::open(dir.path(), true).unwrap();
            assert_eq!(opened.last_id, None);
            let evicted = Evicted {
                ids: vec![EventId::from_u64(1)],
                known_after: vec![(StreamName::try_new("a.b").unwrap(), EventId::from_u64(1))],
                ..Evicted::default()
            };
            let key = StoredKey {
                key: "k".to_owned(),
                fingerprint: [3; 32],
                expires_ms: 9,
                ids: vec![EventId::from_u64(2), EventId::from_u64(3)],
            };
            store
                .commit(
                    &[&event(1), &event(2), &event(3)],
                    &[&key],
                    &Evicted::default(),
                    EventId::ZERO,
                )
                .unwrap();
            store.commit(&[], &[], &evicted, EventId::ZERO).unwrap();
            store.record_acknowledged(EventId::from_u64(3)).unwrap();
        }
        let (store, opened) = DataDir::open(dir.path(), true).unwrap();
        assert_eq!(opened.last_id, Some(EventId::from_u64(3)));
        assert_eq!(opened.known_after.len(), 1);
        let mut ids = Vec::new();
        store.for_each_event(|event| ids.push(event.id.as_u64())).unwrap();
        assert_eq!(ids, [2, 3]);
        let mut keys = Vec::new();
        store.for_each_key(|key| keys.push(key)).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].expires_ms, keys[0].ids.len()), (9, 2));
    }

    #[test]
    fn a_store_behind_what_was_acknowledged_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = DataDir::open(dir.path(), true).unwrap();
            store
                .commit(&[&event(1)], &[], &Evicted::default(), EventId::ZERO)
                .unwrap();
            store.record_acknowledged(EventId::from_u64(5)).unwrap();
        }
        let error = DataDir::open(dir.path(), true).unwrap_err();
        assert!(error.to_string().contains("truncated or rolled back"), "{error}");
    }
}
