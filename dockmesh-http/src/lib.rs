//! dockmesh's HTTP adapter, by product: the reference **server** ([`server`]), the **agent**
//! runtime ([`agent`]), and the **channel** both speak ([`channel`]).
//!
//! - [`server`]: the REST API (axum, with an OpenAPI document generated from the handlers),
//!   API-token authentication and scopes, the web dashboard served beside the API, the migration
//!   supervisor that drives every migration to its end and resumes them after a restart, drains,
//!   the agent rollout evaluator, stack upgrades, the host registry (hosts, snapshots, host
//!   events, admitted agents), health, readiness and metrics, and the agent listener. The binary
//!   opens a [`dockmesh_core::ports::Store`], builds one [`dockmesh_core::ports::HostRuntime`] per
//!   host, and hands both to [`server::ServerState::new`]; then [`server::serve()`] answers HTTP
//!   (or HTTPS: [`server::serve_with`], [`server::tls`]) until its shutdown future resolves.
//! - [`agent`]: what runs on a host: the agent API over an injected `HostRuntime`
//!   ([`agent::api`]), resumable imports kept on disk ([`agent::resume`], [`agent::spool`]),
//!   the agent's end of the channel ([`agent::connector`]), its half of certificate renewal,
//!   the hand-over of upgrade orders ([`agent::agent_upgrade`]) and the agent's own upgrade
//!   ([`agent::self_upgrade`]); [`agent::daemon::Agent`] runs it all (enroll, then serve and
//!   reconnect).
//! - [`channel`]: what both ends agree on: the wire types and streams, compression, the
//!   built-in CA ([`channel::pki`]), enrollment, signed agent binaries
//!   ([`channel::agent_binaries`]), TLS client trust, and the server's client end of the
//!   reversed HTTP/2 channel: `channel::RemoteHost` is a `HostRuntime` over an agent's
//!   connection.
//!
//! Cargo features `server` and `agent` (both default) choose the products: without `server`
//! there is no [`server`] module, no `channel::{connection, remote}`, and no askama, utoipa,
//! cookie, governor or tower-http; without `agent` there is no [`agent`] module.
//!
//! **Architecture Invariant:** this crate depends on `dockmesh-core` and on no other adapter.
//!
//! **Architecture Invariant:** `server` and `agent` do not use each other; what both need is in
//! `channel`.
//!
//! **Architecture Invariant:** every state change goes through the core driver, which persists
//! it before acting; the supervisor keeps only progress counters in memory, so a restarted
//! server resumes from the store.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "agent")]
pub mod agent;
pub mod channel;
#[cfg(feature = "server")]
pub mod server;
