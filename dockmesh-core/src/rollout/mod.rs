//! Agent upgrade rollout: the policy (manual, auto, staged), drift, and the evaluator tick.
//!
//! An agent is *drifted* when the version string it reports differs from the server's version
//! string (string equality, not semver order): an agent that reports the server's version is up
//! to date and is never sent an upgrade again.

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
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            mode: RolloutMode::Manual,
            staged: StagedPolicy::default(),
            interval: SignedDuration::from_secs(60),
            upgrade_timeout: SignedDuration::from_mins(5),
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
    /// When the last wave was dispatched.
    pub last_wave_at: Option<Timestamp>,
    /// Waves dispatched so far in this rollout.
    pub waves: u32,
    /// Failures counted since the rollout started or was last resumed.
    pub failures: u32,
    /// When the evaluator last ran.
    pub last_evaluated_at: Option<Timestamp>,
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
    /// The binary to fetch (its name or URL).
    pub binary: String,
    /// Hex SHA-256 of the binary; the agent refuses a download that does not match.
    pub sha256: String,
    /// Signature over the binary's SHA-256, hex, when releases are signed.
    #[serde(default)]
    pub signature: Option<String>,
}
