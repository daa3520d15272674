//! Test support: a real gateway on port 0, token minting, an SSE reader.

pub mod binary;
pub mod browser;
pub mod proxy;
pub mod redis;
pub mod server;
pub mod sse;

pub use server::{TestServer, test_config};
pub use sse::{Item, SseEvent, SseStream};

use std::time::Duration;

/// Upper bound for waiting on something the test expects to happen.
pub const WAIT: Duration = Duration::from_secs(15);

/// Awaits `future` or fails the test after [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}
