//! Ids, replay after `Last-Event-ID` / `?last_event_id=`, the seam, and gap notices.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Item, SseEvent, SseStream, TestServer, test_config, within};

fn gap_streams(event: &SseEvent) -> Vec<String> {
    assert_eq!(event.event, "gap", "expected a gap notice, got {event:?}");
    assert!(event.id.is_some(), "gap notices keep the client's resume point");
    let data: Value = serde_json::from_str(&event.data).expect("gap data is JSON");
    let mut streams: Vec<String> = data["streams"]
        .as_array()
        .expect("gap data names streams")
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    streams.sort();
    streams
}

async fn publish_n(server: &TestServer, stream: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(server.publish(stream, None, json!(format!("{stream}-{i}"))).await);
    }
    ids
}

fn ids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().expect("event id")).collect()
}

#[tokio::test]
async fn reconnecting_with_last_event_id_gets_exactly_what_was_missed() {
    let server = TestServer::start_default().await;
    let mut first = server.subscribe(&["a"], None).await;
    let published = publish_n(&server, "a", 5).await;
    let seen = first.events(2).await;
    drop(first);
    let mut resumed = server.subscribe(&["a"], seen[1].id.as_deref()).await;
    assert_eq!(ids(&resumed.events(3).await), published[2..]);
    let live = server.publish("a", None, json!("live")).await;
    assert_eq!(resumed.next_event().await.id, Some(live));
}

#[tokio::test]
async fn last_event_id_query_parameter_resumes_a_first_connection() {
    let server = TestServer::start_default().await;
    let published = publish_n(&server, "a", 3).await;
    let url = format!("{}&last_event_id={}", server.events_url(&["a"]), published[0]);
    let mut stream = server.open_url(&url, None).await;
    assert_eq!(ids(&stream.events(2).await), published[1..]);
}

#[tokio::test]
async fn the_header_wins_over_the_query_parameter() {
    let server = TestServer::start_default().await;
    let published = publish_n(&server, "a", 3).await;
    let url = format!("{}&last_event_id={}", server.events_url(&["a"]), published[0]);
    let mut stream = server.open_url(&url, Some(&published[1])).await;
    assert_eq!(stream.next_event().await.id.as_deref(), Some(published[2].as_str()));
}

#[tokio::test]
async fn one_id_resumes_every_stream_of_a_connection_in_id_order() {
    let server = TestServer::start_default().await;
    let mut all = Vec::new();
    for i in 0..6 {
        let stream = ["a", "b", "c"][i % 3];
        all.push(server.publish(stream, None, json!(i)).await);
    }
    let mut resumed = server.subscribe(&["a", "b"], Some(&all[0])).await;
    // Events 1..6 on a or b: indexes 1 (b), 3 (a), 4 (b); 2 and 5 are on c.
    let expected = vec![all[1].clone(), all[3].clone(), all[4].clone()];
    assert_eq!(ids(&resumed.events(3).await), expected);
}

#[tokio::test]
async fn resuming_from_the_latest_id_replays_nothing_and_sends_no_gap() {
    let server = TestServer::start_default().await;
    let published = publish_n(&server, "a", 2).await;
    let mut resumed = server.subscribe(&["a", "never-published"], Some(&published[1])).await;
    let next = server.publish("a", None, json!("next")).await;
    let event = resumed.next_event().await;
    assert_eq!(event.id, Some(next), "no gap and no replay before the live event");
}

#[tokio::test]
async fn no_event_is_lost_or_duplicated_at_the_replay_live_seam() {
    let server = std::sync::Arc::new(TestServer::start_default().await);
    let first = server.publish("seam", None, json!("start")).await;
    let publisher = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..300 {
                ids.push(server.publish("seam", None, json!(i)).await);
            }
            ids
        })
    };
    // Subscribe while the publisher is running.
    let mut resumed = server.subscribe(&["seam"], Some(&first)).await;
    let published = within("publisher", publisher).await.unwrap();
    let received = ids(&resumed.events(published.len()).await);
    assert_eq!(received, published);
}

#[tokio::test]
async fn evicted_history_earns_a_gap_notice_naming_only_affected_streams() {
    let mut config = test_config();
    config.streams.buffer_size = 3;
    let server = TestServer::start(config).await;
    let published_a = publish_n(&server, "a", 6).await;
    let published_b = publish_n(&server, "b", 1).await;
    let mut resumed = server.subscribe(&["a", "b"], Some(&published_a[0])).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap_streams(&gap), ["a"]);
    assert_eq!(
        gap.id.as_deref(),
        Some(published_a[0].as_str()),
        "the id the client resumed from"
    );
    let mut expected = published_a[3..].to_vec();
    expected.extend(published_b);
    assert_eq!(ids(&resumed.events(4).await), expected);
}

#[tokio::test]
async fn expired_history_earns_a_gap_notice() {
    let mut config = test_config();
    config.streams.buffer_ttl = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let published = publish_n(&server, "a", 2).await;
    // Resume until the second event has aged out (bounded by `within`).
    within("events to expire", async {
        loop {
            let mut stream = server.subscribe(&["a"], Some(&published[0])).await;
            let event = stream.next_event_or_heartbeat().await;
            if event.as_ref().is_some_and(|e| e.event == "gap") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_id_from_before_a_restart_earns_a_gap_notice() {
    let before = TestServer::start_default().await;
    let id = before.publish("a", None, json!("old")).await;
    before.stop().await.unwrap();
    let after = TestServer::start_default().await;
    let mut resumed = after.subscribe(&["a", "b"], Some(&id)).await;
    assert_eq!(gap_streams(&resumed.next_event().await), ["a", "b"]);
    let new_id = after.publish("a", None, json!("new")).await;
    assert!(
        new_id.parse::<u64>().unwrap() > id.parse::<u64>().unwrap(),
        "ids are not reused"
    );
    assert_eq!(resumed.next_event().await.id, Some(new_id));
}

#[tokio::test]
async fn an_unrecognised_id_earns_a_gap_notice_then_all_history() {
    let server = TestServer::start_default().await;
    let published = publish_n(&server, "a", 2).await;
    for bad in ["not-a-number", "99999999999999999999", "18446744073709551615"] {
        let mut resumed = server.subscribe(&["a"], Some(bad)).await;
        assert_eq!(gap_streams(&resumed.next_event().await), ["a"], "{bad}");
        assert_eq!(ids(&resumed.events(2).await), published, "{bad}");
    }
}

impl SseStream {
    /// The next event, or `None` if the first item after the preamble is a heartbeat
    /// or the stream is idle for a second.
    async fn next_event_or_heartbeat(&mut self) -> Option<SseEvent> {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), self.next_item()).await {
                Ok(Some(Item::Event(event))) => return Some(event),
                Ok(Some(Item::Comment(text))) if text == "heartbeat" => return None,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}
