//! `POST /events`: JSON and form bodies, batches, replies and every error status.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, test_config};

async fn post(
    server: &TestServer,
    token: Option<&str>,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .post(server.url("/events"))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn single_json_event_replies_with_its_id_and_reaches_subscribers() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["orders"], None).await;
    let (status, reply) = server
        .post_json(&json!({"stream":"orders","event":"created","data":{"n":1}}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let id = reply["id"].as_str().unwrap();
    let event = stream.next_event().await;
    assert_eq!(event.id.as_deref(), Some(id));
    assert_eq!(event.event, "created");
    assert_eq!(event.data, r#"{"n":1}"#);
}

#[tokio::test]
async fn batch_replies_with_ids_in_request_order() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["a", "b"], None).await;
    let batch = json!([
        {"stream":"a","data":"1"},
        {"stream":"b","data":"2"},
        {"stream":"a","data":"3"},
    ]);
    let (status, reply) = server.post_json(&batch).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = reply["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let events = stream.events(3).await;
    for (event, (id, data)) in events.iter().zip(ids.iter().zip(["1", "2", "3"])) {
        assert_eq!(event.id.as_deref(), Some(*id));
        assert_eq!(event.data, data);
    }
}

#[tokio::test]
async fn an_invalid_batch_publishes_nothing() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["a"], None).await;
    let batch = json!([{"stream":"a","data":"ok"}, {"stream":"a","event":"gap","data":"bad"}]);
    let (status, body) = server.post_json(&batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_event_type");
    // The next event on the stream is the marker, not the first half of the batch.
    let marker = server.publish("a", None, json!("marker")).await;
    assert_eq!(stream.next_event().await.id, Some(marker));
}

#[tokio::test]
async fn batch_needs_publish_rights_on_every_stream() {
    let server = TestServer::start_default().await;
    let token = server.token(&[], &["a"]);
    let (status, body) = post(
        &server,
        Some(&token),
        "application/json",
        json!([{"stream":"a","data":1},{"stream":"b","data":2}]).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "stream_not_permitted");
}

#[tokio::test]
async fn form_encoded_publish_works_like_curl_d() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["ci"], None).await;
    let token = server.token(&[], &["ci"]);
    let (status, reply) = post(
        &server,
        Some(&token),
        "application/x-www-form-urlencoded",
        "stream=ci&event=build&data=passed%0Aall+green",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let event = stream.next_event().await;
    assert_eq!(event.id.as_deref(), reply["id"].as_str());
    assert_eq!(event.event, "build");
    assert_eq!(event.data, "passed\nall green");
}

#[tokio::test]
async fn publish_without_a_token_is_unauthorized_and_with_a_cookie_too() {
    let server = TestServer::start_default().await;
    let body = json!({"stream":"a","data":1}).to_string();
    let (status, reply) = post(&server, None, "application/json", body.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply["error"], "missing_token");
    let response = server
        .http
        .post(server.url("/events"))
        .header("cookie", format!("sse_token={}", server.token(&[], &["*"])))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn a_subscribe_only_token_cannot_publish() {
    let server = TestServer::start_default().await;
    let token = server.token(&["*"], &[]);
    let (status, _) = post(
        &server,
        Some(&token),
        "application/json",
        json!({"stream":"a","data":1}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn invalid_bodies_names_and_event_types_are_bad_requests() {
    let server = TestServer::start_default().await;
    let token = server.token(&[], &["*"]);
    for body in [
        "not json".to_owned(),
        "{}".to_owned(),
        "[]".to_owned(),
        json!({"stream":"a"}).to_string(),
        json!({"stream":"bad name","data":1}).to_string(),
        json!({"stream":"a*","data":1}).to_string(),
        json!({"stream":"a","event":"x\ny","data":1}).to_string(),
        json!({"stream":"a","event":"x\ry","data":1}).to_string(),
        json!({"stream":"a","event":"gap","data":1}).to_string(),
        json!({"stream":"a","data":1,"id":"123"}).to_string(),
    ] {
        let (status, reply) = post(&server, Some(&token), "application/json", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {reply}");
        assert!(reply["message"].is_string());
    }
    let (status, _) = post(&server, Some(&token), "application/json", vec![0xff_u8, 0xfe, b'{']).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn oversized_events_and_bodies_are_payload_too_large() {
    let mut config = test_config();
    config.limits.max_event_bytes = 1000;
    config.limits.max_body_bytes = 10_000;
    config.limits.max_batch_events = 5;
    let server = TestServer::start(config).await;
    let token = server.token(&[], &["*"]);
    let at_limit = json!({"stream":"a","data":"x".repeat(1000)}).to_string();
    assert_eq!(
        post(&server, Some(&token), "application/json", at_limit).await.0,
        StatusCode::OK
    );
    let over = json!({"stream":"a","data":"x".repeat(1001)}).to_string();
    assert_eq!(
        post(&server, Some(&token), "application/json", over).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let big_body = json!({"stream":"a","data":"x".repeat(20_000)}).to_string();
    let (status, reply) = post(&server, Some(&token), "application/json", big_body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply["error"], "payload_too_large");
    let six: Vec<Value> = (0..6).map(|i| json!({"stream":"a","data":i})).collect();
    let (status, _) = post(&server, Some(&token), "application/json", Value::from(six).to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn ids_are_strictly_increasing_across_streams() {
    let server = TestServer::start_default().await;
    let mut previous: Option<u64> = None;
    for i in 0..50 {
        let id: u64 = server
            .publish(&format!("s{}", i % 7), None, json!(i))
            .await
            .parse()
            .unwrap();
        if let Some(previous) = previous {
            assert!(id > previous);
        }
        previous = Some(id);
    }
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retry_answer_the_original_ids() {
    let server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["idem"], None).await;
    let post = |body: serde_json::Value, key: &str| {
        server
            .http
            .post(server.url("/events"))
            .bearer_auth(server.token(&[], &["*"]))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = post(json!({"stream":"idem","data":"once"}), "k-1").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: serde_json::Value = first.json().await.unwrap();
    let retry = post(json!({"stream":"idem","data":"once"}), "k-1").await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.json::<serde_json::Value>().await.unwrap(), first);
    let reused = post(json!({"stream":"idem","data":"other"}), "k-1").await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reused.json::<serde_json::Value>().await.unwrap()["error"],
        "idempotency_key_reused"
    );
    for bad in ["", "has space", &"x".repeat(256)] {
        let response = post(json!({"stream":"idem","data":"x"}), bad).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
    }
    // Published once: the next event after it is the marker.
    let marker = server.publish("idem", None, json!("marker")).await;
    assert_eq!(stream.next_event().await.id.as_deref(), first["id"].as_str());
    assert_eq!(stream.next_event().await.id, Some(marker));
}
