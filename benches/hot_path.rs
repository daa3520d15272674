//! Micro-benchmarks of the hot path: encoding an event once, and offering the
//! shared frame to many subscriber queues. Peer comparisons live elsewhere.
//!
//! Run: `cargo bench --bench hot_path`

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sse_gateway::event::{DataKind, EventId, EventType};
use sse_gateway::frame::Frame;
use sse_gateway::sse;
use sse_gateway::stream::{StreamName, StreamPattern, StreamRegistry};
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
            registry
                .attach_one(&StreamPattern::Exact(stream.clone()), &queue)
                .unwrap();
            receivers.push(receiver);
        }
        let frame = Arc::new(Frame::notice(EventId::from_u64(1), Bytes::from(vec![b'x'; 100])));
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

/// Publishing one event among 10,000 subscribers, each on its own stream (named)
/// or its own prefix (`p01234.*`): what pattern matching adds to the publish path.
/// Prefixes are indexed by length, so an event costs a few hash lookups whatever
/// the number of pattern subscribers; the worst case has a prefix of every length.
/// A label, the i-th subscription, a stream, and the one subscriber it matches.
type Case = (&'static str, fn(usize) -> String, &'static str, usize);

fn patterns(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("publish_among_10k_subscribers");
    let frame = Arc::new(Frame::notice(EventId::from_u64(1), Bytes::from(vec![b'x'; 100])));
    let cases: [Case; 3] = [
        ("named", |i| format!("s{i:05}"), "s04242", 4242),
        ("prefix", |i| format!("p{i:05}.*"), "p04242.orders", 4242),
        // Names are at most 128 bytes, so prefixes come in at most 128 lengths:
        // here 120 lengths of `q`s, each followed by a number.
        (
            "prefix_every_length",
            |i| format!("{}{}.*", "q".repeat(i % 120), i / 120),
            "qqqqqqqqqq83.x",
            9970,
        ),
    ];
    for (label, subscription, stream, matched) in cases {
        let registry = Arc::new(StreamRegistry::new(20_000, 1 << 20));
        let mut attachments = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..10_000 {
            let (queue, receiver) = registry.new_queue(CancellationToken::new());
            let pattern = StreamPattern::try_new(&subscription(i)).unwrap();
            attachments.push(registry.attach(&[pattern], &queue).unwrap());
            receivers.push(receiver);
        }
        let stream = StreamName::try_new(stream).unwrap();
        let unmatched = StreamName::try_new("zzz.nobody").unwrap();
        group.bench_function(BenchmarkId::new(label, "matching_one"), |b| {
            b.iter(|| {
                assert_eq!(registry.deliver(&stream, &frame), 1);
                while receivers[matched].try_recv().is_some() {}
            })
        });
        group.bench_function(BenchmarkId::new(label, "matching_none"), |b| {
            b.iter(|| black_box(registry.deliver(&unmatched, &frame)))
        });
    }
    group.finish();
}

/// Encoding an event's envelope, once per event for every `envelope=1` subscriber.
fn envelope(c: &mut Criterion) {
    let stream = StreamName::try_new("prices.eur").unwrap();
    let record = sse::encode_event(EventId::from_u64(7), None, &"x".repeat(100));
    c.bench_function("envelope_from_record_100_bytes", |b| {
        b.iter(|| sse::envelope_record(black_box(&record), &stream, DataKind::Text))
    });
}

criterion_group!(benches, encode, fan_out, patterns, envelope);
criterion_main!(benches);
