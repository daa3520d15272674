//! A subscriber's bounded queue, shared by all its streams: the sending half the
//! registry offers frames to, the receiving half its subscription reads, and what
//! both share (length, endings, the id written through, the lent socket).
//!
//! Endings from outside (overflow, shutdown, revocation) reach a subscription
//! through its own queue: a flag in the queue's shared state and one wake-up item
//! behind the frames. So the subscription waits on one thing, its queue, instead of
//! also polling a cancellation token and a `Notify` beside every frame (each poll
//! of those takes a mutex to register and another to unregister: about a tenth of
//! the gateway's CPU at fan-out 10, in the profile of docs/BENCHMARKS.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::direct::DirectSocket;
use crate::event::EventId;
use crate::frame::Frame;
use crate::metrics as m;

/// A new queue for subscriber `id`; see [`super::StreamRegistry::new_queue`].
pub(super) fn new(id: u64, overflowed: CancellationToken, direct: Option<Direct>) -> (SubscriberQueue, QueueReceiver) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let state = Arc::new(QueueState {
        direct,
        ..QueueState::default()
    });
    let queue = SubscriberQueue {
        id,
        sender,
        state: Arc::clone(&state),
        overflowed,
    };
    (queue, QueueReceiver { receiver, state })
}

/// The sending half of one subscriber's bounded queue, shared by all its streams.
///
/// Bounded by hand: tokio's bounded channel takes a mutex in its semaphore for every
/// message received, i.e. a lock per event per subscriber. An unbounded channel plus
/// a shared length counter gives the same bound with two atomic operations.
#[derive(Debug, Clone)]
pub struct SubscriberQueue {
    id: u64,
    sender: mpsc::UnboundedSender<Item>,
    state: Arc<QueueState>,
    overflowed: CancellationToken,
}

/// What travels on a queue: a frame, or a wake-up after an [`Ending`] was set.
/// (One pointer wide: the unit variant takes the `Arc`'s null niche.)
#[derive(Debug)]
enum Item {
    Frame(Arc<Frame>),
    Ended,
}

/// Why a subscription is ended from outside it, in the order a subscription that
/// has several reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Shutdown,
    Overflow,
    Revoked,
}

impl Ending {
    const ALL: [Self; 3] = [Self::Shutdown, Self::Overflow, Self::Revoked];

    fn bit(self) -> u8 {
        match self {
            Self::Shutdown => 1,
            Self::Overflow => 2,
            Self::Revoked => 4,
        }
    }
}

/// What both halves of a queue share: its length, and the endings set (read for
/// every chunk written, so plain atomics rather than a token, whose `is_cancelled`
/// takes a mutex); the id written through; the socket when deliveries may write to
/// it directly (see [`super::direct`]).
#[derive(Debug, Default)]
pub(super) struct QueueState {
    queued: AtomicUsize,
    endings: AtomicU8,
    /// Every event up to this id was written (or the client had it): a frame not
    /// newer is a duplicate. Written by whoever owns the socket.
    through: AtomicU64,
    direct: Option<Direct>,
    /// While the flusher holds a claim on the socket: the claim's position among
    /// all claims (see `flusher::Batch`).
    claim_slot: AtomicU64,
}

/// A socket deliveries may write to while its task lends it out.
#[derive(Debug, Clone)]
pub struct Direct {
    pub socket: Arc<DirectSocket>,
    /// Whether the subscriber reads envelopes.
    pub envelope: bool,
}

impl QueueState {
    pub(super) fn direct(&self) -> Option<(&DirectSocket, bool)> {
        self.direct.as_ref().map(|direct| (&*direct.socket, direct.envelope))
    }

    pub(super) fn through(&self) -> EventId {
        EventId::from_u64(self.through.load(Ordering::Relaxed))
    }

    /// Records `id` as written (a notice's `EventId::MAX` is not an event id).
    pub(super) fn advance_through(&self, id: EventId) {
        if id != EventId::MAX {
            self.through.store(id.as_u64(), Ordering::Relaxed);
        }
    }

    pub(super) fn claim_slot(&self) -> u64 {
        self.claim_slot.load(Ordering::Relaxed)
    }

    pub(super) fn set_claim_slot(&self, slot: u64) {
        self.claim_slot.store(slot, Ordering::Relaxed);
    }

    /// Whether the task has something to do: a queued frame or an ending.
    pub(super) fn is_pending(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0 || self.endings.load(Ordering::SeqCst) != 0
    }

    /// Sets `ending`; returns the endings set before.
    fn set(&self, ending: Ending) -> u8 {
        self.endings.fetch_or(ending.bit(), Ordering::AcqRel)
    }

    fn has(&self, ending: Ending) -> bool {
        self.endings.load(Ordering::Acquire) & ending.bit() != 0
    }
}

impl SubscriberQueue {
    /// Which subscriber this is (unique on the node).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when a frame for this subscriber did not fit in its queue.
    #[cfg(test)]
    pub fn overflowed(&self) -> &CancellationToken {
        &self.overflowed
    }

    /// Whether a frame for this subscriber did not fit in its queue.
    pub fn has_overflowed(&self) -> bool {
        self.state.has(Ending::Overflow)
    }

    /// Ends the subscription: it stops at its next chunk, after nothing more of
    /// its queue (the wake-up goes behind what is queued, the flag is read first).
    /// `true` when `ending` was not set before.
    pub fn end(&self, ending: Ending) -> bool {
        let before = self.state.set(ending);
        if before == 0 {
            // Fails only when the subscription is gone already.
            let _ = self.sender.send(Item::Ended);
        }
        self.hand_back_if_lent();
        before & ending.bit() == 0
    }

    /// What both halves share, for the flusher.
    pub(super) fn state(&self) -> &Arc<QueueState> {
        &self.state
    }

    /// Offers `frame` to a queue of `capacity`; `false` means the subscriber must be
    /// detached.
    pub(super) fn offer(&self, frame: &Arc<Frame>, capacity: usize) -> bool {
        if self.state.queued.fetch_add(1, Ordering::SeqCst) >= capacity {
            self.state.queued.fetch_sub(1, Ordering::AcqRel);
            // Counted and closed once, however many offers find it full at once.
            if self.end(Ending::Overflow) {
                self.overflowed.cancel();
                metrics::counter!(m::SLOW_CONSUMER_DISCONNECTS).increment(1);
            }
            return false;
        }
        // Fails only when the subscription is gone: detach it.
        let sent = self.sender.send(Item::Frame(Arc::clone(frame))).is_ok();
        self.hand_back_if_lent();
        sent
    }

    /// After queueing or ending: a socket lent out goes back to the task, which has
    /// something to do (one that is being written is handed back by its writer).
    fn hand_back_if_lent(&self) {
        if let Some((socket, _)) = self.state.direct() {
            socket.hand_back_if_lent();
        }
    }
}

/// The receiving half of a subscriber's queue.
#[derive(Debug)]
pub struct QueueReceiver {
    receiver: mpsc::UnboundedReceiver<Item>,
    state: Arc<QueueState>,
}

impl QueueReceiver {
    /// [`Self::poll_recv`] as a future (the tests' way in).
    #[cfg(test)]
    pub async fn recv(&mut self) -> Option<Arc<Frame>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next frame, for callers that poll by hand; `Ready(None)` once the
    /// subscription was ended ([`Self::ending`] says why), without waiting for what
    /// is still queued.
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Arc<Frame>>> {
        use std::task::Poll;
        loop {
            if self.ending().is_some() {
                return Poll::Ready(None);
            }
            match self.receiver.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Item::Frame(frame))) => {
                    self.state.queued.fetch_sub(1, Ordering::AcqRel);
                    return Poll::Ready(Some(frame));
                }
                // The flag is set: the loop returns.
                Poll::Ready(Some(Item::Ended)) => {}
                // Every sender is gone, which only a detach after overflow does.
                Poll::Ready(None) => {
                    self.state.set(Ending::Overflow);
                }
            }
        }
    }

    /// The next frame if one is queued and the subscription was not ended.
    pub fn try_recv(&mut self) -> Option<Arc<Frame>> {
        match self.receiver.try_recv().ok()? {
            Item::Frame(frame) => {
                self.state.queued.fetch_sub(1, Ordering::AcqRel);
                Some(frame)
            }
            Item::Ended => None,
        }
    }

    /// Every event up to this id was written (or the client had it).
    pub fn through(&self) -> EventId {
        self.state.through()
    }

    /// Records `id` as written; called only by the socket's owner.
    pub fn advance_through(&self, id: EventId) {
        self.state.advance_through(id);
    }

    /// The socket deliveries may write to while the task lends it out.
    pub fn direct(&self) -> Option<&DirectSocket> {
        self.state.direct().map(|(socket, _)| socket)
    }

    /// Whether a frame is queued or an ending set.
    pub fn is_pending(&self) -> bool {
        self.state.is_pending()
    }

    /// Why the subscription was ended from outside, if it was.
    pub fn ending(&self) -> Option<Ending> {
        let endings = self.state.endings.load(Ordering::Acquire);
        Ending::ALL.into_iter().find(|ending| endings & ending.bit() != 0)
    }
}
