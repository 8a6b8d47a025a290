//! Agent upgrade rollout: the policy (manual, auto, staged), drift, and the evaluator tick.
//!
//! An agent is *drifted* when the version string it reports differs from the server's version
//! string (string equality, not semver order): an agent that reports the server's version is up
//! to date and is never sent an upgrade again.
//!
//! The evaluator is sans-IO: [`tick`] takes the time, the policy, the evaluator state, the
//! [`UpgradeOrder`] of the server's release and a borrowed slice of agents, and returns what should
//! happen ([`TickOutcome`]): the agents to send the order to, the upgrade state of each agent that
//! changes, the next [`RolloutState`] and the audit events. The caller persists the new states
//! and events, then dispatches. The outcome borrows the agents' ids from the slice and builds
//! its audit events on demand, so a tick over a million agents copies nothing per agent
//! (`BENCHMARKS.md` has the figures).
//!
//! # Rules
//!
//! Resolving upgrades in flight (every mode):
//! - an agent that reports the version it was sent (or the server's version) is back to `idle`;
//! - one that has not after [`RolloutPolicy::upgrade_timeout`] (measured from the dispatch) is
//!   `failed`, and the rollout's failure count grows by one;
//! - a `requested`, `failed` or `pending_manual` agent that already reports the server's version
//!   is back to `idle`: there is nothing left to do for it.
//!
//! Dispatching (only to agents that are connected and drifted; never to an upgrade in flight):
//! - **operator requests** (`requested`, see [`request_upgrade`]) are dispatched in every mode,
//!   **including while the rollout is halted**: a halt stops the evaluator from spreading an
//!   upgrade on its own, while a request names one agent and is the operator's explicit decision;
//! - **manual** mode dispatches nothing else;
//! - **auto** mode dispatches every drifted, connected, `idle` agent at each evaluation;
//! - **staged** mode dispatches a wave of `idle` drifted connected agents, in the order given
//!   (the store lists agents by id), when at least [`StagedPolicy::min_gap`] has passed since the
//!   last wave. The first wave of a rollout is `canaries` agents when that is set; every other
//!   wave is `ceil(percent × drifted / 100)`, at least 1, where *drifted* is the number of agents
//!   drifted in this rollout (the most seen drifted at once since the server's version last
//!   changed, so waves keep their size as agents catch up);
//! - a `failed` agent is not retried and a `pending_manual` agent is not sent the order again:
//!   an operator request re-dispatches either.
//!
//! Halting: in staged mode, once the failures of the rollout reach
//! [`StagedPolicy::halt_after_failures`] (0 disables halting), the rollout is halted and no
//! automatic dispatch happens in any mode until an operator calls [`resume`]. A rollout starts
//! when the evaluator first sees a server version: its wave count and failure count start from
//! zero then (a halt stays until resumed).
//!
//! To have the failures of one wave halt the next, keep `min_gap` at least `upgrade_timeout`
//! (both default to 5 minutes).

mod error;
mod ops;
mod tick;
mod view;

#[cfg(test)]
mod tests;

pub use error::RolloutError;
pub use ops::{
    AgentReport, PolicyChange, ReportOutcome, Resumed, evaluation_due, handle_report,
    next_evaluation_due, request_upgrade, resume, set_policy,
};
pub use tick::{
    Automatic, Dispatch, TickOutcome, Transition, Trigger, apply_changes, run_now, tick,
};
pub use view::{AgentRef, AgentView};

use crate::types::AgentId;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// How agent upgrades are rolled out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// Nothing is dispatched by the evaluator; per-agent requests still work. The default.
    #[default]
    Manual,
    /// Every drifted, connected agent is upgraded at the next evaluation.
    Auto,
    /// Waves of a percentage of the drifted agents, with a minimum gap between waves.
    Staged,
}

impl RolloutMode {
    /// The mode's name as users see it (`manual`, `auto`, `staged`).
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutMode::Manual => "manual",
            RolloutMode::Auto => "auto",
            RolloutMode::Staged => "staged",
        }
    }
}

/// Settings of the staged mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StagedPolicy {
    /// Percent of the drifted agents per wave (1–100). Default 10.
    pub percent: u8,
    /// Minimum time between two waves. Default 5 minutes; enforced.
    pub min_gap: SignedDuration,
    /// Number of canary agents upgraded alone, as the first wave, before percentage waves. Default 0.
    pub canaries: u32,
    /// Halt the rollout after this many failures. Default 1.
    pub halt_after_failures: u32,
}

impl Default for StagedPolicy {
    fn default() -> Self {
        StagedPolicy {
            percent: 10,
            min_gap: SignedDuration::from_mins(5),
            canaries: 0,
            halt_after_failures: 1,
        }
    }
}

/// The agent upgrade policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutPolicy {
    /// The mode.
    pub mode: RolloutMode,
    /// Settings used in staged mode.
    pub staged: StagedPolicy,
    /// How often the evaluator runs. Default 60 s.
    pub interval: SignedDuration,
    /// An upgrade that does not report the new version within this time failed. Default 5 minutes.
    pub upgrade_timeout: SignedDuration,
    /// Whether orders may bring an agent to a version older than its own (the server's, when
    /// the agent runs a newer one). Off by default: an agent refuses an order for an older
    /// version unless the order says the policy allows it.
    pub allow_downgrade: bool,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            mode: RolloutMode::Manual,
            staged: StagedPolicy::default(),
            interval: SignedDuration::from_secs(60),
            upgrade_timeout: SignedDuration::from_mins(5),
            allow_downgrade: false,
        }
    }
}

/// Whether an agent is connected to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Connected now.
    Connected,
    /// Not connected.
    #[default]
    Disconnected,
}

/// Where an agent stands in its upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum UpgradeState {
    /// Nothing in progress.
    #[default]
    Idle,
    /// An operator asked for this agent to be upgraded; dispatched at the next evaluation in any mode.
    Requested {
        /// When it was asked.
        at: Timestamp,
    },
    /// An upgrade was sent and the agent has not yet reported the new version.
    InFlight {
        /// When it was sent.
        since: Timestamp,
        /// The version it was sent to upgrade to.
        target_version: String,
    },
    /// The last upgrade failed.
    Failed {
        /// When the failure was seen.
        at: Timestamp,
        /// Why.
        reason: String,
    },
    /// The agent cannot download the binary (air-gapped): an operator must install it by hand.
    PendingManual {
        /// Since when.
        since: Timestamp,
        /// What the agent said.
        reason: String,
    },
}

/// A host's agent as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent (and host) id.
    pub id: AgentId,
    /// A display name.
    pub name: String,
    /// The version string the agent reports.
    pub version: String,
    /// The build commit the agent reports.
    pub commit: Option<String>,
    /// The agent protocol version it speaks.
    pub protocol_version: u32,
    /// CPU architecture.
    pub arch: String,
    /// Docker engine version on the host.
    pub docker_version: String,
    /// When the agent was last heard from.
    pub last_seen: Option<Timestamp>,
    /// Connection state.
    pub connection: ConnectionState,
    /// Upgrade state.
    pub upgrade: UpgradeState,
}

/// Why a rollout is halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// When it was halted.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
}

/// The persisted state of the rollout evaluator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutState {
    /// Set when failures halted a staged rollout; only an operator's resume clears it.
    pub halted: Option<Halt>,
    /// When the last staged wave was dispatched (the gap to the next wave counts from here).
    pub last_wave_at: Option<Timestamp>,
    /// Staged waves dispatched so far in this rollout (auto mode and operator requests do not count).
    pub waves: u32,
    /// Failures counted since the rollout started or was last resumed.
    pub failures: u32,
    /// When the evaluator last ran.
    pub last_evaluated_at: Option<Timestamp>,
    /// The server version this rollout brings agents to (set by the first evaluation that sees it).
    #[serde(default)]
    pub rollout_version: Option<String>,
    /// The number of agents drifted in this rollout: the most seen drifted at once since the
    /// rollout started. Staged waves are a percentage of it.
    #[serde(default)]
    pub wave_base: u64,
}

/// The policy and the evaluator state, stored together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The policy.
    pub policy: RolloutPolicy,
    /// The evaluator state.
    pub state: RolloutState,
}

/// What an agent is told when it is sent an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOrder {
    /// The version to upgrade to (the server's version string).
    pub version: String,
    /// The binary to fetch: a URL, or a path the agent resolves against the server's API
    /// address it enrolled with.
    pub binary: String,
    /// The binary's size in bytes; the agent refuses a download of any other size. 0 when the
    /// order is not for one binary (the evaluator's order names the release, each dispatch
    /// names the binary of the agent's platform).
    #[serde(default)]
    pub size: u64,
    /// Hex SHA-256 of the binary; the agent refuses a download that does not match.
    pub sha256: String,
    /// The release signature (ed25519, hex) over the binary's version, platform, size and
    /// SHA-256; the agent checks it with the release key it trusted at enrollment.
    #[serde(default)]
    pub signature: Option<String>,
    /// The policy allows this order to bring the agent to an older version
    /// ([`RolloutPolicy::allow_downgrade`]); without it the agent refuses a downgrade.
    #[serde(default)]
    pub allow_downgrade: bool,
}
