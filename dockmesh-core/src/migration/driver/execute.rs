//! The executors: what each command does through the hosts, and the pre-flight checks.

use super::{DriveError, Driver};
use crate::migration::event::{MigrationEvent, Step};
use crate::migration::machine::{Command, Migration};
use crate::ports::{MAX_PAGE, MigrationQuery, RuntimeError, RuntimeErrorKind};
use crate::preflight::{self, ActiveMigration, PreflightInput, PreflightReport};
use crate::records::StackRecord;
use crate::snapshot::HostSnapshot;
use crate::types::{HostId, MigrationId, StackFiles};

impl Driver {
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
    pub(in crate::migration) async fn execute(
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
}
