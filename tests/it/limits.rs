//! Limits on the number of streams, and stream reclamation.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, test_config, within};

#[tokio::test]
async fn subscribing_beyond_the_stream_limit_is_refused_until_streams_are_reclaimed() {
    let mut config = test_config();
    config.limits.max_streams = 2;
    let server = TestServer::start(config).await;
    let token = server.token(&["*"], &[]);
    let held = server.subscribe(&["a", "b"], None).await;
    let refused = server.get_events(&["c"], &token).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "stream_limit");
    drop(held);
    // Streams without subscribers or history are reclaimed as soon as the server
    // notices the client left.
    within("reclaim", async {
        loop {
            let response = server.get_events(&["c"], &token).await;
            if response.status() == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn publishing_beyond_the_stream_limit_answers_503_until_history_expires() {
    let mut config = test_config();
    config.limits.max_streams = 2;
    config.streams.buffer_ttl = Duration::from_millis(200);
    config.streams.sweep_interval = Duration::from_millis(50);
    let server = TestServer::start(config).await;
    server.publish("a", None, json!(1)).await;
    server.publish("b", None, json!(2)).await;
    let (status, body) = server.post_json(&json!({"stream":"c","data":3})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "stream_limit");
    // Existing streams still take events.
    server.publish("a", None, json!(4)).await;
    within("history to expire", async {
        while server.post_json(&json!({"stream":"c","data":5})).await.0 != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
