//! Writes what deliveries claimed on lent sockets ([`super::direct`]).
//!
//! Deliveries claim idle sockets (one claim per socket, in id order, under the
//! lock that orders them) and add later frames to claims not written yet. The
//! deliveries of one publish request that claimed up to `MAX_WRITTEN_BY_DELIVERY`
//! sockets write to them themselves once the broker's lock is released: a few
//! `writev`s, no task woken. A larger fan-out is left to the flushing task
//! (`Flusher`). Every claim is written as one chunk in one `writev`, of at most
//! 64 frames or 64 KiB (as a subscriber task's writes).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use smallvec::{SmallVec, smallvec};
use tokio::sync::Notify;

use super::direct::MAX_FRAMES_PER_WRITE;
use super::queue::QueueState;
use crate::frame::Frame;
use crate::metrics as m;

/// Most bytes one direct write gathers for a subscriber (as its task's writes);
/// further frames for the same claim go to its queue (its task writes them once
/// the socket is handed back).
const MAX_BYTES_PER_WRITE: usize = 64 * 1024;

/// Writes what deliveries claimed on lent sockets: one task for the node, woken
/// when there is something to write, instead of one task per subscriber per event.
/// Claims queue up in delivery order; the task writes them a slice at a time (see
/// [`FLUSH_SLICE`]) and yields between slices, so publishing requests that are
/// ready run in between and their frames join the claims not written yet: under
/// load, each socket gets everything since its last write as one chunk in one `writev` (as a subscriber
/// task that was behind would gather it), and at low rates each event leaves at
/// once.
#[derive(Debug, Default)]
pub(super) struct Flusher {
    shared: Arc<Shared>,
    started: OnceLock<bool>,
}

#[derive(Debug, Default)]
struct Shared {
    batch: Mutex<Batch>,
    wake: Notify,
}

/// The claims not written yet, and what to write to each.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Position of the first entry among all claims ever made: a claim whose slot
    /// is below it is being written, and takes no more frames.
    base: u64,
    entries: VecDeque<Entry>,
}

/// Claims written between two yields of the flushing task: half of those waiting,
/// and at least this many. Half, so the task keeps up however many publishing
/// requests run between its turns (the claims waiting settle at about twice what
/// they add in one turn); not all, so a fan-out to many sockets is written in a
/// few slices and what is published meanwhile joins the claims of the later ones.
const FLUSH_SLICE: usize = 64;

/// Frames a claim holds without allocating. Under load most claims gather a few
/// events before they are written; with a `Vec` the second one allocated (about 110
/// of the 460 instructions per delivery at 1 × 1,000 × 100 events/s, callgrind).
const INLINE_FRAMES: usize = 4;

#[derive(Debug)]
struct Entry {
    queue: Arc<QueueState>,
    /// The claiming frame, then those added before the claim is written.
    frames: SmallVec<[Arc<Frame>; INLINE_FRAMES]>,
    /// Bytes of the frames.
    bytes: usize,
}

impl Flusher {
    /// Starts the flushing task; `false` when there is no runtime to run it (the
    /// subscriber's deliveries then all go through its queue).
    pub(super) fn start(&self) -> bool {
        *self.started.get_or_init(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            runtime.spawn(flush(Arc::downgrade(&self.shared)));
            true
        })
    }

    /// The claims, locked for one or more deliveries. Deliveries run in id order,
    /// so claims and the frames added to them are in id order too. Locked before
    /// the registry's shards, always: a delivery holds it across several streams.
    pub(super) fn lock(&self) -> Claims<'_> {
        Claims {
            flusher: self,
            batch: Some(self.shared.batch.lock().unwrap_or_else(PoisonError::into_inner)),
            added: false,
            claimed: 0,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // The flushing task sees the flusher gone and ends.
        self.shared.wake.notify_one();
    }
}

/// Deliveries' access to the claims: locked from start to drop, when the few
/// sockets they claimed are written (or the flushing task is woken for more).
#[derive(Debug)]
pub(super) struct Claims<'a> {
    flusher: &'a Flusher,
    batch: Option<MutexGuard<'a, Batch>>,
    /// Frames added to earlier claims.
    added: bool,
    /// Sockets this delivery claimed: the last entries of the batch.
    claimed: usize,
}

impl Claims<'_> {
    /// Takes `frame` for a lent socket of `queue`: claimed, or added to its claim
    /// not written yet. `false`: the frame goes to the queue.
    pub(super) fn take(&mut self, queue: &Arc<QueueState>, frame: &Arc<Frame>) -> bool {
        let Some((socket, _)) = queue.direct() else {
            return false;
        };
        let Some(batch) = self.batch.as_mut() else {
            return false;
        };
        if !queue.is_pending() && socket.claim() {
            queue.set_claim_slot(batch.base + batch.entries.len() as u64);
            batch.entries.push_back(Entry {
                queue: Arc::clone(queue),
                frames: smallvec![Arc::clone(frame)],
                bytes: frame.bytes.len(),
            });
            self.claimed += 1;
            return true;
        }
        // Claimed: added to the claim while it waits, unless a frame already went
        // to the queue (one that did not fit the claim): this one must follow it.
        if !socket.is_writing() || queue.is_pending() {
            return false;
        }
        let waiting = queue.claim_slot().checked_sub(batch.base);
        let taken = match waiting.and_then(|index| batch.entries.get_mut(usize::try_from(index).ok()?)) {
            Some(entry)
                if entry.frames.len() < MAX_FRAMES_PER_WRITE
                    && entry.bytes + frame.bytes.len() <= MAX_BYTES_PER_WRITE =>
            {
                entry.bytes += frame.bytes.len();
                entry.frames.push(Arc::clone(frame));
                true
            }
            _ => false,
        };
        self.added |= taken;
        taken
    }
}

/// Most sockets a delivery writes to itself; a delivery that claims more leaves
/// them to the flushing task.
const MAX_WRITTEN_BY_DELIVERY: usize = 64;

impl Drop for Claims<'_> {
    /// A delivery that claimed a few sockets writes to them itself, at once: its
    /// latency is a few `writev`s and the task is not woken. One that claimed more
    /// (a fan-out to many subscribers) leaves them to the flushing task, whose
    /// slices let the events published meanwhile join them.
    fn drop(&mut self) {
        let Some(mut batch) = self.batch.take() else { return };
        let mut own = Vec::new();
        if (1..=MAX_WRITTEN_BY_DELIVERY).contains(&self.claimed) {
            let from = batch.entries.len() - self.claimed;
            own.extend(batch.entries.drain(from..));
            // Their places are taken by the next claims: nothing may be added to
            // them through their old ones.
            for entry in &own {
                entry.queue.set_claim_slot(u64::MAX);
            }
            self.claimed = 0;
        }
        drop(batch);
        if self.added || self.claimed > 0 {
            self.flusher.shared.wake.notify_one();
        }
        write_all(&mut own);
    }
}

/// The flushing task: writes claims until none is left, then waits for the next;
/// ends when the flusher is dropped.
async fn flush(shared: Weak<Shared>) {
    let mut slice = Vec::with_capacity(FLUSH_SLICE);
    loop {
        let Some(shared) = shared.upgrade() else { return };
        shared.wake.notified().await;
        loop {
            // Publishing requests that are ready go first: what they publish
            // joins the claims not written yet.
            tokio::task::yield_now().await;
            {
                let mut batch = shared.batch.lock().unwrap_or_else(PoisonError::into_inner);
                let waiting = batch.entries.len();
                let taken = waiting.div_ceil(2).max(FLUSH_SLICE).min(waiting);
                batch.base += taken as u64;
                slice.extend(batch.entries.drain(..taken));
            }
            if slice.is_empty() {
                break;
            }
            write_all(&mut slice);
        }
    }
}

/// Writes every entry, each as one chunk, and releases (or hands back) its socket.
fn write_all(entries: &mut Vec<Entry>) {
    if entries.is_empty() {
        return;
    }
    let series = m::series();
    let (delivered, write_delay) = (&series.events_delivered, &series.publish_to_write);
    // One clock reading per slice, not per subscriber, and one delay per event:
    // the entries of a fan-out all start with the same frame.
    let now = Instant::now();
    let mut delay = None;
    for Entry { queue, frames, .. } in entries.drain(..) {
        let written = write_claimed(&queue, frames.iter());
        if let Some(first) = frames.first().filter(|_| written > 0) {
            delivered.increment(written as u64);
            let seconds = match delay {
                Some((at, seconds)) if at == first.published_at => seconds,
                _ => {
                    let seconds = now.saturating_duration_since(first.published_at).as_secs_f64();
                    delay = Some((first.published_at, seconds));
                    seconds
                }
            };
            write_delay.record(seconds);
        }
    }
}

/// Writes those of `frames` the subscriber of `queue` does not have (a replayed id
/// arriving late) to its claimed socket, then releases it. How many it wrote.
fn write_claimed<'a>(queue: &QueueState, frames: impl Iterator<Item = &'a Arc<Frame>>) -> usize {
    let Some((socket, envelope)) = queue.direct() else {
        return 0;
    };
    let mut through = queue.through();
    // Inline and filled as it goes: an array would be initialised whole on every
    // write (its 64 slots cost more than the few a delivery uses).
    let mut data: SmallVec<[&Bytes; MAX_FRAMES_PER_WRITE]> = SmallVec::new();
    for frame in frames {
        if frame.passes_seam(&mut through) {
            data.push(frame.bytes_for(envelope));
        }
    }
    queue.advance_through(through);
    if data.is_empty() {
        socket.release(|| queue.is_pending());
        return 0;
    }
    match socket.write_chunk(&data) {
        Ok(()) => socket.release(|| queue.is_pending()),
        Err(rest) => socket.hand_back_with(rest),
    }
    data.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::task::noop_waker_ref;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::event::EventId;
    use crate::stream::direct::DirectSocket;
    use crate::stream::{Attachment, Direct, QueueReceiver, StreamName, StreamPattern, StreamRegistry};

    fn frame(id: u64, data: &[u8]) -> Arc<Frame> {
        Arc::new(Frame::notice(EventId::from_u64(id), Bytes::copy_from_slice(data)))
    }

    fn chunk(data: &[u8]) -> Vec<u8> {
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        chunk
    }

    /// A connected pair: the server's side as a direct socket, the client's side.
    pub(crate) async fn pair() -> (Arc<DirectSocket>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Readiness comes from the reactor: wait until the new socket is known writable.
        server.writable().await.unwrap();
        (Arc::new(DirectSocket::new(server)), client)
    }

    /// A subscriber of `stream` whose socket deliveries may write to (not lent yet),
    /// and the client's side of its connection.
    async fn subscriber(
        registry: &Arc<StreamRegistry>,
        stream: &StreamName,
    ) -> (Arc<DirectSocket>, TcpStream, QueueReceiver, Attachment) {
        let (socket, client) = pair().await;
        let direct = Direct {
            socket: Arc::clone(&socket),
            envelope: false,
        };
        let (queue, receiver) = registry.new_queue_writing_to(CancellationToken::new(), Some(direct));
        let attachment = registry
            .attach(&[StreamPattern::Exact(stream.clone())], &queue)
            .unwrap();
        (socket, client, receiver, attachment)
    }

    /// Until the flusher has written what was claimed.
    async fn flushed(socket: &DirectSocket) {
        let wait = async {
            while socket.is_writing() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .expect("the flusher runs");
    }

    async fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        tokio::time::timeout(Duration::from_secs(30), client.read_exact(&mut buf))
            .await
            .expect("the bytes arrive")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn a_lent_socket_is_written_by_deliveries_and_handed_back_when_it_fills() {
        let registry = Arc::new(StreamRegistry::new(10, 1000));
        let stream = StreamName::try_new("a").unwrap();
        let (socket, mut client, mut receiver, _attachment) = subscriber(&registry, &stream).await;

        // Owned by the task: a delivery is queued.
        registry.deliver(&stream, &frame(1, b"one"));
        assert_eq!(receiver.try_recv().unwrap().id, EventId::from_u64(1));
        receiver.advance_through(EventId::from_u64(1));

        // Lent: written by the delivery itself, each as one chunk, nothing queued.
        socket.lend(noop_waker_ref());
        registry.deliver(&stream, &frame(2, b"two"));
        registry.deliver(&stream, &frame(3, b"three"));
        assert!(receiver.try_recv().is_none());
        let both = [chunk(b"two"), chunk(b"three")].concat();
        assert_eq!(read_exactly(&mut client, both.len()).await, both);
        flushed(&socket).await;
        assert_eq!(receiver.through(), EventId::from_u64(3));
        // A frame the subscriber has (a replayed id arriving late) is not written.
        registry.deliver(&stream, &frame(2, b"again"));
        flushed(&socket).await;
        assert!(!socket.owned_by_task(), "still lent");

        // The client stops reading: sooner or later the socket does not take a
        // whole chunk, and is handed back with what is left.
        let big = vec![b'x'; 256 * 1024];
        let mut written = Vec::new();
        let mut id = 4;
        while !socket.has_remainder() {
            assert!(id < 1000, "the socket never filled");
            registry.deliver(&stream, &frame(id, &big));
            flushed(&socket).await;
            written.extend(chunk(&big));
            id += 1;
        }
        assert!(!socket.owned_by_task(), "the remainder comes first");
        // From now on deliveries are queued for the task.
        registry.deliver(&stream, &frame(id, b"queued"));
        assert_eq!(receiver.try_recv().unwrap().id, EventId::from_u64(id));
        // What the client reads is every chunk whole, in order, once the task has
        // written the remainder.
        let rest = socket.take_remainder().unwrap().concat();
        assert!(socket.owned_by_task());
        let sent = written.len() - rest.len();
        assert_eq!(&written[sent..], &rest[..]);
        let reader = tokio::spawn(async move { read_exactly(&mut client, written.len()).await == written });
        let server = socket.socket();
        let mut unwritten = &rest[..];
        while !unwritten.is_empty() {
            server.writable().await.unwrap();
            if let Ok(n) = server.try_write(unwritten) {
                unwritten = &unwritten[n..];
            }
        }
        assert!(reader.await.unwrap(), "every chunk intact and in order");
    }

    #[tokio::test]
    async fn a_frame_after_one_that_went_to_the_queue_follows_it_there() {
        let registry = Arc::new(StreamRegistry::new(10, 1000));
        let stream = StreamName::try_new("a").unwrap();
        let (socket, mut client, mut receiver, _attachment) = subscriber(&registry, &stream).await;
        socket.lend(noop_waker_ref());
        // One publish: a small event claims the socket, a large one does not fit the
        // claim and is queued, and the small one after it must not overtake it.
        let mut deliveries = registry.deliveries();
        deliveries.deliver(&stream, &frame(1, b"small"));
        deliveries.deliver(&stream, &frame(2, &vec![b'x'; MAX_BYTES_PER_WRITE]));
        deliveries.deliver(&stream, &frame(3, b"after"));
        drop(deliveries);
        assert_eq!(read_exactly(&mut client, chunk(b"small").len()).await, chunk(b"small"));
        let queued: Vec<u64> = std::iter::from_fn(|| receiver.try_recv())
            .map(|frame| frame.id.as_u64())
            .collect();
        assert_eq!(queued, [2, 3], "both queued, in order, for the task");
    }

    #[tokio::test]
    async fn a_fan_out_to_many_lent_sockets_is_written_by_the_flusher_with_what_joins_it() {
        let registry = Arc::new(StreamRegistry::new(10, 1000));
        let stream = StreamName::try_new("wide").unwrap();
        let mut subscribers = Vec::new();
        for _ in 0..=MAX_WRITTEN_BY_DELIVERY {
            let (socket, client, receiver, attachment) = subscriber(&registry, &stream).await;
            socket.lend(noop_waker_ref());
            subscribers.push((socket, client, receiver, attachment));
        }
        // Two events before the flusher runs: one chunk each socket, both frames.
        registry.deliver(&stream, &frame(1, b"one"));
        registry.deliver(&stream, &frame(2, b"two"));
        let both = chunk(b"onetwo");
        for (socket, client, receiver, _) in &mut subscribers {
            assert_eq!(read_exactly(client, both.len()).await, both);
            flushed(socket).await;
            assert!(receiver.try_recv().is_none(), "nothing went through the queue");
            assert_eq!(receiver.through(), EventId::from_u64(2));
        }
    }
}
