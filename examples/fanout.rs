//! Quick end-to-end fan-out measurement against a running gateway.
//!
//! Opens `--subscribers` raw HTTP/1.1 event streams on one stream, publishes
//! `--events` events of `--size` bytes (as fast as possible, or at `--rate`/s), and
//! reports deliveries/s, publish→receive latency percentiles and lost / duplicated /
//! out-of-order events per subscriber. With `--pid`, also the server's CPU time and
//! RSS per connection from /proc. The full side-by-side benchmark is a later issue.
//!
//! ```sh
//! SSE_GATEWAY_SERVER__WORKER_THREADS=1 taskset -c 0 target/release/sse-gateway serve &
//! taskset -c 1 cargo run --release --example fanout -- --subscribers 1000 --events 2000 --pid $!
//! ```
//! Tokens are minted from `SSE_GATEWAY_AUTH__HS256_SECRET` or `./.sse-gateway-secret`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use sse_gateway::auth::mint::{SigningKey, mint};
use sse_gateway::auth::{Claims, StreamPattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
struct Args {
    /// Node the subscribers connect to.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Node the events are published to (default: `--addr`); another node of the
    /// same Redis-backed deployment measures cross-node delivery.
    #[arg(long)]
    publish_addr: Option<String>,
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    #[arg(long, default_value_t = 2000)]
    events: u64,
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Events per second; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Server process id, for CPU and RSS figures.
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Debug, Default)]
struct Outcome {
    received: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    latencies_us: Vec<u64>,
    last_at: Option<Instant>,
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn token(secret: &str) -> anyhow::Result<String> {
    let claims = Claims {
        sub: Some("fanout".to_owned()),
        exp: Some(now_us() / 1_000_000 + 3600),
        subscribe: vec![StreamPattern::Any],
        publish: vec![StreamPattern::Any],
        ..Claims::default()
    };
    Ok(mint(&claims, &SigningKey::hs256(secret))?)
}

async fn subscribe(
    addr: String,
    token: String,
    events: u64,
    opened: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Outcome> {
    let mut socket = TcpStream::connect(&addr).await?;
    let request = format!("GET /events?stream=bench HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
    socket.write_all(request.as_bytes()).await?;
    let mut outcome = Outcome::default();
    let mut next_seq = 0_u64;
    let mut pending = Vec::with_capacity(16 * 1024);
    let mut buf = vec![0_u8; 64 * 1024];
    let mut signalled = false;
    while next_seq < events {
        let n = socket.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "stream closed after {} events", outcome.received);
        if !signalled {
            signalled = true;
            let _ = opened.send(()).await;
        }
        pending.extend_from_slice(&buf[..n]);
        let arrived = now_us();
        let mut start = 0;
        while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + end];
            start += end + 1;
            // data: seq:<n>:ts:<micros>:padding
            let Some(rest) = line.strip_prefix(b"data: seq:") else {
                continue;
            };
            let text = std::str::from_utf8(rest)?;
            let mut parts = text.split(':');
            let seq: u64 = parts.next().context("seq")?.parse()?;
            let sent: u64 = parts.nth(1).context("ts")?.parse()?;
            outcome.received += 1;
            outcome.latencies_us.push(arrived.saturating_sub(sent));
            match seq.cmp(&next_seq) {
                std::cmp::Ordering::Equal => next_seq += 1,
                std::cmp::Ordering::Greater => {
                    outcome.lost += seq - next_seq;
                    next_seq = seq + 1;
                }
                std::cmp::Ordering::Less => {
                    if seq + 1 == next_seq {
                        outcome.duplicated += 1
                    } else {
                        outcome.out_of_order += 1
                    }
                }
            }
        }
        pending.drain(..start);
    }
    outcome.last_at = Some(Instant::now());
    Ok(outcome)
}

fn proc_figures(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / 100.0, rss_kib))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = match std::env::var("SSE_GATEWAY_AUTH__HS256_SECRET") {
        Ok(secret) => secret,
        Err(_) => std::fs::read_to_string(".sse-gateway-secret")
            .context("no secret: set SSE_GATEWAY_AUTH__HS256_SECRET")?
            .trim()
            .to_owned(),
    };
    let token = token(&secret)?;
    let before_idle = args.pid.and_then(proc_figures);
    let connect_started = Instant::now();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel(args.subscribers);
    let mut subscribers = Vec::new();
    for _ in 0..args.subscribers {
        subscribers.push(tokio::spawn(subscribe(
            args.addr.clone(),
            token.clone(),
            args.events,
            opened_tx.clone(),
        )));
    }
    for _ in 0..args.subscribers {
        opened_rx.recv().await.context("a subscriber failed to open")?;
    }
    let connect_time = connect_started.elapsed();
    let idle = args.pid.and_then(proc_figures);

    let http = reqwest::Client::new();
    let publish_addr = args.publish_addr.clone().unwrap_or_else(|| args.addr.clone());
    let padding = "x".repeat(args.size.saturating_sub(40));
    let publish_started = Instant::now();
    for seq in 0..args.events {
        if args.rate > 0 {
            let due = publish_started + Duration::from_secs_f64(seq as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let body = serde_json::json!({"stream": "bench", "data": format!("seq:{seq}:ts:{}:{padding}", now_us())});
        let response = http
            .post(format!("http://{publish_addr}/events"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "publish failed: {}", response.status());
    }
    let publish_time = publish_started.elapsed();
    let mut total = Outcome::default();
    let mut last = publish_started;
    for subscriber in subscribers {
        let outcome = subscriber.await??;
        total.received += outcome.received;
        total.lost += outcome.lost;
        total.duplicated += outcome.duplicated;
        total.out_of_order += outcome.out_of_order;
        total.latencies_us.extend(outcome.latencies_us);
        last = last.max(outcome.last_at.unwrap_or(last));
    }
    let window = last - publish_started;
    let after = args.pid.and_then(proc_figures);
    total.latencies_us.sort_unstable();
    let l = &total.latencies_us;
    println!(
        "subscribers {}  events {}  size {} B  rate {}",
        args.subscribers,
        args.events,
        args.size,
        if args.rate == 0 {
            "max".to_owned()
        } else {
            format!("{}/s", args.rate)
        }
    );
    println!("connect time           {connect_time:.2?}");
    println!(
        "publishes/s            {:.0}",
        args.events as f64 / publish_time.as_secs_f64()
    );
    println!(
        "deliveries/s           {:.0}",
        total.received as f64 / window.as_secs_f64()
    );
    println!(
        "latency p50/p99/p99.9/max  {}/{}/{}/{} µs",
        percentile(l, 0.5),
        percentile(l, 0.99),
        percentile(l, 0.999),
        l.last().copied().unwrap_or(0)
    );
    println!(
        "lost {}  duplicated {}  out of order {}",
        total.lost, total.duplicated, total.out_of_order
    );
    println!(
        "RESULT deliveries_per_s={:.0} p50_us={} p99_us={} lost={} duplicated={} out_of_order={}",
        total.received as f64 / window.as_secs_f64(),
        percentile(l, 0.5),
        percentile(l, 0.99),
        total.lost,
        total.duplicated,
        total.out_of_order
    );
    if let (Some((cpu0, _)), Some((_, idle_rss)), Some((cpu1, _))) = (idle, idle, after) {
        println!(
            "server CPU over window {:.0} %",
            100.0 * (cpu1 - cpu0) / window.as_secs_f64()
        );
        if let Some((_, base_rss)) = before_idle {
            println!(
                "server RSS per idle connection {:.1} KiB",
                (idle_rss as f64 - base_rss as f64) / args.subscribers as f64
            );
        }
    }
    Ok(())
}
