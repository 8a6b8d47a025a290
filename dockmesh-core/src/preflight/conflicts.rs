//! What is already taken: the stack's migration, ports, container names, the stack's name
//! and volumes on the target.

use super::capacity::TargetLoad;
use super::report::{fail, pass};
use super::{
    CONTAINER_NAMES, CheckResult, NO_CONCURRENT, PORT_CONFLICTS, PreflightInput, TARGET_FREE,
};
use crate::snapshot::{HostSnapshot, PortKey, StackSnapshot};
use std::collections::BTreeSet;

pub(super) fn no_concurrent(input: &PreflightInput<'_>) -> CheckResult {
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
pub(super) fn port_conflicts(
    stack: &StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> CheckResult {
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

pub(super) fn container_names(stack: &StackSnapshot, target: &HostSnapshot) -> CheckResult {
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
pub(super) fn target_free(
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
