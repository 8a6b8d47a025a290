//! Stack releases: new files for a deployed stack (diff, replace, health, automatic
//! rollback), its releases, and a rollback to an earlier one. The flow is the stack upgrade
//! ([`crate::server::stack_upgrade`]); these operations take the stack's lock and name what
//! to deploy.

use super::OpError;
use super::stacks::load as load_stack;
use crate::server::stack_upgrade::{self, ReleaseView, Upgrade, UpgradeView};
use crate::server::state::ServerState;
use dockmesh_core::types::StackFiles;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A new release of a deployed stack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

/// Upgrade deployed stack `name` to new files, as `by`: the diff against what runs (a dry run
/// stops there), then the stack upgrade. A release that fails is put back by itself and
/// answered, not refused: its `outcome` says so.
pub async fn upgrade(
    state: &ServerState,
    name: &str,
    req: UpgradeRequest,
    by: &str,
) -> Result<UpgradeView, OpError> {
    let _guard = state.lock_stack(name).await;
    let up = Upgrade {
        files: StackFiles {
            name: name.to_owned(),
            compose: req.compose,
            env: req.env,
        },
        dry_run: req.dry_run,
        backup: req.backup,
        action: "upgrade",
        from_rev: None,
        actor: by.to_owned(),
    };
    Ok(stack_upgrade::run(state, name, up).await?)
}

/// Every release of stack `name`, newest first; `current` marks the one that runs.
pub async fn list(state: &ServerState, name: &str) -> Result<Vec<ReleaseView>, OpError> {
    load_stack(state, name).await?;
    let releases = state.store().list_releases(name).await?;
    Ok(ReleaseView::list(&releases))
}

/// Deploy an earlier release of stack `name` again, as `by`, as an upgrade; recorded as a
/// new revision naming the one it went back to.
pub async fn rollback(
    state: &ServerState,
    name: &str,
    req: RollbackRequest,
    by: &str,
) -> Result<UpgradeView, OpError> {
    let _guard = state.lock_stack(name).await;
    load_stack(state, name).await?;
    let releases = state.store().list_releases(name).await?;
    let target = stack_upgrade::rollback_target(name, &releases, req.to)?;
    let up = Upgrade {
        files: StackFiles {
            name: name.to_owned(),
            compose: target.compose,
            env: target.env,
        },
        dry_run: req.dry_run,
        backup: req.backup,
        action: "rollback",
        from_rev: Some(target.rev),
        actor: by.to_owned(),
    };
    Ok(stack_upgrade::run(state, name, up).await?)
}
