//! The evaluator tick: one evaluation of the rollout over the whole fleet.

use super::{
    AgentView, ConnectionState, Halt, RolloutMode, RolloutPolicy, RolloutState, UpgradeOrder,
    UpgradeState,
};
use crate::audit::{AGENT_UPGRADE_RUN, AuditEvent, STACK_DEPLOY};
use crate::types::AgentId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The actor of the events the evaluator produces on its own.
pub(crate) const SYSTEM_ACTOR: &str = "system";

/// Why an agent is sent the upgrade order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// An operator requested this agent's upgrade.
    Requested,
    /// Auto mode: every drifted agent is upgraded.
    Auto,
    /// The canary wave of a staged rollout.
    Canary,
    /// A percentage wave of a staged rollout.
    Wave,
}

impl Trigger {
    /// The name used in audit details.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Requested => "requested",
            Trigger::Auto => "auto",
            Trigger::Canary => "canary",
            Trigger::Wave => "wave",
        }
    }

    /// Whether the evaluator chose the agent on its own (not an operator request).
    pub fn is_automatic(self) -> bool {
        !matches!(self, Trigger::Requested)
    }
}

/// One agent to send the upgrade order to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Position of the agent in the slice given to the tick.
    pub index: usize,
    /// The agent.
    pub agent: AgentId,
    /// Why it is sent the order.
    pub trigger: Trigger,
}

/// One agent whose upgrade state changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Position of the agent in the slice given to the tick.
    pub index: usize,
    /// The agent.
    pub agent: AgentId,
    /// Its new upgrade state.
    pub to: UpgradeState,
}

/// What the evaluator decided about automatic dispatch at this tick (operator requests aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Automatic {
    /// Manual mode: nothing is dispatched automatically.
    Manual,
    /// The rollout is halted until an operator resumes it.
    Halted,
    /// Staged mode: the minimum gap since the last wave has not passed yet.
    WaitingForGap {
        /// When the next wave may start.
        until: Timestamp,
    },
    /// No drifted, connected, idle agent is left to upgrade.
    NothingEligible,
    /// Agents were dispatched.
    Dispatched {
        /// Staged mode: the wave's number in this rollout, from 1 (0 in auto mode).
        wave: u32,
        /// The most agents this wave could take (in auto mode, every eligible agent).
        limit: u64,
        /// How many were taken.
        count: u64,
    },
}

/// The result of one evaluation.
///
/// Persist `state`, the `transitions` and the `events` first, then send [`UpgradeOrder`] to every
/// agent of `dispatches` (each one already has a transition to `in_flight`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickOutcome {
    /// Agents to send the upgrade order to, by position in the slice.
    pub dispatches: Vec<Dispatch>,
    /// Upgrade state changes (at most one per agent), by position in the slice.
    pub transitions: Vec<Transition>,
    /// The evaluator state after this tick.
    pub state: RolloutState,
    /// Audit events, in order.
    pub events: Vec<AuditEvent>,
    /// What was decided about automatic dispatch.
    pub automatic: Automatic,
    /// Agents whose reported version differs from the server's at this tick.
    pub drifted: u64,
    /// Drifted, connected, idle agents the automatic dispatch could choose from.
    pub eligible: u64,
}

impl TickOutcome {
    /// Apply the transitions to the records the tick was computed over (the same slice, in the
    /// same order).
    ///
    /// # Panics
    /// When `agents` is shorter than the slice the tick saw.
    pub fn apply(&self, agents: &mut [super::AgentRecord]) {
        for t in &self.transitions {
            agents[t.index].upgrade = t.to.clone();
        }
    }
}

/// The upgrade state of an agent once in-flight upgrades are resolved, without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effective {
    Idle,
    Requested,
    InFlight,
    Settled,
}

/// Evaluate the rollout once, as the periodic evaluator does.
///
/// `order` is what dispatched agents are sent; its `version` is the server's version string, the
/// one drift is measured against. The events' actor is `system`. See the [module
/// documentation](super) for the rules.
pub fn tick<A: AgentView>(
    now: Timestamp,
    policy: &RolloutPolicy,
    state: &RolloutState,
    order: &UpgradeOrder,
    agents: &[A],
) -> TickOutcome {
    evaluate(now, SYSTEM_ACTOR, policy, state, order, agents, None)
}

/// "Run now": one immediate evaluation asked by `actor`, recorded as an `agent.upgrade_run`
/// audit event ahead of the evaluation's own events (which also name `actor`).
///
/// It follows exactly the rules of [`tick`]: the staged gap and a halt still hold.
pub fn run_now<A: AgentView>(
    now: Timestamp,
    actor: &str,
    policy: &RolloutPolicy,
    state: &RolloutState,
    order: &UpgradeOrder,
    agents: &[A],
) -> TickOutcome {
    let run = AuditEvent::new(now, actor, AGENT_UPGRADE_RUN, "agents")
        .with("mode", policy.mode.as_str())
        .with("server_version", order.version.as_str());
    evaluate(now, actor, policy, state, order, agents, Some(run))
}

fn evaluate<A: AgentView>(
    now: Timestamp,
    actor: &str,
    policy: &RolloutPolicy,
    state: &RolloutState,
    order: &UpgradeOrder,
    agents: &[A],
    leading_event: Option<AuditEvent>,
) -> TickOutcome {
    let server = order.version.as_str();
    let mut next = state.clone();
    if next.rollout_version.as_deref() != Some(server) {
        // A new rollout: its waves and failures count from zero. A halt stays until resumed.
        next.rollout_version = Some(server.to_owned());
        next.waves = 0;
        next.failures = 0;
        next.wave_base = 0;
    }
    next.last_evaluated_at = Some(now);

    let mut transitions: Vec<Transition> = Vec::new();
    let mut dispatches: Vec<Dispatch> = Vec::new();
    // Drifted, connected, idle agents, in slice order; `true` when the agent already has a
    // transition (an upgrade that just completed to an older target).
    let mut eligible: Vec<(usize, bool)> = Vec::new();
    let mut drifted: u64 = 0;

    for (index, agent) in agents.iter().enumerate() {
        let version = agent.reported_version();
        let is_drifted = version != server;
        drifted += u64::from(is_drifted);
        let upgrade = agent.upgrade_state();
        let mut changed = false;
        let effective = match upgrade {
            UpgradeState::Idle => Effective::Idle,
            UpgradeState::InFlight {
                since,
                target_version,
            } => {
                if version == target_version.as_str() || !is_drifted {
                    changed = true;
                    transitions.push(Transition {
                        index,
                        agent: agent.agent_id().clone(),
                        to: UpgradeState::Idle,
                    });
                    Effective::Idle
                } else if now.duration_since(*since) >= policy.upgrade_timeout {
                    transitions.push(Transition {
                        index,
                        agent: agent.agent_id().clone(),
                        to: UpgradeState::Failed {
                            at: now,
                            reason: format!(
                                "the agent still reports {version:?}, not {target_version:?}, \
                                 {:#} after the upgrade was sent (timeout {:#})",
                                now.duration_since(*since),
                                policy.upgrade_timeout
                            ),
                        },
                    });
                    next.failures = next.failures.saturating_add(1);
                    Effective::Settled
                } else {
                    Effective::InFlight
                }
            }
            UpgradeState::Requested { .. }
            | UpgradeState::Failed { .. }
            | UpgradeState::PendingManual { .. }
                if !is_drifted =>
            {
                transitions.push(Transition {
                    index,
                    agent: agent.agent_id().clone(),
                    to: UpgradeState::Idle,
                });
                Effective::Settled
            }
            UpgradeState::Requested { .. } => Effective::Requested,
            UpgradeState::Failed { .. } | UpgradeState::PendingManual { .. } => Effective::Settled,
        };
        if !is_drifted || agent.connection() != ConnectionState::Connected {
            continue;
        }
        match effective {
            Effective::Requested => {
                dispatches.push(Dispatch {
                    index,
                    agent: agent.agent_id().clone(),
                    trigger: Trigger::Requested,
                });
                transitions.push(in_flight(index, agent.agent_id(), now, server));
            }
            Effective::Idle => eligible.push((index, changed)),
            Effective::InFlight | Effective::Settled => {}
        }
    }
    next.wave_base = next.wave_base.max(drifted);

    let staged = &policy.staged;
    if policy.mode == RolloutMode::Staged
        && next.halted.is_none()
        && staged.halt_after_failures > 0
        && next.failures >= staged.halt_after_failures
    {
        next.halted = Some(Halt {
            at: now,
            reason: format!(
                "{} upgrade failure(s) in the rollout to {server}, the halt threshold is {}",
                next.failures, staged.halt_after_failures
            ),
        });
    }

    let (take, trigger, automatic) = if next.halted.is_some() {
        (0, Trigger::Auto, Automatic::Halted)
    } else {
        match policy.mode {
            RolloutMode::Manual => (0, Trigger::Auto, Automatic::Manual),
            RolloutMode::Auto if eligible.is_empty() => {
                (0, Trigger::Auto, Automatic::NothingEligible)
            }
            RolloutMode::Auto => {
                let n = eligible.len() as u64;
                let decision = Automatic::Dispatched {
                    wave: 0,
                    limit: n,
                    count: n,
                };
                (eligible.len(), Trigger::Auto, decision)
            }
            RolloutMode::Staged => {
                let gap_end = next.last_wave_at.map(|t| add(t, staged.min_gap));
                match gap_end {
                    Some(until) if now < until => {
                        (0, Trigger::Wave, Automatic::WaitingForGap { until })
                    }
                    _ if eligible.is_empty() => (0, Trigger::Wave, Automatic::NothingEligible),
                    _ => {
                        let (limit, trigger) = wave_limit(staged, next.waves, next.wave_base);
                        let count = (eligible.len() as u64).min(limit);
                        next.waves = next.waves.saturating_add(1);
                        next.last_wave_at = Some(now);
                        let decision = Automatic::Dispatched {
                            wave: next.waves,
                            limit,
                            count,
                        };
                        (count as usize, trigger, decision)
                    }
                }
            }
        }
    };

    let loop_transitions = transitions.len();
    for &(index, changed) in &eligible[..take] {
        let id = agents[index].agent_id();
        dispatches.push(Dispatch {
            index,
            agent: id.clone(),
            trigger,
        });
        let t = in_flight(index, id, now, server);
        if changed {
            // The agent finished an upgrade to an older target at this tick: one transition only.
            let at = transitions[..loop_transitions]
                .binary_search_by_key(&index, |t| t.index)
                .expect("a changed agent has a transition");
            transitions[at] = t;
        } else {
            transitions.push(t);
        }
    }
    if take > 0 && !dispatches.is_sorted_by_key(|d| d.index) {
        dispatches.sort_unstable_by_key(|d| d.index);
    }
    if !transitions.is_sorted_by_key(|t| t.index) {
        transitions.sort_unstable_by_key(|t| t.index);
    }

    let mut events = Vec::with_capacity(dispatches.len() + usize::from(leading_event.is_some()));
    events.extend(leading_event);
    for d in &dispatches {
        events.push(
            AuditEvent::new(now, actor, STACK_DEPLOY, d.agent.as_str())
                .with("action", "agent-upgrade")
                .with("agent", d.agent.as_str())
                .with("server_version", server)
                .with("binary", order.binary.as_str())
                .with("trigger", d.trigger.as_str()),
        );
    }

    TickOutcome {
        dispatches,
        transitions,
        state: next,
        events,
        automatic,
        drifted,
        eligible: eligible.len() as u64,
    }
}

/// The most agents the next staged wave may take, and what kind of wave it is.
///
/// The first wave of a rollout (`waves == 0`) is the canary wave when `canaries > 0`; every other
/// wave is `ceil(percent × wave_base / 100)`, at least 1.
pub(crate) fn wave_limit(
    staged: &super::StagedPolicy,
    waves: u32,
    wave_base: u64,
) -> (u64, Trigger) {
    if waves == 0 && staged.canaries > 0 {
        (u64::from(staged.canaries), Trigger::Canary)
    } else {
        let percent = u64::from(staged.percent.min(100));
        let size = percent.saturating_mul(wave_base).div_ceil(100).max(1);
        (size, Trigger::Wave)
    }
}

fn in_flight(index: usize, agent: &AgentId, now: Timestamp, server: &str) -> Transition {
    Transition {
        index,
        agent: agent.clone(),
        to: UpgradeState::InFlight {
            since: now,
            target_version: server.to_owned(),
        },
    }
}

/// `t + d`, saturating at the ends of the time line.
pub(crate) fn add(t: Timestamp, d: jiff::SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}
