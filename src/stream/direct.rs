//! Direct delivery: a publisher writes an event straight to an idle subscriber's
//! socket, instead of queueing it and waking the subscriber's task to write it.
//!
//! Through the queue, one delivery is a queue push, a task wake-up, a poll of the
//! subscription and of its response writer, beside the one `writev` the kernel
//! needs; at fan-out 10 the subscriber tasks' own work was a fifth of the server's
//! CPU (profile in docs/BENCHMARKS.md). nginx + nchan writes from the publishing
//! request. This does the same for an event-stream connection served by the lean
//! HTTP/1.1 writer whose task has written everything it had, and keeps the queue
//! and the task for everything else: a subscriber that is behind, the replay,
//! heartbeats, endings, HTTP/2 and TLS. This module is the socket and who owns it;
//! [`super::flusher`] writes what deliveries claim.
//!
//! Who may write to the socket is one atomic:
//! - `TASK`: the subscriber's task owns it; frames go to its queue.
//! - `IDLE`: the task wrote everything and lent the socket out (its queue was
//!   empty). A delivery claims it (`IDLE` → `WRITING`) where the broker orders
//!   deliveries (so claims are in id order), and writes once outside that lock.
//! - `WRITING`: one claimed delivery is writing; other deliveries queue.
//! - `WANTED`: writing, and the task asked for the socket back (a deadline passed).
//!
//! A writer that is done hands the socket back to the task (`TASK`, and a wake-up)
//! when anything was queued meanwhile, an ending was set, the task asked for it, or
//! the socket did not take the whole chunk; what it did not take is the
//! [`DirectSocket::take_remainder`] the task writes before anything else. Each side
//! checks the other's signal after publishing its own (sequentially consistent
//! atomics), so a frame queued while the socket was lent is never left behind.
//! No lock and no allocation per delivery: one compare-and-swap to claim, one
//! `writev`, one to release.

use std::io::IoSlice;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::SeqCst};
use std::sync::{Mutex, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use futures::task::AtomicWaker;
use smallvec::SmallVec;
use tokio::net::TcpStream;

use crate::chunked::SizeLine;

const TASK: u8 = 0;
const IDLE: u8 = 1;
const WRITING: u8 = 2;
const WANTED: u8 = 3;

/// A subscriber's socket, shared by its task and the deliveries that write to it
/// while it is lent out.
#[derive(Debug)]
pub struct DirectSocket {
    socket: TcpStream,
    mode: AtomicU8,
    /// The task's waker, for a hand-back.
    waker: AtomicWaker,
    has_remainder: AtomicBool,
    /// What the socket did not take of a direct write. Touched only by the writer
    /// that could not finish and then by the task: never contended.
    remainder: Mutex<Option<Vec<Bytes>>>,
}

impl DirectSocket {
    /// Owned by the task until it lends the socket out.
    pub fn new(socket: TcpStream) -> Self {
        Self {
            socket,
            mode: AtomicU8::new(TASK),
            waker: AtomicWaker::new(),
            has_remainder: AtomicBool::new(false),
            remainder: Mutex::new(None),
        }
    }

    /// The socket, for its task.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Task: everything it had is written and nothing more is ready; deliveries
    /// may write to the socket until it is handed back (which wakes `waker`).
    /// Nothing happens unless the task owns the socket and has no remainder to
    /// write (only the task moves the socket out of `TASK`, so neither changes
    /// between the checks and the store).
    pub fn lend(&self, waker: &Waker) {
        if self.owned_by_task() {
            self.waker.register(waker);
            self.mode.store(IDLE, SeqCst);
        }
    }

    /// Whether the task owns the socket and may write its own chunks: not while a
    /// direct write's remainder is still to be written.
    pub fn owned_by_task(&self) -> bool {
        self.mode.load(SeqCst) == TASK && !self.has_remainder.load(SeqCst)
    }

    /// Task: to be woken when the socket is handed back.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Task: takes the socket back. `false` while a delivery is writing (it hands
    /// the socket back when done) or its remainder is still to be written.
    pub fn take_back(&self) -> bool {
        loop {
            let (from, to) = match self.mode.load(SeqCst) {
                TASK => return self.owned_by_task(),
                WANTED => return false,
                IDLE => (IDLE, TASK),
                _ => (WRITING, WANTED),
            };
            if self.mode.compare_exchange(from, to, SeqCst, SeqCst).is_ok() {
                return to == TASK;
            }
        }
    }

    /// Task: what a direct write left unwritten, to be written before anything else.
    pub fn take_remainder(&self) -> Option<Vec<Bytes>> {
        if !self.has_remainder.swap(false, SeqCst) {
            return None;
        }
        self.remainder.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Whether a claimed delivery holds the socket.
    pub(super) fn is_writing(&self) -> bool {
        self.mode.load(SeqCst) == WRITING
    }

    /// Whether a direct write's remainder waits for the task.
    #[cfg(test)]
    pub(super) fn has_remainder(&self) -> bool {
        self.has_remainder.load(SeqCst)
    }

    /// Delivery: claims the lent socket.
    pub(super) fn claim(&self) -> bool {
        self.mode.compare_exchange(IDLE, WRITING, SeqCst, SeqCst).is_ok()
    }

    /// Something was queued or ended: a lent socket goes back to the task.
    pub(super) fn hand_back_if_lent(&self) {
        if self.mode.compare_exchange(IDLE, TASK, SeqCst, SeqCst).is_ok() {
            self.waker.wake();
        }
    }

    /// Writer: done. The socket is lent out again, or handed back when `pending`
    /// (read after the release is published) or the task asked for it.
    pub(super) fn release(&self, pending: impl FnOnce() -> bool) {
        if self.mode.compare_exchange(WRITING, IDLE, SeqCst, SeqCst).is_err() {
            // `WANTED`: only a writer leaves `WRITING` or `WANTED`.
            self.mode.store(TASK, SeqCst);
            self.waker.wake();
        } else if pending() {
            self.hand_back_if_lent();
        }
    }

    /// Writer: the socket did not take everything; the task writes `rest` first.
    pub(super) fn hand_back_with(&self, rest: Vec<Bytes>) {
        *self.remainder.lock().unwrap_or_else(PoisonError::into_inner) = Some(rest);
        self.has_remainder.store(true, SeqCst);
        self.mode.store(TASK, SeqCst);
        self.waker.wake();
    }

    /// Writes `frames` as one HTTP/1.1 chunk without waiting; what the socket did
    /// not take (all of it when it was full or failed: the task then sees the
    /// failure), as pieces of the frames' shared bytes: nothing is copied but the
    /// chunk's size line.
    pub(super) fn write_chunk(&self, frames: &[&Bytes]) -> Result<(), Vec<Bytes>> {
        let len: usize = frames.iter().map(|data| data.len()).sum();
        let size_line = SizeLine::new(len);
        let size_line = size_line.as_bytes();
        // Inline, filled as it goes (an array would be initialised whole each time).
        let mut slices: SmallVec<[IoSlice<'_>; MAX_FRAMES_PER_WRITE + 2]> = SmallVec::new();
        slices.push(IoSlice::new(size_line));
        slices.extend(frames.iter().map(|data| IoSlice::new(data)));
        slices.push(IoSlice::new(b"\r\n"));
        let total = size_line.len() + len + 2;
        // Full (`WouldBlock`) or failed: the task writes it all, and sees the failure.
        let written = self.socket.try_write_vectored(&slices).unwrap_or_default();
        if written == total {
            return Ok(());
        }
        let mut rest = Vec::with_capacity(frames.len() + 2);
        let mut skip = written;
        let size_line = Bytes::copy_from_slice(size_line);
        let end = Bytes::from_static(b"\r\n");
        let pieces = std::iter::once(&size_line)
            .chain(frames.iter().copied())
            .chain(std::iter::once(&end));
        for piece in pieces {
            let from = skip.min(piece.len());
            skip -= from;
            if from < piece.len() {
                rest.push(piece.slice(from..));
            }
        }
        Err(rest)
    }
}

/// Most frames one direct write gathers for a subscriber (as its task's writes).
pub(super) const MAX_FRAMES_PER_WRITE: usize = 64;

#[cfg(test)]
mod tests {
    use futures::task::noop_waker_ref;

    use crate::stream::flusher::tests::pair;

    #[tokio::test]
    async fn the_task_takes_a_socket_back_only_once_a_write_is_done() {
        let (socket, _client) = pair().await;
        socket.lend(noop_waker_ref());
        assert!(socket.claim());
        assert!(!socket.claim(), "one writer at a time");
        assert!(!socket.take_back(), "wanted while writing");
        assert!(!socket.owned_by_task());
        socket.release(|| false);
        assert!(socket.owned_by_task(), "handed back at release");
        // Lent again, and taken back at once when nobody writes.
        socket.lend(noop_waker_ref());
        assert!(!socket.owned_by_task());
        assert!(socket.take_back());
        // A release with something pending hands it back too.
        socket.lend(noop_waker_ref());
        assert!(socket.claim());
        socket.release(|| true);
        assert!(socket.owned_by_task());
    }
}
