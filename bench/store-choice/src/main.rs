//! The disk broker's write pattern on two pure-Rust embedded stores, to choose one:
//! events appended under increasing 8-byte ids (150-byte values), the oldest
//! deleted once `HELD` are held (history bounds), one durable commit (fsync) per
//! group of `k` events (group commit of `k` concurrent publishers); then the
//! startup read of every held event in id order, and the size on disk.
//!
//!     cargo run --release --manifest-path bench/store-choice/Cargo.toml
//!
//! Prints one line per store and group size; run it three times and quote medians.

use std::path::Path;

use redb::ReadableTable as _;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 150;
const HELD: u64 = 100_000;
/// Events written per measurement (enough for a few seconds at group size 1).
const EVENTS: [(usize, u64); 3] = [(1, 3_000), (16, 40_000), (64, 150_000)];
const STARTUP_EVENTS: u64 = 1_000_000;

trait Store {
    fn name(&self) -> &'static str;
    /// Appends ids `first..first + count` and deletes ids below `first + count - HELD`,
    /// then commits durably.
    fn commit(&mut self, first: u64, count: u64, deletes: std::ops::Range<u64>);
    /// Reads every held event in id order; returns how many.
    fn scan(&self) -> u64;
}

struct Redb(redb::Database);
const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn commit(&mut self, first: u64, count: u64, deletes: std::ops::Range<u64>) {
        let value = [7_u8; VALUE_BYTES];
        let tx = self.0.begin_write().unwrap();
        {
            let mut table = tx.open_table(TABLE).unwrap();
            for id in first..first + count {
                table.insert(id, value.as_slice()).unwrap();
            }
            for id in deletes {
                table.remove(id).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn scan(&self) -> u64 {
        let tx = self.0.begin_read().unwrap();
        let table = tx.open_table(TABLE).unwrap();
        table.iter().unwrap().map(|entry| entry.unwrap().1.value().len() as u64 / VALUE_BYTES as u64).sum()
    }
}

struct Fjall(fjall::Keyspace, fjall::PartitionHandle);

impl Store for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn commit(&mut self, first: u64, count: u64, deletes: std::ops::Range<u64>) {
        let value = [7_u8; VALUE_BYTES];
        let mut batch = self.0.batch();
        for id in first..first + count {
            batch.insert(&self.1, id.to_be_bytes(), value);
        }
        for id in deletes {
            batch.remove(&self.1, id.to_be_bytes());
        }
        batch.commit().unwrap();
        self.0.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn scan(&self) -> u64 {
        self.1.iter().map(|entry| entry.unwrap().1.len() as u64 / VALUE_BYTES as u64).sum()
    }
}

fn open(kind: &str, dir: &Path) -> Box<dyn Store> {
    match kind {
        "redb" => Box::new(Redb(redb::Database::create(dir.join("db.redb")).unwrap())),
        _ => {
            let keyspace = fjall::Config::new(dir.join("fjall")).open().unwrap();
            let partition = keyspace
                .open_partition("events", fjall::PartitionCreateOptions::default())
                .unwrap();
            Box::new(Fjall(keyspace, partition))
        }
    }
}

fn size_on_disk(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                size_on_disk(&entry.path())
            } else {
                entry.metadata().unwrap().len()
            }
        })
        .sum()
}

/// Writes `events` in groups of `group`, keeping `HELD`; returns the elapsed time.
fn write(store: &mut dyn Store, next: &mut u64, events: u64, group: u64) -> Duration {
    let started = Instant::now();
    let end = *next + events;
    while *next < end {
        let count = group.min(end - *next);
        let low = (*next + count).saturating_sub(HELD);
        let deletes = low.saturating_sub(count)..low;
        store.commit(*next, count, deletes);
        *next += count;
    }
    started.elapsed()
}

fn main() {
    for kind in ["redb", "fjall"] {
        for (group, events) in EVENTS {
            let dir = tempfile::tempdir_in(".").unwrap();
            let mut store = open(kind, dir.path());
            let mut next = 1;
            let elapsed = write(store.as_mut(), &mut next, events, group as u64);
            println!(
                "{} group={group:>2}: {:>8.0} events/s, {:>6.0} commits/s, {:>7.1} µs per commit",
                store.name(),
                events as f64 / elapsed.as_secs_f64(),
                events as f64 / group as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64() * 1e6 * group as f64 / events as f64
            );
        }
        // Startup: a store holding 1M events (written without fsync per event),
        // reopened and read in id order.
        let dir = tempfile::tempdir_in(".").unwrap();
        {
            let mut store = open(kind, dir.path());
            let mut written = 1;
            while written <= STARTUP_EVENTS {
                store.commit(written, 10_000, 0..0);
                written += 10_000;
            }
        }
        let started = Instant::now();
        let store = open(kind, dir.path());
        let held = store.scan();
        println!(
            "{kind} startup: opened and read {held} events in {:.2} s; {:.0} MB on disk",
            started.elapsed().as_secs_f64(),
            size_on_disk(dir.path()) as f64 / 1e6
        );
        drop(store);
        // Steady state: HELD events, then 10x HELD more appended while the oldest are
        // deleted; disk use must stay bounded.
        let dir = tempfile::tempdir_in(".").unwrap();
        let mut store = open(kind, dir.path());
        let mut next = 1;
        write(store.as_mut(), &mut next, HELD, 256);
        let before = size_on_disk(dir.path());
        write(store.as_mut(), &mut next, 10 * HELD, 256);
        drop(store);
        println!(
            "{kind} steady state: {:.0} MB on disk holding {HELD} events, {:.0} MB after 10x more appended and deleted",
            before as f64 / 1e6,
            size_on_disk(dir.path()) as f64 / 1e6,
        );
    }
}
