//! `Subscription`: one client connection and its streams, from attach to the end.
//!
//! The node attaches the live queue, reads the replay and decides gaps; this writes
//! the preamble (`retry:` and a comment) with the gap notice if any, then the replay
//! in id order, then live frames, heartbeat comments in between. At the seam, live
//! frames not newer than [`Replay::seam`] are dropped: the client has them. The
//! stream ends on client disconnect, queue overflow, token expiry, revocation or
//! shutdown; the attachment then detaches from every stream. Before the token
//! expires it sends one `token-expiring` event (no `id:`), at connect when the
//! token is already that close to its end.
//!
//! Frames are the once-encoded `Bytes` shared by all subscribers. When a subscriber
//! is behind, pending frames are coalesced into one write of up to [`MAX_CHUNK_BYTES`].
//! On a lean HTTP/1.1 connection whose socket is lent to direct deliveries
//! ([`crate::stream::direct`]), this produces nothing until the socket is handed
//! back or a deadline passes; the seam's id is shared with those deliveries.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use tokio::time::{Instant as TimerInstant, Sleep};

use crate::frame::Frame;
use crate::history::Replay;
use crate::limits::Slots;
use crate::metrics as m;
use crate::revocation::Watch;
use crate::sse;
use crate::stream::{Attachment, Ending, QueueReceiver};

/// Largest single write assembled from pending frames.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// The reconnection delay sent as the last line of a revoked stream: the token is
/// refused for `auth.revocation_ttl` anyway, so a browser should not come back with
/// it soon (an `EventSource` that does is refused with 401 and stops for good).
pub const REVOKED_RETRY: Duration = Duration::from_secs(3600);

/// Room for the preamble (about 30 bytes) in the opening's one allocation; a gap
/// notice or an expiry warning grows it.
const OPENING_CAPACITY: usize = 64;

/// Timing of an event stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamTiming {
    pub heartbeat: Duration,
    pub retry: Duration,
    /// Spread added to `retry` in the last line of a stream the gateway ends.
    pub retry_jitter: Duration,
}

/// Everything a subscription is made of, gathered by the node.
#[derive(Debug)]
pub struct Parts {
    /// The live queue's hold on its streams; released when the subscription ends.
    pub attachment: Attachment,
    pub receiver: QueueReceiver,
    pub replay: Replay,
    /// Write events as envelopes (`envelope=1`).
    pub envelope: bool,
    /// When the token stops being valid; `None` keeps the stream open.
    pub close_at: Option<SystemTime>,
    /// When to send the expiry warning, and the token's `exp` it names.
    pub expiry_warning: Option<(SystemTime, u64)>,
    /// The stream's registration with revocations (which end it through its queue).
    pub revoked: Option<Watch>,
    pub timing: StreamTiming,
    pub slots: Slots,
}

/// Why an event stream ended, as a bounded metric label.
#[derive(Debug, Clone, Copy)]
enum EndReason {
    Shutdown,
    SlowConsumer,
    TokenExpired,
    Revoked,
    ClientClosed,
}

impl EndReason {
    fn label(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::SlowConsumer => "slow_consumer",
            Self::TokenExpired => "token_expired",
            Self::Revoked => "revoked",
            Self::ClientClosed => "client_closed",
        }
    }
}

/// One open event stream.
pub struct Subscription {
    attachment: Attachment,
    receiver: QueueReceiver,
    opening: Option<Bytes>,
    /// Held frames still to write; dropped once written, so an idle connection does
    /// not keep the list (8 bytes a frame) for its whole life.
    replay: Option<std::vec::IntoIter<Arc<Frame>>>,
    envelope: bool,
    /// One timer for the three deadlines below, set to the earliest: one timer
    /// entry per open stream, not three, and one poll beside each frame.
    timer: Pin<Box<Sleep>>,
    next_heartbeat: TimerInstant,
    /// When the token expires.
    expiry: Option<TimerInstant>,
    /// When to send the expiry warning, and the `exp` it names.
    warning: Option<(TimerInstant, u64)>,
    revoked: Option<Watch>,
    opened: Instant,
    ended: Option<EndReason>,
    timing: StreamTiming,
    _slots: Slots,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("streams", &self.attachment.patterns())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A subscription about to write its preamble, gap notice and replay.
    pub fn new(parts: Parts) -> Self {
        let Parts {
            attachment,
            receiver,
            replay,
            envelope,
            close_at,
            expiry_warning,
            revoked,
            timing,
            slots,
        } = parts;
        let mut opening = BytesMut::with_capacity(OPENING_CAPACITY);
        sse::put_preamble(&mut opening, timing.retry);
        if !replay.gaps.is_empty() {
            opening.extend_from_slice(&sse::encode_gap_notice(&replay.gaps, replay.resumed_from));
            metrics::counter!(m::GAP_NOTICES).increment(1);
        }
        let warning = match expiry_warning {
            Some((at, exp)) if at <= SystemTime::now() => {
                opening.extend_from_slice(&sse::encode_expiry_warning(exp));
                metrics::counter!(m::EXPIRY_WARNINGS).increment(1);
                None
            }
            Some((at, exp)) => Some((timer_instant(at), exp)),
            None => None,
        };
        // Every event up to the seam was written (or the client had it): a live
        // frame not newer is a duplicate.
        receiver.advance_through(replay.seam());
        let next_heartbeat = TimerInstant::now() + timing.heartbeat;
        let expiry = close_at.map(timer_instant);
        m::series().connections_total.increment(1);
        Self {
            attachment,
            receiver,
            opening: Some(opening.freeze()),
            replay: Some(replay.frames.into_iter()),
            envelope,
            timer: Box::pin(tokio::time::sleep_until(earliest(next_heartbeat, expiry, warning))),
            next_heartbeat,
            expiry,
            warning,
            revoked,
            opened: Instant::now(),
            ended: None,
            timing,
            _slots: slots,
        }
    }

    /// The response body: every chunk this subscription writes, until it ends.
    pub fn into_body(self) -> Body {
        Body::new(self)
    }

    /// The next bytes to write, or `None` once the stream has ended.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// Polled by hand rather than written with `async` and `select!`: the response
    /// body polls this in place for every wake-up, with nothing moved or rebuilt (an
    /// `unfold` stream moved the whole subscription in and out of a new future for
    /// every chunk). `Pending` only after the timer and the queue were both polled,
    /// so each holds the waker.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(opening) = self.opening.take() {
            return Poll::Ready(Some(opening));
        }
        if self.ended.is_some() {
            return Poll::Ready(None);
        }
        if let Some(frame) = self.next_replay_frame() {
            return Poll::Ready(Some(frame));
        }
        loop {
            // While the socket is lent to direct deliveries (see `stream::direct`),
            // this writes nothing: it waits to be handed the socket back, or takes
            // it back when a deadline passed.
            if let Some(direct) = self.receiver.direct()
                && !direct.owned_by_task()
            {
                direct.register(cx.waker());
                let due = self.timer.as_mut().poll(cx).is_ready() || self.receiver.is_pending();
                if !(due && direct.take_back() || direct.owned_by_task()) {
                    return Poll::Pending;
                }
            }
            // Shutdown, overflow and revocation end the stream through its queue.
            if let Some(ending) = self.receiver.ending() {
                return Poll::Ready(self.end(match ending {
                    Ending::Shutdown => EndReason::Shutdown,
                    Ending::Overflow => EndReason::SlowConsumer,
                    Ending::Revoked => EndReason::Revoked,
                }));
            }
            // Before the queue, so a busy stream still ends at expiry.
            if self.timer.as_mut().poll(cx).is_ready() {
                match self.on_timer() {
                    Some(chunk) => return Poll::Ready(chunk),
                    // Set to the next deadline: polled again, to hold the waker.
                    None => continue,
                }
            }
            match self.receiver.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                // Ended: said at the top of the loop.
                Poll::Ready(None) => {}
                Poll::Ready(Some(frame)) => {
                    if let Some(chunk) = self.next_live_chunk(frame) {
                        return Poll::Ready(Some(chunk));
                    }
                }
            }
        }
    }

    /// What a deadline that passed asks for (`Some(None)`: the stream ended), and
    /// the timer set to the next one.
    fn on_timer(&mut self) -> Option<Option<Bytes>> {
        let now = TimerInstant::now();
        let due = |at: TimerInstant| at <= now;
        let outcome = if self.expiry.is_some_and(due) {
            Some(self.end(EndReason::TokenExpired))
        } else if let Some((_, exp)) = self.warning.filter(|&(at, _)| due(at)) {
            self.warning = None;
            metrics::counter!(m::EXPIRY_WARNINGS).increment(1);
            Some(Some(sse::encode_expiry_warning(exp)))
        } else if due(self.next_heartbeat) {
            // Like an interval that delays missed ticks: the next one a period on.
            self.next_heartbeat = now + self.timing.heartbeat;
            Some(Some(sse::HEARTBEAT))
        } else {
            None
        };
        self.timer
            .as_mut()
            .reset(earliest(self.next_heartbeat, self.expiry, self.warning));
        outcome
    }

    /// The next held frame, as its shared bytes: the writer gathers frames that are
    /// ready into one write, so a replay is not copied per connection.
    fn next_replay_frame(&mut self) -> Option<Bytes> {
        let replay = self.replay.as_mut()?;
        let frame = replay.next();
        if replay.len() == 0 {
            self.replay = None;
        }
        let frame = frame?;
        m::series().events_replayed.increment(1);
        Some(frame.bytes_for(self.envelope).clone())
    }

    /// `first` and whatever else is already queued, minus seam duplicates.
    /// Returns `None` when nothing is left to write, or the queue overflowed: a frame
    /// dequeued after an overflow may be newer than the one that was lost, so it
    /// must not be written.
    fn next_live_chunk(&mut self, first: Arc<Frame>) -> Option<Bytes> {
        let mut chunk = ChunkBuilder::default();
        let mut oldest: Option<Instant> = None;
        let mut next = Some(first);
        let mut through = self.receiver.through();
        while let Some(frame) = next {
            if frame.passes_seam(&mut through) {
                oldest.get_or_insert(frame.published_at);
                chunk.push(frame.bytes_for(self.envelope));
            }
            if chunk.len() >= MAX_CHUNK_BYTES {
                break;
            }
            next = self.receiver.try_recv();
        }
        self.receiver.advance_through(through);
        if self.attachment.queue().has_overflowed() {
            return None;
        }
        let series = m::series();
        if let Some(oldest) = oldest {
            series.publish_to_write.record(oldest.elapsed().as_secs_f64());
        }
        series.events_delivered.increment(chunk.frames);
        chunk.finish()
    }

    /// Ends the stream. When the gateway ends it (shutdown, token expiry) the last
    /// line is a `retry:` with a random share of `retry_jitter` added, so clients
    /// spread their reconnects instead of all coming back in the same second.
    fn end(&mut self, reason: EndReason) -> Option<Bytes> {
        self.ended = Some(reason);
        m::series().disconnected(reason.label());
        self.log_end(reason);
        match reason {
            EndReason::Shutdown | EndReason::TokenExpired => {
                let jitter_ms = u64::try_from(self.timing.retry_jitter.as_millis()).unwrap_or(u64::MAX);
                let extra = rand::Rng::random_range(&mut rand::rng(), 0..=jitter_ms);
                Some(sse::encode_retry(self.timing.retry + Duration::from_millis(extra)))
            }
            EndReason::Revoked => {
                metrics::counter!(m::REVOKED_STREAMS).increment(1);
                Some(sse::encode_retry(REVOKED_RETRY))
            }
            EndReason::SlowConsumer | EndReason::ClientClosed => None,
        }
    }
}

impl http_body::Body for Subscription {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_chunk(cx)
            .map(|chunk| chunk.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

impl Subscription {
    /// One `info` line per stream end, with why (target `access`, beside the
    /// request's own line).
    fn log_end(&self, reason: EndReason) {
        tracing::info!(
            target: "access",
            reason = reason.label(),
            subject = self.revoked.as_ref().and_then(Watch::subject).unwrap_or("-"),
            streams = self.attachment.patterns().len(),
            duration_s = self.opened.elapsed().as_secs_f64(),
            "event stream ended"
        );
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.ended.is_none() {
            m::series().disconnected(EndReason::ClientClosed.label());
            self.log_end(EndReason::ClientClosed);
        }
    }
}

/// Joins frames into one write without copying when there is only one.
#[derive(Default)]
struct ChunkBuilder {
    single: Option<Bytes>,
    joined: Option<BytesMut>,
    frames: u64,
}

impl ChunkBuilder {
    fn push(&mut self, bytes: &Bytes) {
        self.frames += 1;
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(bytes);
        } else if let Some(single) = self.single.take() {
            let mut joined = BytesMut::with_capacity(single.len() + bytes.len());
            joined.extend_from_slice(&single);
            joined.extend_from_slice(bytes);
            self.joined = Some(joined);
        } else {
            self.single = Some(bytes.clone());
        }
    }

    fn len(&self) -> usize {
        self.joined
            .as_ref()
            .map_or_else(|| self.single.as_ref().map_or(0, Bytes::len), BytesMut::len)
    }

    fn finish(self) -> Option<Bytes> {
        self.joined.map(BytesMut::freeze).or(self.single)
    }
}

/// What the one timer is set to: the earliest of the next heartbeat, the token's
/// expiry and the expiry warning.
fn earliest(
    heartbeat: TimerInstant,
    expiry: Option<TimerInstant>,
    warning: Option<(TimerInstant, u64)>,
) -> TimerInstant {
    [expiry, warning.map(|(at, _)| at)]
        .into_iter()
        .flatten()
        .fold(heartbeat, TimerInstant::min)
}

/// The timer instant of a wall-clock time (now, when it has passed).
fn timer_instant(at: SystemTime) -> TimerInstant {
    TimerInstant::now() + at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::NewEvent;
    use crate::history::Resume;
    use crate::node::{Allowed, Node, Publication, Publisher, Source, SubscribeRequest};
    use crate::stream::StreamName;

    #[tokio::test]
    async fn a_replay_is_written_from_the_held_frames_and_released() {
        let node = Node::start(&Config::default(), Default::default()).unwrap();
        let stream = StreamName::try_new("a").unwrap();
        let events = (0..100)
            .map(|i| NewEvent::text(stream.clone(), None, i.to_string()))
            .collect();
        let publisher = Publisher {
            subject: "test",
            source: Source::Http,
            allowed: Allowed::Any,
        };
        let ids = node
            .publish(Publication {
                publisher,
                events,
                idempotency: None,
            })
            .await
            .unwrap();
        let any = [crate::stream::StreamPattern::Any];
        let mut subscription = node
            .subscribe(SubscribeRequest {
                subject: "s",
                allowed: &any,
                streams: vec![stream.into()],
                resume: Some(Resume::After(ids[0])),
                latest: false,
                envelope: false,
                token: None,
                close_at: None,
                close_connection: tokio_util::sync::CancellationToken::new(),
                direct: None,
            })
            .await
            .unwrap();
        let frames: Vec<Bytes> = subscription
            .replay
            .as_ref()
            .unwrap()
            .as_slice()
            .iter()
            .map(|frame| frame.bytes.clone())
            .collect();
        assert_eq!(frames.len(), 99);
        let opening = subscription.next_chunk().await.unwrap();
        assert!(opening.starts_with(b"retry:"));
        for id in &ids[1..] {
            let replayed = subscription.next_chunk().await.unwrap();
            assert!(replayed.starts_with(format!("id: {id}\n").as_bytes()));
            assert!(
                frames.iter().any(|frame| frame.as_ptr() == replayed.as_ptr()),
                "the held frame's own bytes, not a copy"
            );
        }
        assert!(subscription.replay.is_none(), "nothing of the replay is kept");
    }
}
