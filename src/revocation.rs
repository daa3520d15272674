//! Revocation: tokens refused before they expire, and the live streams they end.
//!
//! `POST /revocations` names a subject (`sub`) or one token (`jti`). A subject's
//! revocation refuses every token of it issued up to the second of the revocation
//! (by `iat`; a token without `iat` always), a token's revocation refuses that
//! token; both for `auth.revocation_ttl`, which should be at least the longest token
//! lifetime. [`Revocations`] holds the list in force on this node and the live
//! streams that a revocation must end ([`Revocations::watch`]); both sit behind one
//! lock, so a stream registered while a revocation arrives is either ended by it or
//! sees it when it registers. Streams are grouped by subject and by token id; a
//! revocation ends each stream it refuses through the stream's own queue
//! ([`SubscriberQueue::end`]), so a waiting stream watches nothing else. Brokers
//! carry revocations to the other nodes (Redis pub/sub) and keep them where the
//! history is kept (Redis, the disk store): see [`crate::broker::Broker::revoke`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use rustc_hash::FxBuildHasher;

use crate::auth::Claims;
use crate::metrics as m;
use crate::stream::{Ending, SubscriberQueue};

/// Longest `sub` or `jti` a revocation may name, in bytes.
pub const MAX_TARGET_BYTES: usize = 1024;

/// What a revocation refuses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every token of this `sub` issued up to the revocation.
    Subject(String),
    /// The token with this `jti`.
    Token(String),
}

impl Target {
    /// Stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Subject(_) => "subject",
            Self::Token(_) => "token",
        }
    }

    /// `s:SUB` or `j:JTI`: the key under which brokers store it.
    pub fn key(&self) -> String {
        match self {
            Self::Subject(sub) => format!("s:{sub}"),
            Self::Token(jti) => format!("j:{jti}"),
        }
    }

    /// The inverse of [`Target::key`].
    pub fn from_key(key: &str) -> Option<Self> {
        let (kind, value) = key.split_at_checked(2)?;
        match kind {
            "s:" => Some(Self::Subject(value.to_owned())),
            "j:" => Some(Self::Token(value.to_owned())),
            _ => None,
        }
    }
}

/// One revocation, as stored and sent between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub target: Target,
    /// When it was made, in milliseconds since the Unix epoch.
    pub revoked_ms: u64,
    /// Until when it is in force, in milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

impl Revocation {
    /// `revoked_ms expires_ms`: the value brokers store under [`Target::key`].
    pub fn value(&self) -> String {
        format!("{} {}", self.revoked_ms, self.expires_ms)
    }

    /// Reads a key and a value written by [`Target::key`] and [`Revocation::value`].
    pub fn parse(key: &str, value: &str) -> Option<Self> {
        let (revoked, expires) = value.split_once(' ')?;
        Some(Self {
            target: Target::from_key(key)?,
            revoked_ms: revoked.parse().ok()?,
            expires_ms: expires.parse().ok()?,
        })
    }

    /// Whether it refuses a token with these claims.
    fn refuses(&self, claims: &Claims) -> bool {
        match &self.target {
            Target::Subject(sub) => {
                claims.sub.as_deref() == Some(sub.as_str())
                    && claims.iat.is_none_or(|iat| iat <= self.revoked_ms / 1000)
            }
            Target::Token(jti) => claims.jti.as_deref() == Some(jti.as_str()),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// The revocations in force on this node and the live streams they can end.
#[derive(Debug, Default)]
pub struct Revocations {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// In force: when made and until when, by target.
    refused: HashMap<Target, (u64, u64)>,
    /// The live streams of each target, as a group.
    live: HashMap<Target, Group>,
}

#[derive(Debug)]
struct Group {
    live: Arc<Live>,
    /// The group's streams by subscriber id: their token's `iat`, and their queue,
    /// through which a revocation ends them. Keyed by the registry's own sequence of
    /// queue ids, which no client chooses: hashed with `FxHash`.
    streams: HashMap<u64, (Option<u64>, SubscriberQueue), FxBuildHasher>,
}

/// What the streams of one target share: whether a revocation ended them.
#[derive(Debug)]
struct Live {
    target: Target,
    /// Whether the target is a token (`jti`): a revocation ends all its streams.
    token: bool,
    /// 0 while nothing ended; else streams of tokens with `iat` below it (or
    /// without `iat`) are ended (`u64::MAX` for a token's revocation).
    ended_below: AtomicU64,
}

impl Live {
    fn ends(&self, iat: Option<u64>) -> bool {
        match self.ended_below.load(Ordering::Acquire) {
            0 => false,
            _ if self.token => true,
            below => iat.is_none_or(|iat| iat < below),
        }
    }
}

impl Revocations {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a revocation in force refuses a token with these claims.
    pub fn refuses(&self, claims: &Claims) -> bool {
        if claims.sub.is_none() && claims.jti.is_none() {
            return false;
        }
        let inner = self.lock();
        if inner.refused.is_empty() {
            return false;
        }
        refused_by(&inner, claims, now_ms())
    }

    /// Puts `revocation` in force (a later one of the same target replaces an
    /// earlier one) and ends the live streams it refuses. Returns how many ended.
    pub fn apply(&self, revocation: &Revocation) -> usize {
        if revocation.expires_ms <= now_ms() {
            return 0;
        }
        let mut inner = self.lock();
        let entry = inner
            .refused
            .entry(revocation.target.clone())
            .or_insert((revocation.revoked_ms, revocation.expires_ms));
        entry.0 = entry.0.max(revocation.revoked_ms);
        entry.1 = entry.1.max(revocation.expires_ms);
        let revoked_secs = entry.0 / 1000;
        let mut ended = 0;
        if let Some(group) = inner.live.get(&revocation.target) {
            let below = if group.live.token { u64::MAX } else { revoked_secs + 1 };
            group.live.ended_below.fetch_max(below, Ordering::AcqRel);
            for (iat, queue) in group.streams.values() {
                if group.live.ends(*iat) {
                    queue.end(Ending::Revoked);
                    ended += 1;
                }
            }
        }
        metrics::gauge!(m::REVOCATIONS_ACTIVE).set(inner.refused.len() as f64);
        ended
    }

    /// Whether `revocation` (or a later one of its target) is already in force.
    pub fn knows(&self, revocation: &Revocation) -> bool {
        self.lock()
            .refused
            .get(&revocation.target)
            .is_some_and(|&(revoked_ms, _)| revoked_ms >= revocation.revoked_ms)
    }

    /// Puts a revocation that came from elsewhere in force unless it already is,
    /// counting it under `origin` (`peer`, `store`).
    pub fn receive(&self, revocation: &Revocation, origin: &'static str) {
        if self.knows(revocation) || revocation.expires_ms <= now_ms() {
            return;
        }
        let ended = self.apply(revocation);
        metrics::counter!(m::REVOCATIONS, "kind" => revocation.target.kind(), "origin" => origin).increment(1);
        tracing::info!(kind = revocation.target.kind(), origin, ended, "revocation in force");
    }

    /// Registers a live stream of a token with `claims`, delivered through `queue`:
    /// a revocation that refuses the token ends it (at once, if one already does).
    /// Dropping the returned watch leaves the groups.
    pub fn watch(self: &Arc<Self>, claims: &Claims, queue: &SubscriberQueue) -> Watch {
        let mut watch = Watch {
            revocations: Weak::new(),
            subject: None,
            token: None,
            iat: claims.iat,
            refused: false,
            queue: queue.id(),
        };
        if claims.sub.is_none() && claims.jti.is_none() {
            return watch;
        }
        let mut inner = self.lock();
        watch.refused = refused_by(&inner, claims, now_ms());
        if watch.refused {
            queue.end(Ending::Revoked);
        }
        watch.revocations = Arc::downgrade(self);
        watch.subject = claims
            .sub
            .as_ref()
            .map(|sub| join(&mut inner, Target::Subject(sub.clone()), claims.iat, queue));
        watch.token = claims
            .jti
            .as_ref()
            .map(|jti| join(&mut inner, Target::Token(jti.clone()), claims.iat, queue));
        watch
    }

    /// Forgets revocations past their time.
    pub fn prune(&self) {
        let now = now_ms();
        let mut inner = self.lock();
        inner.refused.retain(|_, (_, expires_ms)| *expires_ms > now);
        metrics::gauge!(m::REVOCATIONS_ACTIVE).set(inner.refused.len() as f64);
    }

    /// Revocations in force.
    pub fn len(&self) -> usize {
        self.lock().refused.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Adds a stream with `iat` to `target`'s group (made on first use).
fn join(inner: &mut Inner, target: Target, iat: Option<u64>, queue: &SubscriberQueue) -> Arc<Live> {
    // The target's key is cloned only for a new group.
    if let Some(group) = inner.live.get_mut(&target) {
        group.streams.insert(queue.id(), (iat, queue.clone()));
        return Arc::clone(&group.live);
    }
    let token = matches!(target, Target::Token(_));
    let live = Arc::new(Live {
        target: target.clone(),
        token,
        ended_below: AtomicU64::new(0),
    });
    let streams = std::iter::once((queue.id(), (iat, queue.clone()))).collect();
    inner.live.insert(
        target,
        Group {
            live: Arc::clone(&live),
            streams,
        },
    );
    live
}

fn refused_by(inner: &Inner, claims: &Claims, now: u64) -> bool {
    if inner.refused.is_empty() {
        return false;
    }
    let in_force = |target: Target| {
        inner.refused.get(&target).and_then(|&(revoked_ms, expires_ms)| {
            (expires_ms > now).then_some(Revocation {
                target,
                revoked_ms,
                expires_ms,
            })
        })
    };
    [
        claims.sub.clone().map(Target::Subject),
        claims.jti.clone().map(Target::Token),
    ]
    .into_iter()
    .flatten()
    .filter_map(in_force)
    .any(|revocation| revocation.refuses(claims))
}

/// A live stream's registration; dropping it leaves the groups.
#[derive(Debug)]
pub struct Watch {
    revocations: Weak<Revocations>,
    subject: Option<Arc<Live>>,
    token: Option<Arc<Live>>,
    iat: Option<u64>,
    /// A revocation refused the token when the stream registered.
    refused: bool,
    /// The stream's subscriber id.
    queue: u64,
}

impl Watch {
    /// Whether a revocation ended this stream.
    pub fn is_ended(&self) -> bool {
        self.refused
            || [&self.subject, &self.token]
                .into_iter()
                .flatten()
                .any(|live| live.ends(self.iat))
    }

    /// The token's `sub`, when it has one.
    pub fn subject(&self) -> Option<&str> {
        match self.subject.as_deref().map(|live| &live.target) {
            Some(Target::Subject(sub)) => Some(sub),
            _ => None,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(revocations) = self.revocations.upgrade() else {
            return;
        };
        let mut inner = revocations.lock();
        for live in [self.subject.take(), self.token.take()].into_iter().flatten() {
            let target = &live.target;
            let Some(group) = inner.live.get_mut(target) else {
                continue;
            };
            group.streams.remove(&self.queue);
            if group.streams.is_empty() {
                inner.live.remove(target);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Claims {
        Claims {
            sub: Some(sub.to_owned()),
            jti: jti.map(str::to_owned),
            iat,
            ..Claims::default()
        }
    }

    fn revocation(target: Target, revoked_ms: u64) -> Revocation {
        Revocation {
            target,
            revoked_ms,
            expires_ms: now_ms() + 60_000,
        }
    }

    #[test]
    fn a_subject_revocation_refuses_tokens_issued_up_to_its_second() {
        let revocations = Revocations::new();
        let now = now_ms();
        revocations.apply(&revocation(Target::Subject("alice".to_owned()), now));
        let secs = now / 1000;
        assert!(revocations.refuses(&claims("alice", None, None)));
        assert!(revocations.refuses(&claims("alice", None, Some(secs - 10))));
        assert!(revocations.refuses(&claims("alice", None, Some(secs))));
        assert!(!revocations.refuses(&claims("alice", None, Some(secs + 1))));
        assert!(!revocations.refuses(&claims("bob", None, None)));
    }

    #[test]
    fn a_token_revocation_refuses_only_that_token() {
        let revocations = Revocations::new();
        revocations.apply(&revocation(Target::Token("t-1".to_owned()), now_ms()));
        assert!(revocations.refuses(&claims("alice", Some("t-1"), Some(u64::MAX / 1000))));
        assert!(!revocations.refuses(&claims("alice", Some("t-2"), None)));
    }

    /// A stream's queue: the watch registers it, the receiver says how it ended.
    fn queue() -> (SubscriberQueue, crate::stream::QueueReceiver) {
        static REGISTRY: std::sync::LazyLock<crate::stream::StreamRegistry> =
            std::sync::LazyLock::new(|| crate::stream::StreamRegistry::new(10, 16));
        REGISTRY.new_queue(tokio_util::sync::CancellationToken::new())
    }

    #[test]
    fn live_streams_end_when_revoked_and_are_forgotten_when_dropped() {
        let revocations = Revocations::new();
        let (queues, receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| queue()).unzip();
        let old = revocations.watch(&claims("alice", Some("a"), Some(1)), &queues[0]);
        let fresh = revocations.watch(&claims("alice", Some("b"), Some(now_ms() / 1000 + 100)), &queues[1]);
        let other = revocations.watch(&claims("bob", None, None), &queues[2]);
        let endings = || {
            receivers
                .iter()
                .map(crate::stream::QueueReceiver::ending)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            revocations.apply(&revocation(Target::Subject("alice".to_owned()), now_ms())),
            1
        );
        assert!(old.is_ended());
        assert!(!fresh.is_ended());
        assert!(!other.is_ended());
        assert_eq!(endings(), [Some(Ending::Revoked), None, None]);
        assert_eq!(
            revocations.apply(&revocation(Target::Token("b".to_owned()), now_ms())),
            1
        );
        assert!(fresh.is_ended());
        assert_eq!(endings(), [Some(Ending::Revoked), Some(Ending::Revoked), None]);
        drop((old, fresh, other));
        assert!(revocations.lock().live.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_stream_is_woken_by_its_revocation() {
        let revocations = Revocations::new();
        let (queue, mut receiver) = queue();
        let _watch = revocations.watch(&claims("dana", None, Some(1)), &queue);
        let waiting = tokio::spawn(async move { (receiver.recv().await.is_none(), receiver.ending()) });
        tokio::task::yield_now().await;
        revocations.apply(&revocation(Target::Subject("dana".to_owned()), now_ms()));
        let woken = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(woken, (true, Some(Ending::Revoked)));
    }

    #[test]
    fn a_stream_registered_after_a_revocation_ends_at_once() {
        let revocations = Revocations::new();
        revocations.apply(&revocation(Target::Subject("alice".to_owned()), now_ms()));
        let (queue, receiver) = queue();
        assert!(revocations.watch(&claims("alice", None, None), &queue).is_ended());
        assert_eq!(receiver.ending(), Some(Ending::Revoked));
    }

    #[test]
    fn expired_revocations_are_ignored_and_pruned() {
        let revocations = Revocations::new();
        let past = Revocation {
            target: Target::Subject("alice".to_owned()),
            revoked_ms: 1,
            expires_ms: 2,
        };
        assert_eq!(revocations.apply(&past), 0);
        assert!(revocations.is_empty());
        revocations.apply(&revocation(Target::Subject("bob".to_owned()), now_ms()));
        revocations.prune();
        assert_eq!(revocations.len(), 1);
    }

    #[test]
    fn revocations_round_trip_through_their_stored_form() {
        let revocation = revocation(Target::Token("x y:z".to_owned()), 5);
        let parsed = Revocation::parse(&revocation.target.key(), &revocation.value()).unwrap();
        assert_eq!(parsed, revocation);
        assert!(Revocation::parse("q:x", "1 2").is_none());
        assert!(Revocation::parse("s:x", "1").is_none());
    }
}
