//! The built-in demo publisher: sample server-health (`demo.servers`, type `health`)
//! and CI pipeline (`demo.ci`, type `pipeline`) events, published through the
//! node like any other event (counted as `source="demo"`), so the first run shows
//! something alive.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::event::{DataKind, EventType, NewEvent};
use crate::node::{Allowed, Node, Publication, Publisher, Source};
use crate::stream::StreamName;

/// Streams the demo publisher writes to.
pub const DEMO_STREAMS: [&str; 2] = ["demo.servers", "demo.ci"];

/// What the demo page subscribes to (with envelopes, so it knows each event's
/// stream) and what its token grants.
pub const DEMO_PATTERN: &str = "demo.*";

/// The subject of the demo page's token; every visitor shares it, so the node
/// gives it `demo.max_connections` and few streams: the pattern and the demo's
/// own names.
pub const DEMO_SUBJECT: &str = "demo-page";

const HOSTS: [&str; 4] = ["web-1", "web-2", "api-1", "db-1"];
const PIPELINES: [&str; 3] = ["api", "web", "billing"];
const STAGES: [&str; 3] = ["build", "test", "deploy"];

/// Publishes sample events every `interval` until `stop` is cancelled.
pub async fn publish_samples(node: Arc<Node>, interval: Duration, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let event = if tick % 3 == 2 {
            pipeline_event(tick)
        } else {
            health_event(tick)
        };
        tick += 1;
        let publication = Publication {
            publisher: Publisher {
                subject: "demo-publisher",
                source: Source::Demo,
                allowed: Allowed::Any,
            },
            events: vec![event],
            idempotency: None,
        };
        if let Err(error) = node.publish(publication).await {
            tracing::debug!(%error, "demo publisher could not publish");
        }
    }
}

fn health_event(tick: u64) -> NewEvent {
    let mut rng = rand::rng();
    let host = HOSTS[(tick % HOSTS.len() as u64) as usize];
    let cpu: f64 = rng.random_range(0.05..0.98);
    let status = match cpu {
        c if c > 0.95 => "down",
        c if c > 0.8 => "warn",
        _ => "ok",
    };
    sample(
        DEMO_STREAMS[0],
        "health",
        &json!({
            "host": host,
            "cpu": (cpu * 100.0).round() / 100.0,
            "mem": (rng.random_range(0.2..0.9_f64) * 100.0).round() / 100.0,
            "status": status,
            "at": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        }),
    )
}

fn pipeline_event(tick: u64) -> NewEvent {
    let mut rng = rand::rng();
    let run = tick / 3;
    let stage = STAGES[(run % STAGES.len() as u64) as usize];
    let status = match rng.random_range(0..10) {
        0 => "failed",
        1..=4 => "running",
        _ => "passed",
    };
    sample(
        DEMO_STREAMS[1],
        "pipeline",
        &json!({
            "pipeline": PIPELINES[(run % PIPELINES.len() as u64) as usize],
            "run": 1000 + run,
            "stage": stage,
            "status": status,
            "duration_s": rng.random_range(3..240),
        }),
    )
}

fn sample(stream: &str, event_type: &str, data: &serde_json::Value) -> NewEvent {
    NewEvent {
        // Both are constants that satisfy the naming rules.
        stream: StreamName::try_new(stream).expect("demo stream names are valid"),
        event_type: Some(EventType::try_new(event_type).expect("demo event types are valid")),
        data: data.to_string(),
        kind: DataKind::Json,
    }
}
