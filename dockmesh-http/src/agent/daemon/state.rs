//! What the agent keeps in its state directory: `agent.json` (its enrollment), its key and
//! certificate, the server's CA, and the renewal of key and certificate together.

use super::AgentError;
use crate::agent::AgentConnector;
use crate::agent::renew::AgentCredentials;
use crate::agent::self_upgrade::PINNED_KEY;
use crate::channel::ChannelOptions;
use crate::channel::enroll::{self, Enrolled};
use crate::channel::files::{self, FileMode};
use dockmesh_core::protocol::PROTOCOL_VERSION;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub(super) const STATE_FILE: &str = "agent.json";
pub(super) const KEY_FILE: &str = "agent.key";
pub(super) const CERT_FILE: &str = "agent.crt";
pub(super) const CA_FILE: &str = "ca.crt";

/// What the agent keeps about its enrollment (`agent.json`; the key and certificates sit
/// beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AgentState {
    pub(super) agent_id: String,
    pub(super) host: String,
    pub(super) agent_endpoint: String,
    pub(super) server_name: String,
    pub(super) server: String,
    /// The key and certificate files in use (renewal writes new ones, then this file).
    #[serde(default = "default_key_file")]
    pub(super) key_file: String,
    #[serde(default = "default_cert_file")]
    pub(super) cert_file: String,
}

pub(super) fn default_key_file() -> String {
    KEY_FILE.to_owned()
}

pub(super) fn default_cert_file() -> String {
    CERT_FILE.to_owned()
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AgentError> {
    Ok(files::write_atomic(path, bytes, FileMode::Private)?)
}

fn read(path: &Path) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|source| AgentError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn load_state(dir: &Path) -> Result<Option<AgentState>, AgentError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let state: AgentState =
                serde_json::from_slice(&bytes).map_err(|source| AgentError::Damaged {
                    path: path.clone(),
                    source,
                })?;
            for f in [state.key_file.as_str(), state.cert_file.as_str(), CA_FILE] {
                if !dir.join(f).exists() {
                    return Err(AgentError::Missing {
                        file: f.to_owned(),
                        state_dir: dir.to_owned(),
                    });
                }
            }
            Ok(Some(state))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AgentError::Read { path, source }),
    }
}

pub(super) fn save_state(
    dir: &Path,
    state: &AgentState,
    key_pem: &str,
    e: &Enrolled,
) -> Result<(), AgentError> {
    crate::channel::private::private_dir(dir)?;
    write_private(&dir.join(KEY_FILE), key_pem.as_bytes())?;
    write_private(&dir.join(CERT_FILE), e.cert_pem.as_bytes())?;
    write_private(&dir.join(CA_FILE), e.ca_pem.as_bytes())?;
    // The server's release key, pinned now: the only time one is taken without the operator.
    if let Some(pem) = &e.release_key_pem {
        let key = crate::channel::agent_binaries::parse_public(pem, "the server's release key")?;
        write_private(&dir.join(PINNED_KEY), pem.as_bytes())?;
        tracing::info!(key = %crate::channel::agent_binaries::fingerprint(&key), "release key pinned");
    }
    // Last: its presence means the enrollment is complete.
    write_private(
        &dir.join(STATE_FILE),
        &serde_json::to_vec_pretty(state).expect("the agent state serialises"),
    )
}

pub(super) fn connector_from(
    dir: &Path,
    state: &AgentState,
    grace: Duration,
) -> Result<AgentConnector, AgentError> {
    let unusable = |file: &str, what: &'static str| AgentError::Unusable {
        file: dir.join(file),
        what,
    };
    let ca = CertificateDer::from_pem_slice(&read(&dir.join(CA_FILE))?)
        .map_err(|_| unusable(CA_FILE, "a PEM certificate"))?;
    let cert = CertificateDer::from_pem_slice(&read(&dir.join(&state.cert_file))?)
        .map_err(|_| unusable(&state.cert_file, "a PEM certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&dir.join(&state.key_file))?)
        .map_err(|_| unusable(&state.key_file, "a PEM key"))?;
    let half = Duration::from_secs(grace.as_secs().max(2) / 2);
    AgentConnector::new(
        ca,
        vec![cert],
        key,
        PROTOCOL_VERSION,
        ChannelOptions {
            keep_alive_interval: half,
            keep_alive_timeout: half,
            ..ChannelOptions::default()
        },
    )
    .map_err(AgentError::Credentials)
}

/// The agent's key and certificate in its state directory, renewed by the server over the
/// channel. A renewal writes the new pair under new names, then `agent.json` naming them
/// (atomically), then removes the old pair: a crash at any point leaves a usable pair.
pub(super) struct FileCredentials {
    pub(super) dir: PathBuf,
    pub(super) agent_id: String,
    pub(super) state: Mutex<AgentState>,
    pub(super) ca_pem: String,
    pub(super) pending: Mutex<Option<String>>,
}

impl FileCredentials {
    pub(super) fn current(&self) -> AgentState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl AgentCredentials for FileCredentials {
    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    fn new_request(&self) -> Result<String, String> {
        let (key, csr) = enroll::new_agent_key().map_err(|e| e.to_string())?;
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(csr)
    }

    fn pending_key(&self) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn install(&self, cert_pem: &str) -> Result<(), String> {
        let key = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("no new key is pending")?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = jiff::Timestamp::now().as_second();
        let mut next = state.clone();
        next.key_file = format!("agent-{stamp}.key");
        next.cert_file = format!("agent-{stamp}.crt");
        let write = || -> Result<(), AgentError> {
            write_private(&self.dir.join(&next.key_file), key.as_bytes())?;
            write_private(&self.dir.join(&next.cert_file), cert_pem.as_bytes())?;
            write_private(
                &self.dir.join(STATE_FILE),
                &serde_json::to_vec_pretty(&next).expect("the agent state serialises"),
            )
        };
        write().map_err(|e| crate::agent::error_chain(&e))?;
        for old in [&state.key_file, &state.cert_file] {
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        *state = next;
        Ok(())
    }
}
