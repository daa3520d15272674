//! Highly available Redis: partial loss announced whatever its cause (an older
//! snapshot, a restart without fsync, FLUSHALL, a failover to a lagging replica),
//! restarts trusted when Redis fsyncs every write and the operator says so, and
//! Sentinel failovers followed by the nodes with `min_replicas` losing nothing
//! acknowledged, a frozen master splitting no brain, and idempotent retries across
//! nodes. Real `redis-server` and `redis-sentinel` processes on free ports.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_gateway::config::{BackendKind, Config, Secret};

use crate::redis::{node, redis_config};
use crate::support::proxy::ChaosProxy;
use crate::support::redis::RedisServer;
use crate::support::sentinel::SentinelDeployment;
use crate::support::{SseEvent, TestServer, test_config, within};

fn ids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().expect("event id")).collect()
}

/// Publishes until a 2xx, retrying by idempotency key; returns the id.
async fn publish_surely(server: &TestServer, stream: &str, data: &str) -> String {
    within("a publish to be acknowledged", async {
        loop {
            let reply = server
                .http
                .post(server.url("/events"))
                .bearer_auth(server.token(&[], &["*"]))
                .header("Idempotency-Key", format!("{stream}-{data}"))
                .json(&json!({"stream": stream, "data": data}))
                .send()
                .await;
            if let Ok(reply) = reply
                && reply.status() == StatusCode::OK
            {
                return reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_redis_restarted_from_an_older_snapshot_is_announced_even_to_new_nodes() {
    let mut redis = RedisServer::start_persistent(&[]).await;
    let config = redis_config(&redis.url());
    let first = node(config.clone()).await;
    let a = first.publish("snap", None, json!("A")).await;
    assert_eq!(redis.cli(&["SAVE"]), "OK");
    first.publish("snap", None, json!("B")).await;
    first.publish("snap", None, json!("C")).await;
    // Every gateway node stops; Redis crashes and comes back from the snapshot.
    first.stop().await.unwrap();
    redis.crash_and_restart().await;
    let fresh = node(config).await;
    let d = publish_surely(&fresh, "snap", "D").await;
    let mut resumed = fresh.subscribe(&["snap"], Some(&a)).await;
    let gap = resumed.next_event().await;
    assert_eq!(gap.event, "gap", "B and C were acknowledged and are gone: announced");
    assert_eq!(resumed.next_event().await.id, Some(d));
}

#[tokio::test]
async fn a_restart_that_fsyncs_every_write_is_trusted_only_when_configured() {
    for (settings, trusted) in [
        (["--appendonly", "yes", "--appendfsync", "always"], true),
        (["--appendonly", "yes", "--appendfsync", "everysec"], false),
    ] {
        let mut redis = RedisServer::start_persistent(&settings).await;
        let mut config = redis_config(&redis.url());
        config.backend.redis.trust_restarts = true;
        let server = node(config).await;
        let a = server.publish("aof", None, json!("A")).await;
        let b = server.publish("aof", None, json!("B")).await;
        redis.crash_and_restart().await;
        let c = publish_surely(&server, "aof", "C").await;
        let mut resumed = server.subscribe(&["aof"], Some(&a)).await;
        if trusted {
            assert_eq!(ids(&resumed.events(2).await), [b, c], "no needless gap notice");
        } else {
            assert_eq!(resumed.next_event().await.event, "gap", "everysec may lose: announced");
        }
    }
}

#[tokio::test]
async fn a_flush_is_announced_even_after_a_publish_made_a_new_epoch() {
    let redis = RedisServer::start().await;
    let server = node(redis_config(&redis.url())).await;
    let mut live = server.subscribe(&["flush"], None).await;
    let old = server.publish("flush", None, json!("old")).await;
    assert_eq!(live.next_event().await.id, Some(old.clone()));
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let new = publish_surely(&server, "flush", "new").await;
    // The live subscriber is told before the new event reaches it.
    let mut seen = Vec::new();
    loop {
        let event = live.next_event().await;
        seen.push(event.event.clone());
        if event.id.as_deref() == Some(new.as_str()) {
            break;
        }
    }
    assert!(seen.contains(&"gap".to_owned()), "{seen:?}");
    let mut resumed = server.subscribe(&["flush"], Some(&old)).await;
    assert_eq!(resumed.next_event().await.event, "gap");
}

#[tokio::test]
async fn an_idempotent_retry_on_another_node_answers_the_original_ids() {
    let redis = RedisServer::start().await;
    let config = redis_config(&redis.url());
    let (a, b) = (node(config.clone()).await, node(config).await);
    let post = |server: &TestServer, body: Value, key: &str| {
        server
            .http
            .post(server.url("/events"))
            .bearer_auth(server.token(&[], &["*"]))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let batch = json!([{"stream":"idem","data":1},{"stream":"idem","data":2}]);
    let first = post(&a, batch.clone(), "order-7").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let retry = post(&b, batch, "order-7").await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(
        retry.json::<Value>().await.unwrap(),
        first,
        "same ids, nothing published again"
    );
    let other = post(&b, json!({"stream":"idem","data":3}), "order-7").await.unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let mut resumed = a.subscribe(&["idem"], Some("1")).await;
    let events = resumed.events(3).await;
    assert_eq!(events[0].event, "gap", "resuming from before the deployment's ids");
    let ids: Vec<&str> = first["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(
        events[1..].iter().map(|e| e.id.as_deref().unwrap()).collect::<Vec<_>>(),
        ids
    );
}

fn sentinel_config(deployment: &SentinelDeployment, min_replicas: usize) -> Config {
    let mut config = test_config();
    config.backend.kind = BackendKind::Redis;
    config.backend.redis.url = Secret::new("redis://localhost");
    config.backend.redis.sentinels = deployment.sentinel_addrs();
    config.backend.redis.master_name = deployment.master_name.clone();
    config.backend.redis.min_replicas = min_replicas;
    config.backend.redis.min_replicas_timeout = Duration::from_secs(1);
    config.backend.redis.key_prefix = format!("failover{}:", std::process::id());
    config.backend.redis.health_interval = Duration::from_millis(100);
    config.backend.redis.response_timeout = Duration::from_secs(2);
    config.backend.redis.connect_timeout = Duration::from_millis(500);
    config.server.heartbeat_interval = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn a_failover_to_a_lagging_replica_is_announced() {
    // The replica replicates through a proxy that can hold its stream back.
    let (mut deployment, link) = SentinelDeployment::start_with_linked_replica(|master| async move {
        ChaosProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], master))).await
    })
    .await;
    let config = sentinel_config(&deployment, 0);
    let server = node(config).await;
    let a = server.publish("lag", None, json!("A")).await;
    let master = deployment.current_master_port().unwrap();
    let replica = deployment.members.iter().find(|m| m.port != master).unwrap().port;
    within("the replica to hold A", async {
        while deployment.member(replica).cli(&["DBSIZE"]) == "0" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The replica falls behind: B and C are acknowledged by the master alone, the
    // master dies, and the replica that never got them is promoted.
    link.hold(true);
    server.publish("lag", None, json!("B")).await;
    let c = server.publish("lag", None, json!("C")).await;
    deployment.member(master).kill();
    link.cut(true);
    deployment.wait_for_failover(master).await;
    let d = publish_surely(&server, "lag", "D").await;
    // Clients may hold C's id, which the new master never saw: D's id is above it.
    assert!(
        d.parse::<u64>().unwrap() > c.parse::<u64>().unwrap(),
        "{d} must follow the lost {c}"
    );
    let mut resumed = server.subscribe(&["lag"], Some(&a)).await;
    assert_eq!(resumed.next_event().await.event, "gap", "B and C are gone: announced");
    assert_eq!(resumed.next_event().await.id, Some(d));
}

/// What the publishers of a burst saw.
#[derive(Default)]
struct Seen {
    /// (payload, id) of every 2xx.
    acknowledged: Vec<(String, String)>,
    /// Every status other than 200, and transport errors as 0.
    refusals: Vec<u16>,
    /// The longest time a publisher went from its first refused attempt to its next
    /// 2xx: the failover as publishers see it.
    outage: Duration,
}

/// Four publishers, each retrying by idempotency key until acknowledged, through
/// both nodes alternately, until `stop`.
async fn burst(nodes: [Arc<TestServer>; 2], stop: Arc<AtomicBool>) -> Seen {
    let publishers = (0..4).map(|p| {
        let (nodes, stop) = (nodes.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut refused_since: Option<Instant> = None;
            let mut attempt = 0_usize;
            for i in 0.. {
                let data = format!("{p}:{i}");
                loop {
                    if stop.load(Ordering::Relaxed) && attempt > 0 {
                        return seen;
                    }
                    attempt += 1;
                    let server = &nodes[attempt % 2];
                    let reply = server
                        .http
                        .post(server.url("/events"))
                        .bearer_auth(server.token(&[], &["*"]))
                        .header("Idempotency-Key", format!("burst-{data}"))
                        .timeout(Duration::from_secs(5))
                        .json(&json!({"stream":"burst","data":data}))
                        .send()
                        .await;
                    match reply {
                        Ok(reply) if reply.status() == StatusCode::OK => {
                            let id = reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
                            seen.acknowledged.push((data.clone(), id));
                            if let Some(since) = refused_since.take() {
                                seen.outage = seen.outage.max(since.elapsed());
                            }
                            break;
                        }
                        Ok(reply) => seen.refusals.push(reply.status().as_u16()),
                        Err(_) => seen.refusals.push(0),
                    }
                    refused_since.get_or_insert_with(Instant::now);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if stop.load(Ordering::Relaxed) {
                    return seen;
                }
            }
            seen
        })
    });
    let mut all = Seen::default();
    for publisher in publishers.collect::<Vec<_>>() {
        let seen = publisher.await.unwrap();
        all.acknowledged.extend(seen.acknowledged);
        all.refusals.extend(seen.refusals);
        all.outage = all.outage.max(seen.outage);
    }
    all
}

/// What a burst across a failover left.
struct AfterFailover {
    seen: Seen,
    nodes: [Arc<TestServer>; 2],
    start: String,
    _deployment: SentinelDeployment,
}

/// Kills the master mid-burst, with a subscriber connected to each node and
/// readiness watched throughout; checks what every failover must show (publishes
/// refused with 503/504 only, readiness false while no master is known and true
/// after, subscribers still connected) and returns what the publishers saw.
async fn kill_the_master_mid_burst(min_replicas: usize) -> AfterFailover {
    let mut deployment = SentinelDeployment::start(2).await;
    let config = sentinel_config(&deployment, min_replicas);
    let nodes = [Arc::new(node(config.clone()).await), Arc::new(node(config).await)];
    let start = nodes[0].publish("burst", None, json!("start")).await;
    // A subscriber on each node, read throughout (so it is never a slow consumer),
    // until an event published after the failover.
    let mut live = Vec::new();
    for server in &nodes {
        let mut subscriber = server.subscribe(&["burst"], Some(&start)).await;
        live.push(tokio::spawn(async move {
            while subscriber.next_event().await.data != "after-the-failover" {}
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(burst(nodes.clone(), Arc::clone(&stop)));
    let not_ready: Vec<_> = nodes
        .iter()
        .map(|server| {
            let (server, stop) = (Arc::clone(server), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut statuses = HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(reply) = server.http.get(server.url("/readyz")).send().await {
                        statuses.insert(reply.status().as_u16());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                statuses
            })
        })
        .collect();
    let master = deployment.current_master_port().unwrap();
    within("the burst to get under way", async {
        while deployment
            .member(master)
            .cli(&["XLEN", &format!("failover{}:s:burst", std::process::id())])
            .parse::<u64>()
            .unwrap_or(0)
            < 30
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    deployment.member(master).kill(); // SIGKILL mid-burst
    deployment.wait_for_failover(master).await;
    // Readiness tells the truth: back once the new master is verified.
    for server in &nodes {
        within("readiness after the failover", async {
            while server.http.get(server.url("/readyz")).send().await.unwrap().status() != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // acknowledgements after the failover too
    stop.store(true, Ordering::Relaxed);
    let seen = within("the publishers", running).await.unwrap();
    for (server, watch) in nodes.iter().zip(not_ready) {
        let statuses = watch.await.unwrap();
        assert!(
            statuses.contains(&503),
            "{}: /readyz never said 503 while no master was known",
            server.addr
        );
    }
    assert!(
        seen.refusals.contains(&503),
        "no publish was refused with 503 while no master was known"
    );
    assert!(
        seen.refusals.iter().all(|status| [0, 503, 504].contains(status)),
        "publishes refused otherwise than 503/504: {:?}",
        seen.refusals
    );
    // The subscribers connected before the failover are still on the same streams.
    // With min_replicas, a publish waits for a replica: one that is resyncing
    // after the failover may refuse it for a moment.
    publish_surely(&nodes[0], "burst", "after-the-failover").await;
    for subscriber in live {
        within(
            "the live subscribers to get an event published after the failover",
            subscriber,
        )
        .await
        .expect("a subscriber's stream ended during the failover");
    }
    AfterFailover {
        seen,
        nodes,
        start,
        _deployment: deployment,
    }
}

#[tokio::test]
async fn with_min_replicas_a_killed_master_loses_no_acknowledged_event() {
    let AfterFailover {
        seen: Seen {
            acknowledged,
            refusals,
            outage,
        },
        nodes,
        start,
        _deployment,
    } = kill_the_master_mid_burst(1).await;
    eprintln!(
        "failover with min_replicas = 1: {} events acknowledged, {} attempts refused, publishers' first refusal to next 2xx at most {outage:?}",
        acknowledged.len(),
        refusals.len()
    );
    let mut resumed = nodes[1].subscribe(&["burst"], Some(&start)).await;
    let wanted: HashSet<&str> = acknowledged.iter().map(|(data, _)| data.as_str()).collect();
    let mut seen = HashSet::new();
    within("every acknowledged event", async {
        while !wanted.iter().all(|data| seen.contains(*data)) {
            let event = resumed.next_event().await;
            if event.event == "gap" {
                continue; // delivered-but-unacknowledged events may have been lost
            }
            assert!(seen.insert(event.data.clone()), "{} delivered twice", event.data);
        }
    })
    .await;
    for (data, id) in &acknowledged {
        assert!(seen.contains(data.as_str()), "acknowledged {data} ({id}) was lost");
    }
}

#[tokio::test]
async fn without_min_replicas_whatever_a_failover_loses_is_announced() {
    let AfterFailover {
        seen: Seen {
            acknowledged,
            refusals,
            outage,
        },
        nodes,
        start,
        _deployment,
    } = kill_the_master_mid_burst(0).await;
    eprintln!(
        "failover with min_replicas = 0: {} events acknowledged, {} attempts refused, publishers' first refusal to next 2xx at most {outage:?}",
        acknowledged.len(),
        refusals.len()
    );
    let mut resumed = nodes[1].subscribe(&["burst"], Some(&start)).await;
    let newest = acknowledged
        .iter()
        .map(|(_, id)| id.parse::<u64>().unwrap())
        .max()
        .unwrap();
    let published = nodes[1].publish("burst", None, json!("marker")).await;
    let mut first = None;
    let mut seen = HashSet::new();
    loop {
        let event = resumed.next_event().await;
        first.get_or_insert(event.event.clone());
        if event.id.as_deref() == Some(published.as_str()) {
            break;
        }
        if event.event != "gap" {
            seen.insert(event.data.clone());
        }
    }
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|(data, _)| !seen.contains(data))
        .map(|(data, _)| data)
        .collect();
    // Without min_replicas no promotion can be proven to hold everything: whether or
    // not this one lost anything, every resume from before it is told so.
    assert_eq!(
        first.as_deref(),
        Some("gap"),
        "a resume across an unproven promotion must start with a gap notice (lost {lost:?}, newest acknowledged {newest})"
    );
}

#[tokio::test]
async fn a_frozen_master_that_comes_back_splits_no_brain() {
    let mut deployment = SentinelDeployment::start(1).await;
    let config = sentinel_config(&deployment, 1);
    let nodes = [Arc::new(node(config.clone()).await), Arc::new(node(config).await)];
    let start = nodes[0].publish("burst", None, json!("start")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(burst(nodes.clone(), Arc::clone(&stop)));
    let master = deployment.current_master_port().unwrap();
    deployment.member(master).signal("-STOP");
    deployment.wait_for_failover(master).await;
    deployment.member(master).signal("-CONT");
    // The old master comes back and is turned into a replica; publishing goes on.
    within("the old master to become a replica", async {
        while !deployment.member(master).cli(&["ROLE"]).starts_with("slave") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let Seen { acknowledged, .. } = within("the publishers", running).await.unwrap();
    let mut resumed = nodes[1].subscribe(&["burst"], Some(&start)).await;
    let marker = nodes[1].publish("burst", None, json!("marker")).await;
    let mut ids_seen = Vec::new();
    let mut payloads = HashSet::new();
    loop {
        let event = resumed.next_event().await;
        if event.event == "gap" {
            continue;
        }
        let id: u64 = event.id.clone().unwrap().parse().unwrap();
        assert!(ids_seen.last().is_none_or(|last| *last < id), "ids never go backwards");
        ids_seen.push(id);
        assert!(payloads.insert(event.data.clone()), "{} twice: split brain", event.data);
        if event.id.as_deref() == Some(marker.as_str()) {
            break;
        }
    }
    for (data, id) in &acknowledged {
        assert!(payloads.contains(data), "acknowledged {data} ({id}) lost");
    }
}
