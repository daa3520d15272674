//! Every metric the gateway exports (names prefixed `sse_`), the Prometheus
//! recorder and the HTTP metrics layer. `GET /metrics` is `api::metrics`.
//!
//! Labels stay bounded: route templates, methods, status codes and fixed reason
//! strings. Never stream names, subjects or tokens.
//!
//! The recorder is the one process-wide global (the `metrics` facade requires it):
//! [`install_recorder`] installs it once and every server in the process shares it,
//! so tests assert on deltas.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use metrics::{Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS_OPEN: &str = "sse_connections_open";
pub const CONNECTIONS_TOTAL: &str = "sse_connections_total";
pub const CONNECTIONS_REJECTED: &str = "sse_connections_rejected_total";
pub const DISCONNECTS: &str = "sse_disconnects_total";
pub const SUBSCRIPTIONS_OPEN: &str = "sse_subscriptions_open";
pub const STREAMS_SUBSCRIBED: &str = "sse_streams_subscribed";
pub const STREAMS_BUFFERED: &str = "sse_streams_buffered";
pub const EVENTS_PUBLISHED: &str = "sse_events_published_total";
pub const PUBLISH_REJECTIONS: &str = "sse_publish_rejections_total";
pub const EVENTS_DELIVERED: &str = "sse_events_delivered_total";
pub const EVENTS_REPLAYED: &str = "sse_events_replayed_total";
pub const GAP_NOTICES: &str = "sse_gap_notices_total";
pub const SLOW_CONSUMER_DISCONNECTS: &str = "sse_slow_consumer_disconnects_total";
pub const AUTH_REJECTIONS: &str = "sse_auth_rejections_total";
pub const PUBLISH_DURATION: &str = "sse_publish_duration_seconds";
pub const PUBLISH_TO_WRITE: &str = "sse_publish_to_write_seconds";
pub const WEBHOOKS: &str = "sse_webhooks_total";
pub const BACKEND_ERRORS: &str = "sse_backend_errors_total";
pub const BACKEND_RECONNECTS: &str = "sse_backend_reconnects_total";
pub const BACKEND_VERIFICATIONS: &str = "sse_backend_verifications_total";
pub const NOTIFICATION_LAG: &str = "sse_backend_notification_lag_seconds";
pub const HISTORY_BYTES: &str = "sse_history_bytes";
pub const HISTORY_EVICTIONS: &str = "sse_history_evictions_total";
pub const DISK_COMMIT_SECONDS: &str = "sse_disk_commit_seconds";
pub const DISK_COMMIT_EVENTS: &str = "sse_disk_commit_events";
pub const DISK_BYTES: &str = "sse_disk_bytes";
pub const TCP_CONNECTIONS_CLOSED: &str = "sse_tcp_connections_closed_total";
pub const TCP_CONNECTIONS_OTHER: &str = "sse_tcp_connections_other";
pub const ACCEPT_ERRORS: &str = "sse_accept_errors_total";
pub const EXPIRY_WARNINGS: &str = "sse_token_expiry_warnings_total";
pub const REVOCATIONS: &str = "sse_revocations_total";
pub const REVOCATIONS_ACTIVE: &str = "sse_revocations_active";
pub const REVOKED_STREAMS: &str = "sse_revoked_streams_total";
pub const JWKS_REFRESHES: &str = "sse_jwks_refreshes_total";
pub const JWKS_KEYS: &str = "sse_jwks_keys";
pub const INGEST_MESSAGES: &str = "sse_ingest_messages_total";
pub const INGEST_REJECTED: &str = "sse_ingest_rejected_total";
pub const INGEST_CONNECTED: &str = "sse_ingest_connected";
pub const INGEST_RECONNECTS: &str = "sse_ingest_reconnects_total";
pub const BUILD_INFO: &str = "sse_build_info";
pub const HTTP_REQUESTS: &str = "sse_http_requests_total";
pub const HTTP_REQUEST_DURATION: &str = "sse_http_request_duration_seconds";

/// Every `reason` label of [`TCP_CONNECTIONS_CLOSED`].
pub const TCP_CLOSE_REASONS: &[&str] = &[
    "first_request_timeout",
    "idle",
    "evicted",
    "pool_full",
    "unexpected_input",
];

/// Every `source` label of [`EVENTS_PUBLISHED`]: the ways in.
pub const PUBLISH_SOURCES: &[&str] = &["http", "webhook", "demo", "udp", "amqp"];

/// Every `reason` label of [`DISCONNECTS`].
pub const DISCONNECT_REASONS: &[&str] = &["client_closed", "slow_consumer", "token_expired", "revoked", "shutdown"];

/// Authentication reasons, shared by the rejection counters below.
const AUTH_REASONS: &[&str] = &[
    "missing_token",
    "malformed_token",
    "token_too_large",
    "algorithm_not_allowed",
    "unknown_key",
    "bad_signature",
    "token_expired",
    "token_not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
    "invalid_claims",
    "unsupported_extension",
    "token_revoked",
    "stream_not_permitted",
];

/// The `reason` labels of [`PUBLISH_REJECTIONS`] (besides [`AUTH_REASONS`]) that
/// exist from the start, so dashboards show 0 rather than "No data".
const PUBLISH_REJECTION_REASONS: &[&str] = &[
    "invalid_request",
    "invalid_stream_name",
    "invalid_event_type",
    "unsupported_media_type",
    "payload_too_large",
    "request_timeout",
    "draining",
    "publish_rate_limit",
    "bodies_in_flight_limit",
    "request_in_progress",
    "idempotency_key_reused",
    "backend_unavailable",
    "backend_timeout",
    "stream_limit",
];

/// The `reason` labels of [`CONNECTIONS_REJECTED`] (besides [`AUTH_REASONS`]).
const CONNECTION_REJECTION_REASONS: &[&str] = &[
    "no_stream",
    "invalid_stream_name",
    "too_many_streams",
    "invalid_request",
    "firehose_disabled",
    "subject_connection_limit",
    "subject_stream_limit",
    "subject_firehose_limit",
    "subscribe_rate_limit",
    "connection_limit",
    "draining",
    "backend_unavailable",
    "stream_limit",
];

/// Every `trigger` label of [`JWKS_REFRESHES`].
pub const JWKS_TRIGGERS: &[&str] = &["startup", "periodic", "unknown_kid"];

/// Every `result` label of [`JWKS_REFRESHES`].
pub const JWKS_RESULTS: &[&str] = &["ok", "failed"];

/// Latency buckets from 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The `process_*` series (CPU, memory, open and maximum file descriptors, start
/// time), read from /proc at every scrape by `metrics-process`.
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// Reads the `process_*` series now (called at every scrape).
pub fn collect_process_metrics() {
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
}

/// Installs the Prometheus recorder (once per process) and returns its handle.
///
/// # Panics
/// If another `metrics` recorder was installed by someone else first: the gateway
/// could not export anything, which is a programming error, not an input.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
                .expect("bucket list is non-empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process");
            describe_all();
            register_at_zero();
            collect_process_metrics();
            let _ = SERIES.set(Series::register());
            handle
        })
        .clone()
}

fn describe_all() {
    describe_gauge!(CONNECTIONS_OPEN, "Open event-stream connections.");
    describe_counter!(CONNECTIONS_TOTAL, "Event-stream connections accepted.");
    describe_counter!(
        CONNECTIONS_REJECTED,
        "Event-stream connections refused before streaming, by reason."
    );
    describe_counter!(DISCONNECTS, "Event streams ended, by reason.");
    describe_gauge!(
        SUBSCRIPTIONS_OPEN,
        "Stream subscriptions held by open connections (connection x stream)."
    );
    describe_gauge!(
        STREAMS_SUBSCRIBED,
        "Streams and stream patterns with at least one subscriber on this node."
    );
    describe_gauge!(STREAMS_BUFFERED, "Streams holding replay history on this node.");
    describe_counter!(EVENTS_PUBLISHED, "Events accepted, by the way they came in (source).");
    describe_counter!(PUBLISH_REJECTIONS, "Publish requests refused, by reason.");
    describe_counter!(EVENTS_DELIVERED, "Live events written to subscribers.");
    describe_counter!(EVENTS_REPLAYED, "Events written to subscribers from replay history.");
    describe_counter!(GAP_NOTICES, "Gap notices sent to resuming subscribers.");
    describe_counter!(
        SLOW_CONSUMER_DISCONNECTS,
        "Subscribers disconnected because their queue overflowed."
    );
    describe_counter!(
        AUTH_REJECTIONS,
        "Requests refused by authentication or authorisation, by reason."
    );
    describe_histogram!(PUBLISH_DURATION, Unit::Seconds, "Time to accept a publish request.");
    describe_histogram!(
        PUBLISH_TO_WRITE,
        Unit::Seconds,
        "Delay from an event's acceptance to its write to a subscriber."
    );
    describe_counter!(WEBHOOKS, "Webhook requests, by outcome.");
    describe_counter!(BACKEND_ERRORS, "Operations the backend could not serve, by reason.");
    describe_counter!(
        BACKEND_RECONNECTS,
        "Times the node re-established its Redis notification link."
    );
    describe_counter!(
        BACKEND_VERIFICATIONS,
        "Redis instances a node verified after a change, by verdict: proven (holds every acknowledged event), \
         lost (may not: the floor was raised, resumes from before get gap notices), new (no data)."
    );
    describe_histogram!(
        NOTIFICATION_LAG,
        Unit::Seconds,
        "Delay from an event's id timestamp (Redis clock) to its arrival on this node."
    );
    describe_gauge!(
        HISTORY_BYTES,
        Unit::Bytes,
        "History held by this node (memory, disk), counted against streams.max_history_bytes."
    );
    describe_counter!(
        HISTORY_EVICTIONS,
        "Events evicted from history, by bound: count (buffer_size), age (buffer_ttl), bytes (max_history_bytes)."
    );
    describe_histogram!(
        DISK_COMMIT_SECONDS,
        Unit::Seconds,
        "Time to write one group of publishes to the data directory, fsync included."
    );
    describe_histogram!(
        DISK_COMMIT_EVENTS,
        "Events written per group commit (publishes sharing one fsync)."
    );
    describe_gauge!(DISK_BYTES, Unit::Bytes, "Size of the data directory's store on disk.");
    describe_counter!(
        TCP_CONNECTIONS_CLOSED,
        "Connections the gateway closed outside a request, by reason: first_request_timeout \
         (no complete first request or HTTP/2 preface in time), idle (server.idle_timeout), evicted \
         (the oldest idle one when the pool of non-event-stream connections was full), pool_full \
         (refused: every pooled connection busy), unexpected_input (bytes after an event-stream request)."
    );
    describe_gauge!(
        TCP_CONNECTIONS_OTHER,
        "Connections that are not event streams: reading their first request, HTTP/2, or keep-alive \
         for other requests (bounded by server.max_other_connections)."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        "Failed accepts (e.g. out of file descriptors), each followed by a pause."
    );
    describe_counter!(
        EXPIRY_WARNINGS,
        "token-expiring events sent to live streams (auth.expiry_warning)."
    );
    describe_counter!(
        REVOCATIONS,
        "Revocations put in force, by kind (subject, token) and origin (api: made on this node; peer: \
         from another node; store: loaded from the backend)."
    );
    describe_gauge!(REVOCATIONS_ACTIVE, "Revocations in force on this node.");
    describe_counter!(REVOKED_STREAMS, "Live event streams ended by a revocation.");
    describe_counter!(
        JWKS_REFRESHES,
        "Fetches of auth.jwks_url, by trigger (startup, periodic, unknown_kid) and result (ok, failed)."
    );
    describe_gauge!(JWKS_KEYS, "Keys in the JWKS in use (the last good set).");
    describe_counter!(
        INGEST_MESSAGES,
        "Messages received by an ingest path (udp, amqp), by outcome (published, rejected, requeued)."
    );
    describe_counter!(
        INGEST_REJECTED,
        "Ingest messages refused, by source and reason (the reasons of the HTTP error table)."
    );
    describe_gauge!(
        INGEST_CONNECTED,
        "Whether an ingest consumer (amqp) is connected and consuming."
    );
    describe_counter!(
        INGEST_RECONNECTS,
        "Times an ingest consumer (amqp) reconnected after a failure."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version and git revision of the running binary."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests, by method, route and status.");
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time until the response head, by method and route."
    );
}

/// Exports unlabelled series from the start, so dashboards show 0 rather than no
/// data before the first event of each kind.
fn register_at_zero() {
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "revision" => crate::REVISION).set(1.0);
    for name in [
        CONNECTIONS_TOTAL,
        EVENTS_DELIVERED,
        EVENTS_REPLAYED,
        GAP_NOTICES,
        SLOW_CONSUMER_DISCONNECTS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for source in PUBLISH_SOURCES {
        metrics::counter!(EVENTS_PUBLISHED, "source" => *source).increment(0);
    }
    for reason in ["stream_limit", "backend_unavailable", "backend_timeout"] {
        metrics::counter!(BACKEND_ERRORS, "reason" => reason).increment(0);
    }
    metrics::counter!(WEBHOOKS, "outcome" => "published").increment(0);
    metrics::counter!(BACKEND_RECONNECTS).increment(0);
    for verdict in ["proven", "lost", "new"] {
        metrics::counter!(BACKEND_VERIFICATIONS, "verdict" => verdict).increment(0);
    }
    let _ = metrics::histogram!(NOTIFICATION_LAG);
    for reason in DISCONNECT_REASONS {
        metrics::counter!(DISCONNECTS, "reason" => *reason).increment(0);
    }
    for reason in TCP_CLOSE_REASONS {
        metrics::counter!(TCP_CONNECTIONS_CLOSED, "reason" => *reason).increment(0);
    }
    metrics::counter!(ACCEPT_ERRORS).increment(0);
    metrics::counter!(EXPIRY_WARNINGS).increment(0);
    for reason in AUTH_REASONS {
        metrics::counter!(AUTH_REJECTIONS, "reason" => *reason).increment(0);
        metrics::counter!(PUBLISH_REJECTIONS, "reason" => *reason).increment(0);
        metrics::counter!(CONNECTIONS_REJECTED, "reason" => *reason).increment(0);
    }
    for reason in PUBLISH_REJECTION_REASONS {
        metrics::counter!(PUBLISH_REJECTIONS, "reason" => *reason).increment(0);
    }
    for reason in CONNECTION_REJECTION_REASONS {
        metrics::counter!(CONNECTIONS_REJECTED, "reason" => *reason).increment(0);
    }
    metrics::counter!(REVOKED_STREAMS).increment(0);
    for kind in ["subject", "token"] {
        for origin in ["api", "peer", "store"] {
            metrics::counter!(REVOCATIONS, "kind" => kind, "origin" => origin).increment(0);
        }
    }
    metrics::gauge!(REVOCATIONS_ACTIVE).increment(0.0);
    for trigger in JWKS_TRIGGERS {
        for result in JWKS_RESULTS {
            metrics::counter!(JWKS_REFRESHES, "trigger" => *trigger, "result" => *result).increment(0);
        }
    }
    metrics::gauge!(JWKS_KEYS).increment(0.0);
    for source in ["udp", "amqp"] {
        for outcome in ["published", "rejected", "requeued"] {
            metrics::counter!(INGEST_MESSAGES, "source" => source, "outcome" => outcome).increment(0);
        }
    }
    for source in ["udp", "amqp"] {
        metrics::counter!(INGEST_REJECTED, "source" => source, "reason" => "invalid_request").increment(0);
    }
    metrics::gauge!(INGEST_CONNECTED, "source" => "amqp").increment(0.0);
    metrics::counter!(INGEST_RECONNECTS, "source" => "amqp").increment(0);
    for reason in ["count", "age", "bytes"] {
        metrics::counter!(HISTORY_EVICTIONS, "reason" => reason).increment(0);
    }
    metrics::gauge!(HISTORY_BYTES).increment(0.0);
    metrics::gauge!(DISK_BYTES).increment(0.0);
    let _ = metrics::histogram!(DISK_COMMIT_SECONDS);
    let _ = metrics::histogram!(DISK_COMMIT_EVENTS);
    for name in [
        CONNECTIONS_OPEN,
        TCP_CONNECTIONS_OTHER,
        SUBSCRIPTIONS_OPEN,
        STREAMS_SUBSCRIBED,
        STREAMS_BUFFERED,
    ] {
        metrics::gauge!(name).increment(0.0);
    }
    for name in [PUBLISH_DURATION, PUBLISH_TO_WRITE] {
        // A registered histogram renders its (empty) buckets.
        let _ = metrics::histogram!(name);
    }
}

/// Handles of the series touched by every new subscriber, publish and delivery.
///
/// `counter!` and its siblings look their series up in the recorder on every call
/// (name and labels hashed and compared, a key built): about 500 instructions each,
/// 13 times per new subscriber (callgrind, `bench/compare-nchan.sh idle`). These
/// are looked up once, when the recorder is installed.
#[derive(Debug)]
pub struct Series {
    pub connections_open: Gauge,
    pub connections_total: Counter,
    pub subscriptions_open: Gauge,
    pub tcp_connections_other: Gauge,
    pub events_delivered: Counter,
    pub events_replayed: Counter,
    pub publish_to_write: Histogram,
    pub publish_duration: Histogram,
    /// By [`PUBLISH_SOURCES`].
    published: Vec<Counter>,
    /// By [`DISCONNECT_REASONS`].
    disconnects: Vec<Counter>,
    /// The requests every subscriber and every publisher makes.
    http: [HttpSeries; 2],
}

/// One `method`/`route`/`status` series of [`HTTP_REQUESTS`] and the duration
/// series of its method and route.
#[derive(Debug)]
struct HttpSeries {
    method: &'static str,
    route: &'static str,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl HttpSeries {
    fn register(method: &'static str, route: &'static str, status: u16) -> Self {
        Self {
            method,
            route,
            status,
            requests: metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route, "status" => status.to_string()),
            duration: metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route),
        }
    }
}

static SERIES: OnceLock<Series> = OnceLock::new();

/// The hot series. Before [`install_recorder`] (unit tests), handles of the
/// recorder in place then, which without one record nothing, as `counter!` would.
pub fn series() -> &'static Series {
    static UNINSTALLED: OnceLock<Series> = OnceLock::new();
    SERIES
        .get()
        .unwrap_or_else(|| UNINSTALLED.get_or_init(Series::register))
}

impl Series {
    fn register() -> Self {
        Self {
            connections_open: metrics::gauge!(CONNECTIONS_OPEN),
            connections_total: metrics::counter!(CONNECTIONS_TOTAL),
            subscriptions_open: metrics::gauge!(SUBSCRIPTIONS_OPEN),
            tcp_connections_other: metrics::gauge!(TCP_CONNECTIONS_OTHER),
            events_delivered: metrics::counter!(EVENTS_DELIVERED),
            events_replayed: metrics::counter!(EVENTS_REPLAYED),
            publish_to_write: metrics::histogram!(PUBLISH_TO_WRITE),
            publish_duration: metrics::histogram!(PUBLISH_DURATION),
            published: PUBLISH_SOURCES
                .iter()
                .map(|source| metrics::counter!(EVENTS_PUBLISHED, "source" => *source))
                .collect(),
            disconnects: DISCONNECT_REASONS
                .iter()
                .map(|reason| metrics::counter!(DISCONNECTS, "reason" => *reason))
                .collect(),
            http: [
                HttpSeries::register("GET", "/events", 200),
                HttpSeries::register("POST", "/events", 200),
            ],
        }
    }

    /// Counts `count` events in by `source`, one of [`PUBLISH_SOURCES`].
    pub fn published(&self, source: &'static str, count: u64) {
        match PUBLISH_SOURCES.iter().position(|known| *known == source) {
            Some(index) => self.published[index].increment(count),
            None => metrics::counter!(EVENTS_PUBLISHED, "source" => source).increment(count),
        }
    }

    /// Counts a stream ended for `reason`, one of [`DISCONNECT_REASONS`].
    pub fn disconnected(&self, reason: &'static str) {
        match DISCONNECT_REASONS.iter().position(|known| *known == reason) {
            Some(index) => self.disconnects[index].increment(1),
            None => metrics::counter!(DISCONNECTS, "reason" => reason).increment(1),
        }
    }

    fn http(&self, method: &str, route: &str, status: u16) -> Option<&HttpSeries> {
        self.http
            .iter()
            .find(|series| series.status == status && series.method == method && series.route == route)
    }
}

/// How often the server drains histogram buffers (`PrometheusHandle::run_upkeep`)
/// and the node refreshes its gauges, so nothing grows between scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A request's route template, as its metrics and access-log line name it.
pub fn route_name(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", MatchedPath::as_str)
}

/// Standard methods by name; anything else as `other`, keeping the label bounded.
fn bounded_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Counts a request by route template and times it to the response head: a step of
/// the router's one middleware (`router::AroundRequests`). Started before the route
/// runs, finished with its response.
#[derive(Debug)]
pub struct HttpTimer {
    started: Instant,
    method: &'static str,
    route: Option<MatchedPath>,
}

impl HttpTimer {
    pub fn start(request: &Request) -> Self {
        Self {
            started: Instant::now(),
            method: bounded_method(request.method()),
            route: request.extensions().get::<MatchedPath>().cloned(),
        }
    }

    pub fn finish(self, response: &Response) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let (method, status) = (self.method, response.status().as_u16());
        let route = route_name(self.route.as_ref());
        match series().http(method, route, status) {
            Some(series) => {
                series.requests.increment(1);
                series.duration.record(elapsed);
            }
            None => {
                let route = route.to_owned();
                metrics::counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status.to_string())
                    .increment(1);
                metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route).record(elapsed);
            }
        }
    }
}
