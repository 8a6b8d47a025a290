//! Memory and disk: what the stack needs on the target, and what a plan has placed there already.

use super::images::{missing_images, normalize_image};
use super::report::{fail, human_bytes, pass, plural, warn};
use super::{CheckResult, SOURCE_METRICS, TARGET_CAPACITY, TARGET_DISK};
use crate::snapshot::{HostSnapshot, PortKey, StackSnapshot};
use std::collections::{BTreeMap, BTreeSet};

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
pub(super) fn source_metrics(stack: &StackSnapshot, source: &HostSnapshot) -> CheckResult {
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

pub(super) fn target_capacity(
    stack: &StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> CheckResult {
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

pub(super) fn target_disk(
    stack: &StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> CheckResult {
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
