//! Ways in besides HTTP: UDP datagrams ([`udp`]) and a RabbitMQ consumer
//! ([`amqp`]). Each reads its transport and nothing else: bodies are parsed by the
//! same parser as `POST /events` ([`crate::body`]) and published through the node's
//! one publish path ([`Node::publish`]) with their own `source` label, subject (for
//! the per-subject rate limit) and optional allow-list of stream patterns. What is
//! refused is counted by reason (`sse_ingest_rejected_total{source,reason}`, the
//! reasons of the HTTP error table) and never stops the listener.

pub mod amqp;
pub mod udp;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::event::{EventId, NewEvent};
use crate::idempotency::IdempotencyKey;
use crate::metrics as m;
use crate::node::{Allowed, Node, Publication, PublishError, Publisher, Source};
use crate::stream::StreamPattern;

/// Who publishes through one ingest path.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub node: Arc<Node>,
    pub source: Source,
    /// Whom the per-subject publish rate counts (`ingest:udp`, `ingest:amqp`).
    pub subject: Arc<str>,
    /// Streams it may publish to; empty = any.
    pub allowed: Arc<[StreamPattern]>,
}

impl Ingest {
    pub fn new(node: Arc<Node>, source: Source, allowed: &[StreamPattern]) -> Self {
        Self {
            node,
            source,
            subject: Arc::from(format!("ingest:{}", source.label())),
            allowed: Arc::from(allowed),
        }
    }

    /// Publishes `events` through the node (all or nothing).
    ///
    /// # Errors
    /// [`PublishError`] as the node refused; counted by the caller.
    pub async fn publish(
        &self,
        events: Vec<NewEvent>,
        idempotency: Option<IdempotencyKey>,
    ) -> Result<Vec<EventId>, PublishError> {
        let allowed = if self.allowed.is_empty() {
            Allowed::Any
        } else {
            Allowed::Patterns(&self.allowed)
        };
        self.node
            .publish(Publication {
                publisher: Publisher {
                    subject: &self.subject,
                    source: self.source,
                    allowed,
                },
                events,
                idempotency,
            })
            .await
    }

    /// Counts a message that was published.
    pub fn published(&self) {
        self.count("published");
    }

    /// Counts a message refused for good, by reason (a reason of the error table).
    pub fn rejected(&self, reason: &'static str) {
        self.count("rejected");
        self.refused(reason);
    }

    /// Counts a message returned to its queue because the node could not take it now.
    pub fn requeued(&self, reason: &'static str) {
        self.count("requeued");
        self.refused(reason);
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!(m::INGEST_MESSAGES, "source" => self.source.label(), "outcome" => outcome).increment(1);
    }

    fn refused(&self, reason: &'static str) {
        metrics::counter!(m::INGEST_REJECTED, "source" => self.source.label(), "reason" => reason).increment(1);
    }
}

/// Whether each ingest path that gates readiness is connected.
#[derive(Debug, Default)]
pub struct IngestStatus {
    /// Whether AMQP is on and gates readiness.
    amqp_gates: AtomicBool,
    amqp_connected: AtomicBool,
}

impl IngestStatus {
    pub fn new(amqp_gates_readiness: bool) -> Arc<Self> {
        Arc::new(Self {
            amqp_gates: AtomicBool::new(amqp_gates_readiness),
            amqp_connected: AtomicBool::new(false),
        })
    }

    /// What keeps the node from being ready, if anything.
    pub fn not_ready(&self) -> Option<&'static str> {
        (self.amqp_gates.load(Ordering::Acquire) && !self.amqp_connected.load(Ordering::Acquire))
            .then_some("amqp_unavailable")
    }

    pub(crate) fn set_amqp_connected(&self, connected: bool) {
        self.amqp_connected.store(connected, Ordering::Release);
        metrics::gauge!(m::INGEST_CONNECTED, "source" => "amqp").set(if connected { 1.0 } else { 0.0 });
    }
}
