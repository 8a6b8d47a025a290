//! Errors of the rollout operations.

use crate::types::AgentId;
use jiff::Timestamp;

/// Why a rollout operation was refused. Nothing is changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// A policy value is out of range.
    #[error(
        "rollout policy refused: {field} {problem}; the current policy is kept unchanged; \
         send the policy again with a valid {field}"
    )]
    InvalidPolicy {
        /// The field at fault (e.g. `staged.percent`).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// An upgrade was requested for an agent that already has one in flight.
    #[error(
        "agent {agent} already has an upgrade to {target_version} in flight since {since}; \
         no second order was sent; wait for it to report the new version or for the upgrade \
         timeout to mark it failed, then request again"
    )]
    AlreadyInFlight {
        /// The agent.
        agent: AgentId,
        /// When the upgrade in flight was sent.
        since: Timestamp,
        /// The version it was sent to.
        target_version: String,
    },
    /// An upgrade was requested for an agent that already runs the server's version.
    #[error(
        "agent {agent} already reports the server's version {version}; nothing was requested; \
         there is nothing to upgrade"
    )]
    UpToDate {
        /// The agent.
        agent: AgentId,
        /// The version it reports (the server's).
        version: String,
    },
    /// A resume was asked for a rollout that is not halted.
    #[error("the rollout is not halted, so there is nothing to resume; its state is unchanged")]
    NotHalted,
}
