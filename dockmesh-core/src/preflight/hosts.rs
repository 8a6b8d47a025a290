//! What the two hosts must share: the CPU architecture, a Docker API the target knows, the
//! host paths of bind mounts.

use super::report::{fail, pass, warn};
use super::{ARCH_MATCH, BIND_MOUNTS, CheckResult, DOCKER_API};
use crate::snapshot::{HostSnapshot, StackSnapshot};
use std::cmp::Ordering;

pub(super) fn arch_match(source: &HostSnapshot, target: &HostSnapshot) -> CheckResult {
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

pub(super) fn docker_api(source: &HostSnapshot, target: &HostSnapshot) -> CheckResult {
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
pub(super) fn bind_mounts(stack: &StackSnapshot) -> CheckResult {
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
