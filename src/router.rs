//! `router()`: every route and layer in one place.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::access_log;
use crate::api::{self, demo, health, publish, revocations, streams, subscribe, webhook};
use crate::config::Config;
use crate::error;
use crate::metrics;
use crate::state::AppState;

/// The public router: events, health, and `/metrics` unless it has its own address.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route(
            "/events",
            get(subscribe::open_subscription).post(publish::publish_events),
        )
        .route("/streams/{name}", get(streams::stream_position))
        .route("/revocations", post(revocations::revoke))
        .route("/webhooks/{stream}", post(webhook::receive_webhook))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if state.config.demo.enabled {
        router = router
            .route("/", get(demo::index))
            .route("/demo", get(demo::demo_page))
            .route("/demo/token", get(demo::demo_token));
    }
    if state.config.metrics.enabled && state.config.metrics.addr.is_none() {
        router = router.route("/metrics", get(api::metrics::render_metrics));
    }
    let cors = cors_layer(&state.config);
    let mut router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn(api::require_one_host));
    if state.config.log.access {
        router = router.layer(axum::middleware::from_fn(access_log::log_requests));
    }
    let router = router
        .layer(axum::middleware::from_fn(metrics::track_http))
        // A bug must cost one request a 500, never the connection or the process.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(trace_layer())
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// The router of the separate metrics listener (`metrics.addr`).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(api::metrics::render_metrics))
        .fallback(error::not_found)
        .with_state(state)
}

/// Request spans carry the method and the path, never the query (it may carry a
/// token, and stream names are the access log's business only as a route template).
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&Request<axum::body::Body>) -> tracing::Span + Clone,
> {
    TraceLayer::new_for_http().make_span_with(|request: &Request<axum::body::Body>| {
        tracing::info_span!(
            "http",
            method = %request.method(),
            path = %request.uri().path(),
        )
    })
}

/// CORS stays closed unless `cors.allowed_origins` lists origins.
fn cors_layer(config: &Config) -> Option<CorsLayer> {
    let cors = &config.cors;
    if cors.allowed_origins.is_empty() {
        return None;
    }
    let origins = if cors.allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .allow_credentials(cors.allow_credentials),
    )
}
