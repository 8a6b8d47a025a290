//! Stack release upgrades: new files for a deployed stack (diff, replace, health, automatic
//! rollback), its releases, and a rollback to an earlier one. The operations are
//! [`crate::server::ops::releases`].

use super::actor;
use crate::server::auth::Actor;
use crate::server::error::{ApiError, ApiJson};
use crate::server::ops;
use crate::server::stack_upgrade::{ReleaseView, UpgradeView};
use crate::server::state::ServerState;
use axum::extract::{Path, State};
use axum::{Extension, Json};

pub use crate::server::ops::releases::{RollbackRequest, UpgradeRequest};

/// Upgrade a deployed stack to new files: the diff against what runs (returned; a dry run
/// stops there), every image present (pulled when a registry answers, else refused naming it
/// before anything stops), optionally a verified copy of each named volume, then only the
/// changed services replaced (named volumes kept) and every service healthy. When the release
/// fails, the previous one is put back by itself (containers, and volume contents with
/// `backup`): the answer is still 200, with `outcome` `rolled_back` (or `failed` when putting
/// it back failed too) and the reason in `detail`.
#[utoipa::path(put, path = "/api/v1/stacks/{name}", tag = "stacks", request_body = UpgradeRequest,
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = UpgradeView),
        (status = 422, description = "The new files do not load, or the host's policy refuses them", body = crate::server::error::ErrorBody),
        (status = 404, description = "Unknown stack, or an image that cannot be found", body = crate::server::error::ErrorBody),
        (status = 409, description = "Not deployed, or a migration is in progress", body = crate::server::error::ErrorBody)))]
pub async fn upgrade_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<UpgradeRequest>,
) -> Result<Json<UpgradeView>, ApiError> {
    Ok(Json(
        ops::releases::upgrade(&state, &name, req, &actor(&by)).await?,
    ))
}

/// Every release of a stack, newest first; `current` marks the one that runs.
#[utoipa::path(get, path = "/api/v1/stacks/{name}/releases", tag = "stacks",
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = Vec<ReleaseView>), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn list_releases(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    Ok(Json(ops::releases::list(&state, &name).await?))
}

/// Deploy an earlier release of a stack again (its recorded compose file and `.env`), as an
/// upgrade: diff, images, optional backup, replace, health, and the running release put back
/// if it fails. Recorded as a new revision naming the one it went back to.
#[utoipa::path(post, path = "/api/v1/stacks/{name}/rollback", tag = "stacks", request_body = RollbackRequest,
    params(("name" = String, Path, description = "Stack name", pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, body = UpgradeView),
        (status = 404, description = "Unknown stack", body = crate::server::error::ErrorBody),
        (status = 422, description = "`to` names a revision the stack does not have", body = crate::server::error::ErrorBody),
        (status = 409, description = "No earlier release, not deployed, or a migration is in progress", body = crate::server::error::ErrorBody)))]
pub async fn rollback_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Json<UpgradeView>, ApiError> {
    Ok(Json(
        ops::releases::rollback(&state, &name, req, &actor(&by)).await?,
    ))
}
