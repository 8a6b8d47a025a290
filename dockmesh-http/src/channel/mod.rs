//! The agent channel: reversed HTTP/2 over mutually authenticated TLS 1.3.
//!
//! The agent dials the server's agent listener (TCP, then TLS 1.3 with its client certificate;
//! ALPN names the protocol version, `dockmesh/N`). On that stream the roles of HTTP/2 are
//! reversed: the **agent serves** an axum [`Router`](axum::Router) with
//! `hyper::server::conn::http2`, and the **server is the HTTP/2 client**
//! (`hyper::client::conn::http2::handshake`), holding one `SendRequest` per agent. HTTP/2 brings
//! multiplexing, flow control and PING keep-alives (dead-peer detection); nothing here frames
//! or multiplexes by hand.
//!
//! What works:
//! - server side ([`server`]): [`AgentListener`] accepts TCP and hands each connection to
//!   [`AgentAcceptor::accept`]: the TLS handshake under a timeout (`WebPkiClientVerifier` over
//!   the built-in CA, TLS 1.3 only), the agent id read from the client certificate, the agent's
//!   protocol judged by core's N/N−1 rule (a refused agent completes the handshake, so it is
//!   authenticated and named, then gets [`AcceptError::Refused`] with core's reason), then the
//!   HTTP/2 client handshake with keep-alive. [`ConnectedAgents`] keeps one live connection per
//!   agent id: a newer one replaces (and closes) the old, a closed one is removed.
//! - agent side ([`agent`]): [`AgentConnector`] dials with its certificate and the CA, and
//!   [`AgentSession::serve`] serves a router over the stream; [`agent_router`] is the agent API
//!   of this slice: `GET /v1/hello`.
//! - [`AgentConnection::hello`] calls the agent's hello over the reversed channel.
//! - [`agent_api`](mod@agent_api) (agent side): every `HostRuntime` method as a `/v1/…` route over an injected
//!   runtime, volume data streamed both ways; [`RemoteHost`] (server side): `HostRuntime` over an
//!   [`AgentConnection`] (or over whichever connection an agent has in [`ConnectedAgents`]),
//!   rebuilding the agent's errors; the core conformance suite passes against it in-process.
//!   [`wire`] holds what both ends agree on.
//!
//! - [`AgentGate`]: the server's admission of an authenticated agent (the store's agent
//!   registry, `crate::agents`); a refused agent is told why (`POST /v1/refused`) before the
//!   connection closes, so it can stop rather than retry.
//!
//! - [`renew`]: the server renews an agent's certificate over the channel before it expires.
//!
//! - [`upgrade`]: the agent takes an upgrade order (`POST /v1/upgrade`) and hands it to the
//!   binary's [`upgrade::AgentUpgrader`].
//!
//! - the agent streams its host's events (`GET /v1/events`, JSON lines, [`wire::event_lines`])
//!   while the server holds the request open (`crate::events`).
//!
//! - [`resume`]: an agent's imports outlive a broken request (and, kept on disk by [`spool`], a
//!   restart of the agent) and go on from the byte they took in.
//!
//! The agent's reconnect loop lives in the binary (`dockmesh agent`).

pub mod agent;
pub mod agent_api;
pub mod compress;
pub mod remote;
pub mod renew;
pub mod resume;
pub mod server;
pub mod spool;
pub mod upgrade;
pub mod wire;

pub use agent::{AgentConnector, AgentSession, ConnectError, agent_router};
pub use agent_api::{agent_api, agent_api_with};
pub use remote::RemoteHost;
pub use server::{
    AcceptError, AgentAcceptor, AgentConnection, AgentGate, AgentListener, CallError,
    ConnectedAgents,
};

use std::time::Duration;

/// Timeouts of the channel, on both ends.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// How long a TCP connection may take to complete the TLS handshake.
    pub handshake_timeout: Duration,
    /// How often an HTTP/2 PING is sent on a connection.
    pub keep_alive_interval: Duration,
    /// How long a PING may go unanswered before the peer is taken for dead; a dead peer is
    /// noticed within `keep_alive_interval + keep_alive_timeout`.
    pub keep_alive_timeout: Duration,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            handshake_timeout: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(30),
        }
    }
}
