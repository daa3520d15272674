//! The one publish path. Every way in hands the node validated [`NewEvent`]s (names
//! and types are checked where they are parsed) with who publishes them; the node
//! does everything else, in this order: draining, permission, batch and event
//! sizes, the publisher's rate limit, ids and history through the broker (which
//! also keeps idempotency keys, so a retry is answered on any node), metrics,
//! pacing.

use std::time::Instant;

use super::Node;
use crate::body::At;
use crate::broker::{BrokerError, Published};
use crate::event::{EventId, NewEvent};
use crate::idempotency::IdempotencyKey;
use crate::limits::LimitError;
use crate::metrics as m;
use crate::stream::StreamName;
use crate::stream::StreamPattern;

/// Where a publication came in: a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Http,
    Webhook,
    Demo,
    Udp,
    Amqp,
}

impl Source {
    /// The metric label, one of [`m::PUBLISH_SOURCES`].
    pub fn label(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Webhook => "webhook",
            Self::Demo => "demo",
            Self::Udp => "udp",
            Self::Amqp => "amqp",
        }
    }
}

/// Which streams a publisher may write to.
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// A token's `publish` claim.
    Patterns(&'a [StreamPattern]),
    /// One stream (a webhook's).
    Stream(&'a StreamName),
    /// Any stream (the built-in demo publisher).
    Any,
}

impl Allowed<'_> {
    fn covers(self, stream: &StreamName) -> bool {
        match self {
            Self::Patterns(patterns) => patterns.iter().any(|pattern| pattern.matches(stream)),
            Self::Stream(allowed) => allowed == stream,
            Self::Any => true,
        }
    }
}

/// Who publishes.
#[derive(Debug, Clone, Copy)]
pub struct Publisher<'a> {
    /// Whom rate limits count the events against.
    pub subject: &'a str,
    pub source: Source,
    pub allowed: Allowed<'a>,
}

/// Events on their way in, with who publishes them.
#[derive(Debug)]
pub struct Publication<'a> {
    pub publisher: Publisher<'a>,
    pub events: Vec<NewEvent>,
    /// A repeated request with this key answers the first one's ids.
    pub idempotency: Option<IdempotencyKey>,
}

/// Why a publication was refused, or could not be completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the node is shutting down")]
    Draining,
    #[error("the token does not grant publishing to stream `{stream}`{at}")]
    NotPermitted { stream: StreamName, at: At },
    #[error("the batch holds no events")]
    EmptyBatch,
    #[error("a batch holds at most {max} events (limits.max_batch_events)")]
    BatchTooLarge { max: usize },
    #[error("event data of {bytes} bytes exceeds limits.max_event_bytes ({max}){at}")]
    EventTooLarge { bytes: usize, max: usize, at: At },
    #[error(transparent)]
    Limited(#[from] LimitError),
    #[error("a request with this key is still being processed; retry shortly")]
    InProgress,
    #[error("this key was used with a different request")]
    KeyReused,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Node {
    /// Publishes `publication`: when this returns `Ok`, every event is in the
    /// history, and the ids are in request order. A repeated idempotency key returns
    /// the first request's ids and publishes nothing.
    ///
    /// # Errors
    /// [`PublishError`]; nothing was stored unless it is
    /// [`BrokerError::Timeout`] (outcome unknown).
    pub async fn publish(&self, publication: Publication<'_>) -> Result<Vec<EventId>, PublishError> {
        let result = self.try_publish(publication).await;
        if let Err(error) = &result {
            metrics::counter!(m::PUBLISH_REJECTIONS, "reason" => error.reason()).increment(1);
        }
        result
    }

    async fn try_publish(&self, publication: Publication<'_>) -> Result<Vec<EventId>, PublishError> {
        let Publication {
            publisher,
            events,
            idempotency,
        } = publication;
        if self.is_draining() {
            return Err(PublishError::Draining);
        }
        if let Some((index, event)) = events
            .iter()
            .enumerate()
            .find(|(_, event)| !publisher.allowed.covers(&event.stream))
        {
            return Err(PublishError::NotPermitted {
                stream: event.stream.clone(),
                at: At::element(index, events.len()),
            });
        }
        self.check_sizes(&events)?;
        self.limiter.admit_publish(publisher.subject, events.len())?;
        let started = Instant::now();
        let count = events.len() as u64;
        let ids = match self.broker.publish(events, idempotency.as_ref()).await? {
            Published::New(ids) => ids,
            Published::Repeated(ids) => return Ok(ids),
            Published::KeyConflict => return Err(PublishError::KeyReused),
            Published::KeyInProgress => return Err(PublishError::InProgress),
        };
        // Let the subscriber tasks this publish woke write first, then acknowledge: the
        // fan-out reaches the sockets in one burst ahead of the reply, and a publisher
        // that sends as fast as acknowledgements come back is paced by delivery instead
        // of filling every subscriber queue (measured: lower latency, no fewer events/s).
        tokio::task::yield_now().await;
        let series = m::series();
        series.publish_duration.record(started.elapsed().as_secs_f64());
        series.published(publisher.source.label(), count);
        Ok(ids)
    }

    fn check_sizes(&self, events: &[NewEvent]) -> Result<(), PublishError> {
        let settings = &self.settings;
        if events.is_empty() {
            return Err(PublishError::EmptyBatch);
        }
        if events.len() > settings.max_batch_events {
            return Err(PublishError::BatchTooLarge {
                max: settings.max_batch_events,
            });
        }
        if let Some((index, event)) = events
            .iter()
            .enumerate()
            .find(|(_, event)| event.data.len() > settings.max_event_bytes)
        {
            return Err(PublishError::EventTooLarge {
                bytes: event.data.len(),
                max: settings.max_event_bytes,
                at: At::element(index, events.len()),
            });
        }
        Ok(())
    }
}

impl PublishError {
    /// Whether the same publication could succeed later (the node or its backend
    /// is busy or away), as opposed to being refused for what it is.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Draining | Self::InProgress | Self::Broker(_) | Self::Limited(_) => true,
            Self::NotPermitted { .. }
            | Self::EmptyBatch
            | Self::BatchTooLarge { .. }
            | Self::EventTooLarge { .. }
            | Self::KeyReused => false,
        }
    }

    /// Stable machine-readable reason, for error bodies and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::NotPermitted { .. } => "stream_not_permitted",
            Self::EmptyBatch => "invalid_request",
            Self::BatchTooLarge { .. } | Self::EventTooLarge { .. } => "payload_too_large",
            Self::Limited(error) => error.reason(),
            Self::InProgress => "request_in_progress",
            Self::KeyReused => "idempotency_key_reused",
            Self::Broker(error) => error.reason(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_label_is_registered_at_zero() {
        for source in [Source::Http, Source::Webhook, Source::Demo, Source::Udp, Source::Amqp] {
            assert!(m::PUBLISH_SOURCES.contains(&source.label()), "{source:?}");
        }
    }
}
