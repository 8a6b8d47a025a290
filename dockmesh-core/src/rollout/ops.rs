//! Operator and agent inputs to the rollout outside the evaluator tick: changing the policy,
//! resuming a halted rollout, requesting one agent's upgrade, an agent's report about its
//! upgrade, and when the evaluator is due.

use super::tick::add;
use super::{AgentView, RolloutError, RolloutPolicy, RolloutRecord, RolloutState, UpgradeState};
use crate::audit::{AGENT_UPGRADE_POLICY, AuditEvent};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

impl RolloutPolicy {
    /// Check every value is in range: `staged.percent` in 1–100, `staged.min_gap` not negative,
    /// `interval` and `upgrade_timeout` at least one second.
    pub fn validate(&self) -> Result<(), RolloutError> {
        let invalid = |field, problem: String| Err(RolloutError::InvalidPolicy { field, problem });
        if !(1..=100).contains(&self.staged.percent) {
            return invalid(
                "staged.percent",
                format!("is {}, it must be between 1 and 100", self.staged.percent),
            );
        }
        if self.staged.min_gap.is_negative() {
            return invalid(
                "staged.min_gap",
                format!("is {:#}, it must not be negative", self.staged.min_gap),
            );
        }
        let second = SignedDuration::from_secs(1);
        if self.interval < second {
            return invalid(
                "interval",
                format!("is {:#}, it must be at least 1s", self.interval),
            );
        }
        if self.upgrade_timeout < second {
            return invalid(
                "upgrade_timeout",
                format!("is {:#}, it must be at least 1s", self.upgrade_timeout),
            );
        }
        Ok(())
    }
}

/// A policy change, ready to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    /// The record with the new policy (the evaluator state is unchanged).
    pub record: RolloutRecord,
    /// The `agent.upgrade_policy` audit event.
    pub event: AuditEvent,
}

/// Replace the policy, after checking it ([`RolloutPolicy::validate`]).
///
/// The evaluator state is kept: a halt stays until [`resume`], and a staged rollout continues
/// from the waves it has already dispatched.
pub fn set_policy(
    now: Timestamp,
    actor: &str,
    record: &RolloutRecord,
    policy: RolloutPolicy,
) -> Result<PolicyChange, RolloutError> {
    policy.validate()?;
    let event = AuditEvent::new(now, actor, AGENT_UPGRADE_POLICY, "agents")
        .with("action", "set")
        .with("previous_mode", record.policy.mode.as_str())
        .with("mode", policy.mode.as_str())
        .with("percent", policy.staged.percent.to_string())
        .with("min_gap", format!("{:#}", policy.staged.min_gap))
        .with("canaries", policy.staged.canaries.to_string())
        .with(
            "halt_after_failures",
            policy.staged.halt_after_failures.to_string(),
        )
        .with("interval", format!("{:#}", policy.interval))
        .with("upgrade_timeout", format!("{:#}", policy.upgrade_timeout));
    Ok(PolicyChange {
        record: RolloutRecord {
            policy,
            state: record.state.clone(),
        },
        event,
    })
}

/// A resumed rollout, ready to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// The state with the halt cleared and the failure count back to zero.
    pub state: RolloutState,
    /// The audit event: `agent.upgrade_policy` with detail `action=resume`.
    pub event: AuditEvent,
}

/// An operator resumes a halted rollout: the halt is cleared and failures count from zero again.
/// Agents that failed stay `failed` (an operator request re-dispatches one).
pub fn resume(now: Timestamp, actor: &str, state: &RolloutState) -> Result<Resumed, RolloutError> {
    let halt = state.halted.as_ref().ok_or(RolloutError::NotHalted)?;
    let event = AuditEvent::new(now, actor, AGENT_UPGRADE_POLICY, "agents")
        .with("action", "resume")
        .with("halted_at", halt.at.to_string())
        .with("halt_reason", halt.reason.as_str())
        .with("failures", state.failures.to_string());
    let mut next = state.clone();
    next.halted = None;
    next.failures = 0;
    Ok(Resumed { state: next, event })
}

/// An operator asks for one agent's upgrade: returns its new upgrade state, `requested`, which
/// the next evaluation dispatches in any mode (even while the rollout is halted) once the agent
/// is connected.
///
/// Refused when an upgrade is already in flight (never two orders at once) and when the agent
/// already reports `server_version`. Asking again while a request waits keeps the first request.
pub fn request_upgrade<A: AgentView>(
    now: Timestamp,
    agent: &A,
    server_version: &str,
) -> Result<UpgradeState, RolloutError> {
    match agent.upgrade_state() {
        UpgradeState::InFlight {
            since,
            target_version,
        } => Err(RolloutError::AlreadyInFlight {
            agent: agent.agent_id().clone(),
            since: *since,
            target_version: target_version.clone(),
        }),
        _ if agent.reported_version() == server_version => Err(RolloutError::UpToDate {
            agent: agent.agent_id().clone(),
            version: server_version.to_owned(),
        }),
        UpgradeState::Requested { at } => Ok(UpgradeState::Requested { at: *at }),
        UpgradeState::Idle | UpgradeState::Failed { .. } | UpgradeState::PendingManual { .. } => {
            Ok(UpgradeState::Requested { at: now })
        }
    }
}

/// What an agent says about the upgrade it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentReport {
    /// The agent cannot download the binary (an air-gapped host): an operator must install it.
    CannotDownload {
        /// What the agent saw.
        reason: String,
    },
    /// The upgrade failed on the agent (a checksum or signature mismatch, a binary that does
    /// not start).
    UpgradeFailed {
        /// What the agent saw.
        reason: String,
    },
}

/// The effect of an agent's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The agent has no upgrade in flight: the report is stale and changes nothing.
    Ignored,
    /// Persist both.
    Changed {
        /// The agent's new upgrade state.
        upgrade: UpgradeState,
        /// The evaluator state (its failure count grows for a failed upgrade).
        state: RolloutState,
    },
}

/// Handle an agent's report about the upgrade in flight.
///
/// - `cannot_download` makes the agent `pending_manual`: it stays visible, is not sent the order
///   again automatically, and does not count as a failure (an air-gapped host is not a bad
///   release); it returns to `idle` once it reports the server's version.
/// - `upgrade_failed` makes the agent `failed` and counts one failure of the rollout, which may
///   halt a staged rollout at the next evaluation.
///
/// Only an upgrade in flight can be reported on; any other report is [`ReportOutcome::Ignored`].
pub fn handle_report(
    now: Timestamp,
    upgrade: &UpgradeState,
    state: &RolloutState,
    report: &AgentReport,
) -> ReportOutcome {
    if !matches!(upgrade, UpgradeState::InFlight { .. }) {
        return ReportOutcome::Ignored;
    }
    let mut state = state.clone();
    let upgrade = match report {
        AgentReport::CannotDownload { reason } => UpgradeState::PendingManual {
            since: now,
            reason: reason.clone(),
        },
        AgentReport::UpgradeFailed { reason } => {
            state.failures = state.failures.saturating_add(1);
            UpgradeState::Failed {
                at: now,
                reason: reason.clone(),
            }
        }
    };
    ReportOutcome::Changed { upgrade, state }
}

/// When the periodic evaluator should next run: one interval after the last evaluation, or
/// `None` when it has never run (it is due at once).
pub fn next_evaluation_due(state: &RolloutState, policy: &RolloutPolicy) -> Option<Timestamp> {
    state.last_evaluated_at.map(|t| add(t, policy.interval))
}

/// Whether the periodic evaluator is due at `now`.
pub fn evaluation_due(now: Timestamp, state: &RolloutState, policy: &RolloutPolicy) -> bool {
    next_evaluation_due(state, policy).is_none_or(|due| now >= due)
}
