//! The delivery guarantee under load: order, fan-out, slow consumers.

use std::sync::Arc;

use serde_json::json;

use crate::support::{SseEvent, TestServer, test_config, within};

fn numeric_ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id.as_ref().unwrap().parse().unwrap()).collect()
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
                    server.publish(&stream, None, json!(format!("{stream}:{i}"))).await;
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
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids arrive in increasing order");
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
    config.limits.max_connections = 2;
    let server = TestServer::start(config).await;
    let start = server.publish("firehose", None, json!("start")).await;
    // The slow client never polls its body, so the socket and then its queue fill up.
    let mut slow = server.subscribe(&["firehose"], None).await;
    let mut fast = server.subscribe(&["firehose"], None).await;
    let payload = "x".repeat(64 * 1024);
    let token = server.token(&["*"], &[]);
    let mut published = Vec::new();
    // Lock-step with the fast subscriber so only the slow one can fall behind. The
    // node holds two connections at most: a third is accepted once the slow one is
    // cut off (a per-test signal; the metrics are shared by every test).
    loop {
        assert!(published.len() < 4000, "the slow subscriber was never disconnected");
        for _ in 0..10 {
            let id = server.publish("firehose", None, json!(payload)).await;
            assert_eq!(fast.next_event().await.id.as_deref(), Some(id.as_str()));
            published.push(id);
        }
        let probe = server.get_events(&["probe"], &token).await;
        if probe.status() == reqwest::StatusCode::OK {
            break;
        }
    }
    let tail = server.publish("firehose", None, json!("after")).await;
    assert_eq!(fast.next_event().await.id.as_deref(), Some(tail.as_str()));
    published.push(tail);

    // The slow stream ends after what was written before the overflow.
    let received = within("slow stream end", slow.until_end()).await;
    assert!(received.len() < published.len());
    let received_ids: Vec<String> = received.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(received_ids, published[..received.len()], "in order, nothing skipped");
    // Resuming from its last id delivers the rest, with no gap notice.
    let last = received_ids.last().unwrap_or(&start);
    // Retry while the probe's slot is being released (the node holds two connections).
    let mut resumed = within("a free slot to resume", async {
        loop {
            let response = server
                .http
                .get(server.events_url(&["firehose"]))
                .bearer_auth(&token)
                .header("Last-Event-ID", last.as_str())
                .send()
                .await
                .unwrap();
            if response.status() == reqwest::StatusCode::OK {
                return crate::support::SseStream::new(response);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let rest = resumed.events(published.len() - received.len()).await;
    assert!(rest.iter().all(|e| e.event == "message"));
    let rest_ids: Vec<String> = rest.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(rest_ids, published[received.len()..]);
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_frees_its_slot() {
    use tokio::io::AsyncWriteExt;
    let mut config = test_config();
    config.limits.subscriber_queue = 4;
    config.limits.max_connections = 2;
    config.limits.max_event_bytes = 128 * 1024;
    config.limits.max_body_bytes = 256 * 1024;
    let server = TestServer::start(config).await;
    // A raw client that sends its request and then never reads a byte.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /events?stream=s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token(&["*"], &[])
    );
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut reader = server.subscribe(&["s"], None).await;
    let payload = "x".repeat(64 * 1024);
    let token = server.token(&["*"], &[]);
    let mut published = 0;
    // Until the stalled client's slot is free again, the node is full (503).
    loop {
        assert!(published < 4000, "the stalled client was never cut off");
        for _ in 0..10 {
            let id = server.publish("s", None, json!(payload)).await;
            assert_eq!(reader.next_event().await.id, Some(id));
            published += 1;
        }
        let probe = server.get_events(&["s"], &token).await;
        if probe.status() == reqwest::StatusCode::OK {
            break;
        }
        assert_eq!(probe.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    }
    drop(stalled);
}
