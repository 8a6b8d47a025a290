//! The async driver: load → decide → execute through a port → record the outcome → repeat.
//! Written only against the port traits; runtime-agnostic.

use super::event::{MigrationEvent, MigrationSpec, Step};
use super::machine::{Command, Decision, Migration, Phase, RequestError, TransitionError};
use crate::audit::{self, AuditEvent};
use crate::ports::{
    Clock, Fence, Fleet, HostRuntime, IdGen, Lease, LeaseClaim, MAX_PAGE, MigrationQuery, Progress,
    RuntimeError, RuntimeErrorKind, Store, StoreError, Timer, VolumeTarget, migration_lease,
    shared_coding, stack_lease,
};
use crate::preflight::{self, ActiveMigration, PreflightInput, PreflightReport};
use crate::records::{DeployRecord, StackRecord};
use crate::snapshot::{HostSnapshot, VolumeUsage};
use crate::types::{HostId, MigrationId, StackFiles};
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

    /// Record a new migration of a stack (one active migration per stack) with its audit entry
    /// and return its id. Nothing on any host changes until it is driven.
    pub async fn start(&self, req: MigrationRequest) -> Result<MigrationId, DriveError> {
        let stack_guard = self.claim(&stack_lease(&req.stack)).await?;
        let res = self.start_locked(&req).await;
        self.release(&stack_guard).await;
        res
    }

    async fn start_locked(&self, req: &MigrationRequest) -> Result<MigrationId, DriveError> {
        let stack_err = |reason: String| DriveError::Stack {
            stack: req.stack.clone(),
            reason,
        };
        let record = self
            .store
            .get_stack(&req.stack)
            .await
            .map_err(Self::store_err(&req.stack))?
            .ok_or_else(|| stack_err("the stack is not known".into()))?;
        let source = record
            .host
            .clone()
            .ok_or_else(|| stack_err("the stack is not deployed on any host".into()))?;
        if source == req.target {
            return Err(stack_err(format!("the stack already runs on {source}")));
        }
        let now = self.clock.now();
        let spec = MigrationSpec {
            id: MigrationId(self.ids.new_id()),
            stack: req.stack.clone(),
            source,
            target: req.target.clone(),
            requested_at: now,
            requested_by: req.by.clone(),
            retention: req.retention,
        };
        let audit = AuditEvent::new(now, &req.by, audit::MIGRATION_START, &req.stack)
            .with("migration", spec.id.to_string())
            .with("source", spec.source.to_string())
            .with("target", spec.target.to_string());
        match self.store.create_migration(&spec, Some(&audit)).await {
            Ok(()) => {
                let phase = Migration::new(spec.clone()).phase();
                self.emit(ProgressEvent::Recorded { id: spec.id, phase });
                Ok(spec.id)
            }
            // Another migration of the stack is active: say which, as the store does.
            Err(StoreError::Conflict { what }) => Err(stack_err(what)),
            Err(e) => Err(Self::store_err(spec.id)(e)),
        }
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

    /// Ask for the rollback of a committed migration and drive it. Refused (nothing changes)
    /// outside the window, after a purge, or while a later migration of the same stack moved
    /// the stack on or is moving it.
    pub async fn rollback(&self, id: MigrationId, by: &str) -> Result<Migration, DriveError> {
        self.request_rollback(id, by).await?;
        self.run(id).await
    }

    /// Record an operator's rollback request without driving it (refused, with nothing
    /// written, outside the window, after a purge, or when a later migration moved the stack
    /// on); [`Driver::run`] carries it out. Holds the stack's lease while it decides.
    pub async fn request_rollback(&self, id: MigrationId, by: &str) -> Result<(), DriveError> {
        let m = self.load(id).await?;
        if m.phase() == Phase::RollingBack {
            return Ok(());
        }
        let stack_guard = self.claim(&stack_lease(&m.spec().stack)).await?;
        let res = self.request_rollback_locked(id, by).await;
        self.release(&stack_guard).await;
        res
    }

    async fn request_rollback_locked(&self, id: MigrationId, by: &str) -> Result<(), DriveError> {
        let lease = self.claim(&migration_lease(id)).await?;
        let res = async {
            let mut m = self.load(id).await?;
            if m.phase() == Phase::RollingBack {
                return Ok(());
            }
            let later = self.later_migrations(&m).await?;
            let e = m.request_rollback(self.clock.now(), by, &later)?;
            self.record(&mut m, e, &lease.fence()).await
        }
        .await;
        self.release(&lease).await;
        res
    }

    /// The migrations of `m`'s stack asked for after `m`, with where each stands.
    async fn later_migrations(
        &self,
        m: &Migration,
    ) -> Result<Vec<(MigrationId, Phase)>, DriveError> {
        let spec = m.spec();
        let mut later = Vec::new();
        let mut query = MigrationQuery {
            stack: Some(spec.stack.clone()),
            limit: MAX_PAGE,
            ..Default::default()
        };
        'pages: loop {
            let page = self
                .store
                .list_migrations(&query)
                .await
                .map_err(Self::store_err(spec.id))?;
            let Some(last) = page.last() else { break };
            query.after = Some(last.spec.id);
            for s in page {
                // Newest first: everything after `m` in the list is older.
                if s.spec.id == spec.id {
                    break 'pages;
                }
                let phase = Migration::replay(s.spec.clone(), &s.events)?.phase();
                later.push((s.spec.id, phase));
            }
        }
        Ok(later)
    }

    /// Ask for the purge of a committed migration's source and drive it.
    pub async fn purge_source(&self, id: MigrationId, by: &str) -> Result<Migration, DriveError> {
        self.request_purge(id, by).await?;
        self.run(id).await
    }

    /// Record an operator's purge request (refused outside a committed migration) without
    /// driving it; [`Driver::run`] carries it out.
    pub async fn request_purge(&self, id: MigrationId, by: &str) -> Result<(), DriveError> {
        let lease = self.claim(&migration_lease(id)).await?;
        let res = async {
            let mut m = self.load(id).await?;
            if m.phase() != Phase::Purging {
                let e = m.request_purge(self.clock.now(), by)?;
                self.record(&mut m, e, &lease.fence()).await?;
            }
            Ok::<_, DriveError>(())
        }
        .await;
        self.release(&lease).await;
        res
    }

    /// Check that `event` applies to `m`, then persist it with its audit entry in one write,
    /// then apply it. A refused event writes nothing.
    pub(super) async fn record(
        &self,
        m: &mut Migration,
        event: MigrationEvent,
        fence: &Fence,
    ) -> Result<(), DriveError> {
        let id = m.spec().id;
        let mut next = m.clone();
        next.apply(&event)?;
        let audit = audit_of(&next, &event);
        self.store
            .append_migration_event(id, m.event_count(), &event, fence, audit.as_ref())
            .await
            .map_err(Self::store_err(id))?;
        *m = next;
        self.emit(ProgressEvent::Recorded {
            id,
            phase: m.phase(),
        });
        if matches!(
            event,
            MigrationEvent::Committed { .. } | MigrationEvent::RolledBack { .. }
        ) {
            self.reconcile_stack_record(m).await?;
        }
        Ok(())
    }

    /// Keep the stack record pointing at the host the stack runs on (idempotent); the record
    /// and its deploy history entry are written together.
    async fn reconcile_stack_record(&self, m: &Migration) -> Result<(), DriveError> {
        let spec = m.spec();
        let (host, action) = match m.phase() {
            Phase::Committed | Phase::Purging | Phase::Purged => (&spec.target, "migrate-in"),
            Phase::RolledBack => (&spec.source, "rollback"),
            _ => return Ok(()),
        };
        // A later migration that moved the stack on owns the record now: an old migration
        // driven again must not point it back at a host the stack left.
        let later = self.later_migrations(m).await?;
        if later
            .iter()
            .any(|(_, p)| !matches!(p, Phase::Failed | Phase::RolledBack))
        {
            return Ok(());
        }
        let err = Self::store_err(spec.id);
        let Some(mut rec) = self.store.get_stack(&spec.stack).await.map_err(err)? else {
            return Ok(());
        };
        if rec.host.as_ref() == Some(host) {
            return Ok(());
        }
        let now = self.clock.now();
        rec.host = Some(host.clone());
        rec.updated_at = now;
        let deploy = DeployRecord {
            stack: spec.stack.clone(),
            at: now,
            host: host.clone(),
            action: action.into(),
            actor: spec.requested_by.clone(),
        };
        self.store
            .put_stack(&rec, Some(&deploy))
            .await
            .map_err(Self::store_err(spec.id))?;
        Ok(())
    }

    fn emit(&self, e: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(e);
        }
    }

    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError> {
        self.fleet.host(id).await
    }

    /// The pre-flight report for moving `stack` to `target` now, as the migration's own
    /// pre-flight step would compute it; nothing is recorded and nothing changes.
    pub async fn preflight(
        &self,
        stack: &str,
        target: &HostId,
    ) -> Result<PreflightReport, DriveError> {
        let stack_err = |reason: String| DriveError::Stack {
            stack: stack.to_owned(),
            reason,
        };
        let record = self
            .store
            .get_stack(stack)
            .await
            .map_err(Self::store_err(stack))?
            .ok_or_else(|| stack_err("the stack is not known".into()))?;
        let source = record
            .host
            .ok_or_else(|| stack_err("the stack is not deployed on any host".into()))?;
        if &source == target {
            return Err(stack_err(format!("the stack already runs on {source}")));
        }
        let (report, _) = self
            .preflight_between(None, stack, &source, target)
            .await
            .map_err(|e| DriveError::Stack {
                stack: stack.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(report)
    }

    /// Snapshot both hosts and run the checks; also returns the source's snapshot.
    async fn preflight_between(
        &self,
        migration: Option<MigrationId>,
        stack: &str,
        source_id: &HostId,
        target_id: &HostId,
    ) -> Result<(PreflightReport, HostSnapshot), RuntimeError> {
        let (source, source_err) = self.snapshot_of(source_id).await;
        let (target, target_err) = self.snapshot_of(target_id).await;
        let active: Vec<ActiveMigration> = self
            .store
            .list_migrations(&MigrationQuery {
                active_only: true,
                stack: Some(stack.to_owned()),
                limit: MAX_PAGE,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!("listing the stack's active migrations: {e}"),
                )
            })?
            .into_iter()
            .map(|s| ActiveMigration {
                id: s.spec.id,
                stack: s.spec.stack,
            })
            .collect();
        let mut report = preflight::run(&PreflightInput {
            migration,
            stack,
            source: &source,
            target: &target,
            active_migrations: &active,
        });
        // Say why a host counts as offline: the error its runtime gave.
        for (check, err) in [("source_online", source_err), ("target_online", target_err)] {
            if let Some(err) = err
                && let Some(c) = report.checks.iter_mut().find(|c| c.name == check)
            {
                c.detail = format!("{} ({err})", c.detail);
            }
        }
        Ok((report, source))
    }

    /// A host's snapshot, or an offline one and why the host could not be read.
    async fn snapshot_of(&self, id: &HostId) -> (HostSnapshot, Option<String>) {
        let res = match self.host(id).await {
            Ok(h) => h.snapshot().await,
            Err(e) => Err(e),
        };
        match res {
            Ok(s) => (s, None),
            Err(e) => (
                HostSnapshot::offline(id.clone(), self.clock.now()),
                Some(e.to_string()),
            ),
        }
    }

    /// The stack's files: from the store, else from `host`'s copy.
    async fn stack_files(&self, m: &Migration, host: &HostId) -> Result<StackFiles, RuntimeError> {
        let spec = m.spec();
        if let Ok(Some(StackRecord { compose, env, .. })) = self.store.get_stack(&spec.stack).await
        {
            return Ok(StackFiles {
                name: spec.stack.clone(),
                compose,
                env,
            });
        }
        self.host(host)
            .await?
            .read_stack_files(&spec.stack)
            .await?
            .ok_or_else(|| {
                RuntimeError::new(
                    RuntimeErrorKind::NotFound,
                    format!("the files of stack {} are not known", spec.stack),
                )
            })
    }

    /// Run one command's action. A refused pre-flight is an outcome (a `StepFailed` event);
    /// a host's error is returned for [`Migration::decide_failure`] to judge.
    pub(super) async fn execute(
        &self,
        m: &Migration,
        cmd: Command,
    ) -> Result<MigrationEvent, RuntimeError> {
        let spec = m.spec().clone();
        let now = || self.clock.now();
        Ok(match cmd {
            Command::RunPreflight => {
                let (report, source) = self
                    .preflight_between(Some(spec.id), &spec.stack, &spec.source, &spec.target)
                    .await?;
                if report.passed() {
                    let volumes = source
                        .stacks
                        .get(&spec.stack)
                        .map(|s| s.volumes.clone())
                        .unwrap_or_default();
                    MigrationEvent::PreflightPassed {
                        at: now(),
                        report,
                        volumes,
                    }
                } else {
                    MigrationEvent::StepFailed {
                        at: now(),
                        step: Step::Preflight,
                        reason: report.failure_summary(),
                        kind: None,
                    }
                }
            }
            Command::StopSource => {
                self.host(&spec.source)
                    .await?
                    .stop_stack(&spec.stack)
                    .await?;
                MigrationEvent::SourceStopped { at: now() }
            }
            Command::BeginVolume(v) => MigrationEvent::VolumeTransferStarted {
                at: now(),
                volume: v.name,
            },
            Command::TransferVolume(v) => {
                let (bytes, digest, outside_links) = self.transfer(&spec, &v).await?;
                MigrationEvent::VolumeVerified {
                    at: now(),
                    volume: v.name,
                    bytes,
                    digest,
                    outside_links,
                }
            }
            Command::ShipFiles => {
                let files = self.stack_files(m, &spec.source).await?;
                self.host(&spec.target)
                    .await?
                    .write_stack_files(&files)
                    .await?;
                MigrationEvent::FilesShipped { at: now() }
            }
            Command::StartTarget => {
                let t = self.host(&spec.target).await?;
                let files = t.read_stack_files(&spec.stack).await?.ok_or_else(|| {
                    RuntimeError::new(
                        RuntimeErrorKind::NotFound,
                        "the shipped files are missing on the target",
                    )
                })?;
                t.deploy(&files).await?;
                MigrationEvent::TargetStarted { at: now() }
            }
            Command::CheckTargetHealth => {
                let r = self
                    .host(&spec.target)
                    .await?
                    .wait_healthy(&spec.stack)
                    .await?;
                if !r.healthy() {
                    return Err(RuntimeError::new(
                        RuntimeErrorKind::Unhealthy,
                        r.failure_summary(),
                    ));
                }
                MigrationEvent::TargetHealthy { at: now() }
            }
            Command::Commit => {
                let at = now();
                MigrationEvent::Committed {
                    at,
                    retain_until: at + spec.retention,
                }
            }
            Command::CleanTarget { volumes } => {
                self.remove_everything(&spec.target, &spec.stack, &volumes)
                    .await?;
                MigrationEvent::TargetCleaned { at: now() }
            }
            Command::RestartSource => {
                self.host(&spec.source)
                    .await?
                    .start_stack(&spec.stack)
                    .await?;
                MigrationEvent::SourceRestarted {
                    at: now(),
                    redeployed: false,
                }
            }
            Command::RedeploySource => {
                // The containers are gone; the files and volumes were retained on the source.
                let s = self.host(&spec.source).await?;
                let files = match s.read_stack_files(&spec.stack).await? {
                    Some(f) => f,
                    None => self.stack_files(m, &spec.source).await?,
                };
                s.deploy(&files).await?;
                MigrationEvent::SourceRestarted {
                    at: now(),
                    redeployed: true,
                }
            }
            Command::FinishFailed => MigrationEvent::Failed { at: now() },
            Command::StopTarget => {
                self.host(&spec.target)
                    .await?
                    .stop_stack(&spec.stack)
                    .await?;
                MigrationEvent::TargetStopped { at: now() }
            }
            Command::FinishRollback => MigrationEvent::RolledBack { at: now() },
            Command::PurgeSource { volumes } => {
                self.remove_everything(&spec.source, &spec.stack, &volumes)
                    .await?;
                MigrationEvent::SourcePurged { at: now() }
            }
        })
    }

    /// Remove a stack's containers, these volumes and its files from a host.
    async fn remove_everything(
        &self,
        host: &HostId,
        stack: &str,
        volumes: &[String],
    ) -> Result<(), RuntimeError> {
        let h = self.host(host).await?;
        h.remove_stack(stack, true).await?;
        for v in volumes {
            h.remove_volume(v).await?;
        }
        h.remove_stack_files(stack).await
    }

    /// Stream one volume from the source to the target and compare manifests; the bytes, the
    /// digest and the links that point outside the volume.
    ///
    /// When the target holds an import of the volume that broke off (a cut connection), the
    /// transfer goes on from the byte it reached. Cut again, it goes on again next time; when
    /// going on fails otherwise (the target no longer waits, the source cannot start there,
    /// the result does not verify), the volume is sent whole.
    async fn transfer(
        &self,
        spec: &MigrationSpec,
        v: &VolumeUsage,
    ) -> Result<(u64, String, Vec<String>), RuntimeError> {
        let target = self.host(&spec.target).await?;
        match target.import_resume_point(&v.name).await {
            Ok(Some(offset)) => match self.transfer_once(spec, v, Some(offset)).await {
                Ok(done) => return Ok(done),
                Err(e) if e.kind == RuntimeErrorKind::Unreachable => return Err(e),
                Err(_) => {}
            },
            Ok(None) => {}
            // Not back yet: asked again on the next attempt (a whole import now would drop
            // what waits there).
            Err(e) if e.kind == RuntimeErrorKind::Unreachable => {
                return Err(RuntimeError::new(
                    e.kind,
                    format!("resuming volume {}: {}", v.name, e.message),
                ));
            }
            // A target that cannot tell is sent the whole volume.
            Err(_) => {}
        }
        self.transfer_once(spec, v, None).await
    }

    /// One attempt at [`Driver::transfer`]: the whole volume, or from `resume` on.
    async fn transfer_once(
        &self,
        spec: &MigrationSpec,
        v: &VolumeUsage,
        resume: Option<u64>,
    ) -> Result<(u64, String, Vec<String>), RuntimeError> {
        let context = |what: &str, e: RuntimeError| {
            RuntimeError::new(e.kind, format!("{what} volume {}: {}", v.name, e.message))
        };
        let source = self.host(&spec.source).await?;
        let target = self.host(&spec.target).await?;
        let offset = resume.unwrap_or(0);
        // In a coding both hosts take, the stream goes from one to the other as it is.
        let coding = shared_coding(source.stream_codings(), target.stream_codings());
        let export = source
            .export_volume_coded(&v.name, resume, coding)
            .await
            .map_err(|e| context("exporting", e))?;
        if let (Some(offset), Some(p)) = (resume, &self.progress) {
            p(ProgressEvent::VolumeResumed {
                id: spec.id,
                volume: v.name.clone(),
                offset,
            });
        }
        let progress: Progress = {
            let emit = self.progress.clone();
            let (id, volume, total) = (spec.id, v.name.clone(), v.bytes);
            Arc::new(move |bytes| {
                if let Some(p) = &emit {
                    p(ProgressEvent::VolumeBytes {
                        id,
                        volume: volume.clone(),
                        bytes: offset + bytes,
                        total,
                    });
                }
            })
        };
        let into = VolumeTarget {
            name: v.name.clone(),
            labels: v.labels.clone(),
            expected_bytes: v.bytes,
        };
        let imported = target
            .import_volume_coded(&into, resume, export.stream, export.coding, progress)
            .await
            .map_err(|e| context("importing", e))?;
        let exported = export
            .manifest
            .take()
            .map_err(|e| context("exporting", e))?;
        if let Some(diff) = exported.first_difference(&imported) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!(
                    "volume {} failed verification on the target: {diff}",
                    v.name
                ),
            ));
        }
        let outside_links = exported
            .outside_links()
            .into_iter()
            .map(|(path, target)| format!("{path} -> {target}"))
            .collect();
        Ok((exported.content_bytes(), exported.digest(), outside_links))
    }
}

/// The audit entry written with `event`, if it has one; `next` is the migration after it.
fn audit_of(next: &Migration, event: &MigrationEvent) -> Option<AuditEvent> {
    let spec = next.spec();
    let stack = spec.stack.as_str();
    let a = match event {
        MigrationEvent::Committed { at, retain_until } => {
            AuditEvent::new(*at, "system", audit::MIGRATION_COMPLETE, stack)
                .with("retain_until", retain_until.to_string())
        }
        MigrationEvent::Failed { at } => {
            let mut a = AuditEvent::new(*at, "system", audit::MIGRATION_FAIL, stack);
            if let Some(f) = next.failure() {
                a = a
                    .with("step", f.step.to_string())
                    .with("reason", f.reason.clone());
            }
            a
        }
        MigrationEvent::RolledBack { at } => {
            AuditEvent::new(*at, "system", audit::MIGRATION_ROLLBACK, stack)
        }
        MigrationEvent::RollbackRequested { at, by } => {
            AuditEvent::new(*at, by, audit::MIGRATION_ROLLBACK, stack).with("state", "requested")
        }
        MigrationEvent::SourcePurged { at } => {
            AuditEvent::new(*at, "system", audit::MIGRATION_PURGE_SOURCE, stack)
        }
        _ => return None,
    };
    Some(
        a.with("migration", spec.id.to_string())
            .with("source", spec.source.to_string())
            .with("target", spec.target.to_string()),
    )
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
