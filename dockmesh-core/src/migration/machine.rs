//! The migration state machine: it holds the state rebuilt from the event log, says which
//! command comes next, and accepts the events that record outcomes. It performs nothing.

use super::event::{MigrationEvent, MigrationSpec, Step};
use crate::ports::{RuntimeError, RuntimeErrorKind};
use crate::snapshot::VolumeUsage;
use crate::types::MigrationId;
use jiff::{SignedDuration, Timestamp};
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
    /// Deploy the stack on the source again from its retained files and volumes (its
    /// containers are gone, so a plain start cannot bring it back).
    RedeploySource,
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
    /// A later migration of the same stack moved it on (or is moving it): rolling this one back
    /// would start the stack on a second host.
    #[error(
        "cannot roll back: migration {later} of the same stack came after this one and is {phase:?}"
    )]
    Superseded {
        /// The later migration.
        later: MigrationId,
        /// Where it stands.
        phase: Phase,
    },
}

impl RequestError {
    /// What the operator can do next.
    pub fn hint(&self) -> &'static str {
        match self {
            RequestError::NotCommitted(_) | RequestError::PurgeNotCommitted(_) => {
                "wait for the migration to settle; a failed migration already put the stack back"
            }
            RequestError::WindowClosed { .. } => {
                "migrate the stack back as a new migration instead"
            }
            RequestError::Purged => "migrate the stack back as a new migration instead",
            RequestError::Superseded { .. } => {
                "roll back the later migration first, or migrate the stack as a new migration"
            }
        }
    }
}

/// A failure recorded in the log: the step, why, and the kind of host error when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// Why, in words.
    pub reason: String,
    /// The kind of error the host reported, when it came from a host.
    pub kind: Option<RuntimeErrorKind>,
}

/// How long a volume transfer cut off by a host that stopped answering waits for both hosts to
/// answer again (counted from its first interruption) before the step fails and is
/// compensated.
pub const TRANSFER_RESUME_DEADLINE: SignedDuration = SignedDuration::from_mins(10);

/// A duration in words (`10 min`).
pub(crate) fn words(d: SignedDuration) -> String {
    let s = d.as_secs();
    if s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Where a migration stands, with the facts each state needs and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Asked for; pre-flight next.
    Requested,
    /// Pre-flight passed; the source is stopped next.
    PreflightPassed,
    /// The source is stopped; volumes move one by one.
    Transferring {
        /// Volumes whose transfer began (the target may hold them).
        started: BTreeSet<String>,
        /// Volumes verified on the target.
        verified: BTreeSet<String>,
        /// Since when the transfer of the current volume has been cut off by a host that
        /// does not answer (its first interruption), if it has.
        interrupted: Option<Timestamp>,
    },
    /// Every volume is verified on the target; the files are shipped next.
    VolumesVerified,
    /// The files are on the target; the stack is started there next.
    FilesShipped,
    /// The stack was started on the target; its health is checked next.
    TargetStarted,
    /// The target is healthy; the commit is recorded next.
    TargetHealthy,
    /// The stack runs on the target; the source is retained until `retain_until`.
    Committed {
        /// End of the rollback window.
        retain_until: Timestamp,
    },
    /// A forward step failed: undo on the target, bring the source back.
    Compensating {
        /// What failed.
        failure: Failure,
        /// Volumes still to remove from the target with the stack (`None` once cleaned, or
        /// when the target was never touched).
        clean_target: Option<Vec<String>>,
        /// Whether the source still has to be brought back.
        restart_source: bool,
    },
    /// Ended: the failure was compensated; the stack runs on the source as before.
    Failed {
        /// What failed.
        failure: Failure,
    },
    /// An operator's rollback is in progress.
    RollingBack {
        /// The window the rollback was asked within.
        retain_until: Timestamp,
        /// The target is stopped (kept).
        target_stopped: bool,
        /// The source runs again.
        source_restarted: bool,
    },
    /// Ended: rolled back; the stack runs on the source again.
    RolledBack,
    /// An operator's purge of the retained source is in progress.
    Purging,
    /// Ended: committed, and the source was purged.
    Purged,
}

impl State {
    /// The phase this state is in.
    pub fn phase(&self) -> Phase {
        match self {
            State::Requested => Phase::Requested,
            State::PreflightPassed => Phase::PreflightPassed,
            State::Transferring { .. } => Phase::SourceStopped,
            State::VolumesVerified => Phase::VolumesVerified,
            State::FilesShipped => Phase::FilesShipped,
            State::TargetStarted => Phase::TargetStarted,
            State::TargetHealthy => Phase::TargetHealthy,
            State::Committed { .. } => Phase::Committed,
            State::Compensating { .. } => Phase::Compensating,
            State::Failed { .. } => Phase::Failed,
            State::RollingBack { .. } => Phase::RollingBack,
            State::RolledBack => Phase::RolledBack,
            State::Purging => Phase::Purging,
            State::Purged => Phase::Purged,
        }
    }
}

/// What the driver does with the outcome of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record this event (after checking it applies) and go on.
    Record(MigrationEvent),
    /// Run this command instead, now.
    Run(Command),
    /// Stop here; the same command is retried when the migration is driven again. Nothing was
    /// lost: the log says where the migration stands.
    Retry,
}

/// A migration rebuilt from its event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    spec: MigrationSpec,
    events: u64,
    volumes: Vec<VolumeUsage>,
    state: State,
    /// Links carried verbatim that point outside their volume, from the transfer reports.
    outside_links: Vec<String>,
}

impl Migration {
    /// A new migration, as asked for.
    pub fn new(spec: MigrationSpec) -> Self {
        Migration {
            spec,
            events: 0,
            volumes: Vec::new(),
            state: State::Requested,
            outside_links: Vec::new(),
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
    /// Where it stands, with the facts of that state.
    pub fn state(&self) -> &State {
        &self.state
    }
    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.state.phase()
    }
    /// Number of events applied (the sequence number of the next one).
    pub fn event_count(&self) -> u64 {
        self.events
    }
    /// The volumes to move (known once pre-flight passed).
    pub fn volumes(&self) -> &[VolumeUsage] {
        &self.volumes
    }
    /// Volumes verified on the target so far.
    pub fn verified_volumes(&self) -> BTreeSet<String> {
        match &self.state {
            State::Requested | State::PreflightPassed => BTreeSet::new(),
            State::Transferring { verified, .. } => verified.clone(),
            // A failure during the transfer leaves none counted: compensation removes them.
            State::Compensating { failure, .. } | State::Failed { failure }
                if failure.step <= Step::TransferVolumes =>
            {
                BTreeSet::new()
            }
            _ => self.volumes.iter().map(|v| v.name.clone()).collect(),
        }
    }
    /// The failure, once a step failed.
    pub fn failure(&self) -> Option<&Failure> {
        match &self.state {
            State::Compensating { failure, .. } | State::Failed { failure } => Some(failure),
            _ => None,
        }
    }
    /// End of the rollback window, while the migration is committed or rolling back.
    pub fn retain_until(&self) -> Option<Timestamp> {
        match &self.state {
            State::Committed { retain_until } | State::RollingBack { retain_until, .. } => {
                Some(*retain_until)
            }
            _ => None,
        }
    }
    /// Links carried verbatim that point outside their volume (`volume: path -> target`).
    pub fn outside_links(&self) -> &[String] {
        &self.outside_links
    }

    /// The next command, or `None` when the migration waits for an operator or has ended.
    pub fn next_command(&self) -> Option<Command> {
        Some(match &self.state {
            State::Requested => Command::RunPreflight,
            State::PreflightPassed => Command::StopSource,
            State::Transferring {
                started, verified, ..
            } => {
                // Invariant of `apply`: while transferring, some volume is not verified yet.
                let v = self.volumes.iter().find(|v| !verified.contains(&v.name))?;
                if started.contains(&v.name) {
                    Command::TransferVolume(v.clone())
                } else {
                    Command::BeginVolume(v.clone())
                }
            }
            State::VolumesVerified => Command::ShipFiles,
            State::FilesShipped => Command::StartTarget,
            State::TargetStarted => Command::CheckTargetHealth,
            State::TargetHealthy => Command::Commit,
            State::Compensating {
                clean_target,
                restart_source,
                ..
            } => match clean_target {
                Some(volumes) => Command::CleanTarget {
                    volumes: volumes.clone(),
                },
                None if *restart_source => Command::RestartSource,
                None => Command::FinishFailed,
            },
            State::RollingBack {
                target_stopped,
                source_restarted,
                ..
            } => {
                if !target_stopped {
                    Command::StopTarget
                } else if !source_restarted {
                    Command::RestartSource
                } else {
                    Command::FinishRollback
                }
            }
            State::Purging => Command::PurgeSource {
                volumes: self.volumes.iter().map(|v| v.name.clone()).collect(),
            },
            State::Committed { .. } | State::Failed { .. } | State::RolledBack | State::Purged => {
                return None;
            }
        })
    }

    /// Decide what follows a command whose action failed with `error`. Forward steps fail
    /// the migration into compensation, recording the kind of error; the steps that undo
    /// (cleaning, restarting, stopping the target, purging) must finish, so they are retried,
    /// except that a source whose containers are gone is deployed again from its retained
    /// files and volumes.
    pub fn decide_failure(&self, cmd: &Command, error: &RuntimeError, now: Timestamp) -> Decision {
        let step = match cmd {
            Command::RunPreflight => Step::Preflight,
            Command::StopSource => Step::StopSource,
            Command::TransferVolume(v) if error.kind == RuntimeErrorKind::Unreachable => {
                if let State::Transferring { interrupted, .. } = &self.state {
                    match interrupted {
                        None => {
                            return Decision::Record(MigrationEvent::VolumeTransferInterrupted {
                                at: now,
                                volume: v.name.clone(),
                                reason: error.message.clone(),
                            });
                        }
                        Some(since) if now.duration_since(*since) < TRANSFER_RESUME_DEADLINE => {
                            return Decision::Retry;
                        }
                        Some(_) => {
                            return Decision::Record(MigrationEvent::StepFailed {
                                at: now,
                                step: Step::TransferVolumes,
                                reason: format!(
                                    "{} (the transfer of {} waited {} for the hosts to answer \
                                     again)",
                                    error.message,
                                    v.name,
                                    words(TRANSFER_RESUME_DEADLINE)
                                ),
                                kind: Some(error.kind),
                            });
                        }
                    }
                }
                Step::TransferVolumes
            }
            Command::BeginVolume(_) | Command::TransferVolume(_) => Step::TransferVolumes,
            Command::ShipFiles => Step::ShipFiles,
            Command::StartTarget => Step::StartTarget,
            Command::CheckTargetHealth => Step::TargetHealth,
            Command::RestartSource if error.kind == RuntimeErrorKind::NotFound => {
                return Decision::Run(Command::RedeploySource);
            }
            Command::Commit
            | Command::CleanTarget { .. }
            | Command::RestartSource
            | Command::RedeploySource
            | Command::FinishFailed
            | Command::StopTarget
            | Command::FinishRollback
            | Command::PurgeSource { .. } => return Decision::Retry,
        };
        Decision::Record(MigrationEvent::StepFailed {
            at: now,
            step,
            reason: error.message.clone(),
            kind: Some(error.kind),
        })
    }

    /// Check an operator's rollback request at `now`; the event to record when allowed.
    /// `later` lists the migrations of the same stack requested after this one, with where
    /// each stands: a rollback is refused while any of them moved the stack on or is moving
    /// it (only failed or rolled-back later migrations left the stack where this one put it).
    pub fn request_rollback(
        &self,
        now: Timestamp,
        by: &str,
        later: &[(MigrationId, Phase)],
    ) -> Result<MigrationEvent, RequestError> {
        let until = match self.state {
            State::Committed { retain_until } => retain_until,
            State::Purging | State::Purged => return Err(RequestError::Purged),
            _ => return Err(RequestError::NotCommitted(self.phase())),
        };
        if now >= until {
            return Err(RequestError::WindowClosed {
                retain_until: until,
            });
        }
        if let Some((id, phase)) = later
            .iter()
            .find(|(id, p)| *id != self.spec.id && !matches!(p, Phase::Failed | Phase::RolledBack))
        {
            return Err(RequestError::Superseded {
                later: *id,
                phase: *phase,
            });
        }
        Ok(MigrationEvent::RollbackRequested {
            at: now,
            by: by.to_owned(),
        })
    }

    /// Check an operator's purge request; the event to record when allowed.
    pub fn request_purge(&self, now: Timestamp, by: &str) -> Result<MigrationEvent, RequestError> {
        if !matches!(self.state, State::Committed { .. }) {
            return Err(RequestError::PurgeNotCommitted(self.phase()));
        }
        Ok(MigrationEvent::PurgeRequested {
            at: now,
            by: by.to_owned(),
        })
    }

    /// Apply one recorded event. A refused event changes nothing.
    pub fn apply(&mut self, event: &MigrationEvent) -> Result<(), TransitionError> {
        let next = self.transition(event).ok_or_else(|| TransitionError {
            migration: self.spec.id.to_string(),
            event: event.kind(),
            phase: self.phase(),
        })?;
        if let MigrationEvent::PreflightPassed { volumes, .. } = event {
            self.volumes = volumes.clone();
        }
        if let MigrationEvent::VolumeVerified {
            volume,
            outside_links,
            ..
        } = event
        {
            self.outside_links
                .extend(outside_links.iter().map(|l| format!("{volume}: {l}")));
        }
        self.state = next;
        self.events += 1;
        Ok(())
    }

    /// The state `event` leads to, or `None` when it is not allowed where the migration stands.
    fn transition(&self, event: &MigrationEvent) -> Option<State> {
        use MigrationEvent as E;
        let all_volumes = || {
            self.volumes
                .iter()
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
        };
        Some(match (&self.state, event) {
            (State::Requested, E::PreflightPassed { .. }) => State::PreflightPassed,
            (State::PreflightPassed, E::SourceStopped { .. }) => {
                if self.volumes.is_empty() {
                    State::VolumesVerified
                } else {
                    State::Transferring {
                        started: BTreeSet::new(),
                        verified: BTreeSet::new(),
                        interrupted: None,
                    }
                }
            }
            (
                State::Transferring {
                    started, verified, ..
                },
                E::VolumeTransferStarted { volume, .. },
            ) if self.volumes.iter().any(|v| v.name == *volume) => {
                let mut started = started.clone();
                started.insert(volume.clone());
                State::Transferring {
                    started,
                    verified: verified.clone(),
                    interrupted: None,
                }
            }
            (
                State::Transferring {
                    started,
                    verified,
                    interrupted,
                },
                E::VolumeTransferInterrupted { volume, at, .. },
            ) if started.contains(volume) && !verified.contains(volume) => State::Transferring {
                started: started.clone(),
                verified: verified.clone(),
                interrupted: Some(interrupted.unwrap_or(*at)),
            },
            (
                State::Transferring {
                    started, verified, ..
                },
                E::VolumeVerified { volume, .. },
            ) if started.contains(volume) => {
                let mut verified = verified.clone();
                verified.insert(volume.clone());
                if self.volumes.iter().all(|v| verified.contains(&v.name)) {
                    State::VolumesVerified
                } else {
                    State::Transferring {
                        started: started.clone(),
                        verified,
                        interrupted: None,
                    }
                }
            }
            (State::VolumesVerified, E::FilesShipped { .. }) => State::FilesShipped,
            (State::FilesShipped, E::TargetStarted { .. }) => State::TargetStarted,
            (State::TargetStarted, E::TargetHealthy { .. }) => State::TargetHealthy,
            (State::TargetHealthy, E::Committed { retain_until, .. }) => State::Committed {
                retain_until: *retain_until,
            },
            (
                forward @ (State::Requested
                | State::PreflightPassed
                | State::Transferring { .. }
                | State::VolumesVerified
                | State::FilesShipped
                | State::TargetStarted
                | State::TargetHealthy),
                E::StepFailed {
                    step, reason, kind, ..
                },
            ) => {
                // What the target may hold: the volumes whose transfer began, and after the
                // transfer, all of them with the files and the stack.
                let clean_target = match forward {
                    State::Transferring { started, .. } => Some(started.iter().cloned().collect()),
                    State::Requested | State::PreflightPassed => None,
                    _ => Some(all_volumes()),
                };
                State::Compensating {
                    failure: Failure {
                        step: *step,
                        reason: reason.clone(),
                        kind: *kind,
                    },
                    clean_target,
                    // The source was stopped, or a stop was attempted, from this step on.
                    restart_source: !matches!(forward, State::Requested),
                }
            }
            (
                State::Compensating {
                    failure,
                    clean_target: Some(_),
                    restart_source,
                },
                E::TargetCleaned { .. },
            ) => State::Compensating {
                failure: failure.clone(),
                clean_target: None,
                restart_source: *restart_source,
            },
            (
                State::Compensating {
                    failure,
                    clean_target: None,
                    restart_source: true,
                },
                E::SourceRestarted { .. },
            ) => State::Compensating {
                failure: failure.clone(),
                clean_target: None,
                restart_source: false,
            },
            (
                State::Compensating {
                    failure,
                    clean_target: None,
                    restart_source: false,
                },
                E::Failed { .. },
            ) => State::Failed {
                failure: failure.clone(),
            },
            (State::Committed { retain_until }, E::RollbackRequested { .. }) => {
                State::RollingBack {
                    retain_until: *retain_until,
                    target_stopped: false,
                    source_restarted: false,
                }
            }
            (
                State::RollingBack {
                    retain_until,
                    target_stopped: false,
                    source_restarted,
                },
                E::TargetStopped { .. },
            ) => State::RollingBack {
                retain_until: *retain_until,
                target_stopped: true,
                source_restarted: *source_restarted,
            },
            (
                State::RollingBack {
                    retain_until,
                    target_stopped: true,
                    source_restarted: false,
                },
                E::SourceRestarted { .. },
            ) => State::RollingBack {
                retain_until: *retain_until,
                target_stopped: true,
                source_restarted: true,
            },
            (
                State::RollingBack {
                    target_stopped: true,
                    source_restarted: true,
                    ..
                },
                E::RolledBack { .. },
            ) => State::RolledBack,
            (State::Committed { .. }, E::PurgeRequested { .. }) => State::Purging,
            (State::Purging, E::SourcePurged { .. }) => State::Purged,
            _ => return None,
        })
    }
}
