//! Migrations: pre-flight, start, list, show, rollback, purge of the retained source. The
//! operations are [`crate::server::ops::migrations`].

use super::actor;
use crate::server::auth::Actor;
use crate::server::error::{ApiError, ApiJson};
use crate::server::ops;
use crate::server::state::ServerState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dockmesh_core::preflight::PreflightReport;

pub use crate::server::ops::migrations::{
    EventView, FailureView, ListQuery, MigrateRequest, MigrationView, VolumeView,
};

/// Run the pre-flight checks of moving a stack to a host, changing nothing.
#[utoipa::path(post, path = "/api/v1/stacks/{name}/migrate/preflight", tag = "migrations",
    request_body = MigrateRequest,
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, description = "The report (pass, warn or fail per check)", body = Object),
        (status = 422, description = "`target_host_id` names no host", body = crate::server::error::ErrorBody),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn preflight(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> Result<Json<PreflightReport>, ApiError> {
    Ok(Json(ops::migrations::preflight(&state, &name, &req).await?))
}

/// Move a stack with its data to another host. Pre-flight runs first: a failing check
/// answers 422 with the report, and nothing changes. Otherwise the migration is recorded and
/// driven in the background (202); follow it with `GET /api/v1/migrations/{id}`.
#[utoipa::path(post, path = "/api/v1/stacks/{name}/migrate", tag = "migrations",
    request_body = MigrateRequest,
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 202, body = MigrationView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "Another migration of the stack is in progress", body = crate::server::error::ErrorBody),
        (status = 422, description = "Pre-flight refused (`details` holds the report), or `target_host_id` names no host", body = crate::server::error::ErrorBody)))]
pub async fn migrate(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    let view = ops::migrations::migrate(&state, &name, &req, &actor(&by)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Migrations, newest first.
#[utoipa::path(get, path = "/api/v1/migrations", tag = "migrations", params(ListQuery),
    responses((status = 200, body = Vec<MigrationView>), (status = 400, body = crate::server::error::ErrorBody),
        (status = 404, description = "`after` names no migration", body = crate::server::error::ErrorBody)))]
pub async fn list_migrations(
    State(state): State<ServerState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<MigrationView>>, ApiError> {
    Ok(Json(ops::migrations::list(&state, q).await?))
}

/// One migration: state, step, per-volume progress, timestamps, error, retention deadline and
/// its event log.
#[utoipa::path(get, path = "/api/v1/migrations/{id}", tag = "migrations",
    params(("id" = uuid::Uuid, Path, description = "Migration id")),
    responses((status = 200, body = MigrationView),
        (status = 400, body = crate::server::error::ErrorBody),
        (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn get_migration(
    State(state): State<ServerState>,
    Path(id): Path<String>,
) -> Result<Json<MigrationView>, ApiError> {
    Ok(Json(ops::migrations::get(&state, &id).await?))
}

/// Roll a committed migration back: the stack runs on its source again, with the data it had
/// when it left. Only inside the retention window and before a purge; refused (409) when a
/// later migration moved the stack on.
#[utoipa::path(post, path = "/api/v1/migrations/{id}/rollback", tag = "migrations",
    params(("id" = uuid::Uuid, Path, description = "Migration id")),
    responses((status = 202, body = MigrationView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn rollback(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    let view = ops::migrations::rollback(&state, &id, &actor(&by)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Delete the source a committed migration retained: its containers, volumes and files on the
/// source host. Audited; rollback is impossible afterwards.
#[utoipa::path(delete, path = "/api/v1/stacks/{name}/migrate/{id}/source", tag = "migrations",
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"),
        ("id" = uuid::Uuid, Path, description = "Migration id")),
    responses((status = 202, body = MigrationView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn purge_source(
    State(state): State<ServerState>,
    Path((name, id)): Path<(String, String)>,
    by: Option<Extension<Actor>>,
) -> Result<(StatusCode, Json<MigrationView>), ApiError> {
    let view = ops::migrations::purge_source(&state, &name, &id, &actor(&by)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Delete the stopped copy a rolled-back migration left on its target (containers, volumes
/// and files there), so that the stack can be moved to that host again. Refused unless the
/// migration is rolled back, no migration of the stack is in progress, and the stack does not
/// run on that host. Audited (`migration.purge_target`) before anything is deleted.
#[utoipa::path(delete, path = "/api/v1/migrations/{id}/target", tag = "migrations",
    params(("id" = uuid::Uuid, Path, description = "Migration id")),
    responses((status = 200, body = MigrationView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn purge_target(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    by: Option<Extension<Actor>>,
) -> Result<Json<MigrationView>, ApiError> {
    Ok(Json(
        ops::migrations::purge_target(&state, &id, &actor(&by)).await?,
    ))
}
