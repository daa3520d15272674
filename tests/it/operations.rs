//! Health, readiness, unknown routes and the ordered shutdown.

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{TestServer, read_head, within};

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let server = TestServer::start_default().await;
    for path in ["/healthz", "/readyz"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_client_errors() {
    let server = TestServer::start_default().await;
    let response = server.http.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "not_found");
    let response = server.http.delete(server.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn shutdown_ends_open_streams_refuses_late_publishes_and_returns() {
    let mut server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["a"], None).await;

    // A publish whose body is still to come when shutdown begins. The server sends
    // `100 Continue` once the handler reads the body, so the request is in flight.
    let body = r#"{"stream":"a","data":"late"}"#;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.token(&[], &["*"]),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    assert!(read_head(&mut socket).await.starts_with("HTTP/1.1 100"));

    server.begin_stop();
    // The open event stream ends (clients reconnect elsewhere with Last-Event-ID).
    within("stream to end", stream.until_end()).await;
    socket.write_all(body.as_bytes()).await.unwrap();
    let response = read_head(&mut socket).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    drop(socket);

    server.join().await.unwrap();
}

#[tokio::test]
async fn cors_is_closed_unless_origins_are_configured() {
    let closed = TestServer::start_default().await;
    let response = closed
        .http
        .get(closed.url("/healthz"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("access-control-allow-origin"));

    let mut config = crate::support::test_config();
    config.cors.allowed_origins = vec!["https://app.example".to_owned()];
    config.cors.allow_credentials = true;
    let open = TestServer::start(config).await;
    let preflight = open
        .http
        .request(reqwest::Method::OPTIONS, open.url("/events"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(preflight.headers()["access-control-allow-credentials"], "true");
    let other = open
        .http
        .get(open.url("/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

/// Collects the gateway's log lines until one contains every one of `needles`.
async fn log_line_with(gateway: &mut crate::support::binary::GatewayProcess, needles: &[&str]) -> String {
    within("the log line", async {
        loop {
            if let Some(line) = gateway
                .log
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_owned();
            }
            let line = gateway.lines.recv().await.expect("gateway running");
            gateway.log.push_str(&line);
            gateway.log.push('\n');
        }
    })
    .await
}

#[tokio::test]
async fn requests_and_stream_ends_are_logged_without_tokens_or_queries() {
    use crate::support::server::{SECRET, patterns, token_with};
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = crate::support::binary::GatewayProcess::serve(
        dir.path(),
        &[
            ("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET),
            ("SSE_GATEWAY_DEMO__PUBLISHER", "false"),
        ],
    )
    .await;
    let token = token_with(|claims| {
        claims.sub = Some("carol".to_owned());
        claims.subscribe = patterns(&["*"]);
        claims.publish = patterns(&["*"]);
    });
    let http = reqwest::Client::new();
    let url = format!("http://{}/events?stream=logged&access_token={token}", gateway.addr);
    let mut stream = crate::support::SseStream::new(http.get(&url).send().await.unwrap());
    let published = http
        .post(format!("http://{}/events", gateway.addr))
        .bearer_auth(&token)
        .json(&serde_json::json!({"stream": "logged", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::OK);
    stream.next_event().await;
    drop(stream);
    let request = log_line_with(&mut gateway, &["access", "POST", "/events", "200", "carol"]).await;
    let ended = log_line_with(&mut gateway, &["event stream ended", "client_closed", "carol"]).await;
    let refused = {
        http.get(format!("http://{}/events?stream=x", gateway.addr))
            .send()
            .await
            .unwrap();
        log_line_with(&mut gateway, &["access", "GET", "/events", "401"]).await
    };
    for line in [&request, &ended, &refused] {
        assert!(!line.contains(&token) && !line.contains("access_token"), "{line}");
    }
    assert!(
        gateway
            .log
            .lines()
            .any(|line| line.contains("access") && line.contains("GET") && line.contains("200"))
    );
    assert!(!gateway.log.contains(&token), "no token anywhere in the log");
}

#[tokio::test]
async fn a_fresh_gateway_exports_build_info_and_zeroed_rejection_counters() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = crate::support::binary::GatewayProcess::serve(
        dir.path(),
        &[("SSE_GATEWAY_AUTH__HS256_SECRET", crate::support::server::SECRET)],
    )
    .await;
    let text = gateway.metrics_text().await;
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(
            |line| line.starts_with(&format!("sse_build_info{{version=\"{version}\",revision=\""))
                && line.ends_with(" 1")
        ),
        "{text}"
    );
    for series in [
        r#"sse_publish_rejections_total{reason="invalid_request"} 0"#,
        r#"sse_connections_rejected_total{reason="missing_token"} 0"#,
        r#"sse_auth_rejections_total{reason="bad_signature"} 0"#,
        "process_start_time_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(series), "{series} missing");
    }
}

#[test]
fn version_names_the_revision() {
    let output = std::process::Command::new(crate::support::binary::BIN)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = format!("sse-gateway {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected) && text.trim_end().ends_with(')'), "{text}");
    assert_eq!(
        text.trim_end().trim_end_matches(')').rsplit('(').next(),
        Some(sse_gateway::REVISION)
    );
}

#[tokio::test]
async fn the_index_points_to_the_demo_and_is_absent_without_it() {
    let server = TestServer::start(crate::support::test_config()).await;
    let page = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let text = page.text().await.unwrap();
    assert!(text.contains("href=\"/demo\"") && text.contains("/healthz") && text.contains(env!("CARGO_PKG_VERSION")));
    assert!(!text.contains("EventSource"), "the index is not the demo page");
    let mut config = crate::support::test_config();
    config.demo.enabled = false;
    let server = TestServer::start(config).await;
    assert_eq!(
        server.http.get(server.url("/")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}
