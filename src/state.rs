//! `AppState`: what every handler gets, a cheap `Clone` handle over one `Arc`.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Verifier;
use crate::auth::mint::SigningKey;
use crate::auth::webhook::Webhooks;
use crate::config::Config;
use crate::ingest::IngestStatus;
use crate::limits::BodyBudget;
use crate::node::Node;

/// Everything a handler needs; clones share the same node. One `Arc`: axum clones
/// the state for every request, and one reference count is cheaper than nine
/// (the nine were 1.6 % of the CPU at 9,000 publishes/s).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Handles>);

impl AppState {
    pub fn new(handles: Handles) -> Self {
        Self(Arc::new(handles))
    }
}

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Handles {
    pub config: Arc<Config>,
    /// Publish and subscribe go through the node.
    pub node: Arc<Node>,
    pub verifier: Arc<Verifier>,
    pub webhooks: Arc<Webhooks>,
    /// Bytes of publish bodies (and verified-before-read webhooks) being received.
    pub publish_bodies: Arc<BodyBudget>,
    /// Bytes of webhook bodies received before their signature can be checked.
    pub unverified_bodies: Arc<BodyBudget>,
    pub metrics: PrometheusHandle,
    /// Whether the ingest paths that gate readiness are connected.
    pub ingest: Arc<IngestStatus>,
    /// Signs the demo page's subscribe-only token (HS256 only).
    pub demo_signer: Option<Arc<SigningKey>>,
}
