//! `upgrade-run.json`: a run's plan and each hop's progress, as persisted.

use crate::version::{Hop, Version};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How far a hop got. Each stage is recorded once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started.
    Pending,
    /// The bundle taken before it verifies.
    BackedUp,
    /// The new binary is in place; the previous one kept.
    Swapped,
    /// `db migrate` ran.
    Migrated,
    /// The schema is up to date and the binary says its version.
    Checked,
    /// Finished.
    Done,
    /// Failed and undone (as far as the record's `undone` says); a new run retries it.
    Failed,
}

impl Stage {
    /// The stage as recorded.
    pub fn word(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::BackedUp => "backed_up",
            Stage::Swapped => "swapped",
            Stage::Migrated => "migrated",
            Stage::Checked => "checked",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
}

/// One hop of a run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRecord {
    /// The version upgraded from.
    pub from: String,
    /// The version upgraded to.
    pub to: String,
    /// How far it got.
    pub stage: Stage,
    /// The bundle taken before it.
    #[serde(default)]
    pub backup: Option<PathBuf>,
    /// Where the binary it replaced is kept.
    #[serde(default)]
    pub previous: Option<PathBuf>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What was undone after it failed.
    #[serde(default)]
    pub undone: Vec<String>,
}

/// Where a run stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Started, not finished.
    Running,
    /// Every hop is done.
    Done,
    /// A hop failed (and was undone).
    Failed,
}

/// `upgrade-run.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The version upgraded to.
    pub target: String,
    /// The rules the plan follows.
    pub rules: String,
    /// The installed binary upgraded.
    pub binary: PathBuf,
    /// Where the run stands.
    pub result: RunResult,
    /// The plan, with each hop's progress.
    pub hops: Vec<HopRecord>,
}

impl RunRecord {
    /// A new run to `to` along `hops`, upgrading `binary`.
    pub fn new(to: &Version, rules: &str, binary: &Path, hops: &[Hop]) -> RunRecord {
        RunRecord {
            target: to.to_string(),
            rules: rules.to_owned(),
            binary: binary.to_owned(),
            result: RunResult::Running,
            hops: hops
                .iter()
                .map(|h| HopRecord {
                    from: h.from.to_string(),
                    to: h.to.to_string(),
                    stage: Stage::Pending,
                    backup: None,
                    previous: None,
                    error: None,
                    undone: Vec::new(),
                })
                .collect(),
        }
    }

    /// Every hop is done.
    pub fn finished(&self) -> bool {
        self.result == RunResult::Done
    }

    /// `the run to TARGET (FROM → TO STAGE, …)`.
    pub fn where_it_stands(&self) -> String {
        let hops: Vec<String> = self
            .hops
            .iter()
            .map(|h| format!("{} → {} {}", h.from, h.to, h.stage.word()))
            .collect();
        format!("the run to {} ({})", self.target, hops.join(", "))
    }
}

/// `<binary>.previous-<from>`: where a hop keeps the binary it replaces.
pub fn previous_path(binary: &Path, from: &str) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(format!(".previous-{from}"));
    PathBuf::from(name)
}

/// `<backups>/pre-upgrade-<to>.tar.zst`: the bundle a hop takes first.
pub fn bundle_path(backups: &Path, to: &str) -> PathBuf {
    backups.join(format!("pre-upgrade-{to}.tar.zst"))
}
