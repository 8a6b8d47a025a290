//! The agent's self-upgrade once its binary is downloaded and checked: the swap puts the new
//! binary on [`Trial`]; the server reading its `hello` makes it [`Confirmed`]; a new binary that
//! exits, hangs past the deadline, cannot be executed, or a swap that did not complete makes it
//! [`Reverted`] with the reason. Each state is persisted as `upgrade.json` ([`Record`]) before
//! the action it allows; the driver performs the actions.

use crate::protocol::UpgradeFailure;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How many checks in a row (100 ms apart) must find the new binary gone before the watchdog
/// counts it as exited (a process executing a new binary shows as a zombie for a moment).
pub const GONE_CHECKS: u32 = 10;
/// How long past the deadline the watchdog waits for a new binary that did not exit by itself.
pub const HUNG_GRACE: Duration = Duration::from_secs(15);
/// How often the watchdog looks.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Where an upgrade stands, as `upgrade.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Swapped; the new binary must connect before the deadline.
    Trial,
    /// The server read the new binary's `hello`.
    Confirmed,
    /// The previous binary was put back.
    Reverted,
}

/// `upgrade.json`, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Where the upgrade stands.
    pub stage: Stage,
    /// The version upgraded to.
    pub target_version: String,
    /// The version upgraded from.
    pub from_version: String,
    /// The agent's binary.
    pub exe: PathBuf,
    /// Where the binary it replaced is kept.
    pub previous: PathBuf,
    /// The agent's process (the same across the re-execution).
    pub pid: u32,
    /// Unix milliseconds by which the new binary must have connected.
    pub deadline_ms: i64,
    /// The agent's command line, to start it again.
    pub argv: Vec<String>,
    /// Why it was reverted.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The facts of one swap, kept in every state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// The version upgraded to.
    pub target_version: String,
    /// The version upgraded from.
    pub from_version: String,
    /// The agent's binary.
    pub exe: PathBuf,
    /// Where the binary it replaced is kept.
    pub previous: PathBuf,
    /// The agent's process.
    pub pid: u32,
    /// Unix milliseconds by which the new binary must have connected.
    pub deadline_ms: i64,
    /// The agent's command line.
    pub argv: Vec<String>,
}

/// A new binary on trial: it must connect before the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial(pub Swap);

/// The new binary connected: the upgrade took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed(pub Swap);

/// The previous binary was put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reverted {
    /// The swap undone.
    pub swap: Swap,
    /// Why (absent in a record written without one).
    pub reason: Option<String>,
}

/// An upgrade as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeState {
    /// See [`Trial`].
    Trial(Trial),
    /// See [`Confirmed`].
    Confirmed(Confirmed),
    /// See [`Reverted`].
    Reverted(Reverted),
}

/// Why a trial was reverted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevertReason {
    /// The new binary's process was gone before it connected.
    #[error("the new binary ({target}) exited before it connected to the server")]
    Exited {
        /// The version on trial.
        target: String,
    },
    /// The deadline and its grace passed without a connection.
    #[error("the new binary ({target}) did not connect to the server before the deadline")]
    Hung {
        /// The version on trial.
        target: String,
    },
    /// Re-executing the new binary failed.
    #[error("the new binary could not be executed: {0}")]
    ExecFailed(String),
    /// Another binary than the one on trial started: the swap did not complete.
    #[error("the upgrade to {target} did not complete; {running} runs again")]
    Incomplete {
        /// The version on trial.
        target: String,
        /// The version that runs.
        running: String,
    },
}

impl Trial {
    /// The swap of the running binary (`from`, process `pid`) for `target`: it must connect
    /// within `deadline` of `now`.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        target: &str,
        from: &str,
        exe: PathBuf,
        previous: PathBuf,
        pid: u32,
        argv: Vec<String>,
        now: Timestamp,
        deadline: Duration,
    ) -> Trial {
        let ms = i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
        Trial(Swap {
            target_version: target.to_owned(),
            from_version: from.to_owned(),
            exe,
            previous,
            pid,
            deadline_ms: now.as_millisecond().saturating_add(ms),
            argv,
        })
    }

    /// The server read the new binary's `hello`.
    pub fn confirm(self) -> Confirmed {
        Confirmed(self.0)
    }

    /// The previous binary was put back, for `reason`.
    pub fn revert(self, reason: &RevertReason) -> Reverted {
        Reverted {
            swap: self.0,
            reason: Some(reason.to_string()),
        }
    }

    /// What the binary `running` does with this trial when it starts at `now`.
    pub fn at_startup(self, running: &str, now: Timestamp) -> Startup {
        if self.0.target_version != running {
            let reason = RevertReason::Incomplete {
                target: self.0.target_version.clone(),
                running: running.to_owned(),
            };
            return Startup::Incomplete(self.revert(&reason));
        }
        let now_ms = now.as_millisecond();
        if now_ms > self.0.deadline_ms.saturating_add(2 * grace_ms()) {
            // Long past the deadline (a restart much later): no watchdog waits any more, so
            // exiting would only stop the agent. It is confirmed once it connects.
            return Startup::Unwatched(self);
        }
        let left = u64::try_from(self.0.deadline_ms.saturating_sub(now_ms)).unwrap_or(0);
        Startup::OnTrial {
            trial: self,
            exit_after: Duration::from_millis(left),
        }
    }
}

fn grace_ms() -> i64 {
    HUNG_GRACE.as_millis() as i64
}

/// What a starting agent does with a trial it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    /// Nothing is on trial.
    Settled,
    /// This binary is on trial: unless confirmed within `exit_after`, it exits so the watchdog
    /// puts the previous binary back.
    OnTrial {
        /// The trial to confirm.
        trial: Trial,
        /// How long it has left.
        exit_after: Duration,
    },
    /// This binary is on trial long past its deadline: no watchdog waits, so it does not exit;
    /// it is confirmed once it connects.
    Unwatched(Trial),
    /// Another binary than the one on trial runs: record this (the swap did not complete).
    Incomplete(Reverted),
}

impl UpgradeState {
    /// What the binary `running` does at start (see [`Trial::at_startup`]).
    pub fn at_startup(self, running: &str, now: Timestamp) -> Startup {
        match self {
            UpgradeState::Trial(t) => t.at_startup(running, now),
            UpgradeState::Confirmed(_) | UpgradeState::Reverted(_) => Startup::Settled,
        }
    }

    /// The failed upgrade the binary `running` states in its `hello`: a reverted upgrade away
    /// from `running`.
    pub fn failure(&self, running: &str) -> Option<UpgradeFailure> {
        match self {
            UpgradeState::Reverted(r) if r.swap.from_version == running => Some(UpgradeFailure {
                target_version: r.swap.target_version.clone(),
                reason: r
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the new binary did not take".into()),
            }),
            _ => None,
        }
    }

    /// A new order means the server settled the last upgrade: a settled record is removed
    /// (its outcome is not stated again); a trial is kept.
    pub fn cleared_by_new_order(&self) -> bool {
        !matches!(self, UpgradeState::Trial(_))
    }
}

/// The watchdog, started from the previous binary before the swap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watchdog {
    /// Checks in a row that found the new binary gone.
    gone_for: u32,
}

/// What the watchdog does after one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Look again after [`WATCH_EVERY`].
    Wait(Watchdog),
    /// Put the previous binary back (killing the new one first when `kill`) and start it.
    Revert {
        /// The new binary still runs and must be killed.
        kill: bool,
        /// Why.
        reason: RevertReason,
    },
}

impl Watchdog {
    /// One look at `trial` at `now`: whether its process is `alive`.
    pub fn observe(self, trial: &Trial, alive: bool, now: Timestamp) -> Watch {
        let gone_for = if alive { 0 } else { self.gone_for + 1 };
        if gone_for >= GONE_CHECKS {
            return Watch::Revert {
                kill: false,
                reason: RevertReason::Exited {
                    target: trial.0.target_version.clone(),
                },
            };
        }
        if now.as_millisecond() > trial.0.deadline_ms.saturating_add(grace_ms()) {
            return Watch::Revert {
                kill: true,
                reason: RevertReason::Hung {
                    target: trial.0.target_version.clone(),
                },
            };
        }
        Watch::Wait(Watchdog { gone_for })
    }
}

impl From<Record> for UpgradeState {
    fn from(r: Record) -> UpgradeState {
        let swap = Swap {
            target_version: r.target_version,
            from_version: r.from_version,
            exe: r.exe,
            previous: r.previous,
            pid: r.pid,
            deadline_ms: r.deadline_ms,
            argv: r.argv,
        };
        match r.stage {
            Stage::Trial => UpgradeState::Trial(Trial(swap)),
            Stage::Confirmed => UpgradeState::Confirmed(Confirmed(swap)),
            Stage::Reverted => UpgradeState::Reverted(Reverted {
                swap,
                reason: r.reason,
            }),
        }
    }
}

impl From<UpgradeState> for Record {
    fn from(s: UpgradeState) -> Record {
        let (stage, swap, reason) = match s {
            UpgradeState::Trial(Trial(swap)) => (Stage::Trial, swap, None),
            UpgradeState::Confirmed(Confirmed(swap)) => (Stage::Confirmed, swap, None),
            UpgradeState::Reverted(Reverted { swap, reason }) => (Stage::Reverted, swap, reason),
        };
        Record {
            stage,
            target_version: swap.target_version,
            from_version: swap.from_version,
            exe: swap.exe,
            previous: swap.previous,
            pid: swap.pid,
            deadline_ms: swap.deadline_ms,
            argv: swap.argv,
            reason,
        }
    }
}

impl From<Trial> for UpgradeState {
    fn from(t: Trial) -> UpgradeState {
        UpgradeState::Trial(t)
    }
}

impl From<Confirmed> for UpgradeState {
    fn from(c: Confirmed) -> UpgradeState {
        UpgradeState::Confirmed(c)
    }
}

impl From<Reverted> for UpgradeState {
    fn from(r: Reverted) -> UpgradeState {
        UpgradeState::Reverted(r)
    }
}
