//! `POST /webhooks/{stream}`: GitLab tokens, GitHub HMAC signatures, Standard
//! Webhooks, nothing published on a wrong secret, unknown hooks indistinguishable
//! from known ones, replays answered with the original reply, and bodies read
//! before their signature is checked bounded across requests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;
use sse_gateway::config::{Config, Secret, WebhookConfig, WebhookProvider};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{TestServer, read_head, test_config, within};

fn hooks_config() -> Config {
    let mut config = test_config();
    config.webhooks.hooks = vec![
        WebhookConfig {
            stream: "ci.gitlab".to_owned(),
            provider: WebhookProvider::Gitlab,
            secret: Some(Secret::new("gitlab-hook-secret")),
            secret_file: None,
            event: None,
            max_age: Duration::from_secs(300),
        },
        WebhookConfig {
            stream: "ci.github".to_owned(),
            provider: WebhookProvider::Github,
            secret: Some(Secret::new("github-hook-secret")),
            secret_file: None,
            event: Some("github".to_owned()),
            max_age: Duration::from_secs(300),
        },
        WebhookConfig {
            stream: "billing".to_owned(),
            provider: WebhookProvider::Standard,
            // base64 of "standard-hook-key"
            secret: Some(Secret::new("whsec_c3RhbmRhcmQtaG9vay1rZXk=")),
            secret_file: None,
            event: Some("billing".to_owned()),
            max_age: Duration::from_secs(300),
        },
    ];
    config
}

fn github_signature(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"github-hook-secret").unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_hook(server: &TestServer, stream: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, Value) {
    let mut request = server
        .http
        .post(server.url(&format!("/webhooks/{stream}")))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn gitlab_hooks_publish_the_json_body_with_the_right_token_only() {
    let server = TestServer::start(hooks_config()).await;
    let mut stream = server.subscribe(&["ci.gitlab"], None).await;
    let body = r#"{"object_kind": "pipeline", "status": "success"}"#;
    let (status, reply) = post_hook(&server, "ci.gitlab", &[("X-Gitlab-Token", "wrong")], body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply["error"], "bad_signature");
    let (status, _) = post_hook(&server, "ci.gitlab", &[], body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = post_hook(
        &server,
        "ci.gitlab",
        &[
            ("X-Gitlab-Token", "gitlab-hook-secret"),
            ("X-Gitlab-Event", "Pipeline Hook"),
        ],
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    // The first event on the stream is the accepted one: the rejected ones published nothing.
    let event = stream.next_event().await;
    assert_eq!(event.id.as_deref(), reply["id"].as_str());
    assert_eq!(event.event, "Pipeline Hook");
    assert_eq!(event.data, r#"{"object_kind":"pipeline","status":"success"}"#);
}

#[tokio::test]
async fn github_hooks_need_a_valid_hmac_of_the_exact_body() {
    let server = TestServer::start(hooks_config()).await;
    let mut stream = server.subscribe(&["ci.github"], None).await;
    let body = r#"{"action":"completed","workflow_run":{"conclusion":"success"}}"#;
    let tampered = r#"{"action":"completed","workflow_run":{"conclusion":"failure"}}"#;
    let signature = github_signature(body);
    let (status, _) = post_hook(&server, "ci.github", &[("X-Hub-Signature-256", &signature)], tampered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, reply) = post_hook(&server, "ci.github", &[("X-Hub-Signature-256", &signature)], body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let event = stream.next_event().await;
    assert_eq!(event.id.as_deref(), reply["id"].as_str());
    assert_eq!(event.event, "github");
    assert_eq!(event.data, body);
}

#[tokio::test]
async fn unknown_hooks_answer_exactly_as_a_wrong_secret_does() {
    let server = TestServer::start(hooks_config()).await;
    let wrong_signature = format!("sha256={}", "00".repeat(32));
    for (headers, reason) in [
        (vec![("X-Gitlab-Token", "gitlab-hook-secret")], "bad_signature"),
        (vec![("X-Gitlab-Token", "guess")], "bad_signature"),
        (vec![("X-Hub-Signature-256", wrong_signature.as_str())], "bad_signature"),
        (vec![], "missing_token"),
    ] {
        let known = if headers.first().is_some_and(|(n, _)| n.starts_with("X-Hub")) {
            "ci.github"
        } else {
            "billing"
        };
        let on_known = post_hook(&server, known, &headers, "{}").await;
        let on_unknown = post_hook(&server, "ci.other", &headers, "{}").await;
        assert_eq!(on_known.0, StatusCode::UNAUTHORIZED);
        assert_eq!(on_known, on_unknown, "{headers:?}");
        assert_eq!(on_unknown.1["error"], reason);
    }
}

#[tokio::test]
async fn non_json_bodies_and_bad_names_are_refused() {
    let server = TestServer::start(hooks_config()).await;
    let (status, _) = post_hook(&server, "bad name", &[], "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post_hook(
        &server,
        "ci.gitlab",
        &[("X-Gitlab-Token", "gitlab-hook-secret")],
        "not json",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_replayed_github_delivery_answers_its_first_reply_and_publishes_once() {
    let server = TestServer::start(hooks_config()).await;
    let mut stream = server.subscribe(&["ci.github"], None).await;
    let body = r#"{"action":"completed","run":1}"#;
    let signature = github_signature(body);
    let headers = [
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Delivery", "d-1"),
    ];
    let first = post_hook(&server, "ci.github", &headers, body).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    // A later copy of the same signed delivery, even with another delivery id.
    let replayed = [
        ("X-Hub-Signature-256", signature.as_str()),
        ("X-GitHub-Delivery", "d-2"),
    ];
    let again = post_hook(&server, "ci.github", &replayed, body).await;
    assert_eq!(again, first, "the original reply, same id");
    let other = r#"{"action":"completed","run":2}"#;
    let next = post_hook(
        &server,
        "ci.github",
        &[("X-Hub-Signature-256", &github_signature(other))],
        other,
    )
    .await;
    assert_eq!(next.0, StatusCode::OK);
    // Subscribers saw the first delivery once, then the next one.
    assert_eq!(stream.next_event().await.id.as_deref(), first.1["id"].as_str());
    assert_eq!(stream.next_event().await.id.as_deref(), next.1["id"].as_str());
}

fn standard_headers(id: &str, timestamp: u64, body: &str) -> Vec<(&'static str, String)> {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"standard-hook-key").unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", format!("v1,{signature}")),
    ]
}

#[tokio::test]
async fn standard_webhooks_refuse_stale_deliveries_and_replay_by_id() {
    let server = TestServer::start(hooks_config()).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let body = r#"{"invoice":"in_1"}"#;
    let fresh = standard_headers("msg_1", now, body);
    let fresh: Vec<(&str, &str)> = fresh.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let first = post_hook(&server, "billing", &fresh, body).await;
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(post_hook(&server, "billing", &fresh, body).await, first);
    // The same delivery signed long ago is refused, whatever its id.
    let stale = standard_headers("msg_2", now - 3600, body);
    let stale: Vec<(&str, &str)> = stale.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (status, reply) = post_hook(&server, "billing", &stale, body).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply["error"], "stale_delivery");
}

/// Sends a request head announcing a body of `length` bytes, and no body.
async fn stalled_upload(server: &TestServer, path: &str, headers: &[(&str, &str)], length: usize) -> TcpStream {
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {length}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

async fn response_status(socket: &mut TcpStream) -> String {
    read_head(socket).await.lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn a_wrong_gitlab_token_is_refused_before_the_body_is_read() {
    let server = TestServer::start(hooks_config()).await;
    let mut socket = stalled_upload(&server, "/webhooks/ci.gitlab", &[("X-Gitlab-Token", "wrong")], 1 << 20).await;
    assert!(response_status(&mut socket).await.starts_with("HTTP/1.1 401"));
    let mut socket = stalled_upload(&server, "/webhooks/ci.nope", &[("X-Gitlab-Token", "wrong")], 1 << 20).await;
    assert!(response_status(&mut socket).await.starts_with("HTTP/1.1 401"));
}

#[tokio::test]
async fn unverified_bodies_being_received_are_bounded_across_requests() {
    let mut config = hooks_config();
    config.limits.max_body_bytes = 1000;
    config.limits.max_unverified_body_bytes_in_flight = 3000;
    let server = TestServer::start(config).await;
    let signature = [("X-Hub-Signature-256", "sha256=00")];
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(stalled_upload(&server, "/webhooks/ci.github", &signature, 1000).await);
    }
    // The three stalled uploads hold the whole budget; wait until they do.
    let mut refused = None;
    within("the budget to be used up", async {
        loop {
            let mut socket = stalled_upload(&server, "/webhooks/ci.github", &signature, 1000).await;
            let status = response_status(&mut socket).await;
            if status.starts_with("HTTP/1.1 503") {
                refused = Some(status);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_some());
    // Publishers have their own budget: they are not crowded out.
    server
        .publish("ci.other", None, serde_json::json!("still publishing"))
        .await;
    // Oversized declarations are refused before any byte of the body.
    let mut big = stalled_upload(&server, "/webhooks/ci.github", &signature, 1001).await;
    assert!(response_status(&mut big).await.starts_with("HTTP/1.1 413"));
    drop(stalled);
    within("the budget to come back", async {
        loop {
            let (status, _) = post_hook(&server, "ci.github", &signature, "{}").await;
            if status == StatusCode::UNAUTHORIZED {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
