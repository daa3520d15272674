//! Test support: a real gateway on port 0, token minting, an SSE reader.

pub mod binary;
pub mod browser;
pub mod node;
pub mod proxy;
pub mod redis;
pub mod sentinel;
pub mod server;
pub mod sse;

pub use server::{TestServer, test_config};
pub use sse::{Item, SseEvent, SseStream};

use std::time::Duration;

/// Upper bound for waiting on something the test expects to happen.
pub const WAIT: Duration = Duration::from_secs(15);

/// Reads a response head from a raw socket, byte by byte so nothing after it is
/// consumed (fails the test if the connection closes first).
pub async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        let read = within("a response head", socket.read(&mut byte)).await.unwrap();
        assert_eq!(read, 1, "connection closed before a response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Awaits `future` or fails the test after [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}
