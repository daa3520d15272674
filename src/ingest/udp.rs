//! `[ingest.udp]`: each datagram is one JSON publish body (one event or a batch),
//! published through the node like `POST /events`. Fire and forget: nothing answers
//! the sender, so delivery is at most once (a datagram the kernel drops, or one the
//! node refuses, is gone; both are counted). For internal networks only: anyone who
//! can reach the port can publish to the allowed streams.
//!
//! One task receives; each valid datagram is published by its own task, at most
//! [`MAX_IN_FLIGHT`] at once (so a disk backend's group commit can gather them).
//! When that many are in flight the receiver waits and the kernel buffer
//! (`receive_buffer_bytes`) absorbs the burst; past it the kernel drops (counted in
//! `/proc/net/snmp` `Udp: RcvbufErrors`).

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Ingest;
use crate::body::parse_json;
use crate::config::UdpConfig;
use crate::node::{Node, Source};

/// Publications from datagrams in flight at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// The largest UDP payload (65,535 minus the IPv4 and UDP headers).
const MAX_DATAGRAM: usize = 65_507;

/// Binds `[ingest.udp]`.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(config: &UdpConfig) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(config.addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(config.receive_buffer_bytes) {
        tracing::warn!(%error, "cannot set ingest.udp.receive_buffer_bytes");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&config.addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until `stop`.
pub async fn listen(
    socket: UdpSocket,
    node: Arc<Node>,
    config: &UdpConfig,
    max_body_bytes: usize,
    stop: CancellationToken,
) {
    let ingest = Ingest::new(node, Source::Udp, &config.allowed_streams);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buffer = vec![0_u8; MAX_DATAGRAM + 1];
    if let Ok(addr) = socket.local_addr() {
        tracing::info!(%addr, "UDP ingest listening");
    }
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => received,
        };
        let length = match received {
            Ok((length, _)) => length,
            Err(error) => {
                // ICMP errors and the like: nothing to do with the listener itself.
                tracing::debug!(%error, "UDP receive failed");
                continue;
            }
        };
        if length > max_body_bytes {
            ingest.rejected("payload_too_large");
            continue;
        }
        let events = match parse_json(&buffer[..length]) {
            Ok(body) => body.events,
            Err(error) => {
                ingest.rejected(error.reason());
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let ingest = ingest.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match ingest.publish(events, None).await {
                Ok(_) => ingest.published(),
                Err(refused) => ingest.rejected(refused.reason()),
            }
        });
    }
}
