//! `/metrics`: names, deltas, a separate address, and no secrets in labels.

use std::net::SocketAddr;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, test_config};

const EXPORTED: &[&str] = &[
    "sse_connections_open",
    "sse_connections_total",
    "sse_subscriptions_open",
    "sse_events_published_total",
    "sse_events_delivered_total",
    "sse_events_replayed_total",
    "sse_gap_notices_total",
    "sse_auth_rejections_total",
    "sse_publish_duration_seconds_bucket",
    "sse_publish_to_write_seconds_bucket",
    "sse_http_requests_total",
    "sse_http_request_duration_seconds_bucket",
];

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = TestServer::start_default().await;
    let published_before = server.metric("sse_events_published_total").await;
    let rejected_before = server
        .metric("sse_auth_rejections_total{reason=\"missing_token\"}")
        .await;
    let mut stream = server.subscribe(&["m"], None).await;
    let first = server.publish("m", None, json!(1)).await;
    stream.next_event().await;
    let mut resumed = server.subscribe(&["m"], Some("garbage")).await;
    resumed.next_event().await;
    let unauthorized = server.http.get(server.events_url(&["m"])).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED);
    assert!(!first.is_empty());

    let text = server.metrics_text().await;
    for name in EXPORTED {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(server.metric("sse_events_published_total").await >= published_before + 1.0);
    assert!(
        server
            .metric("sse_auth_rejections_total{reason=\"missing_token\"}")
            .await
            >= rejected_before + 1.0
    );
    assert!(server.metric("sse_connections_open").await >= 2.0);
}

#[tokio::test]
async fn tokens_and_stream_names_never_appear_in_metrics() {
    let server = TestServer::start_default().await;
    let token = server.token(&["*"], &["*"]);
    let url = format!(
        "{}&access_token={token}",
        server.events_url(&["very-secret-stream-name"])
    );
    let _open = server.http.get(url).send().await.unwrap();
    server.publish("very-secret-stream-name", None, json!(1)).await;
    let text = server.metrics_text().await;
    assert!(!text.contains(&token));
    assert!(!text.contains("very-secret-stream-name"));
}

#[tokio::test]
async fn metrics_can_have_their_own_address() {
    let mut config = test_config();
    config.metrics.addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = TestServer::start(config).await;
    let metrics_addr = server.metrics_addr.unwrap();
    let separate = server
        .http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(separate.status(), StatusCode::OK);
    assert!(separate.text().await.unwrap().contains("sse_"));
    let main = server.http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
}

/// Metric names an expression in the Grafana dashboard refers to (histogram
/// suffixes kept, so the series itself is checked).
fn dashboard_metrics() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/grafana/sse-gateway.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has queries");
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|expr| expr.match_indices("sse_").map(move |(at, _)| &expr[at..]))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let server = TestServer::start_default().await;
    // Touch the labelled families: an auth rejection (also a rejected connection),
    // a rejected publish, an HTTP request.
    let _ = server.http.get(server.events_url(&["d"])).send().await.unwrap();
    let _ = server.post_json(&json!({"stream":"bad name","data":1})).await;
    server.publish("d", None, json!(1)).await;
    let text = server.metrics_text().await;
    let exported: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect();
    for name in dashboard_metrics() {
        assert!(
            exported.contains(&name.as_str()),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }
}

#[tokio::test]
async fn metrics_pass_promtool_check() {
    let server = TestServer::start_default().await;
    let _ = server.http.get(server.events_url(&["p"])).send().await.unwrap();
    server.publish("p", None, json!(1)).await;
    let text = server.metrics_text().await;
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_and_stdin(text.as_bytes());
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    assert!(
        promtool.status.success() && report.trim().is_empty(),
        "promtool: {report}"
    );
}

/// Runs a command with `input` on its standard input.
trait OutputAndStdin {
    fn output_and_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputAndStdin for std::process::Command {
    fn output_and_stdin(&mut self, input: &[u8]) -> std::process::Output {
        use std::io::Write as _;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (run the tests with scripts/test)");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}
