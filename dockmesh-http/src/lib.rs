//! dockmesh's reference server over the ports: the REST API (axum, with an OpenAPI document
//! generated from the handlers), API-token authentication, the migration supervisor that drives
//! every migration to its end and resumes them after a restart, health, readiness and metrics.
//!
//! The binary assembles it: it opens a [`dockmesh_core::ports::Store`], builds one
//! [`dockmesh_core::ports::HostRuntime`] per host, and hands both to [`ServerState::new`]; then
//! [`serve`] answers HTTP (or HTTPS: [`serve_with`], [`tls`]) until its shutdown future
//! resolves.
//!
//! Agents: the built-in CA ([`pki`]), enrollment ([`enroll`], `POST /api/v1/agents/enroll`),
//! the channel ([`channel`]: mTLS 1.3, reversed HTTP/2, both ends; `channel::RemoteHost` is
//! a `HostRuntime` over an agent's connection) and the registry that admits agents
//! ([`agents`]). Agent upgrades: signed binaries ([`release`]) and the rollout evaluator
//! that sends them ([`rollout`]). What hosts report as it happens ([`events`]): each host's
//! event stream held open, its recent events kept.
//!
//! The server's operations ([`ops`]) hold what each request does; the API's handlers
//! ([`api`]) and the web dashboard ([`web`], served at `/` beside the API: server-rendered
//! pages) both call them.
//!
//! **Architecture Invariant:** this crate depends on `dockmesh-core` and on no other adapter.
//!
//! **Architecture Invariant:** every state change goes through the core driver, which persists
//! it before acting; the supervisor keeps only progress counters in memory, so a restarted
//! server resumes from the store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agents;
pub mod api;
pub mod auth;
pub mod channel;
pub mod drains;
pub mod enroll;
pub mod error;
pub mod events;
pub mod host_policy;
pub mod hosts;
pub mod limit;
pub mod metrics;
pub mod ops;
pub mod pki;
pub mod private;
pub mod release;
pub mod rollout;
pub mod scope;
pub mod server;
pub mod snapshots;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod upgrades;
pub mod web;

pub use hosts::Hosts;
pub use server::{ServeError, serve, serve_with};
pub use state::{Lifecycle, ServerConfig, ServerState};
