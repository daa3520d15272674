//! The access log: one `info` line per request (target `access`) with the method,
//! the route template (never the raw path or query, which may carry a token), the
//! status, the time to the response head and the token's subject. Authentication
//! records the subject with [`record_subject`] (a task-local the layer sets around
//! the request, so no handler has to pass it along).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Version};
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

/// One request's access-log line (`log.access`), a step of the router's one
/// middleware (`router::AroundRequests`). `None` when the log's filter drops its
/// lines (`level = "warn"`, or `access=warn`): then it costs a level check.
#[derive(Debug)]
pub struct AccessEntry {
    started: Instant,
    subject: RequestSubject,
    route: Option<MatchedPath>,
    method: Method,
    version: Version,
}

impl AccessEntry {
    pub fn start(request: &Request) -> Option<Self> {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return None;
        }
        Some(Self {
            started: Instant::now(),
            subject: RequestSubject::default(),
            route: request.extensions().get::<MatchedPath>().cloned(),
            method: request.method().clone(),
            version: request.version(),
        })
    }

    /// Runs `routed` where [`record_subject`] reaches this entry, then writes the line.
    pub async fn around(self, routed: impl Future<Output = Response>) -> Response {
        let response = SUBJECT.scope(self.subject.clone(), routed).await;
        tracing::info!(
            target: "access",
            method = %self.method,
            route = crate::metrics::route_name(self.route.as_ref()),
            status = response.status().as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            subject = self.subject.get(),
            version = ?self.version,
            "request"
        );
        response
    }
}
