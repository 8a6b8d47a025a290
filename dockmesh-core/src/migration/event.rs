//! The migration event log: the facts a migration is rebuilt from.

use crate::ports::RuntimeErrorKind;
use crate::preflight::PreflightReport;
use crate::snapshot::VolumeUsage;
use crate::types::{HostId, MigrationId};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The default time the source is kept after a commit: 72 hours.
pub const DEFAULT_RETENTION: SignedDuration = SignedDuration::from_hours(72);

/// What a migration was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSpec {
    /// The migration's id.
    pub id: MigrationId,
    /// The stack to move.
    pub stack: String,
    /// Where it runs now.
    pub source: HostId,
    /// Where it should run.
    pub target: HostId,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// Who asked.
    pub requested_by: String,
    /// How long the source is kept after the commit.
    pub retention: SignedDuration,
}

/// A forward step of a migration; named in failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Pre-flight checks.
    Preflight,
    /// Stopping the stack on the source.
    StopSource,
    /// Streaming and verifying the named volumes.
    TransferVolumes,
    /// Shipping `compose.yaml` and `.env` to the target.
    ShipFiles,
    /// Starting the stack on the target.
    StartTarget,
    /// Waiting for the target to be healthy.
    TargetHealth,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Preflight => "preflight",
            Step::StopSource => "stop_source",
            Step::TransferVolumes => "transfer_volumes",
            Step::ShipFiles => "ship_files",
            Step::StartTarget => "start_target",
            Step::TargetHealth => "target_health",
        })
    }
}

/// One fact of a migration's life. The log of these is the migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MigrationEvent {
    /// Pre-flight passed (the report is kept).
    PreflightPassed {
        /// When.
        at: Timestamp,
        /// The report.
        report: PreflightReport,
        /// The stack's named volumes on the source, to be moved.
        #[serde(default)]
        volumes: Vec<VolumeUsage>,
    },
    /// The stack was stopped on the source (containers kept).
    SourceStopped {
        /// When.
        at: Timestamp,
    },
    /// The transfer of a volume is about to start: from here on the target may hold this volume.
    VolumeTransferStarted {
        /// When.
        at: Timestamp,
        /// The volume.
        volume: String,
    },
    /// The transfer of a volume was cut off because a host stopped answering (a dropped
    /// connection, an agent restarting). The transfer of that volume starts again once both
    /// hosts answer, until [`crate::migration::TRANSFER_RESUME_DEADLINE`] after the first
    /// interruption; then the step fails and is compensated. Volumes already verified are
    /// not sent again.
    VolumeTransferInterrupted {
        /// When.
        at: Timestamp,
        /// The volume.
        volume: String,
        /// What the host said.
        reason: String,
    },
    /// A volume was copied and the target's manifest equals the source's.
    VolumeVerified {
        /// When.
        at: Timestamp,
        /// The volume.
        volume: String,
        /// Content bytes copied.
        bytes: u64,
        /// The manifest digest, equal on both sides.
        digest: String,
        /// Symbolic links carried verbatim whose target is absolute or outside the volume
        /// (`path -> target`): they were moved as links, not followed, and may point at
        /// something the target host does not have.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        outside_links: Vec<String>,
    },
    /// `compose.yaml` and `.env` are on the target.
    FilesShipped {
        /// When.
        at: Timestamp,
    },
    /// The stack was started on the target.
    TargetStarted {
        /// When.
        at: Timestamp,
    },
    /// Every service of the stack is healthy on the target.
    TargetHealthy {
        /// When.
        at: Timestamp,
    },
    /// The stack runs on the target; the source is kept until `retain_until`.
    Committed {
        /// When.
        at: Timestamp,
        /// End of the rollback window.
        retain_until: Timestamp,
    },
    /// A forward step failed: compensation follows.
    StepFailed {
        /// When.
        at: Timestamp,
        /// Which step.
        step: Step,
        /// Why, in words.
        reason: String,
        /// What kind of error the host reported, when the failure came from a host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<RuntimeErrorKind>,
    },
    /// Compensation: everything the migration created on the target was removed.
    TargetCleaned {
        /// When.
        at: Timestamp,
    },
    /// The stack runs on the source again (after a failure or a rollback).
    SourceRestarted {
        /// When.
        at: Timestamp,
        /// True when its containers were gone and the stack was deployed again from the
        /// retained files and volumes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        redeployed: bool,
    },
    /// The failure was compensated: the stack runs on the source as before. Terminal.
    Failed {
        /// When.
        at: Timestamp,
    },
    /// An operator asked to roll a committed migration back.
    RollbackRequested {
        /// When.
        at: Timestamp,
        /// Who.
        by: String,
    },
    /// Rollback: the stack was stopped on the target (kept, not removed).
    TargetStopped {
        /// When.
        at: Timestamp,
    },
    /// The rollback finished: the stack runs on the source again.
    RolledBack {
        /// When.
        at: Timestamp,
    },
    /// An operator asked to purge the retained source.
    PurgeRequested {
        /// When.
        at: Timestamp,
        /// Who.
        by: String,
    },
    /// The source's containers, volumes and files were removed.
    SourcePurged {
        /// When.
        at: Timestamp,
    },
}

impl MigrationEvent {
    /// When the event happened.
    pub fn at(&self) -> Timestamp {
        use MigrationEvent::*;
        match self {
            PreflightPassed { at, .. }
            | SourceStopped { at }
            | VolumeTransferStarted { at, .. }
            | VolumeTransferInterrupted { at, .. }
            | VolumeVerified { at, .. }
            | FilesShipped { at }
            | TargetStarted { at }
            | TargetHealthy { at }
            | Committed { at, .. }
            | StepFailed { at, .. }
            | TargetCleaned { at }
            | SourceRestarted { at, .. }
            | Failed { at }
            | RollbackRequested { at, .. }
            | TargetStopped { at }
            | RolledBack { at }
            | PurgeRequested { at, .. }
            | SourcePurged { at } => *at,
        }
    }

    /// How the event changes whether the migration counts as active: `Some(false)` once it
    /// settles (committed, failed, rolled back, purged), `Some(true)` when an operator's
    /// rollback or purge sets it moving again, `None` for the others. A store keeps at most one
    /// active migration per stack with this, so a rollback cannot run beside a new migration.
    pub fn activity(&self) -> Option<bool> {
        use MigrationEvent::*;
        match self {
            Committed { .. } | Failed { .. } | RolledBack { .. } | SourcePurged { .. } => {
                Some(false)
            }
            RollbackRequested { .. } | PurgeRequested { .. } => Some(true),
            _ => None,
        }
    }

    /// The event's type name as stored (`source_stopped`, …).
    pub fn kind(&self) -> &'static str {
        use MigrationEvent::*;
        match self {
            PreflightPassed { .. } => "preflight_passed",
            SourceStopped { .. } => "source_stopped",
            VolumeTransferStarted { .. } => "volume_transfer_started",
            VolumeTransferInterrupted { .. } => "volume_transfer_interrupted",
            VolumeVerified { .. } => "volume_verified",
            FilesShipped { .. } => "files_shipped",
            TargetStarted { .. } => "target_started",
            TargetHealthy { .. } => "target_healthy",
            Committed { .. } => "committed",
            StepFailed { .. } => "step_failed",
            TargetCleaned { .. } => "target_cleaned",
            SourceRestarted { .. } => "source_restarted",
            Failed { .. } => "failed",
            RollbackRequested { .. } => "rollback_requested",
            TargetStopped { .. } => "target_stopped",
            RolledBack { .. } => "rolled_back",
            PurgeRequested { .. } => "purge_requested",
            SourcePurged { .. } => "source_purged",
        }
    }
}

/// A migration as stored: what was asked and everything that happened since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMigration {
    /// What was asked.
    pub spec: MigrationSpec,
    /// The event log, oldest first.
    pub events: Vec<MigrationEvent>,
}
