//! Putting services in the order they start: after their dependencies and the service whose
//! network they use.

use super::service::invalid;
use super::{ComposeError, NetworkMode, ServiceSpec};
use std::collections::BTreeSet;

/// What a service needs started before it: its dependencies, and the service whose network it
/// uses.
fn needs(s: &ServiceSpec) -> impl Iterator<Item = &String> {
    let network = match &s.options.network_mode {
        Some(NetworkMode::Service(n)) => Some(n),
        _ => None,
    };
    s.depends_on.keys().chain(network)
}

/// Order services so that every service comes after its dependencies (file order otherwise).
pub(super) fn dependency_order(
    services: Vec<ServiceSpec>,
) -> Result<Vec<ServiceSpec>, ComposeError> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for s in &services {
        if let Some(NetworkMode::Service(n)) = &s.options.network_mode
            && !names.contains(n.as_str())
        {
            return Err(invalid(
                &format!("service `{}`", s.name),
                format!("uses the network of `{n}`, which is not a service of this stack"),
            ));
        }
        for d in s.depends_on.keys() {
            if !names.contains(d.as_str()) {
                return Err(invalid(
                    &format!("service `{}`", s.name),
                    format!("depends on `{d}`, which is not a service of this stack"),
                ));
            }
            if d == &s.name {
                return Err(invalid(
                    &format!("service `{}`", s.name),
                    "depends on itself",
                ));
            }
        }
    }
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut remaining = services;
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let Some(i) = remaining
            .iter()
            .position(|s| needs(s).all(|d| placed.contains(d)))
        else {
            let cycle: Vec<&str> = remaining.iter().map(|s| s.name.as_str()).collect();
            return Err(invalid(
                "depends_on",
                format!(
                    "services {} depend on each other in a cycle",
                    cycle.join(", ")
                ),
            ));
        };
        let s = remaining.remove(i);
        placed.insert(s.name.clone());
        ordered.push(s);
    }
    Ok(ordered)
}
