//! The drain planner: where each stack of a host should go.
//!
//! [`plan`] places every stack of a host on another online host with room, by the same
//! capacity rules as [`crate::preflight`] (one implementation, shared), accounting for what
//! earlier placements of the same plan already take on each target.

use crate::preflight::{CheckResult, CheckStatus, TargetLoad, human_bytes, placement_checks};
use crate::snapshot::{HostSnapshot, StackSnapshot};
use crate::types::{HostId, MigrationId};

mod progress;
use jiff::Timestamp;
pub use progress::{DrainState, DrainStep, MigrationOutcome, next_step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One stack of a drain plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEntry {
    /// The stack.
    pub stack: String,
    /// Where it goes, or `None` when no target fits.
    pub target: Option<HostId>,
    /// Why it goes there, or why it cannot move.
    pub reason: String,
}

/// A plan to move every stack off a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainPlan {
    /// The host being drained.
    pub host: HostId,
    /// One entry per stack, in the order they will be moved.
    pub entries: Vec<DrainEntry>,
}

impl DrainPlan {
    /// True when every stack has a target.
    pub fn feasible(&self) -> bool {
        self.entries.iter().all(|e| e.target.is_some())
    }
}

/// A drain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// The drain's id.
    pub id: uuid::Uuid,
    /// When it was created.
    pub created_at: Timestamp,
    /// The plan.
    pub plan: DrainPlan,
    /// Migrations started for it so far, oldest first.
    pub migrations: Vec<MigrationId>,
    /// Whether it runs, is paused, was aborted or is complete.
    #[serde(default)]
    pub state: DrainState,
    /// Failed migrations the operator resumed past: their stacks are tried again.
    #[serde(default)]
    pub acknowledged: Vec<MigrationId>,
}

/// The order in which a drain moves the stacks of a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainOrder {
    /// Smallest first: by volume bytes, then memory used, then name. The default: many stacks
    /// leave the host quickly, and a failure of a big one comes last.
    #[default]
    SmallestFirst,
    /// Largest first: by volume bytes, then memory used, both descending, then name. Big stacks
    /// get the pick of the targets.
    LargestFirst,
}

/// Why no drain plan could be made. Nothing was planned and nothing was moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DrainError {
    /// The host to drain is not among the given snapshots.
    #[error(
        "host {host} is not among the hosts given to the drain planner: nothing was planned and nothing was moved; check the host id and plan again"
    )]
    UnknownHost {
        /// The host asked for.
        host: HostId,
    },
    /// The host to drain did not answer, so its stacks are unknown.
    #[error(
        "host {host} is offline, so its stacks cannot be listed: nothing was planned and nothing was moved; bring its agent back online and plan again"
    )]
    HostOffline {
        /// The host asked for.
        host: HostId,
    },
    /// Two snapshots carry the same host id, so the plan would depend on their order.
    #[error(
        "host {host} appears more than once among the hosts given to the drain planner: nothing was planned and nothing was moved; pass one snapshot per host"
    )]
    DuplicateHost {
        /// The repeated host.
        host: HostId,
    },
}

/// Plan moving every stack off `host_to_drain` onto the other hosts.
///
/// Each stack, in `order`, goes to an online host other than the drained one where the
/// pre-flight placement checks do not fail: `target_capacity` (free memory ≥ 1.2 × the
/// stack's used memory), `target_disk` (free disk ≥ 1.1 × its volume bytes plus the images
/// the target lacks), `port_conflicts`, `arch_match`, `docker_api` and `target_free` (the same
/// functions pre-flight runs, so every placement would pass pre-flight against the snapshots
/// given). What earlier placements of the plan take on a target counts against it: their
/// memory and disk (the factors apply to the sum), their ports, their names and volume names,
/// and the images they bring (needed on disk once).
///
/// Among the targets that fit, the stack goes where the most memory is left free after the
/// placement; ties go to the smallest host id. A stack with no fitting target gets an entry
/// without a target, whose reason says, per host, why not. Warnings (images the target lacks,
/// bind mounts, unknown sizes) are named in the entry's reason.
///
/// The plan is a function of its inputs only: the order of `hosts` does not matter.
pub fn plan(
    host_to_drain: &HostId,
    hosts: &[HostSnapshot],
    order: DrainOrder,
) -> Result<DrainPlan, DrainError> {
    let mut by_id: BTreeMap<&HostId, &HostSnapshot> = BTreeMap::new();
    for h in hosts {
        if by_id.insert(&h.host, h).is_some() {
            return Err(DrainError::DuplicateHost {
                host: h.host.clone(),
            });
        }
    }
    let source = *by_id
        .get(host_to_drain)
        .ok_or_else(|| DrainError::UnknownHost {
            host: host_to_drain.clone(),
        })?;
    if !source.online {
        return Err(DrainError::HostOffline {
            host: host_to_drain.clone(),
        });
    }

    let mut stacks: Vec<&StackSnapshot> = source.stacks.values().collect();
    let size = |s: &StackSnapshot| (s.volume_bytes(), s.memory_used.unwrap_or(0));
    match order {
        DrainOrder::SmallestFirst => {
            stacks.sort_by(|a, b| size(a).cmp(&size(b)).then_with(|| a.name.cmp(&b.name)))
        }
        DrainOrder::LargestFirst => {
            stacks.sort_by(|a, b| size(b).cmp(&size(a)).then_with(|| a.name.cmp(&b.name)))
        }
    }

    // In host id order, which makes "ties go to the smallest id" the first one found.
    let targets: Vec<&HostSnapshot> = by_id
        .values()
        .copied()
        .filter(|h| h.host != *host_to_drain)
        .collect();
    let mut loads: BTreeMap<&HostId, TargetLoad> = targets
        .iter()
        .map(|t| (&t.host, TargetLoad::default()))
        .collect();

    let entries = stacks
        .into_iter()
        .map(|stack| place(source, stack, &targets, &mut loads))
        .collect();
    Ok(DrainPlan {
        host: host_to_drain.clone(),
        entries,
    })
}

/// Choose a target for one stack and account for it, or say why none fits.
fn place<'h>(
    source: &HostSnapshot,
    stack: &StackSnapshot,
    targets: &[&'h HostSnapshot],
    loads: &mut BTreeMap<&'h HostId, TargetLoad>,
) -> DrainEntry {
    let entry = |target: Option<HostId>, reason: String| DrainEntry {
        stack: stack.name.clone(),
        target,
        reason,
    };
    if targets.is_empty() {
        return entry(None, "no other host to move it to".to_owned());
    }
    let Some(used) = stack.memory_used else {
        return entry(
            None,
            format!(
                "{} reports no memory metrics for stack {}, so no target's memory can be checked; make sure the stack is running and its agent can read container stats, then plan again",
                source.host, stack.name
            ),
        );
    };

    // (headroom in tenths of a byte, target, its warnings)
    let mut best: Option<(u128, &HostSnapshot, Vec<CheckResult>)> = None;
    let mut feasible = 0usize;
    let mut refusals = Vec::new();
    for &t in targets {
        if !t.online {
            refusals.push(format!("{}: offline", t.host));
            continue;
        }
        let load = &loads[&t.host];
        let checks = placement_checks(source, stack, t, load);
        let fails: Vec<String> = checks
            .iter()
            .filter(|c| c.status == CheckStatus::Fail)
            .map(|c| format!("{} ({})", c.name, c.detail))
            .collect();
        if !fails.is_empty() {
            refusals.push(format!("{}: {}", t.host, fails.join(", ")));
            continue;
        }
        feasible += 1;
        // Memory left after placement, scaled by 10 to stay exact under the 1.2 factor.
        let headroom = u128::from(t.memory_free()) * 10 - (load.memory + u128::from(used)) * 12;
        if best.as_ref().is_none_or(|(h, _, _)| headroom > *h) {
            let warnings = checks
                .into_iter()
                .filter(|c| c.status == CheckStatus::Warn)
                .collect();
            best = Some((headroom, t, warnings));
        }
    }

    let Some((headroom, target, warnings)) = best else {
        return entry(None, format!("no target fits: {}", refusals.join("; ")));
    };
    let load = loads
        .get_mut(&target.host)
        .expect("every target has a load");
    load.place(stack, target);
    let mut reason = format!(
        "{} leaves the most memory free after placement ({}), among {} that fit",
        target.host,
        human_bytes(headroom / 10),
        if feasible == 1 {
            "1 target".to_owned()
        } else {
            format!("{feasible} targets")
        }
    );
    for w in warnings {
        reason += &format!("; warning {}: {}", w.name, w.detail);
    }
    entry(Some(target.host.clone()), reason)
}

#[cfg(test)]
mod tests;
