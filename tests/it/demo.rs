//! The demo page and the sample publisher over HTTP (browser tests live in `browser`).

use reqwest::StatusCode;

use crate::support::{TestServer, test_config};

#[tokio::test]
async fn the_demo_page_is_served_with_a_subscribe_only_demo_token() {
    let server = TestServer::start_default().await;
    let response = server.http.get(server.url("/demo")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("/*SSE_DEMO_CONFIG*/null"),
        "the config placeholder is replaced"
    );
    let token = page
        .split("\"token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a token");
    let demo = server.get_events(&["demo.*"], token).await;
    assert_eq!(demo.status(), StatusCode::OK);
    assert_eq!(server.get_events(&["demo.ci"], token).await.status(), StatusCode::OK);
    assert_eq!(server.get_events(&["*"], token).await.status(), StatusCode::FORBIDDEN);
    let other = server.get_events(&["orders"], token).await;
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    let publish = server
        .http
        .post(server.url("/events"))
        .bearer_auth(token)
        .json(&serde_json::json!({"stream":"demo.ci","data":"x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_demo_can_be_turned_off() {
    let mut config = test_config();
    config.demo.enabled = false;
    let server = TestServer::start(config).await;
    let response = server.http.get(server.url("/demo")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_demo_publisher_emits_health_and_pipeline_events() {
    let mut config = test_config();
    config.demo.publisher = true;
    config.demo.publish_interval = std::time::Duration::from_millis(20);
    let server = TestServer::start(config).await;
    let url = format!("{}&envelope=1", server.events_url(&["demo.*"]));
    let mut stream = server.open_url(&url, None).await;
    let events = stream.events(6).await;
    assert!(events.iter().any(|e| e.event == "health"));
    assert!(events.iter().any(|e| e.event == "pipeline"));
    for event in events {
        let envelope: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        let expected = if event.event == "health" {
            "demo.servers"
        } else {
            "demo.ci"
        };
        assert_eq!(envelope["stream"], expected);
        assert_eq!(envelope["event"], event.event.as_str());
        assert!(envelope["data"].is_object(), "the sample as published: {envelope}");
        assert!(
            envelope["data"].get("stream").is_none(),
            "no stream name repeated in the data"
        );
    }
}

#[tokio::test]
async fn the_shared_demo_token_holds_few_connections_and_only_the_demo_streams() {
    let mut config = test_config();
    config.demo.max_connections = 3;
    let server = TestServer::start(config).await;
    let page = server
        .http
        .get(server.url("/demo"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("\"token\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a token")
        .to_owned();
    // Only demo streams, and few of them across every visitor: the pattern the
    // page uses and the demo's own names.
    assert_eq!(
        server.get_events(&["orders"], &token).await.status(),
        StatusCode::FORBIDDEN
    );
    let _one = server.get_events(&["demo.*"], &token).await;
    let _two = server.get_events(&["demo.ci", "demo.servers"], &token).await;
    let (status, body) = {
        let response = server.get_events(&["demo.attacker-made"], &token).await;
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("subject_stream_limit"), "{body}");
    let _three = server.get_events(&["demo.ci"], &token).await;
    let fourth = server.get_events(&["demo.ci"], &token).await;
    assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS, "demo.max_connections");
    // Everyone else is unaffected.
    assert_eq!(
        server
            .get_events(&["demo.ci"], server.token(&["*"], &[]))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_demo_publishers_events_are_counted_as_published() {
    let mut config = test_config();
    config.demo.publisher = true;
    config.demo.publish_interval = std::time::Duration::from_millis(20);
    let server = TestServer::start(config).await;
    let mut stream = server.subscribe(&["demo.servers", "demo.ci"], None).await;
    let series = "sse_events_published_total{source=\"demo\"}";
    let before = server.metric(series).await;
    stream.events(3).await;
    // Counted through the node's publish path (just after delivery).
    crate::support::within("the demo events to be counted", async {
        while server.metric(series).await < before + 3.0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
