//! Soak run against a running gateway: connection churn, resumes with
//! `Last-Event-ID`, continuous publishes; then every client leaves and the server's
//! RSS and open file descriptors are compared with their baseline.
//!
//! ```sh
//! bash bench/soak.sh 1800     # starts a gateway, runs this for 30 minutes, prints the summary
//! ```
//! Every connection checks that ids strictly increase (no duplicate, no reordering)
//! and that a resume continues after the last id it saw; violations are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use rand::Rng;
use sse_gateway::auth::Claims;
use sse_gateway::auth::mint::{SigningKey, mint};
use sse_gateway::stream::StreamPattern;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Length of the churn phase.
    #[arg(long, default_value = "1800s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent client loops.
    #[arg(long, default_value_t = 300)]
    clients: usize,
    /// Distinct streams.
    #[arg(long, default_value_t = 50)]
    streams: usize,
    /// Publish requests per second.
    #[arg(long, default_value_t = 100)]
    publish_rate: u64,
    /// Time to wait after clients leave before the final measurement (history expiry).
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Server process id, for RSS and file descriptors.
    #[arg(long)]
    pid: u32,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    events: AtomicU64,
    resumes: AtomicU64,
    gaps: AtomicU64,
    violations: AtomicU64,
    errors: AtomicU64,
    published: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn token(secret: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: Some("soak".to_owned()),
        exp: Some(now + 86_400),
        subscribe: vec![StreamPattern::Any],
        publish: vec![StreamPattern::Any],
        ..Claims::default()
    };
    Ok(mint(&claims, &SigningKey::hs256(secret))?)
}

/// One connection: reads for `hold`, checking ids; returns the last id seen.
async fn connect_once(
    args: &Args,
    token: &str,
    streams: &str,
    resume: Option<u64>,
    hold: Duration,
    counters: &Counters,
) -> anyhow::Result<Option<u64>> {
    let mut socket = TcpStream::connect(&args.addr).await?;
    let resume_header = resume.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /events?{streams} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\n{resume_header}Connection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await?;
    counters.connections.fetch_add(1, Ordering::Relaxed);
    if resume.is_some() {
        counters.resumes.fetch_add(1, Ordering::Relaxed);
    }
    let mut last = resume;
    let mut pending = Vec::new();
    let mut buf = vec![0_u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let read = match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(error)) => return Err(error.into()),
        };
        pending.extend_from_slice(&buf[..read]);
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            start += end + 1;
            if line == b"event: gap" {
                counters.gaps.fetch_add(1, Ordering::Relaxed);
            }
            let Some(id) = line.strip_prefix(b"id: ") else { continue };
            let id: u64 = std::str::from_utf8(id)?.trim().parse()?;
            if last.is_some_and(|last| id <= last) {
                counters.violations.fetch_add(1, Ordering::Relaxed);
            }
            last = Some(id);
            counters.events.fetch_add(1, Ordering::Relaxed);
        }
        pending.drain(..start);
    }
    Ok(last)
}

async fn client_loop(args: Arc<Args>, token: Arc<String>, counters: Arc<Counters>, until: Instant) {
    let mut last: Option<u64> = None;
    let mut streams = String::new();
    while Instant::now() < until {
        let (hold, resume) = {
            let mut rng = rand::rng();
            // Half the reconnects resume where they left off; the rest start fresh.
            if last.is_none() || !rng.random_bool(0.5) {
                let count = rng.random_range(1..=4);
                streams = (0..count)
                    .map(|_| format!("stream=soak{}", rng.random_range(0..args.streams)))
                    .collect::<Vec<_>>()
                    .join("&");
                last = None;
            }
            (Duration::from_millis(rng.random_range(200..5_000)), last)
        };
        match connect_once(&args, &token, &streams, resume, hold, &counters).await {
            Ok(seen) => last = seen.or(last),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn publisher(args: Arc<Args>, token: Arc<String>, counters: Arc<Counters>, until: Instant) {
    let http = reqwest::Client::new();
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.publish_rate as f64));
    let mut seq = 0_u64;
    while Instant::now() < until {
        ticks.tick().await;
        let batch: Vec<serde_json::Value> = (0..rand::rng().random_range(1..=3))
            .map(|_| {
                seq += 1;
                serde_json::json!({"stream": format!("soak{}", rand::rng().random_range(0..args.streams)), "data": {"seq": seq}})
            })
            .collect();
        let sent = http
            .post(format!("http://{}/events", args.addr))
            .bearer_auth(token.as_str())
            .json(&batch)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                counters.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            _ => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let secret = std::env::var("SSE_GATEWAY_AUTH__HS256_SECRET").context("set SSE_GATEWAY_AUTH__HS256_SECRET")?;
    let token = Arc::new(token(&secret)?);
    let counters = Arc::new(Counters::default());
    let (baseline_rss, baseline_fds) = (rss_kib(args.pid), open_fds(args.pid));
    println!("baseline: RSS {baseline_rss} KiB, {baseline_fds} open fds");
    let started = Instant::now();
    let until = started + args.duration;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(publisher(
        args.clone(),
        token.clone(),
        counters.clone(),
        until,
    )));
    for _ in 0..args.clients {
        tasks.push(tokio::spawn(client_loop(
            args.clone(),
            token.clone(),
            counters.clone(),
            until,
        )));
    }
    let mut peak_rss = baseline_rss;
    let mut peak_fds = baseline_fds;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(60).min(until.saturating_duration_since(Instant::now()))).await;
        let (rss, fds) = (rss_kib(args.pid), open_fds(args.pid));
        peak_rss = peak_rss.max(rss);
        peak_fds = peak_fds.max(fds);
        println!(
            "t={:>5}s RSS {rss} KiB, {fds} fds, {} connections, {} events, {} published",
            started.elapsed().as_secs(),
            counters.connections.load(Ordering::Relaxed),
            counters.events.load(Ordering::Relaxed),
            counters.published.load(Ordering::Relaxed)
        );
    }
    for task in tasks {
        let _ = task.await;
    }
    tokio::time::sleep(args.settle).await;
    let (final_rss, final_fds) = (rss_kib(args.pid), open_fds(args.pid));
    println!(
        "SOAK duration={}s clients={} connections={} resumes={} events={} published={} gaps={} violations={} errors={} \
         rss_baseline_kib={baseline_rss} rss_peak_kib={peak_rss} rss_after_kib={final_rss} fds_baseline={baseline_fds} fds_peak={peak_fds} fds_after={final_fds}",
        args.duration.as_secs(),
        args.clients,
        counters.connections.load(Ordering::Relaxed),
        counters.resumes.load(Ordering::Relaxed),
        counters.events.load(Ordering::Relaxed),
        counters.published.load(Ordering::Relaxed),
        counters.gaps.load(Ordering::Relaxed),
        counters.violations.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
    );
    Ok(())
}
