//! Stacks: register a compose file (and `.env`), deploy it on a host, read its status, remove it.

use super::actor;
use super::hosts::known_runtime;
use crate::server::auth::Actor;
use crate::server::error::{ApiError, ApiJson};
use crate::server::state::ServerState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
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
pub struct CreateStack {
    /// The stack name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// The content of `compose.yaml`.
    pub compose: String,
    /// The content of `.env`.
    #[serde(default)]
    pub env: Option<String>,
}

/// Where to deploy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeployRequest {
    /// The host's id.
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

/// Every stack the server knows.
#[utoipa::path(get, path = "/api/v1/stacks", tag = "stacks",
    responses((status = 200, body = Vec<StackView>)))]
pub async fn list_stacks(
    State(state): State<ServerState>,
) -> Result<Json<Vec<StackView>>, ApiError> {
    let list = state.store().list_stacks().await?;
    Ok(Json(list.into_iter().map(StackView::from).collect()))
}

pub(crate) async fn load_stack(state: &ServerState, name: &str) -> Result<StackRecord, ApiError> {
    state
        .store()
        .get_stack(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("stack {name} is not known")))
}

/// One stack with its files.
#[utoipa::path(get, path = "/api/v1/stacks/{name}", tag = "stacks",
    params(("name" = String, Path, description = "Stack name")),
    responses((status = 200, body = StackDetail), (status = 404, body = crate::server::error::ErrorBody)))]
pub async fn get_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<StackDetail>, ApiError> {
    Ok(Json(load_stack(&state, &name).await?.into()))
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
    validate_stack_name(&req.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    if req.compose.trim().is_empty() {
        return Err(ApiError::bad_request("compose: the compose file is empty"));
    }
    let _guard = state.lock_stack(&req.name).await;
    let res = async {
        if let Some(existing) = state.store().get_stack(&req.name).await?
            && let Some(host) = existing.host
        {
            return Err(ApiError::conflict(format!(
                "stack {} is deployed on {host}; its files change with a deploy, not here",
                req.name
            )));
        }
        let record = StackRecord {
            name: req.name.clone(),
            compose: req.compose.clone(),
            env: req.env.clone(),
            host: None,
            updated_at: state.clock().now(),
        };
        state.store().put_stack(&record, None).await?;
        Ok(record)
    }
    .await;
    Ok((StatusCode::CREATED, Json(res?.into())))
}

/// Refuse while a migration of the stack is in progress.
pub(crate) async fn no_active_migration(state: &ServerState, name: &str) -> Result<(), ApiError> {
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
        return Err(ApiError::conflict(format!(
            "migration {} of stack {name} is in progress",
            m.spec.id
        ))
        .with_hint("wait for it to settle (`dockmesh migration show ID`)"));
    }
    Ok(())
}

/// Deploy a registered stack on a host (or deploy it again where it runs). A stack deployed
/// elsewhere moves with `migrate`, not here.
#[utoipa::path(post, path = "/api/v1/stacks/{name}/deploy", tag = "stacks", request_body = DeployRequest,
    params(("name" = String, Path, description = "Stack name")),
    responses((status = 200, body = StatusView),
        (status = 400, description = "The compose file is invalid", body = crate::server::error::ErrorBody),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn deploy_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<DeployRequest>,
) -> Result<Json<StatusView>, ApiError> {
    let (host_id, host) = known_runtime(&state, &req.host)?;
    let _guard = state.lock_stack(&name).await;
    let res = async {
        let record = load_stack(&state, &name).await?;
        no_active_migration(&state, &name).await?;
        if let Some(current) = &record.host
            && current != &host_id
        {
            return Err(ApiError::conflict(format!(
                "stack {name} is deployed on {current}; move it with `migrate`, not a deploy on {host_id}"
            )));
        }
        let files = StackFiles {
            name: name.clone(),
            compose: record.compose.clone(),
            env: record.env.clone(),
        };
        state.config().host_policies.check(&host_id, &files)?;
        host.write_stack_files(&files).await?;
        if let Err(e) = host.deploy(&files).await {
            if record.host.is_none() {
                // A first deploy that failed leaves nothing behind on the host.
                let _ = host.remove_stack_files(&name).await;
            }
            return Err(e.into());
        }
        let now = state.clock().now();
        let actor = actor(&by);
        let updated = StackRecord {
            host: Some(host_id.clone()),
            updated_at: now,
            ..record
        };
        // Every deploy is a release of the stack (`GET /api/v1/stacks/{name}/releases`).
        crate::server::stack_upgrade::record_deploy(
            &state,
            &host,
            &host_id,
            &updated,
            &DeployRecord {
                stack: name.clone(),
                at: now,
                host: host_id.clone(),
                action: "deploy".into(),
                actor: actor.clone(),
            },
        )
        .await?;
        let _ = state
            .store()
            .append_audit(
                &AuditEvent::new(now, &actor, audit::STACK_DEPLOY, &name)
                    .with("action", "deploy")
                    .with("host", host_id.to_string()),
            )
            .await;
        let status = host.stack_status(&name).await?;
        Ok(StatusView {
            name: name.clone(),
            host: host_id.0.clone(),
            running: status.all_running(),
            status,
        })
    }
    .await;
    res.map(Json)
}

/// The status of a deployed stack's containers on its host.
#[utoipa::path(get, path = "/api/v1/stacks/{name}/status", tag = "stacks",
    params(("name" = String, Path, description = "Stack name")),
    responses((status = 200, body = StatusView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "The stack is not deployed", body = crate::server::error::ErrorBody)))]
pub async fn stack_status(
    State(state): State<ServerState>,
    Path(name): Path<String>,
) -> Result<Json<StatusView>, ApiError> {
    let record = load_stack(&state, &name).await?;
    let host_id = record
        .host
        .ok_or_else(|| ApiError::conflict(format!("stack {name} is not deployed on any host")))?;
    let host = state.hosts().get(&host_id).ok_or_else(|| {
        ApiError::not_found(format!(
            "stack {name} is recorded on host {host_id}, which this server does not know"
        ))
    })?;
    let status = host.stack_status(&name).await?;
    Ok(Json(StatusView {
        name,
        host: host_id.0,
        running: status.all_running(),
        status,
    }))
}

/// Options of a stack removal.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct DeleteQuery {
    /// Also delete the stack's named volumes (their data is lost). Off by default.
    #[serde(default)]
    pub volumes: bool,
}

/// Remove a stack: its containers and files on its host, and the server's record. Its named
/// volumes are kept unless `volumes=true`. Refused while a migration of it is in progress.
#[utoipa::path(delete, path = "/api/v1/stacks/{name}", tag = "stacks",
    params(("name" = String, Path, description = "Stack name"), DeleteQuery),
    responses((status = 204, description = "Removed"),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn delete_stack(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
    by: Option<Extension<Actor>>,
) -> Result<StatusCode, ApiError> {
    let _guard = state.lock_stack(&name).await;
    let record = load_stack(&state, &name).await?;
    no_active_migration(&state, &name).await?;
    if let Some(host_id) = &record.host {
        let host = state.hosts().get(host_id).ok_or_else(|| {
            ApiError::conflict(format!(
                "stack {name} is recorded on host {host_id}, which this server does not know; \
                 nothing was removed"
            ))
        })?;
        host.remove_stack(&name, q.volumes).await?;
        host.remove_stack_files(&name).await?;
    }
    state.store().delete_stack(&name).await?;
    let now = state.clock().now();
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, actor(&by), "stack.remove", &name)
                .with(
                    "host",
                    record.host.map(|h| h.0).unwrap_or_else(|| "-".into()),
                )
                .with("volumes", q.volumes.to_string()),
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Files for an adoption, when the project's recorded ones should not be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
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

/// Adopt a Compose project that already runs on a host (started with `docker compose up`):
/// its files are read from where its labels record them (or taken from the body), checked to
/// describe what runs, and recorded as a stack of this server. No container is restarted; the
/// stack can then be migrated like any other.
#[utoipa::path(post, path = "/api/v1/hosts/{id}/projects/{name}/adopt", tag = "stacks",
    request_body = AdoptRequest,
    params(("id" = String, Path, description = "Host id"), ("name" = String, Path, description = "Project name")),
    responses((status = 201, body = AdoptView),
        (status = 400, description = "The files do not describe what runs, or cannot be deployed", body = crate::server::error::ErrorBody),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, description = "A stack of that name is managed already", body = crate::server::error::ErrorBody)))]
pub async fn adopt_stack(
    State(state): State<ServerState>,
    Path((host, name)): Path<(String, String)>,
    by: Option<Extension<Actor>>,
    ApiJson(req): ApiJson<AdoptRequest>,
) -> Result<(StatusCode, Json<AdoptView>), ApiError> {
    let (host_id, runtime) = known_runtime(&state, &host)?;
    validate_stack_name(&name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let _guard = state.lock_stack(&name).await;
    if let Some(existing) = state.store().get_stack(&name).await? {
        return Err(ApiError::conflict(format!(
            "stack {name} is managed already{}",
            existing
                .host
                .map(|h| format!(" (on {h})"))
                .unwrap_or_default()
        )));
    }
    let given = req.compose.map(|compose| StackFiles {
        name: name.clone(),
        compose,
        env: req.env,
    });
    let projects = runtime
        .projects()
        .ok_or_else(|| cannot::adopt_project(runtime.host_id(), &name))?;
    let report = projects.adopt_project(&name, given.as_ref()).await?;
    let now = state.clock().now();
    let actor = actor(&by);
    let record = StackRecord {
        name: name.clone(),
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
                stack: name.clone(),
                at: now,
                host: host_id.clone(),
                action: "adopt".into(),
                actor: actor.clone(),
            }),
        )
        .await?;
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, &actor, "stack.adopt", &name)
                .with("host", host_id.to_string())
                .with("containers", report.containers.len().to_string()),
        )
        .await;
    Ok((
        StatusCode::CREATED,
        Json(AdoptView {
            stack: record.into(),
            containers: report.containers,
            renamed_on_next_deploy: report.renamed_on_next_deploy,
        }),
    ))
}
