//! The bound on connections that are not event streams.
//!
//! Every accepted connection joins the pool until it serves an event stream: while
//! the first request is being read, and for as long as it is an HTTP/2 connection or
//! an HTTP/1.1 keep-alive connection for other requests. Event streams leave the
//! pool (they are bounded by `limits.max_connections`). When the pool is full, a new
//! connection evicts the oldest member that has no request in flight (a client still
//! choosing its protocol, or an idle keep-alive connection); only when every member
//! is busy is the new connection refused. A client that sends its request promptly
//! therefore gets through even while an attacker holds the pool with connections
//! that never finish their first request: it would have to open the whole pool's
//! worth of connections within that client's round trip to push it out.
//!
//! Each member also tracks its requests in flight, which is how the accept loop
//! closes connections idle for `server.idle_timeout`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Connections that are not event streams, oldest first.
#[derive(Debug)]
pub(super) struct ConnectionPool {
    max: usize,
    members: Mutex<BTreeMap<u64, Arc<Activity>>>,
    next: AtomicU64,
}

/// Requests in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub(super) struct Activity {
    active: AtomicUsize,
    /// Milliseconds since `started` at which the last request ended.
    idle_since_ms: AtomicU64,
    started: Instant,
    /// Cancelled when the pool needs this connection's place.
    evicted: CancellationToken,
}

impl Activity {
    fn new() -> Self {
        Self {
            active: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            started: Instant::now(),
            evicted: CancellationToken::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
    }

    /// One request started; the guard ends it when dropped.
    pub(super) fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            activity: Arc::clone(self),
        }
    }

    /// Cancelled when the pool evicted this connection.
    pub(super) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        loop {
            if self.is_idle() {
                let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                let deadline = self.started + since + timeout;
                if Instant::now() >= deadline && self.is_idle() {
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            } else {
                tokio::time::sleep(timeout).await;
            }
        }
    }
}

/// Ends one request of a connection when dropped (with its response body).
#[derive(Debug)]
pub(super) struct RequestGuard {
    activity: Arc<Activity>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let elapsed = u64::try_from(self.activity.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.idle_since_ms.store(elapsed, Ordering::Release);
        self.activity.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place in the pool; dropping or [`Membership::leave`] frees it.
#[derive(Debug)]
pub(super) struct Membership {
    pool: Arc<ConnectionPool>,
    key: u64,
    activity: Arc<Activity>,
    left: bool,
}

impl Membership {
    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Whether the connection left the pool.
    pub(super) fn has_left(&self) -> bool {
        self.left
    }

    /// Leaves the pool (the connection now serves an event stream).
    pub(super) fn leave(&mut self) {
        if !self.left {
            self.left = true;
            self.pool.remove(self.key);
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.leave();
    }
}

impl ConnectionPool {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            members: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Activity>>> {
        // Plain inserts and removals: a panic cannot leave the map inconsistent.
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection, evicting the oldest idle member when the pool
    /// is full; `None` when every member has a request in flight.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Membership> {
        let activity = Arc::new(Activity::new());
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut members = self.lock();
        if members.len() >= self.max && !Self::evict_oldest_idle(&mut members) {
            metrics::counter!(m::TCP_CONNECTIONS_CLOSED, "reason" => "pool_full").increment(1);
            return None;
        }
        members.insert(key, Arc::clone(&activity));
        m::series().tcp_connections_other.increment(1.0);
        drop(members);
        Some(Membership {
            pool: Arc::clone(self),
            key,
            activity,
            left: false,
        })
    }

    /// Evicts the oldest idle member, e.g. to free a file descriptor; returns whether
    /// there was one.
    pub(super) fn evict_one(&self) -> bool {
        Self::evict_oldest_idle(&mut self.lock())
    }

    fn evict_oldest_idle(members: &mut BTreeMap<u64, Arc<Activity>>) -> bool {
        let Some(key) = members
            .iter()
            .find(|(_, activity)| activity.is_idle())
            .map(|(key, _)| *key)
        else {
            return false;
        };
        if let Some(activity) = members.remove(&key) {
            activity.evicted.cancel();
            m::series().tcp_connections_other.decrement(1.0);
            metrics::counter!(m::TCP_CONNECTIONS_CLOSED, "reason" => "evicted").increment(1);
        }
        true
    }

    fn remove(&self, key: u64) {
        if self.lock().remove(&key).is_some() {
            m::series().tcp_connections_other.decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_pool_evicts_its_oldest_idle_member() {
        let pool = ConnectionPool::new(2);
        let first = pool.admit().unwrap();
        let second = pool.admit().unwrap();
        let _busy = second.activity().begin_request();
        let third = pool.admit().expect("the idle first member makes room");
        assert!(first.activity().evicted().is_cancelled());
        assert!(!second.activity().evicted().is_cancelled());
        let _busy_too = third.activity().begin_request();
        assert!(pool.admit().is_none(), "every member is busy");
    }

    #[test]
    fn members_that_leave_free_their_place() {
        let pool = ConnectionPool::new(1);
        let mut first = pool.admit().unwrap();
        let _busy = first.activity().begin_request();
        assert!(pool.admit().is_none());
        first.leave();
        assert!(pool.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_is_measured_from_the_end_of_the_last_request() {
        let pool = ConnectionPool::new(4);
        let member = pool.admit().unwrap();
        let guard = member.activity().begin_request();
        let idle = member.activity().idle_for(Duration::from_secs(10));
        tokio::pin!(idle);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(futures::poll!(idle.as_mut()).is_pending(), "busy, not idle");
        drop(guard);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(futures::poll!(idle.as_mut()).is_pending());
        tokio::time::advance(Duration::from_secs(11)).await;
        idle.await;
    }
}
