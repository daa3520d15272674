//! The access log: one `info` line per request (target `access`) with the method,
//! the route template (never the raw path or query, which may carry a token), the
//! status, the time to the response head and the token's subject. Authentication
//! records the subject with [`record_subject`] (a task-local the layer sets around
//! the request, so no handler has to pass it along).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;

/// The subject a request authenticated as, once known.
#[derive(Debug, Clone, Default)]
struct RequestSubject(Arc<OnceLock<Box<str>>>);

impl RequestSubject {
    fn get(&self) -> &str {
        self.0.get().map_or("-", |sub| sub)
    }
}

tokio::task_local! {
    static SUBJECT: RequestSubject;
}

/// Records the token's `sub` for the access-log line of the current request (a
/// token without `sub` is logged as `-`; outside a logged request, nothing).
pub fn record_subject(sub: Option<&str>) {
    if let Some(sub) = sub {
        let _ = SUBJECT.try_with(|subject| subject.0.set(sub.into()));
    }
}

/// The access log (`log.access`), a step of the router's one middleware
/// (`router::around_requests`). Costs nothing beyond a level check when the log's
/// filter drops its lines (`level = "warn"`, or `access=warn`).
pub async fn log_requests<F: Future<Output = Response>>(request: Request, next: impl FnOnce(Request) -> F) -> Response {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return next(request).await;
    }
    let started = Instant::now();
    let subject = RequestSubject::default();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let version = request.version();
    let response = SUBJECT.scope(subject.clone(), next(request)).await;
    tracing::info!(
        target: "access",
        %method,
        route,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        subject = subject.get(),
        version = ?version,
        "request"
    );
    response
}
