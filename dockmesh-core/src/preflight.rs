//! Pre-flight: checks over host and stack snapshots before a migration stops anything.
//!
//! A report has one entry per check: its name, pass | warn | fail, and a detail a person
//! understands. Any fail blocks the migration.

use crate::snapshot::HostSnapshot;
use crate::types::MigrationId;
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
