//! Drains: execute a host's drain plan one stack at a time; follow, pause, resume, abort.

use super::OpError;
use super::hosts::{drain_plan_for, known_host};
use crate::server::drains::outcomes;
use crate::server::state::ServerState;
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

async fn view(state: &ServerState, d: &DrainRecord) -> Result<DrainView, OpError> {
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

fn parse(id: &str) -> Result<uuid::Uuid, OpError> {
    uuid::Uuid::parse_str(id)
        .map_err(|e| OpError::bad_request(format!("id: {id:?} is not a drain id ({e})")))
}

async fn load(state: &ServerState, id: uuid::Uuid) -> Result<DrainRecord, OpError> {
    state
        .store()
        .get_drain(id)
        .await?
        .ok_or_else(|| OpError::not_found(format!("drain {id} is not known")))
}

/// Drain host `id`, as `by`: cordon it, plan where each of its stacks goes, and move them one
/// at a time. A failed stack pauses the drain; it survives a server restart.
pub async fn start(state: &ServerState, id: &str, by: &str) -> Result<DrainView, OpError> {
    let host = known_host(state, id)?;
    for d in state.store().list_drains().await? {
        if d.plan.host == host && matches!(d.state, DrainState::Running | DrainState::Paused { .. })
        {
            return Err(OpError::conflict(format!(
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
    let plan = drain_plan_for(state, &host).await?;
    let now = state.clock().now();
    state
        .store()
        .put_cordon(&CordonRecord {
            host: host.clone(),
            at: now,
            by: by.to_owned(),
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
            &AuditEvent::new(now, by, "host.drain", &host.0)
                .with("drain", d.id.to_string())
                .with("stacks", d.plan.entries.len().to_string()),
        )
        .await;
    state.drains().run(state, d.id);
    view(state, &d).await
}

/// Every drain, newest first.
pub async fn list(state: &ServerState) -> Result<Vec<DrainView>, OpError> {
    let mut out = Vec::new();
    for d in state.store().list_drains().await? {
        out.push(view(state, &d).await?);
    }
    Ok(out)
}

/// One drain, with each stack's status.
pub async fn get(state: &ServerState, id: &str) -> Result<DrainView, OpError> {
    let d = load(state, parse(id)?).await?;
    view(state, &d).await
}

/// Pause a running drain, as `by`: the stack moving now finishes, no next one starts.
pub async fn pause(state: &ServerState, id: &str, by: &str) -> Result<DrainView, OpError> {
    let mut d = load(state, parse(id)?).await?;
    if d.state != DrainState::Running {
        return Err(OpError::conflict(format!("drain {} is not running", d.id)));
    }
    d.state = DrainState::Paused {
        at: state.clock().now(),
        reason: format!("paused by {by}"),
    };
    state.store().put_drain(&d).await?;
    view(state, &d).await
}

/// Resume a paused drain; the stacks whose migrations failed are tried again.
pub async fn resume(state: &ServerState, id: &str) -> Result<DrainView, OpError> {
    let mut d = load(state, parse(id)?).await?;
    if !matches!(d.state, DrainState::Paused { .. }) {
        return Err(OpError::conflict(format!("drain {} is not paused", d.id)));
    }
    for o in outcomes(state, &d).await? {
        if matches!(o.phase, Phase::Failed | Phase::RolledBack) && !d.acknowledged.contains(&o.id) {
            d.acknowledged.push(o.id);
        }
    }
    d.state = DrainState::Running;
    state.store().put_drain(&d).await?;
    state.drains().run(state, d.id);
    view(state, &d).await
}

/// Abort a drain for good, as `by`; the stacks moved so far stay where they are, and the
/// stack moving now finishes its migration.
pub async fn abort(state: &ServerState, id: &str, by: &str) -> Result<DrainView, OpError> {
    let mut d = load(state, parse(id)?).await?;
    if !matches!(d.state, DrainState::Running | DrainState::Paused { .. }) {
        return Err(OpError::conflict(format!("drain {} has ended", d.id)));
    }
    d.state = DrainState::Aborted {
        at: state.clock().now(),
        by: by.to_owned(),
    };
    state.store().put_drain(&d).await?;
    view(state, &d).await
}
