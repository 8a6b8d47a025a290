//! The report: one result per check, and the words its details are written in.

use serde::{Deserialize, Serialize};

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
pub(super) fn result(name: &str, status: CheckStatus, detail: String) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        status,
        detail,
    }
}

pub(super) fn pass(name: &str, detail: String) -> CheckResult {
    result(name, CheckStatus::Pass, detail)
}

pub(super) fn warn(name: &str, detail: String) -> CheckResult {
    result(name, CheckStatus::Warn, detail)
}

pub(super) fn fail(name: &str, detail: String) -> CheckResult {
    result(name, CheckStatus::Fail, detail)
}

pub(super) fn not_evaluated(name: &str, reasons: &[&Option<String>]) -> CheckResult {
    let mut seen: Vec<&str> = Vec::new();
    for r in reasons.iter().filter_map(|r| r.as_deref()) {
        if !seen.contains(&r) {
            seen.push(r);
        }
    }
    fail(name, format!("could not be evaluated: {}", seen.join("; ")))
}
pub(super) fn plural(n: usize, what: &str) -> String {
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
