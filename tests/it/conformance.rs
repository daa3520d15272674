//! The backend conformance suite: every contract scenario of DESIGN.md's "Event ids
//! and replay" and "Delivery guarantee", run through the node's one publish path and
//! one subscribe path (no HTTP) over every backend. A new backend joins with one
//! line at the bottom: `conformance!(name, Deployment::…)`.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use serde_json::Value;
use sse_gateway::config::Config;
use sse_gateway::event::{DataKind, EventType, NewEvent};
use sse_gateway::node::PublishError;
use sse_gateway::stream::StreamName;

use crate::support::node::{
    Deployment, Options, position, publish, publish_events, subscribe, subscribe_with, try_publish,
};
use crate::support::{SseEvent, within};

fn ids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().expect("event id")).collect()
}

fn numeric(ids: &[String]) -> Vec<u64> {
    ids.iter().map(|id| id.parse().expect("a decimal id")).collect()
}

fn defaults(_: &mut Config) {}

fn small_buffer(config: &mut Config) {
    config.streams.buffer_size = 3;
}

/// Ids are unique and strictly increasing across streams, in request order.
async fn ids_increase_across_streams_and_batches(deployment: Deployment) {
    let node = deployment.node().await;
    let mut all = Vec::new();
    for round in 0..5 {
        let batch = try_publish(&node, &[("i.a", "1"), ("i.b", "2"), ("i.a", "3")])
            .await
            .unwrap();
        all.extend(batch.iter().map(|id| id.as_u64()));
        all.push(publish(&node, "i.c", &round.to_string()).await.parse().unwrap());
    }
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
}

/// A batch is stored all or nothing: one refused event stores none.
async fn a_refused_batch_stores_nothing(deployment: Deployment) {
    let node = deployment.node().await;
    let mut subscriber = subscribe(&node, &["batch"], None).await;
    let too_big = "x".repeat(deployment.config.limits.max_event_bytes + 1);
    let refused = try_publish(&node, &[("batch", "fine"), ("batch", &too_big)]).await;
    assert!(
        matches!(refused, Err(PublishError::EventTooLarge { .. })),
        "{refused:?}"
    );
    let marker = publish(&node, "batch", "marker").await;
    assert_eq!(subscriber.next_event().await.id, Some(marker));
}

/// One id resumes every stream of a connection, in id order.
async fn resume_replays_missed_events_of_all_streams_in_id_order(deployment: Deployment) {
    let node = deployment.node().await;
    let mut all = Vec::new();
    for i in 0..9 {
        all.push(publish(&node, ["a", "b", "c"][i % 3], &i.to_string()).await);
    }
    let mut resumed = subscribe(&node, &["a", "c"], Some(&all[1])).await;
    let expected: Vec<String> = [2, 3, 5, 6, 8].iter().map(|&i| all[i].clone()).collect();
    let events = resumed.events(5).await;
    assert!(events.iter().all(|e| e.event == "message"), "no gap notice");
    assert_eq!(ids(&events), expected);
}

/// Publishing while a client resumes: every event exactly once, in order.
async fn the_replay_live_seam_loses_and_duplicates_nothing(deployment: Deployment) {
    let node = deployment.node().await;
    let first = publish(&node, "seam", "start").await;
    let publisher = {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..200 {
                ids.push(publish(&node, "seam", &i.to_string()).await);
            }
            ids
        })
    };
    let mut resumed = subscribe(&node, &["seam"], Some(&first)).await;
    let published = within("publisher", publisher).await.unwrap();
    assert_eq!(ids(&resumed.events(published.len()).await), published);
}

/// Concurrent publishers on several streams reach a subscriber in global id order.
async fn concurrent_publishers_reach_subscribers_in_id_order(deployment: Deployment) {
    let node = deployment.node().await;
    let streams = ["p0", "p1", "p2"];
    let mut subscriber = subscribe(&node, &streams, None).await;
    let publishers = streams.iter().map(|stream| {
        let node = Arc::clone(&node);
        async move {
            for i in 0..40 {
                publish(&node, stream, &format!("{stream}:{i}")).await;
            }
        }
    });
    join_all(publishers).await;
    let events = subscriber.events(120).await;
    let numeric = numeric(&ids(&events));
    assert!(numeric.windows(2).all(|w| w[0] < w[1]), "global id order");
    for stream in streams {
        let sequence: Vec<u32> = events
            .iter()
            .filter_map(|e| e.data.strip_prefix(&format!("{stream}:")))
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(sequence, (0..40).collect::<Vec<_>>(), "publish order of {stream}");
    }
}

/// Evicted history earns a gap notice naming the stream, then what is held; at the
/// eviction boundary the replay is still provably complete.
async fn evicted_history_earns_a_gap_notice(deployment: Deployment) {
    let node = deployment.node().await;
    let mut published = Vec::new();
    for i in 0..6 {
        published.push(publish(&node, "g", &i.to_string()).await);
    }
    let mut resumed = subscribe(&node, &["g", "quiet"], Some(&published[0])).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "gap");
    assert_eq!(gap.id.as_deref(), Some(published[0].as_str()), "the resume id");
    let data: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(data["streams"], serde_json::json!(["g"]), "only the affected stream");
    assert_eq!(ids(&resumed.events(3).await), published[3..]);
    let mut exact = subscribe(&node, &["g"], Some(&published[2])).await;
    assert_eq!(ids(&exact.events(3).await), published[3..], "no gap at the boundary");
}

/// An id that means nothing here: gap notice with an empty id, then all history.
async fn an_unusable_resume_id_gets_a_gap_notice_with_an_empty_id_then_everything_held(deployment: Deployment) {
    let node = deployment.node().await;
    let mut published = Vec::new();
    for i in 0..3 {
        published.push(publish(&node, "u", &i.to_string()).await);
    }
    // Above every id issued, beyond u64, and not a number at all.
    for resume in ["18446744073709551615", "99999999999999999999999", "abc"] {
        let mut resumed = subscribe(&node, &["u"], Some(resume)).await;
        let gap = resumed.next_event().await;
        assert_eq!(gap.event, "gap", "{resume}");
        assert_eq!(gap.id.as_deref(), Some(""), "`nothing received`, not {resume}");
        assert_eq!(ids(&resumed.events(3).await), published, "{resume}");
    }
}

/// Resuming from the newest id replays nothing and sends no gap notice; the next
/// event arrives live.
async fn resuming_from_the_newest_id_replays_nothing(deployment: Deployment) {
    let node = deployment.node().await;
    let newest = publish(&node, "n", "newest").await;
    let mut resumed = subscribe(&node, &["n", "other"], Some(&newest)).await;
    let next = publish(&node, "other", "live").await;
    let event = resumed.next_event().await;
    assert_eq!((event.event.as_str(), event.id), ("message", Some(next)));
}

/// After every node restarts: exact on a durable backend, a gap notice otherwise;
/// ids keep increasing either way.
async fn a_restart_loses_nothing_silently(deployment: Deployment) {
    let node = deployment.node().await;
    let published = [publish(&node, "r", "1").await, publish(&node, "r", "2").await];
    node.close().await;
    drop(node);
    let restarted = deployment.node().await;
    let mut resumed = subscribe(&restarted, &["r"], Some(&published[0])).await;
    let next = publish(&restarted, "r", "3").await;
    let (last_before, after) = (published[1].parse::<u64>().unwrap(), next.parse::<u64>().unwrap());
    assert!(after > last_before, "ids keep increasing: {published:?} then {next}");
    if deployment.is_durable() {
        assert_eq!(ids(&resumed.events(2).await), [published[1].clone(), next]);
    } else {
        let gap = resumed.next_event().await;
        assert_eq!(gap.event, "gap", "volatile history: announced, never silent");
        assert_eq!(resumed.next_event().await.id, Some(next));
    }
}

/// History lost by the backend is announced to resuming clients.
async fn lost_history_is_announced(deployment: Deployment) {
    let node = deployment.node().await;
    let before = publish(&node, "l", "before").await;
    publish(&node, "l", "lost").await;
    let node = deployment.lose_history(node).await;
    let mut resumed = subscribe(&node, &["l"], Some(&before)).await;
    assert_eq!(resumed.next_event().await.event, "gap");
}

fn small_history(config: &mut Config) {
    config.limits.max_event_bytes = 100;
    config.streams.max_history_bytes = 2000;
}

/// The node's total history bound evicts the deployment's oldest events first,
/// whatever their stream, and resumes across them are announced.
async fn the_node_history_bound_evicts_the_oldest_events_first(deployment: Deployment) {
    if !deployment.holds_history_in_process() {
        return;
    }
    let node = deployment.node().await;
    let first_of_a = publish(&node, "bound.a", "0123456789").await;
    let mut b = Vec::new();
    for i in 0..40 {
        b.push(publish(&node, "bound.b", &format!("{i:010}")).await);
    }
    let mut resumed = subscribe(&node, &["bound.a", "bound.b"], Some(&first_of_a)).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "gap");
    let data: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(
        data["streams"],
        serde_json::json!(["bound.b"]),
        "b lost its oldest events"
    );
    // What is still held is the newest of b, fewer than published, in order.
    let newest = b.last().unwrap().clone();
    let mut held = Vec::new();
    while held.last() != Some(&newest) {
        held.push(resumed.next_event().await.id.unwrap());
    }
    assert!(held.len() < b.len(), "{} of {} held", held.len(), b.len());
    assert_eq!(held, b[b.len() - held.len()..]);
}

/// On a shared backend a client resumes every stream on another node.
async fn a_client_resumes_on_another_node(deployment: Deployment) {
    if !deployment.is_shared() {
        return;
    }
    let (a, b) = (deployment.node().await, deployment.node().await);
    let mut all = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        all.push(publish(node, ["x", "y", "z"][i % 3], &i.to_string()).await);
    }
    let mut resumed = subscribe(&b, &["x", "y"], Some(&all[0])).await;
    assert_eq!(
        ids(&resumed.events(3).await),
        [all[1].clone(), all[3].clone(), all[4].clone()]
    );
    let live = publish(&a, "y", "live").await;
    assert_eq!(resumed.next_event().await.id, Some(live));
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "ids are unique across nodes");
}

/// A pattern subscription receives streams created after it started, and the
/// firehose receives everything; neither receives what does not match.
async fn a_pattern_receives_streams_created_after_it_subscribed(deployment: Deployment) {
    let node = deployment.node().await;
    let mut pattern = subscribe(&node, &["fresh.*"], None).await;
    let mut firehose = subscribe(&node, &["*"], None).await;
    // A name the pattern also matches, on the same node: each still gets it once.
    let mut named = subscribe(&node, &["fresh.one"], None).await;
    let other = publish(&node, "stale.x", "not for the pattern").await;
    let first = publish(&node, "fresh.one", "1").await;
    let second = publish(&node, "fresh.two.deep", "2").await;
    assert_eq!(ids(&pattern.events(2).await), [first.clone(), second.clone()]);
    assert_eq!(ids(&firehose.events(3).await), [other, first.clone(), second]);
    assert_eq!(named.next_event().await.id, Some(first));
    let last = publish(&node, "fresh.one", "3").await;
    assert_eq!(named.next_event().await.id, Some(last), "nothing twice");
}

/// A pattern resumes every matching stream after one id, in id order, with no gap
/// notice while history holds it; names and patterns mix on one connection.
async fn a_pattern_resume_replays_every_matching_stream_in_id_order(deployment: Deployment) {
    let node = deployment.node().await;
    let mut all = Vec::new();
    for i in 0..9 {
        all.push(publish(&node, ["pr.a", "pr.b", "other"][i % 3], &i.to_string()).await);
    }
    let mut resumed = subscribe(&node, &["pr.*"], Some(&all[0])).await;
    let expected: Vec<String> = [1, 3, 4, 6, 7].iter().map(|&i| all[i].clone()).collect();
    let events = resumed.events(5).await;
    assert!(events.iter().all(|e| e.event == "message"), "no gap notice: {events:?}");
    assert_eq!(ids(&events), expected);
    // A name covered by a pattern of the same connection is not delivered twice.
    let mut mixed = subscribe(&node, &["pr.a", "pr.*", "other"], Some(&all[5])).await;
    assert_eq!(ids(&mixed.events(3).await), all[6..]);
    let live = publish(&node, "pr.a", "live").await;
    assert_eq!(mixed.next_event().await.id, Some(live));
}

fn short_history(config: &mut Config) {
    config.streams.buffer_ttl = std::time::Duration::from_millis(300);
    config.streams.sweep_interval = std::time::Duration::from_millis(50);
}

/// A matching stream whose history expired and was reclaimed while the client was
/// away: its resume gets a gap notice naming the pattern, never silence.
async fn a_pattern_resume_across_a_reclaimed_stream_gets_a_gap_notice(deployment: Deployment) {
    let node = deployment.node().await;
    let before = publish(&node, "rc.kept", "before").await;
    let missed = publish(&node, "rc.gone", "missed").await;
    deployment.wait_until_reclaimed(&node, "rc.gone").await;
    let mut resumed = subscribe(&node, &["rc.*"], Some(&before)).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "gap", "{missed} was lost");
    assert_eq!(gap.id.as_deref(), Some(before.as_str()));
    let data: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(data["streams"], serde_json::json!(["rc.*"]));
    let live = publish(&node, "rc.new", "after").await;
    assert_eq!(resumed.next_event().await.id, Some(live));
}

/// `envelope=1` wraps strings, JSON values and untyped events with their stream;
/// ids and types are unchanged, and gap notices are not wrapped.
async fn envelopes_carry_the_stream_and_the_data_as_published(deployment: Deployment) {
    let node = deployment.node().await;
    let options = Options {
        envelope: true,
        ..Options::default()
    };
    let mut enveloped = subscribe_with(&node, &["env.*"], options).await;
    let event = |stream: &str, event_type: Option<&str>, data: &str, kind: DataKind| NewEvent {
        stream: StreamName::try_new(stream).unwrap(),
        event_type: event_type.map(|t| EventType::try_new(t).unwrap()),
        data: data.to_owned(),
        kind,
    };
    let ids = publish_events(
        &node,
        vec![
            event("env.a", Some("note"), "two\r\nlines", DataKind::Text),
            event("env.b", Some("build"), r#"{"ok":true,"n":[1,2.50]}"#, DataKind::Json),
            event("env.a", None, "42", DataKind::Json),
            event("env.c", None, "42", DataKind::Text),
        ],
    )
    .await;
    let events = enveloped.events(4).await;
    let received: Vec<(Option<String>, String, Value)> = events
        .into_iter()
        .map(|e| (e.id, e.event, serde_json::from_str(&e.data).expect("envelope is JSON")))
        .collect();
    let id = |i: usize| Some(ids[i].to_string());
    assert_eq!(
        received,
        [
            (
                id(0),
                "note".to_owned(),
                serde_json::json!({"stream": "env.a", "event": "note", "data": "two\r\nlines"})
            ),
            (
                id(1),
                "build".to_owned(),
                serde_json::json!({"stream": "env.b", "event": "build", "data": {"ok": true, "n": [1, 2.5]}})
            ),
            (
                id(2),
                "message".to_owned(),
                serde_json::json!({"stream": "env.a", "data": 42})
            ),
            (
                id(3),
                "message".to_owned(),
                serde_json::json!({"stream": "env.c", "data": "42"})
            ),
        ]
    );
    // Replayed events are wrapped as well; a gap notice is not.
    let options = Options {
        envelope: true,
        last_event_id: Some("not-an-id"),
        ..Options::default()
    };
    let mut resumed = subscribe_with(&node, &["env.b"], options).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "gap");
    assert_eq!(
        serde_json::from_str::<Value>(&gap.data).unwrap(),
        serde_json::json!({"streams": ["env.b"]})
    );
    let replayed: Value = serde_json::from_str(&resumed.next_event().await.data).unwrap();
    assert_eq!(replayed["stream"], "env.b");
}

/// `replay=latest` sends the newest held event of each stream in id order, then
/// live events; with a resume id it is ignored.
async fn latest_sends_the_newest_event_of_each_stream(deployment: Deployment) {
    let node = deployment.node().await;
    let mut published = Vec::new();
    for (stream, data) in [("lt.a", "1"), ("lt.b", "2"), ("lt.a", "3"), ("lt.c", "4")] {
        published.push(publish(&node, stream, data).await);
    }
    let latest = Options {
        latest: true,
        ..Options::default()
    };
    let mut names = subscribe_with(&node, &["lt.a", "lt.b", "lt.none"], latest).await;
    assert_eq!(
        ids(&names.events(2).await),
        [published[1].clone(), published[2].clone()]
    );
    let live = publish(&node, "lt.b", "live").await;
    assert_eq!(
        names.next_event().await.id,
        Some(live.clone()),
        "then live, nothing else"
    );
    let mut pattern = subscribe_with(&node, &["lt.*"], latest).await;
    assert_eq!(
        ids(&pattern.events(3).await),
        [published[2].clone(), published[3].clone(), live.clone()]
    );
    let resumed = Options {
        latest: true,
        last_event_id: Some(&published[0]),
        ..Options::default()
    };
    let mut resumed = subscribe_with(&node, &["lt.a"], resumed).await;
    assert_eq!(
        resumed.next_event().await.id,
        Some(published[2].clone()),
        "a resume wins"
    );
}

/// Snapshot-then-subscribe: read `head`, subscribe from it while publishers go on;
/// the client gets exactly what was published after the read, with no gap notice.
async fn head_then_subscribe_loses_and_duplicates_nothing(deployment: Deployment) {
    let node = deployment.node().await;
    let empty = position(&node, "pos.s").await;
    assert_eq!((empty.last_id, empty.buffered), (None, 0));
    publish(&node, "pos.s", "old").await;
    let publisher = {
        let node = Arc::clone(&node);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..150 {
                ids.push(publish(&node, "pos.s", &i.to_string()).await);
                tokio::task::yield_now().await;
            }
            ids
        })
    };
    let head = position(&node, "pos.s").await;
    assert!(head.buffered >= 1 && head.last_id.is_some_and(|last| last <= head.head));
    let head_id = head.head.to_string();
    let options = Options {
        last_event_id: Some(&head_id),
        ..Options::default()
    };
    let mut subscribed = subscribe_with(&node, &["pos.s"], options).await;
    let published = within("publisher", publisher).await.unwrap();
    let expected: Vec<String> = published
        .iter()
        .filter(|id| id.parse::<u64>().unwrap() > head.head.as_u64())
        .cloned()
        .collect();
    let events = subscribed.events(expected.len()).await;
    assert!(events.iter().all(|e| e.event == "message"), "no gap notice");
    assert_eq!(ids(&events), expected);
    let last = position(&node, "pos.s").await;
    assert_eq!(last.last_id.map(|id| id.to_string()), published.last().cloned());
    assert!(last.head >= last.last_id.unwrap());
}

/// Runs every scenario on one backend; `$deployment` builds a fresh one per
/// scenario from a configuration adjustment.
macro_rules! conformance {
    ($backend:ident, $deployment:expr) => {
        mod $backend {
            use super::*;

            macro_rules! scenario {
                ($name:ident, $adjust:expr) => {
                    #[tokio::test]
                    async fn $name() {
                        super::$name($deployment($adjust).await).await;
                    }
                };
            }

            scenario!(ids_increase_across_streams_and_batches, defaults);
            scenario!(a_refused_batch_stores_nothing, defaults);
            scenario!(resume_replays_missed_events_of_all_streams_in_id_order, defaults);
            scenario!(the_replay_live_seam_loses_and_duplicates_nothing, defaults);
            scenario!(concurrent_publishers_reach_subscribers_in_id_order, defaults);
            scenario!(evicted_history_earns_a_gap_notice, small_buffer);
            scenario!(
                an_unusable_resume_id_gets_a_gap_notice_with_an_empty_id_then_everything_held,
                defaults
            );
            scenario!(resuming_from_the_newest_id_replays_nothing, defaults);
            scenario!(a_restart_loses_nothing_silently, defaults);
            scenario!(lost_history_is_announced, defaults);
            scenario!(a_client_resumes_on_another_node, defaults);
            scenario!(
                the_node_history_bound_evicts_the_oldest_events_first,
                small_history
            );
            scenario!(a_pattern_receives_streams_created_after_it_subscribed, defaults);
            scenario!(
                a_pattern_resume_replays_every_matching_stream_in_id_order,
                defaults
            );
            scenario!(
                a_pattern_resume_across_a_reclaimed_stream_gets_a_gap_notice,
                short_history
            );
            scenario!(envelopes_carry_the_stream_and_the_data_as_published, defaults);
            scenario!(latest_sends_the_newest_event_of_each_stream, defaults);
            scenario!(head_then_subscribe_loses_and_duplicates_nothing, defaults);
        }
    };
}

async fn memory(adjust: fn(&mut Config)) -> Deployment {
    Deployment::memory(adjust)
}

conformance!(memory, memory);
conformance!(disk, Deployment::disk);
conformance!(redis, Deployment::redis);
