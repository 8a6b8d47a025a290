//! A binary on trial at start: what `upgrade.json` says this binary does (confirm it once
//! the server reads its `hello`, exit at the deadline, or record a swap that did not
//! complete), and the failure it states in its `hello`.

use super::{read_state, write_state};
use crate::agent::error_chain as chain;
use dockmesh_core::agent_upgrade::{Startup as Decided, UpgradeState};
use dockmesh_core::protocol::UpgradeFailure;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// At start: the trial to confirm when this binary is the new one on trial.
pub struct Startup {
    /// Set when this process is a new binary on trial.
    pub trial: Option<Arc<OnTrial>>,
}

/// This binary on trial: it must be confirmed before the deadline, else the process exits so
/// the watchdog puts the previous binary back.
pub struct OnTrial {
    dir: PathBuf,
    running: String,
    done: AtomicBool,
}

impl OnTrial {
    /// The server read this binary's `hello`: the upgrade took.
    pub fn confirm(&self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(UpgradeState::Trial(trial)) = read_state(&self.dir) {
            match write_state(&self.dir, trial.confirm().into()) {
                Ok(()) => tracing::info!(version = %self.running, "upgrade confirmed"),
                Err(e) => tracing::warn!("recording the confirmed upgrade failed: {}", chain(&e)),
            }
        }
    }
}

/// Read `upgrade.json` at the start of the binary running version `running`. When this binary
/// is on trial, a thread exits the process (status 3) at the deadline unless the trial is
/// confirmed first, so that the watchdog puts the previous binary back.
pub fn startup(state_dir: &Path, running: &str) -> Startup {
    let Some(state) = read_state(state_dir) else {
        return Startup { trial: None };
    };
    let on_trial = || {
        Arc::new(OnTrial {
            dir: state_dir.to_owned(),
            running: running.to_owned(),
            done: AtomicBool::new(false),
        })
    };
    match state.at_startup(running, jiff::Timestamp::now()) {
        Decided::Settled => Startup { trial: None },
        Decided::Unwatched(_) => {
            tracing::warn!(
                "an upgrade to {running} was never confirmed and its watchdog is gone; it is \
                 confirmed once the server reads this agent's hello"
            );
            Startup {
                trial: Some(on_trial()),
            }
        }
        Decided::OnTrial { trial, exit_after } => {
            tracing::info!(
                from = %trial.0.from_version,
                "running a new binary on trial: it must connect within {:.0} s",
                exit_after.as_secs_f64()
            );
            let watched = on_trial();
            let watch = watched.clone();
            std::thread::spawn(move || {
                std::thread::sleep(exit_after);
                if !watch.done.load(Ordering::SeqCst) {
                    tracing::error!(
                        "the new binary did not connect to the server before the deadline; \
                         exiting so the previous binary is put back"
                    );
                    std::process::exit(3);
                }
            });
            Startup {
                trial: Some(watched),
            }
        }
        Decided::Incomplete(reverted) => {
            // This is not the binary on trial: the swap did not complete.
            let _ = write_state(state_dir, reverted.into());
            Startup { trial: None }
        }
    }
}

/// The failed upgrade the agent running `running` states in its `hello` now (read at each
/// connection: a new order clears it).
pub fn current_failure(state_dir: &Path, running: &str) -> Option<UpgradeFailure> {
    read_state(state_dir)?.failure(running)
}
