//! The delivery guarantee under load: order, fan-out, slow consumers.

use std::sync::Arc;

use serde_json::json;

use crate::support::{SseEvent, TestServer, test_config, within};

fn numeric_ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn concurrent_publishers_reach_every_subscriber_in_id_order() {
    let server = Arc::new(TestServer::start_default().await);
    let streams = ["p0", "p1", "p2", "p3"];
    let mut subscribers = Vec::new();
    for _ in 0..10 {
        subscribers.push(server.subscribe(&streams, None).await);
    }
    let publishers: Vec<_> = streams
        .iter()
        .map(|stream| {
            let server = server.clone();
            let stream = (*stream).to_owned();
            tokio::spawn(async move {
                for i in 0..50 {
                    server
                        .publish(&stream, None, json!(format!("{stream}:{i}")))
                        .await;
                }
            })
        })
        .collect();
    for publisher in publishers {
        within("publisher", publisher).await.unwrap();
    }
    for mut subscriber in subscribers {
        let events = subscriber.events(200).await;
        let ids = numeric_ids(&events);
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids arrive in increasing order"
        );
        for stream in streams {
            let sequence: Vec<u32> = events
                .iter()
                .filter_map(|e| e.data.strip_prefix(&format!("{stream}:")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                sequence,
                (0..50).collect::<Vec<_>>(),
                "{stream}: publish order, nothing lost"
            );
        }
    }
}

#[tokio::test]
async fn an_overflowing_subscriber_is_disconnected_resumes_by_id_and_others_keep_receiving() {
    let mut config = test_config();
    config.limits.subscriber_queue = 4;
    config.limits.max_event_bytes = 128 * 1024;
    config.limits.max_body_bytes = 256 * 1024;
    config.streams.buffer_size = 5000;
    let server = TestServer::start(config).await;
    let slow_before = server.metric("sse_slow_consumer_disconnects_total").await;
    let start = server.publish("firehose", None, json!("start")).await;
    // The slow client never polls its body, so the socket and then its queue fill up.
    let mut slow = server.subscribe(&["firehose"], None).await;
    let mut fast = server.subscribe(&["firehose"], None).await;
    let payload = "x".repeat(64 * 1024);
    let mut published = Vec::new();
    // Lock-step with the fast subscriber so only the slow one can fall behind.
    while server.metric("sse_slow_consumer_disconnects_total").await <= slow_before {
        assert!(
            published.len() < 4000,
            "the slow subscriber was never disconnected"
        );
        for _ in 0..10 {
            let id = server.publish("firehose", None, json!(payload)).await;
            assert_eq!(fast.next_event().await.id.as_deref(), Some(id.as_str()));
            published.push(id);
        }
    }
    let tail = server.publish("firehose", None, json!("after")).await;
    assert_eq!(fast.next_event().await.id.as_deref(), Some(tail.as_str()));
    published.push(tail);

    // The slow stream ends after what was written before the overflow.
    let received = within("slow stream end", slow.until_end()).await;
    assert!(received.len() < published.len());
    let received_ids: Vec<String> = received.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(
        received_ids,
        published[..received.len()],
        "in order, nothing skipped"
    );
    // Resuming from its last id delivers the rest, with no gap notice.
    let last = received_ids.last().unwrap_or(&start);
    let mut resumed = server.subscribe(&["firehose"], Some(last)).await;
    let rest = resumed.events(published.len() - received.len()).await;
    assert!(rest.iter().all(|e| e.event == "message"));
    let rest_ids: Vec<String> = rest.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(rest_ids, published[received.len()..]);
}
