//! One client TCP connection as request handlers see it.
//!
//! The accept loop puts a [`ClientConnection`] into every request's extensions. A
//! handler uses it for two things only: to close the connection at once (a
//! subscriber that overflowed its queue may have stopped reading, so its response
//! would never end otherwise), and to say that the connection now serves an event
//! stream (it then stops counting against the bound on connections that are not
//! event streams, and counts against `limits.max_connections` instead). The server
//! owns what these signals do; handlers know nothing about sockets, and pass on an
//! opaque [`DirectSocket`] the server may offer for an event stream's deliveries.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::stream::DirectSocket;

/// A handle on the client's connection; clones share it.
#[derive(Debug, Clone, Default)]
pub struct ClientConnection {
    close: CancellationToken,
    event_stream: CancellationToken,
    direct: Option<Arc<DirectSocket>>,
}

impl ClientConnection {
    /// The connection with its socket offered to an event stream's deliveries, which
    /// may write to it directly while the server has nothing to write.
    #[must_use]
    pub fn with_direct_socket(mut self, socket: Arc<DirectSocket>) -> Self {
        self.direct = Some(socket);
        self
    }

    /// The socket direct deliveries may write to, when the server offers it.
    pub fn direct_socket(&self) -> Option<&Arc<DirectSocket>> {
        self.direct.as_ref()
    }

    /// Cancelled when the connection must be closed at once.
    pub fn close_token(&self) -> &CancellationToken {
        &self.close
    }

    /// Closes the connection at once, whatever is in flight on it.
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Marks the connection as serving an event stream.
    pub fn mark_event_stream(&self) {
        self.event_stream.cancel();
    }

    /// Cancelled once a handler marked the connection as an event stream.
    pub fn event_stream_token(&self) -> &CancellationToken {
        &self.event_stream
    }
}
