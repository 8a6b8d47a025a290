//! Hosts: the list (from the snapshot cache, or asked now), cordon and uncordon, drain
//! plans, the Compose projects on a host, its recent events.

use super::{OpError, OpErrorKind};
use crate::server::state::ServerState;
use dockmesh_core::HostId;
use dockmesh_core::drain::{DrainOrder, DrainPlan};
use dockmesh_core::ports::{HostRuntime, cannot};
use dockmesh_core::snapshot::HostSnapshot;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

/// A host as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    /// The host's id.
    pub id: String,
    /// Whether it answered when last asked (at most the server's snapshot max age ago, 30 s
    /// by default, and not before its latest event).
    pub online: bool,
    /// Whether it is cordoned (never a migration target).
    pub cordoned: bool,
    /// Why it is offline (`unreachable: no answer within …` when it did not answer in time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the host last answered (RFC 3339, the server's clock): the age of the figures
    /// below. `null` when it never answered since the server started.
    #[schema(value_type = Option<String>)]
    pub observed_at: Option<jiff::Timestamp>,
    /// Docker engine version.
    pub docker_version: String,
    /// Docker API version.
    pub docker_api_version: String,
    /// CPU architecture.
    pub arch: String,
    /// Memory in bytes.
    pub memory_total: u64,
    /// Used memory in bytes.
    pub memory_used: u64,
    /// Size of the engine's data filesystem in bytes.
    pub disk_total: u64,
    /// Used bytes on it.
    pub disk_used: u64,
    /// Stacks deployed on the host (Compose projects found on its engine).
    pub stacks: Vec<String>,
}

/// The hosts list's options.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HostsQuery {
    /// Ask every host now rather than serve its last snapshot.
    #[serde(default)]
    pub fresh: bool,
}

/// Whether a host is cordoned, after a change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CordonView {
    /// The host.
    pub id: String,
    /// Whether it is cordoned now.
    pub cordoned: bool,
    /// Whether this request changed it.
    pub changed: bool,
}

/// A host's recent events, as the server follows them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostEventsView {
    /// The host's id.
    pub host: String,
    /// Whether the server holds the host's event stream open now.
    pub following: bool,
    /// Why it does not, when it does not and the reason is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The newest events, oldest first (`at`, `stack`, `service`, `container`, `action`,
    /// `exit_code`).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<dockmesh_core::ports::HostEvent>,
}

/// How many events to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsParams {
    /// At most this many of the newest (default 50, at most what the server keeps).
    pub limit: Option<usize>,
}

/// A snapshot of every host asked now (for decisions, never cached), offline ones with the
/// reason.
pub(crate) async fn fresh_snapshots(state: &ServerState) -> Vec<(HostSnapshot, Option<String>)> {
    let cache = state.snapshots();
    let ids = state.hosts().ids();
    futures_util::future::join_all(ids.iter().map(|id| cache.fresh(id)))
        .await
        .into_iter()
        .map(|o| (o.snapshot, o.error))
        .collect()
}

fn view(state: &ServerState, o: crate::server::snapshots::Observed) -> HostView {
    let (s, error) = (o.snapshot, o.error);
    HostView {
        observed_at: o.observed_at,
        cordoned: state.hosts().is_cordoned(&s.host),
        id: s.host.0,
        online: s.online,
        error,
        docker_version: s.docker_version,
        docker_api_version: s.docker_api_version,
        arch: s.arch,
        memory_total: s.memory_total,
        memory_used: s.memory_used,
        disk_total: s.disk_total,
        disk_used: s.disk_used,
        stacks: s.stacks.into_keys().collect(),
    }
}

/// Every host, with whether it answers, its engine, capacity and stacks, as last observed;
/// with `q.fresh`, every host asked now.
pub async fn list(state: &ServerState, q: HostsQuery) -> Vec<HostView> {
    let list = if q.fresh {
        state.snapshots().all_fresh().await
    } else {
        state.snapshots().all().await
    };
    list.into_iter().map(|o| view(state, o)).collect()
}

/// The host named in a path, or 404.
pub(crate) fn known_host(state: &ServerState, id: &str) -> Result<HostId, OpError> {
    known_runtime(state, id).map(|(id, _)| id)
}

/// The host a request's body names and its runtime, or 422 naming the hosts there are (the
/// request is well formed; what it names does not exist).
pub(crate) fn named_runtime(
    state: &ServerState,
    id: &str,
) -> Result<(HostId, Arc<dyn HostRuntime>), OpError> {
    known_runtime(state, id).map_err(|e| {
        if e.kind == OpErrorKind::NotFound {
            OpError {
                kind: OpErrorKind::Unprocessable,
                ..e
            }
        } else {
            e
        }
    })
}

/// The host named in a path and its runtime, or 404 naming the hosts there are.
pub(crate) fn known_runtime(
    state: &ServerState,
    id: &str,
) -> Result<(HostId, Arc<dyn HostRuntime>), OpError> {
    let id = HostId::from(id);
    match state.hosts().get(&id) {
        Some(runtime) => Ok((id, runtime)),
        None => Err(OpError::not_found(format!(
            "host {id} is not known; known hosts: {}",
            state
                .hosts()
                .ids()
                .iter()
                .map(|h| h.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Cordon host `id`, as `by`: it is never chosen or accepted as a migration target until
/// uncordoned.
pub async fn cordon(state: &ServerState, id: &str, by: &str) -> Result<CordonView, OpError> {
    let id = known_host(state, id)?;
    state
        .store()
        .put_cordon(&dockmesh_core::records::CordonRecord {
            host: id.clone(),
            at: state.clock().now(),
            by: by.to_owned(),
        })
        .await?;
    let changed = state.hosts().set_cordoned(&id, true);
    tracing::info!(host = %id, changed, "host cordoned");
    Ok(CordonView {
        id: id.0,
        cordoned: true,
        changed,
    })
}

/// Uncordon host `id`.
pub async fn uncordon(state: &ServerState, id: &str) -> Result<CordonView, OpError> {
    let id = known_host(state, id)?;
    state.store().delete_cordon(&id).await?;
    let changed = state.hosts().set_cordoned(&id, false);
    tracing::info!(host = %id, changed, "host uncordoned");
    Ok(CordonView {
        id: id.0,
        cordoned: false,
        changed,
    })
}

/// Plan moving every stack off host `id`: where each would go and why. Nothing moves.
pub async fn drain_plan(state: &ServerState, id: &str) -> Result<DrainPlan, OpError> {
    let id = known_host(state, id)?;
    drain_plan_for(state, &id).await
}

/// The drain plan of a host, over fresh snapshots (cordoned hosts take nothing). Only the
/// stacks this server manages on the host are moved; other Compose projects on its engine
/// stay where they are (they still count against each target's room).
pub(crate) async fn drain_plan_for(state: &ServerState, id: &HostId) -> Result<DrainPlan, OpError> {
    let managed: std::collections::BTreeSet<String> = state
        .store()
        .list_stacks()
        .await?
        .into_iter()
        .filter(|s| s.host.as_ref() == Some(id))
        .map(|s| s.name)
        .collect();
    let snaps: Vec<HostSnapshot> = fresh_snapshots(state)
        .await
        .into_iter()
        .map(|(mut s, _)| {
            if &s.host == id {
                let unmanaged: Vec<&String> =
                    s.stacks.keys().filter(|n| !managed.contains(*n)).collect();
                if !unmanaged.is_empty() {
                    tracing::info!(host = %id, ?unmanaged, "a drain leaves the Compose projects this server does not manage in place");
                }
                s.stacks.retain(|n, _| managed.contains(n));
            } else if state.hosts().is_cordoned(&s.host) {
                // A cordoned host takes nothing: plan as if it were offline.
                s.online = false;
            }
            s
        })
        .collect();
    dockmesh_core::drain::plan(id, &snaps, DrainOrder::default())
        .map_err(|e| OpError::conflict(e.to_string()))
}

/// The Compose projects on host `id` (also those this server does not manage), for adoption.
pub async fn projects(
    state: &ServerState,
    id: &str,
) -> Result<Vec<dockmesh_core::ports::ProjectInfo>, OpError> {
    let (_, host) = known_runtime(state, id)?;
    let projects = host
        .projects()
        .ok_or_else(|| cannot::list_projects(host.host_id()))?;
    Ok(projects.list_projects().await?)
}

/// Host `id`'s use over time (memory, disk, running containers), oldest first: the bounded
/// history the server sampled from its snapshots since it started.
pub fn history(state: &ServerState, id: &str) -> Vec<crate::server::snapshots::HostSample> {
    state.snapshots().history(&dockmesh_core::HostId::from(id))
}

/// Host `id`'s newest events (at most `p.limit`, 50 by default), as the server follows them.
pub fn events(state: &ServerState, id: &str, p: EventsParams) -> Result<HostEventsView, OpError> {
    let (id, _) = known_runtime(state, id)?;
    let recent = state.host_events().recent(
        &id,
        p.limit
            .unwrap_or(50)
            .min(crate::server::events::KEPT_PER_HOST),
    );
    Ok(HostEventsView {
        host: id.0,
        following: recent.following,
        note: recent.note,
        events: recent.events,
    })
}
