//! sse-gateway: an authenticated, multi-topic Server-Sent Events gateway.
//!
//! **Publish:** every way in (`POST /events` in [`api::publish`], webhooks in
//! [`api::webhook`], the [`demo`] publisher) turns its input into validated
//! [`event::NewEvent`]s and calls [`node::Node::publish`] once: draining check,
//! permission, sizes, rate limit, replay keys, then [`broker::Broker::publish`]
//! assigns ids and appends to history, and the broker pushes each once-encoded
//! [`frame::Frame`] into the local [`stream::StreamRegistry`] in id order → every
//! subscriber's bounded queue; metrics and pacing, then the reply.
//!
//! **Subscribe:** `GET /events` → [`api::subscribe`] authenticates and parses →
//! [`node::Node::subscribe`]: admission (slots), attach a queue to the registry,
//! [`broker::Broker::listen`], [`broker::Broker::read`], gap logic in [`history`]
//! → a [`subscription::Subscription`] that writes the gap notice, the replay and
//! live frames (dropping seam duplicates) with heartbeats until disconnect,
//! overflow, token expiry or shutdown.
//!
//! Dependencies point one way: handlers → node → broker → history / stream /
//! event. The registry only fans out locally; brokers only assign ids, keep history
//! and move events; neither knows HTTP.
//!
//! Modules:
//! - [`config`]: the `config.toml` tree (one file per section), environment overrides, validation.
//! - [`cli`]: `serve` and `token`.
//! - [`server`]: `run` (state, router, ordered shutdown); the accept loop, the lean
//!   event-stream path, the pool of non-event-stream connections.
//! - [`state`]: `AppState`, the handlers' handle. [`router`]: every route and layer.
//! - [`connection`]: a client connection as handlers see it.
//! - [`access_log`]: one line per request, with the subject handlers record.
//! - [`shutdown`]: signals, draining flag, stream cancellation.
//! - [`error`]: `ApiError` → HTTP status and body, the error policy.
//! - [`auth`]: JWT verification (static keys and JWKS), claims, token sources, minting, webhook secrets.
//! - [`node`]: the one publish path, the one subscribe path, and revocation.
//! - [`broker`]: the `Broker` trait; `memory`, `disk` and `redis`.
//! - [`revocation`]: revocations in force and the live streams they end.
//! - [`history`]: history reads and the gap logic.
//! - [`stream`]: stream names, replay buffers, the local fan-out registry.
//! - [`event`]: events, ids and the id-ordering contract.
//! - [`frame`]: an event encoded once (record and envelope) for every subscriber.
//! - [`body`]: publish bodies (JSON, form) parsed into events.
//! - [`limits`]: connection, subject, rate and body-budget limits.
//! - [`idempotency`]: replies remembered by key.
//! - [`subscription`]: one connection's event stream from first bytes to end.
//! - [`sse`]: the wire format, encoded once.
//! - [`api`]: HTTP handlers (subscribe, publish, positions, revocations, webhooks, health, metrics, demo page).
//! - [`demo`]: the sample publisher behind the demo page.
//! - [`ingest`]: ways in besides HTTP (UDP datagrams, an AMQP consumer), glue over the node.
//! - [`metrics`]: metric names, recorder, HTTP layer.

/// `VERSION (REVISION)`: the crate version and the git revision it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SSE_GATEWAY_REVISION"), ")");

/// The git revision the binary was built from (`unknown` outside a checkout).
pub const REVISION: &str = env!("SSE_GATEWAY_REVISION");

pub mod access_log;
pub mod api;
pub mod auth;
pub mod body;
pub mod broker;
pub mod chunked;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod error;
pub mod event;
pub mod frame;
pub mod history;
pub mod idempotency;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod revocation;
pub mod router;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod stream;
pub mod subscription;
