//! Durable history on one node (`backend.kind = "disk"`), with the real binary and
//! real files: clean restarts and `kill -9` lose nothing acknowledged, resumes across
//! them are exact, history bounds hold across restarts, and a data directory that
//! cannot be trusted stops startup with an error naming it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::binary::{BIN, GatewayProcess};
use crate::support::server::{SECRET, patterns, token_with};
use crate::support::{SseStream, within};

/// The gateway on the data directory `data`, in `dir`, with `extra` settings.
async fn disk_gateway(dir: &Path, data: &Path, extra: &[(&str, &str)]) -> GatewayProcess {
    let data = data.display().to_string();
    let mut envs = vec![
        ("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET),
        ("SSE_GATEWAY_BACKEND__KIND", "disk"),
        ("SSE_GATEWAY_BACKEND__DISK__PATH", data.as_str()),
        ("SSE_GATEWAY_DEMO__PUBLISHER", "false"),
    ];
    envs.extend_from_slice(extra);
    GatewayProcess::serve(dir, &envs).await
}

fn publisher_token() -> String {
    token_with(|claims| claims.publish = patterns(&["*"]))
}

async fn publish(http: &reqwest::Client, base: &str, stream: &str, data: &str) -> String {
    let reply = http
        .post(format!("{base}/events"))
        .bearer_auth(publisher_token())
        .json(&json!({"stream": stream, "data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    reply.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn resume(http: &reqwest::Client, base: &str, streams: &[&str], last_event_id: &str) -> SseStream {
    let query: Vec<String> = streams.iter().map(|s| format!("stream={s}")).collect();
    let token = token_with(|claims| claims.subscribe = patterns(&["*"]));
    let response = http
        .get(format!("{base}/events?{}", query.join("&")))
        .bearer_auth(token)
        .header("Last-Event-ID", last_event_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    SseStream::new(response)
}

fn ids(events: &[crate::support::SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().unwrap()).collect()
}

/// SIGTERM, and waits for the process to exit.
fn stop(gateway: &mut GatewayProcess) {
    let pid = gateway.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    gateway.child.wait().unwrap();
}

#[tokio::test]
async fn a_clean_restart_and_a_kill_9_lose_nothing_and_resumes_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();
    let mut gateway = disk_gateway(dir.path(), &data, &[]).await;
    let base = format!("http://{}", gateway.addr);
    let mut published = Vec::new();
    for i in 0..5 {
        published.push(publish(&http, &base, ["d.a", "d.b"][i % 2], &i.to_string()).await);
    }
    stop(&mut gateway);

    let mut gateway = disk_gateway(dir.path(), &data, &[]).await;
    let base = format!("http://{}", gateway.addr);
    let mut resumed = resume(&http, &base, &["d.a", "d.b"], &published[0]).await;
    let events = resumed.events(4).await;
    assert!(events.iter().all(|e| e.event == "message"), "no gap notice: {events:?}");
    assert_eq!(ids(&events), published[1..]);
    for i in 5..8 {
        published.push(publish(&http, &base, "d.a", &i.to_string()).await);
    }
    gateway.child.kill().unwrap(); // SIGKILL
    gateway.child.wait().unwrap();

    let gateway = disk_gateway(dir.path(), &data, &[]).await;
    let base = format!("http://{}", gateway.addr);
    let mut resumed = resume(&http, &base, &["d.a", "d.b"], &published[2]).await;
    let events = resumed.events(5).await;
    assert!(events.iter().all(|e| e.event == "message"), "no gap notice: {events:?}");
    assert_eq!(ids(&events), published[3..]);
    let next = publish(&http, &base, "d.a", "after").await;
    assert!(next.parse::<u64>().unwrap() > published[7].parse::<u64>().unwrap());
}

#[tokio::test]
async fn kill_9_during_a_publish_burst_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();
    let gateway = disk_gateway(dir.path(), &data, &[]).await;
    let base = format!("http://{}", gateway.addr);
    let start = publish(&http, &base, "burst", "start").await;
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    // Four concurrent publishers (their writes share fsyncs); each records the ids
    // it got a 2xx for.
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let (http, base, count) = (http.clone(), base.clone(), Arc::clone(&acknowledged_count));
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let reply = http
                        .post(format!("{base}/events"))
                        .bearer_auth(publisher_token())
                        .json(&json!({"stream":"burst","data":format!("{p}:{i}")}))
                        .send()
                        .await;
                    match reply {
                        Ok(reply) if reply.status() == StatusCode::OK => {
                            let reply: Value = reply.json().await.unwrap();
                            acknowledged.push(reply["id"].as_str().unwrap().to_owned());
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return acknowledged,
                    }
                }
                acknowledged
            })
        })
        .collect();
    within("the burst to get under way", async {
        while acknowledged_count.load(Ordering::Relaxed) < 40 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let mut gateway = gateway;
    gateway.child.kill().unwrap(); // SIGKILL, mid-burst
    gateway.child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for publisher in publishers {
        acknowledged.extend(within("publishers to notice", publisher).await.unwrap());
    }
    acknowledged.sort();

    let restarted = disk_gateway(dir.path(), &data, &[]).await;
    let base = format!("http://{}", restarted.addr);
    let mut resumed = resume(&http, &base, &["burst"], &start).await;
    let mut seen = Vec::new();
    while seen.len() < acknowledged.len() || seen.last() < acknowledged.last() {
        let event = resumed.next_event().await;
        assert_ne!(event.event, "gap", "nothing acknowledged was lost");
        seen.push(event.id.unwrap());
    }
    let mut deduped = seen.clone();
    deduped.dedup();
    assert_eq!(deduped, seen, "no duplicates, in order");
    for id in &acknowledged {
        assert!(seen.binary_search(id).is_ok(), "acknowledged event {id} was lost");
    }
}

#[tokio::test]
async fn history_bounds_hold_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = reqwest::Client::new();
    let bounds = [
        ("SSE_GATEWAY_STREAMS__BUFFER_SIZE", "3"),
        ("SSE_GATEWAY_LIMITS__MAX_EVENT_BYTES", "100"),
        ("SSE_GATEWAY_STREAMS__MAX_HISTORY_BYTES", "1500"),
    ];
    let mut gateway = disk_gateway(dir.path(), &data, &bounds).await;
    let base = format!("http://{}", gateway.addr);
    // Bytes: twenty events on ten streams, about twice what 1,500 bytes hold.
    let mut sized = Vec::new();
    for i in 0..20 {
        sized.push(publish(&http, &base, &format!("bytes.{}", i % 10), &format!("{i:08}")).await);
    }
    // Count: six on one stream, the newest (and the node's newest events).
    let mut counted = Vec::new();
    for i in 0..6 {
        counted.push(publish(&http, &base, "count", &i.to_string()).await);
    }
    let published_at = Instant::now();
    gateway.child.kill().unwrap();
    gateway.child.wait().unwrap();

    let mut gateway = disk_gateway(dir.path(), &data, &bounds).await;
    let base = format!("http://{}", gateway.addr);
    let mut resumed = resume(&http, &base, &["count"], &counted[0]).await;
    assert_eq!(
        resumed.next_event().await.event,
        "gap",
        "count-evicted events stay evicted"
    );
    assert_eq!(ids(&resumed.events(3).await), counted[3..]);
    let mut exact = resume(&http, &base, &["count"], &counted[2]).await;
    assert_eq!(ids(&exact.events(3).await), counted[3..], "the newest three, no gap");
    let mut oldest = resume(&http, &base, &["bytes.0"], &sized[0]).await;
    assert_eq!(
        oldest.next_event().await.event,
        "gap",
        "the node's oldest events went first"
    );
    stop(&mut gateway);

    // Age: restarted with a one-second limit once the events are older than that,
    // the node does not bring them back.
    tokio::time::sleep_until((published_at + Duration::from_millis(1500)).into()).await;
    let mut aged = bounds.to_vec();
    aged.push(("SSE_GATEWAY_STREAMS__BUFFER_TTL", "1s"));
    let gateway = disk_gateway(dir.path(), &data, &aged).await;
    let base = format!("http://{}", gateway.addr);
    let mut expired = resume(&http, &base, &["count"], &counted[2]).await;
    assert_eq!(
        expired.next_event().await.event,
        "gap",
        "expired events are not replayed"
    );
}

/// Runs `serve` on `data` and expects it to refuse to start; returns its output.
async fn refused_start(data: &Path) -> String {
    let dir = data.parent().unwrap();
    let output = tokio::process::Command::new(BIN)
        .current_dir(dir)
        .env("SSE_GATEWAY_SERVER__ADDR", "127.0.0.1:0")
        .env("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET)
        .env("SSE_GATEWAY_BACKEND__KIND", "disk")
        .env("SSE_GATEWAY_BACKEND__DISK__PATH", data)
        .env("SSE_GATEWAY_DEMO__PUBLISHER", "false")
        .arg("serve")
        .kill_on_drop(true)
        .output();
    let output = within("the gateway to refuse to start", output).await.unwrap();
    assert!(!output.status.success(), "the gateway started on {}", data.display());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains(&data.display().to_string()),
        "the error names the path: {text}"
    );
    text
}

/// The store's largest file and how much of it holds data (journals are
/// preallocated with zeros).
fn largest_store_file(data: &Path) -> (std::path::PathBuf, usize) {
    let (_, largest) = files(&data.join("store")).remove(0);
    let bytes = std::fs::read(&largest).unwrap();
    let used = bytes.iter().rposition(|byte| *byte != 0).map_or(0, |last| last + 1);
    assert!(used > 1000, "the events are in {}", largest.display());
    (largest, used)
}

/// Every file under `dir`, largest first.
fn files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            found.extend(files(&entry.path()));
        } else {
            found.push((entry.metadata().unwrap().len(), entry.path()));
        }
    }
    found.sort_by(|a, b| b.cmp(a));
    found
}

async fn filled_data_dir(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let mut gateway = disk_gateway(dir, &data, &[]).await;
    let base = format!("http://{}", gateway.addr);
    let http = reqwest::Client::new();
    for i in 0..50 {
        publish(&http, &base, "s", &format!("event number {i} with some bytes")).await;
    }
    stop(&mut gateway);
    data
}

#[tokio::test]
async fn a_data_directory_that_cannot_be_trusted_stops_startup_naming_it() {
    // Foreign: something else lives there; it is left alone.
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let text = refused_start(&foreign).await;
    assert!(text.contains("not an sse-gateway data directory"), "{text}");
    assert_eq!(std::fs::read_to_string(foreign.join("notes.txt")).unwrap(), "mine");

    // Garbled: bytes in the middle of what the store holds overwritten.
    let dir = tempfile::tempdir().unwrap();
    let data = filled_data_dir(dir.path()).await;
    let (largest, used) = largest_store_file(&data);
    let mut bytes = std::fs::read(&largest).unwrap();
    for byte in &mut bytes[used / 2..used / 2 + 64] {
        *byte ^= 0x5a;
    }
    std::fs::write(&largest, bytes).unwrap();
    refused_start(&data).await;

    // Truncated: the store cut short behind the gateway's back.
    let dir = tempfile::tempdir().unwrap();
    let data = filled_data_dir(dir.path()).await;
    let (largest, used) = largest_store_file(&data);
    let file = std::fs::OpenOptions::new().write(true).open(&largest).unwrap();
    file.set_len((used / 2) as u64).unwrap();
    refused_start(&data).await;
}

#[tokio::test]
async fn disk_metrics_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gateway = disk_gateway(dir.path(), &data, &[]).await;
    let base = format!("http://{}", gateway.addr);
    let http = reqwest::Client::new();
    publish(&http, &base, "m", "x").await;
    let text = within("metrics", async {
        loop {
            let text = gateway.metrics_text().await;
            if crate::support::server::metric_value(&text, "sse_disk_commit_seconds_count") >= 1.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(crate::support::server::metric_value(&text, "sse_disk_commit_events_sum") >= 1.0);
    assert!(crate::support::server::metric_value(&text, "sse_history_bytes") >= 0.0);
    // After a restart the store's size is reported before anything is published.
    drop(gateway);
    let gateway = disk_gateway(dir.path(), &data, &[]).await;
    let text = gateway.metrics_text().await;
    assert!(
        crate::support::server::metric_value(&text, "sse_disk_bytes") > 0.0,
        "{text}"
    );
}
