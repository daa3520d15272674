//! The memory an idle subscriber holds, guarded: jemalloc's statistics measure the
//! heap the gateway keeps per open, idle event stream (its connection task, the
//! subscription, its queue and registry entries, the token's watch), with real
//! sockets to an in-process server. The test fails when it grows past
//! [`BOUND_BYTES`], so per-connection memory cannot regress silently; raise the
//! bound only with a reason (and say so in docs/BENCHMARKS.md).
//!
//! Its own test binary: the allocator is process-wide. (jemalloc, as in the binary;
//! `stats.allocated` counts what the application holds, not the allocator's caches.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sse_gateway::auth::Claims;
use sse_gateway::auth::mint::{SigningKey, mint};
use sse_gateway::config::{Config, Secret};
use sse_gateway::server::{self, Listeners};
use sse_gateway::stream::StreamPattern;

/// Heap bytes one idle event stream may hold on the server: measured 5.2–5.5 KiB
/// (2026-11-30: connection task and its lean HTTP/1 state, the subscription with its
/// timers and revocation watch, a bounded queue, a registry entry for its stream),
/// with room for the run-to-run spread of the registry's table growth.
const BOUND_BYTES: isize = 6144;

/// Idle streams opened for the measurement.
const STREAMS: usize = 400;

// The allocator the binary uses; its statistics count the live heap.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes allocated and not yet freed, process-wide.
fn live() -> isize {
    tikv_jemalloc_ctl::epoch::advance().unwrap();
    tikv_jemalloc_ctl::stats::allocated::read().unwrap() as isize
}

const SECRET: &str = "memory-guard-secret-0123456789abcdef";

fn token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims {
        sub: Some("idle".to_owned()),
        exp: Some(now + 3600),
        iat: Some(now),
        subscribe: vec![StreamPattern::try_new("*").unwrap()],
        ..Claims::default()
    };
    mint(&claims, &SigningKey::hs256(SECRET)).unwrap()
}

/// Opens one idle event stream with a blocking socket (no client-side heap) and
/// reads until its preamble arrived.
fn open(addr: &str, n: usize, token: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        socket,
        "GET /events?stream=idle.{n} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 512];
    while !seen.windows(11).any(|window| window == b": connected") {
        let read = socket.read(&mut buffer).unwrap();
        assert!(read > 0, "stream {n} closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..read]);
    }
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    socket
}

/// Live heap bytes once allocations settled (the server's tasks run on other
/// threads: wait until two readings 100 ms apart agree within a few KiB).
fn settled() -> isize {
    let mut last = live();
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let now = live();
        if (now - last).abs() < 4096 {
            return now;
        }
        last = now;
    }
    last
}

#[test]
fn an_idle_subscriber_holds_at_most_the_stated_heap() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut config = Config::default();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.auth.hs256_secret = Some(Secret::new(SECRET));
    config.demo.enabled = false;
    config.demo.publisher = false;
    config.metrics.enabled = false;
    config.log.access = false;
    config.server.heartbeat_interval = Duration::from_secs(3600);
    let (addr, stop) = runtime.block_on(async {
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = main.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = Listeners {
            main,
            metrics: None,
            udp: None,
        };
        tokio::spawn(server::run(config, listeners, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    });
    let token = token();
    // Warm up: first-use allocations (registries, pools, metrics) are not per stream.
    let warm: Vec<TcpStream> = (0..50).map(|n| open(&addr, STREAMS + n, &token)).collect();
    let before = settled();
    let streams: Vec<TcpStream> = (0..STREAMS).map(|n| open(&addr, n, &token)).collect();
    let after = settled();
    let per_stream = (after - before) / STREAMS as isize;
    println!("idle event stream: {per_stream} heap bytes on the server (bound {BOUND_BYTES})");
    assert!(
        per_stream <= BOUND_BYTES,
        "an idle event stream holds {per_stream} heap bytes, over the bound of {BOUND_BYTES}"
    );
    assert!(per_stream > 0, "the measurement saw the streams ({per_stream})");
    drop((streams, warm));
    let _ = stop.send(());
    runtime.shutdown_timeout(Duration::from_secs(5));
}
