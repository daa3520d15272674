//! Ingest throughput against a running gateway (`bash bench/ingest.sh` starts the
//! gateway pinned to one core and runs this on the other).
//!
//! - `udp`: sends single-event datagrams as fast as one thread can for a while and
//!   reports what the gateway accepted per second (from its
//!   `sse_events_published_total{source="udp"}`), what was sent, and what the kernel
//!   dropped (`/proc/net/snmp`, `Udp: RcvbufErrors`, machine-wide).
//! - `amqp`: subscribes to a stream over SSE, publishes messages into the queue the
//!   gateway consumes, and reports messages per second from the first publish to
//!   the last event received by the subscriber, then deletes the queue.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[derive(Debug, Parser)]
struct Args {
    /// The gateway's HTTP address (for /metrics and /events).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    Udp {
        /// The gateway's `ingest.udp.addr`.
        #[arg(long, default_value = "127.0.0.1:8125")]
        target: String,
        /// How long to send.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
    },
    Amqp {
        #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
        url: String,
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        /// A token that may subscribe to `bench.amqp`.
        #[arg(long, env = "BENCH_TOKEN")]
        token: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.mode {
        Mode::Udp { target, duration } => udp(&args.http, &target, duration).await,
        Mode::Amqp {
            url,
            queue,
            messages,
            token,
        } => amqp(&args.http, &url, &queue, messages, &token).await,
    }
}

async fn published(http: &reqwest::Client, addr: &str, source: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
    let series = format!("sse_events_published_total{{source=\"{source}\"}} ");
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

fn kernel_udp_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|line| line.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RcvbufErrors")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

async fn udp(http_addr: &str, target: &str, duration: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let before = published(&http, http_addr, "udp").await?;
    let drops_before = kernel_udp_drops();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, stop, target) = (Arc::clone(&sent), Arc::clone(&stop), target.to_owned());
        std::thread::spawn(move || -> anyhow::Result<()> {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.connect(&target)?;
            let datagram = br#"{"stream":"bench.udp","data":{"host":"web-1","cpu":0.42}}"#;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    // ENOBUFS/ECONNREFUSED while the receiver is busy: count only what left.
                    if socket.send(datagram).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(())
        })
    };
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    sender.join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let sending = started.elapsed();
    // Let the gateway finish what its socket buffer holds.
    let mut last = published(&http, http_addr, "udp").await?;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = published(&http, http_addr, "udp").await?;
        if now == last {
            break;
        }
        last = now;
    }
    let accepted = last - before;
    let sent = sent.load(Ordering::Relaxed);
    let drops = kernel_udp_drops().saturating_sub(drops_before);
    println!(
        "udp: sent {sent} datagrams in {:.2} s ({:.0}/s); gateway accepted {accepted:.0} ({:.0}/s over the send time); kernel receive-buffer drops {drops}",
        sending.as_secs_f64(),
        sent as f64 / sending.as_secs_f64(),
        accepted / sending.as_secs_f64(),
    );
    Ok(())
}

async fn amqp(http_addr: &str, url: &str, queue: &str, messages: usize, token: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .get(format!("http://{http_addr}/events?stream=bench.amqp"))
        .bearer_auth(token)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("subscribe: {}", response.status());
    }
    let mut body = response.bytes_stream();
    // The preamble: subscribed.
    body.next().await.context("stream opened")??;
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let started = Instant::now();
    let publisher = tokio::spawn({
        let (channel, queue) = (channel.clone(), queue.to_owned());
        async move {
            for n in 0..messages {
                let body = format!(r#"{{"stream":"bench.amqp","data":{n}}}"#);
                channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default(),
                    )
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    let mut received = 0;
    // The last 3 bytes of the previous chunk, so an `id: ` split across chunks counts.
    let mut carry: Vec<u8> = Vec::new();
    while received < messages {
        let chunk = body.next().await.context("stream ended early")??;
        carry.extend_from_slice(&chunk);
        received += carry.windows(4).filter(|window| window == b"id: ").count();
        carry.drain(..carry.len().saturating_sub(3));
    }
    let elapsed = started.elapsed();
    publisher.await??;
    // The gateway declared the queue (durable) for this run: remove it.
    channel
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    println!(
        "amqp: {messages} messages from the first publish to the last event at the subscriber in {:.2} s: {:.0} messages/s",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
