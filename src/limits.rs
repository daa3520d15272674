//! Abuse limits beyond the global ones: open event streams per subject, publish
//! rate per subject, and the node's rate of new event streams.
//!
//! A subject is the token's `sub` claim, or the token itself when it has none. The
//! rate limits are token buckets from `governor` (keyed per subject for publishing);
//! their state is trimmed periodically so idle subjects do not accumulate.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;

/// A limit that refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("too many open event streams for this subject")]
    SubjectConnections,
    #[error("publish rate limit exceeded for this subject")]
    PublishRate { retry_after: Duration },
    #[error("this node is accepting new event streams too fast; retry shortly")]
    SubscribeRate { retry_after: Duration },
}

/// The limits of one node.
#[derive(Debug)]
pub struct Limiter {
    max_per_subject: usize,
    open_per_subject: DashMap<String, usize>,
    publish: Option<DefaultKeyedRateLimiter<String>>,
    subscribe: Option<DefaultDirectRateLimiter>,
}

fn quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rate);
    Some(Quota::per_second(rate).allow_burst(burst))
}

impl Limiter {
    pub fn from_config(limits: &LimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            max_per_subject: limits.max_connections_per_subject,
            open_per_subject: DashMap::new(),
            publish: quota(limits.publish_rate_per_subject, limits.publish_burst).map(RateLimiter::keyed),
            subscribe: quota(limits.subscribe_rate, limits.subscribe_burst).map(RateLimiter::direct),
        })
    }

    /// Admits one more event stream for `subject`; the slot is released on drop.
    ///
    /// # Errors
    /// [`LimitError::SubscribeRate`] or [`LimitError::SubjectConnections`].
    pub fn admit_stream(self: &Arc<Self>, subject: &str) -> Result<SubjectSlot, LimitError> {
        if let Some(limiter) = &self.subscribe
            && let Err(not_until) = limiter.check()
        {
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(LimitError::SubscribeRate { retry_after });
        }
        if self.max_per_subject > 0 {
            let mut open = self.open_per_subject.entry(subject.to_owned()).or_insert(0);
            if *open >= self.max_per_subject {
                return Err(LimitError::SubjectConnections);
            }
            *open += 1;
        }
        Ok(SubjectSlot {
            limiter: Arc::clone(self),
            subject: (self.max_per_subject > 0).then(|| subject.to_owned()),
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

    fn release(&self, subject: &str) {
        if let Some(mut open) = self.open_per_subject.get_mut(subject) {
            *open = open.saturating_sub(1);
        }
        self.open_per_subject.remove_if(subject, |_, open| *open == 0);
    }
}

/// One admitted event stream; releases its subject's count on drop.
#[derive(Debug)]
pub struct SubjectSlot {
    limiter: Arc<Limiter>,
    subject: Option<String>,
}

impl Drop for SubjectSlot {
    fn drop(&mut self) {
        if let Some(subject) = &self.subject {
            self.limiter.release(subject);
        }
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

    #[test]
    fn subjects_have_their_own_connection_budget() {
        let limiter = limits(|l| l.max_connections_per_subject = 2);
        let a1 = limiter.admit_stream("a").unwrap();
        let _a2 = limiter.admit_stream("a").unwrap();
        assert_eq!(limiter.admit_stream("a").unwrap_err(), LimitError::SubjectConnections);
        let _b = limiter.admit_stream("b").unwrap();
        drop(a1);
        let _a3 = limiter.admit_stream("a").unwrap();
    }

    #[test]
    fn empty_subjects_are_forgotten() {
        let limiter = limits(|l| l.max_connections_per_subject = 2);
        drop(limiter.admit_stream("a").unwrap());
        assert!(limiter.open_per_subject.is_empty());
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
        let limiter = limits(|l| l.max_connections_per_subject = 0);
        let slots: Vec<_> = (0..5000).map(|_| limiter.admit_stream("a").unwrap()).collect();
        assert_eq!(slots.len(), 5000);
        limiter.admit_publish("a", 1_000_000).unwrap();
    }
}
