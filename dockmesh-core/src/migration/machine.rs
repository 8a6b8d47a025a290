//! The migration state machine: it holds the state rebuilt from the event log, says which
//! command comes next, and accepts the events that record outcomes. It performs nothing.

use super::event::{MigrationEvent, MigrationSpec, Step};
use crate::snapshot::VolumeUsage;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where a migration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Asked for; pre-flight next.
    Requested,
    /// Pre-flight passed; the source is stopped next.
    PreflightPassed,
    /// The source is stopped; volumes are transferred next, one by one.
    SourceStopped,
    /// Every volume is verified on the target; the files are shipped next.
    VolumesVerified,
    /// The files are on the target; the stack is started there next.
    FilesShipped,
    /// The stack was started on the target; its health is checked next.
    TargetStarted,
    /// The target is healthy; the commit is recorded next.
    TargetHealthy,
    /// The stack runs on the target; the source is retained for the window.
    Committed,
    /// A step failed: the target is being cleaned and the source restarted.
    Compensating,
    /// Ended: the failure was compensated; the stack runs on the source as before.
    Failed,
    /// An operator's rollback is in progress.
    RollingBack,
    /// Ended: rolled back; the stack runs on the source again.
    RolledBack,
    /// An operator's purge of the retained source is in progress.
    Purging,
    /// Ended: committed, and the source was purged.
    Purged,
}

impl Phase {
    /// True when nothing more happens without an operator (committed) or ever (the others).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            Phase::Committed | Phase::Failed | Phase::RolledBack | Phase::Purged
        )
    }
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Take snapshots of both hosts and run the pre-flight checks.
    RunPreflight,
    /// Stop the stack on the source.
    StopSource,
    /// Record that the transfer of this volume begins (nothing else happens).
    BeginVolume(VolumeUsage),
    /// Export this volume from the source, import it on the target, compare the manifests.
    TransferVolume(VolumeUsage),
    /// Write `compose.yaml` and `.env` on the target.
    ShipFiles,
    /// Deploy the stack on the target.
    StartTarget,
    /// Wait for the stack to be healthy on the target.
    CheckTargetHealth,
    /// Record the commit.
    Commit,
    /// Compensation: remove the stack, these volumes and the files from the target.
    CleanTarget {
        /// Volumes the migration may have created on the target.
        volumes: Vec<String>,
    },
    /// Start the stack on the source again.
    RestartSource,
    /// Record the end of a compensated failure.
    FinishFailed,
    /// Rollback: stop the stack on the target (it is kept).
    StopTarget,
    /// Record the end of a rollback.
    FinishRollback,
    /// Remove the stack, these volumes and the files from the source.
    PurgeSource {
        /// The stack's volumes on the source.
        volumes: Vec<String>,
    },
}

/// An event that is not legal where the migration stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("migration {migration}: event {event} is not allowed in phase {phase:?}")]
#[non_exhaustive]
pub struct TransitionError {
    /// The migration.
    pub migration: String,
    /// The event's kind.
    pub event: &'static str,
    /// The phase it arrived in.
    pub phase: Phase,
}

/// Why an operator's request was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Rollback needs a committed migration.
    #[error(
        "cannot roll back: the migration is {0:?}, and only a committed migration can be rolled back"
    )]
    NotCommitted(Phase),
    /// The retention window is over.
    #[error(
        "cannot roll back: the rollback window closed at {retain_until}; the source may no longer be relied on"
    )]
    WindowClosed {
        /// When the window closed.
        retain_until: Timestamp,
    },
    /// The source was purged.
    #[error("cannot roll back: the source was purged; nothing is left to roll back to")]
    Purged,
    /// Purge needs a committed migration.
    #[error(
        "cannot purge the source: the migration is {0:?}; only a committed migration's source can be purged"
    )]
    PurgeNotCommitted(Phase),
}

/// A migration rebuilt from its event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    spec: MigrationSpec,
    phase: Phase,
    events: u64,
    volumes: Vec<VolumeUsage>,
    started: BTreeSet<String>,
    verified: BTreeSet<String>,
    failure: Option<(Step, String)>,
    source_stopped: bool,
    target_cleaned: bool,
    source_restarted: bool,
    target_stopped: bool,
    retain_until: Option<Timestamp>,
}

impl Migration {
    /// A new migration, as asked for.
    pub fn new(spec: MigrationSpec) -> Self {
        Migration {
            spec,
            phase: Phase::Requested,
            events: 0,
            volumes: Vec::new(),
            started: BTreeSet::new(),
            verified: BTreeSet::new(),
            failure: None,
            source_stopped: false,
            target_cleaned: false,
            source_restarted: false,
            target_stopped: false,
            retain_until: None,
        }
    }

    /// Rebuild a migration from its log. An illegal sequence is an error naming the event.
    pub fn replay<'a>(
        spec: MigrationSpec,
        events: impl IntoIterator<Item = &'a MigrationEvent>,
    ) -> Result<Self, TransitionError> {
        let mut m = Migration::new(spec);
        for e in events {
            m.apply(e)?;
        }
        Ok(m)
    }

    /// What was asked.
    pub fn spec(&self) -> &MigrationSpec {
        &self.spec
    }
    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// Number of events applied (the sequence number of the next one).
    pub fn event_count(&self) -> u64 {
        self.events
    }
    /// The volumes to move (known once pre-flight passed).
    pub fn volumes(&self) -> &[VolumeUsage] {
        &self.volumes
    }
    /// Volumes verified on the target.
    pub fn verified_volumes(&self) -> &BTreeSet<String> {
        &self.verified
    }
    /// The failed step and why, once a step failed.
    pub fn failure(&self) -> Option<&(Step, String)> {
        self.failure.as_ref()
    }
    /// End of the rollback window, once committed.
    pub fn retain_until(&self) -> Option<Timestamp> {
        self.retain_until
    }

    /// The next command, or `None` when the migration waits for an operator or has ended.
    pub fn next_command(&self) -> Option<Command> {
        match self.phase {
            Phase::Requested => Some(Command::RunPreflight),
            Phase::PreflightPassed => Some(Command::StopSource),
            Phase::SourceStopped => {
                let v = self
                    .volumes
                    .iter()
                    .find(|v| !self.verified.contains(&v.name))
                    .expect("SourceStopped always has an unverified volume");
                if self.started.contains(&v.name) {
                    Some(Command::TransferVolume(v.clone()))
                } else {
                    Some(Command::BeginVolume(v.clone()))
                }
            }
            Phase::VolumesVerified => Some(Command::ShipFiles),
            Phase::FilesShipped => Some(Command::StartTarget),
            Phase::TargetStarted => Some(Command::CheckTargetHealth),
            Phase::TargetHealthy => Some(Command::Commit),
            Phase::Compensating => {
                let (step, _) = self.failure.as_ref().expect("compensating has a failure");
                let touched_target = *step >= Step::TransferVolumes;
                if touched_target && !self.target_cleaned {
                    Some(Command::CleanTarget {
                        volumes: self.started.iter().cloned().collect(),
                    })
                } else if self.source_stopped_or_attempted(*step) && !self.source_restarted {
                    Some(Command::RestartSource)
                } else {
                    Some(Command::FinishFailed)
                }
            }
            Phase::RollingBack => {
                if !self.target_stopped {
                    Some(Command::StopTarget)
                } else if !self.source_restarted {
                    Some(Command::RestartSource)
                } else {
                    Some(Command::FinishRollback)
                }
            }
            Phase::Purging => Some(Command::PurgeSource {
                volumes: self.volumes.iter().map(|v| v.name.clone()).collect(),
            }),
            Phase::Committed | Phase::Failed | Phase::RolledBack | Phase::Purged => None,
        }
    }

    fn source_stopped_or_attempted(&self, step: Step) -> bool {
        self.source_stopped || step >= Step::StopSource
    }

    /// Check an operator's rollback request at `now`; the event to record when allowed.
    pub fn request_rollback(
        &self,
        now: Timestamp,
        by: &str,
    ) -> Result<MigrationEvent, RequestError> {
        match self.phase {
            Phase::Committed => {}
            Phase::Purging | Phase::Purged => return Err(RequestError::Purged),
            other => return Err(RequestError::NotCommitted(other)),
        }
        let until = self.retain_until.expect("committed has a window");
        if now >= until {
            return Err(RequestError::WindowClosed {
                retain_until: until,
            });
        }
        Ok(MigrationEvent::RollbackRequested {
            at: now,
            by: by.to_owned(),
        })
    }

    /// Check an operator's purge request; the event to record when allowed.
    pub fn request_purge(&self, now: Timestamp, by: &str) -> Result<MigrationEvent, RequestError> {
        if self.phase != Phase::Committed {
            return Err(RequestError::PurgeNotCommitted(self.phase));
        }
        Ok(MigrationEvent::PurgeRequested {
            at: now,
            by: by.to_owned(),
        })
    }

    /// Apply one recorded event.
    pub fn apply(&mut self, event: &MigrationEvent) -> Result<(), TransitionError> {
        use MigrationEvent as E;
        use Phase as P;
        let bad = |m: &Migration| TransitionError {
            migration: m.spec.id.to_string(),
            event: event.kind(),
            phase: m.phase,
        };
        match (self.phase, event) {
            (P::Requested, E::PreflightPassed { volumes, .. }) => {
                self.volumes = volumes.clone();
                self.phase = P::PreflightPassed;
            }
            (P::PreflightPassed, E::SourceStopped { .. }) => {
                self.source_stopped = true;
                self.phase = if self.volumes.is_empty() {
                    P::VolumesVerified
                } else {
                    P::SourceStopped
                };
            }
            (P::SourceStopped, E::VolumeTransferStarted { volume, .. })
                if self.volumes.iter().any(|v| v.name == *volume) =>
            {
                self.started.insert(volume.clone());
            }
            (P::SourceStopped, E::VolumeVerified { volume, .. })
                if self.started.contains(volume) =>
            {
                self.verified.insert(volume.clone());
                if self.volumes.iter().all(|v| self.verified.contains(&v.name)) {
                    self.phase = P::VolumesVerified;
                }
            }
            (P::VolumesVerified, E::FilesShipped { .. }) => self.phase = P::FilesShipped,
            (P::FilesShipped, E::TargetStarted { .. }) => self.phase = P::TargetStarted,
            (P::TargetStarted, E::TargetHealthy { .. }) => self.phase = P::TargetHealthy,
            (P::TargetHealthy, E::Committed { retain_until, .. }) => {
                self.retain_until = Some(*retain_until);
                self.phase = P::Committed;
            }
            (
                P::Requested
                | P::PreflightPassed
                | P::SourceStopped
                | P::VolumesVerified
                | P::FilesShipped
                | P::TargetStarted
                | P::TargetHealthy,
                E::StepFailed { step, reason, .. },
            ) => {
                self.failure = Some((*step, reason.clone()));
                self.phase = P::Compensating;
            }
            (P::Compensating, E::TargetCleaned { .. }) => self.target_cleaned = true,
            (P::Compensating, E::SourceRestarted { .. }) => self.source_restarted = true,
            (P::Compensating, E::Failed { .. }) => self.phase = P::Failed,
            (P::Committed, E::RollbackRequested { .. }) => {
                self.source_restarted = false;
                self.phase = P::RollingBack;
            }
            (P::RollingBack, E::TargetStopped { .. }) => self.target_stopped = true,
            (P::RollingBack, E::SourceRestarted { .. }) => self.source_restarted = true,
            (P::RollingBack, E::RolledBack { .. }) => self.phase = P::RolledBack,
            (P::Committed, E::PurgeRequested { .. }) => self.phase = P::Purging,
            (P::Purging, E::SourcePurged { .. }) => self.phase = P::Purged,
            _ => return Err(bad(self)),
        }
        self.events += 1;
        Ok(())
    }
}
