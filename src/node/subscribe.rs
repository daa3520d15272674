//! The one subscribe path: admission (draining, permission, the subject's and the
//! node's slots), attach a bounded queue to the local registry, make the broker
//! listen, read history and decide gaps (or read the latest events), then the
//! [`Subscription`] that writes it. Names and patterns (`ci.*`, `*`) take the same
//! path; a name or pattern another one of the request covers is dropped first, so
//! each event reaches the subscription once.
//! Listening before reading makes the seam exact for every broker: an event is in
//! the read or arrives on the queue afterwards, and the subscription drops what
//! arrives twice.

use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::Claims;

use tokio_util::sync::CancellationToken;

use super::Node;
use crate::broker::{BrokerError, Position};
use crate::history::{self, Replay, Resume};
use crate::limits::{LimitError, Slots};
use crate::metrics as m;
use crate::stream::pattern::minimal;
use crate::stream::{Direct, DirectSocket, RegistryError, StreamName, StreamPattern};
use crate::subscription::{Parts, Subscription};

/// What a new subscription asks for.
#[derive(Debug)]
pub struct SubscribeRequest<'a> {
    /// Whom per-subject limits count the subscription against.
    pub subject: &'a str,
    /// The token's `subscribe` claim.
    pub allowed: &'a [StreamPattern],
    /// Names and patterns, distinct.
    pub streams: Vec<StreamPattern>,
    pub resume: Option<Resume>,
    /// `replay=latest`: without a resume id, first the newest held event of each
    /// stream.
    pub latest: bool,
    /// `envelope=1`: every event's data wrapped as `{"stream","event","data"}`.
    pub envelope: bool,
    /// The token's claims: a revocation of its `sub` or `jti` ends the stream, and
    /// its `exp` is named in the expiry warning. `None` for streams without a token.
    pub token: Option<&'a Claims>,
    /// When the token stops being valid; `None` keeps the stream open.
    pub close_at: Option<SystemTime>,
    /// Closes the client's connection at once; cancelled when its queue overflows
    /// (a client that stopped reading would never see the stream end otherwise).
    pub close_connection: CancellationToken,
    /// The client's socket, when the server lets deliveries write to it directly.
    pub direct: Option<Arc<DirectSocket>>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("the node is shutting down")]
    Draining,
    #[error("the token does not grant subscribing to `{0}`")]
    NotPermitted(StreamPattern),
    #[error("subscribing to every stream (`*`) is turned off (limits.firehose)")]
    FirehoseDisabled,
    #[error(transparent)]
    Limited(#[from] LimitError),
    #[error("this node serves as many event streams as limits.max_connections allows")]
    ConnectionLimit,
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<RegistryError> for SubscribeError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::StreamLimit => Self::Broker(BrokerError::StreamLimit),
        }
    }
}

impl Node {
    /// Admits, attaches and prepares the replay of a new subscription.
    ///
    /// # Errors
    /// [`SubscribeError`]; nothing stays attached or held.
    pub async fn subscribe(&self, request: SubscribeRequest<'_>) -> Result<Subscription, SubscribeError> {
        let result = self.open(request).await;
        if let Err(error) = &result {
            metrics::counter!(m::CONNECTIONS_REJECTED, "reason" => error.reason()).increment(1);
        }
        result
    }

    async fn open(&self, request: SubscribeRequest<'_>) -> Result<Subscription, SubscribeError> {
        if self.is_draining() {
            return Err(SubscribeError::Draining);
        }
        if let Some(wanted) = request
            .streams
            .iter()
            .find(|wanted| !request.allowed.iter().any(|pattern| pattern.covers(wanted)))
        {
            return Err(SubscribeError::NotPermitted(wanted.clone()));
        }
        if !self.settings.firehose && request.streams.contains(&StreamPattern::Any) {
            return Err(SubscribeError::FirehoseDisabled);
        }
        let patterns = minimal(&request.streams);
        let subject = self.limiter.admit_stream(request.subject, &patterns)?;
        let connection = self.connections.try_acquire().ok_or(SubscribeError::ConnectionLimit)?;
        let direct = request.direct.map(|socket| Direct {
            socket,
            envelope: request.envelope,
        });
        let (queue, receiver) = self.registry.new_queue_writing_to(request.close_connection, direct);
        let attachment = self.registry.attach(&patterns, &queue)?;
        // Shutdown ends the attached subscriptions through their queues: one that
        // attached after that pass sees the flag set before it.
        if self.is_draining() {
            return Err(SubscribeError::Draining);
        }
        self.broker.listen(&patterns).await?;
        let replay = match (request.resume, request.latest) {
            (Some(resume), _) => {
                let read = self.broker.read(&patterns, resume.read_after()).await?;
                history::resolve(read, &patterns, resume)
            }
            (None, true) => Replay::latest(self.broker.latest(&patterns).await?),
            (None, false) => Replay::default(),
        };
        let expiry_warning = match (request.close_at, request.token.and_then(|claims| claims.exp)) {
            (Some(close_at), Some(exp)) if !self.settings.expiry_warning.is_zero() => Some((
                close_at
                    .checked_sub(self.settings.expiry_warning)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                exp,
            )),
            _ => None,
        };
        Ok(Subscription::new(Parts {
            attachment,
            receiver,
            replay,
            envelope: request.envelope,
            close_at: request.close_at,
            expiry_warning,
            revoked: request.token.map(|claims| self.revocations.watch(claims, &queue)),
            timing: self.settings.timing,
            slots: Slots { connection, subject },
        }))
    }

    /// Where `stream` stands (`GET /streams/NAME`): the newest id issued, and the
    /// newest event and number of events held of the stream.
    ///
    /// # Errors
    /// [`SubscribeError::NotPermitted`] when `allowed` does not cover `stream`;
    /// [`SubscribeError::Broker`] when history cannot be read.
    pub async fn position(&self, allowed: &[StreamPattern], stream: &StreamName) -> Result<Position, SubscribeError> {
        if !allowed.iter().any(|pattern| pattern.matches(stream)) {
            return Err(SubscribeError::NotPermitted(StreamPattern::Exact(stream.clone())));
        }
        Ok(self.broker.position(stream).await?)
    }
}

impl SubscribeError {
    /// Stable machine-readable reason, for error bodies and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::NotPermitted(_) => "stream_not_permitted",
            Self::FirehoseDisabled => "firehose_disabled",
            Self::Limited(error) => error.reason(),
            Self::ConnectionLimit => "connection_limit",
            Self::Broker(error) => error.reason(),
        }
    }
}
