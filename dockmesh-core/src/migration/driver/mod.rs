//! The async driver: load → decide → execute through a port → record the outcome → repeat.
//! Written only against the port traits; runtime-agnostic.
//!
//! `mod.rs` holds the driver, its leases and its loop; `requests.rs` the operators' requests
//! (start, rollback, purge), `record.rs` persisting each outcome, `execute.rs` what each
//! command does through the hosts, and `transfer.rs` moving one volume.

mod execute;
mod record;
mod requests;
mod transfer;

use super::machine::{Command, Decision, Migration, Phase, RequestError, TransitionError};
use crate::ports::{
    Clock, Fleet, HostRuntime, IdGen, Lease, LeaseClaim, RuntimeError, Store, StoreError, Timer,
    migration_lease,
};
use crate::types::{HostId, MigrationId};
use jiff::SignedDuration;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A request to move a stack.
#[derive(Debug, Clone)]
pub struct MigrationRequest {
    /// The stack to move (it must be known to the store and deployed on a host).
    pub stack: String,
    /// Where to move it.
    pub target: HostId,
    /// Who asks.
    pub by: String,
    /// How long to keep the source after the commit.
    pub retention: SignedDuration,
}

/// Progress of a running migration, for progress bars and logs (more kinds may come: match
/// with a wildcard).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// A command is about to run.
    Command {
        /// The migration.
        id: MigrationId,
        /// What runs, in words.
        what: String,
    },
    /// Bytes of a volume have flowed.
    VolumeBytes {
        /// The migration.
        id: MigrationId,
        /// The volume.
        volume: String,
        /// Bytes so far.
        bytes: u64,
        /// Expected total, when known.
        total: Option<u64>,
    },
    /// A volume's transfer goes on where the target's import broke off: the first `offset`
    /// bytes of its stream are not sent again.
    VolumeResumed {
        /// The migration.
        id: MigrationId,
        /// The volume.
        volume: String,
        /// The byte of the stream the transfer goes on from.
        offset: u64,
    },
    /// A migration was created or an event of its log was persisted: it is in `phase` now
    /// (so counters by phase can follow the store without reading it back).
    Recorded {
        /// The migration.
        id: MigrationId,
        /// Its phase after the event (or its first phase, when it was just created).
        phase: Phase,
    },
}

/// Why the driver stopped before the migration settled. The migration is left as recorded and
/// resumes from there when driven again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// Reading or writing the store failed; the migration resumes from the last recorded event.
    #[error("the store failed while driving migration {id}")]
    Store {
        /// The migration.
        id: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A host needed for compensation, rollback or purge failed; this step is retried when the
    /// migration is driven again. Nothing was lost: the event log says where it stands.
    #[error("migration {id}: {what} failed and will be retried")]
    Retry {
        /// The migration.
        id: String,
        /// What was being done.
        what: String,
        /// The host's error.
        #[source]
        source: RuntimeError,
    },
    /// Another driver holds the lease: it drives this migration (or stack) now.
    #[error("{lease} is being driven by {owner} (lease held until {until})")]
    Busy {
        /// The lease.
        lease: String,
        /// Its holder.
        owner: String,
        /// Until when, unless renewed.
        until: jiff::Timestamp,
    },
    /// This driver lost its lease to another driver while driving; it stopped without writing.
    #[error("migration {id}: another driver took the lease over; this one stopped")]
    Fenced {
        /// The migration.
        id: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// The driver was asked to stop; the migration stopped at a checkpoint (its last step was
    /// recorded) and resumes from there when driven again.
    #[error("migration {id} stopped at a checkpoint because the driver is shutting down")]
    Stopped {
        /// The migration.
        id: String,
    },
    /// No migration has this id.
    #[error("no migration {0}")]
    NotFound(String),
    /// The stack is not known to the store, or not deployed anywhere.
    #[error("cannot migrate stack {stack}: {reason}")]
    Stack {
        /// The stack.
        stack: String,
        /// What is wrong.
        reason: String,
    },
    /// The stored event log does not replay.
    #[error(transparent)]
    Corrupt(#[from] TransitionError),
    /// An operator's request was refused; nothing changed.
    #[error(transparent)]
    Refused(#[from] RequestError),
}

impl DriveError {
    /// What the operator can do next.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            DriveError::Store { .. } => Some("check the database; drive the migration again"),
            DriveError::Retry { .. } => {
                Some("bring the host back; the step is retried when the migration is driven again")
            }
            DriveError::Busy { .. } => {
                Some("wait for the other driver, or for its lease to expire")
            }
            DriveError::Refused(r) => Some(r.hint()),
            DriveError::Stopped { .. } => Some("it resumes when the server starts again"),
            _ => None,
        }
    }
}

/// How long a driver's lease lasts unless renewed.
pub const DEFAULT_LEASE_TTL: SignedDuration = SignedDuration::from_secs(60);

/// Drives migrations through the ports.
pub struct Driver {
    store: Arc<dyn Store>,
    fleet: Arc<dyn Fleet>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    owner: String,
    lease_ttl: SignedDuration,
    timer: Option<Arc<dyn Timer>>,
    progress: Option<Arc<dyn Fn(ProgressEvent) + Send + Sync>>,
    stop: Option<Arc<AtomicBool>>,
}

impl Driver {
    /// A driver over these ports. It holds leases as `driver-<new id>`.
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Arc<dyn Fleet>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
    ) -> Self {
        let owner = format!("driver-{}", ids.new_id());
        Driver {
            store,
            fleet,
            clock,
            ids,
            owner,
            lease_ttl: DEFAULT_LEASE_TTL,
            timer: None,
            progress: None,
            stop: None,
        }
    }

    /// Hold leases under this name (a server instance's id).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Leases last `ttl` unless renewed.
    pub fn with_lease_ttl(mut self, ttl: SignedDuration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Renew the lease every third of its ttl while a long step (a volume transfer, a health
    /// wait) runs. Without a timer the lease is renewed between steps only, so it must outlast
    /// the longest step.
    pub fn with_timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = Some(timer);
        self
    }

    /// Report progress to `f`.
    pub fn with_progress(mut self, f: Arc<dyn Fn(ProgressEvent) + Send + Sync>) -> Self {
        self.progress = Some(f);
        self
    }

    /// Stop at the next checkpoint once `stop` is set: the step that runs finishes and is
    /// recorded, then [`Driver::run`] returns [`DriveError::Stopped`] (a server shutting down).
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// The name this driver holds leases under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn store_err(id: impl ToString) -> impl FnOnce(StoreError) -> DriveError {
        move |source| match source {
            StoreError::Fenced { .. } => DriveError::Fenced {
                id: id.to_string(),
                source,
            },
            source => DriveError::Store {
                id: id.to_string(),
                source,
            },
        }
    }

    /// Take (or renew) lease `name`, or say who holds it.
    pub async fn claim(&self, name: &str) -> Result<Lease, DriveError> {
        match self
            .store
            .claim_lease(name, &self.owner, self.lease_ttl)
            .await
            .map_err(Self::store_err(name))?
        {
            LeaseClaim::Granted(l) => Ok(l),
            LeaseClaim::Held { owner, until } => Err(DriveError::Busy {
                lease: name.to_owned(),
                owner,
                until,
            }),
        }
    }

    /// Renew `lease`; fenced when another holder took it meanwhile.
    async fn renew(&self, lease: &Lease) -> Result<(), DriveError> {
        match self.claim(&lease.name).await {
            Ok(l) if l.token == lease.token => Ok(()),
            Ok(l) => Err(DriveError::Fenced {
                id: lease.name.clone(),
                source: StoreError::Fenced {
                    lease: lease.name.clone(),
                    token: lease.token,
                    current: l.token,
                },
            }),
            Err(DriveError::Busy { .. }) => Err(DriveError::Fenced {
                id: lease.name.clone(),
                source: StoreError::Fenced {
                    lease: lease.name.clone(),
                    token: lease.token,
                    current: lease.token + 1,
                },
            }),
            Err(e) => Err(e),
        }
    }

    async fn release(&self, lease: &Lease) {
        // Best effort: an unreleased lease expires by itself after its ttl.
        let _ = self.store.release_lease(&lease.name, &self.owner).await;
    }

    /// Load a migration from the store and replay its log.
    pub async fn load(&self, id: MigrationId) -> Result<Migration, DriveError> {
        let stored = self
            .store
            .load_migration(id)
            .await
            .map_err(Self::store_err(id))?
            .ok_or_else(|| DriveError::NotFound(id.to_string()))?;
        Ok(Migration::replay(stored.spec, &stored.events)?)
    }

    /// Drive a migration until it settles (committed, failed, rolled back, purged) or a step
    /// must be retried later, holding its lease throughout. Safe to call after a crash at any
    /// point; refused with [`DriveError::Busy`] while another driver holds the lease.
    pub async fn run(&self, id: MigrationId) -> Result<Migration, DriveError> {
        let lease = self.claim(&migration_lease(id)).await?;
        let res = self.run_leased(id, &lease).await;
        self.release(&lease).await;
        res
    }

    async fn run_leased(&self, id: MigrationId, lease: &Lease) -> Result<Migration, DriveError> {
        // Load under the lease: whatever an earlier holder wrote is in the log now.
        let mut m = self.load(id).await?;
        loop {
            if self.stop_requested() {
                return Err(DriveError::Stopped { id: id.to_string() });
            }
            if !self.step(&mut m, lease).await? {
                break;
            }
            self.renew(lease).await?;
        }
        self.reconcile_stack_record(&m).await?;
        Ok(m)
    }

    /// Execute the next command of `m` under `lease` and record its outcome. Returns `false`
    /// when there is nothing to do.
    pub async fn step(&self, m: &mut Migration, lease: &Lease) -> Result<bool, DriveError> {
        let Some(mut cmd) = m.next_command() else {
            return Ok(false);
        };
        let id = m.spec().id;
        loop {
            self.emit(ProgressEvent::Command {
                id,
                what: format!("{cmd:?}"),
            });
            let outcome = self.guarded(lease, self.execute(m, cmd.clone())).await?;
            let decision = match outcome {
                Ok(event) => Decision::Record(event),
                Err(error) => {
                    let d = m.decide_failure(&cmd, &error, self.clock.now());
                    if d == Decision::Retry {
                        return Err(DriveError::Retry {
                            id: id.to_string(),
                            what: command_words(&cmd).to_owned(),
                            source: error,
                        });
                    }
                    d
                }
            };
            match decision {
                Decision::Record(event) => {
                    self.record(m, event, &lease.fence()).await?;
                    return Ok(true);
                }
                Decision::Run(next) => cmd = next,
                Decision::Retry => unreachable!("returned above"),
            }
        }
    }

    /// Run `work`, renewing `lease` beside it when the driver has a timer; fenced when the
    /// lease is lost meanwhile (the work is dropped before it records anything).
    pub(super) async fn guarded<T>(
        &self,
        lease: &Lease,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, DriveError> {
        let Some(timer) = &self.timer else {
            return Ok(work.await);
        };
        let every = self
            .lease_ttl
            .checked_div(3)
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .unwrap_or(std::time::Duration::from_secs(1));
        let renewals = async {
            loop {
                timer.sleep(every).await;
                if let Err(e) = self.renew(lease).await {
                    return e;
                }
            }
        };
        let work = std::pin::pin!(work);
        let renewals = std::pin::pin!(renewals);
        match futures_util::future::select(work, renewals).await {
            futures_util::future::Either::Left((out, _)) => Ok(out),
            futures_util::future::Either::Right((err, _)) => Err(err),
        }
    }

    fn emit(&self, e: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(e);
        }
    }

    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError> {
        self.fleet.host(id).await
    }
}

/// What a command does, in words (for errors and progress).
pub fn command_words(cmd: &Command) -> &'static str {
    match cmd {
        Command::RunPreflight => "running the pre-flight checks",
        Command::StopSource => "stopping the source",
        Command::BeginVolume(_) | Command::TransferVolume(_) => "transferring a volume",
        Command::ShipFiles => "shipping the files",
        Command::StartTarget => "starting the target",
        Command::CheckTargetHealth => "checking the target's health",
        Command::Commit => "recording the commit",
        Command::CleanTarget { .. } => "cleaning the target",
        Command::RestartSource => "restarting the source",
        Command::RedeploySource => "deploying the source again from its retained files",
        Command::FinishFailed => "recording the failure",
        Command::StopTarget => "stopping the target",
        Command::FinishRollback => "recording the rollback",
        Command::PurgeSource { .. } => "purging the source",
    }
}
