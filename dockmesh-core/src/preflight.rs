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

use crate::snapshot::{HostSnapshot, ImageUsage, PortKey, StackSnapshot};
use crate::types::MigrationId;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Nothing to worry about.
    Pass,
    /// Worth knowing; does not block.
    Warn,
    /// Blocks the migration.
    Fail,
}

/// One check of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The check's stable name (`target_online`, `target_capacity`, …).
    pub name: String,
    /// Its outcome.
    pub status: CheckStatus,
    /// What was found, in words.
    pub detail: String,
}

/// The result of every check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReport {
    /// One entry per check, in a fixed order.
    pub checks: Vec<CheckResult>,
}

impl PreflightReport {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != CheckStatus::Fail)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == CheckStatus::Fail)
    }

    /// A one-line summary of the failures (`name: detail; …`).
    pub fn failure_summary(&self) -> String {
        self.failures()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

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

/// A safety factor in tenths: the target must have `tenths / 10` × the base amount free.
#[derive(Debug, Clone, Copy)]
struct Factor {
    tenths: u128,
    label: &'static str,
}

/// Memory: free on the target ≥ 1.2 × used by the stack on the source.
const MEMORY_FACTOR: Factor = Factor {
    tenths: 12,
    label: "1.2",
};
/// Disk: free on the target ≥ 1.1 × (volume bytes + bytes of images the target lacks).
const DISK_FACTOR: Factor = Factor {
    tenths: 11,
    label: "1.1",
};

impl Factor {
    /// Whether `free ≥ factor × base`, exactly (integer arithmetic, no rounding).
    fn fits(self, free: u128, base: u128) -> bool {
        base.saturating_mul(self.tenths) <= free.saturating_mul(10)
    }

    /// `factor × base`, rounded up to a whole byte: the least free amount that fits.
    fn required(self, base: u128) -> u128 {
        base.saturating_mul(self.tenths).div_ceil(10)
    }
}

/// What earlier placements of the same plan will add to a target, on top of its snapshot.
///
/// Pre-flight checks one migration against a fresh snapshot (an empty load); the drain planner
/// places many stacks and carries one load per target, so that the sum of its placements
/// stays within the same rules: Σ used memory × 1.2 ≤ free memory, Σ (volume bytes + bytes
/// of images the target lacked) × 1.1 ≤ free disk, no port or name taken twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TargetLoad {
    /// Memory the placed stacks used on their source, in bytes (the factor applies to the sum).
    pub(crate) memory: u128,
    /// Volume bytes plus bytes of images the target lacked, of the placed stacks.
    pub(crate) disk: u128,
    /// Host ports the placed stacks publish, with the stack that publishes each.
    pub(crate) ports: BTreeMap<PortKey, String>,
    /// Images (normalized references) the placed stacks bring to the target.
    pub(crate) images: BTreeSet<String>,
    /// Names of the placed stacks.
    pub(crate) stacks: BTreeSet<String>,
    /// Names of the placed stacks' volumes.
    pub(crate) volumes: BTreeSet<String>,
}

impl TargetLoad {
    /// Account for `stack` being placed on `target`.
    pub(crate) fn place(&mut self, stack: &StackSnapshot, target: &HostSnapshot) {
        let missing = missing_images(stack, target, self);
        self.memory += u128::from(stack.memory_used.unwrap_or(0));
        self.disk += u128::from(stack.volume_bytes())
            + missing.iter().map(|i| u128::from(i.bytes)).sum::<u128>();
        self.images
            .extend(missing.iter().map(|i| normalize_image(&i.reference)));
        for p in &stack.published_ports {
            self.ports.insert(*p, stack.name.clone());
        }
        self.stacks.insert(stack.name.clone());
        self.volumes
            .extend(stack.volumes.iter().map(|v| v.name.clone()));
    }
}

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

fn result(name: &str, status: CheckStatus, detail: String) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        status,
        detail,
    }
}

fn pass(name: &str, detail: String) -> CheckResult {
    result(name, CheckStatus::Pass, detail)
}

fn warn(name: &str, detail: String) -> CheckResult {
    result(name, CheckStatus::Warn, detail)
}

fn fail(name: &str, detail: String) -> CheckResult {
    result(name, CheckStatus::Fail, detail)
}

fn not_evaluated(name: &str, reasons: &[&Option<String>]) -> CheckResult {
    let mut seen: Vec<&str> = Vec::new();
    for r in reasons.iter().filter_map(|r| r.as_deref()) {
        if !seen.contains(&r) {
            seen.push(r);
        }
    }
    fail(name, format!("could not be evaluated: {}", seen.join("; ")))
}

fn no_concurrent(input: &PreflightInput<'_>) -> CheckResult {
    let others: Vec<String> = input
        .active_migrations
        .iter()
        .filter(|m| m.stack == input.stack && Some(m.id) != input.migration)
        .map(|m| m.id.to_string())
        .collect();
    if others.is_empty() {
        pass(
            NO_CONCURRENT,
            format!("no other migration of stack {} is in progress", input.stack),
        )
    } else {
        fail(
            NO_CONCURRENT,
            format!(
                "stack {} is already being moved by migration {}; wait for it to end or roll it back, then retry",
                input.stack,
                others.join(", ")
            ),
        )
    }
}

fn source_metrics(stack: &StackSnapshot, source: &HostSnapshot) -> CheckResult {
    let Some(memory) = stack.memory_used else {
        return fail(
            SOURCE_METRICS,
            format!(
                "the source host {} reports stack {} but no memory metrics for it, so the target's memory cannot be checked; make sure the stack is running and its agent can read container stats, then retry",
                source.host, stack.name
            ),
        );
    };
    let volumes = format!(
        "{} totalling {}",
        plural(stack.volumes.len(), "volume"),
        human_bytes(u128::from(stack.volume_bytes()))
    );
    let unknown: Vec<&str> = stack
        .volumes
        .iter()
        .filter(|v| v.bytes.is_none())
        .map(|v| v.name.as_str())
        .collect();
    let detail = format!(
        "stack {} on {} uses {} of memory and {volumes}",
        stack.name,
        source.host,
        human_bytes(u128::from(memory))
    );
    if unknown.is_empty() {
        pass(SOURCE_METRICS, detail)
    } else {
        warn(
            SOURCE_METRICS,
            format!(
                "{detail}; the size of {} is unknown and counted as 0",
                unknown.join(", ")
            ),
        )
    }
}

fn target_capacity(stack: &StackSnapshot, target: &HostSnapshot, load: &TargetLoad) -> CheckResult {
    let Some(used) = stack.memory_used else {
        return fail(
            TARGET_CAPACITY,
            format!(
                "could not be evaluated: the source reported no memory metrics for stack {}",
                stack.name
            ),
        );
    };
    let used = u128::from(used);
    let free = u128::from(target.memory_free());
    let f = MEMORY_FACTOR;
    let mut detail = format!(
        "needs {} free memory ({} × {} used by the stack on the source), target {} has {} free",
        human_bytes(f.required(used)),
        f.label,
        human_bytes(used),
        target.host,
        human_bytes(free)
    );
    if load.memory > 0 || !load.stacks.is_empty() {
        detail += &format!(
            ", of which {} is reserved by {} placed there earlier in this plan ({} × {})",
            human_bytes(f.required(load.memory)),
            plural(load.stacks.len(), "stack"),
            f.label,
            human_bytes(load.memory)
        );
    }
    let total = load.memory + used;
    if f.fits(free, total) {
        pass(TARGET_CAPACITY, detail)
    } else {
        detail += &format!("; short by {}", human_bytes(f.required(total) - free));
        fail(TARGET_CAPACITY, detail)
    }
}

fn target_disk(stack: &StackSnapshot, target: &HostSnapshot, load: &TargetLoad) -> CheckResult {
    let missing = missing_images(stack, target, load);
    let volumes = u128::from(stack.volume_bytes());
    let image_bytes: u128 = missing.iter().map(|i| u128::from(i.bytes)).sum();
    let base = volumes + image_bytes;
    let free = u128::from(target.disk_free());
    let f = DISK_FACTOR;
    let mut detail = format!(
        "needs {} free disk ({} × ({} of volumes + {} of {} the target lacks)), target {} has {} free",
        human_bytes(f.required(base)),
        f.label,
        human_bytes(volumes),
        human_bytes(image_bytes),
        plural(missing.len(), "image"),
        target.host,
        human_bytes(free)
    );
    if load.disk > 0 || !load.stacks.is_empty() {
        detail += &format!(
            ", of which {} is reserved by {} placed there earlier in this plan ({} × {})",
            human_bytes(f.required(load.disk)),
            plural(load.stacks.len(), "stack"),
            f.label,
            human_bytes(load.disk)
        );
    }
    let unknown: Vec<String> = stack
        .volumes
        .iter()
        .filter(|v| v.bytes.is_none())
        .map(|v| format!("volume {}", v.name))
        .chain(
            missing
                .iter()
                .filter(|i| i.bytes == 0)
                .map(|i| format!("image {}", i.reference)),
        )
        .collect();
    if !unknown.is_empty() {
        detail += &format!("; unknown sizes counted as 0: {}", unknown.join(", "));
    }
    let total = load.disk + base;
    if !f.fits(free, total) {
        detail += &format!("; short by {}", human_bytes(f.required(total) - free));
        fail(TARGET_DISK, detail)
    } else if unknown.is_empty() {
        pass(TARGET_DISK, detail)
    } else {
        warn(TARGET_DISK, detail)
    }
}

fn port_conflicts(stack: &StackSnapshot, target: &HostSnapshot, load: &TargetLoad) -> CheckResult {
    let ports: BTreeSet<PortKey> = stack.published_ports.iter().copied().collect();
    if ports.is_empty() {
        return pass(PORT_CONFLICTS, "the stack publishes no ports".to_owned());
    }
    let mut conflicts = Vec::new();
    for p in &ports {
        if target.ports_in_use.contains(p) {
            conflicts.push(format!("{p} is in use on {}", target.host));
        } else if let Some(other) = load.ports.get(p) {
            conflicts.push(format!(
                "{p} is taken by stack {other} placed there earlier in this plan"
            ));
        }
    }
    let list = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if conflicts.is_empty() {
        pass(
            PORT_CONFLICTS,
            format!(
                "the stack's published ports ({list}) are free on {}",
                target.host
            ),
        )
    } else {
        fail(
            PORT_CONFLICTS,
            format!(
                "{}; free them on the target or change the stack's published ports",
                conflicts.join(", ")
            ),
        )
    }
}

fn container_names(stack: &StackSnapshot, target: &HostSnapshot) -> CheckResult {
    if stack.container_names.is_empty() {
        return pass(
            CONTAINER_NAMES,
            "the source reports no container names for the stack".to_owned(),
        );
    }
    let own: BTreeSet<&String> = target
        .stacks
        .get(&stack.name)
        .map(|s| s.container_names.iter().collect())
        .unwrap_or_default();
    let taken: Vec<&str> = stack
        .container_names
        .iter()
        .filter(|n| target.container_names.contains(*n) && !own.contains(n))
        .map(String::as_str)
        .collect();
    if taken.is_empty() {
        pass(
            CONTAINER_NAMES,
            format!(
                "the stack's container names ({}) are free on {}",
                stack.container_names.join(", "),
                target.host
            ),
        )
    } else {
        fail(
            CONTAINER_NAMES,
            format!(
                "container name(s) {} are taken on {} by containers that are not the stack's; \
                 rename or remove them there, or change the stack's container_name",
                taken.join(", "),
                target.host
            ),
        )
    }
}

fn images(stack: &StackSnapshot, target: &HostSnapshot, load: &TargetLoad) -> CheckResult {
    let missing = missing_images(stack, target, load);
    if missing.is_empty() {
        let count = stack
            .images
            .iter()
            .map(|i| normalize_image(&i.reference))
            .collect::<BTreeSet<_>>()
            .len();
        return pass(
            IMAGES,
            if count == 0 {
                "the stack uses no images".to_owned()
            } else {
                format!("{} has every image the stack uses ({count})", target.host)
            },
        );
    }
    let list = missing
        .iter()
        .map(|i| {
            if i.bytes == 0 {
                format!("{} (size unknown)", i.reference)
            } else {
                format!("{} ({})", i.reference, human_bytes(u128::from(i.bytes)))
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    warn(
        IMAGES,
        format!(
            "{} lacks {}: {list}; images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
            target.host,
            plural(missing.len(), "image"),
        ),
    )
}

fn arch_match(source: &HostSnapshot, target: &HostSnapshot) -> CheckResult {
    for h in [source, target] {
        if h.arch.trim().is_empty() {
            return fail(
                ARCH_MATCH,
                format!(
                    "could not be evaluated: host {} did not report its CPU architecture",
                    h.host
                ),
            );
        }
    }
    let (s, t) = (normalize_arch(&source.arch), normalize_arch(&target.arch));
    if s == t {
        pass(ARCH_MATCH, format!("source and target are both {s}"))
    } else {
        fail(
            ARCH_MATCH,
            format!(
                "the source is {s} and the target is {t}: the stack's images are built for {s}; choose a {s} target"
            ),
        )
    }
}

fn docker_api(source: &HostSnapshot, target: &HostSnapshot) -> CheckResult {
    let parse = |h: &HostSnapshot| {
        parse_api_version(&h.docker_api_version).ok_or_else(|| {
            fail(
                DOCKER_API,
                format!(
                    "could not be evaluated: host {} reported Docker API version {:?}, which is not a version number",
                    h.host, h.docker_api_version
                ),
            )
        })
    };
    let (s, t) = match (parse(source), parse(target)) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let (sv, tv) = (&source.docker_api_version, &target.docker_api_version);
    if cmp_versions(&t, &s) == Ordering::Less {
        fail(
            DOCKER_API,
            format!(
                "the target's Docker API {tv} is older than the source's {sv}: the stack may use what the older engine does not support; upgrade Docker on the target"
            ),
        )
    } else {
        pass(
            DOCKER_API,
            format!("the target's Docker API {tv} is not older than the source's {sv}"),
        )
    }
}

fn bind_mounts(stack: &StackSnapshot) -> CheckResult {
    if stack.bind_mounts.is_empty() {
        return pass(BIND_MOUNTS, "the stack has no bind mounts".to_owned());
    }
    let list = stack
        .bind_mounts
        .iter()
        .map(|b| format!("{}: {} → {}", b.service, b.source, b.target))
        .collect::<Vec<_>>()
        .join(", ");
    warn(
        BIND_MOUNTS,
        if stack.bind_mounts.len() == 1 {
            format!("1 bind mount is not moved, make its host path exist on the target: {list}")
        } else {
            format!(
                "{} bind mounts are not moved, make their host paths exist on the target: {list}",
                stack.bind_mounts.len()
            )
        },
    )
}

fn target_free(
    source: &HostSnapshot,
    stack: &StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> CheckResult {
    if source.host == target.host {
        return fail(
            TARGET_FREE,
            format!(
                "the target is the source host {}; choose another host",
                target.host
            ),
        );
    }
    let mut problems = Vec::new();
    if target.stacks.contains_key(&stack.name) {
        problems.push(format!(
            "{} already has a stack named {}",
            target.host, stack.name
        ));
    } else if load.stacks.contains(&stack.name) {
        problems.push(format!(
            "a stack named {} is placed on {} earlier in this plan",
            stack.name, target.host
        ));
    }
    let taken: Vec<&str> = stack
        .volumes
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| target.volumes.contains(*n) || load.volumes.contains(*n))
        .collect();
    if !taken.is_empty() {
        problems.push(format!(
            "{} already has {} named {}",
            target.host,
            if taken.len() == 1 {
                "a volume"
            } else {
                "volumes"
            },
            taken.join(", ")
        ));
    }
    if problems.is_empty() {
        let volumes = stack
            .volumes
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        pass(
            TARGET_FREE,
            if volumes.is_empty() {
                format!("{} has no stack named {}", target.host, stack.name)
            } else {
                format!(
                    "{} has no stack named {} and none of its volumes ({volumes})",
                    target.host, stack.name
                )
            },
        )
    } else {
        fail(
            TARGET_FREE,
            format!(
                "{}: importing would overwrite what is there; remove it from the target first or choose another target",
                problems.join(", ")
            ),
        )
    }
}

/// The images of `stack` that neither `target` nor earlier placements on it provide, one per
/// normalized reference, in the stack's order.
fn missing_images<'s>(
    stack: &'s StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> Vec<&'s ImageUsage> {
    let present: BTreeSet<String> = target.images.iter().map(|i| normalize_image(i)).collect();
    let mut seen = BTreeSet::new();
    stack
        .images
        .iter()
        .filter(|i| {
            let n = normalize_image(&i.reference);
            !present.contains(&n) && !load.images.contains(&n) && seen.insert(n)
        })
        .collect()
}

/// An image reference in the form the engine would store it, so that `nginx`,
/// `nginx:latest` and `docker.io/library/nginx:latest` are the same image.
fn normalize_image(reference: &str) -> String {
    let mut r = reference.trim();
    for prefix in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = r.strip_prefix(prefix) {
            r = rest;
            break;
        }
    }
    if let Some(rest) = r.strip_prefix("library/")
        && !rest.contains('/')
    {
        r = rest;
    }
    let last = r.rsplit('/').next().unwrap_or(r);
    if r.contains('@') || last.contains(':') {
        r.to_owned()
    } else {
        format!("{r}:latest")
    }
}

/// One name per architecture: engines say `x86_64`/`aarch64`, images say `amd64`/`arm64`.
fn normalize_arch(arch: &str) -> String {
    let a = arch.trim().to_ascii_lowercase();
    match a.as_str() {
        "amd64" | "x86-64" | "x64" => "x86_64".to_owned(),
        "arm64" | "armv8" => "aarch64".to_owned(),
        _ => a,
    }
}

/// `"1.41"` → `[1, 41]`; `None` unless every dot-separated part is a number.
fn parse_api_version(v: &str) -> Option<Vec<u64>> {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    v.split('.').map(|p| p.parse::<u64>().ok()).collect()
}

/// Numeric comparison, missing parts counting as 0 (`1.41` = `1.41.0` < `1.47`).
fn cmp_versions(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Bytes in binary units with one decimal (`900 B`, `1.5 KiB`, `1.2 GiB`).
pub(crate) fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit: u128 = 1024;
    let mut i = 0;
    while i + 1 < UNITS.len() && bytes >= unit * 1024 {
        unit *= 1024;
        i += 1;
    }
    let mut tenths = (bytes.saturating_mul(10) + unit / 2) / unit;
    if tenths >= 10240 && i + 1 < UNITS.len() {
        unit *= 1024;
        i += 1;
        tenths = (bytes.saturating_mul(10) + unit / 2) / unit;
    }
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[i])
}

/// Builders and strategies shared by the pre-flight and drain tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::snapshot::{
        BindMount, HostSnapshot, ImageUsage, PortKey, Protocol, StackSnapshot, VolumeUsage,
    };
    use crate::types::HostId;
    use jiff::Timestamp;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    pub(crate) const MIB: u64 = 1024 * 1024;
    pub(crate) const GIB: u64 = 1024 * MIB;

    /// An online x86_64 host with API 1.47, 16 GiB of memory and 100 GiB of disk, nothing used.
    pub(crate) fn host(id: &str) -> HostSnapshot {
        HostSnapshot {
            host: HostId::new(id),
            online: true,
            taken_at: Timestamp::UNIX_EPOCH,
            memory_total: 16 * GIB,
            memory_used: 0,
            disk_total: 100 * GIB,
            disk_used: 0,
            arch: "x86_64".into(),
            docker_version: "28.2.2".into(),
            docker_api_version: "1.47".into(),
            ports_in_use: BTreeSet::new(),
            images: BTreeSet::new(),
            stacks: BTreeMap::new(),
            volumes: BTreeSet::new(),
            container_names: BTreeSet::new(),
        }
    }

    /// A stack with one service and one volume `<name>_data` of `volume` bytes.
    pub(crate) fn stack(name: &str, memory: u64, volume: u64) -> StackSnapshot {
        StackSnapshot {
            name: name.into(),
            services: vec!["app".into()],
            images: vec![],
            published_ports: vec![],
            volumes: vec![VolumeUsage {
                name: format!("{name}_data"),
                bytes: Some(volume),
                labels: BTreeMap::new(),
            }],
            bind_mounts: vec![],
            memory_used: Some(memory),
            running: true,
            container_names: vec![],
        }
    }

    pub(crate) fn image(reference: &str, bytes: u64) -> ImageUsage {
        ImageUsage {
            reference: reference.into(),
            bytes,
        }
    }

    pub(crate) fn bind(service: &str, source: &str, target: &str) -> BindMount {
        BindMount {
            service: service.into(),
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    pub(crate) fn with_stack(mut h: HostSnapshot, s: StackSnapshot) -> HostSnapshot {
        h.stacks.insert(s.name.clone(), s);
        h
    }

    pub(crate) const IMAGE_POOL: [&str; 4] = ["nginx:1.27", "postgres:16", "redis:7", "busybox:1"];

    /// A random stack named `name`: sizes in steps of 100 MiB so that sums land on the
    /// factor boundaries often, a few ports and images from small pools.
    pub(crate) fn arb_stack(name: String) -> impl Strategy<Value = StackSnapshot> {
        (
            proptest::option::weighted(0.9, 0u64..30),
            prop::collection::vec(proptest::option::weighted(0.9, 0u64..30), 0..3),
            prop::collection::btree_set(8000u16..8012, 0..3),
            prop::collection::btree_set(0usize..IMAGE_POOL.len(), 0..3),
            0usize..3,
        )
            .prop_map(move |(mem, vols, ports, imgs, binds)| StackSnapshot {
                name: name.clone(),
                services: vec!["app".into()],
                images: imgs
                    .into_iter()
                    .map(|i| image(IMAGE_POOL[i], (i as u64 + 1) * 100 * MIB))
                    .collect(),
                published_ports: ports.into_iter().map(PortKey::tcp).collect(),
                volumes: vols
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| VolumeUsage {
                        name: format!("{name}_v{i}"),
                        bytes: b.map(|b| b * 100 * MIB),
                        labels: BTreeMap::new(),
                    })
                    .collect(),
                bind_mounts: (0..binds)
                    .map(|i| bind("app", &format!("/srv/{name}/{i}"), &format!("/data/{i}")))
                    .collect(),
                memory_used: mem.map(|m| m * 100 * MIB),
                running: true,
                container_names: vec![],
            })
    }

    /// A random host named `id`, with resources in steps of 100 MiB, mostly x86_64 and API
    /// 1.47, and random stacks from `stack_names`.
    pub(crate) fn arb_host(
        id: String,
        stack_names: Vec<String>,
    ) -> impl Strategy<Value = HostSnapshot> {
        let stacks: Vec<_> = stack_names
            .into_iter()
            .map(|n| proptest::option::weighted(0.8, arb_stack(n)))
            .collect();
        (
            proptest::bool::weighted(0.85),
            (0u64..40, 0u64..80, 0u64..40, 0u64..150),
            prop_oneof![
                8 => Just("x86_64"),
                1 => Just("amd64"),
                1 => Just("aarch64"),
                1 => Just(""),
            ],
            prop_oneof![
                8 => Just("1.47"),
                1 => Just("1.47.0"),
                1 => Just("1.41"),
                1 => Just("1.9"),
                1 => Just("x"),
            ],
            prop::collection::btree_set(8000u16..8012, 0..3),
            prop::collection::btree_set(0usize..IMAGE_POOL.len(), 0..4),
            stacks,
            prop::collection::btree_set("[a-c]_v[0-2]", 0..2),
        )
            .prop_map(
                move |(online, (mu, mf, du, df), arch, api, ports, imgs, stacks, vols)| {
                    let mut h = host(&id);
                    h.online = online;
                    h.memory_used = mu * 100 * MIB;
                    h.memory_total = (mu + mf) * 100 * MIB;
                    h.disk_used = du * 100 * MIB;
                    h.disk_total = (du + df) * 100 * MIB;
                    h.arch = arch.into();
                    h.docker_api_version = api.into();
                    h.ports_in_use = ports
                        .into_iter()
                        .map(|p| PortKey {
                            port: p,
                            protocol: Protocol::Tcp,
                        })
                        .collect();
                    h.images = imgs.into_iter().map(|i| IMAGE_POOL[i].to_owned()).collect();
                    h.stacks = stacks
                        .into_iter()
                        .flatten()
                        .map(|s| (s.name.clone(), s))
                        .collect();
                    h.volumes = vols;
                    h
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::snapshot::{PortKey, Protocol};
    use crate::types::HostId;
    use CheckStatus::{Fail, Pass, Warn};
    use jiff::Timestamp;
    use proptest::prelude::*;

    /// The base case: stack `shop` on host `a`, target `b` with room for it and its images.
    /// Every check passes on it.
    struct Case {
        source: HostSnapshot,
        target: HostSnapshot,
        active: Vec<ActiveMigration>,
        migration: Option<MigrationId>,
        stack: String,
    }

    fn mid(n: u128) -> MigrationId {
        MigrationId(uuid::Uuid::from_u128(n))
    }

    fn base() -> Case {
        let mut shop = stack("shop", GIB, 5 * GIB);
        shop.images = vec![
            image("nginx:1.27", 190 * MIB),
            image("postgres:16", 400 * MIB),
        ];
        shop.published_ports = vec![PortKey::tcp(8080)];
        let mut source = with_stack(host("a"), shop);
        source.memory_used = 4 * GIB;
        let mut target = host("b");
        target.memory_total = 8 * GIB;
        target.memory_used = 2 * GIB;
        target.disk_total = 50 * GIB;
        target.disk_used = 10 * GIB;
        target.images = ["nginx:1.27", "postgres:16"].map(String::from).into();
        target.ports_in_use = [PortKey::tcp(22), PortKey::tcp(80)].into();
        Case {
            source,
            target,
            active: vec![ActiveMigration {
                id: mid(1),
                stack: "other".into(),
            }],
            migration: Some(mid(7)),
            stack: "shop".into(),
        }
    }

    fn shop(c: &mut Case) -> &mut StackSnapshot {
        c.source.stacks.get_mut("shop").unwrap()
    }

    /// Apply `change` to the base case, run pre-flight, and compare: the listed checks must
    /// have exactly that status and detail; every other check must pass.
    fn check(change: impl FnOnce(&mut Case), expected: &[(&str, CheckStatus, &str)]) {
        let mut c = base();
        change(&mut c);
        let report = run(&PreflightInput {
            migration: c.migration,
            stack: &c.stack,
            source: &c.source,
            target: &c.target,
            active_migrations: &c.active,
        });
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, CHECK_NAMES);
        for r in &report.checks {
            match expected.iter().find(|(n, _, _)| *n == r.name) {
                Some((_, status, detail)) => {
                    assert_eq!(
                        (r.status, r.detail.as_str()),
                        (*status, *detail),
                        "check {}",
                        r.name
                    );
                }
                None => assert_eq!(r.status, Pass, "check {}: {}", r.name, r.detail),
            }
        }
        for (n, _, _) in expected {
            assert!(CHECK_NAMES.contains(n), "unknown check {n}");
        }
        let any_fail = expected.iter().any(|(_, s, _)| *s == Fail);
        assert_eq!(report.passed(), !any_fail);
    }

    #[test]
    fn base_case_passes_with_readable_details() {
        check(
            |_| {},
            &[
                (TARGET_ONLINE, Pass, "the target host b is online"),
                (
                    NO_CONCURRENT,
                    Pass,
                    "no other migration of stack shop is in progress",
                ),
                (SOURCE_ONLINE, Pass, "the source host a is online"),
                (
                    SOURCE_METRICS,
                    Pass,
                    "stack shop on a uses 1.0 GiB of memory and 1 volume totalling 5.0 GiB",
                ),
                (
                    TARGET_CAPACITY,
                    Pass,
                    "needs 1.2 GiB free memory (1.2 × 1.0 GiB used by the stack on the source), target b has 6.0 GiB free",
                ),
                (
                    TARGET_DISK,
                    Pass,
                    "needs 5.5 GiB free disk (1.1 × (5.0 GiB of volumes + 0 B of 0 images the target lacks)), target b has 40.0 GiB free",
                ),
                (
                    PORT_CONFLICTS,
                    Pass,
                    "the stack's published ports (8080/tcp) are free on b",
                ),
                (IMAGES, Pass, "b has every image the stack uses (2)"),
                (ARCH_MATCH, Pass, "source and target are both x86_64"),
                (
                    DOCKER_API,
                    Pass,
                    "the target's Docker API 1.47 is not older than the source's 1.47",
                ),
                (BIND_MOUNTS, Pass, "the stack has no bind mounts"),
                (
                    TARGET_FREE,
                    Pass,
                    "b has no stack named shop and none of its volumes (shop_data)",
                ),
            ],
        );
    }

    #[test]
    fn target_offline_fails_every_check_that_needs_it() {
        let not = "could not be evaluated: the target host b is offline";
        check(
            |c| c.target = HostSnapshot::offline(HostId::new("b"), Timestamp::UNIX_EPOCH),
            &[
                (
                    TARGET_ONLINE,
                    Fail,
                    "the target host b is offline; bring its agent back online and retry",
                ),
                (TARGET_CAPACITY, Fail, not),
                (TARGET_DISK, Fail, not),
                (PORT_CONFLICTS, Fail, not),
                (CONTAINER_NAMES, Fail, not),
                (IMAGES, Fail, not),
                (ARCH_MATCH, Fail, not),
                (DOCKER_API, Fail, not),
                (TARGET_FREE, Fail, not),
            ],
        );
    }

    #[test]
    fn source_offline_fails_every_check_that_needs_it() {
        let not = "could not be evaluated: the source host a is offline";
        check(
            |c| c.source = HostSnapshot::offline(HostId::new("a"), Timestamp::UNIX_EPOCH),
            &[
                (
                    SOURCE_ONLINE,
                    Fail,
                    "the source host a is offline; bring its agent back online and retry",
                ),
                (SOURCE_METRICS, Fail, not),
                (TARGET_CAPACITY, Fail, not),
                (TARGET_DISK, Fail, not),
                (PORT_CONFLICTS, Fail, not),
                (CONTAINER_NAMES, Fail, not),
                (IMAGES, Fail, not),
                (ARCH_MATCH, Fail, not),
                (DOCKER_API, Fail, not),
                (BIND_MOUNTS, Fail, not),
                (TARGET_FREE, Fail, not),
            ],
        );
    }

    #[test]
    fn both_offline_names_both() {
        let mut c = base();
        c.source.online = false;
        c.target.online = false;
        let r = run(&PreflightInput {
            migration: None,
            stack: "shop",
            source: &c.source,
            target: &c.target,
            active_migrations: &[],
        });
        let cap = r.checks.iter().find(|c| c.name == TARGET_CAPACITY).unwrap();
        assert_eq!(
            cap.detail,
            "could not be evaluated: the source host a is offline; the target host b is offline"
        );
        assert_eq!(r.failures().count(), 12, "{r:?}");
    }

    #[test]
    fn missing_stack_fails_source_metrics_and_what_needs_it() {
        let not = "could not be evaluated: the source host a reports no stack named shop";
        check(
            |c| {
                c.source.stacks.clear();
            },
            &[
                (
                    SOURCE_METRICS,
                    Fail,
                    "the source host a reports no stack named shop; check the stack name and the host",
                ),
                (TARGET_CAPACITY, Fail, not),
                (TARGET_DISK, Fail, not),
                (PORT_CONFLICTS, Fail, not),
                (CONTAINER_NAMES, Fail, not),
                (IMAGES, Fail, not),
                (BIND_MOUNTS, Fail, not),
                (TARGET_FREE, Fail, not),
            ],
        );
    }

    #[test]
    fn missing_memory_metrics_fail() {
        check(
            |c| shop(c).memory_used = None,
            &[
                (
                    SOURCE_METRICS,
                    Fail,
                    "the source host a reports stack shop but no memory metrics for it, so the target's memory cannot be checked; make sure the stack is running and its agent can read container stats, then retry",
                ),
                (
                    TARGET_CAPACITY,
                    Fail,
                    "could not be evaluated: the source reported no memory metrics for stack shop",
                ),
            ],
        );
    }

    #[test]
    fn unknown_volume_size_warns() {
        check(
            |c| {
                shop(c).volumes.push(crate::snapshot::VolumeUsage {
                    name: "shop_cache".into(),
                    bytes: None,
                    labels: Default::default(),
                })
            },
            &[
                (
                    SOURCE_METRICS,
                    Warn,
                    "stack shop on a uses 1.0 GiB of memory and 2 volumes totalling 5.0 GiB; the size of shop_cache is unknown and counted as 0",
                ),
                (
                    TARGET_DISK,
                    Warn,
                    "needs 5.5 GiB free disk (1.1 × (5.0 GiB of volumes + 0 B of 0 images the target lacks)), target b has 40.0 GiB free; unknown sizes counted as 0: volume shop_cache",
                ),
                (
                    TARGET_FREE,
                    Pass,
                    "b has no stack named shop and none of its volumes (shop_data, shop_cache)",
                ),
            ],
        );
    }

    #[test]
    fn concurrent_migration_of_the_same_stack_fails_but_not_itself() {
        check(
            |c| {
                c.active.push(ActiveMigration {
                    id: mid(7),
                    stack: "shop".into(),
                });
            },
            &[],
        );
        check(
            |c| {
                c.active.push(ActiveMigration {
                    id: mid(9),
                    stack: "shop".into(),
                });
            },
            &[(
                NO_CONCURRENT,
                Fail,
                "stack shop is already being moved by migration 00000000-0000-0000-0000-000000000009; wait for it to end or roll it back, then retry",
            )],
        );
        // Without an id of its own, any active migration of the stack is concurrent.
        check(
            |c| {
                c.migration = None;
                c.active.push(ActiveMigration {
                    id: mid(7),
                    stack: "shop".into(),
                });
            },
            &[(
                NO_CONCURRENT,
                Fail,
                "stack shop is already being moved by migration 00000000-0000-0000-0000-000000000007; wait for it to end or roll it back, then retry",
            )],
        );
    }

    #[test]
    fn memory_boundary_is_exactly_one_point_two() {
        // 1000 MiB used: exactly 1200 MiB free passes, one byte less fails.
        let at = |free: u64| {
            move |c: &mut Case| {
                shop(c).memory_used = Some(1000 * MIB);
                c.target.memory_total = 10 * GIB;
                c.target.memory_used = 10 * GIB - free;
            }
        };
        check(
            at(1200 * MIB),
            &[
                (
                    TARGET_CAPACITY,
                    Pass,
                    "needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 1.2 GiB free",
                ),
                (
                    SOURCE_METRICS,
                    Pass,
                    "stack shop on a uses 1000.0 MiB of memory and 1 volume totalling 5.0 GiB",
                ),
            ],
        );
        check(
            at(1200 * MIB - 1),
            &[
                (
                    TARGET_CAPACITY,
                    Fail,
                    "needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 1.2 GiB free; short by 1 B",
                ),
                (
                    SOURCE_METRICS,
                    Pass,
                    "stack shop on a uses 1000.0 MiB of memory and 1 volume totalling 5.0 GiB",
                ),
            ],
        );
    }

    #[test]
    fn memory_boundary_has_no_float_rounding() {
        // 1.2 × 1 GiB = 1288490188.8 bytes: 1288490189 free is enough, 1288490188 is not.
        let cap = |free: u64, used: u64| {
            let mut t = host("b");
            t.memory_total = free;
            target_capacity(&stack("s", used, 0), &t, &TargetLoad::default()).status
        };
        assert_eq!(cap(1_288_490_189, GIB), Pass);
        assert_eq!(cap(1_288_490_188, GIB), Fail);
        // 1.2 × 5 = 6 exactly; 1.2 × 1 = 1.2 needs 2 whole bytes.
        assert_eq!(cap(6, 5), Pass);
        assert_eq!(cap(5, 5), Fail);
        assert_eq!(cap(2, 1), Pass);
        assert_eq!(cap(1, 1), Fail);
        assert_eq!(cap(0, 0), Pass);
        // The largest sizes do not overflow.
        assert_eq!(cap(u64::MAX, u64::MAX), Fail);
        assert_eq!(cap(u64::MAX, u64::MAX / 12 * 10), Pass);
    }

    #[test]
    fn disk_boundary_is_exactly_one_point_one_including_missing_images() {
        // 800 MiB of volumes + 200 MiB of an image the target lacks = 1000 MiB; needs 1100 MiB.
        let at = |free: u64| {
            move |c: &mut Case| {
                let s = shop(c);
                s.volumes[0].bytes = Some(800 * MIB);
                s.images.push(image("redis:7", 200 * MIB));
                c.target.disk_total = 20 * GIB;
                c.target.disk_used = 20 * GIB - free;
            }
        };
        let images = (
            IMAGES,
            Warn,
            "b lacks 1 image: redis:7 (200.0 MiB); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
        );
        let metrics = (
            SOURCE_METRICS,
            Pass,
            "stack shop on a uses 1.0 GiB of memory and 1 volume totalling 800.0 MiB",
        );
        check(
            at(1100 * MIB),
            &[
                (
                    TARGET_DISK,
                    Pass,
                    "needs 1.1 GiB free disk (1.1 × (800.0 MiB of volumes + 200.0 MiB of 1 image the target lacks)), target b has 1.1 GiB free",
                ),
                images,
                metrics,
            ],
        );
        check(
            at(1100 * MIB - 1),
            &[
                (
                    TARGET_DISK,
                    Fail,
                    "needs 1.1 GiB free disk (1.1 × (800.0 MiB of volumes + 200.0 MiB of 1 image the target lacks)), target b has 1.1 GiB free; short by 1 B",
                ),
                images,
                metrics,
            ],
        );
        // Once the target has the image, only the volumes count.
        check(
            |c| {
                at(1100 * MIB - 1)(c);
                c.target.images.insert("redis:7".into());
            },
            &[
                (
                    TARGET_DISK,
                    Pass,
                    "needs 880.0 MiB free disk (1.1 × (800.0 MiB of volumes + 0 B of 0 images the target lacks)), target b has 1.1 GiB free",
                ),
                metrics,
            ],
        );
    }

    #[test]
    fn disk_exact_at_byte_level() {
        let disk = |free: u64, vol: u64| {
            let mut t = host("b");
            t.disk_total = free;
            target_disk(&stack("s", 0, vol), &t, &TargetLoad::default()).status
        };
        assert_eq!(disk(11, 10), Pass);
        assert_eq!(disk(10, 10), Fail);
        assert_eq!(disk(2, 1), Pass);
        assert_eq!(disk(1, 1), Fail);
        // 1.1 × 1 GiB = 1181116006.4
        assert_eq!(disk(1_181_116_007, GIB), Pass);
        assert_eq!(disk(1_181_116_006, GIB), Fail);
    }

    #[test]
    fn port_conflicts_name_each_port() {
        check(
            |c| {
                shop(c).published_ports = vec![
                    PortKey::tcp(443),
                    PortKey::tcp(80),
                    PortKey {
                        port: 53,
                        protocol: Protocol::Udp,
                    },
                    PortKey::tcp(22),
                ]
            },
            &[(
                PORT_CONFLICTS,
                Fail,
                "22/tcp is in use on b, 80/tcp is in use on b; free them on the target or change the stack's published ports",
            )],
        );
        // Same number, other protocol: no conflict.
        check(
            |c| {
                shop(c).published_ports = vec![PortKey {
                    port: 80,
                    protocol: Protocol::Udp,
                }]
            },
            &[(
                PORT_CONFLICTS,
                Pass,
                "the stack's published ports (80/udp) are free on b",
            )],
        );
        check(
            |c| shop(c).published_ports.clear(),
            &[(PORT_CONFLICTS, Pass, "the stack publishes no ports")],
        );
    }

    #[test]
    fn container_names_taken_on_the_target_fail() {
        check(
            |c| {
                shop(c).container_names = vec!["shop-web-1".into(), "proxy".into()];
                c.target.container_names = ["proxy".into(), "other".into()].into();
            },
            &[(
                CONTAINER_NAMES,
                Fail,
                "container name(s) proxy are taken on b by containers that are not the stack's; \
                 rename or remove them there, or change the stack's container_name",
            )],
        );
        check(
            |c| {
                shop(c).container_names = vec!["proxy".into()];
                c.target.container_names = ["other".into()].into();
            },
            &[(
                CONTAINER_NAMES,
                Pass,
                "the stack's container names (proxy) are free on b",
            )],
        );
        check(
            |_| {},
            &[(
                CONTAINER_NAMES,
                Pass,
                "the source reports no container names for the stack",
            )],
        );
    }

    #[test]
    fn missing_images_warn_and_references_are_normalized() {
        check(
            |c| {
                c.target.images = ["docker.io/library/nginx:1.27".to_owned()].into();
                let s = shop(c);
                s.images.push(image("busybox", 0));
                // Listed twice by two services: named once.
                s.images.push(image("postgres:16", 400 * MIB));
            },
            &[
                (
                    IMAGES,
                    Warn,
                    "b lacks 2 images: postgres:16 (400.0 MiB), busybox (size unknown); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
                ),
                (
                    TARGET_DISK,
                    Warn,
                    "needs 5.9 GiB free disk (1.1 × (5.0 GiB of volumes + 400.0 MiB of 2 images the target lacks)), target b has 40.0 GiB free; unknown sizes counted as 0: image busybox",
                ),
            ],
        );
        check(
            |c| shop(c).images.clear(),
            &[(IMAGES, Pass, "the stack uses no images")],
        );
    }

    #[test]
    fn image_normalization() {
        for (a, b) in [
            ("nginx", "nginx:latest"),
            ("docker.io/library/nginx:latest", "nginx:latest"),
            ("library/nginx", "nginx:latest"),
            ("docker.io/grafana/grafana:11", "grafana/grafana:11"),
            ("localhost:5000/app", "localhost:5000/app:latest"),
            ("localhost:5000/app:2", "localhost:5000/app:2"),
            ("nginx@sha256:abc", "nginx@sha256:abc"),
            ("dockmesh-test/busybox:1", "dockmesh-test/busybox:1"),
        ] {
            assert_eq!(normalize_image(a), b, "{a}");
        }
    }

    #[test]
    fn arch_mismatch_fails_and_aliases_match() {
        check(
            |c| c.target.arch = "aarch64".into(),
            &[(
                ARCH_MATCH,
                Fail,
                "the source is x86_64 and the target is aarch64: the stack's images are built for x86_64; choose a x86_64 target",
            )],
        );
        check(
            |c| c.target.arch = "amd64".into(),
            &[(ARCH_MATCH, Pass, "source and target are both x86_64")],
        );
        check(
            |c| c.source.arch = String::new(),
            &[(
                ARCH_MATCH,
                Fail,
                "could not be evaluated: host a did not report its CPU architecture",
            )],
        );
    }

    #[test]
    fn docker_api_compares_numerically() {
        check(
            |c| c.target.docker_api_version = "1.41".into(),
            &[(
                DOCKER_API,
                Fail,
                "the target's Docker API 1.41 is older than the source's 1.47: the stack may use what the older engine does not support; upgrade Docker on the target",
            )],
        );
        // As strings "1.9" > "1.41"; as versions it is older.
        check(
            |c| {
                c.source.docker_api_version = "1.41".into();
                c.target.docker_api_version = "1.9".into();
            },
            &[(
                DOCKER_API,
                Fail,
                "the target's Docker API 1.9 is older than the source's 1.41: the stack may use what the older engine does not support; upgrade Docker on the target",
            )],
        );
        check(
            |c| {
                c.source.docker_api_version = "1.41".into();
                c.target.docker_api_version = "1.47".into();
            },
            &[(
                DOCKER_API,
                Pass,
                "the target's Docker API 1.47 is not older than the source's 1.41",
            )],
        );
        check(
            |c| c.target.docker_api_version = "1.47.0".into(),
            &[(
                DOCKER_API,
                Pass,
                "the target's Docker API 1.47.0 is not older than the source's 1.47",
            )],
        );
        check(
            |c| c.target.docker_api_version = String::new(),
            &[(
                DOCKER_API,
                Fail,
                "could not be evaluated: host b reported Docker API version \"\", which is not a version number",
            )],
        );
    }

    #[test]
    fn bind_mounts_warn_listing_each() {
        check(
            |c| {
                shop(c).bind_mounts = vec![
                    bind("web", "/srv/shop/nginx.conf", "/etc/nginx/nginx.conf"),
                    bind("db", "/srv/shop/init", "/docker-entrypoint-initdb.d"),
                ]
            },
            &[(
                BIND_MOUNTS,
                Warn,
                "2 bind mounts are not moved, make their host paths exist on the target: web: /srv/shop/nginx.conf → /etc/nginx/nginx.conf, db: /srv/shop/init → /docker-entrypoint-initdb.d",
            )],
        );
        check(
            |c| shop(c).bind_mounts = vec![bind("web", "/a", "/b")],
            &[(
                BIND_MOUNTS,
                Warn,
                "1 bind mount is not moved, make its host path exist on the target: web: /a → /b",
            )],
        );
    }

    #[test]
    fn target_free_fails_when_import_would_overwrite() {
        check(
            |c| {
                c.target.stacks.insert("shop".into(), stack("shop", 0, 0));
            },
            &[(
                TARGET_FREE,
                Fail,
                "b already has a stack named shop: importing would overwrite what is there; remove it from the target first or choose another target",
            )],
        );
        check(
            |c| {
                c.target.volumes.insert("shop_data".into());
            },
            &[(
                TARGET_FREE,
                Fail,
                "b already has a volume named shop_data: importing would overwrite what is there; remove it from the target first or choose another target",
            )],
        );
        check(
            |c| {
                c.target = c.source.clone();
            },
            &[
                (
                    TARGET_FREE,
                    Fail,
                    "the target is the source host a; choose another host",
                ),
                (TARGET_ONLINE, Pass, "the target host a is online"),
                (
                    TARGET_CAPACITY,
                    Pass,
                    "needs 1.2 GiB free memory (1.2 × 1.0 GiB used by the stack on the source), target a has 12.0 GiB free",
                ),
                (
                    TARGET_DISK,
                    Pass,
                    "needs 6.1 GiB free disk (1.1 × (5.0 GiB of volumes + 590.0 MiB of 2 images the target lacks)), target a has 100.0 GiB free",
                ),
                (
                    IMAGES,
                    Warn,
                    "a lacks 2 images: nginx:1.27 (190.0 MiB), postgres:16 (400.0 MiB); images are not transferred, so the target must pull them from a registry or have them loaded before the migration, otherwise the stack will not start there and the migration rolls back to the source",
                ),
            ],
        );
    }

    #[test]
    fn load_of_earlier_placements_counts() {
        let mut t = host("b");
        t.memory_total = 2400 * MIB;
        t.disk_total = 2200 * MIB;
        t.ports_in_use.clear();
        let mut first = stack("one", 1000 * MIB, 1000 * MIB);
        first.published_ports = vec![PortKey::tcp(80)];
        first.images = vec![image("redis:7", 0)];
        let mut load = TargetLoad::default();
        load.place(&first, &t);
        let mut second = stack("two", 1000 * MIB, 1000 * MIB);
        second.images = vec![image("redis:7", 0)];
        // Exactly fills both: 1.2 × 2000 MiB = 2400 MiB, 1.1 × 2000 MiB = 2200 MiB.
        let cap = target_capacity(&second, &t, &load);
        assert_eq!(cap.status, Pass, "{}", cap.detail);
        assert_eq!(
            cap.detail,
            "needs 1.2 GiB free memory (1.2 × 1000.0 MiB used by the stack on the source), target b has 2.3 GiB free, of which 1.2 GiB is reserved by 1 stack placed there earlier in this plan (1.2 × 1000.0 MiB)"
        );
        // The image came with the first stack: not missing any more.
        assert_eq!(images(&second, &t, &load).status, Pass);
        assert_eq!(target_disk(&second, &t, &load).status, Pass);
        second.memory_used = Some(1000 * MIB + 1);
        let cap = target_capacity(&second, &t, &load);
        assert_eq!(cap.status, Fail);
        assert!(cap.detail.ends_with("; short by 2 B"), "{}", cap.detail);
        second.published_ports = vec![PortKey::tcp(80)];
        assert_eq!(
            port_conflicts(&second, &t, &load).detail,
            "80/tcp is taken by stack one placed there earlier in this plan; free them on the target or change the stack's published ports"
        );
        second.name = "one".into();
        second.volumes[0].name = "one_data".into();
        assert_eq!(
            target_free(&host("a"), &second, &t, &load).detail,
            "a stack named one is placed on b earlier in this plan, b already has a volume named one_data: importing would overwrite what is there; remove it from the target first or choose another target"
        );
    }

    #[test]
    fn human_units() {
        for (b, s) in [
            (0u128, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (u128::from(MIB) - 1, "1.0 MiB"),
            (u128::from(GIB) * 12 / 10, "1.2 GiB"),
            (u128::from(GIB) * 1024 * 1024 * 3, "3.0 PiB"),
            (u128::from(u64::MAX), "16.0 EiB"),
        ] {
            assert_eq!(human_bytes(b), s, "{b}");
        }
    }

    fn arb_input() -> impl Strategy<
        Value = (
            HostSnapshot,
            HostSnapshot,
            Vec<ActiveMigration>,
            Option<u8>,
            String,
        ),
    > {
        let names = || vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        (
            arb_host("src".into(), names()),
            arb_host("dst".into(), names()),
            prop::collection::vec((0u8..4, prop::sample::select(names())), 0..3),
            proptest::option::of(0u8..4),
            prop::sample::select(names()),
        )
            .prop_map(|(s, t, active, own, stack)| {
                let active = active
                    .into_iter()
                    .map(|(id, stack)| ActiveMigration {
                        id: mid(u128::from(id)),
                        stack,
                    })
                    .collect();
                (s, t, active, own, stack)
            })
    }

    proptest! {
        #[test]
        fn report_has_every_check_once_in_order(
            (source, target, active, own, stack) in arb_input()
        ) {
            let report = run(&PreflightInput {
                migration: own.map(|n| mid(u128::from(n))),
                stack: &stack,
                source: &source,
                target: &target,
                active_migrations: &active,
            });
            let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
            prop_assert_eq!(&names[..], &CHECK_NAMES[..]);
            let any_fail = report.checks.iter().any(|c| c.status == Fail);
            prop_assert_eq!(report.passed(), !any_fail);
            prop_assert_eq!(report.failures().count() == 0, report.passed());
            for c in &report.checks {
                prop_assert!(!c.detail.is_empty(), "{} has no detail", c.name);
            }
            // An offline host never lets a check that needs it pass.
            if !target.online || !source.online {
                prop_assert!(!report.passed());
                for c in &report.checks {
                    if c.name != NO_CONCURRENT
                        && !(c.name == BIND_MOUNTS && source.online)
                        && !(c.name == SOURCE_ONLINE && source.online)
                        && !(c.name == TARGET_ONLINE && target.online)
                        && !(c.name == SOURCE_METRICS && source.online)
                    {
                        prop_assert_eq!(c.status, Fail, "{}: {}", c.name, c.detail);
                    }
                }
            }
        }

        #[test]
        fn capacity_matches_the_exact_rule(used in 0u64..=u64::MAX, free in 0u64..=u64::MAX) {
            let mut t = host("b");
            t.memory_total = free;
            let r = target_capacity(&stack("s", used, 0), &t, &TargetLoad::default());
            let exact = u128::from(used) * 12 <= u128::from(free) * 10;
            prop_assert_eq!(r.status == Pass, exact);
        }
    }
}
