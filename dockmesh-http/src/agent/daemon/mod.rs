//! The agent daemon as a library entry: enroll once (or load the state directory), then keep
//! an outbound mTLS connection to the server and serve the agent API over it, reconnecting
//! with core's [`protocol::reconnect_delay`].
//!
//! ```no_run
//! # async fn run(runtime: std::sync::Arc<dyn dockmesh_core::ports::HostRuntime>)
//! # -> Result<(), dockmesh_http::agent::daemon::AgentError> {
//! use dockmesh_http::agent::daemon::{Agent, AgentOptions};
//! let mut options = AgentOptions::new("1.4.0");
//! options.server = Some("https://server.example:8443".into());
//! options.token = Some("dme_…".into());
//! let agent = Agent::load_or_enroll("/var/lib/dockmesh-agent".as_ref(), &options).await?;
//! println!("serving host {}", agent.host_id());
//! agent.run(runtime, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! The state directory (0700, the agent's own) holds `agent.json` (the enrollment), the key
//! and certificate (renewed over the channel), the server's CA, the pinned release key, the
//! upgrade record ([`crate::agent::self_upgrade`]), stack files and spooled imports.

mod enroll;
mod error;
mod state;
#[cfg(test)]
mod tests;

use crate::agent::agent_upgrade::{AgentUpgrader, on_hello, upgrade_routes};
use crate::agent::error_chain as chain;
use crate::agent::renew::renewal_routes;
use crate::agent::resume::{Imports, RESUME_WAIT};
use crate::agent::self_upgrade::{self, Swapper};
use crate::agent::spool::SpoolOptions;
use crate::agent::{ConnectError, agent_api_with};
use dockmesh_core::HostId;
use dockmesh_core::ports::HostRuntime;
use dockmesh_core::protocol::{self, Hello, PROTOCOL_VERSION, UpgradeFailure};
pub use error::AgentError;
use rustls_pki_types::ServerName;
use state::{AgentState, CA_FILE, FileCredentials};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How an agent runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentOptions {
    /// The version this agent runs (what its `hello` says, and what an upgrade order is
    /// compared with).
    pub version: String,
    /// The commit it was built from, when known.
    pub commit: Option<String>,
    /// The server's API address, for enrolling (`https://…`; plain `http://` only to a
    /// loopback address).
    pub server: Option<String>,
    /// A one-time enrollment token; needed only the first time.
    pub token: Option<String>,
    /// Trust the server's API listener by the CA certificates in this PEM file instead of the
    /// CA fingerprint the token carries; also for downloading agent binaries.
    pub ca_file: Option<PathBuf>,
    /// The name of this host on the server; by default the machine's host name.
    pub name: Option<String>,
    /// Dial the agent listener here (`host:port`) instead of where the server said at
    /// enrollment.
    pub endpoint: Option<String>,
    /// How long the connection may stay silent before it is taken for dead.
    pub grace: Duration,
    /// How long a new binary has, after an upgrade, to connect before the previous binary is
    /// put back.
    pub upgrade_deadline: Duration,
    /// Keep each incoming volume stream on disk while it is imported (`<state-dir>/imports`),
    /// so a transfer cut by a restart goes on from the last byte kept.
    pub import_spool: bool,
}

impl AgentOptions {
    /// The defaults for an agent running `version`: a grace and an upgrade deadline of 60 s,
    /// imports spooled, nothing to enroll with.
    pub fn new(version: &str) -> AgentOptions {
        AgentOptions {
            version: version.to_owned(),
            commit: None,
            server: None,
            token: None,
            ca_file: None,
            name: None,
            endpoint: None,
            grace: Duration::from_secs(60),
            upgrade_deadline: Duration::from_secs(60),
            import_spool: true,
        }
    }
}

/// How [`Agent::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunEnd {
    /// The shutdown future resolved.
    Shutdown,
    /// The server refused this agent for good (removed, or a protocol it no longer speaks):
    /// reconnecting as it is would not help.
    Refused {
        /// The server's kind of refusal.
        kind: String,
        /// The server's reason.
        reason: String,
    },
}

/// An enrolled agent, ready to run.
pub struct Agent {
    state_dir: PathBuf,
    state: AgentState,
    options: AgentOptions,
    ca_pem: String,
}

impl Agent {
    /// Load the agent enrolled in `state_dir`, or enroll it with `options.server` and
    /// `options.token`. The state directory is made private (0700) first; one that cannot be
    /// is refused. Without an enrollment and without both, nothing is made.
    pub async fn load_or_enroll(
        state_dir: &Path,
        options: &AgentOptions,
    ) -> Result<Agent, AgentError> {
        let not_enrolled = || AgentError::NotEnrolled {
            state_dir: state_dir.to_owned(),
        };
        if (options.server.is_none() || options.token.is_none()) && !state_dir.exists() {
            return Err(not_enrolled());
        }
        // Keys, stack files and spooled volume data live here.
        crate::channel::private::private_dir(state_dir)?;
        let state = match state::load_state(state_dir)? {
            Some(s) => {
                if options.token.is_some() {
                    tracing::warn!(
                        agent = %s.agent_id,
                        "already enrolled (state in {}): the token was not used",
                        state_dir.display()
                    );
                }
                s
            }
            None => {
                let name = options
                    .name
                    .clone()
                    .or_else(host_name)
                    .ok_or(AgentError::NoName)?;
                let hello = hello_for(options, None, None).await;
                enroll::enroll_once(state_dir, options, &name, hello).await?
            }
        };
        let ca = state_dir.join(CA_FILE);
        let ca_pem =
            std::fs::read_to_string(&ca).map_err(|source| AgentError::Read { path: ca, source })?;
        Ok(Agent {
            state_dir: state_dir.to_owned(),
            state,
            options: options.clone(),
            ca_pem,
        })
    }

    /// The host this agent serves, as the server names it.
    pub fn host_id(&self) -> HostId {
        HostId::from(self.state.host.as_str())
    }

    /// The agent's id (in its certificate).
    pub fn agent_id(&self) -> &str {
        &self.state.agent_id
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Serve `runtime` to the server until `shutdown` resolves or the server refuses this
    /// agent for good; reconnect after every other end of a connection.
    pub async fn run(
        self,
        runtime: Arc<dyn HostRuntime>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<RunEnd, AgentError> {
        tokio::select! {
            r = self.serve(runtime) => r,
            () = shutdown => Ok(RunEnd::Shutdown),
        }
    }

    async fn serve(self, runtime: Arc<dyn HostRuntime>) -> Result<RunEnd, AgentError> {
        let Agent {
            state_dir: dir,
            state,
            options,
            ca_pem,
        } = self;
        let creds = Arc::new(FileCredentials {
            dir: dir.clone(),
            agent_id: state.agent_id.clone(),
            state: Mutex::new(state.clone()),
            ca_pem,
            pending: Mutex::new(None),
        });
        let startup = self_upgrade::startup(&dir, &options.version);
        let swapper: Arc<dyn AgentUpgrader> = Arc::new(
            Swapper::new(
                &dir,
                &state.server,
                &options.version,
                options.upgrade_deadline.max(Duration::from_secs(1)),
            )?
            .trusting(options.ca_file.as_deref())?,
        );
        let dial = options
            .endpoint
            .clone()
            .unwrap_or_else(|| state.agent_endpoint.clone());
        let server_name = ServerName::try_from(state.server_name.clone())
            .map_err(|_| AgentError::ServerName(state.server_name.clone()))?;
        tracing::info!(
            agent = %state.agent_id,
            host = %state.host,
            "dockmesh agent v{} serving host {} (agent listener {dial})",
            options.version,
            state.host
        );
        let mut failures = 0u32;
        // Imports outlive a connection: one cut off waits for the server to resume it. Their
        // streams are kept on disk, so they outlive this process too: those cut off by its last
        // stop go on from what was kept.
        let imports = if options.import_spool {
            Imports::with_spool(
                runtime.clone(),
                RESUME_WAIT,
                SpoolOptions::new(dir.join("imports")),
            )
        } else {
            Imports::new(runtime.clone())
        };
        imports.recover().await;
        loop {
            let started = Instant::now();
            // Read each time: a renewal may have replaced the key and certificate.
            let connector = state::connector_from(&dir, &creds.current(), options.grace)?;
            match connector.connect(dial.as_str(), server_name.clone()).await {
                Ok(session) => {
                    tracing::info!(
                        protocol = session.protocol(),
                        "connected to the server at {dial}"
                    );
                    let failure = self_upgrade::current_failure(&dir, &options.version);
                    let hello = hello_for(&options, Some(runtime.as_ref()), failure).await;
                    let mut api = agent_api_with(hello, runtime.clone(), imports.clone())
                        .merge(renewal_routes(creds.clone()))
                        .merge(upgrade_routes(swapper.clone()));
                    if let Some(trial) = &startup.trial {
                        let trial = trial.clone();
                        api = on_hello(api, Arc::new(move || trial.confirm()));
                    }
                    let served = session.serve(api).await;
                    // The session's requests are gone: imports they fed wait to be resumed.
                    imports.connection_closed();
                    match served {
                        Err(ConnectError::Refused(r)) if !r.is_transient() => {
                            tracing::error!(kind = %r.kind, "the server refused this agent: {}", r.reason);
                            return Ok(RunEnd::Refused {
                                kind: r.kind,
                                reason: r.reason,
                            });
                        }
                        Err(e) => {
                            tracing::warn!("the connection to the server ended: {}", chain(&e))
                        }
                        Ok(()) => tracing::info!("the server closed the connection"),
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot connect to the server's agent listener at {dial}: {}",
                    e
                ),
            }
            if started.elapsed() >= protocol::RECONNECT_STABLE {
                failures = 0;
            }
            let delay = protocol::reconnect_delay(failures, unit_draw());
            failures = failures.saturating_add(1);
            tracing::info!("reconnecting in {:.1} s", delay.as_secs_f64());
            tokio::time::sleep(delay).await;
        }
    }
}

/// The machine's host name, lowercase.
fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

/// A uniform draw in `[0, 1)`.
fn unit_draw() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// What this agent says about itself; the engine's version when it answers.
async fn hello_for(
    options: &AgentOptions,
    runtime: Option<&dyn HostRuntime>,
    upgrade_failure: Option<UpgradeFailure>,
) -> Hello {
    let docker_version = match runtime {
        Some(r) => r
            .snapshot()
            .await
            .map(|s| s.docker_version)
            .unwrap_or_default(),
        None => String::new(),
    };
    Hello {
        version: options.version.clone(),
        commit: options.commit.clone(),
        protocol_version: PROTOCOL_VERSION,
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        hostname: host_name().unwrap_or_default(),
        docker_version,
        upgrade_failure,
    }
}
