//! Events, their ids and the id-ordering contract.
//!
//! An [`EventId`] is a `u64` shown as a decimal string. Ids are unique and strictly
//! increasing across every stream of a deployment and never reused after a restart:
//! [`IdClock`] issues `max(previous + 1, unix_millis << 20)`, so a restarted node
//! starts above everything its predecessor issued (as long as the wall clock did not
//! step back), and up to 2^20 ids per millisecond fit before ids run ahead of the
//! clock. Every id issued until the year 2271 has 19 digits, so ids compare the same
//! as numbers and as strings.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stream::StreamName;

/// Bits of an id below the millisecond timestamp.
pub const SEQUENCE_BITS: u32 = 20;

/// The gateway-assigned id of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId(u64);

impl EventId {
    /// The id below every id the gateway issues.
    pub const ZERO: Self = Self(0);
    /// Above every id; marks frames that are not events (live gap notices).
    pub const MAX: Self = Self(u64::MAX);

    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The first id a clock starting at `unix_millis` may issue, minus one.
    pub const fn floor_at_millis(unix_millis: u64) -> Self {
        Self(unix_millis << SEQUENCE_BITS)
    }

    /// The id of the `sequence`-th event of millisecond `millis`; `None` when either
    /// part does not fit.
    pub const fn from_parts(millis: u64, sequence: u64) -> Option<Self> {
        if sequence >= 1 << SEQUENCE_BITS || millis >= 1 << (64 - SEQUENCE_BITS) {
            return None;
        }
        Some(Self((millis << SEQUENCE_BITS) | sequence))
    }

    /// The millisecond part (Unix time when the id was issued, or later).
    pub const fn millis(self) -> u64 {
        self.0 >> SEQUENCE_BITS
    }

    /// The sequence within the millisecond.
    pub const fn sequence(self) -> u64 {
        self.0 & ((1 << SEQUENCE_BITS) - 1)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A `Last-Event-ID` that is not an id this gateway could have issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an event id")]
pub struct InvalidEventId;

impl FromStr for EventId {
    type Err = InvalidEventId;

    /// Accepts only plain decimal digits (no sign, no spaces), as issued.
    ///
    /// ```
    /// use sse_gateway::event::EventId;
    /// assert_eq!("1882449449004826624".parse::<EventId>().unwrap().as_u64(), 1882449449004826624);
    /// assert!("-1".parse::<EventId>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidEventId);
        }
        text.parse::<u64>().map(Self).map_err(|_| InvalidEventId)
    }
}

/// Issues strictly increasing ids from the wall clock; see the module doc.
#[derive(Debug)]
pub struct IdClock {
    last: EventId,
    start: EventId,
    /// Milliseconds since the Unix epoch: the wall clock, or another source in tests.
    now: fn() -> u64,
}

impl IdClock {
    /// A clock whose ids start above every id a predecessor could have issued up to
    /// and including the current millisecond. It waits (at most a millisecond) for
    /// the next one to begin before it issues anything, so its ids never run ahead
    /// of the wall clock: a successor started in the very millisecond of its last id
    /// still starts above it.
    pub fn start_now() -> Self {
        Self::start_with(unix_millis)
    }

    /// Like [`IdClock::start_now`] with another time source (milliseconds since the
    /// Unix epoch).
    pub fn start_with(now: fn() -> u64) -> Self {
        let start = now();
        while now() <= start {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        Self {
            now,
            ..Self::start_at(EventId::floor_at_millis(start + 1))
        }
    }

    /// A clock that goes on after `last`, the newest id a durable predecessor
    /// issued, whatever the time source says: ids keep increasing even when the wall
    /// clock stepped back across a restart.
    pub fn resume_after(last: EventId, now: fn() -> u64) -> Self {
        let clock = Self::start_with(now);
        let floor = clock.start.max(last);
        Self {
            last: floor,
            start: floor,
            now,
        }
    }

    /// A clock whose first id is `floor + 1`.
    pub fn start_at(floor: EventId) -> Self {
        Self {
            last: floor,
            start: floor,
            now: unix_millis,
        }
    }

    /// Every id this clock issues is greater than this.
    pub fn start_floor(&self) -> EventId {
        self.start
    }

    /// The most recent id issued (the start floor before the first).
    pub fn last(&self) -> EventId {
        self.last
    }

    /// The next id: greater than every id issued before.
    pub fn next_id(&mut self) -> EventId {
        self.next_id_at((self.now)())
    }

    fn next_id_at(&mut self, unix_millis: u64) -> EventId {
        let next = (self.last.0 + 1).max(EventId::floor_at_millis(unix_millis).0);
        self.last = EventId(next);
        self.last
    }
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX >> SEQUENCE_BITS)
    })
}

/// The SSE event type; never contains CR, LF or NUL and is never the reserved `gap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType(String);

/// The event type reserved for gap notices.
pub const GAP_EVENT_TYPE: &str = "gap";

/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 256;

/// Why an event type was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventType {
    #[error("event type must not be empty")]
    Empty,
    #[error("event type is longer than {MAX_EVENT_TYPE_BYTES} bytes")]
    TooLong,
    #[error("event type must not contain CR, LF or NUL")]
    ControlCharacter,
    #[error("event type `gap` is reserved for gap notices")]
    Reserved,
}

impl EventType {
    /// Validates a publisher-supplied type.
    ///
    /// # Errors
    /// [`InvalidEventType`] naming the rule broken.
    pub fn try_new(text: &str) -> Result<Self, InvalidEventType> {
        if text.is_empty() {
            return Err(InvalidEventType::Empty);
        }
        if text.len() > MAX_EVENT_TYPE_BYTES {
            return Err(InvalidEventType::TooLong);
        }
        if text.contains(['\r', '\n', '\0']) {
            return Err(InvalidEventType::ControlCharacter);
        }
        if text == GAP_EVENT_TYPE {
            return Err(InvalidEventType::Reserved);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How the publisher gave an event's `data`: a JSON string (sent as is) or any
/// other JSON value (sent as compact JSON). Envelopes need to know which: there the
/// data is embedded as the JSON value it was published as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataKind {
    /// A string (a JSON string, a form field, a datagram's text).
    #[default]
    Text,
    /// Compact JSON text of a non-string JSON value.
    Json,
}

/// A validated event on its way into a backend, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub stream: StreamName,
    pub event_type: Option<EventType>,
    /// The payload exactly as subscribers receive it (strings as is, JSON compact).
    pub data: String,
    pub kind: DataKind,
}

impl NewEvent {
    /// An event whose data is a string.
    pub fn text(stream: StreamName, event_type: Option<EventType>, data: impl Into<String>) -> Self {
        Self {
            stream,
            event_type,
            data: data.into(),
            kind: DataKind::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_even_when_the_clock_stalls_or_steps_back() {
        let mut clock = IdClock::start_at(EventId::floor_at_millis(1_000));
        let a = clock.next_id_at(1_000);
        let b = clock.next_id_at(1_000);
        let c = clock.next_id_at(999);
        let d = clock.next_id_at(2_000);
        assert!(a < b && b < c && c < d);
        assert_eq!(d, EventId::from_u64(2_000 << SEQUENCE_BITS));
    }

    #[test]
    fn a_restarted_clock_starts_above_its_predecessor() {
        let mut before = IdClock::start_at(EventId::floor_at_millis(5_000));
        let mut last = EventId::ZERO;
        for _ in 0..10_000 {
            last = before.next_id_at(5_000);
        }
        let mut after = IdClock::start_at(EventId::floor_at_millis(5_001));
        assert!(after.next_id_at(5_001) > last);
    }

    #[test]
    fn clocks_restarted_at_once_never_reuse_an_id() {
        let mut last = EventId::ZERO;
        for _ in 0..50 {
            let mut clock = IdClock::start_now();
            for _ in 0..3 {
                let id = clock.next_id();
                assert!(id > last, "{id} after {last}");
                last = id;
            }
        }
    }

    #[test]
    fn current_ids_have_nineteen_digits() {
        let mut clock = IdClock::start_now();
        assert_eq!(clock.next_id().to_string().len(), 19);
    }

    #[test]
    fn event_ids_parse_only_plain_decimals() {
        assert_eq!("42".parse::<EventId>(), Ok(EventId::from_u64(42)));
        for bad in ["", "-1", "+1", " 1", "1 ", "abc", "1e3", "99999999999999999999999"] {
            assert_eq!(bad.parse::<EventId>(), Err(InvalidEventId), "{bad:?}");
        }
    }

    #[test]
    fn event_types_reject_line_breaks_nul_and_gap() {
        assert!(EventType::try_new("price-update").is_ok());
        assert_eq!(EventType::try_new("a\nb"), Err(InvalidEventType::ControlCharacter));
        assert_eq!(EventType::try_new("a\rb"), Err(InvalidEventType::ControlCharacter));
        assert_eq!(EventType::try_new("a\0b"), Err(InvalidEventType::ControlCharacter));
        assert_eq!(EventType::try_new("gap"), Err(InvalidEventType::Reserved));
        assert_eq!(EventType::try_new(""), Err(InvalidEventType::Empty));
        assert_eq!(EventType::try_new(&"x".repeat(300)), Err(InvalidEventType::TooLong));
    }
}
