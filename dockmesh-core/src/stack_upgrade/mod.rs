//! A stack's release upgrade as a persisted machine, sans-IO: the driver (the server's
//! `stack_upgrade`) stops, copies, deploys and restores through the host port; this module
//! decides what comes next and what is recorded.
//!
//! A run ([`StackUpgradeRun`]) is stored before anything on the host changes, and again at each
//! stage, so a server killed mid-upgrade resumes it on its next start from the stored stage:
//!
//! ```text
//! started ──backup──▶ backed_up ──deploy──▶ deployed ─────────────▶ settle: deployed
//!    └────────────(no backup)──────┘   └──fails──▶ restoring ──put back──▶ restored ─▶ settle:
//!                                                                   rolled back | failed
//! ```
//!
//! Every step the driver takes is safe to take again after a crash: a backup copy is made
//! afresh (an earlier copy of the same name is removed first), a deploy converges, a restore
//! fills each volume again from its copy. A backup that fails is undone by the driver (copies
//! removed, the stack started again) and the run is dropped: nothing was changed, nothing is
//! recorded as a release. A run ends with [`StackUpgradeRun::settled`]: the release, the stack's
//! record, its deploy history entry and the audit event, stored in one transaction.
//!
//! ```
//! use dockmesh_core::release::ReleaseOutcome;
//! use dockmesh_core::stack_upgrade::{StackUpgradeRun, UpgradeStep};
//! # use dockmesh_core::{HostId, StackFiles};
//! # let files = |c: &str| StackFiles { name: "shop".into(), compose: c.into(), env: None };
//! # let at = jiff::Timestamp::UNIX_EPOCH;
//! let run = StackUpgradeRun::start("shop", 3, HostId::from("edge-1"), files("v1"), files("v2"),
//!     Default::default(), Vec::new(), "ops", "upgrade", None, at);
//! assert_eq!(run.next(), UpgradeStep::Deploy); // no backup asked for
//! let run = run.deploy_ended(Err("web: unhealthy".into())).unwrap();
//! assert_eq!(run.next(), UpgradeStep::PutBack { why: "web: unhealthy".into() });
//! let run = run.put_back_ended(vec![], vec![]).unwrap();
//! let UpgradeStep::Settle { outcome, .. } = run.next() else { panic!() };
//! assert_eq!(outcome, ReleaseOutcome::RolledBack);
//! ```

#[cfg(test)]
mod tests;

use crate::audit::{self, AuditEvent};
use crate::records::{DeployRecord, StackRecord};
use crate::release::{ReleaseOutcome, ReleaseRecord};
use crate::snapshot::VolumeUsage;
use crate::types::{HostId, StackFiles};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One upgrade (or rollback to an earlier release) of a stack, as stored while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackUpgradeRun {
    /// The stack.
    pub stack: String,
    /// The revision this release is recorded as.
    pub rev: u64,
    /// The stack's host.
    pub host: HostId,
    /// The release that ran before: put back when the new one fails.
    pub previous: StackFiles,
    /// The release being deployed.
    pub next: StackFiles,
    /// Each service's image id of the new release on the host (service → id).
    pub images: BTreeMap<String, String>,
    /// The named volumes copied before the deploy; empty when no backup was asked for.
    pub backup: Vec<VolumeUsage>,
    /// Who asked.
    pub actor: String,
    /// `upgrade` or `rollback`.
    pub action: String,
    /// The revision a rollback goes back to.
    pub from_rev: Option<u64>,
    /// When it started.
    pub started_at: Timestamp,
    /// Where it stands.
    pub stage: UpgradeStage,
}

/// A verified copy of one volume, taken before the deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCopy {
    /// The volume copied.
    pub volume: VolumeUsage,
    /// The copy's volume name.
    pub copy: String,
    /// The digest of the copy's manifest: a restore must read back the same.
    pub digest: String,
}

/// Where a run stands. Each stage is stored before the step it allows is taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum UpgradeStage {
    /// Stored; the host may have been stopped for a backup, nothing else changed.
    Started,
    /// The stack is stopped and every volume has a verified copy.
    BackedUp {
        /// The copies.
        backups: Vec<BackupCopy>,
    },
    /// The new release runs and is healthy.
    Deployed {
        /// The copies taken before (kept).
        backups: Vec<BackupCopy>,
    },
    /// The new release failed: the previous one is being put back.
    Restoring {
        /// The copies to restore from.
        backups: Vec<BackupCopy>,
        /// Why the new release failed.
        why: String,
    },
    /// Putting the previous release back ended.
    Restored {
        /// The copies restored from.
        backups: Vec<BackupCopy>,
        /// Why the new release failed.
        why: String,
        /// The volumes filled again from their copies.
        restored: Vec<String>,
        /// What failed while putting it back (empty: it is back and healthy).
        problems: Vec<String>,
    },
}

impl UpgradeStage {
    /// The stage's name, as stored and logged.
    pub fn word(&self) -> &'static str {
        match self {
            UpgradeStage::Started => "started",
            UpgradeStage::BackedUp { .. } => "backed_up",
            UpgradeStage::Deployed { .. } => "deployed",
            UpgradeStage::Restoring { .. } => "restoring",
            UpgradeStage::Restored { .. } => "restored",
        }
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpgradeStep {
    /// Stop the stack and copy each volume of [`StackUpgradeRun::backup`] (an earlier copy of
    /// the same name is removed first); then [`StackUpgradeRun::backed_up`].
    BackUp,
    /// Write and deploy the new release and wait for health; then
    /// [`StackUpgradeRun::deploy_ended`].
    Deploy,
    /// Fill each volume again from its copy, deploy the previous release and wait for health;
    /// then [`StackUpgradeRun::put_back_ended`].
    PutBack {
        /// Why the new release failed.
        why: String,
    },
    /// Record the outcome ([`StackUpgradeRun::settled`]): the run is over.
    Settle {
        /// How the release ended.
        outcome: ReleaseOutcome,
        /// Why it failed, and what putting the previous one back did.
        detail: Option<String>,
    },
}

/// A transition asked of a stage that does not allow it (a driver bug or a damaged record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stack {stack}: cannot {what} at stage {stage}")]
pub struct StageError {
    /// The stack.
    pub stack: String,
    /// The transition asked for.
    pub what: &'static str,
    /// The stage the run was at.
    pub stage: &'static str,
}

/// Everything a settled run stores, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The release.
    pub release: ReleaseRecord,
    /// The stack's record: the new files when deployed, else as it was.
    pub stack: StackRecord,
    /// The deploy history entry.
    pub deploy: DeployRecord,
    /// The audit event.
    pub audit: AuditEvent,
}

impl StackUpgradeRun {
    /// A new run at [`UpgradeStage::Started`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        stack: &str,
        rev: u64,
        host: HostId,
        previous: StackFiles,
        next: StackFiles,
        images: BTreeMap<String, String>,
        backup: Vec<VolumeUsage>,
        actor: &str,
        action: &str,
        from_rev: Option<u64>,
        at: Timestamp,
    ) -> StackUpgradeRun {
        StackUpgradeRun {
            stack: stack.to_owned(),
            rev,
            host,
            previous,
            next,
            images,
            backup,
            actor: actor.to_owned(),
            action: action.to_owned(),
            from_rev,
            started_at: at,
            stage: UpgradeStage::Started,
        }
    }

    fn refuse(&self, what: &'static str) -> StageError {
        StageError {
            stack: self.stack.clone(),
            what,
            stage: self.stage.word(),
        }
    }

    /// What to do next, from the stored stage: the same answer after a restart.
    pub fn next(&self) -> UpgradeStep {
        match &self.stage {
            UpgradeStage::Started if !self.backup.is_empty() => UpgradeStep::BackUp,
            UpgradeStage::Started | UpgradeStage::BackedUp { .. } => UpgradeStep::Deploy,
            UpgradeStage::Deployed { .. } => UpgradeStep::Settle {
                outcome: ReleaseOutcome::Deployed,
                detail: None,
            },
            UpgradeStage::Restoring { why, .. } => UpgradeStep::PutBack { why: why.clone() },
            UpgradeStage::Restored { why, problems, .. } if problems.is_empty() => {
                UpgradeStep::Settle {
                    outcome: ReleaseOutcome::RolledBack,
                    detail: Some(format!(
                        "{why}; the previous release was put back and is healthy"
                    )),
                }
            }
            UpgradeStage::Restored { why, problems, .. } => UpgradeStep::Settle {
                outcome: ReleaseOutcome::Failed,
                detail: Some(format!(
                    "{why}; putting the previous release back failed too: {}",
                    problems.join("; ")
                )),
            },
        }
    }

    /// Every volume was copied and verified.
    pub fn backed_up(self, backups: Vec<BackupCopy>) -> Result<StackUpgradeRun, StageError> {
        match self.stage {
            UpgradeStage::Started if !self.backup.is_empty() => Ok(StackUpgradeRun {
                stage: UpgradeStage::BackedUp { backups },
                ..self
            }),
            _ => Err(self.refuse("record a backup")),
        }
    }

    /// The deploy of the new release ended: healthy, or failed with the reason.
    pub fn deploy_ended(self, result: Result<(), String>) -> Result<StackUpgradeRun, StageError> {
        let backups = match &self.stage {
            UpgradeStage::Started if self.backup.is_empty() => Vec::new(),
            UpgradeStage::BackedUp { backups } => backups.clone(),
            _ => return Err(self.refuse("end a deploy")),
        };
        let stage = match result {
            Ok(()) => UpgradeStage::Deployed { backups },
            Err(why) => UpgradeStage::Restoring { backups, why },
        };
        Ok(StackUpgradeRun { stage, ..self })
    }

    /// Putting the previous release back ended: the volumes restored and what failed.
    pub fn put_back_ended(
        self,
        restored: Vec<String>,
        problems: Vec<String>,
    ) -> Result<StackUpgradeRun, StageError> {
        match self.stage {
            UpgradeStage::Restoring { backups, why } => Ok(StackUpgradeRun {
                stage: UpgradeStage::Restored {
                    backups,
                    why,
                    restored,
                    problems,
                },
                ..self
            }),
            _ => Err(self.refuse("end a restore")),
        }
    }

    /// The copies taken (none before the backup).
    pub fn backups(&self) -> &[BackupCopy] {
        match &self.stage {
            UpgradeStage::Started => &[],
            UpgradeStage::BackedUp { backups }
            | UpgradeStage::Deployed { backups }
            | UpgradeStage::Restoring { backups, .. }
            | UpgradeStage::Restored { backups, .. } => backups,
        }
    }

    /// The volumes filled again from their copies (none unless restored).
    pub fn restored(&self) -> &[String] {
        match &self.stage {
            UpgradeStage::Restored { restored, .. } => restored,
            _ => &[],
        }
    }

    /// What a run that is over stores, at `at`, given the stack's current record; `None` while
    /// a step is still to be taken.
    pub fn settled(&self, current: &StackRecord, at: Timestamp) -> Option<Settled> {
        let UpgradeStep::Settle { outcome, detail } = self.next() else {
            return None;
        };
        let stack = match outcome {
            ReleaseOutcome::Deployed => StackRecord {
                compose: self.next.compose.clone(),
                env: self.next.env.clone(),
                updated_at: at,
                ..current.clone()
            },
            _ => current.clone(),
        };
        let action = match outcome {
            ReleaseOutcome::Deployed => self.action.clone(),
            _ => format!("{}-rolled-back", self.action),
        };
        Some(Settled {
            release: ReleaseRecord {
                stack: self.stack.clone(),
                rev: self.rev,
                at,
                host: self.host.clone(),
                compose: self.next.compose.clone(),
                env: self.next.env.clone(),
                images: self.images.clone(),
                outcome,
                detail,
                from_rev: self.from_rev,
                actor: self.actor.clone(),
            },
            stack,
            deploy: DeployRecord {
                stack: self.stack.clone(),
                at,
                host: self.host.clone(),
                action,
                actor: self.actor.clone(),
            },
            audit: AuditEvent::new(at, &self.actor, audit::STACK_DEPLOY, &self.stack)
                .with("action", self.action.clone())
                .with("host", self.host.to_string())
                .with("rev", self.rev.to_string())
                .with("outcome", outcome.to_string()),
        })
    }
}
