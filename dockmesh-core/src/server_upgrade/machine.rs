//! One hop `FROM → TO` of the server's upgrade, stage by stage: [`HopState::next`] says what
//! the driver does next, [`HopState::succeeded`] records that it was done, [`HopState::fail`]
//! says what to undo. A run resumes from its record ([`resume`]).

use super::record::{HopRecord, RunRecord, Stage, bundle_path, previous_path};
use crate::version::Version;
use std::path::{Path, PathBuf};

/// Where a run's files are: the installed binary and the backups directory.
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    /// The installed server binary.
    pub binary: &'a Path,
    /// The directory of the bundles taken before each hop.
    pub backups: &'a Path,
}

/// The versions of a hop, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ends {
    /// The version upgraded from.
    pub from: String,
    /// The version upgraded to.
    pub to: String,
}

/// Not started (or failed before and retried): the backup is next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The hop.
    pub ends: Ends,
}

/// The bundle taken before the hop verifies: the swap is next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackedUp {
    /// The hop.
    pub ends: Ends,
    /// The bundle.
    pub backup: PathBuf,
}

/// The release is installed (swapped, migrated, checked or done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The hop.
    pub ends: Ends,
    /// The bundle taken before it.
    pub backup: PathBuf,
    /// Where the binary it replaced is kept.
    pub previous: PathBuf,
}

/// Failed and undone as far as `undone` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The hop.
    pub ends: Ends,
    /// The bundle taken before it, if it got that far.
    pub backup: Option<PathBuf>,
    /// Where the binary it replaced is kept, if it got that far.
    pub previous: Option<PathBuf>,
    /// Why it failed.
    pub error: String,
    /// What was undone.
    pub undone: Vec<String>,
}

/// A hop where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopState {
    /// See [`Pending`].
    Pending(Pending),
    /// See [`BackedUp`].
    BackedUp(BackedUp),
    /// The release is in place; `db migrate` is next.
    Swapped(Installed),
    /// Migrated; the checks are next.
    Migrated(Installed),
    /// Checked; recording it done is next.
    Checked(Installed),
    /// Finished.
    Done(Installed),
    /// See [`Failed`]: a new run retries it from the backup.
    Failed(Failed),
}

/// What the driver does next for a hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopCommand {
    /// The installed binary must say it is `expect` (else the hop is not this one to start:
    /// refused); take a bundle at `bundle` with it and verify it.
    Backup {
        /// The version the installed binary must say.
        expect: String,
        /// Where the bundle goes.
        bundle: PathBuf,
    },
    /// Verify the release `to`, keep the installed binary as `previous`, put the release in
    /// its place.
    Swap {
        /// The release.
        to: String,
        /// Where the installed binary is kept.
        previous: PathBuf,
    },
    /// `db migrate` with the new binary.
    Migrate,
    /// The schema is up to date and the binary says `to`.
    Check {
        /// The version it must say.
        to: String,
    },
    /// Record the hop done.
    Finish,
}

/// What to undo after a hop failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Nothing was swapped or migrated: the binary and the database are as before.
    Nothing,
    /// Put `previous` back in place of the binary, then restore `backup` with it.
    Restore {
        /// The binary kept.
        previous: PathBuf,
        /// The bundle taken before the hop.
        backup: PathBuf,
    },
}

/// A hop that failed, with the undo under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    ends: Ends,
    after: Stage,
    backup: Option<PathBuf>,
    previous: Option<PathBuf>,
    error: String,
}

/// A transition that is not legal where the hop stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hop {from} → {to}: {what} is not allowed after {}", stage.word())]
#[non_exhaustive]
pub struct TransitionError {
    /// The version upgraded from.
    pub from: String,
    /// The version upgraded to.
    pub to: String,
    /// What was attempted.
    pub what: &'static str,
    /// Where the hop stands.
    pub stage: Stage,
}

/// A hop record whose stage lacks a fact that stage needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the hop {from} → {to} is recorded {} without its {missing}; move the run record aside to \
     start a new run", stage.word()
)]
#[non_exhaustive]
pub struct DamagedHop {
    /// The version upgraded from.
    pub from: String,
    /// The version upgraded to.
    pub to: String,
    /// The recorded stage.
    pub stage: Stage,
    /// The fact missing.
    pub missing: &'static str,
}

impl HopState {
    /// The hop's versions.
    pub fn ends(&self) -> &Ends {
        match self {
            HopState::Pending(p) => &p.ends,
            HopState::BackedUp(b) => &b.ends,
            HopState::Swapped(i)
            | HopState::Migrated(i)
            | HopState::Checked(i)
            | HopState::Done(i) => &i.ends,
            HopState::Failed(f) => &f.ends,
        }
    }

    /// The stage as recorded.
    pub fn stage(&self) -> Stage {
        match self {
            HopState::Pending(_) => Stage::Pending,
            HopState::BackedUp(_) => Stage::BackedUp,
            HopState::Swapped(_) => Stage::Swapped,
            HopState::Migrated(_) => Stage::Migrated,
            HopState::Checked(_) => Stage::Checked,
            HopState::Done(_) => Stage::Done,
            HopState::Failed(_) => Stage::Failed,
        }
    }

    /// What the driver does next; `None` once the hop is done.
    pub fn next(&self, paths: Paths<'_>) -> Option<HopCommand> {
        let ends = self.ends();
        Some(match self {
            HopState::Pending(_) | HopState::Failed(_) => HopCommand::Backup {
                expect: ends.from.clone(),
                bundle: bundle_path(paths.backups, &ends.to),
            },
            HopState::BackedUp(_) => HopCommand::Swap {
                to: ends.to.clone(),
                previous: previous_path(paths.binary, &ends.from),
            },
            HopState::Swapped(_) => HopCommand::Migrate,
            HopState::Migrated(_) => HopCommand::Check {
                to: ends.to.clone(),
            },
            HopState::Checked(_) => HopCommand::Finish,
            HopState::Done(_) => return None,
        })
    }

    /// `command` (the one [`HopState::next`] said) was carried out: the next state, to be
    /// recorded before anything else is done.
    pub fn succeeded(self, command: HopCommand) -> Result<HopState, TransitionError> {
        let stage = self.stage();
        Ok(match (self, command) {
            (HopState::Pending(Pending { ends }), HopCommand::Backup { bundle, .. })
            | (HopState::Failed(Failed { ends, .. }), HopCommand::Backup { bundle, .. }) => {
                HopState::BackedUp(BackedUp {
                    ends,
                    backup: bundle,
                })
            }
            (HopState::BackedUp(BackedUp { ends, backup }), HopCommand::Swap { previous, .. }) => {
                HopState::Swapped(Installed {
                    ends,
                    backup,
                    previous,
                })
            }
            (HopState::Swapped(i), HopCommand::Migrate) => HopState::Migrated(i),
            (HopState::Migrated(i), HopCommand::Check { .. }) => HopState::Checked(i),
            (HopState::Checked(i), HopCommand::Finish) => HopState::Done(i),
            (state, command) => {
                let ends = state.ends().clone();
                return Err(TransitionError {
                    from: ends.from,
                    to: ends.to,
                    what: command.word(),
                    stage,
                });
            }
        })
    }

    /// The hop failed for `reason` where it stands: what to undo. Once the binary was
    /// swapped, the previous one goes back and the bundle taken before is restored; before
    /// that, nothing changed.
    pub fn fail(self, reason: String) -> Result<(Failing, Undo), TransitionError> {
        let after = self.stage();
        let (ends, backup, previous, undo) = match self {
            HopState::Pending(Pending { ends }) => (ends, None, None, Undo::Nothing),
            HopState::BackedUp(BackedUp { ends, backup }) => {
                (ends, Some(backup), None, Undo::Nothing)
            }
            HopState::Swapped(i) | HopState::Migrated(i) | HopState::Checked(i) => (
                i.ends,
                Some(i.backup.clone()),
                Some(i.previous.clone()),
                Undo::Restore {
                    previous: i.previous,
                    backup: i.backup,
                },
            ),
            // A failed hop is retried from its backup; its earlier facts are dropped.
            HopState::Failed(Failed { ends, .. }) => (ends, None, None, Undo::Nothing),
            HopState::Done(i) => {
                return Err(TransitionError {
                    from: i.ends.from,
                    to: i.ends.to,
                    what: "failing",
                    stage: after,
                });
            }
        };
        Ok((
            Failing {
                ends,
                after,
                backup,
                previous,
                error: reason,
            },
            undo,
        ))
    }

    /// The state of a recorded hop.
    pub fn from_record(r: &HopRecord) -> Result<HopState, DamagedHop> {
        let ends = Ends {
            from: r.from.clone(),
            to: r.to.clone(),
        };
        let need = |v: &Option<PathBuf>, missing| {
            v.clone().ok_or_else(|| DamagedHop {
                from: r.from.clone(),
                to: r.to.clone(),
                stage: r.stage,
                missing,
            })
        };
        let installed = || -> Result<Installed, DamagedHop> {
            Ok(Installed {
                ends: ends.clone(),
                backup: need(&r.backup, "backup")?,
                previous: need(&r.previous, "previous binary")?,
            })
        };
        Ok(match r.stage {
            Stage::Pending => HopState::Pending(Pending { ends }),
            Stage::BackedUp => HopState::BackedUp(BackedUp {
                backup: need(&r.backup, "backup")?,
                ends,
            }),
            Stage::Swapped => HopState::Swapped(installed()?),
            Stage::Migrated => HopState::Migrated(installed()?),
            Stage::Checked => HopState::Checked(installed()?),
            Stage::Done => HopState::Done(installed()?),
            Stage::Failed => HopState::Failed(Failed {
                ends,
                backup: r.backup.clone(),
                previous: r.previous.clone(),
                error: r.error.clone().unwrap_or_default(),
                undone: r.undone.clone(),
            }),
        })
    }

    /// The hop as recorded.
    pub fn record(&self) -> HopRecord {
        let stage = self.stage();
        let ends = self.ends().clone();
        let (backup, previous, error, undone) = match self {
            HopState::Pending(_) => (None, None, None, Vec::new()),
            HopState::BackedUp(b) => (Some(b.backup.clone()), None, None, Vec::new()),
            HopState::Swapped(i)
            | HopState::Migrated(i)
            | HopState::Checked(i)
            | HopState::Done(i) => (
                Some(i.backup.clone()),
                Some(i.previous.clone()),
                None,
                Vec::new(),
            ),
            HopState::Failed(f) => (
                f.backup.clone(),
                f.previous.clone(),
                Some(f.error.clone()),
                f.undone.clone(),
            ),
        };
        HopRecord {
            from: ends.from,
            to: ends.to,
            stage,
            backup,
            previous,
            error,
            undone,
        }
    }
}

impl HopCommand {
    fn word(&self) -> &'static str {
        match self {
            HopCommand::Backup { .. } => "a backup",
            HopCommand::Swap { .. } => "a swap",
            HopCommand::Migrate => "a migration",
            HopCommand::Check { .. } => "a check",
            HopCommand::Finish => "finishing",
        }
    }
}

impl Failing {
    /// The stage the hop had reached when it failed.
    pub fn after(&self) -> Stage {
        self.after
    }

    /// The undo was carried out as `undone` says (a line per step, `FAILED` in those that
    /// failed): the hop is recorded failed.
    pub fn undone(self, undone: Vec<String>) -> HopState {
        HopState::Failed(Failed {
            ends: self.ends,
            backup: self.backup,
            previous: self.previous,
            error: self.error,
            undone,
        })
    }
}

/// What a run does with the record it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// An unfinished run to the same target and binary: continue it.
    Continue(RunRecord),
    /// A finished run to the same target: nothing to do.
    NothingToDo(RunRecord),
    /// No record, or a finished run to another target: plan a new run.
    Fresh,
}

/// Why a recorded run cannot be continued. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    /// The record's target is not a version.
    #[error("{}: the target: {reason}", file.display())]
    BadTarget {
        /// The run record.
        file: PathBuf,
        /// Why it does not parse.
        reason: String,
    },
    /// An unfinished run to another version.
    #[error(
        "{stands} is unfinished ({}): finish it by running `dockmesh upgrade apply --to {target}` \
         again, or move it aside; nothing was changed", file.display()
    )]
    OtherTarget {
        /// Where the run stands.
        stands: String,
        /// The run record.
        file: PathBuf,
        /// Its target.
        target: String,
    },
    /// An unfinished run of another binary.
    #[error(
        "{stands} upgrades {}, not {}: give --binary {}; nothing was changed",
        recorded.display(), given.display(), recorded.display()
    )]
    OtherBinary {
        /// Where the run stands.
        stands: String,
        /// The binary it upgrades.
        recorded: PathBuf,
        /// The binary given.
        given: PathBuf,
    },
}

/// What a run to `to` of `binary` does with the record `existing` (read from `file`).
pub fn resume(
    existing: Option<RunRecord>,
    to: &Version,
    binary: &Path,
    file: &Path,
) -> Result<Resume, ResumeError> {
    let Some(run) = existing else {
        return Ok(Resume::Fresh);
    };
    let recorded = Version::parse(&run.target);
    if run.finished() {
        return Ok(match recorded {
            Ok(v) if &v == to => Resume::NothingToDo(run),
            _ => Resume::Fresh,
        });
    }
    let recorded = recorded.map_err(|e| ResumeError::BadTarget {
        file: file.to_owned(),
        reason: e.to_string(),
    })?;
    if &recorded != to {
        return Err(ResumeError::OtherTarget {
            stands: run.where_it_stands(),
            file: file.to_owned(),
            target: run.target,
        });
    }
    if run.binary != binary {
        return Err(ResumeError::OtherBinary {
            stands: run.where_it_stands(),
            recorded: run.binary,
            given: binary.to_owned(),
        });
    }
    Ok(Resume::Continue(run))
}
