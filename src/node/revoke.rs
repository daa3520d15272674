//! The revoke path: store the revocation through the broker (which carries it to
//! every other node), then put it in force here, ending the live streams it refuses.

use super::Node;
use crate::broker::BrokerError;
use crate::metrics as m;
use crate::revocation::{Revocation, Target, now_ms};

/// What a revocation did on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub revocation: Revocation,
    /// Live streams it ended on this node (other nodes end theirs on their own).
    pub ended: usize,
}

impl Node {
    /// Revokes `target` for `auth.revocation_ttl` on every node of the deployment.
    ///
    /// # Errors
    /// [`BrokerError`] when the broker cannot store or carry it: nothing is in
    /// force then, not even here, so a retry does the whole of it.
    pub async fn revoke(&self, target: Target) -> Result<Revoked, BrokerError> {
        let revoked_ms = now_ms();
        let ttl_ms = u64::try_from(self.settings.revocation_ttl.as_millis()).unwrap_or(u64::MAX);
        let revocation = Revocation {
            target,
            revoked_ms,
            expires_ms: revoked_ms.saturating_add(ttl_ms),
        };
        self.broker.revoke(&revocation).await?;
        let ended = self.revocations.apply(&revocation);
        metrics::counter!(m::REVOCATIONS, "kind" => revocation.target.kind(), "origin" => "api").increment(1);
        tracing::info!(kind = revocation.target.kind(), ended, "revocation in force");
        Ok(Revoked { revocation, ended })
    }
}
