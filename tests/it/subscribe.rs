//! `GET /events`: headers, first bytes, token sources, errors, heartbeats, expiry.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::server::token_with;
use crate::support::{Item, SseStream, TestServer, test_config, within};

#[tokio::test]
async fn stream_opens_with_contract_headers_and_flushes_retry_and_a_comment_at_once() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["messages"], None).await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache");
    assert_eq!(stream.headers["x-accel-buffering"], "no");
    // Nothing is published: these items can only come from the opening flush.
    assert_eq!(stream.next_item().await, Some(Item::Retry(3000)));
    assert!(matches!(stream.next_item().await, Some(Item::Comment(_))));
}

#[tokio::test]
async fn one_connection_receives_events_of_all_its_streams() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["a", "b"], None).await;
    let id_a = server.publish("a", None, json!("from a")).await;
    server.publish("c", None, json!("not subscribed")).await;
    let id_b = server.publish("b", Some("update"), json!({"k": 1})).await;
    let events = stream.events(2).await;
    assert_eq!(events[0].id.as_deref(), Some(id_a.as_str()));
    assert_eq!(events[0].data, "from a");
    assert_eq!(events[0].event, "message");
    assert_eq!(events[1].id.as_deref(), Some(id_b.as_str()));
    assert_eq!(events[1].event, "update");
    assert_eq!(events[1].data, r#"{"k":1}"#);
}

#[tokio::test]
async fn token_is_accepted_from_query_and_cookie() {
    let server = TestServer::start_default().await;
    let token = server.token(&["messages"], &[]);
    let by_query = server
        .http
        .get(format!("{}&access_token={token}", server.events_url(&["messages"])))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    let cookie = format!("theme=dark; sse_token={token}");
    let by_cookie = server
        .status_with_cookie(&server.events_url(&["messages"]), &cookie)
        .await;
    assert_eq!(by_cookie, StatusCode::OK);
}

#[tokio::test]
async fn cookie_name_is_configurable() {
    let mut config = test_config();
    config.auth.cookie_name = "gw_auth".to_owned();
    let server = TestServer::start(config).await;
    let token = server.token(&["*"], &[]);
    let url = server.events_url(&["x"]);
    let configured = server.status_with_cookie(&url, &format!("gw_auth={token}")).await;
    assert_eq!(configured, StatusCode::OK);
    let default_name = server.status_with_cookie(&url, &format!("sse_token={token}")).await;
    assert_eq!(default_name, StatusCode::UNAUTHORIZED);
}

async fn get_status(
    server: &TestServer,
    url: &str,
    token: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = server.http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn missing_invalid_and_expired_tokens_are_unauthorized_with_a_bearer_challenge() {
    let server = TestServer::start_default().await;
    let url = server.events_url(&["messages"]);
    let expired = token_with(|claims| {
        claims.exp = Some(crate::support::server::now() - 5);
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    for (token, reason) in [
        (None, "missing_token"),
        (Some("garbage"), "malformed_token"),
        (Some(expired.as_str()), "token_expired"),
    ] {
        let (status, headers, body) = get_status(&server, &url, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}");
        assert!(
            headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"),
            "{reason}"
        );
        assert_eq!(body["error"], reason);
    }
}

#[tokio::test]
async fn a_token_must_cover_every_requested_stream() {
    let server = TestServer::start_default().await;
    let token = server.token(&["messages", "prices.*"], &["*"]);
    let ok = server.events_url(&["messages", "prices.eur"]);
    assert_eq!(get_status_ok(&server, &ok, &token).await, StatusCode::OK);
    for streams in [&["messages", "secret"][..], &["prices"], &["pricesX"]] {
        let (status, _, body) = get_status(&server, &server.events_url(streams), Some(&token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{streams:?}");
        assert_eq!(body["error"], "stream_not_permitted");
    }
}

async fn get_status_ok(server: &TestServer, url: &str, token: &str) -> StatusCode {
    server.http.get(url).bearer_auth(token).send().await.unwrap().status()
}

#[tokio::test]
async fn bad_stream_requests_are_bad_requests() {
    let mut config = test_config();
    config.limits.max_streams_per_connection = 2;
    let server = TestServer::start(config).await;
    let token = server.token(&["*"], &[]);
    for (query, reason) in [
        ("", "no_stream"),
        ("?other=1", "no_stream"),
        ("?stream=", "invalid_stream_name"),
        ("?stream=a%20b", "invalid_stream_name"),
        ("?stream=a*b", "invalid_stream_name"),
        ("?stream=%C3%A9", "invalid_stream_name"),
        ("?stream=a&stream=b&stream=c", "too_many_streams"),
    ] {
        let (status, _, body) = get_status(&server, &server.url(&format!("/events{query}")), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["error"], reason, "{query}");
    }
    let long = "x".repeat(129);
    let (status, _, _) = get_status(&server, &server.events_url(&[&long]), Some(&token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let longest = "x".repeat(128);
    assert_eq!(
        get_status_ok(&server, &server.events_url(&[&longest]), &token).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn heartbeat_comments_arrive_while_idle() {
    let mut config = test_config();
    config.server.heartbeat_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let mut stream = server.subscribe(&["quiet"], None).await;
    let mut heartbeats = 0;
    while heartbeats < 3 {
        match stream.next_item().await {
            Some(Item::Comment(text)) if text == "heartbeat" => heartbeats += 1,
            Some(Item::Event(event)) => panic!("unexpected event {event:?}"),
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
}

#[tokio::test]
async fn the_stream_ends_when_its_token_expires() {
    let server = TestServer::start_default().await;
    let token = token_with(|claims| {
        claims.exp = Some(crate::support::server::now() + 2);
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    let response = server.get_events(&["a"], &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = SseStream::new(response);
    within("expiry to end the stream", stream.until_end()).await;
    assert!(server.metric("sse_disconnects_total{reason=\"token_expired\"}").await >= 1.0);
}

#[tokio::test]
async fn streams_outlive_their_token_when_close_on_expiry_is_off() {
    let mut config = test_config();
    config.auth.close_on_expiry = false;
    let server = TestServer::start(config).await;
    let token = token_with(|claims| {
        claims.exp = Some(crate::support::server::now() + 1);
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    let response = server.get_events(&["a"], &token).await;
    let mut stream = SseStream::new(response);
    // Wait past the expiry (bounded by the clock, not by a sleep racing the server).
    let deadline = crate::support::server::now() + 3;
    while crate::support::server::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = server.publish("a", None, json!("still here")).await;
    assert_eq!(stream.next_event().await.id, Some(id));
}

#[tokio::test]
async fn connection_limit_answers_service_unavailable() {
    let mut config = test_config();
    config.limits.max_connections = 1;
    let server = TestServer::start(config).await;
    let first = server.subscribe(&["a"], None).await;
    let (status, headers, body) =
        get_status(&server, &server.events_url(&["a"]), Some(&server.token(&["*"], &[]))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["error"], "connection_limit");
    drop(first);
    // The slot is released when the server notices the client left.
    within("slot release", async {
        loop {
            let status = get_status_ok(&server, &server.events_url(&["a"]), &server.token(&["*"], &[])).await;
            if status == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
