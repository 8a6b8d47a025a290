//! The agent runtime: what runs on a host and serves the agent API over the channel.
//!
//! - [`connector`]: [`AgentConnector`] dials the server with the agent's certificate and the
//!   CA, and [`AgentSession::serve`] serves a router over the stream as the HTTP/2 server;
//!   [`agent_router`] answers `GET /v1/hello`.
//! - [`api`]: every `HostRuntime` method as a `/v1/…` route over an injected runtime, volume
//!   data streamed both ways.
//! - [`resume`]: imports outlive a broken request (and, kept on disk by [`spool`], a restart
//!   of the agent) and go on from the byte they took in.
//! - [`renew`]: the agent's half of renewing its certificate.
//! - [`agent_upgrade`]: the agent takes an upgrade order (`POST /v1/upgrade`) and hands it to
//!   an injected [`agent_upgrade::AgentUpgrader`]; [`self_upgrade`] is the agent's own
//!   (download, checks, swap, watchdog), deciding through `dockmesh_core::agent_upgrade`.
//! - the agent streams its host's events (`GET /v1/events`, JSON lines,
//!   [`crate::channel::wire::event_lines`]) while the server holds the request open.
//!
//! - [`daemon`]: the agent as a whole: [`daemon::Agent`] enrolls (or loads its state
//!   directory), then serves an injected `HostRuntime` to the server, reconnecting.

pub mod agent_upgrade;
pub mod api;
pub mod connector;
pub mod daemon;
pub mod renew;
pub mod resume;
pub mod self_upgrade;
pub mod spool;

pub use api::{agent_api, agent_api_with};
pub use connector::{AgentConnector, AgentSession, ConnectError, agent_router};

/// An error and its causes, on one line (a cause already in the text is not repeated).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}
