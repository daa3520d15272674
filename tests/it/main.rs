//! The one integration-test binary: every test starts the real gateway on port 0
//! and speaks HTTP to it.

#![expect(
    unreachable_pub,
    reason = "support items are shared by the modules of this one test binary"
)]

mod attacks;
mod auth;
mod browser;
mod cli;
mod conformance;
mod delivery;
mod demo;
mod disk;
mod dockerfile;
mod failover;
mod faults;
mod hardening;
mod ingest;
mod interop;
mod jwks;
mod limits;
mod metrics;
mod operations;
mod patterns;
mod publish;
mod readme;
mod redis;
mod replay;
mod subscribe;
mod support;
mod tls;
mod tokens;
mod webhook;
mod wire;
