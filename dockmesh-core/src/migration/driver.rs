//! The async driver: load → decide → execute through a port → record the outcome → repeat.
//! Written only against the port traits; runtime-agnostic.

use super::event::{MigrationEvent, MigrationSpec, Step};
use super::machine::{Command, Migration, Phase, RequestError, TransitionError};
use crate::audit::{self, AuditEvent};
use crate::ports::{
    Clock, Fleet, HostRuntime, IdGen, Progress, RuntimeError, Store, StoreError, VolumeTarget,
};
use crate::preflight::{self, ActiveMigration, PreflightInput};
use crate::records::{DeployRecord, StackRecord};
use crate::snapshot::{HostSnapshot, VolumeUsage};
use crate::types::{HostId, MigrationId, StackFiles};
use jiff::SignedDuration;
use std::sync::Arc;

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

/// Progress of a running migration, for progress bars and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// Why the driver stopped before the migration settled. The migration is left as recorded and
/// resumes from there when driven again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// Reading or writing the store failed; the migration resumes from the last recorded event.
    #[error("store error while driving migration {id}: {source}")]
    Store {
        /// The migration.
        id: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A host needed for compensation, rollback or purge failed; this step is retried when the
    /// migration is driven again. Nothing was lost: the event log says where it stands.
    #[error("migration {id}: {what} failed and will be retried: {source}")]
    Retry {
        /// The migration.
        id: String,
        /// What was being done.
        what: String,
        /// The host's error.
        #[source]
        source: RuntimeError,
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

/// Drives migrations through the ports.
pub struct Driver {
    store: Arc<dyn Store>,
    fleet: Arc<dyn Fleet>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    progress: Option<Arc<dyn Fn(ProgressEvent) + Send + Sync>>,
}

impl Driver {
    /// A driver over these ports.
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Arc<dyn Fleet>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
    ) -> Self {
        Driver {
            store,
            fleet,
            clock,
            ids,
            progress: None,
        }
    }

    /// Report progress to `f`.
    pub fn with_progress(mut self, f: Arc<dyn Fn(ProgressEvent) + Send + Sync>) -> Self {
        self.progress = Some(f);
        self
    }

    fn store_err(id: impl ToString) -> impl FnOnce(StoreError) -> DriveError {
        move |source| DriveError::Store {
            id: id.to_string(),
            source,
        }
    }

    /// Record a new migration of a stack (one active migration per stack) and return its id.
    /// Nothing on any host changes until it is driven.
    pub async fn start(&self, req: MigrationRequest) -> Result<MigrationId, DriveError> {
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
        self.store
            .create_migration(&spec)
            .await
            .map_err(Self::store_err(spec.id))?;
        self.audit(
            AuditEvent::new(now, &req.by, audit::MIGRATION_START, &req.stack)
                .with("migration", spec.id.to_string())
                .with("source", spec.source.to_string())
                .with("target", spec.target.to_string()),
        )
        .await;
        Ok(spec.id)
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
    /// must be retried later. Safe to call after a crash at any point.
    pub async fn run(&self, id: MigrationId) -> Result<Migration, DriveError> {
        let mut m = self.load(id).await?;
        while self.step(&mut m).await? {}
        self.reconcile_stack_record(&m).await?;
        Ok(m)
    }

    /// Execute the next command of `m` and record its outcome. Returns `false` when there is
    /// nothing to do.
    pub async fn step(&self, m: &mut Migration) -> Result<bool, DriveError> {
        let Some(cmd) = m.next_command() else {
            return Ok(false);
        };
        let id = m.spec().id;
        self.emit(ProgressEvent::Command {
            id,
            what: format!("{cmd:?}"),
        });
        let event = self.execute(m, cmd).await?;
        self.record(m, event).await?;
        Ok(true)
    }

    /// Ask for the rollback of a committed migration and drive it.
    pub async fn rollback(&self, id: MigrationId, by: &str) -> Result<Migration, DriveError> {
        let mut m = self.load(id).await?;
        if m.phase() != Phase::RollingBack {
            let e = m.request_rollback(self.clock.now(), by)?;
            self.record(&mut m, e).await?;
        }
        self.run(id).await
    }

    /// Ask for the purge of a committed migration's source and drive it.
    pub async fn purge_source(&self, id: MigrationId, by: &str) -> Result<Migration, DriveError> {
        let mut m = self.load(id).await?;
        if m.phase() != Phase::Purging {
            let e = m.request_purge(self.clock.now(), by)?;
            self.record(&mut m, e).await?;
        }
        self.run(id).await
    }

    pub(super) async fn record(
        &self,
        m: &mut Migration,
        event: MigrationEvent,
    ) -> Result<(), DriveError> {
        let id = m.spec().id;
        self.store
            .append_migration_event(id, m.event_count(), &event)
            .await
            .map_err(Self::store_err(id))?;
        m.apply(&event)?;
        let spec = m.spec();
        let stack = spec.stack.as_str();
        let audit_event = match &event {
            MigrationEvent::Committed { at, retain_until } => Some(
                AuditEvent::new(*at, "system", audit::MIGRATION_COMPLETE, stack)
                    .with("retain_until", retain_until.to_string()),
            ),
            MigrationEvent::Failed { at } => {
                let (step, reason) = m.failure().cloned().expect("failed has a failure");
                Some(
                    AuditEvent::new(*at, "system", audit::MIGRATION_FAIL, stack)
                        .with("step", step.to_string())
                        .with("reason", reason),
                )
            }
            MigrationEvent::RolledBack { at } => Some(AuditEvent::new(
                *at,
                "system",
                audit::MIGRATION_ROLLBACK,
                stack,
            )),
            MigrationEvent::RollbackRequested { at, by } => Some(
                AuditEvent::new(*at, by, audit::MIGRATION_ROLLBACK, stack)
                    .with("state", "requested"),
            ),
            MigrationEvent::SourcePurged { at } => Some(AuditEvent::new(
                *at,
                "system",
                audit::MIGRATION_PURGE_SOURCE,
                stack,
            )),
            _ => None,
        };
        if let Some(a) = audit_event {
            self.audit(
                a.with("migration", id.to_string())
                    .with("source", spec.source.to_string())
                    .with("target", spec.target.to_string()),
            )
            .await;
        }
        if matches!(
            event,
            MigrationEvent::Committed { .. } | MigrationEvent::RolledBack { .. }
        ) {
            self.reconcile_stack_record(m).await?;
        }
        Ok(())
    }

    /// Keep the stack record pointing at the host the stack runs on (idempotent).
    async fn reconcile_stack_record(&self, m: &Migration) -> Result<(), DriveError> {
        let spec = m.spec();
        let (host, action) = match m.phase() {
            Phase::Committed | Phase::Purging | Phase::Purged => (&spec.target, "migrate-in"),
            Phase::RolledBack => (&spec.source, "rollback"),
            _ => return Ok(()),
        };
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
        self.store
            .put_stack(&rec)
            .await
            .map_err(Self::store_err(spec.id))?;
        self.store
            .append_deploy(&DeployRecord {
                stack: spec.stack.clone(),
                at: now,
                host: host.clone(),
                action: action.into(),
                actor: spec.requested_by.clone(),
            })
            .await
            .map_err(Self::store_err(spec.id))?;
        Ok(())
    }

    async fn audit(&self, event: AuditEvent) {
        // The audit log is a record, not a gate: a failure to write it must not strand a
        // migration half-way. It is reported through tracing by the store adapter.
        let _ = self.store.append_audit(&event).await;
    }

    fn emit(&self, e: ProgressEvent) {
        if let Some(p) = &self.progress {
            p(e);
        }
    }

    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError> {
        self.fleet.host(id).await
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

    async fn stack_files(&self, m: &Migration) -> Result<StackFiles, String> {
        let spec = m.spec();
        if let Ok(Some(StackRecord { compose, env, .. })) = self.store.get_stack(&spec.stack).await
        {
            return Ok(StackFiles {
                name: spec.stack.clone(),
                compose,
                env,
            });
        }
        let source = self.host(&spec.source).await.map_err(|e| e.to_string())?;
        source
            .read_stack_files(&spec.stack)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the files of stack {} are not known", spec.stack))
    }

    /// Run one command; forward-step failures become `StepFailed` events, failures during
    /// compensation, rollback or purge are returned for a later retry.
    pub(super) async fn execute(
        &self,
        m: &Migration,
        cmd: Command,
    ) -> Result<MigrationEvent, DriveError> {
        let spec = m.spec().clone();
        let now = || self.clock.now();
        let fail = |step: Step, reason: String| MigrationEvent::StepFailed {
            at: self.clock.now(),
            step,
            reason,
        };
        let retry = |what: &str| {
            let id = spec.id.to_string();
            let what = what.to_owned();
            move |source: RuntimeError| DriveError::Retry { id, what, source }
        };
        Ok(match cmd {
            Command::RunPreflight => {
                let (source, source_err) = self.snapshot_of(&spec.source).await;
                let (target, target_err) = self.snapshot_of(&spec.target).await;
                let active: Vec<ActiveMigration> = self
                    .store
                    .list_migrations(true)
                    .await
                    .map_err(Self::store_err(spec.id))?
                    .into_iter()
                    .map(|s| ActiveMigration {
                        id: s.spec.id,
                        stack: s.spec.stack,
                    })
                    .collect();
                let mut report = preflight::run(&PreflightInput {
                    migration: Some(spec.id),
                    stack: &spec.stack,
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
                    fail(Step::Preflight, report.failure_summary())
                }
            }
            Command::StopSource => match self.host(&spec.source).await {
                Ok(h) => match h.stop_stack(&spec.stack).await {
                    Ok(()) => MigrationEvent::SourceStopped { at: now() },
                    Err(e) => fail(Step::StopSource, e.to_string()),
                },
                Err(e) => fail(Step::StopSource, e.to_string()),
            },
            Command::BeginVolume(v) => MigrationEvent::VolumeTransferStarted {
                at: now(),
                volume: v.name,
            },
            Command::TransferVolume(v) => match self.transfer(&spec, &v).await {
                Ok((bytes, digest)) => MigrationEvent::VolumeVerified {
                    at: now(),
                    volume: v.name,
                    bytes,
                    digest,
                },
                Err(reason) => fail(Step::TransferVolumes, reason),
            },
            Command::ShipFiles => {
                let res = async {
                    let files = self.stack_files(m).await?;
                    let t = self.host(&spec.target).await.map_err(|e| e.to_string())?;
                    t.write_stack_files(&files).await.map_err(|e| e.to_string())
                }
                .await;
                match res {
                    Ok(()) => MigrationEvent::FilesShipped { at: now() },
                    Err(e) => fail(Step::ShipFiles, e),
                }
            }
            Command::StartTarget => {
                let res = async {
                    let t = self.host(&spec.target).await.map_err(|e| e.to_string())?;
                    let files = t
                        .read_stack_files(&spec.stack)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("the shipped files are missing on the target")?;
                    t.deploy(&files).await.map_err(|e| e.to_string())
                }
                .await;
                match res {
                    Ok(_) => MigrationEvent::TargetStarted { at: now() },
                    Err(e) => fail(Step::StartTarget, e),
                }
            }
            Command::CheckTargetHealth => {
                let res = match self.host(&spec.target).await {
                    Ok(t) => t.wait_healthy(&spec.stack).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(r) if r.healthy() => MigrationEvent::TargetHealthy { at: now() },
                    Ok(r) => fail(Step::TargetHealth, r.failure_summary()),
                    Err(e) => fail(Step::TargetHealth, e.to_string()),
                }
            }
            Command::Commit => {
                let at = now();
                MigrationEvent::Committed {
                    at,
                    retain_until: at + spec.retention,
                }
            }
            Command::CleanTarget { volumes } => {
                let t = self
                    .host(&spec.target)
                    .await
                    .map_err(retry("cleaning the target"))?;
                t.remove_stack(&spec.stack, true)
                    .await
                    .map_err(retry("removing the stack from the target"))?;
                for v in &volumes {
                    t.remove_volume(v)
                        .await
                        .map_err(retry("removing a volume from the target"))?;
                }
                t.remove_stack_files(&spec.stack)
                    .await
                    .map_err(retry("removing the files from the target"))?;
                MigrationEvent::TargetCleaned { at: now() }
            }
            Command::RestartSource => {
                let s = self
                    .host(&spec.source)
                    .await
                    .map_err(retry("restarting the source"))?;
                s.start_stack(&spec.stack)
                    .await
                    .map_err(retry("restarting the source"))?;
                MigrationEvent::SourceRestarted { at: now() }
            }
            Command::FinishFailed => MigrationEvent::Failed { at: now() },
            Command::StopTarget => {
                let t = self
                    .host(&spec.target)
                    .await
                    .map_err(retry("stopping the target"))?;
                t.stop_stack(&spec.stack)
                    .await
                    .map_err(retry("stopping the target"))?;
                MigrationEvent::TargetStopped { at: now() }
            }
            Command::FinishRollback => MigrationEvent::RolledBack { at: now() },
            Command::PurgeSource { volumes } => {
                let s = self
                    .host(&spec.source)
                    .await
                    .map_err(retry("purging the source"))?;
                s.remove_stack(&spec.stack, true)
                    .await
                    .map_err(retry("removing the stack from the source"))?;
                for v in &volumes {
                    s.remove_volume(v)
                        .await
                        .map_err(retry("removing a volume from the source"))?;
                }
                s.remove_stack_files(&spec.stack)
                    .await
                    .map_err(retry("removing the files from the source"))?;
                MigrationEvent::SourcePurged { at: now() }
            }
        })
    }

    /// Stream one volume from the source to the target and compare manifests.
    async fn transfer(
        &self,
        spec: &MigrationSpec,
        v: &VolumeUsage,
    ) -> Result<(u64, String), String> {
        let source = self.host(&spec.source).await.map_err(|e| e.to_string())?;
        let target = self.host(&spec.target).await.map_err(|e| e.to_string())?;
        let export = source
            .export_volume(&v.name)
            .await
            .map_err(|e| format!("exporting volume {}: {e}", v.name))?;
        let progress: Progress = {
            let emit = self.progress.clone();
            let (id, volume, total) = (spec.id, v.name.clone(), v.bytes);
            Arc::new(move |bytes| {
                if let Some(p) = &emit {
                    p(ProgressEvent::VolumeBytes {
                        id,
                        volume: volume.clone(),
                        bytes,
                        total,
                    });
                }
            })
        };
        let imported = target
            .import_volume(
                &VolumeTarget {
                    name: v.name.clone(),
                    labels: v.labels.clone(),
                    expected_bytes: v.bytes,
                },
                export.stream,
                progress,
            )
            .await
            .map_err(|e| format!("importing volume {}: {e}", v.name))?;
        let exported = export
            .manifest
            .take()
            .map_err(|e| format!("exporting volume {}: {e}", v.name))?;
        if let Some(diff) = exported.first_difference(&imported) {
            return Err(format!(
                "volume {} failed verification on the target: {diff}",
                v.name
            ));
        }
        Ok((exported.content_bytes(), exported.digest()))
    }
}
