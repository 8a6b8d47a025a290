//! `GET /api/v1/hosts`, cordon and uncordon, and drain plans. The operations are
//! [`crate::server::ops::hosts`].

use crate::server::error::ApiError;
use crate::server::ops;
use crate::server::state::ServerState;
use axum::Json;
use axum::extract::{Path, Query, State};
use dockmesh_core::drain::DrainPlan;

pub use crate::server::ops::hosts::{
    CordonView, EventsParams, HostEventsView, HostView, HostsQuery,
};

/// Every host, with whether it answers, its engine, capacity and stacks, as last observed
/// (`observed_at`): the server refreshes each host's snapshot in the background and after its
/// events, and asks a host itself only when its snapshot is missing, stale or older than the
/// max age (one call per host shared by concurrent requests; a host that does not answer in
/// time is listed unreachable without delaying the others). `?fresh=true` asks every host
/// now instead (for a decision, such as the check after a server upgrade).
#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts",
    params(HostsQuery),
    responses((status = 200, body = Vec<HostView>)))]
pub async fn list_hosts(
    State(state): State<ServerState>,
    Query(q): Query<HostsQuery>,
) -> Json<Vec<HostView>> {
    Json(ops::hosts::list(&state, q).await)
}

/// Cordon a host: it is never chosen or accepted as a migration target until uncordoned.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/cordon", tag = "hosts",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, body = CordonView), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn cordon(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<axum::Extension<crate::server::auth::Actor>>,
) -> Result<Json<CordonView>, ApiError> {
    Ok(Json(
        ops::hosts::cordon(&state, &id, &super::actor(&by)).await?,
    ))
}

/// Uncordon a host.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/uncordon", tag = "hosts",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, body = CordonView), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn uncordon(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<CordonView>, ApiError> {
    Ok(Json(ops::hosts::uncordon(&state, &id).await?))
}

/// Plan moving every stack off a host: where each would go and why (cordoned hosts are not
/// targets). Nothing moves.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/drain/plan", tag = "hosts",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The plan", body = Object),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "The host is offline", body = crate::server::error::ErrorBody)))]
pub async fn drain_plan(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<DrainPlan>, ApiError> {
    Ok(Json(ops::hosts::drain_plan(&state, &id).await?))
}

/// The Compose projects on a host (also those this server does not manage), for adoption.
#[utoipa::path(get, path = "/api/v1/hosts/{id}/projects", tag = "hosts",
    params(("id" = String, Path, description = "Host id")),
    responses((status = 200, description = "The projects", body = Vec<Object>),
        (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn list_projects(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<dockmesh_core::ports::ProjectInfo>>, ApiError> {
    Ok(Json(ops::hosts::projects(&state, &id).await?))
}

/// What happened to the containers of a host's stacks lately (starts, exits with their code,
/// kills, out-of-memory kills, health changes), as the host reported it; the server keeps the
/// last 200 per host in memory.
#[utoipa::path(get, path = "/api/v1/hosts/{id}/events", tag = "hosts",
    params(("id" = String, Path, description = "Host id"), EventsParams),
    responses((status = 200, body = HostEventsView),
        (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn host_events(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    Query(p): Query<EventsParams>,
) -> Result<Json<HostEventsView>, ApiError> {
    Ok(Json(ops::hosts::events(&state, &id, p)?))
}
