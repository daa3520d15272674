//! Abuse and adversarial input: limits, slow clients, oversized and malformed
//! requests, reconnect spreading. Never a panic, a 500, or a dropped connection for
//! other users.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::server::token_with;
use crate::support::{Item, SseStream, TestServer, read_head, test_config, within};

#[tokio::test]
async fn one_subject_cannot_hold_more_than_its_share_of_connections() {
    let mut config = test_config();
    config.limits.max_connections_per_subject = 3;
    let server = TestServer::start(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(server.subscribe(&["a"], None).await);
    }
    let token = server.token(&["*"], &[]);
    let refused = server.get_events(&["a"], &token).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "subject_connection_limit"
    );
    // Another subject is not affected.
    let other = token_with(|claims| {
        claims.sub = Some("someone-else".to_owned());
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    let allowed = server.get_events(&["a"], &other).await;
    assert_eq!(allowed.status(), StatusCode::OK);
}

#[tokio::test]
async fn publish_floods_get_429_with_retry_after() {
    let mut config = test_config();
    config.limits.publish_rate_per_subject = 5;
    config.limits.publish_burst = 5;
    let server = TestServer::start(config).await;
    let batch: Vec<Value> = (0..5).map(|i| json!({"stream":"f","data":i})).collect();
    assert_eq!(server.post_json(&Value::from(batch)).await.0, StatusCode::OK);
    let response = server
        .http
        .post(server.url("/events"))
        .bearer_auth(server.token(&[], &["*"]))
        .json(&json!({"stream":"f","data":"one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "publish_rate_limit");
}

#[tokio::test]
async fn the_node_limits_how_fast_it_accepts_new_streams() {
    let mut config = test_config();
    config.limits.subscribe_rate = 1;
    config.limits.subscribe_burst = 2;
    let server = TestServer::start(config).await;
    let _first = server.subscribe(&["a"], None).await;
    let _second = server.subscribe(&["a"], None).await;
    let token = server.token(&["*"], &[]);
    let refused = server.get_events(&["a"], &token).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn clients_sending_headers_slowly_are_disconnected() {
    let mut config = test_config();
    config.server.header_read_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n").await.unwrap();
    // Never finish the headers: the server must close the connection by itself.
    let mut buffer = [0_u8; 256];
    loop {
        let read = within("the server to drop the slow client", slow.read(&mut buffer)).await;
        if matches!(read, Ok(0) | Err(_)) {
            break;
        }
    }
    // Everyone else is served.
    let ok = server.http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn publish_bodies_sent_slowly_time_out_with_408() {
    let mut config = test_config();
    config.server.request_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"stream\"",
        server.token(&[], &["*"])
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    assert!(read_head(&mut socket).await.starts_with("HTTP/1.1 408"));
}

#[tokio::test]
async fn oversized_and_malformed_requests_get_client_errors() {
    let server = TestServer::start_default().await;
    let token = server.token(&["*"], &["*"]);
    // Thousands of stream parameters.
    let many: Vec<String> = (0..5000).map(|i| format!("stream=s{i}")).collect();
    let response = server
        .http
        .get(server.url(&format!("/events?{}", many.join("&"))))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    // A huge header.
    let response = server
        .http
        .get(server.url("/healthz"))
        .header("X-Padding", "x".repeat(1024 * 1024))
        .send()
        .await;
    assert!(response.map_or(true, |r| r.status().is_client_error()));
    // Deeply nested JSON.
    let deep = format!(
        r#"{{"stream":"d","data":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let response = server
        .http
        .post(server.url("/events"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    // A huge token.
    let response = server.get_events(&["a"], "e".repeat(64 * 1024)).await;
    assert!(response.status().is_client_error());
    // Invalid UTF-8 in a form.
    let response = server
        .http
        .post(server.url("/events"))
        .bearer_auth(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("stream=a&data=%FF%FE")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // After all that, the node still serves.
    assert_eq!(
        server.http.get(server.url("/readyz")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn nothing_published_can_inject_sse_fields_or_headers() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["inj"], None).await;
    let token = server.token(&[], &["*"]);
    let attempts = [
        json!({"stream":"inj","data":"x\n\nid: 1\nevent: admin\ndata: forged"}),
        json!({"stream":"inj","data":"x\r\rretry: 1\r\r"}),
        json!({"stream":"inj","event":"ok\r\nevent: admin","data":"x"}),
        json!({"stream":"inj\r\nX-Injected: 1","data":"x"}),
    ];
    let mut accepted = Vec::new();
    for attempt in &attempts {
        let response = server
            .http
            .post(server.url("/events"))
            .bearer_auth(&token)
            .json(attempt)
            .send()
            .await
            .unwrap();
        assert!(!response.headers().contains_key("x-injected"));
        if response.status() == StatusCode::OK {
            accepted.push(
                attempt["data"]
                    .as_str()
                    .unwrap()
                    .replace("\r\n", "\n")
                    .replace('\r', "\n"),
            );
        }
    }
    assert_eq!(accepted.len(), 2, "only the data-only attempts are accepted");
    for data in accepted {
        let event = stream.next_event().await;
        assert_eq!(event.event, "message", "no forged event type");
        assert_eq!(event.data, data, "the payload arrives as data, whole");
    }
}

#[tokio::test]
async fn shutdown_spreads_reconnects_with_a_jittered_retry() {
    let mut config = test_config();
    config.server.retry = Duration::from_secs(1);
    config.server.retry_jitter = Duration::from_secs(10);
    let mut server = TestServer::start(config).await;
    let mut streams: Vec<SseStream> = Vec::new();
    for _ in 0..40 {
        streams.push(server.subscribe(&["j"], None).await);
    }
    server.begin_stop();
    let mut retries = Vec::new();
    for stream in &mut streams {
        let mut last_retry = None;
        while let Some(item) = stream.next_item().await {
            if let Item::Retry(ms) = item {
                last_retry = Some(ms);
            }
        }
        retries.push(last_retry.expect("a retry line before the end"));
    }
    assert!(retries.iter().all(|ms| (1000..=11_000).contains(ms)), "{retries:?}");
    let mut distinct = retries.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 30, "reconnect times are spread: {retries:?}");
    let seconds: std::collections::HashSet<u64> = retries.iter().map(|ms| ms / 1000).collect();
    assert!(
        seconds.len() >= 5,
        "clients come back over several seconds: {retries:?}"
    );
    server.join().await.unwrap();
}

#[tokio::test]
async fn one_subject_cannot_hold_more_than_its_share_of_streams() {
    let mut config = test_config();
    config.limits.max_streams_per_subject = 4;
    let server = TestServer::start(config).await;
    let token = server.token(&["*"], &[]);
    let held = server.get_events(&["s1", "s2", "s3"], &token).await;
    assert_eq!(held.status(), StatusCode::OK);
    let refused = server.get_events(&["s4", "s5"], &token).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "subject_stream_limit");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_streams_per_subject"),
        "{body}"
    );
    // Streams the subject already holds cost nothing more.
    let again = server.get_events(&["s1", "s4"], &token).await;
    assert_eq!(again.status(), StatusCode::OK);
    let other = token_with(|claims| {
        claims.sub = Some("someone-else".to_owned());
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    assert_eq!(server.get_events(&["s6", "s7"], &other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_node_stream_limit_says_which_limit_was_hit() {
    let mut config = test_config();
    config.limits.max_streams = 1;
    let server = TestServer::start(config).await;
    let token = server.token(&["*"], &[]);
    let _held = server.get_events(&["a"], &token).await;
    let refused = server.get_events(&["b"], &token).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "stream_limit");
    assert!(
        body["message"].as_str().unwrap().contains("limits.max_streams"),
        "{body}"
    );
}
