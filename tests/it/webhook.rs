//! `POST /webhooks/{stream}`: GitLab tokens, GitHub HMAC signatures, nothing
//! published on a wrong secret.

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;
use sse_gateway::config::{Config, Secret, WebhookConfig, WebhookProvider};

use crate::support::{TestServer, test_config};

fn hooks_config() -> Config {
    let mut config = test_config();
    config.webhooks.hooks = vec![
        WebhookConfig {
            stream: "ci.gitlab".to_owned(),
            provider: WebhookProvider::Gitlab,
            secret: Some(Secret::new("gitlab-hook-secret")),
            secret_file: None,
            event: None,
        },
        WebhookConfig {
            stream: "ci.github".to_owned(),
            provider: WebhookProvider::Github,
            secret: Some(Secret::new("github-hook-secret")),
            secret_file: None,
            event: Some("github".to_owned()),
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
async fn unknown_hooks_and_non_json_bodies_are_refused() {
    let server = TestServer::start(hooks_config()).await;
    let (status, _) = post_hook(&server, "ci.other", &[("X-Gitlab-Token", "gitlab-hook-secret")], "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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
