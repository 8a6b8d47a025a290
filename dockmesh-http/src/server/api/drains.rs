//! Drains: execute a host's drain plan one stack at a time; follow, pause, resume, abort.

use super::actor;
use super::hosts::{drain_plan_for, known_host};
use crate::server::auth::Actor;
use crate::server::drains::outcomes;
use crate::server::error::ApiError;
use crate::server::state::ServerState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dockmesh_core::audit::AuditEvent;
use dockmesh_core::drain::{DrainRecord, DrainState};
use dockmesh_core::migration::Phase;
use dockmesh_core::records::CordonRecord;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One stack of a drain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrainEntryView {
    /// The stack.
    pub stack: String,
    /// Where the plan sends it.
    pub target: Option<String>,
    /// Why there (or why nowhere).
    pub reason: String,
    /// `pending`, `moving`, `moved` or `failed`.
    pub status: String,
    /// Its latest migration.
    pub migration: Option<String>,
}

/// A drain as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DrainView {
    /// Its id.
    pub id: String,
    /// The host being drained.
    pub host: String,
    /// `running`, `paused`, `aborted` or `completed`.
    pub state: String,
    /// Why it is paused.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// The stacks, in the order they move.
    pub entries: Vec<DrainEntryView>,
}

async fn view(state: &ServerState, d: &DrainRecord) -> Result<DrainView, ApiError> {
    let outs = outcomes(state, d).await?;
    let entries = d
        .plan
        .entries
        .iter()
        .map(|e| {
            let latest = outs.iter().rev().find(|o| o.stack == e.stack);
            let status = match latest.map(|o| o.phase) {
                None => "pending",
                Some(Phase::Committed | Phase::Purged) => "moved",
                Some(Phase::Failed | Phase::RolledBack) => "failed",
                Some(_) => "moving",
            };
            DrainEntryView {
                stack: e.stack.clone(),
                target: e.target.as_ref().map(|t| t.0.clone()),
                reason: e.reason.clone(),
                status: status.to_owned(),
                migration: latest.map(|o| o.id.to_string()),
            }
        })
        .collect();
    let (name, reason) = match &d.state {
        DrainState::Running => ("running", None),
        DrainState::Paused { reason, .. } => ("paused", Some(reason.clone())),
        DrainState::Aborted { by, .. } => ("aborted", Some(format!("aborted by {by}"))),
        DrainState::Completed { .. } => ("completed", None),
    };
    Ok(DrainView {
        id: d.id.to_string(),
        host: d.plan.host.0.clone(),
        state: name.to_owned(),
        reason,
        created_at: d.created_at,
        entries,
    })
}

fn parse(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id)
        .map_err(|e| ApiError::bad_request(format!("id: {id:?} is not a drain id ({e})")))
}

async fn load(state: &ServerState, id: uuid::Uuid) -> Result<DrainRecord, ApiError> {
    state
        .store()
        .get_drain(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("drain {id} is not known")))
}

/// Drain a host: cordon it, plan where each of its stacks goes, and move them one at a time.
/// A failed stack pauses the drain; it survives a server restart.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/drain", tag = "hosts",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 202, body = DrainView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "The host is offline, or a drain of it runs", body = crate::server::error::ErrorBody)))]
pub async fn start_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<(StatusCode, Json<DrainView>), ApiError> {
    let host = known_host(&state, &id)?;
    for d in state.store().list_drains().await? {
        if d.plan.host == host && matches!(d.state, DrainState::Running | DrainState::Paused { .. })
        {
            return Err(ApiError::conflict(format!(
                "drain {} of host {host} is {}; resume or abort it",
                d.id,
                if d.state == DrainState::Running {
                    "running"
                } else {
                    "paused"
                }
            )));
        }
    }
    let plan = drain_plan_for(&state, &host).await?;
    let now = state.clock().now();
    let who = actor(&by);
    state
        .store()
        .put_cordon(&CordonRecord {
            host: host.clone(),
            at: now,
            by: who.clone(),
        })
        .await?;
    state.hosts().set_cordoned(&host, true);
    let d = DrainRecord {
        id: state.ids().new_id(),
        created_at: now,
        plan,
        migrations: vec![],
        state: DrainState::Running,
        acknowledged: vec![],
    };
    state.store().put_drain(&d).await?;
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, &who, "host.drain", &host.0)
                .with("drain", d.id.to_string())
                .with("stacks", d.plan.entries.len().to_string()),
        )
        .await;
    state.drains().run(&state, d.id);
    Ok((StatusCode::ACCEPTED, Json(view(&state, &d).await?)))
}

/// Every drain, newest first.
#[utoipa::path(get, path = "/api/v1/drains", tag = "hosts",
    responses((status = 200, body = Vec<DrainView>)))]
pub async fn list_drains(
    State(state): State<ServerState>,
) -> Result<Json<Vec<DrainView>>, ApiError> {
    let mut out = Vec::new();
    for d in state.store().list_drains().await? {
        out.push(view(&state, &d).await?);
    }
    Ok(Json(out))
}

/// One drain, with each stack's status.
#[utoipa::path(get, path = "/api/v1/drains/{id}", tag = "hosts",
    params(("id" = String, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn get_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<DrainView>, ApiError> {
    let d = load(&state, parse(&id)?).await?;
    Ok(Json(view(&state, &d).await?))
}

/// Pause a running drain: the stack moving now finishes, no next one starts.
#[utoipa::path(post, path = "/api/v1/drains/{id}/pause", tag = "hosts",
    params(("id" = String, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn pause_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<Json<DrainView>, ApiError> {
    let mut d = load(&state, parse(&id)?).await?;
    if d.state != DrainState::Running {
        return Err(ApiError::conflict(format!("drain {} is not running", d.id)));
    }
    d.state = DrainState::Paused {
        at: state.clock().now(),
        reason: format!("paused by {}", actor(&by)),
    };
    state.store().put_drain(&d).await?;
    Ok(Json(view(&state, &d).await?))
}

/// Resume a paused drain; the stacks whose migrations failed are tried again.
#[utoipa::path(post, path = "/api/v1/drains/{id}/resume", tag = "hosts",
    params(("id" = String, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn resume_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<DrainView>, ApiError> {
    let mut d = load(&state, parse(&id)?).await?;
    if !matches!(d.state, DrainState::Paused { .. }) {
        return Err(ApiError::conflict(format!("drain {} is not paused", d.id)));
    }
    for o in outcomes(&state, &d).await? {
        if matches!(o.phase, Phase::Failed | Phase::RolledBack) && !d.acknowledged.contains(&o.id) {
            d.acknowledged.push(o.id);
        }
    }
    d.state = DrainState::Running;
    state.store().put_drain(&d).await?;
    state.drains().run(&state, d.id);
    Ok(Json(view(&state, &d).await?))
}

/// Abort a drain for good; the stacks moved so far stay where they are, and the stack moving
/// now finishes its migration.
#[utoipa::path(post, path = "/api/v1/drains/{id}/abort", tag = "hosts",
    params(("id" = String, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn abort_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<Json<DrainView>, ApiError> {
    let mut d = load(&state, parse(&id)?).await?;
    if !matches!(d.state, DrainState::Running | DrainState::Paused { .. }) {
        return Err(ApiError::conflict(format!("drain {} has ended", d.id)));
    }
    d.state = DrainState::Aborted {
        at: state.clock().now(),
        by: actor(&by),
    };
    state.store().put_drain(&d).await?;
    Ok(Json(view(&state, &d).await?))
}
