//! A publisher: one keep-alive connection, one request in flight, so the order in
//! which its events are acknowledged is the order every subscriber must see them in.

use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::{connect, read_response};
use crate::shared::Shared;
use crate::subscriber::payload;
use crate::target::Outgoing;

/// What one publisher sends.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) publisher: usize,
    /// Streams it publishes to, round-robin.
    pub(crate) streams: Vec<usize>,
    /// Events per request (1 = single-event publishes).
    pub(crate) batch: usize,
    pub(crate) size: usize,
    /// Time between requests; `None` = as fast as the server answers.
    pub(crate) interval: Option<Duration>,
    /// Offset of this publisher's schedule, so that publishers sharing a rate send
    /// evenly spaced requests rather than simultaneous bursts.
    pub(crate) phase: Duration,
    pub(crate) until: Instant,
    /// Stop after this many events.
    pub(crate) max_events: Option<u64>,
}

/// Publishes until the plan's end; returns the number of events acknowledged.
pub(crate) async fn run(shared: Rc<Shared>, plan: Plan) -> anyhow::Result<u64> {
    let mut socket: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut datas = vec![String::with_capacity(plan.size); plan.batch];
    let mut next_stream = 0;
    let mut acknowledged = 0_u64;
    let started = Instant::now();
    let mut requests = 0_u32;
    loop {
        let now = Instant::now();
        if now >= plan.until || plan.max_events.is_some_and(|max| acknowledged >= max) {
            return Ok(acknowledged);
        }
        if let Some(interval) = plan.interval {
            let due = started + plan.phase + interval * requests;
            if due > now {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        requests += 1;
        let count = plan
            .max_events
            .map_or(plan.batch, |max| plan.batch.min((max - acknowledged) as usize));
        let mut streams = Vec::with_capacity(count);
        {
            let published = shared.published.borrow();
            for data in datas.iter_mut().take(count) {
                let stream = plan.streams[next_stream % plan.streams.len()];
                next_stream += 1;
                // A batch may hold one stream twice: number those events in turn.
                let earlier = streams.iter().filter(|&&s| s == stream).count() as u64;
                payload(
                    plan.publisher,
                    published[stream][plan.publisher] + earlier,
                    plan.size,
                    data,
                );
                streams.push(stream);
            }
        }
        let events: Vec<Outgoing<'_>> = streams
            .iter()
            .zip(&datas)
            .map(|(&stream, data)| Outgoing { stream, data })
            .collect();
        let request = shared.target.publish_request(&events);
        let sent_at = Instant::now();
        match send(&shared, &mut socket, &mut buf, &request, plan.publisher).await {
            Ok(status) if (200..300).contains(&status) => {
                if shared.record_latency.get() {
                    let micros = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
                    let _ = shared.publish_latency_us.borrow_mut().record(micros);
                }
                let mut published = shared.published.borrow_mut();
                for &stream in &streams {
                    published[stream][plan.publisher] += 1;
                }
                acknowledged += count as u64;
            }
            failed => {
                if shared.publish_errors.get() == 0 {
                    eprintln!("first publish error: {:?}", failed.map_err(|e| format!("{e:#}")));
                }
                // Not acknowledged: nothing counts as published, the same sequence
                // numbers go out again.
                shared.publish_errors.set(shared.publish_errors.get() + 1);
                next_stream -= count;
                socket = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn send(
    shared: &Shared,
    socket: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
    request: &[u8],
    publisher: usize,
) -> anyhow::Result<u16> {
    if socket.is_none() {
        buf.clear();
        *socket = Some(connect(shared.target.publish_addr, 10_000 + publisher).await?);
    }
    let connection = socket.as_mut().context("connected above")?;
    connection.write_all(request).await?;
    let (status, body) = read_response(connection, buf).await?;
    if !(200..300).contains(&status) {
        anyhow::bail!("publish answered {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(status)
}
