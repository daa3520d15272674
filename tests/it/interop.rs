//! Interoperability with an SSE client nobody here wrote: `eventsource-client`.

use eventsource_client::{Client, ClientBuilder, SSE};
use futures::StreamExt;
use launchdarkly_sdk_transport::HyperTransport;
use serde_json::json;

use crate::support::{TestServer, within};

#[tokio::test]
async fn a_third_party_sse_client_receives_ids_types_and_data() {
    let server = TestServer::start_default().await;
    let client = ClientBuilder::for_url(&server.events_url(&["interop", "other"]))
        .unwrap()
        .header("Authorization", &format!("Bearer {}", server.token(&["*"], &[])))
        .unwrap()
        .build_with_transport(HyperTransport::builder().build_http().unwrap());
    let mut events = client.stream();
    // Wait until the stream is open (its first comment) before publishing.
    match within("client connect", events.next()).await {
        Some(Ok(SSE::Comment(_) | SSE::Connected(_))) => {}
        other => panic!("expected the stream to open, got {other:?}"),
    }
    let first = server.publish("interop", Some("greeting"), json!("hello\nworld")).await;
    let second = server.publish("other", None, json!({"n": 2})).await;
    let mut received = Vec::new();
    while received.len() < 2 {
        match within("client events", events.next()).await {
            Some(Ok(SSE::Event(event))) => received.push(event),
            Some(Ok(_)) => {}
            other => panic!("client failed: {other:?}"),
        }
    }
    assert_eq!(received[0].id.as_deref(), Some(first.as_str()));
    assert_eq!(received[0].event_type, "greeting");
    assert_eq!(received[0].data, "hello\nworld");
    assert_eq!(received[1].id.as_deref(), Some(second.as_str()));
    assert_eq!(received[1].event_type, "message");
    assert_eq!(received[1].data, r#"{"n":2}"#);
}
