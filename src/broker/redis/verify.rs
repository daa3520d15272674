//! Verifying the Redis a node is about to use: is it a master, and can its data be
//! missing events that were acknowledged or delivered?
//!
//! Redis can lose a tail of acknowledged events without losing everything: a
//! restart from an older snapshot, a crash with AOF `everysec`, a failover to a
//! replica that was behind, a restored backup. None of these remove the epoch, so
//! a node checks, every time it connects and at every health check, which
//! instance holds the data (`run_id`, which changes on every restart and
//! promotion) against the one it was last verified on (recorded in the data). When
//! the instance changed, the data is trusted only when that is proven safe:
//! - a **promotion** of a replica that followed the verified history
//!   (`master_replid2` is the recorded replication id) while every publish waited
//!   for a replica (`backend.redis.min_replicas` ≥ 1), so the promoted one holds
//!   every acknowledged event;
//! - a **restart** of an instance that fsyncs every write (`appendonly yes`,
//!   `appendfsync always`) when the operator said to trust restarts
//!   (`backend.redis.trust_restarts`).
//!
//! Otherwise, and whenever the node knows of an id the data does not reach (it
//! acknowledged or delivered it: the evidence), the floor is raised to a fresh id:
//! every resume from before it, on every node, gets a gap notice, and live
//! subscribers get one as their node catches up. Conservative by design: a gap
//! notice where nothing was lost, never silence. The same check keeps ids
//! increasing across a failover: new ids start above everything the node knew.

use redis::aio::MultiplexedConnection;

use super::{Shared, id_to_redis};
use crate::broker::BrokerError;
use crate::event::EventId;
use crate::metrics as m;

/// What a node learns about an instance from `INFO`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Instance {
    pub(super) run_id: String,
    pub(super) is_master: bool,
    pub(super) replid: String,
    pub(super) replid2: String,
    /// `appendonly yes` with `appendfsync always`: every write on disk before the reply.
    pub(super) fsyncs_every_write: bool,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The instance verified before.
    Same,
    /// Another instance, proven to hold every acknowledged event.
    Proven,
    /// Events may have been lost: the floor was raised.
    Lost,
    /// No data at all (new, flushed or restarted empty): a new epoch.
    New,
}

impl Instance {
    /// Reads `INFO server`, `replication` and `persistence` text.
    pub(super) fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            run_id: field("run_id"),
            is_master: field("role") == "master",
            replid: field("master_replid"),
            replid2: field("master_replid2"),
            fsyncs_every_write: false,
        }
    }

    /// Asks the instance what it is.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when it does not answer.
    pub(super) async fn query(connection: &mut MultiplexedConnection) -> Result<Self, BrokerError> {
        let unavailable = |error: redis::RedisError| BrokerError::Unavailable(format!("redis INFO: {error}"));
        let info: String = redis::cmd("INFO")
            .arg("server")
            .arg("replication")
            .query_async(connection)
            .await
            .map_err(unavailable)?;
        let mut instance = Self::parse(&info);
        // CONFIG may be renamed or refused (managed Redis): then restarts are not trusted.
        let config: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("append*")
            .query_async(connection)
            .await;
        if let Ok(pairs) = config {
            let value = |name: &str| {
                pairs
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .and_then(|pair| pair.get(1).cloned())
                    .unwrap_or_default()
            };
            instance.fsyncs_every_write = value("appendonly") == "yes" && value("appendfsync") == "always";
        }
        Ok(instance)
    }
}

impl Shared {
    /// Verifies `instance` for this node (see the module doc) and returns the verdict.
    ///
    /// # Errors
    /// [`BrokerError::Unavailable`] when it is not a master or does not answer.
    pub(super) async fn verify(
        &self,
        connection: &mut MultiplexedConnection,
        instance: &Instance,
    ) -> Result<Verdict, BrokerError> {
        if !instance.is_master {
            return Err(BrokerError::Unavailable("the Redis reached is not a master".to_owned()));
        }
        let known = EventId::from_u64(self.high_water.load(std::sync::atomic::Ordering::Acquire));
        let promotion_safe = self.settings.min_replicas > 0;
        let restart_safe = self.settings.trust_restarts && instance.fsyncs_every_write;
        let reply: Vec<String> = self
            .verify_script
            .key(self.keys.meta())
            .key(self.keys.seq())
            .arg(&instance.run_id)
            .arg(&instance.replid)
            .arg(&instance.replid2)
            .arg(if promotion_safe { "1" } else { "0" })
            .arg(if restart_safe { "1" } else { "0" })
            .arg(id_to_redis(known))
            .arg(self.new_epoch())
            .invoke_async(connection)
            .await
            .map_err(|error| BrokerError::Unavailable(format!("redis verify: {error}")))?;
        let verdict = match reply.first().map(String::as_str) {
            Some("same") => Verdict::Same,
            Some("proven") => Verdict::Proven,
            Some("new") => Verdict::New,
            _ => Verdict::Lost,
        };
        if verdict != Verdict::Same {
            metrics::counter!(m::BACKEND_VERIFICATIONS, "verdict" => verdict.label()).increment(1);
            match verdict {
                // A node that has seen no id yet meeting empty data: a new deployment.
                Verdict::New if known == EventId::ZERO => {
                    tracing::info!(run_id = %instance.run_id, "no history in Redis yet: starting a new one");
                }
                Verdict::Lost | Verdict::New => tracing::warn!(
                    run_id = %instance.run_id,
                    verdict = verdict.label(),
                    "Redis may be missing acknowledged events; resumes from before now get gap notices"
                ),
                _ => tracing::info!(run_id = %instance.run_id, "Redis instance changed; its data is proven complete"),
            }
        }
        Ok(verdict)
    }
}

impl Verdict {
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Same => "same",
            Self::Proven => "proven",
            Self::Lost => "lost",
            Self::New => "new",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_read_for_what_verification_needs() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n# Replication\r\nrole:master\r\n\
                    master_replid:r1\r\nmaster_replid2:r0\r\n";
        let instance = Instance::parse(info);
        assert_eq!(instance.run_id, "abc123");
        assert!(instance.is_master);
        assert_eq!((instance.replid.as_str(), instance.replid2.as_str()), ("r1", "r0"));
        assert!(!Instance::parse("role:slave\r\n").is_master);
    }
}
