//! Load generator for SSE servers: the sse-gateway and nginx + nchan, driven with the
//! same flags. One thread (pin it with `taskset`), raw HTTP/1.1, its own SSE parser.
//!
//! ```sh
//! sse-loadgen --target gateway --addr 127.0.0.1:8080 --token "$TOKEN" --pid $PID idle --subscribers 10000
//! sse-loadgen … run --streams 1 --subscribers-per-stream 1000 --rate 100 --duration 10s
//! sse-loadgen … storm --subscribers 5000 --missed 100
//! ```
//! Every scenario prints a human summary and one `RESULT key=value …` line that
//! `bench/compare-nchan.sh` collects.

mod http;
mod proc;
mod publisher;
mod shared;
mod subscriber;
mod target;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use tokio::task::{JoinHandle, LocalSet};

use crate::proc::{Sample, cpu_percent, sample};
use crate::publisher::Plan;
use crate::shared::Shared;
use crate::target::{Kind, Target};

#[derive(Debug, Parser)]
#[command(about = "Load generator for SSE servers (sse-gateway, nchan)")]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// Kind of server: decides only the shape of publish requests.
    #[arg(long, value_enum, default_value = "gateway")]
    target: Kind,
    /// Address subscribers connect to.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Address publishers connect to (default `--addr`).
    #[arg(long)]
    publish_addr: Option<SocketAddr>,
    /// Bearer token sent with every request (the gateway needs one).
    #[arg(long, env = "LOADGEN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Server process to read CPU and RSS of (for nginx: its workers, comma-separated;
    /// their figures are summed).
    #[arg(long)]
    pid: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Open idle subscribers and report the server's resident memory per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Wait this long after the last connection opened before reading memory.
        #[arg(long, default_value = "2s", value_parser = humantime_secs)]
        settle: Duration,
        /// Then publish one event to the (single) stream and report the time until the
        /// last subscriber has it.
        #[arg(long)]
        broadcast: bool,
    },
    /// Subscribe, publish at a rate (or as fast as possible), check every event.
    Run(Load),
    /// Subscribers disconnect, events are published, all resume at once.
    Storm {
        #[arg(long, default_value_t = 5000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        missed: u64,
        #[arg(long, default_value_t = 100)]
        size: usize,
    },
}

fn humantime_secs(text: &str) -> Result<Duration, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    number
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("expected seconds like 10s, got {text:?}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Thousands of sockets: lift the soft descriptor limit to the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let target = Target {
        kind: cli.server.target,
        addr: cli.server.addr,
        publish_addr: cli.server.publish_addr.unwrap_or(cli.server.addr),
        token: cli.server.token.clone(),
    };
    let pid = cli.server.pid.clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    LocalSet::new().block_on(&runtime, async move {
        match cli.scenario {
            Scenario::Idle {
                subscribers,
                streams,
                settle,
                broadcast,
            } => idle(target, pid.as_deref(), subscribers, streams, settle, broadcast).await,
            Scenario::Run(load) => {
                if target.kind == Kind::Nchan && load.batch > 1 {
                    bail!("nchan has no batch publish: use --batch 1");
                }
                run(target, pid.as_deref(), &load).await
            }
            Scenario::Storm {
                subscribers,
                missed,
                size,
            } => storm(target, pid.as_deref(), subscribers, missed, size).await,
        }
    })
}

/// Concurrent connection set-ups while opening subscribers (SYN backlog friendly).
const CONNECT_CONCURRENCY: usize = 256;

fn spawn_subscribers(shared: &Rc<Shared>) -> Vec<JoinHandle<()>> {
    let count = shared.subscribers.borrow().len();
    (0..count)
        .map(|index| tokio::task::spawn_local(subscriber::run(Rc::clone(shared), index)))
        .collect()
}

/// Waits until `done` holds (re-checked whenever a subscriber makes progress) or
/// `deadline` passes; returns whether it holds.
async fn wait_for(shared: &Shared, deadline: Instant, done: impl Fn(&Shared) -> bool) -> bool {
    loop {
        let notified = shared.progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done(shared) {
            return true;
        }
        if shared.fatal.borrow().is_some() {
            return false;
        }
        if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
            return done(shared);
        }
    }
}

async fn open_all(shared: &Rc<Shared>) -> anyhow::Result<(Vec<JoinHandle<()>>, Duration)> {
    let total = shared.subscribers.borrow().len();
    let started = Instant::now();
    let handles = spawn_subscribers(shared);
    let deadline = started + Duration::from_secs(120);
    if !wait_for(shared, deadline, |s| s.opened.get() == total).await {
        if let Some(fatal) = shared.fatal.borrow().as_ref() {
            bail!("{fatal}");
        }
        bail!(
            "only {} of {total} subscribers opened ({} subscribe errors)",
            shared.opened.get(),
            shared.subscribe_errors.get()
        );
    }
    Ok((handles, started.elapsed()))
}

async fn idle(
    target: Target,
    pid: Option<&str>,
    total: usize,
    streams: usize,
    settle: Duration,
    broadcast: bool,
) -> anyhow::Result<()> {
    if broadcast {
        anyhow::ensure!(streams == 1, "--broadcast publishes to one stream: use --streams 1");
    }
    let shared = Rc::new(Shared::new(target, streams, total, 1, CONNECT_CONCURRENCY));
    let before = pid.and_then(sample);
    let (_handles, connect_time) = open_all(&shared).await?;
    tokio::time::sleep(settle).await;
    let after = pid.and_then(sample);
    let me = sample("self");
    println!("idle: {total} subscribers on {streams} stream(s)");
    println!("connect time            {connect_time:.2?}");
    let mut result = format!(
        "RESULT scenario=idle subscribers={total} connect_ms={:.0}",
        connect_time.as_secs_f64() * 1e3
    );
    if let (Some(before), Some(after)) = (before, after) {
        let per_connection = (after.rss_kib as f64 - before.rss_kib as f64) / total as f64;
        println!(
            "server RSS              {} KiB before, {} KiB with {total} connections: {per_connection:.2} KiB per connection",
            before.rss_kib, after.rss_kib
        );
        result += &format!(
            " rss_before_kib={} rss_after_kib={} kib_per_conn={per_connection:.2}",
            before.rss_kib, after.rss_kib
        );
    }
    if let Some(me) = me {
        println!("generator RSS           {} KiB", me.rss_kib);
    }
    if broadcast {
        let started = Instant::now();
        publish_exactly(&shared, 1, 100).await?;
        shared.expect_published();
        let all = wait_for(&shared, started + Duration::from_secs(120), |s| {
            s.caught_up.get() == total
        })
        .await;
        anyhow::ensure!(
            all,
            "only {} of {total} subscribers got the broadcast",
            shared.caught_up.get()
        );
        let elapsed = shared.last_caught_up().duration_since(started);
        let tally = Tally::of(&shared);
        println!(
            "broadcast to all        {elapsed:.2?} (lost {}, duplicated {})",
            tally.lost, tally.duplicated
        );
        result += &format!(
            " broadcast_ms={:.1} connects_per_s={:.0} lost={} duplicated={} out_of_order={} gaps={}",
            elapsed.as_secs_f64() * 1e3,
            total as f64 / connect_time.as_secs_f64(),
            tally.lost,
            tally.duplicated,
            tally.out_of_order,
            tally.gaps
        );
    }
    println!("{result}");
    Ok(())
}

/// The `run` scenario's load.
#[derive(Debug, Args)]
struct Load {
    #[arg(long, default_value_t = 1)]
    streams: usize,
    #[arg(long, default_value_t = 1000)]
    subscribers_per_stream: usize,
    /// Concurrent publishers (keep-alive connections, one request in flight each).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Events per second over all publishers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Events per publish request (a batch; gateway only).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Event data size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value = "10s", value_parser = humantime_secs)]
    duration: Duration,
    /// After publishing, how long to wait for subscribers to catch up.
    #[arg(long, default_value = "30s", value_parser = humantime_secs)]
    drain: Duration,
}

async fn run(target: Target, pid: Option<&str>, load: &Load) -> anyhow::Result<()> {
    let total = load.streams * load.subscribers_per_stream;
    let publishers = load.publishers.max(1);
    let shared = Rc::new(Shared::new(
        target,
        load.streams,
        total,
        publishers,
        CONNECT_CONCURRENCY,
    ));
    let (_handles, connect_time) = open_all(&shared).await?;

    let server_start = pid.and_then(sample);
    let self_start = sample("self");
    shared.record_latency.set(true);
    let started = Instant::now();
    let until = started + load.duration;
    // Each publisher keeps its share of the rate; every request carries `batch` events.
    let interval =
        (load.rate > 0).then(|| Duration::from_secs_f64((publishers * load.batch) as f64 / load.rate as f64));
    let mut tasks = Vec::new();
    for publisher in 0..publishers {
        let streams: Vec<usize> = if load.streams >= publishers {
            (publisher..load.streams).step_by(publishers).collect()
        } else {
            (0..load.streams).collect()
        };
        let plan = Plan {
            publisher,
            streams,
            batch: load.batch.max(1),
            size: load.size,
            interval,
            phase: interval.map_or(Duration::ZERO, |interval| {
                interval * publisher as u32 / publishers as u32
            }),
            until,
            max_events: None,
        };
        tasks.push(tokio::task::spawn_local(publisher::run(Rc::clone(&shared), plan)));
    }
    let mut acknowledged = 0;
    for task in tasks {
        acknowledged += task.await??;
    }
    let publish_time = started.elapsed();
    shared.expect_published();
    let all_caught_up = wait_for(&shared, Instant::now() + load.drain, |s| s.caught_up.get() == total).await;
    let server_end = pid.and_then(sample);
    let self_end = sample("self");
    let end = shared.last_delivery.get().unwrap_or_else(Instant::now).max(started);
    let window = end.duration_since(started).as_secs_f64();

    let tally = Tally::of(&shared);
    let latency = shared.latency_us.borrow();
    let publish_latency = shared.publish_latency_us.borrow();
    let requests_per_s = acknowledged as f64 / load.batch.max(1) as f64 / publish_time.as_secs_f64();
    let events_per_s = acknowledged as f64 / publish_time.as_secs_f64();
    let deliveries_per_s = tally.received as f64 / window;
    println!(
        "run: {} stream(s) x {} subscribers, {publishers} publisher(s), rate {}, batch {}, {} B events, {:?}",
        load.streams,
        load.subscribers_per_stream,
        if load.rate == 0 {
            "max".to_owned()
        } else {
            format!("{}/s", load.rate)
        },
        load.batch,
        load.size,
        load.duration
    );
    println!("connect time            {connect_time:.2?}");
    println!(
        "published               {acknowledged} events, {events_per_s:.0} events/s, {requests_per_s:.0} requests/s"
    );
    println!(
        "deliveries              {} ({deliveries_per_s:.0}/s over {window:.2} s)",
        tally.received
    );
    println!(
        "latency p50/p99/p99.9/max  {} / {} / {} / {} µs",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max()
    );
    println!(
        "publish ack p50/p99     {} / {} µs",
        publish_latency.value_at_quantile(0.5),
        publish_latency.value_at_quantile(0.99)
    );
    println!(
        "lost {}  duplicated {}  out of order {}  gap notices {}  resumes {}  subscribe errors {}  publish errors {}{}",
        tally.lost,
        tally.duplicated,
        tally.out_of_order,
        tally.gaps,
        tally.reconnects,
        shared.subscribe_errors.get(),
        shared.publish_errors.get(),
        if all_caught_up { "" } else { "  (NOT all caught up)" }
    );
    let mut result = format!(
        "RESULT scenario=run events_per_s={events_per_s:.0} requests_per_s={requests_per_s:.0} \
         deliveries_per_s={deliveries_per_s:.0} p50_us={} p99_us={} p999_us={} max_us={} publish_p50_us={} \
         publish_p99_us={} lost={} duplicated={} out_of_order={} gaps={} resumes={} connect_ms={:.0}",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.999),
        latency.max(),
        publish_latency.value_at_quantile(0.5),
        publish_latency.value_at_quantile(0.99),
        tally.lost,
        tally.duplicated,
        tally.out_of_order,
        tally.gaps,
        tally.reconnects,
        connect_time.as_secs_f64() * 1e3,
    );
    result += &cpu_report("server", server_start, server_end);
    result += &cpu_report("generator", self_start, self_end);
    println!("{result}");
    Ok(())
}

fn cpu_report(who: &str, start: Option<Sample>, end: Option<Sample>) -> String {
    let (Some(start), Some(end)) = (start, end) else {
        return String::new();
    };
    let cpu = cpu_percent(start, end);
    println!("{who:<24}CPU {cpu:.0} % of one core, RSS {} KiB", end.rss_kib);
    format!(" {who}_cpu_pct={cpu:.1} {who}_rss_kib={}", end.rss_kib)
}

/// Sums over all subscribers; events never received count as lost.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    gaps: u64,
    reconnects: u64,
}

impl Tally {
    fn of(shared: &Shared) -> Self {
        let mut tally = Self {
            lost: shared.missing(),
            ..Self::default()
        };
        for s in shared.subscribers.borrow().iter() {
            tally.received += s.received;
            tally.lost += s.lost;
            tally.duplicated += s.duplicated;
            tally.out_of_order += s.out_of_order;
            tally.gaps += s.gaps;
            tally.reconnects += s.reconnects;
        }
        tally
    }
}

async fn publish_exactly(shared: &Rc<Shared>, events: u64, size: usize) -> anyhow::Result<()> {
    let plan = Plan {
        publisher: 0,
        streams: vec![0],
        batch: 1,
        size,
        interval: None,
        phase: Duration::ZERO,
        until: Instant::now() + Duration::from_secs(120),
        max_events: Some(events),
    };
    let published = publisher::run(Rc::clone(shared), plan).await?;
    anyhow::ensure!(published == events, "published {published} of {events} events in time");
    Ok(())
}

/// Waits (at most `limit`) until the server used under 5 % of a core over 250 ms.
async fn wait_until_idle(pid: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Some(start) = sample(pid) else { return };
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(end) = sample(pid) else { return };
        let busy = (end.cpu_s - start.cpu_s) / end.at.duration_since(start.at).as_secs_f64();
        if busy < 0.05 {
            return;
        }
    }
}

async fn storm(target: Target, pid: Option<&str>, total: usize, missed: u64, size: usize) -> anyhow::Result<()> {
    let shared = Rc::new(Shared::new(target, 1, total, 1, CONNECT_CONCURRENCY));
    let (handles, _) = open_all(&shared).await?;
    // One event gives every subscriber a Last-Event-ID to resume from.
    publish_exactly(&shared, 1, size).await?;
    shared.expect_published();
    if !wait_for(&shared, Instant::now() + Duration::from_secs(60), |s| {
        s.caught_up.get() == total
    })
    .await
    {
        bail!(
            "only {} of {total} subscribers received the first event",
            shared.caught_up.get()
        );
    }
    for handle in &handles {
        handle.abort();
    }
    for handle in handles {
        let _ = handle.await;
    }
    publish_exactly(&shared, missed, size).await?;
    shared.expect_published();
    // The server is still closing the 5,000 connections the generator dropped (and
    // on a slow machine still writing the missed events to them): wait until it is
    // idle, so the growth measured is the storm's and not old connections not yet
    // given back.
    if let Some(pid) = pid {
        wait_until_idle(pid, Duration::from_secs(10)).await;
    }
    let before = pid.and_then(sample);
    // All at once: no limit on concurrent connection set-ups.
    shared.connect_gate.add_permits(total);
    let started = Instant::now();
    let _handles = spawn_subscribers(&shared);
    let peak_rss = Rc::new(std::cell::Cell::new(before.map_or(0, |b| b.rss_kib)));
    let sampler = pid.map(|pid| {
        let (pid, peak_rss) = (pid.to_owned(), Rc::clone(&peak_rss));
        tokio::task::spawn_local(async move {
            loop {
                if let Some(now) = sample(&pid) {
                    peak_rss.set(peak_rss.get().max(now.rss_kib));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    });
    let all = wait_for(&shared, started + Duration::from_secs(120), |s| {
        s.caught_up.get() == total
    })
    .await;
    let finished = shared.last_caught_up();
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let elapsed = finished.duration_since(started);
    let tally = Tally::of(&shared);
    println!("storm: {total} subscribers resume with Last-Event-ID after {missed} missed events");
    println!(
        "all caught up in        {elapsed:.2?}{}",
        if all { "" } else { "  (NOT all caught up)" }
    );
    println!(
        "received {}  lost {}  duplicated {}  out of order {}  gap notices {}  subscribe errors {}",
        tally.received,
        tally.lost,
        tally.duplicated,
        tally.out_of_order,
        tally.gaps,
        shared.subscribe_errors.get()
    );
    let mut result = format!(
        "RESULT scenario=storm subscribers={total} missed={missed} storm_ms={:.0} caught_up={} lost={} duplicated={} \
         out_of_order={} gaps={} subscribe_errors={}",
        elapsed.as_secs_f64() * 1e3,
        shared.caught_up.get(),
        tally.lost,
        tally.duplicated,
        tally.out_of_order,
        tally.gaps,
        shared.subscribe_errors.get()
    );
    if let Some(before) = before {
        println!(
            "server RSS              {} KiB before, peak {} KiB",
            before.rss_kib,
            peak_rss.get()
        );
        result += &format!(" rss_before_kib={} rss_peak_kib={}", before.rss_kib, peak_rss.get());
    }
    println!("{result}");
    Ok(())
}
