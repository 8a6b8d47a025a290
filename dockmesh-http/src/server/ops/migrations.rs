//! Migrations: pre-flight, start, list, show, rollback, purge of the retained source and of
//! a rolled-back copy on the target.

use super::OpError;
use super::hosts::named_runtime;
use super::stacks::{load as load_stack, no_active_migration};
use super::timeline::{TimelineView, millis};
use crate::server::api::health::wire_name;
use crate::server::state::ServerState;
use dockmesh_core::MigrationId;
use dockmesh_core::migration::{
    Migration, MigrationEvent, MigrationRequest, StoredMigration, Timeline, command_words,
};
use dockmesh_core::ports::MigrationQuery;
use dockmesh_core::preflight::PreflightReport;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Where to move a stack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The target host's id.
    #[schema(min_length = 1)]
    pub target_host_id: String,
}

/// One volume of a migration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VolumeView {
    /// The volume's name.
    pub name: String,
    /// Its size on the source when the migration began, when known.
    pub size_bytes: Option<u64>,
    /// Bytes received by the target so far (during a transfer) or verified (after).
    pub bytes_done: u64,
    /// Whether the target's copy was verified identical to the source's.
    pub verified: bool,
    /// Bytes of the volume's stream sent to the target again after its transfer was cut
    /// (counted by this server process since it started).
    pub bytes_resent: u64,
    /// The byte of the stream the last cut transfer went on from, when it went on from where
    /// the target's import waited rather than from the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<u64>,
}

/// One recorded event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// When.
    pub at: Timestamp,
    /// What (`preflight_passed`, `source_stopped`, `volume_verified`, …).
    pub kind: String,
    /// The event as recorded.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// What failed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FailureView {
    /// The step.
    pub step: String,
    /// Why.
    pub reason: String,
}

/// A migration as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MigrationView {
    /// Its id.
    pub id: String,
    /// The stack it moves.
    pub stack: String,
    /// Where the stack ran.
    pub source: String,
    /// Where it goes.
    pub target: String,
    /// Where it stands (`requested`, `source_stopped`, `committed`, `failed`, …).
    pub state: String,
    /// True when nothing more happens without an operator (or ever).
    pub settled: bool,
    /// What runs next, in words, while it is not settled.
    pub step: Option<String>,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// Who asked.
    pub requested_by: String,
    /// When its last event was recorded.
    pub updated_at: Timestamp,
    /// The volumes it moves.
    pub volumes: Vec<VolumeView>,
    /// Why it failed, when it did.
    pub error: Option<FailureView>,
    /// Until when the source is kept for a rollback (committed migrations).
    pub retain_until: Option<Timestamp>,
    /// True once that window has passed: the source is still kept until purged.
    pub retention_expired: bool,
    /// Symbolic links in the moved volumes that point outside them.
    pub outside_links: Vec<String>,
    /// The pre-flight report, once pre-flight passed.
    #[schema(value_type = Option<Object>)]
    pub preflight: Option<PreflightReport>,
    /// How long the stack ran nowhere, in milliseconds: from `source_stopped` to
    /// `target_healthy` (or to `source_restarted` after a failure); `null` before the source
    /// stopped and while the stack is still down.
    #[serde(default)]
    pub downtime_ms: Option<u64>,
    /// Its steps with their durations and its downtime window (in `GET
    /// /api/v1/migrations/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineView>,
    /// The event log, oldest first (in `GET /api/v1/migrations/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
}

fn view(state: &ServerState, stored: StoredMigration, with_events: bool) -> MigrationView {
    let spec = stored.spec.clone();
    let events = stored.events;
    let m = match Migration::replay(spec.clone(), &events) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::error!(migration = %spec.id, error = %e, "stored migration does not replay");
            None
        }
    };
    let progress = state.supervisor().progress(spec.id);
    let mut verified_bytes = std::collections::BTreeMap::new();
    let mut preflight = None;
    for e in &events {
        match e {
            MigrationEvent::VolumeVerified { volume, bytes, .. } => {
                verified_bytes.insert(volume.clone(), *bytes);
            }
            MigrationEvent::PreflightPassed { report, .. } => preflight = Some(report.clone()),
            _ => {}
        }
    }
    let now = state.clock().now();
    let (state_name, settled, step, volumes, error, retain_until, outside_links) = match &m {
        Some(m) => {
            let verified = m.verified_volumes();
            let volumes = m
                .volumes()
                .iter()
                .map(|v| VolumeView {
                    name: v.name.clone(),
                    size_bytes: v.bytes,
                    bytes_done: verified_bytes
                        .get(&v.name)
                        .copied()
                        .or_else(|| progress.get(&v.name).map(|p| p.bytes))
                        .unwrap_or(0),
                    verified: verified.contains(&v.name),
                    bytes_resent: progress.get(&v.name).map_or(0, |p| p.resent),
                    resumed_from: progress.get(&v.name).and_then(|p| p.resumed_from),
                })
                .collect();
            (
                wire_name(m.phase()),
                m.phase().is_settled(),
                m.next_command().map(|c| command_words(&c).to_owned()),
                volumes,
                m.failure().map(|f| FailureView {
                    step: wire_name(f.step),
                    reason: f.reason.clone(),
                }),
                m.retain_until(),
                m.outside_links().to_vec(),
            )
        }
        None => (
            "unreadable".to_owned(),
            false,
            None,
            vec![],
            None,
            None,
            vec![],
        ),
    };
    let settled_committed = state_name == "committed";
    let timeline = Timeline::of(spec.requested_at, &events, now);
    MigrationView {
        id: spec.id.to_string(),
        stack: spec.stack,
        source: spec.source.0,
        target: spec.target.0,
        settled,
        step,
        requested_at: spec.requested_at,
        requested_by: spec.requested_by,
        updated_at: events.last().map(|e| e.at()).unwrap_or(spec.requested_at),
        volumes,
        error,
        retention_expired: settled_committed && retain_until.is_some_and(|t| t <= now),
        retain_until,
        outside_links,
        preflight,
        downtime_ms: timeline.downtime().map(millis),
        timeline: with_events.then(|| TimelineView::from(&timeline)),
        events: with_events.then(|| {
            events
                .iter()
                .map(|e| EventView {
                    at: e.at(),
                    kind: e.kind().to_owned(),
                    detail: serde_json::to_value(e).unwrap_or_default(),
                })
                .collect()
        }),
        state: state_name,
    }
}

fn parse_id(id: &str) -> Result<MigrationId, OpError> {
    uuid::Uuid::parse_str(id)
        .map(MigrationId)
        .map_err(|e| OpError::bad_request(format!("id: {id:?} is not a migration id ({e})")))
}

async fn load(state: &ServerState, id: MigrationId) -> Result<StoredMigration, OpError> {
    state
        .store()
        .load_migration(id)
        .await?
        .ok_or_else(|| OpError::not_found(format!("migration {id} is not known")))
}

/// The target of a request, refused when unknown, cordoned or the stack's own host.
async fn target_of(
    state: &ServerState,
    name: &str,
    req: &MigrateRequest,
) -> Result<dockmesh_core::HostId, OpError> {
    if req.target_host_id.is_empty() {
        return Err(OpError::bad_request(
            "target_host_id: the target host is empty",
        ));
    }
    let (target, _) = named_runtime(state, &req.target_host_id)?;
    load_stack(state, name).await?;
    if state.hosts().is_cordoned(&target) {
        return Err(
            OpError::conflict(format!("host {target} is cordoned and takes no stacks"))
                .with_hint("uncordon it first, or choose another host"),
        );
    }
    Ok(target)
}

/// The pre-flight report of moving stack `name` to the host `req` names; nothing changes.
pub async fn preflight(
    state: &ServerState,
    name: &str,
    req: &MigrateRequest,
) -> Result<PreflightReport, OpError> {
    let target = target_of(state, name, req).await?;
    let mut report = state.supervisor().driver().preflight(name, &target).await?;
    report
        .checks
        .extend(crate::server::host_policy::preflight_check(state, name, &target).await?);
    Ok(report)
}

/// Move stack `name` with its data to the host `req` names, as `by`. Pre-flight runs first: a
/// failing check is refused ([`super::OpErrorKind::PreflightFailed`], the report in the
/// details) and nothing changes. Otherwise the migration is recorded and driven in the
/// background.
pub async fn migrate(
    state: &ServerState,
    name: &str,
    req: &MigrateRequest,
    by: &str,
) -> Result<MigrationView, OpError> {
    let target = target_of(state, name, req).await?;
    let _guard = state.lock_stack(name).await;
    no_active_migration(state, name).await?;
    let driver = state.supervisor().driver();
    let mut report = driver.preflight(name, &target).await?;
    report
        .checks
        .extend(crate::server::host_policy::preflight_check(state, name, &target).await?);
    if !report.passed() {
        let details = serde_json::to_value(&report).unwrap_or_default();
        return Err(OpError::new(
            super::OpErrorKind::PreflightFailed,
            format!(
                "pre-flight refused moving {name} to {target}: {}",
                report.failure_summary()
            ),
        )
        .with_hint(if report.failures().any(|c| c.name == "target_free") {
            "nothing changed; a copy left on the target by a rolled-back migration is removed with `dockmesh migration purge-target ID`"
        } else {
            "nothing changed; fix what the report names and ask again"
        })
        .with_details(details));
    }
    let id = driver
        .start(MigrationRequest {
            stack: name.to_owned(),
            target,
            by: by.to_owned(),
            retention: state.config().retention,
        })
        .await?;
    state.supervisor().drive(id);
    let stored = load(state, id).await?;
    Ok(view(state, stored, false))
}

/// Filters of the migration list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Only migrations in progress (rollbacks and purges included).
    #[serde(default)]
    pub active: bool,
    /// Only this stack's.
    pub stack: Option<String>,
    /// The page after this migration id (newest first).
    #[param(format = Uuid)]
    pub after: Option<String>,
    /// At most this many (default 100; 0 means the default; above 1000 is refused).
    #[serde(default)]
    #[param(maximum = 1000)]
    pub limit: u32,
}

/// Migrations, newest first, filtered by `q`.
pub async fn list(state: &ServerState, q: ListQuery) -> Result<Vec<MigrationView>, OpError> {
    super::check_limit(q.limit)?;
    let after = q.after.as_deref().map(parse_id).transpose()?;
    let list = state
        .store()
        .list_migrations(&MigrationQuery {
            active_only: q.active,
            stack: q.stack,
            after,
            limit: q.limit,
        })
        .await?;
    Ok(list.into_iter().map(|s| view(state, s, false)).collect())
}

/// One migration with its event log.
pub async fn get(state: &ServerState, id: &str) -> Result<MigrationView, OpError> {
    let id = parse_id(id)?;
    Ok(view(state, load(state, id).await?, true))
}

/// Roll committed migration `id` back, as `by`: the stack runs on its source again, with the
/// data it had when it left. Only inside the retention window and before a purge.
pub async fn rollback(state: &ServerState, id: &str, by: &str) -> Result<MigrationView, OpError> {
    let id = parse_id(id)?;
    let stack = load(state, id).await?.spec.stack;
    let _guard = state.lock_stack(&stack).await;
    state.supervisor().driver().request_rollback(id, by).await?;
    state.supervisor().drive(id);
    Ok(view(state, load(state, id).await?, false))
}

/// Delete the source committed migration `id` of stack `name` retained, as `by`: its
/// containers, volumes and files on the source host. A rollback is impossible afterwards.
pub async fn purge_source(
    state: &ServerState,
    name: &str,
    id: &str,
    by: &str,
) -> Result<MigrationView, OpError> {
    let id = parse_id(id)?;
    let stored = load(state, id).await?;
    if stored.spec.stack != name {
        return Err(OpError::not_found(format!(
            "migration {id} moved stack {}, not {name}",
            stored.spec.stack
        )));
    }
    let _guard = state.lock_stack(name).await;
    state.supervisor().driver().request_purge(id, by).await?;
    state.supervisor().drive(id);
    Ok(view(state, load(state, id).await?, false))
}

/// Delete the stopped copy rolled-back migration `id` left on its target, as `by`
/// (containers, volumes and files there), so that the stack can be moved to that host again.
/// Refused unless the migration is rolled back, no migration of the stack is in progress, and
/// the stack does not run on that host. Audited before anything is deleted.
pub async fn purge_target(
    state: &ServerState,
    id: &str,
    by: &str,
) -> Result<MigrationView, OpError> {
    let id = parse_id(id)?;
    let stored = load(state, id).await?;
    let spec = stored.spec.clone();
    let _guard = state.lock_stack(&spec.stack).await;
    let m = Migration::replay(spec.clone(), &stored.events)
        .map_err(|e| OpError::internal(e.to_string()))?;
    if m.phase() != dockmesh_core::migration::Phase::RolledBack {
        return Err(OpError::conflict(format!(
            "migration {id} is {}; only a rolled-back migration's target copy can be purged",
            wire_name(m.phase())
        )));
    }
    let active = state
        .store()
        .list_migrations(&MigrationQuery {
            active_only: true,
            stack: Some(spec.stack.clone()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    if let Some(a) = active.first() {
        return Err(OpError::conflict(format!(
            "migration {} of stack {} is in progress",
            a.spec.id, spec.stack
        )));
    }
    let record = load_stack(state, &spec.stack).await?;
    if record.host.as_ref() == Some(&spec.target) {
        return Err(OpError::conflict(format!(
            "stack {} runs on {} now; that is not a leftover copy",
            spec.stack, spec.target
        )));
    }
    let host = state.hosts().get(&spec.target).ok_or_else(|| {
        OpError::not_found(format!("host {} is not known to this server", spec.target))
    })?;
    let status = host.stack_status(&spec.stack).await?;
    if status.any_running() {
        return Err(OpError::conflict(format!(
            "stack {} has running containers on {}; nothing was deleted",
            spec.stack, spec.target
        )));
    }
    let event = dockmesh_core::audit::AuditEvent::new(
        state.clock().now(),
        by,
        "migration.purge_target",
        &spec.stack,
    )
    .with("migration", id.to_string())
    .with("target", spec.target.to_string())
    .with(
        "volumes",
        m.volumes()
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    state.store().append_audit(&event).await?;
    host.remove_stack(&spec.stack, true).await?;
    for v in m.volumes() {
        host.remove_volume(&v.name).await?;
    }
    host.remove_stack_files(&spec.stack).await?;
    tracing::info!(migration = %id, stack = %spec.stack, host = %spec.target, "rolled-back copy removed from the target");
    Ok(view(state, stored, false))
}
