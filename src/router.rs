//! `router()`: every route and layer in one place.
//!
//! Layers sit outside the router where they can: axum's `Router::layer` makes each
//! one a boxed service that is cloned, with every layer inside it, on every request
//! (18 boxed clones per request with five layers; callgrind). What needs the route
//! template (metrics, the access log) and what those must see (the `Host` check)
//! is one middleware inside it; panics, tracing and CORS wrap the router once.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, Response, header};
use axum::routing::{get, post};
use futures::FutureExt as _;
use futures::future::{BoxFuture, Either};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::access_log;
use crate::api::{self, demo, health, publish, revocations, streams, subscribe, webhook};
use crate::config::Config;
use crate::error;
use crate::metrics;
use crate::state::AppState;

/// What serves requests: the router inside its layers, boxed once.
pub type AppService = BoxCloneSyncService<Request, Response<Body>, Infallible>;

/// The public router: events, health, and `/metrics` unless it has its own address.
pub fn router(state: AppState) -> AppService {
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
    let router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(AroundRequests {
            access_log: state.config.log.access,
        })
        .with_state(state);
    let service = ServiceBuilder::new()
        .layer(trace_layer())
        // A bug must cost one request a 500, never the connection or the process.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service(router)
        .map_response(|response| response.map(Body::new));
    match cors {
        Some(cors) => BoxCloneSyncService::new(cors.layer(service)),
        None => BoxCloneSyncService::new(service),
    }
}

/// The router's one middleware, around every route: request metrics, the access log
/// and the `Host` check (each step lives with its concern). A tower `Service` rather
/// than `axum::middleware::from_fn`, which clones the inner route and boxes two
/// futures per request; this runs the steps before the route synchronously and boxes
/// one small future. Callgrind of 4,000 connects: the router's future 19.2k → 18.4k
/// instructions per new subscriber, inclusive (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
struct AroundRequests {
    access_log: bool,
}

impl<S> Layer<S> for AroundRequests {
    type Service = AroundRequestsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AroundRequestsService {
            inner,
            access_log: self.access_log,
        }
    }
}

#[derive(Debug, Clone)]
struct AroundRequestsService<S> {
    inner: S,
    access_log: bool,
}

impl<S> Service<Request> for AroundRequestsService<S>
where
    S: Service<Request, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let timer = metrics::HttpTimer::start(&request);
        let entry = if self.access_log {
            access_log::AccessEntry::start(&request)
        } else {
            None
        };
        let routed = match api::host_rejection(&request) {
            Some(rejection) => Either::Left(std::future::ready(rejection)),
            None => Either::Right(self.inner.call(request).map(|response| match response {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            })),
        };
        Box::pin(async move {
            let response = match entry {
                Some(entry) => entry.around(routed).await,
                None => routed.await,
            };
            timer.finish(&response);
            Ok(response)
        })
    }
}

/// The router of the separate metrics listener (`metrics.addr`).
pub fn metrics_router(state: AppState) -> AppService {
    BoxCloneSyncService::new(
        Router::new()
            .route("/metrics", get(api::metrics::render_metrics))
            .fallback(error::not_found)
            .with_state(state),
    )
}

/// Request spans carry the method and the path, never the query (it may carry a
/// token, and stream names are the access log's business only as a route template).
fn trace_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&Request) -> tracing::Span + Clone,
> {
    TraceLayer::new_for_http().make_span_with(|request: &Request| {
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
