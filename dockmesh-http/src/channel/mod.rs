//! The agent channel: reversed HTTP/2 over mutually authenticated TLS 1.3, and what both of
//! its ends agree on.
//!
//! The agent dials the server's agent listener (TCP, then TLS 1.3 with its client certificate;
//! ALPN names the protocol version, `dockmesh/N`). On that stream the roles of HTTP/2 are
//! reversed: the **agent serves** an axum [`Router`](axum::Router) with
//! `hyper::server::conn::http2` (`crate::agent::connector`), and the **server is the HTTP/2
//! client** (`hyper::client::conn::http2::handshake`), holding one `SendRequest` per agent
//! ([`AgentConnection`], accepted by `crate::server::agent_listener`). HTTP/2 brings
//! multiplexing, flow control and PING keep-alives (dead-peer detection); nothing here frames
//! or multiplexes by hand.
//!
//! - [`wire`]: the paths, bodies and streams both ends agree on; [`compress`]: zstd volume
//!   streams.
//! - [`connection`]: the server's client end: [`AgentConnection::hello`] calls the agent's
//!   hello; [`ConnectedAgents`] keeps one live connection per agent id (a newer one replaces
//!   and closes the old, a closed one is removed).
//! - [`RemoteHost`] ([`remote`]): `HostRuntime` over an [`AgentConnection`] (or over whichever
//!   connection an agent has in [`ConnectedAgents`]), rebuilding the agent's errors; the core
//!   conformance suite passes against it in-process.
//! - [`pki`]: the built-in CA; [`enroll`]: enrollment tokens and the enrollment exchange;
//!   [`tls`]: how a client trusts the server.
//! - [`agent_binaries`]: signed agent binaries (the server offers them, the agent checks them).
//! - [`private`]: directories for secrets (0700), on both ends; [`files`]: the one atomic
//!   write, binary swap and version probe.

pub mod agent_binaries;
pub mod compress;
#[cfg(feature = "server")]
pub mod connection;
pub mod enroll;
pub mod files;
pub mod pki;
pub mod private;
#[cfg(feature = "server")]
pub mod remote;
pub mod tls;
pub mod wire;

#[cfg(feature = "server")]
pub use connection::{AgentConnection, CallError, ConnectedAgents};
#[cfg(feature = "server")]
pub use remote::RemoteHost;

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
