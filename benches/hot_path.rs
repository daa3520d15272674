//! Micro-benchmarks of the hot path: encoding an event once, and offering the
//! shared frame to many subscriber queues. Peer comparisons live elsewhere.
//!
//! Run: `cargo bench --bench hot_path`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sse_gateway::event::{EventId, EventType, Frame};
use sse_gateway::sse;
use sse_gateway::stream::{StreamName, StreamRegistry};
use tokio_util::sync::CancellationToken;

fn encode(c: &mut Criterion) {
    let event_type = EventType::try_new("price").unwrap();
    let data_100 = "x".repeat(100);
    let multiline = "line one\nline two\r\nline three\rline four".repeat(3);
    let mut group = c.benchmark_group("encode_event");
    group.bench_function("100_bytes", |b| {
        b.iter(|| {
            sse::encode_event(
                black_box(EventId::from_u64(1_863_000_000_000_000_001)),
                Some(&event_type),
                black_box(&data_100),
            )
        })
    });
    group.bench_function("multiline", |b| {
        b.iter(|| sse::encode_event(black_box(EventId::from_u64(7)), None, black_box(&multiline)))
    });
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("registry_deliver");
    for subscribers in [10_usize, 1_000] {
        let registry = StreamRegistry::new(10, 1 << 20);
        let stream = StreamName::try_new("bench").unwrap();
        let mut receivers = Vec::new();
        for _ in 0..subscribers {
            let (queue, receiver) = registry.new_queue(CancellationToken::new());
            registry.attach_one(&stream, &queue).unwrap();
            receivers.push(receiver);
        }
        let frame = Arc::new(Frame {
            id: EventId::from_u64(1),
            published_at: Instant::now(),
            bytes: Bytes::from(vec![b'x'; 100]),
        });
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, _| {
            b.iter(|| {
                registry.deliver(&stream, &frame);
                // Drain so queues never fill (a full queue would detach the subscriber).
                for receiver in &mut receivers {
                    while receiver.try_recv().is_some() {}
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, fan_out);
criterion_main!(benches);
