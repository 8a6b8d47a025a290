//! Why an agent could not enroll, load its state or run.

use super::state::STATE_FILE;
use crate::agent::ConnectError;
use crate::agent::self_upgrade::SelfUpgradeError;
use crate::channel::agent_binaries::ReleaseError;
use crate::channel::files::FilesError;
use crate::channel::private::PrivateDirError;
use crate::channel::tls::TlsError;
use std::path::PathBuf;

/// Why the agent could not enroll, load its state or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// There is no enrollment and nothing to enroll with.
    #[error("this agent is not enrolled yet (no {STATE_FILE} in {})", state_dir.display())]
    NotEnrolled {
        /// The state directory.
        state_dir: PathBuf,
    },
    /// The state directory cannot be made private.
    #[error("the agent's state directory cannot be made private")]
    PrivateDir(#[from] PrivateDirError),
    /// No name to enroll under.
    #[error("this host has no name to enroll under")]
    NoName,
    /// The enrollment token is unusable.
    #[error("the enrollment token is unusable")]
    Token(#[source] crate::channel::enroll::EnrollError),
    /// The agent's key could not be made.
    #[error("making the agent's key failed")]
    Key(#[source] crate::channel::pki::PkiError),
    /// The TLS configuration trusting the server could not be made.
    #[error("trusting the server failed")]
    Trust(#[source] TlsError),
    /// Enrolling over plain HTTP with a server that is not on this machine.
    #[error("enrolling with {server} sends the token, so it needs https://")]
    PlainHttp {
        /// The server's address.
        server: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    Client(#[source] reqwest::Error),
    /// The server could not be reached (or was not trusted).
    #[error("cannot enroll with the dockmesh server at {server}: {reason}")]
    Unreachable {
        /// The server's address.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server refused the enrollment.
    #[error("the server refused the enrollment ({status}): {reason}")]
    EnrollmentRefused {
        /// The HTTP status.
        status: String,
        /// The server's reason.
        reason: String,
    },
    /// The server's answer is not an enrollment.
    #[error("the server's answer to the enrollment is not understood")]
    Answer(#[source] serde_json::Error),
    /// The server's CA is not the one the token names.
    #[error(
        "the server at {server} presented a CA whose fingerprint is not the token's: it is not \
         the server that made the token; nothing was kept"
    )]
    NotTheTokensServer {
        /// The server's address.
        server: String,
    },
    /// A file of the state directory could not be read.
    #[error("reading {path} failed")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `agent.json` is damaged.
    #[error("{path} is damaged")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A file `agent.json` names is missing.
    #[error("{file} is missing from the agent's state directory {}", state_dir.display())]
    Missing {
        /// The file.
        file: String,
        /// The state directory.
        state_dir: PathBuf,
    },
    /// A key or certificate file holds no usable PEM.
    #[error("{} is not {what}", file.display())]
    Unusable {
        /// The file.
        file: PathBuf,
        /// What it should be.
        what: &'static str,
    },
    /// The key and certificates do not make a TLS client.
    #[error("the agent's key or certificates are unusable")]
    Credentials(#[source] ConnectError),
    /// The server's name kept at enrollment is not a DNS name.
    #[error("the server name {0:?} is not usable")]
    ServerName(String),
    /// The server's release key is unusable.
    #[error("the server's release key is unusable")]
    ReleaseKey(#[from] ReleaseError),
    /// A file of the state directory could not be written.
    #[error(transparent)]
    Files(#[from] FilesError),
    /// The self-upgrade could not be set up.
    #[error(transparent)]
    SelfUpgrade(#[from] SelfUpgradeError),
}

impl AgentError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            AgentError::NotEnrolled { .. } => {
                "run it once with --server URL and --token TOKEN (from `dockmesh agent token \
                 create` on the server)"
            }
            AgentError::PrivateDir(e) => e.hint(),
            AgentError::NoName => "give one with --name",
            AgentError::Token(e) => e.hint(),
            AgentError::Trust(e) => e.hint(),
            AgentError::PlainHttp { .. } => {
                "the server serves HTTPS on every non-loopback address; plain http:// only to \
                 127.0.0.1, ::1 or localhost"
            }
            AgentError::Unreachable { .. } => {
                "nothing was sent unless the server was trusted (over HTTPS it must present the \
                 CA whose fingerprint the token carries, or a certificate of --ca-file)"
            }
            AgentError::EnrollmentRefused { .. } | AgentError::NotTheTokensServer { .. } => {
                "make a new token on the server this agent should join"
            }
            AgentError::Damaged { .. }
            | AgentError::Missing { .. }
            | AgentError::Unusable { .. }
            | AgentError::Credentials(_)
            | AgentError::ServerName(_) => "remove the state directory and enroll again",
            AgentError::Files(e) => e.hint(),
            AgentError::SelfUpgrade(e) => e.hint(),
            AgentError::Key(_)
            | AgentError::Client(_)
            | AgentError::Answer(_)
            | AgentError::Read { .. }
            | AgentError::ReleaseKey(_) => "check the state directory and the server, then retry",
        }
    }
}
