//! Attacks through real sockets, most without a token: connections that never
//! finish choosing a protocol, idle HTTP/2 connections, a pool of stalled
//! connections, floods into an event stream, missing Host headers, running out of
//! file descriptors. Each reproduces a finding of the second hardening pass
//! (docs/HARDENING.md) and fails on the code before its fix.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::binary::{BIN, GatewayProcess};
use crate::support::server::SECRET;
use crate::support::{TestServer, read_head, test_config, within};

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the server closes the connection (EOF or reset).
async fn until_closed(socket: &mut TcpStream, what: &str) {
    let mut buffer = [0_u8; 4096];
    within(what, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test]
async fn connections_that_never_finish_their_first_request_are_closed() {
    let mut config = test_config();
    config.server.header_read_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    for opening in [
        &b"P"[..],
        b"PRI * HTTP/2.0\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n",
        b"GET /events?stream=a HTTP/1.1\r\n",
    ] {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(opening).await.unwrap();
        until_closed(&mut socket, &format!("the server to drop {opening:?}")).await;
    }
    let closed = server
        .metric("sse_tcp_connections_closed_total{reason=\"first_request_timeout\"}")
        .await;
    assert!(closed >= 4.0, "{closed}");
}

#[tokio::test]
async fn http2_connections_without_streams_are_closed_when_idle() {
    let mut config = test_config();
    config.server.idle_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(H2_PREFACE).await.unwrap();
    socket.write_all(H2_EMPTY_SETTINGS).await.unwrap();
    until_closed(&mut socket, "the server to close an idle HTTP/2 connection").await;
    assert!(server.metric("sse_tcp_connections_closed_total{reason=\"idle\"}").await >= 1.0);
}

#[tokio::test]
async fn http2_peers_are_pinged_and_dropped_when_they_stop_answering() {
    let mut config = test_config();
    config.server.heartbeat_interval = Duration::from_millis(200); // also the ping interval
    config.server.idle_timeout = Duration::from_secs(600); // not what closes it here
    let server = TestServer::start(config).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(H2_PREFACE).await.unwrap();
    socket.write_all(H2_EMPTY_SETTINGS).await.unwrap();
    // Frames: 3 bytes length, 1 type, 1 flags, 4 stream id. PING is type 6; a ping
    // the server starts has no ACK flag (1).
    let mut received = Vec::new();
    within("a PING frame from the server", async {
        loop {
            let mut at = 0;
            while received.len() >= at + 9 {
                let length = usize::from(received[at]) << 16
                    | usize::from(received[at + 1]) << 8
                    | usize::from(received[at + 2]);
                if received[at + 3] == 6 && received[at + 4] & 1 == 0 {
                    return;
                }
                at += 9 + length;
            }
            let mut buffer = [0_u8; 1024];
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before any PING");
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    // Never acknowledged: the connection is given up (a dead peer frees its slot).
    until_closed(&mut socket, "the server to drop a peer that does not answer pings").await;
}

#[tokio::test]
async fn stalled_connections_cannot_lock_anyone_out() {
    let mut config = test_config();
    config.server.max_other_connections = 8;
    config.server.header_read_timeout = Duration::from_secs(60);
    let server = TestServer::start(config).await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut socket = TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(b"P").await.unwrap();
        stalled.push(socket);
    }
    // Others are served: each new connection pushes out the oldest stalled one.
    for _ in 0..3 {
        let response = within("healthz", server.http.get(server.url("/healthz")).send()).await;
        assert_eq!(response.unwrap().status(), StatusCode::OK);
    }
    let mut events = server.subscribe(&["a"], None).await;
    let id = server.publish("a", None, serde_json::json!("through")).await;
    assert_eq!(events.next_event().await.id, Some(id));
    // The oldest stalled connections were the ones closed.
    until_closed(&mut stalled[0], "the oldest stalled connection to be evicted").await;
    assert!(
        server
            .metric("sse_tcp_connections_closed_total{reason=\"evicted\"}")
            .await
            >= 12.0
    );
}

/// Opens an event stream on the lean path and reads its response head.
async fn raw_event_stream(server: &TestServer) -> TcpStream {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /events?stream=flood HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token(&["*"], &[])
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut socket).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    socket
}

#[tokio::test]
async fn a_client_flooding_its_own_event_stream_is_disconnected() {
    let server = TestServer::start_default().await;
    let mut socket = raw_event_stream(&server).await;
    // An EventSource sends nothing after its request; this one sends 64 KiB.
    let junk = vec![b'x'; 64 * 1024];
    let _ = socket.write_all(&junk).await;
    until_closed(&mut socket, "the flooding client to be cut off").await;
    let closed = server
        .metric("sse_tcp_connections_closed_total{reason=\"unexpected_input\"}")
        .await;
    assert!(closed >= 1.0);
}

async fn raw_status(server: &TestServer, request: &[u8]) -> String {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    read_head(&mut socket).await.lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn http11_requests_need_exactly_one_host_header() {
    let server = TestServer::start_default().await;
    let token = server.token(&["*"], &[]);
    for request in [
        "GET /healthz HTTP/1.1\r\n\r\n".to_owned(),
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_owned(),
        format!("GET /events?stream=a HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n"),
        format!("GET /events?stream=a HTTP/1.1\r\nHost: a\r\nHost: b\r\nAuthorization: Bearer {token}\r\n\r\n"),
    ] {
        let status = raw_status(&server, request.as_bytes()).await;
        assert!(status.starts_with("HTTP/1.1 400"), "{request:?} -> {status}");
    }
    // HTTP/1.0 has no Host requirement.
    let status = raw_status(&server, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(status.contains(" 200"), "{status}");
}

#[tokio::test]
async fn the_open_file_limit_is_reported() {
    let server = TestServer::start_default().await;
    let text = server.metrics_text().await;
    for series in ["process_max_fds", "process_open_fds", "process_resident_memory_bytes"] {
        assert!(
            crate::support::server::metric_value(&text, series) > 0.0,
            "{series} missing:\n{text}"
        );
    }
}

/// Runs the gateway binary through `prlimit --nofile=SOFT:HARD`.
async fn gateway_with_open_file_limit(dir: &std::path::Path, soft: u32, hard: u32) -> GatewayProcess {
    let wrapper = dir.join("limited.sh");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec prlimit --nofile={soft}:{hard} {BIN} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    GatewayProcess::serve_with(
        &wrapper,
        dir,
        &[
            ("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET),
            ("SSE_GATEWAY_DEMO__ENABLED", "false"),
            ("SSE_GATEWAY_DEMO__PUBLISHER", "false"),
        ],
    )
    .await
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    // Started with a soft limit of 256 under a hard one of 1,536: the gateway lifts
    // its own soft limit to the hard one and reports it.
    let gateway = gateway_with_open_file_limit(dir.path(), 256, 1536).await;
    let text = gateway.metrics_text().await;
    assert_eq!(crate::support::server::metric_value(&text, "process_max_fds"), 1536.0);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gateway.child.id())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1536", "1536"],
        "soft and hard limit: {open_files}"
    );
}

/// CPU seconds the process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

#[tokio::test]
async fn out_of_descriptors_the_node_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    // The gateway under a hard limit of 64 open files, which it cannot raise.
    let mut gateway = gateway_with_open_file_limit(dir.path(), 64, 64).await;
    let base = format!("http://{}", gateway.addr);
    let token = crate::support::server::token_with(|claims| {
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    // Event streams hold descriptors until none is left: more of them, in rounds,
    // until the gateway reports failed accepts (on a busy machine some connects
    // may still be in flight when a round ends).
    let client = reqwest::Client::new();
    let mut streams = Vec::new();
    let mut opened = 0;
    while !gateway.log.contains("accept failed") {
        assert!(opened < 1000, "accepts never failed; gateway log:\n{}", gateway.log);
        for _ in 0..if opened == 0 { 80 } else { 40 } {
            let request = client
                .get(format!("{base}/events?stream=s{opened}"))
                .bearer_auth(&token)
                .send();
            streams.push(tokio::spawn(request));
            opened += 1;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !gateway.log.contains("accept failed") {
            let Ok(line) = tokio::time::timeout_at(deadline, gateway.lines.recv()).await else {
                break;
            };
            gateway.log.push_str(&line.expect("gateway running"));
            gateway.log.push('\n');
        }
    }
    // Out of descriptors, the accept loop pauses instead of spinning.
    let pid = gateway.child.id();
    let (cpu_before, started) = (cpu_seconds(pid), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let share = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
    assert!(
        share < 0.5,
        "the gateway used {share:.2} of a core while out of descriptors"
    );
    for stream in &streams {
        stream.abort();
    }
    drop(streams);
    // Descriptors come back; the node serves again and counted the failures.
    let metrics = within("the node to recover", async {
        loop {
            if let Ok(response) = client.get(format!("{base}/metrics")).send().await
                && response.status() == StatusCode::OK
            {
                return response.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(crate::support::server::metric_value(&metrics, "sse_accept_errors_total") >= 1.0);
    assert_eq!(crate::support::server::metric_value(&metrics, "process_max_fds"), 64.0);
}
