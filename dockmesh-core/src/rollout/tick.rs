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

/// One agent to send the upgrade order to. Its upgrade state becomes `in_flight` (since the
/// tick's time, to the server's version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dispatch<'a> {
    /// Position of the agent in the slice given to the tick.
    pub index: usize,
    /// The agent.
    pub agent: &'a AgentId,
    /// Why it is sent the order.
    pub trigger: Trigger,
}

/// One agent whose upgrade state changes without being dispatched: an upgrade in flight that
/// completed or failed, a request or failure that no longer applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition<'a> {
    /// Position of the agent in the slice given to the tick.
    pub index: usize,
    /// The agent.
    pub agent: &'a AgentId,
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

/// The result of one evaluation, borrowing the agents' ids and the order from the tick's inputs
/// (nothing is copied per agent, so a tick over a million agents stays cheap).
///
/// To carry it out: persist [`state`](Self::state), every agent's new upgrade state
/// ([`upgrade_changes`](Self::upgrade_changes)) and the [`audit_events`](Self::audit_events),
/// then send the [`UpgradeOrder`] to every agent of [`dispatches`](Self::dispatches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickOutcome<'a> {
    /// Agents to send the upgrade order to, by position in the slice.
    pub dispatches: Vec<Dispatch<'a>>,
    /// Upgrade state changes of agents not dispatched, by position in the slice. With the
    /// dispatches, at most one change per agent.
    pub transitions: Vec<Transition<'a>>,
    /// The evaluator state after this tick.
    pub state: RolloutState,
    /// What was decided about automatic dispatch.
    pub automatic: Automatic,
    /// Agents whose reported version differs from the server's at this tick.
    pub drifted: u64,
    /// Drifted, connected, idle agents the automatic dispatch could choose from.
    pub eligible: u64,
    now: Timestamp,
    actor: &'a str,
    order: &'a UpgradeOrder,
    run_event: Option<AuditEvent>,
}

impl<'a> TickOutcome<'a> {
    /// When the tick ran.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// The upgrade state a dispatched agent moves to.
    pub fn in_flight_state(&self) -> UpgradeState {
        UpgradeState::InFlight {
            since: self.now,
            target_version: self.order.version.clone(),
        }
    }

    /// Every agent whose upgrade state changes, with its new state, in slice order: the
    /// [`transitions`](Self::transitions) and the dispatched agents (to `in_flight`).
    pub fn upgrade_changes(&self) -> impl Iterator<Item = (usize, &'a AgentId, UpgradeState)> + '_ {
        let mut dispatches = self.dispatches.iter().peekable();
        let mut transitions = self.transitions.iter().peekable();
        std::iter::from_fn(move || {
            let take_dispatch = match (dispatches.peek(), transitions.peek()) {
                (Some(d), Some(t)) => d.index < t.index,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if take_dispatch {
                let d = dispatches.next()?;
                Some((d.index, d.agent, self.in_flight_state()))
            } else {
                let t = transitions.next()?;
                Some((t.index, t.agent, t.to.clone()))
            }
        })
    }

    /// The changes as owned values, to apply once the agents are no longer borrowed.
    pub fn owned_changes(&self) -> Vec<(usize, UpgradeState)> {
        self.upgrade_changes().map(|(i, _, s)| (i, s)).collect()
    }

    /// How many audit events [`audit_events`](Self::audit_events) yields.
    pub fn audit_event_count(&self) -> usize {
        self.dispatches.len() + usize::from(self.run_event.is_some())
    }

    /// The audit events of this tick, in order: for "run now", the `agent.upgrade_run` event
    /// first; then one `stack.deploy` event with detail `action=agent-upgrade` per dispatch,
    /// carrying the agent id, the server version, the binary and the trigger. They are built on
    /// demand, one at a time, so that a large wave is persisted without holding every event.
    pub fn audit_events(&self) -> impl Iterator<Item = AuditEvent> + '_ {
        self.run_event
            .iter()
            .cloned()
            .chain(self.dispatches.iter().map(|d| self.dispatch_event(d)))
    }

    /// The audit event recording one dispatch.
    pub fn dispatch_event(&self, d: &Dispatch<'_>) -> AuditEvent {
        AuditEvent::new(self.now, self.actor, STACK_DEPLOY, d.agent.as_str())
            .with("action", "agent-upgrade")
            .with("agent", d.agent.as_str())
            .with("server_version", self.order.version.as_str())
            .with("binary", self.order.binary.as_str())
            .with("trigger", d.trigger.as_str())
    }
}

/// Set the upgrade state of each agent named by position, as returned by
/// [`TickOutcome::owned_changes`] for the same slice.
///
/// # Panics
/// When a position is outside `agents`.
pub fn apply_changes(agents: &mut [super::AgentRecord], changes: Vec<(usize, UpgradeState)>) {
    for (index, upgrade) in changes {
        agents[index].upgrade = upgrade;
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
pub fn tick<'a, A: AgentView>(
    now: Timestamp,
    policy: &RolloutPolicy,
    state: &RolloutState,
    order: &'a UpgradeOrder,
    agents: &'a [A],
) -> TickOutcome<'a> {
    evaluate(now, SYSTEM_ACTOR, policy, state, order, agents, None)
}

/// "Run now": one immediate evaluation asked by `actor`, recorded as an `agent.upgrade_run`
/// audit event ahead of the evaluation's own events (which also name `actor`).
///
/// It follows exactly the rules of [`tick`]: the staged gap and a halt still hold.
pub fn run_now<'a, A: AgentView>(
    now: Timestamp,
    actor: &'a str,
    policy: &RolloutPolicy,
    state: &RolloutState,
    order: &'a UpgradeOrder,
    agents: &'a [A],
) -> TickOutcome<'a> {
    let run = AuditEvent::new(now, actor, AGENT_UPGRADE_RUN, "agents")
        .with("mode", policy.mode.as_str())
        .with("server_version", order.version.as_str());
    evaluate(now, actor, policy, state, order, agents, Some(run))
}

fn evaluate<'a, A: AgentView>(
    now: Timestamp,
    actor: &'a str,
    policy: &RolloutPolicy,
    state: &RolloutState,
    order: &'a UpgradeOrder,
    agents: &'a [A],
    run_event: Option<AuditEvent>,
) -> TickOutcome<'a> {
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

    let mut transitions: Vec<Transition<'a>> = Vec::new();
    let mut dispatches: Vec<Dispatch<'a>> = Vec::new();
    // Drifted, connected, idle agents, in slice order; `true` when the agent already has a
    // transition (an upgrade to an older target that completed at this tick).
    let mut eligible: Vec<(usize, bool)> = Vec::new();
    let mut drifted: u64 = 0;

    for (index, agent) in agents.iter().enumerate() {
        let version = agent.reported_version();
        let is_drifted = version != server;
        drifted += u64::from(is_drifted);
        let id = agent.agent_id();
        let mut changed = false;
        let effective = match agent.upgrade_state() {
            UpgradeState::Idle => Effective::Idle,
            UpgradeState::InFlight {
                since,
                target_version,
            } => {
                if version == target_version.as_str() || !is_drifted {
                    changed = true;
                    transitions.push(Transition {
                        index,
                        agent: id,
                        to: UpgradeState::Idle,
                    });
                    Effective::Idle
                } else if now.duration_since(*since) >= policy.upgrade_timeout {
                    transitions.push(Transition {
                        index,
                        agent: id,
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
                    agent: id,
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
            Effective::Requested => dispatches.push(Dispatch {
                index,
                agent: id,
                trigger: Trigger::Requested,
            }),
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

    let chosen = &eligible[..take];
    let mut superseded = false;
    let automatic_dispatches = chosen.iter().map(|&(index, changed)| {
        superseded |= changed;
        Dispatch {
            index,
            agent: agents[index].agent_id(),
            trigger,
        }
    });
    // Both lists are in slice order: merge them.
    let dispatches = if dispatches.is_empty() {
        automatic_dispatches.collect()
    } else if chosen.is_empty() {
        dispatches
    } else {
        merge_by_index(dispatches, automatic_dispatches, chosen.len())
    };
    if superseded {
        // An agent that finished an upgrade to an older target and is dispatched again at this
        // tick has one change only: the dispatch.
        let mut redispatched = chosen
            .iter()
            .filter(|(_, c)| *c)
            .map(|(i, _)| *i)
            .peekable();
        transitions.retain(|t| {
            while redispatched.next_if(|&i| i < t.index).is_some() {}
            redispatched.next_if_eq(&t.index).is_none()
        });
    }

    TickOutcome {
        dispatches,
        transitions,
        state: next,
        automatic,
        drifted,
        eligible: eligible.len() as u64,
        now,
        actor,
        order,
        run_event,
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

/// Merge two lists of dispatches, each in slice order, into one in slice order.
fn merge_by_index<'a>(
    requested: Vec<Dispatch<'a>>,
    automatic: impl Iterator<Item = Dispatch<'a>>,
    automatic_len: usize,
) -> Vec<Dispatch<'a>> {
    let mut out = Vec::with_capacity(requested.len() + automatic_len);
    let mut requested = requested.into_iter().peekable();
    for d in automatic {
        while let Some(r) = requested.next_if(|r| r.index < d.index) {
            out.push(r);
        }
        out.push(d);
    }
    out.extend(requested);
    out
}

/// `t + d`, saturating at the ends of the time line.
pub(crate) fn add(t: Timestamp, d: jiff::SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}
