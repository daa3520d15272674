//! State shared by the generator's tasks. The generator runs on one thread (a
//! `LocalSet`), so plain `Cell`/`RefCell` suffice and cost nothing per event.

use std::cell::{Cell, RefCell};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore};

use crate::target::Target;

/// One subscriber's view of what it received.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) stream: usize,
    /// Next sequence number expected from each publisher.
    pub(crate) next_seq: Vec<u64>,
    /// Last event id received, sent back as `Last-Event-ID` on reconnect.
    pub(crate) last_id: Option<String>,
    pub(crate) received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) out_of_order: u64,
    pub(crate) gaps: u64,
    /// Times the stream ended or broke and the subscriber resumed.
    pub(crate) reconnects: u64,
    pub(crate) caught_up_at: Option<Instant>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) target: Target,
    pub(crate) subscribers: RefCell<Vec<Subscriber>>,
    /// Events acknowledged by the server, per stream and publisher.
    pub(crate) published: RefCell<Vec<Vec<u64>>>,
    /// Set once publishing is over: what each stream's subscribers must reach.
    pub(crate) expected: RefCell<Option<Vec<Vec<u64>>>>,
    pub(crate) latency_us: RefCell<Histogram<u64>>,
    /// Publish request to its 2xx answer (how long a publisher waits for its ack).
    pub(crate) publish_latency_us: RefCell<Histogram<u64>>,
    pub(crate) record_latency: Cell<bool>,
    pub(crate) opened: Cell<usize>,
    pub(crate) caught_up: Cell<usize>,
    pub(crate) progress: Notify,
    pub(crate) last_delivery: Cell<Option<Instant>>,
    /// Failed connects and non-200 answers to a subscribe.
    pub(crate) subscribe_errors: Cell<u64>,
    pub(crate) publish_errors: Cell<u64>,
    /// Set when the server refuses in a way retrying cannot fix.
    pub(crate) fatal: RefCell<Option<String>>,
    /// Bounds concurrent connection set-ups (the storm lifts it).
    pub(crate) connect_gate: Semaphore,
}

impl Shared {
    pub(crate) fn new(target: Target, streams: usize, subscribers: usize, publishers: usize, gate: usize) -> Self {
        Self {
            target,
            subscribers: RefCell::new(
                (0..subscribers)
                    .map(|i| Subscriber {
                        stream: i % streams,
                        next_seq: vec![0; publishers],
                        last_id: None,
                        received: 0,
                        lost: 0,
                        duplicated: 0,
                        out_of_order: 0,
                        gaps: 0,
                        reconnects: 0,
                        caught_up_at: None,
                    })
                    .collect(),
            ),
            published: RefCell::new(vec![vec![0; publishers]; streams]),
            expected: RefCell::new(None),
            latency_us: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
            publish_latency_us: RefCell::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")),
            record_latency: Cell::new(false),
            opened: Cell::new(0),
            caught_up: Cell::new(0),
            progress: Notify::new(),
            last_delivery: Cell::new(None),
            subscribe_errors: Cell::new(0),
            publish_errors: Cell::new(0),
            fatal: RefCell::new(None),
            connect_gate: Semaphore::new(gate),
        }
    }

    /// Fixes what every subscriber must reach (what was published so far) and marks
    /// those already there.
    pub(crate) fn expect_published(&self) {
        let expected = self.published.borrow().clone();
        let now = Instant::now();
        for subscriber in self.subscribers.borrow_mut().iter_mut() {
            subscriber.caught_up_at = None;
        }
        self.caught_up.set(0);
        *self.expected.borrow_mut() = Some(expected);
        let count = self.subscribers.borrow().len();
        for index in 0..count {
            self.check_caught_up(index, now);
        }
        self.progress.notify_waiters();
    }

    /// When the last subscriber caught up with what was expected (now, if one has not).
    pub(crate) fn last_caught_up(&self) -> Instant {
        self.subscribers
            .borrow()
            .iter()
            .filter_map(|s| s.caught_up_at)
            .max()
            .unwrap_or_else(Instant::now)
    }

    pub(crate) fn check_caught_up(&self, index: usize, now: Instant) {
        let expected = self.expected.borrow();
        let Some(expected) = expected.as_ref() else {
            return;
        };
        let mut subscribers = self.subscribers.borrow_mut();
        let subscriber = &mut subscribers[index];
        if subscriber.caught_up_at.is_none()
            && subscriber
                .next_seq
                .iter()
                .zip(&expected[subscriber.stream])
                .all(|(next, want)| next >= want)
        {
            subscriber.caught_up_at = Some(now);
            self.caught_up.set(self.caught_up.get() + 1);
            self.progress.notify_waiters();
        }
    }

    /// Events expected but never received, over all subscribers.
    pub(crate) fn missing(&self) -> u64 {
        let expected = self.expected.borrow();
        let Some(expected) = expected.as_ref() else {
            return 0;
        };
        self.subscribers
            .borrow()
            .iter()
            .map(|s| {
                s.next_seq
                    .iter()
                    .zip(&expected[s.stream])
                    .map(|(next, want)| want.saturating_sub(*next))
                    .sum::<u64>()
            })
            .sum()
    }
}

pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
