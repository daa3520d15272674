//! Scale-out on Redis: several nodes on port 0, one real `redis-server` per test.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_gateway::config::{BackendKind, Config, Secret};

use crate::support::proxy::ChaosProxy;
use crate::support::redis::RedisServer;
use crate::support::{Item, SseEvent, TestServer, test_config, within};

pub(crate) fn redis_config(url: &str) -> Config {
    let mut config = test_config();
    config.backend.kind = BackendKind::Redis;
    config.backend.redis.url = Secret::new(url);
    config.backend.redis.key_prefix = format!("test{}:", rand_suffix());
    config.backend.redis.health_interval = Duration::from_millis(100);
    config.backend.redis.response_timeout = Duration::from_millis(500);
    config.backend.redis.connect_timeout = Duration::from_millis(500);
    config.server.heartbeat_interval = Duration::from_millis(200);
    config
}

fn rand_suffix() -> u32 {
    std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
}

/// Starts a node and waits until it reports ready.
pub(crate) async fn node(config: Config) -> TestServer {
    let server = TestServer::start(config).await;
    wait_for_readiness(&server, StatusCode::OK).await;
    server
}

async fn wait_for_readiness(server: &TestServer, expected: StatusCode) {
    within("readiness", async {
        loop {
            let status = server.http.get(server.url("/readyz")).send().await.unwrap().status();
            if status == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn ids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().expect("event id")).collect()
}

#[tokio::test]
async fn an_event_published_on_one_node_reaches_subscribers_on_another() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url());
    let a = node(config.clone()).await;
    let b = node(config).await;
    let mut on_b = b.subscribe(&["orders"], None).await;
    let mut on_a = a.subscribe(&["orders"], None).await;
    let first = a.publish("orders", Some("created"), json!({"n": 1})).await;
    let second = b.publish("orders", None, json!("two\nlines")).await;
    for stream in [&mut on_a, &mut on_b] {
        let events = stream.events(2).await;
        assert_eq!(ids(&events), [first.clone(), second.clone()]);
        assert_eq!(events[0].event, "created");
        assert_eq!(events[0].data, r#"{"n":1}"#);
        assert_eq!(events[1].data, "two\nlines");
    }
}

#[tokio::test]
async fn a_client_resumes_every_stream_on_another_node() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url());
    let a = node(config.clone()).await;
    let b = node(config).await;
    let mut all = Vec::new();
    for i in 0..6 {
        let stream = ["x", "y", "z"][i % 3];
        let publisher = if i % 2 == 0 { &a } else { &b };
        all.push(publisher.publish(stream, None, json!(i)).await);
    }
    let mut resumed = b.subscribe(&["x", "y"], Some(&all[0])).await;
    assert_eq!(
        ids(&resumed.events(3).await),
        [all[1].clone(), all[3].clone(), all[4].clone()]
    );
    let live = a.publish("y", None, json!("live")).await;
    assert_eq!(resumed.next_event().await.id, Some(live));
}

#[tokio::test]
async fn history_survives_restarting_every_node() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url());
    let a = node(config.clone()).await;
    let published: Vec<String> = futures::future::join_all((0..4).map(|i| a.publish("h", None, json!(i)))).await;
    let mut published = published;
    published.sort();
    a.stop().await.unwrap();
    let restarted = node(config).await;
    let mut resumed = restarted.subscribe(&["h"], Some(&published[0])).await;
    let events = resumed.events(3).await;
    assert!(events.iter().all(|e| e.event == "message"), "no gap notice");
    assert_eq!(ids(&events), published[1..]);
}

#[tokio::test]
async fn trimmed_history_earns_a_gap_notice() {
    let redis = RedisServer::start().await;
    let mut config = redis_config(&redis.url());
    config.streams.buffer_size = 2;
    let a = node(config).await;
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(a.publish("t", None, json!(i)).await);
    }
    let mut resumed = a.subscribe(&["t", "quiet"], Some(&published[0])).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "gap");
    let data: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(data["streams"], json!(["t"]));
    assert_eq!(ids(&resumed.events(2).await), published[3..]);
    // Resuming from exactly the newest trimmed event is still provably complete.
    let mut boundary = a.subscribe(&["t"], Some(&published[2])).await;
    assert_eq!(ids(&boundary.events(2).await), published[3..]);
}

#[tokio::test]
async fn redis_outage_answers_503_keeps_subscribers_and_recovers_what_was_stored_meanwhile() {
    let redis = RedisServer::start().await;
    let proxy = ChaosProxy::start(redis.addr).await;
    let direct_config = redis_config(&redis.url());
    let mut proxied_config = direct_config.clone();
    proxied_config.backend.redis.url = Secret::new(format!("redis://{}", proxy.addr));
    let behind_proxy = node(proxied_config).await;
    let direct = node(direct_config).await;
    let mut subscriber = behind_proxy.subscribe(&["o"], None).await;
    let before = behind_proxy.publish("o", None, json!("before")).await;
    assert_eq!(subscriber.next_event().await.id, Some(before.clone()));

    proxy.cut(true);
    // Publishing through the cut-off node fails loudly; readiness follows.
    within("publishes to answer 503", async {
        while behind_proxy.post_json(&json!({"stream":"o","data":"lost?"})).await.0 != StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    wait_for_readiness(&behind_proxy, StatusCode::SERVICE_UNAVAILABLE).await;
    // Events stored while the node is cut off (through the other node).
    let mut stored = Vec::new();
    for i in 0..3 {
        stored.push(direct.publish("o", None, json!(i)).await);
    }
    // The subscriber stays connected: heartbeats keep coming.
    loop {
        match subscriber.next_item().await {
            Some(Item::Comment(text)) if text == "heartbeat" => break,
            Some(Item::Event(event)) => panic!("unexpected event during the outage: {event:?}"),
            Some(_) => {}
            None => panic!("the subscriber was disconnected by the outage"),
        }
    }

    proxy.unblock();
    wait_for_readiness(&behind_proxy, StatusCode::OK).await;
    let after = behind_proxy.publish("o", None, json!("after")).await;
    stored.push(after);
    assert_eq!(
        ids(&subscriber.events(4).await),
        stored,
        "in order, nothing lost or duplicated"
    );
}

#[tokio::test]
async fn redis_losing_its_data_is_announced_and_ids_keep_increasing() {
    let mut redis = RedisServer::start().await;
    let a = node(redis_config(&redis.url())).await;
    let mut subscriber = a.subscribe(&["f"], None).await;
    let old = a.publish("f", None, json!("old")).await;
    assert_eq!(subscriber.next_event().await.id, Some(old.clone()));

    redis.restart_empty().await;
    // The connected subscriber is told that history was lost.
    let gap = subscriber.next_event().await;
    assert_eq!(gap.event, "gap");
    wait_for_readiness(&a, StatusCode::OK).await;
    let new = within("a publish after the restart", async {
        loop {
            let (status, reply) = a.post_json(&json!({"stream":"f","data":"new"})).await;
            if status == StatusCode::OK {
                return reply["id"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        new.parse::<u64>().unwrap() > old.parse::<u64>().unwrap(),
        "ids never go backwards"
    );
    assert_eq!(subscriber.next_event().await.id, Some(new));
    // A client resuming from before the loss gets a gap notice too.
    let mut resumed = a.subscribe(&["f"], Some(&old)).await;
    assert_eq!(resumed.next_event().await.event, "gap");
    let _ = redis.cli(&["PING"]);
}

#[tokio::test]
async fn resuming_on_a_node_whose_live_feed_lags_repeats_nothing() {
    let redis = RedisServer::start().await;
    let proxy = ChaosProxy::start(redis.addr).await;
    let config = redis_config(&redis.url());
    let mut lagging = config.clone();
    lagging.backend.redis.url = Secret::new(format!("redis://{}", proxy.addr));
    let a = node(config).await;
    let b = node(lagging).await;
    // B already listens to the stream, then its live feed stalls.
    let _holder = b.subscribe(&["lag"], None).await;
    let mut on_a = a.subscribe(&["lag"], None).await;
    proxy.pause_subscriptions(true);
    for i in 0..3 {
        a.publish("lag", None, json!(i)).await;
    }
    let read_on_a = on_a.events(3).await;
    let last = read_on_a[2].id.clone().unwrap();
    // The client moves to B with the last id it read; B's feed still holds all three.
    let mut resumed = b.subscribe(&["lag"], Some(&last)).await;
    proxy.pause_subscriptions(false);
    let next = a.publish("lag", None, json!("after")).await;
    assert_eq!(
        resumed.next_event().await.id,
        Some(next),
        "nothing at or before the resume id again"
    );
}

#[tokio::test]
async fn a_publish_redis_never_answered_is_504_not_503() {
    let redis = RedisServer::start().await;
    let mut config = redis_config(&redis.url());
    config.backend.redis.response_timeout = Duration::from_secs(3);
    let a = node(config).await;
    let mut subscriber = a.subscribe(&["frozen"], None).await;
    // Once before, so Redis has the script cached (a first EVALSHA would fail on
    // NOSCRIPT when Redis goes on, storing nothing).
    let before = a.publish("frozen", None, json!("before")).await;
    assert_eq!(subscriber.next_event().await.id, Some(before));
    redis.freeze();
    let (status, body) = a.post_json(&json!({"stream":"frozen","data":"stored after all"})).await;
    redis.thaw();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "backend_timeout");
    assert!(body["message"].as_str().unwrap().contains("Idempotency-Key"));
    // The outcome was indeed unknown: Redis stored the event once it went on.
    let event = subscriber.next_event().await;
    assert_eq!(event.data, "stored after all");
}
