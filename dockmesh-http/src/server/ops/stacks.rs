//! Stacks: register a compose file (and `.env`), deploy it on a host, read its status, remove
//! it, adopt a Compose project that already runs.

use super::OpError;
use super::hosts::{known_runtime, named_runtime};
use crate::server::state::ServerState;
use dockmesh_core::audit::{self, AuditEvent};
use dockmesh_core::ports::{MigrationQuery, StackStatus, cannot};
use dockmesh_core::records::{DeployRecord, StackRecord};
use dockmesh_core::types::{StackFiles, validate_stack_name};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A stack as listed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackView {
    /// The stack (Compose project) name.
    pub name: String,
    /// The host it is deployed on, if deployed.
    pub host: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// A stack with its files.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StackDetail {
    /// The stack (Compose project) name.
    pub name: String,
    /// The host it is deployed on, if deployed.
    pub host: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
    /// `compose.yaml`.
    pub compose: String,
    /// `.env`, if any.
    pub env: Option<String>,
}

impl From<StackRecord> for StackView {
    fn from(r: StackRecord) -> Self {
        StackView {
            name: r.name,
            host: r.host.map(|h| h.0),
            updated_at: r.updated_at,
        }
    }
}

impl From<StackRecord> for StackDetail {
    fn from(r: StackRecord) -> Self {
        StackDetail {
            name: r.name,
            host: r.host.map(|h| h.0),
            updated_at: r.updated_at,
            compose: r.compose,
            env: r.env,
        }
    }
}

/// A stack to register, or new files for one that is not deployed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStack {
    /// The stack name: lowercase letters, digits, `-` and `_`.
    #[schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$", example = "web")]
    pub name: String,
    /// The content of `compose.yaml` (checked when the stack is deployed: a file that does
    /// not load is refused then, 422).
    #[schema(min_length = 1)]
    pub compose: String,
    /// The content of `.env`.
    #[serde(default)]
    pub env: Option<String>,
}

/// Where to deploy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The host's id.
    #[schema(min_length = 1, example = "local")]
    pub host: String,
}

/// A stack's status on its host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// The stack.
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Every container of the stack.
    #[schema(value_type = Object)]
    pub status: StackStatus,
    /// Whether every container runs.
    pub running: bool,
}

/// Options of a stack removal.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct DeleteQuery {
    /// Also delete the stack's named volumes (their data is lost). Off by default.
    #[serde(default)]
    pub volumes: bool,
}

/// Files for an adoption, when the project's recorded ones should not be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    /// The content of `compose.yaml` (default: the file the project's labels record).
    #[serde(default)]
    pub compose: Option<String>,
    /// The content of `.env` (default: the one beside the recorded compose file).
    #[serde(default)]
    pub env: Option<String>,
}

/// What an adoption did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdoptView {
    /// The stack, now managed.
    pub stack: StackView,
    /// Each service's container id, unchanged.
    pub containers: std::collections::BTreeMap<String, String>,
    /// Services whose container a later deploy recreates under dockmesh's name.
    pub renamed_on_next_deploy: Vec<String>,
}

/// Every stack the server knows.
pub async fn list(state: &ServerState) -> Result<Vec<StackView>, OpError> {
    let list = state.store().list_stacks().await?;
    Ok(list.into_iter().map(StackView::from).collect())
}

/// The record of a registered stack, or 404.
pub(crate) async fn load(state: &ServerState, name: &str) -> Result<StackRecord, OpError> {
    state
        .store()
        .get_stack(name)
        .await?
        .ok_or_else(|| OpError::not_found(format!("stack {name} is not known")))
}

/// One stack with its files.
pub async fn get(state: &ServerState, name: &str) -> Result<StackDetail, OpError> {
    Ok(load(state, name).await?.into())
}

/// Register a stack (its files); a stack that is not deployed may be registered again with
/// new files. Refused while it is deployed: its files change with a deploy.
pub async fn create(state: &ServerState, req: CreateStack) -> Result<StackView, OpError> {
    validate_stack_name(&req.name).map_err(|e| OpError::bad_request(format!("name: {e}")))?;
    if req.compose.trim().is_empty() {
        return Err(OpError::bad_request("compose: the compose file is empty"));
    }
    let _guard = state.lock_stack(&req.name).await;
    if let Some(existing) = state.store().get_stack(&req.name).await?
        && let Some(host) = existing.host
    {
        return Err(OpError::conflict(format!(
            "stack {} is deployed on {host}; its files change with a deploy, not here",
            req.name
        )));
    }
    let record = StackRecord {
        name: req.name,
        compose: req.compose,
        env: req.env,
        host: None,
        updated_at: state.clock().now(),
    };
    state.store().put_stack(&record, None).await?;
    Ok(record.into())
}

/// Refuse while a migration of the stack is in progress.
pub(crate) async fn no_active_migration(state: &ServerState, name: &str) -> Result<(), OpError> {
    let active = state
        .store()
        .list_migrations(&MigrationQuery {
            active_only: true,
            stack: Some(name.to_owned()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    if let Some(m) = active.first() {
        return Err(OpError::conflict(format!(
            "migration {} of stack {name} is in progress",
            m.spec.id
        ))
        .with_hint("wait for it to settle (`dockmesh migration show ID`)"));
    }
    Ok(())
}

/// Deploy a registered stack on a host (or deploy it again where it runs), as `by`. A stack
/// deployed elsewhere moves with a migration, not here. A first deploy that fails leaves
/// nothing behind on the host.
pub async fn deploy(
    state: &ServerState,
    name: &str,
    req: DeployRequest,
    by: &str,
) -> Result<StatusView, OpError> {
    let (host_id, host) = named_runtime(state, &req.host)?;
    let _guard = state.lock_stack(name).await;
    let record = load(state, name).await?;
    no_active_migration(state, name).await?;
    if let Some(current) = &record.host
        && current != &host_id
    {
        return Err(OpError::conflict(format!(
            "stack {name} is deployed on {current}; move it with `migrate`, not a deploy on {host_id}"
        )));
    }
    let files = StackFiles {
        name: name.to_owned(),
        compose: record.compose.clone(),
        env: record.env.clone(),
    };
    state.config().host_policies.check(&host_id, &files)?;
    host.write_stack_files(&files).await?;
    if let Err(e) = host.deploy(&files).await {
        if record.host.is_none() {
            // A first deploy that failed leaves nothing behind on the host.
            let _ = host.remove_stack_files(name).await;
        }
        return Err(e.into());
    }
    let now = state.clock().now();
    let updated = StackRecord {
        host: Some(host_id.clone()),
        updated_at: now,
        ..record
    };
    // Every deploy is a release of the stack (`GET /api/v1/stacks/{name}/releases`).
    crate::server::stack_upgrade::record_deploy(
        state,
        &host,
        &host_id,
        &updated,
        &DeployRecord {
            stack: name.to_owned(),
            at: now,
            host: host_id.clone(),
            action: "deploy".into(),
            actor: by.to_owned(),
        },
    )
    .await?;
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, by, audit::STACK_DEPLOY, name)
                .with("action", "deploy")
                .with("host", host_id.to_string()),
        )
        .await;
    let status = host.stack_status(name).await?;
    Ok(StatusView {
        name: name.to_owned(),
        host: host_id.0.clone(),
        running: status.all_running(),
        status,
    })
}

/// The status of a deployed stack's containers on its host.
pub async fn status(state: &ServerState, name: &str) -> Result<StatusView, OpError> {
    let record = load(state, name).await?;
    let host_id = record
        .host
        .ok_or_else(|| OpError::conflict(format!("stack {name} is not deployed on any host")))?;
    let host = state.hosts().get(&host_id).ok_or_else(|| {
        OpError::not_found(format!(
            "stack {name} is recorded on host {host_id}, which this server does not know"
        ))
    })?;
    let status = host.stack_status(name).await?;
    Ok(StatusView {
        name: name.to_owned(),
        host: host_id.0,
        running: status.all_running(),
        status,
    })
}

/// Remove a stack, as `by`: its containers and files on its host, and the server's record.
/// Its named volumes are kept unless `q.volumes`. Refused while a migration of it is in
/// progress.
pub async fn remove(
    state: &ServerState,
    name: &str,
    q: DeleteQuery,
    by: &str,
) -> Result<(), OpError> {
    let _guard = state.lock_stack(name).await;
    let record = load(state, name).await?;
    no_active_migration(state, name).await?;
    if let Some(host_id) = &record.host {
        let host = state.hosts().get(host_id).ok_or_else(|| {
            OpError::conflict(format!(
                "stack {name} is recorded on host {host_id}, which this server does not know; \
                 nothing was removed"
            ))
        })?;
        host.remove_stack(name, q.volumes).await?;
        host.remove_stack_files(name).await?;
    }
    state.store().delete_stack(name).await?;
    let now = state.clock().now();
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, by, "stack.remove", name)
                .with(
                    "host",
                    record.host.map(|h| h.0).unwrap_or_else(|| "-".into()),
                )
                .with("volumes", q.volumes.to_string()),
        )
        .await;
    Ok(())
}

/// Forget a registration that was made only for a deploy which then failed: the stack's
/// record goes when it is still not deployed. Failing to forget it is logged, not answered.
pub async fn forget_undeployed(state: &ServerState, name: &str) {
    let _guard = state.lock_stack(name).await;
    if let Ok(Some(rec)) = state.store().get_stack(name).await
        && rec.host.is_none()
        && let Err(err) = state.store().delete_stack(name).await
    {
        tracing::warn!(stack = %name, error = %err, "a stack whose deploy failed stays registered");
    }
}

/// Whether a stack of this name is registered.
pub async fn exists(state: &ServerState, name: &str) -> Result<bool, OpError> {
    Ok(state.store().get_stack(name).await?.is_some())
}

/// Adopt Compose project `name`, running on host `host`, as `by`: its files are read from
/// where its labels record them (or taken from `req`), checked to describe what runs, and
/// recorded as a stack of this server. No container is restarted.
pub async fn adopt(
    state: &ServerState,
    host: &str,
    name: &str,
    req: AdoptRequest,
    by: &str,
) -> Result<AdoptView, OpError> {
    let (host_id, runtime) = known_runtime(state, host)?;
    validate_stack_name(name).map_err(|e| OpError::bad_request(format!("name: {e}")))?;
    let _guard = state.lock_stack(name).await;
    if let Some(existing) = state.store().get_stack(name).await? {
        return Err(OpError::conflict(format!(
            "stack {name} is managed already{}",
            existing
                .host
                .map(|h| format!(" (on {h})"))
                .unwrap_or_default()
        )));
    }
    let given = req.compose.map(|compose| StackFiles {
        name: name.to_owned(),
        compose,
        env: req.env,
    });
    let projects = runtime
        .projects()
        .ok_or_else(|| cannot::adopt_project(runtime.host_id(), name))?;
    let report = projects.adopt_project(name, given.as_ref()).await?;
    let now = state.clock().now();
    let record = StackRecord {
        name: name.to_owned(),
        compose: report.files.compose.clone(),
        env: report.files.env.clone(),
        host: Some(host_id.clone()),
        updated_at: now,
    };
    state
        .store()
        .put_stack(
            &record,
            Some(&DeployRecord {
                stack: name.to_owned(),
                at: now,
                host: host_id.clone(),
                action: "adopt".into(),
                actor: by.to_owned(),
            }),
        )
        .await?;
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, by, "stack.adopt", name)
                .with("host", host_id.to_string())
                .with("containers", report.containers.len().to_string()),
        )
        .await;
    Ok(AdoptView {
        stack: record.into(),
        containers: report.containers,
        renamed_on_next_deploy: report.renamed_on_next_deploy,
    })
}
