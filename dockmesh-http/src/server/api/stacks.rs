//! Stacks: register a compose file (and `.env`), deploy it on a host, read its status, remove it.
//! The operations are [`crate::server::ops::stacks`].

use super::actor;
use crate::server::auth::Actor;
use crate::server::error::{ApiError, ApiJson};
use crate::server::ops;
use crate::server::state::ServerState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use dockmesh_core::records::StackRecord;

pub use crate::server::ops::stacks::{
    AdoptRequest, AdoptView, CreateStack, DeleteQuery, DeployRequest, StackDetail, StackView,
    StatusView,
};

/// Every stack the server knows.
#[utoipa::path(get, path = "/api/v1/stacks", tag = "stacks",
    responses((status = 200, body = Vec<StackView>)))]
pub async fn list_stacks(
    State(state): State<ServerState>,
) -> Result<Json<Vec<StackView>>, ApiError> {
    Ok(Json(ops::stacks::list(&state).await?))
}

/// [`ops::stacks::load`], answered as the API answers it.
pub(crate) async fn load_stack(state: &ServerState, name: &str) -> Result<StackRecord, ApiError> {
    Ok(ops::stacks::load(state, name).await?)
}

/// One stack with its files.
#[utoipa::path(get, path = "/api/v1/stacks/{name}", tag = "stacks",
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = StackDetail), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn get_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<StackDetail>, ApiError> {
    Ok(Json(ops::stacks::get(&state, &name).await?))
}

/// Register a stack (its files); it is deployed with `POST /api/v1/stacks/{name}/deploy`.
/// A stack that is not deployed may be registered again with new files.
#[utoipa::path(post, path = "/api/v1/stacks", tag = "stacks", request_body = CreateStack,
    responses((status = 201, body = StackView),
        (status = 400, body = crate::server::error::ErrorBody),
        (status = 409, description = "The stack is deployed", body = crate::server::error::ErrorBody)))]
pub async fn create_stack(
    State(state): State<ServerState>,
    ApiJson(req): ApiJson<CreateStack>,
) -> Result<(StatusCode, Json<StackView>), ApiError> {
    let view = ops::stacks::create(&state, req).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// [`ops::stacks::no_active_migration`], answered as the API answers it.
pub(crate) async fn no_active_migration(state: &ServerState, name: &str) -> Result<(), ApiError> {
    Ok(ops::stacks::no_active_migration(state, name).await?)
}

/// Deploy a registered stack on a host (or deploy it again where it runs). A stack deployed
/// elsewhere moves with `migrate`, not here.
#[utoipa::path(post, path = "/api/v1/stacks/{name}/deploy", tag = "stacks", request_body = DeployRequest,
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = StatusView),
        (status = 422, description = "The compose file does not load, or the host's policy refuses it", body = crate::server::error::ErrorBody),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn deploy_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<DeployRequest>,
) -> Result<Json<StatusView>, ApiError> {
    Ok(Json(
        ops::stacks::deploy(&state, &name, req, &actor(&by)).await?,
    ))
}

/// The status of a deployed stack's containers on its host.
#[utoipa::path(get, path = "/api/v1/stacks/{name}/status", tag = "stacks",
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = StatusView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "The stack is not deployed", body = crate::server::error::ErrorBody)))]
pub async fn stack_status(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<StatusView>, ApiError> {
    Ok(Json(ops::stacks::status(&state, &name).await?))
}

/// Remove a stack: its containers and files on its host, and the server's record. Its named
/// volumes are kept unless `volumes=true`. Refused while a migration of it is in progress.
#[utoipa::path(delete, path = "/api/v1/stacks/{name}", tag = "stacks",
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"), DeleteQuery),
    responses((status = 204, description = "Removed"),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn delete_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
    by: Option<Extension<Actor>>,
) -> Result<StatusCode, ApiError> {
    ops::stacks::remove(&state, &name, q, &actor(&by)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Adopt a Compose project that already runs on a host (started with `docker compose up`):
/// its files are read from where its labels record them (or taken from the body), checked to
/// describe what runs, and recorded as a stack of this server. No container is restarted; the
/// stack can then be migrated like any other.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/projects/{name}/adopt", tag = "stacks",
    request_body = AdoptRequest,
    params(("id" = String, Path, description = "Host id"), ("name" = String, Path, description = "Project name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 201, body = AdoptView),
        (status = 422, description = "The files do not describe what runs, or cannot be deployed", body = crate::server::error::ErrorBody),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "A stack of that name is managed already", body = crate::server::error::ErrorBody)))]
pub async fn adopt_stack(
    State(state): State<ServerState>,
    Path((host, name)): Path<(String, String)>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<AdoptRequest>,
) -> Result<(StatusCode, Json<AdoptView>), ApiError> {
    let view = ops::stacks::adopt(&state, &host, &name, req, &actor(&by)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}
