//! Executing a drain: one stack at a time, in the plan's order. A pure decision over the drain
//! record and where its migrations stand; the server's drain loop performs it.
//!
//! - A migration of the drain that has not settled is waited for (never two at once).
//! - A migration that failed or was rolled back pauses the drain, unless the operator resumed
//!   past it (it is then *acknowledged* and its stack is tried again).
//! - A stack counts as moved once one of its migrations is committed (or purged).
//! - The next stack without a target pauses the drain with the planner's reason.
//! - When every stack has moved, the drain is complete.

use super::DrainRecord;
use crate::migration::Phase;
use crate::types::{HostId, MigrationId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Where a drain stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DrainState {
    /// Moving stacks.
    #[default]
    Running,
    /// Stopped by an operator or by a failure; resumes on request.
    Paused {
        /// When.
        at: Timestamp,
        /// Why.
        reason: String,
    },
    /// Stopped for good by an operator; the stacks moved so far stay where they are.
    Aborted {
        /// When.
        at: Timestamp,
        /// Who.
        by: String,
    },
    /// Every stack of the plan moved.
    Completed {
        /// When.
        at: Timestamp,
    },
}

/// One migration of a drain, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationOutcome {
    /// The migration.
    pub id: MigrationId,
    /// The stack it moves.
    pub stack: String,
    /// Where it stands.
    pub phase: Phase,
}

/// What the drain loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrainStep {
    /// Nothing: the drain is paused, aborted or complete.
    Idle,
    /// Wait for this migration to settle.
    Wait(MigrationId),
    /// Start moving this stack to this host (record the migration in the drain first).
    Start {
        /// The stack.
        stack: String,
        /// Its target.
        target: HostId,
    },
    /// Pause the drain, for this reason.
    Pause(String),
    /// Mark the drain complete.
    Complete,
}

/// The next step of `drain`, given its migrations' outcomes (in any order; those of other
/// drains or unknown to it are ignored).
pub fn next_step(drain: &DrainRecord, outcomes: &[MigrationOutcome]) -> DrainStep {
    if drain.state != DrainState::Running {
        return DrainStep::Idle;
    }
    let ours: Vec<&MigrationOutcome> = drain
        .migrations
        .iter()
        .filter_map(|id| outcomes.iter().find(|o| o.id == *id))
        .collect();
    if let Some(o) = ours.iter().find(|o| !o.phase.is_settled()) {
        return DrainStep::Wait(o.id);
    }
    let moved = |stack: &str| {
        ours.iter()
            .any(|o| o.stack == stack && matches!(o.phase, Phase::Committed | Phase::Purged))
    };
    for o in &ours {
        let failed = matches!(o.phase, Phase::Failed | Phase::RolledBack);
        if failed && !drain.acknowledged.contains(&o.id) && !moved(&o.stack) {
            return DrainStep::Pause(format!(
                "the migration {} of stack {} ended {}; see it with `dockmesh migration show {}`, then resume the drain to try the stack again",
                o.id,
                o.stack,
                if o.phase == Phase::Failed {
                    "failed"
                } else {
                    "rolled back"
                },
                o.id
            ));
        }
    }
    match drain.plan.entries.iter().find(|e| !moved(&e.stack)) {
        None => DrainStep::Complete,
        Some(e) => match &e.target {
            Some(target) => DrainStep::Start {
                stack: e.stack.clone(),
                target: target.clone(),
            },
            None => DrainStep::Pause(format!("no host can take stack {}: {}", e.stack, e.reason)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::{DrainEntry, DrainPlan};
    use proptest::prelude::*;

    fn id(n: u128) -> MigrationId {
        MigrationId(uuid::Uuid::from_u128(n))
    }

    fn drain(stacks: &[(&str, Option<&str>)], migrations: &[u128]) -> DrainRecord {
        DrainRecord {
            id: uuid::Uuid::from_u128(99),
            created_at: Timestamp::UNIX_EPOCH,
            plan: DrainPlan {
                host: HostId::from("a"),
                entries: stacks
                    .iter()
                    .map(|(s, t)| DrainEntry {
                        stack: (*s).into(),
                        target: t.map(HostId::from),
                        reason: "because".into(),
                    })
                    .collect(),
            },
            migrations: migrations.iter().map(|n| id(*n)).collect(),
            state: DrainState::Running,
            acknowledged: vec![],
        }
    }

    fn o(n: u128, stack: &str, phase: Phase) -> MigrationOutcome {
        MigrationOutcome {
            id: id(n),
            stack: stack.into(),
            phase,
        }
    }

    fn start(stack: &str, target: &str) -> DrainStep {
        DrainStep::Start {
            stack: stack.into(),
            target: HostId::from(target),
        }
    }

    #[test]
    fn stacks_move_one_at_a_time_in_plan_order() {
        let plan = [("x", Some("b")), ("y", Some("c"))];
        assert_eq!(next_step(&drain(&plan, &[]), &[]), start("x", "b"));
        let d = drain(&plan, &[1]);
        assert_eq!(
            next_step(&d, &[o(1, "x", Phase::SourceStopped)]),
            DrainStep::Wait(id(1))
        );
        assert_eq!(
            next_step(&d, &[o(1, "x", Phase::Committed)]),
            start("y", "c")
        );
        let d = drain(&plan, &[1, 2]);
        let done = [o(1, "x", Phase::Purged), o(2, "y", Phase::Committed)];
        assert_eq!(next_step(&d, &done), DrainStep::Complete);
        assert_eq!(next_step(&drain(&[], &[]), &[]), DrainStep::Complete);
    }

    #[test]
    fn a_failure_pauses_until_acknowledged_then_the_stack_is_tried_again() {
        let plan = [("x", Some("b")), ("y", Some("c"))];
        let mut d = drain(&plan, &[1]);
        let failed = [o(1, "x", Phase::Failed)];
        let DrainStep::Pause(why) = next_step(&d, &failed) else {
            panic!()
        };
        assert!(why.contains("failed") && why.contains('x'), "{why}");
        let rolled = [o(1, "x", Phase::RolledBack)];
        assert!(matches!(next_step(&d, &rolled), DrainStep::Pause(w) if w.contains("rolled back")));
        d.acknowledged.push(id(1));
        assert_eq!(next_step(&d, &failed), start("x", "b"));
        // A later success of the same stack makes the old failure irrelevant.
        let d = drain(&plan, &[1, 2]);
        let later = [o(1, "x", Phase::Failed), o(2, "x", Phase::Committed)];
        assert_eq!(next_step(&d, &later), start("y", "c"));
    }

    #[test]
    fn no_target_pauses_and_only_a_running_drain_acts() {
        let d = drain(&[("x", None)], &[]);
        assert!(matches!(next_step(&d, &[]), DrainStep::Pause(w) if w.contains("because")));
        for state in [
            DrainState::Paused {
                at: Timestamp::UNIX_EPOCH,
                reason: "r".into(),
            },
            DrainState::Aborted {
                at: Timestamp::UNIX_EPOCH,
                by: "me".into(),
            },
            DrainState::Completed {
                at: Timestamp::UNIX_EPOCH,
            },
        ] {
            let mut d = drain(&[("x", Some("b"))], &[]);
            d.state = state;
            assert_eq!(next_step(&d, &[]), DrainStep::Idle);
        }
        // Outcomes of other migrations are ignored.
        let d = drain(&[("x", Some("b"))], &[]);
        assert_eq!(
            next_step(&d, &[o(7, "x", Phase::SourceStopped)]),
            start("x", "b")
        );
    }

    const PHASES: [Phase; 8] = [
        Phase::Requested,
        Phase::SourceStopped,
        Phase::Committed,
        Phase::Compensating,
        Phase::Failed,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Purged,
    ];

    proptest! {
        /// Against a reference model: never two migrations at once, never a stack started
        /// twice once moved, a pause exactly when an unacknowledged failure of an unmoved
        /// stack exists, completion exactly when every stack moved.
        #[test]
        fn the_decision_matches_the_rules(
            n_stacks in 1usize..5,
            targets in proptest::collection::vec(any::<bool>(), 5),
            runs in proptest::collection::vec((0usize..5, 0usize..8, any::<bool>()), 0..8),
        ) {
            let names = ["s0", "s1", "s2", "s3", "s4"];
            let plan: Vec<(&str, Option<&str>)> = (0..n_stacks)
                .map(|i| (names[i], targets[i].then_some("t")))
                .collect();
            let mut d = drain(&plan, &[]);
            let mut outcomes = vec![];
            for (k, (stack, phase, ack)) in runs.iter().enumerate() {
                let stack = names[stack % n_stacks];
                let n = k as u128 + 1;
                d.migrations.push(id(n));
                outcomes.push(o(n, stack, PHASES[*phase]));
                if *ack {
                    d.acknowledged.push(id(n));
                }
            }
            let step = next_step(&d, &outcomes);
            let moved = |s: &str| outcomes.iter().any(|o| o.stack == s
                && matches!(o.phase, Phase::Committed | Phase::Purged));
            let unsettled = outcomes.iter().find(|o| !o.phase.is_settled());
            let blocking = outcomes.iter().any(|o| matches!(o.phase, Phase::Failed | Phase::RolledBack)
                && !d.acknowledged.contains(&o.id) && !moved(&o.stack));
            let next = plan.iter().find(|(s, _)| !moved(s));
            match step {
                DrainStep::Wait(w) => prop_assert_eq!(Some(w), unsettled.map(|o| o.id)),
                DrainStep::Start { stack, .. } => {
                    prop_assert!(unsettled.is_none() && !blocking);
                    prop_assert!(!moved(&stack));
                    prop_assert_eq!(Some(stack.as_str()), next.map(|(s, _)| *s));
                }
                DrainStep::Pause(_) => {
                    prop_assert!(unsettled.is_none());
                    prop_assert!(blocking || next.is_some_and(|(_, t)| t.is_none()));
                }
                DrainStep::Complete => {
                    prop_assert!(unsettled.is_none() && !blocking && next.is_none());
                }
                DrainStep::Idle => prop_assert!(false, "a running drain acts"),
            }
        }
    }
}
