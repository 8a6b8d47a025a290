//! Stack release upgrades: new files for a deployed stack (diff, replace, health, automatic
//! rollback), its releases, and a rollback to an earlier one. The flow is [`crate::server::stack_upgrade`].

use super::actor;
use super::stacks::load_stack;
use crate::server::auth::Actor;
use crate::server::error::{ApiError, ApiJson};
use crate::server::stack_upgrade::{self, ReleaseView, Upgrade, UpgradeView};
use crate::server::state::ServerState;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use dockmesh_core::types::StackFiles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new release of a deployed stack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeRequest {
    /// The content of the new `compose.yaml`.
    pub compose: String,
    /// The content of the new `.env`.
    #[serde(default)]
    pub env: Option<String>,
    /// Only compute the diff; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Copy the stack's named volumes first (the stack is stopped while they are copied), and
    /// fill them again from the copies if the release is rolled back.
    #[serde(default)]
    pub backup: bool,
}

/// Which release to go back to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// The revision (default: the deployed release before the one that runs).
    #[serde(default)]
    pub to: Option<u64>,
    /// Only compute the diff; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Copy the stack's named volumes first, as for an upgrade.
    #[serde(default)]
    pub backup: bool,
}

/// Upgrade a deployed stack to new files: the diff against what runs (returned; a dry run
/// stops there), every image present (pulled when a registry answers, else refused naming it
/// before anything stops), optionally a verified copy of each named volume, then only the
/// changed services replaced (named volumes kept) and every service healthy. When the release
/// fails, the previous one is put back by itself (containers, and volume contents with
/// `backup`): the answer is still 200, with `outcome` `rolled_back` (or `failed` when putting
/// it back failed too) and the reason in `detail`.
#[utoipa::path(put, path = "/api/v1/stacks/{name}", tag = "stacks", request_body = UpgradeRequest,
    params(("name" = String, Path, description = "Stack name")),
    responses((status = 200, body = UpgradeView),
        (status = 400, description = "The new files are invalid", body = crate::server::error::ErrorBody),
        (status = 404, description = "Unknown stack, or an image that cannot be found", body = crate::server::error::ErrorBody),
        (status = 409, description = "Not deployed, or a migration is in progress", body = crate::server::error::ErrorBody)))]
pub async fn upgrade_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<UpgradeRequest>,
) -> Result<Json<UpgradeView>, ApiError> {
    let _guard = state.lock_stack(&name).await;
    let up = Upgrade {
        files: StackFiles {
            name: name.clone(),
            compose: req.compose,
            env: req.env,
        },
        dry_run: req.dry_run,
        backup: req.backup,
        action: "upgrade",
        from_rev: None,
        actor: actor(&by),
    };
    stack_upgrade::run(&state, &name, up).await.map(Json)
}

/// Every release of a stack, newest first; `current` marks the one that runs.
#[utoipa::path(get, path = "/api/v1/stacks/{name}/releases", tag = "stacks",
    params(("name" = String, Path, description = "Stack name")),
    responses((status = 200, body = Vec<ReleaseView>), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn list_releases(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    load_stack(&state, &name).await?;
    let releases = state.store().list_releases(&name).await?;
    Ok(Json(ReleaseView::list(&releases)))
}

/// Deploy an earlier release of a stack again (its recorded compose file and `.env`), as an
/// upgrade: diff, images, optional backup, replace, health, and the running release put back
/// if it fails. Recorded as a new revision naming the one it went back to.
#[utoipa::path(post, path = "/api/v1/stacks/{name}/rollback", tag = "stacks", request_body = RollbackRequest,
    params(("name" = String, Path, description = "Stack name")),
    responses((status = 200, body = UpgradeView),
        (status = 404, description = "Unknown stack or revision", body = crate::server::error::ErrorBody),
        (status = 409, description = "No earlier release, not deployed, or a migration is in progress", body = crate::server::error::ErrorBody)))]
pub async fn rollback_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> Result<Json<UpgradeView>, ApiError> {
    let _guard = state.lock_stack(&name).await;
    load_stack(&state, &name).await?;
    let releases = state.store().list_releases(&name).await?;
    let target = stack_upgrade::rollback_target(&name, &releases, req.to)?;
    let up = Upgrade {
        files: StackFiles {
            name: name.clone(),
            compose: target.compose,
            env: target.env,
        },
        dry_run: req.dry_run,
        backup: req.backup,
        action: "rollback",
        from_rev: Some(target.rev),
        actor: actor(&by),
    };
    stack_upgrade::run(&state, &name, up).await.map(Json)
}
