//! Drains: execute a host's drain plan one stack at a time; follow, pause, resume, abort.
//! The operations are [`crate::server::ops::drains`].

use super::actor;
use crate::server::auth::Actor;
use crate::server::error::ApiError;
use crate::server::ops;
use crate::server::state::ServerState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};

pub use crate::server::ops::drains::{DrainEntryView, DrainView};

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
    let view = ops::drains::start(&state, &id, &actor(&by)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Every drain, newest first.
#[utoipa::path(get, path = "/api/v1/drains", tag = "hosts",
    responses((status = 200, body = Vec<DrainView>)))]
pub async fn list_drains(
    State(state): State<ServerState>,
) -> Result<Json<Vec<DrainView>>, ApiError> {
    Ok(Json(ops::drains::list(&state).await?))
}

/// One drain, with each stack's status.
#[utoipa::path(get, path = "/api/v1/drains/{id}", tag = "hosts",
    params(("id" = uuid::Uuid, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn get_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<DrainView>, ApiError> {
    Ok(Json(ops::drains::get(&state, &id).await?))
}

/// Pause a running drain: the stack moving now finishes, no next one starts.
#[utoipa::path(post, path = "/api/v1/drains/{id}/pause", tag = "hosts",
    params(("id" = uuid::Uuid, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn pause_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<Json<DrainView>, ApiError> {
    Ok(Json(ops::drains::pause(&state, &id, &actor(&by)).await?))
}

/// Resume a paused drain; the stacks whose migrations failed are tried again.
#[utoipa::path(post, path = "/api/v1/drains/{id}/resume", tag = "hosts",
    params(("id" = uuid::Uuid, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn resume_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<DrainView>, ApiError> {
    Ok(Json(ops::drains::resume(&state, &id).await?))
}

/// Abort a drain for good; the stacks moved so far stay where they are, and the stack moving
/// now finishes its migration.
#[utoipa::path(post, path = "/api/v1/drains/{id}/abort", tag = "hosts",
    params(("id" = uuid::Uuid, Path, description = "Drain id")),
    responses((status = 200, body = DrainView), (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn abort_drain(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<Json<DrainView>, ApiError> {
    Ok(Json(ops::drains::abort(&state, &id, &actor(&by)).await?))
}
