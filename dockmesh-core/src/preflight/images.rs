//! Images the stack uses that the target lacks.

use super::capacity::TargetLoad;
use super::report::{human_bytes, pass, plural, warn};
use super::{CheckResult, IMAGES};
use crate::snapshot::{HostSnapshot, ImageUsage, StackSnapshot};
use std::collections::BTreeSet;

pub(super) fn images(
    stack: &StackSnapshot,
    target: &HostSnapshot,
    load: &TargetLoad,
) -> CheckResult {
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
/// The images of `stack` that neither `target` nor earlier placements on it provide, one per
/// normalized reference, in the stack's order.
pub(super) fn missing_images<'s>(
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
pub(super) fn normalize_image(reference: &str) -> String {
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
