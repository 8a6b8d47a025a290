//! Stack release upgrades, over the ports: diff, images, optional volume backup, replace,
//! health, and the previous release put back by itself when the new one fails.
//!
//! 1. Both releases are resolved by the stack's host ([`HostReleases::resolve_release`](dockmesh_core::ports::HostReleases::resolve_release)) and
//!    compared ([`release::diff`]); a dry run stops here.
//! 2. Every image the new release needs must be on the host ([`HostReleases::ensure_images`](dockmesh_core::ports::HostReleases::ensure_images)
//!    pulls when a registry answers); a missing one is named before anything stops.
//! 3. With a backup, the stack is stopped and each named volume is copied through the volume
//!    export path into a backup volume on the same host (`<volume>-backup-r<rev>`); the copy's
//!    manifest must equal the export's. A failure removes the copies, starts the stack again and
//!    changes nothing else.
//! 4. The new files are deployed: only changed services are replaced, named volumes are kept.
//!    Then every service must become healthy.
//! 5. On any failure of step 4: with a backup, the stack's containers are removed (a volume in
//!    use cannot be filled again) and each volume is filled again from its copy (verified the
//!    same way); the previous files are deployed and must become healthy. The release is recorded as rolled back (or failed, when putting the
//!    previous one back failed too, with what failed).
//!
//! The upgrade is a persisted run ([`dockmesh_core::stack_upgrade`]): stored before step 3 and
//! again after each step, so a server killed mid-upgrade finishes it on its next start
//! ([`resume_all`]: once the stack's host answers, from the stored stage). Every outcome is
//! recorded as a [`ReleaseRecord`] with the stack's record, a deploy history entry and the audit
//! entry in one store transaction, which also ends the run.

use crate::server::api::stacks::{load_stack, no_active_migration};
use crate::server::error::ApiError;
use crate::server::state::ServerState;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    ExportRequest, HostRuntime, ImportRequest, RuntimeError, RuntimeErrorKind, StoreError,
    VolumeTarget, cannot, no_progress,
};
use dockmesh_core::records::{DeployRecord, StackRecord};
use dockmesh_core::release::{self, ReleaseDiff, ReleaseOutcome, ReleaseRecord, ServiceShape};
use dockmesh_core::snapshot::VolumeUsage;
use dockmesh_core::stack_upgrade::{BackupCopy, Settled, StackUpgradeRun, StageError, UpgradeStep};
use dockmesh_core::types::{HostId, StackFiles};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use utoipa::ToSchema;

/// What an upgrade (or a rollback to an earlier release) did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeView {
    /// The stack.
    pub stack: String,
    /// Its host.
    pub host: String,
    /// What the new release changes against the one that runs.
    #[schema(value_type = Object)]
    pub diff: ReleaseDiff,
    /// True when only the diff was asked for: nothing was changed.
    pub dry_run: bool,
    /// The revision recorded for this release (none for a dry run).
    pub rev: Option<u64>,
    /// `deployed`, `rolled_back` or `failed` (none for a dry run).
    #[schema(value_type = Option<String>)]
    pub outcome: Option<ReleaseOutcome>,
    /// Why the release failed, and what putting the previous one back did.
    pub detail: Option<String>,
    /// The backup volumes taken before the release (volume → backup volume).
    pub backups: BTreeMap<String, String>,
    /// The volumes filled again from their backup when the release was rolled back.
    pub restored: Vec<String>,
}

/// One upgrade to run.
pub(crate) struct Upgrade {
    /// The new files.
    pub files: StackFiles,
    /// Stop after the diff.
    pub dry_run: bool,
    /// Copy the named volumes first, and restore them on failure.
    pub backup: bool,
    /// `upgrade` or `rollback` (deploy history action, audit detail).
    pub action: &'static str,
    /// For a rollback: the revision whose files are deployed again.
    pub from_rev: Option<u64>,
    /// Who asked.
    pub actor: String,
}

fn context(what: &str, e: RuntimeError) -> RuntimeError {
    RuntimeError::new(e.kind, format!("{what}: {}", e.message))
}

/// Run an upgrade of stack `name`. The caller holds the stack's lock.
pub(crate) async fn run(
    state: &ServerState,
    name: &str,
    up: Upgrade,
) -> Result<UpgradeView, ApiError> {
    let record = load_stack(state, name).await?;
    let host_id = record.host.clone().ok_or_else(|| {
        ApiError::conflict(format!("stack {name} is not deployed on any host"))
            .with_hint("deploy it first: `dockmesh stack deploy NAME --file F --host H`")
    })?;
    no_active_migration(state, name).await?;
    let host = state.hosts().get(&host_id).ok_or_else(|| {
        ApiError::conflict(format!(
            "stack {name} is recorded on host {host_id}, which this server does not know; nothing was changed"
        ))
    })?;
    if up.files.compose.trim().is_empty() {
        return Err(ApiError::bad_request("compose: the compose file is empty"));
    }
    state.config().host_policies.check(&host_id, &up.files)?;
    let previous = StackFiles {
        name: name.to_owned(),
        compose: record.compose.clone(),
        env: record.env.clone(),
    };
    let releases = host.releases().ok_or_else(|| {
        let e = cannot::resolve_release(&host_id, &previous.name);
        context("the running release cannot be read", e)
    })?;
    let current = releases
        .resolve_release(&previous)
        .await
        .map_err(|e| context("the running release cannot be read", e))?;
    let mut next = releases.resolve_release(&up.files).await?;
    let diff = release::diff(&current, &next);
    let mut view = UpgradeView {
        stack: name.to_owned(),
        host: host_id.to_string(),
        diff,
        dry_run: up.dry_run,
        rev: None,
        outcome: None,
        detail: None,
        backups: BTreeMap::new(),
        restored: Vec::new(),
    };
    if up.dry_run {
        return Ok(view);
    }
    let missing: BTreeSet<String> = next
        .iter()
        .filter(|s| s.image_id.is_none())
        .map(|s| s.image.clone())
        .collect();
    if !missing.is_empty() {
        releases
            .ensure_images(&missing.into_iter().collect::<Vec<_>>())
            .await?;
        next = releases.resolve_release(&up.files).await?;
    }
    let rev = release::next_rev(&state.store().list_releases(name).await?);
    let volumes = if up.backup {
        stack_volumes(host.as_ref(), name).await?
    } else {
        Vec::new()
    };
    let run = StackUpgradeRun::start(
        name,
        rev,
        host_id,
        previous,
        up.files,
        image_ids(&next),
        volumes,
        &up.actor,
        up.action,
        up.from_rev,
        state.clock().now(),
    );
    state
        .store()
        .begin_stack_upgrade(&run)
        .await
        .map_err(|e| match e {
            StoreError::Conflict { .. } => ApiError::conflict(format!(
                "stack {name} has an upgrade that has not finished; nothing was changed"
            ))
            .with_hint("the server finishes it (after a restart, once the stack's host answers): try again then"),
            e => e.into(),
        })?;
    let (run, settled) = drive(state, host.as_ref(), run).await?;
    view.backups = run
        .backups()
        .iter()
        .map(|b| (b.volume.name.clone(), b.copy.clone()))
        .collect();
    view.restored = run.restored().to_vec();
    view.detail = settled.release.detail.clone();
    view.rev = Some(run.rev);
    view.outcome = Some(settled.release.outcome);
    Ok(view)
}

/// Take the steps of `run` from its stored stage to the end, storing each stage before the next
/// step, then settle it. A backup that fails is undone and the run dropped: the error says so.
async fn drive(
    state: &ServerState,
    host: &dyn HostRuntime,
    mut run: StackUpgradeRun,
) -> Result<(StackUpgradeRun, Settled), ApiError> {
    // The copies' manifests, for a detailed difference when a restore reads back otherwise
    // (after a restart only their digests are known).
    let mut manifests: BTreeMap<String, VolumeManifest> = BTreeMap::new();
    loop {
        run = match run.next() {
            UpgradeStep::BackUp => match back_up(host, &run.stack, run.rev, &run.backup).await {
                Ok(done) => {
                    let copies = done
                        .into_iter()
                        .map(|(copy, manifest)| {
                            manifests.insert(copy.copy.clone(), manifest);
                            copy
                        })
                        .collect();
                    run.backed_up(copies).map_err(stage_error)?
                }
                Err(e) => {
                    state.store().drop_stack_upgrade(&run.stack).await?;
                    return Err(e);
                }
            },
            UpgradeStep::Deploy => {
                let result = apply(host, &run.next).await;
                run.deploy_ended(result).map_err(stage_error)?
            }
            UpgradeStep::PutBack { .. } => {
                let (restored, problems) =
                    put_back(host, &run.stack, &run.previous, run.backups(), &manifests).await;
                run.put_back_ended(restored, problems)
                    .map_err(stage_error)?
            }
            UpgradeStep::Settle { .. } => {
                let current = load_stack(state, &run.stack).await?;
                let settled = run.settled(&current, state.clock().now()).ok_or_else(|| {
                    ApiError::internal("a settled stack upgrade has nothing to store")
                })?;
                state.store().settle_stack_upgrade(&settled).await?;
                return Ok((run, settled));
            }
        };
        state.store().save_stack_upgrade(&run).await?;
        tracing::info!(stack = %run.stack, rev = run.rev, stage = run.stage.word(), "stack upgrade");
    }
}

fn stage_error(e: StageError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Finish every stack upgrade a stopped server left unfinished. Each stack is locked now,
/// before requests are answered; each run goes on in the background once its host answers.
pub async fn resume_all(state: &ServerState) -> Result<usize, StoreError> {
    let runs = state.store().unfinished_stack_upgrades().await?;
    let n = runs.len();
    for run in runs {
        let guard = state.lock_stack(&run.stack).await;
        let state = state.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let (stack, rev, stage) = (run.stack.clone(), run.rev, run.stage.word());
            tracing::info!(%stack, rev, stage, "resuming a stack upgrade");
            let host = wait_for_host(&state, &run.host, &stack).await;
            match drive(&state, host.as_ref(), run).await {
                Ok((_, settled)) => tracing::info!(
                    %stack,
                    rev,
                    outcome = %settled.release.outcome,
                    "a resumed stack upgrade ended"
                ),
                Err(e) => {
                    tracing::error!(%stack, rev, error = %e.body.error, "a resumed stack upgrade failed; it is tried again on the next start")
                }
            }
        });
    }
    Ok(n)
}

/// The host `id` once it is known and answers (an agent connects after the server starts).
async fn wait_for_host(state: &ServerState, id: &HostId, stack: &str) -> Arc<dyn HostRuntime> {
    let mut warned = false;
    loop {
        if let Some(host) = state.hosts().get(id)
            && host.snapshot().await.is_ok()
        {
            return host;
        }
        if !warned {
            tracing::warn!(%stack, host = %id, "the stack upgrade waits for its host to answer");
            warned = true;
        }
        tokio::time::sleep(HOST_WAIT).await;
    }
}

/// How often a resumed stack upgrade asks again for its host.
const HOST_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Record a first deploy (or a deploy again of the same files) as a release.
pub(crate) async fn record_deploy(
    state: &ServerState,
    host: &Arc<dyn HostRuntime>,
    host_id: &HostId,
    record: &StackRecord,
    deploy: &DeployRecord,
) -> Result<(), ApiError> {
    let files = StackFiles {
        name: record.name.clone(),
        compose: record.compose.clone(),
        env: record.env.clone(),
    };
    // A host that cannot resolve releases still deploys; its release has no image ids.
    let resolved = match host.releases() {
        Some(releases) => releases.resolve_release(&files).await,
        None => Err(cannot::resolve_release(host_id, &files.name)),
    };
    let images = match resolved {
        Ok(shapes) => image_ids(&shapes),
        Err(e) => {
            tracing::warn!(stack = %record.name, error = %e, "the image ids of a release are unknown");
            BTreeMap::new()
        }
    };
    let rev = release::next_rev(&state.store().list_releases(&record.name).await?);
    let release = ReleaseRecord {
        stack: record.name.clone(),
        rev,
        at: deploy.at,
        host: host_id.clone(),
        compose: record.compose.clone(),
        env: record.env.clone(),
        images,
        outcome: ReleaseOutcome::Deployed,
        detail: None,
        from_rev: None,
        actor: deploy.actor.clone(),
    };
    state
        .store()
        .put_release(&release, record, Some(deploy))
        .await?;
    Ok(())
}

fn image_ids(shapes: &[ServiceShape]) -> BTreeMap<String, String> {
    shapes
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.image_id.clone()?)))
        .collect()
}

/// Write and deploy `files`, then wait until every service is healthy.
async fn apply(host: &dyn HostRuntime, files: &StackFiles) -> Result<(), String> {
    host.write_stack_files(files)
        .await
        .map_err(|e| format!("writing the files: {e}"))?;
    host.deploy(files).await.map_err(|e| e.to_string())?;
    let health = host
        .wait_healthy(&files.name)
        .await
        .map_err(|e| format!("waiting for health: {e}"))?;
    if !health.healthy() {
        return Err(format!(
            "the release did not become healthy: {}",
            health.failure_summary()
        ));
    }
    Ok(())
}

/// The stack's named volumes on its host.
async fn stack_volumes(host: &dyn HostRuntime, name: &str) -> Result<Vec<VolumeUsage>, ApiError> {
    let mut snapshot = host.snapshot().await?;
    Ok(snapshot
        .stacks
        .remove(name)
        .map(|s| s.volumes)
        .unwrap_or_default())
}

/// Label of a backup volume: the volume it copies.
pub const BACKUP_OF: &str = "com.dockmesh.backup.of";
/// Label of a backup volume: the stack.
pub const BACKUP_STACK: &str = "com.dockmesh.backup.stack";
/// Label of a backup volume: the release it was taken before.
pub const BACKUP_REV: &str = "com.dockmesh.backup.rev";

/// The name of the copy of `volume` taken before release `rev`.
pub fn backup_name(volume: &str, rev: u64) -> String {
    format!("{volume}-backup-r{rev}")
}

/// Copy `from` into the volume `to` through the export path; the copy's manifest must equal
/// the export's.
async fn copy_volume(
    host: &dyn HostRuntime,
    from: &str,
    to: &VolumeTarget,
) -> Result<VolumeManifest, RuntimeError> {
    let export = host.export_volume(&ExportRequest::new(from)).await?;
    let into = ImportRequest::new(to.clone());
    let imported = host
        .import_volume(&into, export.stream, no_progress())
        .await?;
    let exported = export.manifest.take()?;
    if let Some(diff) = exported.first_difference(&imported) {
        return Err(RuntimeError::new(
            RuntimeErrorKind::Integrity,
            format!("the copy of volume {from} into {} differs: {diff}", to.name),
        ));
    }
    Ok(exported)
}

/// Stop the stack and copy each volume (a copy of the same name left by an interrupted backup
/// is removed first), with each copy's manifest; on failure remove the copies made, start the
/// stack again, and return the error.
async fn back_up(
    host: &dyn HostRuntime,
    name: &str,
    rev: u64,
    volumes: &[VolumeUsage],
) -> Result<Vec<(BackupCopy, VolumeManifest)>, ApiError> {
    host.stop_stack(name)
        .await
        .map_err(|e| context("stopping the stack for its backup", e))?;
    let mut done: Vec<(BackupCopy, VolumeManifest)> = Vec::new();
    for v in volumes {
        let copy = backup_name(&v.name, rev);
        // Absent unless a backup of this very release was cut short: that copy is redone.
        let _ = host.remove_volume(&copy).await;
        // Not Compose's labels: a copy belongs to no project, so it is neither part of the
        // stack's volumes nor moved or removed with them.
        let target = VolumeTarget {
            name: copy.clone(),
            labels: BTreeMap::from([
                (BACKUP_OF.to_owned(), v.name.clone()),
                (BACKUP_STACK.to_owned(), name.to_owned()),
                (BACKUP_REV.to_owned(), rev.to_string()),
            ]),
            expected_bytes: v.bytes,
        };
        match copy_volume(host, &v.name, &target).await {
            Ok(manifest) => done.push((
                BackupCopy {
                    volume: v.clone(),
                    copy,
                    digest: manifest.digest(),
                },
                manifest,
            )),
            Err(e) => {
                let _ = host.remove_volume(&copy).await;
                for (b, _) in &done {
                    let _ = host.remove_volume(&b.copy).await;
                }
                let restarted = host.start_stack(name).await;
                let mut err: ApiError = context(
                    &format!("backing up volume {} before the upgrade failed", v.name),
                    e,
                )
                .into();
                err = err.with_hint(match restarted {
                    Ok(()) => "nothing was changed: the stack runs its current release again",
                    Err(_) => "the stack's current release is unchanged but stopped: start it with a deploy of the same files",
                });
                return Err(err);
            }
        }
    }
    Ok(done)
}

/// Put the previous release back: volumes from their copies (verified against the backup's
/// manifest: `manifests` by copy name when known, else its digest), then the previous files,
/// healthy. Returns the restored volumes and what failed.
async fn put_back(
    host: &dyn HostRuntime,
    name: &str,
    previous: &StackFiles,
    backups: &[BackupCopy],
    manifests: &BTreeMap<String, VolumeManifest>,
) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut restored = Vec::new();
    if !backups.is_empty() {
        // A volume is filled again only when no container uses it: the stack's containers go
        // (its volumes stay) and the previous release's deploy creates them again.
        if let Err(e) = host.remove_stack(name, false).await {
            problems.push(format!(
                "removing the stack's containers to restore its volumes: {e}"
            ));
        } else {
            for b in backups {
                let target = VolumeTarget {
                    name: b.volume.name.clone(),
                    labels: b.volume.labels.clone(),
                    expected_bytes: None,
                };
                match copy_volume(host, &b.copy, &target).await {
                    Ok(m) => match difference(&m, b, manifests.get(&b.copy)) {
                        None => restored.push(b.volume.name.clone()),
                        Some(diff) => problems.push(format!(
                            "volume {} restored from {} differs from the backup: {diff}",
                            b.volume.name, b.copy
                        )),
                    },
                    Err(e) => problems.push(format!(
                        "restoring volume {} from {}: {e}",
                        b.volume.name, b.copy
                    )),
                }
            }
        }
    }
    if let Err(why) = apply(host, previous).await {
        problems.push(format!("deploying the previous release: {why}"));
    }
    (restored, problems)
}

/// How a restored volume's manifest differs from its backup's, if it does.
fn difference(
    restored: &VolumeManifest,
    backup: &BackupCopy,
    manifest: Option<&VolumeManifest>,
) -> Option<String> {
    match manifest {
        Some(m) => restored.first_difference(m),
        None => {
            let digest = restored.digest();
            (digest != backup.digest).then(|| {
                format!(
                    "its manifest digest is {digest}, the backup's {}",
                    backup.digest
                )
            })
        }
    }
}

/// A release as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseView {
    /// The revision.
    pub rev: u64,
    /// When.
    pub at: jiff::Timestamp,
    /// On which host.
    pub host: String,
    /// `deployed`, `rolled_back` or `failed`.
    #[schema(value_type = String)]
    pub outcome: ReleaseOutcome,
    /// Why it failed.
    pub detail: Option<String>,
    /// The revision it went back to, for a rollback.
    pub from_rev: Option<u64>,
    /// Who deployed it.
    pub actor: String,
    /// Each service's image id.
    pub images: BTreeMap<String, String>,
    /// Whether it is the release that runs now.
    pub current: bool,
}

impl ReleaseView {
    /// The view of each release, newest first, marking the one that runs.
    pub fn list(releases: &[ReleaseRecord]) -> Vec<ReleaseView> {
        let current = release::running(releases).map(|r| r.rev);
        releases
            .iter()
            .map(|r| ReleaseView {
                rev: r.rev,
                at: r.at,
                host: r.host.to_string(),
                outcome: r.outcome,
                detail: r.detail.clone(),
                from_rev: r.from_rev,
                actor: r.actor.clone(),
                images: r.images.clone(),
                current: Some(r.rev) == current,
            })
            .collect()
    }
}

/// Pick the release a rollback deploys again: `to`, or the one before the running one.
pub(crate) fn rollback_target(
    name: &str,
    releases: &[ReleaseRecord],
    to: Option<u64>,
) -> Result<ReleaseRecord, ApiError> {
    let found = match to {
        Some(rev) => releases.iter().find(|r| r.rev == rev).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                format!("stack {name} has no release {rev}"),
            )
            .with_hint("list its releases with `dockmesh stack history NAME`")
        })?,
        None => release::previous(releases).ok_or_else(|| {
            ApiError::conflict(format!(
                "stack {name} has no earlier deployed release to go back to"
            ))
            .with_hint("name one with --to REV (`dockmesh stack history NAME`)")
        })?,
    };
    Ok(found.clone())
}
