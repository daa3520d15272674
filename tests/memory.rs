//! The memory an idle subscriber holds, guarded: jemalloc's statistics measure the
//! heap the gateway keeps per open, idle event stream (its connection task, the
//! subscription, its queue and registry entries, the token's watch), with real
//! sockets to an in-process server. The test fails when it grows past
//! [`BOUND_BYTES`], so per-connection memory cannot regress silently; raise the
//! bound only with a reason (and say so in docs/BENCHMARKS.md).
//!
//! A resumed subscriber is held to the same bound once its replay is written: the
//! replay is given back as it is sent, not kept for the life of the connection.
//!
//! Its own test binary: the allocator is process-wide (and the tests take turns). (jemalloc, as in the binary;
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

/// One measurement at a time: the allocator's statistics are process-wide.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = Claims {
        sub: Some("idle".to_owned()),
        exp: Some(now + 3600),
        iat: Some(now),
        subscribe: vec![StreamPattern::try_new("*").unwrap()],
        publish: vec![StreamPattern::try_new("*").unwrap()],
        ..Claims::default()
    };
    mint(&claims, &SigningKey::hs256(SECRET)).unwrap()
}

/// Reads from `socket` into `seen` until `until` appears in it.
fn read_until(socket: &mut TcpStream, seen: &mut Vec<u8>, until: &[u8]) {
    let mut buffer = [0_u8; 4096];
    while !seen.windows(until.len()).any(|window| window == until) {
        let read = socket.read(&mut buffer).unwrap();
        assert!(read > 0, "closed: {}", String::from_utf8_lossy(seen));
        seen.extend_from_slice(&buffer[..read]);
    }
}

/// Opens one event stream with a blocking socket (no client-side heap) and reads
/// until `until` arrived (the preamble for an idle stream, the last event of a replay).
fn open(addr: &str, stream: &str, last_event_id: Option<&str>, until: &[u8], token: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        socket,
        "GET /events?stream={stream} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{resume}\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    read_until(&mut socket, &mut seen, until);
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&seen));
    socket
}

/// Publishes `body` (a JSON event or batch) and returns the response body.
fn publish(addr: &str, body: &str, token: &str) -> String {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        socket,
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
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

/// A gateway in this process, on its own runtime; stopped when dropped.
struct Gateway {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Gateway {
    fn start() -> Self {
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
        Self {
            addr,
            stop: Some(stop),
            runtime: Some(runtime),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

#[test]
fn an_idle_subscriber_holds_at_most_the_stated_heap() {
    let _turn = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let gateway = Gateway::start();
    let token = token();
    let idle = |n: usize| open(&gateway.addr, &format!("idle.{n}"), None, b": connected", &token);
    // Warm up: first-use allocations (registries, pools, metrics) are not per stream.
    let warm: Vec<TcpStream> = (0..50).map(|n| idle(STREAMS + n)).collect();
    let before = settled();
    let streams: Vec<TcpStream> = (0..STREAMS).map(idle).collect();
    let after = settled();
    let per_stream = (after - before) / STREAMS as isize;
    println!("idle event stream: {per_stream} heap bytes on the server (bound {BOUND_BYTES})");
    assert!(
        per_stream <= BOUND_BYTES,
        "an idle event stream holds {per_stream} heap bytes, over the bound of {BOUND_BYTES}"
    );
    assert!(per_stream > 0, "the measurement saw the streams ({per_stream})");
    drop((streams, warm));
}

/// Events each resuming subscriber is sent again, and their data size: a replay of
/// about 50 KiB, ten times the bound, so a kept replay cannot pass unnoticed.
const MISSED: usize = 200;
const DATA_BYTES: usize = 240;

#[test]
fn a_resumed_subscriber_gives_its_replay_back_once_written() {
    let _turn = MEASURING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let gateway = Gateway::start();
    let token = token();
    let first = publish(&gateway.addr, r#"{"stream":"replayed","data":"first"}"#, &token);
    let first_id = first.split('"').nth(3).expect("an id in the reply").to_owned();
    let padding = "x".repeat(DATA_BYTES);
    for batch in 0..MISSED / 100 {
        let events: Vec<String> = (0..100)
            .map(|i| format!(r#"{{"stream":"replayed","data":"e{batch}-{i}-{padding}"}}"#))
            .collect();
        publish(&gateway.addr, &format!("[{}]", events.join(",")), &token);
    }
    publish(&gateway.addr, r#"{"stream":"replayed","data":"the-last-one"}"#, &token);
    let resumed = |_| {
        open(
            &gateway.addr,
            "replayed",
            Some(&first_id),
            b"data: the-last-one",
            &token,
        )
    };
    let warm: Vec<TcpStream> = (0..50).map(resumed).collect();
    let before = settled();
    // Each has read its whole replay (through the last event) before the next opens.
    let streams: Vec<TcpStream> = (0..STREAMS).map(resumed).collect();
    let after = settled();
    let per_stream = (after - before) / STREAMS as isize;
    println!(
        "resumed event stream after a replay of {MISSED} events: {per_stream} heap bytes on the server (bound {BOUND_BYTES})"
    );
    assert!(
        per_stream <= BOUND_BYTES,
        "a resumed, now idle event stream holds {per_stream} heap bytes, over the bound of {BOUND_BYTES}: is the replay kept?"
    );
    assert!(per_stream > 0, "the measurement saw the streams ({per_stream})");
    drop((streams, warm));
}
