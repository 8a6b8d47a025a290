//! The agent's self-upgrade driver: take an order, download the binary beside the running one
//! (resuming an interrupted download), check size, SHA-256 and the release signature, keep the
//! running binary as `<exe>.previous`, replace it atomically, and re-execute in place (same
//! pid). A watchdog, started from the running binary before the swap, puts the previous binary
//! back and starts it when the new one exits, or does not connect before the deadline; the
//! restored agent states the failure in its next `hello`. Containers are never touched.
//!
//! Every decision is `dockmesh_core::agent_upgrade`'s: the order checks, the resumed
//! [`Download`](dockmesh_core::agent_upgrade::Download), the states of the swap and the
//! watchdog's verdict. This driver reads and writes the files, makes the requests and runs the
//! processes.
//!
//! The state of an upgrade is `upgrade.json` in the agent's state directory
//! ([`Record`](dockmesh_core::agent_upgrade::Record)): `trial` from the swap until the new
//! binary's `hello` is read by the server (`confirmed`), or `reverted` with the reason. The
//! release key is pinned in [`PINNED_KEY`] at enrollment (the server's, when it has one); a key
//! offered later is taken only when it is the pinned one, so a server that had none cannot pin
//! one without the operator copying it there. An order for a version older than the running one
//! is refused (a correctly signed old release is still a downgrade). The download is created
//! `O_EXCL | O_NOFOLLOW` in `upgrade/` of the state directory (0700, the agent's own), checked
//! through the same open file, and only then run and installed.
//!
//! - [`Swapper`]: the [`AgentUpgrader`] that carries out orders.
//! - [`startup`]: at start, whether this binary is a new one on trial ([`Startup::trial`], to
//!   confirm once the server reads its `hello`).
//! - [`current_failure`]: the failed upgrade to state in the `hello`.
//! - [`watchdog()`]: the watchdog's loop (the binary runs it as `dockmesh agent watchdog`).

mod download;
#[cfg(test)]
mod tests;
mod trial;
mod watchdog;

pub use trial::{OnTrial, Startup, current_failure, startup};
pub use watchdog::{WatchdogEnd, watchdog};

use crate::agent::agent_upgrade::AgentUpgrader;
use crate::agent::error_chain as chain;
use crate::channel::agent_binaries as release;
use crate::channel::files::{self, FileMode, StagedBinary};
use dockmesh_core::agent_upgrade::{
    Direction, KeyRefusal, RevertReason, Trial, UpgradeState, check_not_older, check_offered_key,
    check_order,
};
use dockmesh_core::rollout::{AgentReport, UpgradeOrder};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The file of the state directory holding the pinned release key.
pub const PINNED_KEY: &str = "release.pub";
/// The file of the state directory holding where an upgrade stands.
const RECORD: &str = "upgrade.json";
/// How long the new binary's `--version` may take.
const VERSION_CHECK: Duration = Duration::from_secs(10);

/// Why the agent's upgrader could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelfUpgradeError {
    /// The running binary could not be found.
    #[error("finding the agent's own binary failed")]
    OwnBinary(#[source] std::io::Error),
    /// An argument of the command line is not UTF-8 (it could not be recorded to start the
    /// agent again).
    #[error("the argument {0:?} is not UTF-8")]
    Argument(OsString),
    /// The server's CA kept at enrollment could not be read.
    #[error("reading {path} failed")]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server's CA kept at enrollment is not a PEM certificate.
    #[error("{path} is not a PEM certificate")]
    CaNotPem {
        /// The file.
        path: PathBuf,
    },
    /// The TLS configuration trusting the server could not be made.
    #[error("trusting the server for downloads failed")]
    Trust(#[source] crate::channel::tls::TlsError),
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    Client(#[source] reqwest::Error),
}

impl SelfUpgradeError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            SelfUpgradeError::OwnBinary(_) | SelfUpgradeError::Argument(_) => {
                "start the agent from its binary's path with UTF-8 arguments"
            }
            SelfUpgradeError::ReadCa { .. } | SelfUpgradeError::CaNotPem { .. } => {
                "the state directory is damaged: remove it and enroll the agent again"
            }
            SelfUpgradeError::Trust(e) => e.hint(),
            SelfUpgradeError::Client(_) => "check the system's TLS setup",
        }
    }
}

/// `upgrade.json` as it stands; a damaged one is ignored (and said so).
fn read_state(dir: &Path) -> Option<UpgradeState> {
    let path = dir.join(RECORD);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<dockmesh_core::agent_upgrade::Record>(&bytes) {
        Ok(r) => Some(r.into()),
        Err(e) => {
            tracing::warn!("{} is damaged ({e}); it is ignored", path.display());
            None
        }
    }
}

/// Persist `state` as `upgrade.json` (atomically, 0600).
fn write_state(dir: &Path, state: UpgradeState) -> Result<(), files::FilesError> {
    let record = dockmesh_core::agent_upgrade::Record::from(state);
    files::write_atomic(
        &dir.join(RECORD),
        &serde_json::to_vec_pretty(&record).expect("the upgrade record serialises"),
        FileMode::Private,
    )
}

fn remove_record(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(RECORD));
}

fn failed(reason: impl Into<String>) -> AgentReport {
    AgentReport::UpgradeFailed {
        reason: reason.into(),
    }
}

fn http_client(tls: Option<rustls::ClientConfig>) -> Result<reqwest::Client, SelfUpgradeError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60));
    let builder = match tls {
        Some(config) => builder.tls_backend_preconfigured(config),
        None => builder,
    };
    builder.build().map_err(SelfUpgradeError::Client)
}

/// The agent's [`AgentUpgrader`]: downloads, checks and swaps its own binary.
pub struct Swapper {
    state_dir: PathBuf,
    server: String,
    running: String,
    exe: PathBuf,
    argv: Vec<String>,
    deadline: Duration,
    watchdog_args: Vec<OsString>,
    http: reqwest::Client,
    busy: Arc<AtomicBool>,
}

impl Swapper {
    /// An upgrader for the agent running version `running`, whose state is in `state_dir`,
    /// which enrolled with the API at `server`; a new binary must connect within `deadline`.
    /// The running binary and its command line are this process's.
    pub fn new(
        state_dir: &Path,
        server: &str,
        running: &str,
        deadline: Duration,
    ) -> Result<Swapper, SelfUpgradeError> {
        let exe = std::env::current_exe().map_err(SelfUpgradeError::OwnBinary)?;
        let argv = std::env::args_os()
            .map(|a| a.into_string().map_err(SelfUpgradeError::Argument))
            .collect::<Result<Vec<_>, _>>()?;
        let watchdog_args = ["agent", "watchdog", "--state-dir"]
            .into_iter()
            .map(OsString::from)
            .chain([state_dir.as_os_str().to_owned()])
            .collect();
        Ok(Swapper {
            state_dir: state_dir.to_owned(),
            server: server.trim_end_matches('/').to_owned(),
            running: running.to_owned(),
            exe,
            argv,
            deadline,
            watchdog_args,
            http: http_client(None)?,
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The arguments that make the running binary run [`watchdog()`] over this state
    /// directory (by default `agent watchdog --state-dir DIR`, as the `dockmesh` binary has
    /// it).
    pub fn with_watchdog_args(mut self, args: Vec<OsString>) -> Swapper {
        self.watchdog_args = args;
        self
    }

    /// Download from an `https://` server trusting what enrollment trusted: the CAs of
    /// `ca_file`, else the server's CA kept in the state directory (`ca.crt`) by its
    /// fingerprint. A plain `http://` server (loopback) is left as it is.
    pub fn trusting(mut self, ca_file: Option<&Path>) -> Result<Swapper, SelfUpgradeError> {
        if !self.server.starts_with("https://") {
            return Ok(self);
        }
        let config = match ca_file {
            Some(f) => crate::channel::tls::client_config_roots(f),
            None => {
                let path = self.state_dir.join("ca.crt");
                let pem =
                    std::fs::read_to_string(&path).map_err(|source| SelfUpgradeError::ReadCa {
                        path: path.clone(),
                        source,
                    })?;
                let der = crate::channel::pki::der_of_pem(&pem)
                    .map_err(|_| SelfUpgradeError::CaNotPem { path })?;
                crate::channel::tls::client_config_pinned(&crate::channel::pki::fingerprint_of(
                    &der,
                ))
            }
        }
        .map_err(SelfUpgradeError::Trust)?;
        self.http = http_client(Some(config))?;
        Ok(self)
    }

    fn pinned_key(&self) -> Option<release::VerifyingKey> {
        let pem = std::fs::read_to_string(self.state_dir.join(PINNED_KEY)).ok()?;
        release::parse_public(&pem, PINNED_KEY).ok()
    }

    fn previous_path(&self) -> PathBuf {
        let mut p = self.exe.clone().into_os_string();
        p.push(".previous");
        PathBuf::from(p)
    }

    /// Check the order, then download and check its binary; returns where it is.
    async fn fetch(&self, order: &UpgradeOrder) -> Result<PathBuf, AgentReport> {
        check_order(order).map_err(|e| failed(e.to_string()))?;
        let key = self.pinned_key().ok_or_else(|| {
            failed(
                "this agent has no release key pinned (the server offers its key on each \
                 connection once it has one): nothing was downloaded; upgrade it by hand",
            )
        })?;
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        let signature = order.signature.as_deref().unwrap_or_default();
        release::verify(
            &key,
            &release::statement(&order.version, os, arch, order.size, &order.sha256),
            signature,
            &format!("dockmesh {} for {os}/{arch}", order.version),
        )
        .map_err(|e| failed(format!("{e}; nothing was downloaded")))?;
        match check_not_older(&order.version, &self.running, order.allow_downgrade) {
            Ok(Direction::Forward) => {}
            Ok(Direction::AllowedDowngrade) => tracing::warn!(
                "the order brings this agent from {} down to {}: the upgrade policy allows \
                 downgrades",
                self.running,
                order.version
            ),
            Err(e) => return Err(failed(e.to_string())),
        }
        let url = if order.binary.starts_with("http://") || order.binary.starts_with("https://") {
            order.binary.clone()
        } else {
            format!("{}{}", self.server, order.binary)
        };
        self.download_checked(&url, order).await
    }

    /// Copy the new binary beside the running one, record the trial, start the watchdog,
    /// then keep the running binary as the previous one and put the new one in place.
    fn swap(&self, order: &UpgradeOrder, new: &Path) -> Result<(), AgentReport> {
        let previous = self.previous_path();
        let staged = StagedBinary::beside(&self.exe, new).map_err(|e| {
            failed(format!(
                "{}; the agent keeps running {}",
                chain(&e),
                self.running
            ))
        })?;
        let trial = Trial::begin(
            &order.version,
            &self.running,
            self.exe.clone(),
            previous.clone(),
            std::process::id(),
            self.argv.clone(),
            jiff::Timestamp::now(),
            self.deadline,
        );
        write_state(&self.state_dir, trial.into()).map_err(|e| failed(chain(&e)))?;
        // Started from the running binary before it is replaced: the watchdog runs the
        // binary that is kept as the previous one.
        let watchdog = std::process::Command::new(&self.exe)
            .args(&self.watchdog_args)
            .stdin(std::process::Stdio::null())
            .spawn();
        if let Err(e) = watchdog {
            remove_record(&self.state_dir);
            return Err(failed(format!("starting the upgrade watchdog: {e}")));
        }
        if let Err(e) = staged.install(&previous) {
            // The watchdog stops once the record is gone.
            remove_record(&self.state_dir);
            return Err(failed(format!(
                "replacing {} failed: {}; the agent keeps running {}",
                self.exe.display(),
                chain(&e),
                self.running
            )));
        }
        let _ = std::fs::remove_file(new);
        Ok(())
    }
}

/// Re-execute the (new) binary at `exe` in place; on failure put the previous one back.
fn restart(exe: &Path, argv: &[String], state_dir: &Path, busy: &AtomicBool) {
    use std::os::unix::process::CommandExt;
    tracing::info!("restarting as the new binary");
    let err = std::process::Command::new(exe)
        .args(argv.iter().skip(1))
        .exec();
    tracing::error!("re-executing {} failed: {err}", exe.display());
    if let Some(UpgradeState::Trial(trial)) = read_state(state_dir)
        && std::fs::rename(&trial.0.previous, &trial.0.exe).is_ok()
    {
        let reverted = trial.revert(&RevertReason::ExecFailed(err.to_string()));
        let _ = write_state(state_dir, reverted.into());
    }
    busy.store(false, Ordering::SeqCst);
}

#[async_trait::async_trait]
impl AgentUpgrader for Swapper {
    async fn upgrade(&self, order: UpgradeOrder) -> Result<(), AgentReport> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(failed(
                "an upgrade is already being carried out on this agent",
            ));
        }
        tracing::info!(version = %order.version, binary = %order.binary, "upgrade order taken");
        // A new order means the server has settled the last one: its outcome is not stated
        // again.
        if read_state(&self.state_dir).is_some_and(|s| s.cleared_by_new_order()) {
            remove_record(&self.state_dir);
        }
        let outcome = match self.fetch(&order).await {
            Ok(new) => self.swap(&order, &new),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let (exe, argv, dir, busy) = (
                    self.exe.clone(),
                    self.argv.clone(),
                    self.state_dir.clone(),
                    self.busy.clone(),
                );
                tokio::spawn(async move {
                    // Let the answer reach the server first.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    tokio::task::spawn_blocking(move || restart(&exe, &argv, &dir, &busy));
                });
                Ok(())
            }
            Err(report) => {
                tracing::warn!(?report, "upgrade refused");
                self.busy.store(false, Ordering::SeqCst);
                Err(report)
            }
        }
    }

    fn offer_release_key(&self, pem: &str) -> Result<(), String> {
        let offered =
            release::parse_public(pem, "the offered release key").map_err(|e| e.to_string())?;
        let path = self.state_dir.join(PINNED_KEY);
        let pinned = match std::fs::read_to_string(&path) {
            Ok(pinned) => Some(
                release::parse_public(&pinned, &path.display().to_string())
                    .map_err(|e| e.to_string())?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let offered_print = release::fingerprint(&offered);
        let pinned_print = pinned.as_ref().map(release::fingerprint);
        let decided = match check_offered_key(pinned_print.as_deref(), &offered_print, path.clone())
        {
            // The short fingerprints agree: the keys themselves must too.
            Ok(()) if pinned.as_ref() != Some(&offered) => Err(KeyRefusal::OtherPinned {
                pinned: pinned_print.unwrap_or_default(),
                offered: offered_print,
                pinned_file: path,
            }),
            other => other,
        };
        decided.map_err(|refusal| {
            let msg = refusal.to_string();
            match refusal {
                KeyRefusal::NonePinned { .. } => tracing::warn!("{msg}"),
                _ => tracing::error!("{msg}"),
            }
            msg
        })
    }
}
