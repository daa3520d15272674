//! `TestServer`: the production `server::run` on 127.0.0.1:0, plus HTTP helpers.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::Value;
use sse_gateway::auth::Claims;
use sse_gateway::auth::mint::{SigningKey, mint};
use sse_gateway::config::{Config, Secret};
use sse_gateway::server::{self, Listeners, ServerError};
use sse_gateway::stream::StreamPattern;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{SseStream, within};

/// The HS256 secret every test server uses unless a test says otherwise.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// Defaults with a known secret and a short grace period.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.server.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.shutdown_grace = Duration::from_secs(5);
    config.auth.hs256_secret = Some(Secret::new(SECRET));
    // Tests that want sample events turn the demo publisher on themselves.
    config.demo.publisher = false;
    config
}

/// A running gateway.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Where `[ingest.udp]` listens, when enabled.
    pub udp_addr: Option<SocketAddr>,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let main = TcpListener::bind(config.server.addr).await.expect("bind main listener");
        let metrics = match config.metrics.addr {
            Some(addr) if config.metrics.enabled => Some(TcpListener::bind(addr).await.expect("bind metrics")),
            _ => None,
        };
        let addr = main.local_addr().unwrap();
        let metrics_addr = metrics.as_ref().map(|l| l.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
        };
        let udp = server::bind_udp(&config).expect("bind UDP ingest");
        let udp_addr = udp.as_ref().map(|socket| socket.local_addr().unwrap());
        let task = tokio::spawn(server::run(config, Listeners { main, metrics, udp }, signal));
        Self {
            addr,
            metrics_addr,
            udp_addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn start_default() -> Self {
        Self::start(test_config()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An HS256 token for `sub` granting the given patterns, valid for an hour.
    pub fn token(&self, subscribe: &[&str], publish: &[&str]) -> String {
        token_with(|claims| {
            claims.subscribe = patterns(subscribe);
            claims.publish = patterns(publish);
        })
    }

    /// Publishes one JSON event and returns its id.
    pub async fn publish(&self, stream: &str, event: Option<&str>, data: Value) -> String {
        let mut body = serde_json::json!({ "stream": stream, "data": data });
        if let Some(event) = event {
            body["event"] = event.into();
        }
        let reply = self.post_json(&body).await;
        assert_eq!(reply.0, StatusCode::OK, "publish failed: {}", reply.1);
        reply.1["id"].as_str().expect("reply has an id").to_owned()
    }

    /// POSTs `body` with a token that may publish anywhere.
    pub async fn post_json(&self, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.url("/events"))
            .bearer_auth(self.token(&[], &["*"]))
            .json(body)
            .send()
            .await
            .expect("publish request");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Opens `GET /events` for `streams` with a token that may subscribe anywhere.
    pub async fn subscribe(&self, streams: &[&str], last_event_id: Option<&str>) -> SseStream {
        self.open_url(&self.events_url(streams), last_event_id).await
    }

    /// Opens an event stream at `url` (a full `/events?…` URL) with a token that may
    /// subscribe anywhere.
    pub async fn open_url(&self, url: &str, last_event_id: Option<&str>) -> SseStream {
        let mut request = self.http.get(url).bearer_auth(self.token(&["*"], &[]));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = within("subscribe response", request.send())
            .await
            .expect("subscribe request");
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            panic!("subscribe failed with {status}: {body}");
        }
        SseStream::new(response)
    }

    /// `GET /events` for `streams` with `token` as bearer token, whatever the answer.
    pub async fn get_events(&self, streams: &[&str], token: impl std::fmt::Display) -> reqwest::Response {
        self.http
            .get(self.events_url(streams))
            .bearer_auth(token)
            .send()
            .await
            .expect("subscribe request")
    }

    pub fn events_url(&self, streams: &[&str]) -> String {
        let query: Vec<String> = streams.iter().map(|s| format!("stream={s}")).collect();
        self.url(&format!("/events?{}", query.join("&")))
    }

    /// Current value of a metric series (0 when absent), from `/metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics_text().await, series)
    }

    /// The whole `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        let base = self
            .metrics_addr
            .map_or_else(|| self.url(""), |addr| format!("http://{addr}"));
        let response = self.http.get(format!("{base}/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// Status of `GET url` sending `cookie` as the `Cookie` header.
    pub async fn status_with_cookie(&self, url: &str, cookie: &str) -> reqwest::StatusCode {
        let response = self.http.get(url).header("Cookie", cookie).send().await.unwrap();
        response.status()
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.stop.take().map(|stop| stop.send(()));
        let task = self.task.take().expect("not stopped yet");
        within("server shutdown", task).await.expect("server task")
    }

    /// Triggers shutdown without waiting.
    pub fn begin_stop(&mut self) {
        self.stop.take().map(|stop| stop.send(()));
    }

    /// Waits for `run` to return after [`TestServer::begin_stop`].
    pub async fn join(mut self) -> Result<(), ServerError> {
        let task = self.task.take().expect("not joined yet");
        within("server shutdown", task).await.expect("server task")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Sum of the samples of `series` (a metric name, optionally with `{labels}` to match).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(name, _)| *name == series || (!series.contains('{') && name.starts_with(&format!("{series}{{"))))
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .sum()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn patterns(list: &[&str]) -> Vec<StreamPattern> {
    list.iter()
        .map(|p| StreamPattern::try_new(p).expect("valid pattern"))
        .collect()
}

/// Signs claims (sub `tester`, an hour of validity) adjusted by `adjust`, with [`SECRET`].
pub fn token_with(adjust: impl FnOnce(&mut Claims)) -> String {
    let mut claims = Claims {
        sub: Some("tester".to_owned()),
        exp: Some(now() + 3600),
        ..Claims::default()
    };
    adjust(&mut claims);
    mint(&claims, &SigningKey::hs256(SECRET)).expect("mint")
}
