//! sse-gateway: an authenticated, multi-topic Server-Sent Events gateway.
//!
//! **Publish:** `POST /events` → [`api::publish`] authenticates (publish claim),
//! parses and validates the whole batch → [`backend::Backend::publish`] assigns ids,
//! appends to replay history and hands each once-encoded [`event::Frame`] to the
//! local [`stream::StreamRegistry`] → every subscriber's bounded queue → 2xx reply.
//!
//! **Subscribe:** `GET /events` → [`api::subscribe`] authenticates (subscribe claim
//! covers every stream) → [`subscription::Subscription`] attaches live queues and
//! reads the replay after `Last-Event-ID` in one step, sends a gap notice when
//! completeness is unproven, drops duplicates at the seam, then streams live frames
//! with heartbeats until disconnect, overflow, token expiry or shutdown.
//!
//! The registry only fans out locally; the backend only stores and moves events;
//! neither knows HTTP. Handlers translate HTTP to calls and results to HTTP.
//!
//! Modules:
//! - [`config`]: the `config.toml` tree, environment overrides, validation.
//! - [`cli`]: `serve` and `token`.
//! - [`server`]: `run` — state, router, ordered shutdown (used by `main` and tests).
//! - [`app`]: `AppState` and the router with every route and layer.
//! - [`shutdown`]: signals, draining flag, stream cancellation.
//! - [`error`]: `ApiError` → HTTP status and body, the error policy.
//! - [`auth`]: JWT verification, claims and patterns, token sources, minting.
//! - [`stream`]: stream names, replay buffers, the local fan-out registry.
//! - [`event`]: events, ids and the id-ordering contract.
//! - [`limits`]: per-subject connection and publish-rate limits, node subscribe rate.
//! - [`subscription`]: one connection from attach to end.
//! - [`sse`]: the wire format, encoded once.
//! - [`backend`]: the `Backend` trait and the in-memory backend.
//! - [`api`]: HTTP handlers (subscribe, publish, webhooks, health, demo page).
//! - [`demo`]: the sample publisher behind the demo page.
//! - [`metrics`]: metric names, recorder, HTTP layer, `/metrics`.

pub mod api;
pub mod app;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod connection;
pub mod demo;
pub mod error;
pub mod event;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod stream;
pub mod subscription;
