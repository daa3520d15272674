//! `Frame`: one event (or notice) encoded once into the bytes every subscriber
//! receives, with its envelope made on first demand. Between `event` (what an
//! event is) and `sse` (how it is written), so neither needs the other's inside.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;

use crate::event::{DataKind, EventId, EventType, NewEvent};
use crate::sse;
use crate::stream::StreamName;

/// One event (or notice) encoded once for every subscriber: the SSE record, and
/// its envelope (`envelope=1`) encoded the first time a subscriber needs it.
#[derive(Debug)]
pub struct Frame {
    pub id: EventId,
    /// When the backend accepted the event; feeds the publish-to-write histogram.
    pub published_at: Instant,
    /// The complete SSE record, ending with the blank line.
    pub bytes: Bytes,
    /// The event's stream and data kind; `None` for notices, which are the same
    /// with or without envelopes.
    origin: Option<(StreamName, DataKind)>,
    envelope: OnceLock<Bytes>,
}

impl Frame {
    /// Encodes an event.
    pub fn event(id: EventId, published_at: Instant, event: &NewEvent) -> Self {
        let envelope = OnceLock::new();
        // The SSE record keeps data only up to line endings (CR becomes LF on the
        // client), so an envelope of text with a CR is made now, from the data; any
        // other envelope is made from the record when first needed.
        if event.kind == DataKind::Text && event.data.contains('\r') {
            let _ = envelope.set(sse::encode_envelope(
                id,
                &event.stream,
                event.event_type.as_ref().map(EventType::as_str),
                &event.data,
                event.kind,
            ));
        }
        Self {
            id,
            published_at,
            bytes: sse::encode_event(id, event.event_type.as_ref(), &event.data),
            origin: Some((event.stream.clone(), event.kind)),
            envelope,
        }
    }

    /// A frame that is not an event (a gap notice): the same bytes for every
    /// subscriber.
    pub fn notice(id: EventId, bytes: Bytes) -> Self {
        Self {
            id,
            published_at: Instant::now(),
            bytes,
            origin: None,
            envelope: OnceLock::new(),
        }
    }

    /// The event's stream; `None` for a notice.
    pub fn stream(&self) -> Option<&StreamName> {
        self.origin.as_ref().map(|(stream, _)| stream)
    }

    /// The record a subscriber receives: [`Self::enveloped`] when it reads
    /// envelopes, else the SSE record.
    pub fn bytes_for(&self, envelope: bool) -> &Bytes {
        if envelope { self.enveloped() } else { &self.bytes }
    }

    /// The seam's test, for whoever writes a subscriber's live frames: whether this
    /// frame is newer than `through`, the newest id written, which it then becomes.
    /// A notice (id `EventId::MAX`) is always written and moves nothing.
    pub fn passes_seam(&self, through: &mut EventId) -> bool {
        if self.id <= *through {
            return false;
        }
        if self.id != EventId::MAX {
            *through = self.id;
        }
        true
    }

    /// The record an `envelope=1` subscriber receives: data wrapped as
    /// `{"stream","event","data"}`; a notice unchanged. Encoded once per frame.
    pub fn enveloped(&self) -> &Bytes {
        let Some((stream, kind)) = &self.origin else {
            return &self.bytes;
        };
        self.envelope
            .get_or_init(|| sse::envelope_record(&self.bytes, stream, *kind))
    }
}
