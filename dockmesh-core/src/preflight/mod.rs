//! Pre-flight: checks over host and stack snapshots before a migration stops anything.
//!
//! A report has one entry per check: its name, pass | warn | fail, and a detail a person
//! understands. Any fail blocks the migration.
//!
//! [`run`] produces the report, with the checks of [`CHECK_NAMES`] in that order; its
//! documentation says how each check decides. The capacity rules (memory × 1.2, disk × 1.1,
//! ports, architecture, API version, names) are computed here in integer arithmetic, exactly
//! at the boundary, and the drain planner ([`crate::drain`]) places stacks with the same
//! functions.

mod capacity;
mod conflicts;
mod hosts;
mod images;
mod report;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub(crate) use capacity::TargetLoad;
use capacity::{source_metrics, target_capacity, target_disk};
use conflicts::{container_names, no_concurrent, port_conflicts, target_free};
use hosts::{arch_match, bind_mounts, docker_api};
use images::images;
pub(crate) use report::human_bytes;
pub use report::{CheckResult, CheckStatus, PreflightReport};
use report::{fail, not_evaluated, pass};

use crate::snapshot::{HostSnapshot, StackSnapshot};
use crate::types::MigrationId;
use serde::{Deserialize, Serialize};

/// A migration that is in progress, as pre-flight needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveMigration {
    /// Its id.
    pub id: MigrationId,
    /// The stack it moves.
    pub stack: String,
}

/// Everything pre-flight decides over.
#[derive(Debug, Clone)]
pub struct PreflightInput<'a> {
    /// The migration being checked (it is not counted as concurrent with itself).
    pub migration: Option<MigrationId>,
    /// The stack to move.
    pub stack: &'a str,
    /// The source host's snapshot (`online: false` when it did not answer).
    pub source: &'a HostSnapshot,
    /// The target host's snapshot (`online: false` when it did not answer).
    pub target: &'a HostSnapshot,
    /// Migrations in progress.
    pub active_migrations: &'a [ActiveMigration],
}

/// The checks of a report, in the order they appear.
pub const CHECK_NAMES: [&str; 13] = [
    TARGET_ONLINE,
    NO_CONCURRENT,
    SOURCE_ONLINE,
    SOURCE_METRICS,
    TARGET_CAPACITY,
    TARGET_DISK,
    PORT_CONFLICTS,
    CONTAINER_NAMES,
    IMAGES,
    ARCH_MATCH,
    DOCKER_API,
    BIND_MOUNTS,
    TARGET_FREE,
];

/// The target answered.
pub const TARGET_ONLINE: &str = "target_online";
/// No other migration of the stack is in progress.
pub const NO_CONCURRENT: &str = "no_concurrent";
/// The source answered.
pub const SOURCE_ONLINE: &str = "source_online";
/// The source reported the stack and its memory metrics.
pub const SOURCE_METRICS: &str = "source_metrics";
/// Free memory on the target ≥ 1.2 × the stack's used memory on the source.
pub const TARGET_CAPACITY: &str = "target_capacity";
/// Free disk on the target ≥ 1.1 × (the stack's volume bytes + bytes of images the target lacks).
pub const TARGET_DISK: &str = "target_disk";
/// None of the stack's published ports is in use on the target.
pub const PORT_CONFLICTS: &str = "port_conflicts";
/// No container the stack needs is named like a container of the target that is not the
/// stack's (a fixed `container_name` taken there would fail the deploy half way).
pub const CONTAINER_NAMES: &str = "container_names";
/// Images the stack uses that the target lacks (a warning: they are not transferred).
pub const IMAGES: &str = "images";
/// Source and target have the same CPU architecture.
pub const ARCH_MATCH: &str = "arch_match";
/// The target's Docker API version is not older than the source's.
pub const DOCKER_API: &str = "docker_api";
/// Bind mounts of the stack (a warning that lists them: they are not moved).
pub const BIND_MOUNTS: &str = "bind_mounts";
/// The target has no stack of that name and none of its volumes (import would overwrite them).
pub const TARGET_FREE: &str = "target_free";
/// Run every check over the input. The report has one entry per name of [`CHECK_NAMES`], in
/// that order.
///
/// Decisions worth knowing:
/// - A check that needs data from a host that is offline, or from a stack the source does not
///   report, **fails** with a detail saying it could not be evaluated: nothing is assumed.
/// - `source_metrics` fails when the stack is missing on the source, and also when its memory
///   metrics are missing: `target_capacity` cannot be evaluated without them, and moving a
///   stack blind is what pre-flight is there to prevent. Volumes whose size is unknown make it
///   (and `target_disk`, when it would otherwise pass) a warning: they count as 0 bytes.
/// - `images` is a warning naming the images the target lacks: images are not transferred, and
///   there is no guarantee the target can pull them. If it cannot, the stack fails to start on
///   the target and the migration rolls back to the source; no data is at risk.
/// - `docker_api` fails when the target's API version is older than the source's: containers
///   created against the newer API may use what the older engine does not support.
/// - `target_free` fails when the target already has a stack of that name, or a volume with
///   one of the stack's volume names: importing would overwrite data there.
pub fn run(input: &PreflightInput<'_>) -> PreflightReport {
    let source = input.source;
    let target = input.target;
    let source_down =
        (!source.online).then(|| format!("the source host {} is offline", source.host));
    let target_down =
        (!target.online).then(|| format!("the target host {} is offline", target.host));
    let stack = if source.online {
        source.stacks.get(input.stack)
    } else {
        None
    };
    let stack_unknown = match (&source_down, stack) {
        (Some(down), _) => Some(down.clone()),
        (None, None) => Some(format!(
            "the source host {} reports no stack named {}",
            source.host, input.stack
        )),
        (None, Some(_)) => None,
    };
    let load = TargetLoad::default();

    // A check over the stack and the target, or a fail saying why it could not be evaluated.
    let over_stack_and_target = |name: &str, f: &dyn Fn(&StackSnapshot) -> CheckResult| match stack
    {
        Some(s) if target.online => f(s),
        _ => not_evaluated(name, &[&stack_unknown, &target_down]),
    };
    let over_hosts = |name: &str, f: &dyn Fn() -> CheckResult| {
        if source.online && target.online {
            f()
        } else {
            not_evaluated(name, &[&source_down, &target_down])
        }
    };

    let checks = vec![
        match &target_down {
            Some(down) => fail(
                TARGET_ONLINE,
                format!("{down}; bring its agent back online and retry"),
            ),
            None => pass(
                TARGET_ONLINE,
                format!("the target host {} is online", target.host),
            ),
        },
        no_concurrent(input),
        match &source_down {
            Some(down) => fail(
                SOURCE_ONLINE,
                format!("{down}; bring its agent back online and retry"),
            ),
            None => pass(
                SOURCE_ONLINE,
                format!("the source host {} is online", source.host),
            ),
        },
        match stack {
            Some(s) => source_metrics(s, source),
            None if source_down.is_some() => not_evaluated(SOURCE_METRICS, &[&source_down]),
            None => fail(
                SOURCE_METRICS,
                format!(
                    "the source host {} reports no stack named {}; check the stack name and the host",
                    source.host, input.stack
                ),
            ),
        },
        over_stack_and_target(TARGET_CAPACITY, &|s| target_capacity(s, target, &load)),
        over_stack_and_target(TARGET_DISK, &|s| target_disk(s, target, &load)),
        over_stack_and_target(PORT_CONFLICTS, &|s| port_conflicts(s, target, &load)),
        over_stack_and_target(CONTAINER_NAMES, &|s| container_names(s, target)),
        over_stack_and_target(IMAGES, &|s| images(s, target, &load)),
        over_hosts(ARCH_MATCH, &|| arch_match(source, target)),
        over_hosts(DOCKER_API, &|| docker_api(source, target)),
        match stack {
            Some(s) => bind_mounts(s),
            None => not_evaluated(BIND_MOUNTS, &[&stack_unknown]),
        },
        over_stack_and_target(TARGET_FREE, &|s| target_free(source, s, target, &load)),
    ];
    PreflightReport { checks }
}

/// The checks that decide whether `stack`, now on `source`, can be placed on the online host
/// `target` carrying `load`, in report order: `target_capacity`, `target_disk`,
/// `port_conflicts`, `container_names`, `images`, `arch_match`, `docker_api`, `bind_mounts`,
/// `target_free`.
/// The drain planner places a stack only where none of them fails.
pub(crate) fn placement_checks(
    source: &HostSnapshot,
    stack: &StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> Vec<CheckResult> {
    vec![
        target_capacity(stack, target, load),
        target_disk(stack, target, load),
        port_conflicts(stack, target, load),
        container_names(stack, target),
        images(stack, target, load),
        arch_match(source, target),
        docker_api(source, target),
        bind_mounts(stack),
        target_free(source, stack, target, load),
    ]
}
