//! Token lifecycle: the expiry warning, revocation (memory, disk across a restart,
//! two Redis nodes), and the errors that say what was refused.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_gateway::config::BackendKind;

use crate::redis::{node, redis_config};
use crate::support::redis::RedisServer;
use crate::support::server::{now, patterns, token_with};
use crate::support::{Item, SseStream, TestServer, test_config};

fn admin_token() -> String {
    token_with(|claims| {
        claims.sub = Some("ops".to_owned());
        claims.admin = true;
    })
}

/// A subscriber token of `sub`, issued ten seconds ago, with `jti` if given.
fn subscriber(sub: &str, jti: Option<&str>) -> String {
    token_with(|claims| {
        claims.sub = Some(sub.to_owned());
        claims.iat = Some(now() - 10);
        claims.jti = jti.map(str::to_owned);
        claims.subscribe = patterns(&["*"]);
        claims.publish = patterns(&["*"]);
    })
}

async fn open(server: &TestServer, stream: &str, token: &str) -> SseStream {
    let response = server.get_events(&[stream], token).await;
    assert_eq!(response.status(), StatusCode::OK, "subscribe with {stream}");
    let mut stream = SseStream::new(response);
    // The preamble: the stream is open.
    assert!(matches!(stream.next_item().await, Some(Item::Retry(_))));
    stream
}

async fn revoke(server: &TestServer, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.url("/revocations"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

async fn subscribe_error(server: &TestServer, token: &str) -> (StatusCode, Value) {
    let response = server.get_events(&["x"], token).await;
    let status = response.status();
    if status == StatusCode::OK {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap())
}

/// Reads until the stream ends; returns the last `retry:` value sent.
async fn last_retry(stream: &mut SseStream) -> Option<u64> {
    let mut retry = None;
    while let Some(item) = stream.next_item().await {
        if let Item::Retry(value) = item {
            retry = Some(value);
        }
    }
    retry
}

#[tokio::test]
async fn a_token_inside_the_warning_window_is_warned_at_connect_without_an_id() {
    let server = TestServer::start(test_config()).await;
    let exp = now() + 50;
    let token = token_with(|claims| {
        claims.exp = Some(exp);
        claims.subscribe = patterns(&["*"]);
    });
    let mut stream = SseStream::new(server.get_events(&["a"], &token).await);
    let warning = stream.next_event().await;
    assert_eq!(warning.event, "token-expiring");
    assert_eq!(warning.id, None, "the warning must not move the resume point");
    assert_eq!(
        serde_json::from_str::<Value>(&warning.data).unwrap(),
        json!({"exp": exp})
    );
    // Events keep flowing after the warning.
    let id = server.publish("a", None, json!("after")).await;
    assert_eq!(stream.next_event().await.id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn the_warning_comes_before_the_stream_ends_at_expiry() {
    let mut config = test_config();
    config.auth.expiry_warning = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let token = token_with(|claims| {
        claims.exp = Some(now() + 4);
        claims.subscribe = patterns(&["*"]);
    });
    let mut stream = SseStream::new(server.get_events(&["a"], &token).await);
    let events = stream.until_end().await;
    let types: Vec<&str> = events.iter().map(|event| event.event.as_str()).collect();
    assert_eq!(types, ["token-expiring"], "one warning, then the end");
    assert!(server.metric("sse_token_expiry_warnings_total").await >= 1.0);
}

#[tokio::test]
async fn no_warning_is_sent_when_it_is_turned_off() {
    let mut config = test_config();
    config.auth.expiry_warning = Duration::ZERO;
    let server = TestServer::start(config).await;
    let token = token_with(|claims| {
        claims.exp = Some(now() + 3);
        claims.subscribe = patterns(&["*"]);
    });
    let mut stream = SseStream::new(server.get_events(&["a"], &token).await);
    assert!(stream.until_end().await.is_empty());
}

#[tokio::test]
async fn revoking_a_subject_ends_its_streams_and_refuses_its_older_tokens() {
    let server = TestServer::start(test_config()).await;
    let alice = subscriber("alice", None);
    let bob = subscriber("bob", None);
    let mut alice_stream = open(&server, "a", &alice).await;
    let mut bob_stream = open(&server, "a", &bob).await;

    let (status, body) = revoke(&server, &admin_token(), &json!({"sub": "alice"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], json!({"sub": "alice"}));
    assert_eq!(body["ended"], 1);
    let until = body["until"].as_u64().unwrap();
    assert!(
        until >= now() + 24 * 3600 - 60,
        "refused for auth.revocation_ttl: {until}"
    );

    assert_eq!(
        last_retry(&mut alice_stream).await,
        Some(3_600_000),
        "the ended stream tells EventSource not to come back soon"
    );
    let (status, body) = subscribe_error(&server, &alice).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    let publish = server
        .http
        .post(server.url("/events"))
        .bearer_auth(&alice)
        .json(&json!({"stream": "a", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        publish.status(),
        StatusCode::UNAUTHORIZED,
        "a revoked token cannot publish either"
    );

    // A token issued after the revocation is accepted; Bob was never affected.
    let fresh = token_with(|claims| {
        claims.sub = Some("alice".to_owned());
        claims.iat = Some(now() + 2);
        claims.subscribe = patterns(&["*"]);
    });
    assert_eq!(subscribe_error(&server, &fresh).await.0, StatusCode::OK);
    let id = server.publish("a", None, json!("still here")).await;
    assert_eq!(bob_stream.next_event().await.id.as_deref(), Some(id.as_str()));
    assert!(server.metric("sse_revoked_streams_total").await >= 1.0);
}

#[tokio::test]
async fn revoking_a_token_id_ends_only_that_token() {
    let server = TestServer::start(test_config()).await;
    let first = subscriber("carol", Some("t-1"));
    let second = subscriber("carol", Some("t-2"));
    let mut first_stream = open(&server, "a", &first).await;
    let mut second_stream = open(&server, "a", &second).await;
    let (status, body) = revoke(&server, &admin_token(), &json!({"jti": "t-1"})).await;
    assert_eq!((status, &body["ended"]), (StatusCode::OK, &json!(1)), "{body}");
    assert!(first_stream.until_end().await.is_empty());
    assert_eq!(subscribe_error(&server, &first).await.0, StatusCode::UNAUTHORIZED);
    let id = server.publish("a", None, json!(1)).await;
    assert_eq!(second_stream.next_event().await.id.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn only_admins_revoke_and_bad_revocations_are_bad_requests() {
    let server = TestServer::start(test_config()).await;
    let (status, body) = revoke(&server, &subscriber("mallory", None), &json!({"sub": "alice"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_required"))
    );
    let anonymous = server
        .http
        .post(server.url("/revocations"))
        .json(&json!({"sub": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let admin = admin_token();
    for body in [
        json!({}),
        json!({"sub": "a", "jti": "b"}),
        json!({"sub": ""}),
        json!({"sub": 5}),
        json!({"user": "a"}),
        json!({"sub": "x".repeat(1025)}),
    ] {
        let (status, reply) = revoke(&server, &admin, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {reply}");
        assert_eq!(reply["error"], "invalid_request");
    }
    let text = server
        .http
        .post(server.url("/revocations"))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body(r#"{"sub":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn revocations_survive_a_restart_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    config.backend.kind = BackendKind::Disk;
    config.backend.disk.path = dir.path().join("data");
    let dave = subscriber("dave", None);
    let server = TestServer::start(config.clone()).await;
    let (status, _) = revoke(&server, &admin_token(), &json!({"sub": "dave"})).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await.unwrap();

    let restarted = TestServer::start(config).await;
    let (status, body) = subscribe_error(&restarted, &dave).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
}

#[tokio::test]
async fn a_revocation_on_one_redis_node_ends_streams_on_another_and_outlives_both() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url());
    let first = node(config.clone()).await;
    let second = node(config.clone()).await;
    let erin = subscriber("erin", None);
    let mut on_second = open(&second, "a", &erin).await;

    let (status, body) = revoke(&first, &admin_token(), &json!({"sub": "erin"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ended"], 0, "nothing of erin's is on the first node");
    // The second node ends its stream on its own (within one bounded wait).
    assert_eq!(last_retry(&mut on_second).await, Some(3_600_000));
    let (status, body) = subscribe_error(&second, &erin).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    assert!(
        second
            .metric(r#"sse_revocations_total{kind="subject",origin="peer"}"#)
            .await
            >= 1.0
    );

    // A node that starts later loads it from Redis.
    let third = node(config).await;
    let (status, _) = subscribe_error(&third, &erin).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn refusals_say_what_was_refused() {
    let server = TestServer::start(test_config()).await;
    let token = token_with(|claims| {
        claims.subscribe = patterns(&["allowed"]);
        claims.publish = patterns(&["allowed"]);
    });
    let (status, body) = {
        let response = server.get_events(&["secret"], &token).await;
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::FORBIDDEN);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("subscrib") && message.contains("`secret`"),
        "{message}"
    );

    let post = |body: String, content_type: Option<&'static str>| {
        let mut request = server.http.post(server.url("/events")).bearer_auth(&token).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let batch = json!([{"stream": "allowed", "data": 1}, {"stream": "secret", "data": 2}]).to_string();
    let (status, body) = post(batch, Some("application/json")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("publishing") && message.contains("`secret`") && message.contains("batch element 1"),
        "{message}"
    );

    let bad_name = json!([{"stream": "allowed", "data": 1}, {"stream": "no spaces", "data": 2}]).to_string();
    let (status, body) = post(bad_name, Some("application/json")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_stream_name"))
    );
    assert!(
        body["message"].as_str().unwrap().starts_with("batch element 1:"),
        "{body}"
    );

    // curl -d '{…}' without a Content-Type sends a form.
    let json_body = json!({"stream": "allowed", "data": "x"}).to_string();
    let (status, body) = post(json_body.clone(), Some("application/x-www-form-urlencoded")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{body}"
    );
    let (status, body) = post(json_body, Some("text/plain")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type"))
    );
    assert!(body["message"].as_str().unwrap().contains("application/json"), "{body}");

    let response = server.http.delete(server.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().get("allow").is_some(), "405 keeps the Allow header");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");

    // No refusal echoes the token.
    assert!(!message.contains(&token) && !body.to_string().contains(&token));
}
