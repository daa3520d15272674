//! The node's limits: open event streams (per node, per subject) and the distinct
//! streams they hold per subject, publish rate per subject, the node's rate of new
//! event streams, and the bytes of request bodies being received at once.
//!
//! A subject is the token's `sub` claim, or the token itself when it has none. The
//! rate limits are token buckets from `governor` (keyed per subject for publishing);
//! their state is trimmed periodically so idle subjects do not accumulate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::metrics as m;
use crate::stream::StreamPattern;

/// A limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many open event streams for this subject (limits.max_connections_per_subject: {max})")]
    SubjectConnections { max: usize },
    #[error("this subject's open event streams hold too many distinct streams (limits.max_streams_per_subject: {max})")]
    SubjectStreams { max: usize },
    #[error("too many open firehose (`*`) subscriptions for this subject (limits.max_firehose_per_subject: {max})")]
    SubjectFirehose { max: usize },
    #[error("too many request bodies are being received at once ({key}); retry shortly")]
    BodiesInFlight { key: &'static str },
    #[error("publish rate limit exceeded for this subject")]
    PublishRate { retry_after: Duration },
    #[error("this node is accepting new event streams too fast; retry shortly")]
    SubscribeRate { retry_after: Duration },
}

impl LimitError {
    /// Stable machine-readable reason, for error bodies and metric labels.
    pub fn reason(self) -> &'static str {
        match self {
            Self::SubjectConnections { .. } => "subject_connection_limit",
            Self::SubjectStreams { .. } => "subject_stream_limit",
            Self::SubjectFirehose { .. } => "subject_firehose_limit",
            Self::BodiesInFlight { .. } => "bodies_in_flight_limit",
            Self::PublishRate { .. } => "publish_rate_limit",
            Self::SubscribeRate { .. } => "subscribe_rate_limit",
        }
    }
}

/// Counts open event streams against `limits.max_connections`.
#[derive(Debug)]
pub struct ConnectionLimiter {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionLimiter {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot for one more connection, or `None` at the limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()?;
        m::series().connections_open.increment(1.0);
        Some(ConnectionSlot {
            limiter: Arc::clone(self),
        })
    }
}

/// One held connection slot; released on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    limiter: Arc<ConnectionLimiter>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limiter.open.fetch_sub(1, Ordering::AcqRel);
        m::series().connections_open.decrement(1.0);
    }
}

/// What a subscription holds against the node's limits; released when it ends.
#[derive(Debug)]
pub struct Slots {
    pub connection: ConnectionSlot,
    pub subject: SubjectSlot,
}

/// The limits of one node.
#[derive(Debug)]
pub struct Limiter {
    max_per_subject: usize,
    max_streams_per_subject: usize,
    max_firehose_per_subject: usize,
    /// Lower limits for particular subjects (the demo page's token).
    subject_overrides: HashMap<String, SubjectLimits>,
    open_per_subject: DashMap<String, SubjectUsage>,
    publish: Option<DefaultKeyedRateLimiter<String>>,
    subscribe: Option<DefaultDirectRateLimiter>,
}

/// Limits of one subject that differ from the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectLimits {
    pub max_connections: usize,
    pub max_streams: usize,
}

/// What one subject's open event streams hold.
#[derive(Debug, Default)]
struct SubjectUsage {
    connections: usize,
    /// Open subscriptions to `*`.
    firehoses: usize,
    /// Distinct names and patterns, with how many of the subject's connections
    /// hold each (a pattern counts as one stream).
    streams: HashMap<StreamPattern, usize>,
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Limiter {
    pub fn from_config(limits: &LimitsConfig) -> Arc<Self> {
        Self::with_overrides(limits, HashMap::new())
    }

    /// Like [`Limiter::from_config`], with other limits for some subjects.
    pub fn with_overrides(limits: &LimitsConfig, subject_overrides: HashMap<String, SubjectLimits>) -> Arc<Self> {
        Arc::new(Self {
            max_per_subject: limits.max_connections_per_subject,
            max_streams_per_subject: limits.max_streams_per_subject,
            max_firehose_per_subject: limits.max_firehose_per_subject,
            subject_overrides,
            open_per_subject: DashMap::new(),
            publish: quota(limits.publish_rate_per_subject, limits.publish_burst).map(RateLimiter::keyed),
            subscribe: quota(limits.subscribe_rate, limits.subscribe_burst).map(RateLimiter::direct),
        })
    }

    /// Admits one more event stream for `subject` holding `streams` (names and
    /// patterns, each counting as one); the slot is released on drop.
    ///
    /// # Errors
    /// [`LimitError::SubscribeRate`], [`LimitError::SubjectConnections`],
    /// [`LimitError::SubjectStreams`] or [`LimitError::SubjectFirehose`].
    pub fn admit_stream(self: &Arc<Self>, subject: &str, streams: &[StreamPattern]) -> Result<SubjectSlot, LimitError> {
        if let Some(limiter) = &self.subscribe
            && let Err(not_until) = limiter.check()
        {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(LimitError::SubscribeRate { retry_after });
        }
        let overrides = self.subject_overrides.get(subject);
        let max_connections = overrides
            .map(|limits| limits.max_connections)
            .or((self.max_per_subject > 0).then_some(self.max_per_subject));
        let max_streams = overrides
            .map(|limits| limits.max_streams)
            .or((self.max_streams_per_subject > 0).then_some(self.max_streams_per_subject));
        let firehose = streams.contains(&StreamPattern::Any);
        let max_firehose = (firehose && self.max_firehose_per_subject > 0).then_some(self.max_firehose_per_subject);
        if max_connections.is_none() && max_streams.is_none() && max_firehose.is_none() {
            return Ok(SubjectSlot::unlimited(self));
        }
        let mut usage = self.open_per_subject.entry(subject.to_owned()).or_default();
        if let Some(max) = max_connections
            && usage.connections >= max
        {
            return Err(LimitError::SubjectConnections { max });
        }
        if let Some(max) = max_firehose
            && usage.firehoses >= max
        {
            return Err(LimitError::SubjectFirehose { max });
        }
        if let Some(max) = max_streams {
            let new = streams
                .iter()
                .filter(|stream| !usage.streams.contains_key(*stream))
                .count();
            if usage.streams.len() + new > max {
                return Err(LimitError::SubjectStreams { max });
            }
        }
        usage.connections += 1;
        usage.firehoses += usize::from(firehose);
        for stream in streams {
            *usage.streams.entry(stream.clone()).or_default() += 1;
        }
        drop(usage);
        Ok(SubjectSlot {
            limiter: Arc::clone(self),
            subject: Some((subject.to_owned(), streams.to_vec())),
        })
    }

    /// Charges `events` publishes to `subject`.
    ///
    /// # Errors
    /// [`LimitError::PublishRate`] with the wait before the batch could pass (a batch
    /// larger than the burst can never pass and is told to wait a second).
    pub fn admit_publish(&self, subject: &str, events: usize) -> Result<(), LimitError> {
        let Some(limiter) = &self.publish else {
            return Ok(());
        };
        let n = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match limiter.check_key_n(&subject.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(LimitError::PublishRate {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }),
            Err(_insufficient_capacity) => Err(LimitError::PublishRate {
                retry_after: Duration::from_secs(1),
            }),
        }
    }

    /// Forgets rate-limit state of subjects that are back to a full bucket.
    pub fn retain_recent(&self) {
        if let Some(limiter) = &self.publish {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn release(&self, subject: &str, streams: &[StreamPattern]) {
        if let Some(mut usage) = self.open_per_subject.get_mut(subject) {
            usage.connections = usage.connections.saturating_sub(1);
            if streams.contains(&StreamPattern::Any) {
                usage.firehoses = usage.firehoses.saturating_sub(1);
            }
            for stream in streams {
                if let Some(holders) = usage.streams.get_mut(stream) {
                    *holders -= 1;
                    if *holders == 0 {
                        usage.streams.remove(stream);
                    }
                }
            }
        }
        self.open_per_subject
            .remove_if(subject, |_, usage| usage.connections == 0);
    }
}

/// One admitted event stream; releases its subject's counts on drop.
#[derive(Debug)]
pub struct SubjectSlot {
    limiter: Arc<Limiter>,
    subject: Option<(String, Vec<StreamPattern>)>,
}

impl SubjectSlot {
    fn unlimited(limiter: &Arc<Limiter>) -> Self {
        Self {
            limiter: Arc::clone(limiter),
            subject: None,
        }
    }
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        if let Some((subject, streams)) = &self.subject {
            self.limiter.release(subject, streams);
        }
    }
}

/// The bytes of request bodies being received at once, across all requests: a
/// thousand slow uploads must not hold a thousand bodies in memory.
#[derive(Debug)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    /// The configuration key, named when the budget refuses a body.
    key: &'static str,
}

/// Bytes taken from a [`BodyBudget`]; given back on drop.
#[derive(Debug)]
pub struct BodyPermit(Option<OwnedSemaphorePermit>);

impl BodyBudget {
    pub fn new(max_bytes: usize, key: &'static str) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(max_bytes.min(Semaphore::MAX_PERMITS))),
            key,
        }
    }

    /// Takes `bytes` more for `permit`, at once or not at all.
    ///
    /// # Errors
    /// [`LimitError::BodiesInFlight`] when the budget does not have them now.
    pub fn take(&self, permit: &mut BodyPermit, bytes: usize) -> Result<(), LimitError> {
        if bytes == 0 {
            return Ok(());
        }
        let refused = LimitError::BodiesInFlight { key: self.key };
        let bytes = u32::try_from(bytes).map_err(|_| refused)?;
        let taken = Arc::clone(&self.bytes)
            .try_acquire_many_owned(bytes)
            .map_err(|_| refused)?;
        match &mut permit.0 {
            Some(held) => held.merge(taken),
            None => permit.0 = Some(taken),
        }
        Ok(())
    }
}

impl BodyPermit {
    pub fn empty() -> Self {
        Self(None)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(adjust: impl FnOnce(&mut LimitsConfig)) -> Arc<Limiter> {
        let mut config = LimitsConfig::default();
        adjust(&mut config);
        Limiter::from_config(&config)
    }

    fn names(list: &[&str]) -> Vec<StreamPattern> {
        list.iter().map(|n| StreamPattern::try_new(n).unwrap()).collect()
    }

    #[test]
    fn subjects_have_their_own_connection_budget() {
        let limiter = limits(|l| l.max_connections_per_subject = 2);
        let a = names(&["x"]);
        let a1 = limiter.admit_stream("a", &a).unwrap();
        let _a2 = limiter.admit_stream("a", &a).unwrap();
        assert_eq!(
            limiter.admit_stream("a", &a).unwrap_err(),
            LimitError::SubjectConnections { max: 2 }
        );
        let _b = limiter.admit_stream("b", &a).unwrap();
        drop(a1);
        let _a3 = limiter.admit_stream("a", &a).unwrap();
    }

    #[test]
    fn subjects_hold_a_bounded_number_of_distinct_streams() {
        let limiter = limits(|l| l.max_streams_per_subject = 3);
        let first = limiter.admit_stream("a", &names(&["s1", "s2"])).unwrap();
        // Streams the subject already holds cost nothing more.
        let _again = limiter.admit_stream("a", &names(&["s1", "s2", "s3"])).unwrap();
        assert_eq!(
            limiter.admit_stream("a", &names(&["s4"])).unwrap_err(),
            LimitError::SubjectStreams { max: 3 }
        );
        let _other = limiter.admit_stream("b", &names(&["s4"])).unwrap();
        drop(first);
        assert!(limiter.admit_stream("a", &names(&["s4"])).is_err(), "s1..s3 still held");
    }

    #[test]
    fn an_override_lowers_one_subjects_limits() {
        let demo = SubjectLimits {
            max_connections: 1,
            max_streams: 2,
        };
        let limiter = Limiter::with_overrides(&LimitsConfig::default(), HashMap::from([("demo".to_owned(), demo)]));
        let _one = limiter.admit_stream("demo", &names(&["x"])).unwrap();
        assert_eq!(
            limiter.admit_stream("demo", &names(&["x"])).unwrap_err(),
            LimitError::SubjectConnections { max: 1 }
        );
        let _fine = limiter.admit_stream("other", &names(&["x"])).unwrap();
        assert_eq!(
            limiter.admit_stream("demo", &names(&["a", "b", "c"])).unwrap_err(),
            LimitError::SubjectConnections { max: 1 }
        );
    }

    #[test]
    fn empty_subjects_are_forgotten() {
        let limiter = limits(|l| l.max_connections_per_subject = 2);
        drop(limiter.admit_stream("a", &names(&["x"])).unwrap());
        assert!(limiter.open_per_subject.is_empty());
    }

    #[test]
    fn the_body_budget_is_shared_and_given_back() {
        let budget = BodyBudget::new(100, "limits.max_body_bytes_in_flight");
        let mut first = BodyPermit::empty();
        budget.take(&mut first, 60).unwrap();
        budget.take(&mut first, 30).unwrap();
        assert_eq!(first.bytes(), 90);
        let mut second = BodyPermit::empty();
        assert!(budget.take(&mut second, 20).is_err());
        drop(first);
        budget.take(&mut second, 100).unwrap();
    }

    #[test]
    fn publishing_past_the_burst_must_wait() {
        let limiter = limits(|l| {
            l.publish_rate_per_subject = 10;
            l.publish_burst = 5;
        });
        limiter.admit_publish("a", 5).unwrap();
        assert!(matches!(
            limiter.admit_publish("a", 1),
            Err(LimitError::PublishRate { .. })
        ));
        limiter.admit_publish("b", 1).unwrap();
        assert!(matches!(
            limiter.admit_publish("c", 6),
            Err(LimitError::PublishRate { .. })
        ));
    }

    #[test]
    fn zero_means_unlimited() {
        let limiter = limits(|l| {
            l.max_connections_per_subject = 0;
            l.max_streams_per_subject = 0;
        });
        let streams = names(&["x"]);
        let slots: Vec<_> = (0..5000)
            .map(|_| limiter.admit_stream("a", &streams).unwrap())
            .collect();
        assert_eq!(slots.len(), 5000);
        limiter.admit_publish("a", 1_000_000).unwrap();
    }

    #[test]
    fn firehose_subscriptions_are_limited_per_subject_and_patterns_count_as_one_stream() {
        let limiter = limits(|l| {
            l.max_firehose_per_subject = 1;
            l.max_streams_per_subject = 2;
        });
        let first = limiter.admit_stream("a", &names(&["*"])).unwrap();
        assert_eq!(
            limiter.admit_stream("a", &names(&["*"])).unwrap_err(),
            LimitError::SubjectFirehose { max: 1 }
        );
        let _prefix = limiter.admit_stream("a", &names(&["ci.*"])).unwrap();
        assert_eq!(
            limiter.admit_stream("a", &names(&["x"])).unwrap_err(),
            LimitError::SubjectStreams { max: 2 },
            "`*` and `ci.*` are two streams"
        );
        let _other = limiter.admit_stream("b", &names(&["*"])).unwrap();
        drop(first);
        let _again = limiter.admit_stream("a", &names(&["*"])).unwrap();
    }
}
