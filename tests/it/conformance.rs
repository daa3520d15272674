//! One suite, both backends: the delivery contract must not depend on which backend
//! runs. Each scenario runs once on the memory backend and once on a real Redis.

use std::sync::Arc;

use serde_json::json;
use sse_gateway::config::Config;

use crate::redis::{node, redis_config};
use crate::support::redis::RedisServer;
use crate::support::{SseEvent, TestServer, test_config, within};

/// Runs `scenario` with a node of each backend, configured by `adjust`.
macro_rules! on_both_backends {
    ($name:ident, $adjust:expr, $scenario:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let mut config = test_config();
                ($adjust)(&mut config);
                ($scenario)(Arc::new(TestServer::start(config).await)).await;
            }

            #[tokio::test]
            async fn redis() {
                let redis = RedisServer::start().await;
                let mut config = redis_config(&redis.url());
                ($adjust)(&mut config);
                ($scenario)(Arc::new(node(config).await)).await;
            }
        }
    };
}

fn ids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().expect("event id")).collect()
}

fn defaults(_: &mut Config) {}

on_both_backends!(
    resume_replays_missed_events_of_all_streams_in_id_order,
    defaults,
    |server: Arc<TestServer>| async move {
        let mut all = Vec::new();
        for i in 0..9 {
            all.push(server.publish(["a", "b", "c"][i % 3], None, json!(i)).await);
        }
        let mut resumed = server.subscribe(&["a", "c"], Some(&all[1])).await;
        let expected: Vec<String> = [2, 3, 5, 6, 8].iter().map(|&i| all[i].clone()).collect();
        assert_eq!(ids(&resumed.events(5).await), expected);
    }
);

on_both_backends!(
    the_replay_live_seam_loses_and_duplicates_nothing,
    defaults,
    |server: Arc<TestServer>| async move {
        let first = server.publish("seam", None, json!("start")).await;
        let publisher = {
            let server = server.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..200 {
                    ids.push(server.publish("seam", None, json!(i)).await);
                }
                ids
            })
        };
        let mut resumed = server.subscribe(&["seam"], Some(&first)).await;
        let published = within("publisher", publisher).await.unwrap();
        assert_eq!(ids(&resumed.events(published.len()).await), published);
    }
);

fn small_buffer(config: &mut Config) {
    config.streams.buffer_size = 3;
}

on_both_backends!(evicted_history_earns_a_gap_notice, small_buffer, |server: Arc<
    TestServer,
>| async move {
    let mut published = Vec::new();
    for i in 0..6 {
        published.push(server.publish("g", None, json!(i)).await);
    }
    let mut resumed = server.subscribe(&["g"], Some(&published[0])).await;
    assert_eq!(resumed.next_event().await.event, "gap");
    assert_eq!(ids(&resumed.events(3).await), published[3..]);
    let mut exact = server.subscribe(&["g"], Some(&published[2])).await;
    assert_eq!(ids(&exact.events(3).await), published[3..], "no gap at the boundary");
});

on_both_backends!(
    concurrent_publishers_reach_subscribers_in_id_order,
    defaults,
    |server: Arc<TestServer>| async move {
        let streams = ["p0", "p1", "p2"];
        let mut subscriber = server.subscribe(&streams, None).await;
        let publishers: Vec<_> = streams
            .iter()
            .map(|stream| {
                let (server, stream) = (server.clone(), (*stream).to_owned());
                tokio::spawn(async move {
                    for i in 0..40 {
                        server.publish(&stream, None, json!(format!("{stream}:{i}"))).await;
                    }
                })
            })
            .collect();
        for publisher in publishers {
            within("publisher", publisher).await.unwrap();
        }
        let events = subscriber.events(120).await;
        let numeric: Vec<u64> = ids(&events).iter().map(|id| id.parse().unwrap()).collect();
        assert!(numeric.windows(2).all(|w| w[0] < w[1]), "global id order");
        for stream in streams {
            let sequence: Vec<u32> = events
                .iter()
                .filter_map(|e| e.data.strip_prefix(&format!("{stream}:")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(sequence, (0..40).collect::<Vec<_>>());
        }
    }
);

on_both_backends!(
    an_invalid_batch_stores_nothing,
    defaults,
    |server: Arc<TestServer>| async move {
        let mut subscriber = server.subscribe(&["batch"], None).await;
        let (status, _) = server
            .post_json(&json!([{"stream":"batch","data":1},{"stream":"bad name","data":2}]))
            .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
        let marker = server.publish("batch", None, json!("marker")).await;
        assert_eq!(subscriber.next_event().await.id, Some(marker));
    }
);

on_both_backends!(
    an_unusable_resume_id_gets_a_gap_notice_with_an_empty_id_then_everything_held,
    defaults,
    |server: Arc<TestServer>| async move {
        let mut published = Vec::new();
        for i in 0..3 {
            published.push(server.publish("u", None, json!(i)).await);
        }
        // Above every id issued, beyond u64, and not a number at all.
        for resume in ["18446744073709551615", "99999999999999999999999", "abc"] {
            let mut resumed = server.subscribe(&["u"], Some(resume)).await;
            let gap = resumed.next_event().await;
            assert_eq!(gap.event, "gap", "{resume}");
            assert_eq!(gap.id.as_deref(), Some(""), "`nothing received`, not {resume}");
            assert_eq!(ids(&resumed.events(3).await), published, "{resume}");
        }
    }
);
