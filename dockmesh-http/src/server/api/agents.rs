//! Agents: enrollment (`POST /api/v1/agents/enroll`, authenticated by the one-time enrollment
//! token in the body rather than an API token), the list of agents, and removal (revocation).
//! The operations are [`crate::server::ops::agents`].

use crate::channel::enroll::{EnrollRequest, Enrolled};
use crate::server::error::{ApiError, ApiJson};
use crate::server::limit::ClientKey;
use crate::server::ops;
use crate::server::state::ServerState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

pub use crate::server::ops::agents::{AgentView, Removed, upgrade_status};

impl From<crate::channel::enroll::EnrollError> for ApiError {
    fn from(e: crate::channel::enroll::EnrollError) -> Self {
        ops::OpError::from(e).into()
    }
}

impl From<crate::server::rollout::RolloutServiceError> for ApiError {
    fn from(e: crate::server::rollout::RolloutServiceError) -> Self {
        ops::OpError::from(e).into()
    }
}

/// Exchange a one-time enrollment token for the agent's client certificate and record the
/// agent as host `name`. Refused tokens and bad requests write nothing; 503 when the server
/// runs no agent listener.
#[utoipa::path(post, path = "/api/v1/agents/enroll", tag = "agents", security(()),
    request_body = EnrollRequest,
    responses(
        (status = 200, body = Enrolled),
        (status = 400, body = crate::server::error::ErrorBody),
        (status = 401, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody),
        (status = 413, body = crate::server::error::ErrorBody),
        (status = 429, body = crate::server::error::ErrorBody),
        (status = 503, body = crate::server::error::ErrorBody)))]
pub async fn enroll(
    State(state): State<ServerState>,
    ClientKey(client): ClientKey,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<Enrolled>, axum::response::Response> {
    if let Err(wait) = state.auth_limits().enroll.attempt(client) {
        return Err(crate::server::limit::too_many("enrollment attempts", wait));
    }
    let request_host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.host().to_owned());
    match ops::agents::enroll(&state, &req, request_host.as_deref()).await {
        Ok(enrolled) => Ok(Json(enrolled)),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

/// Every enrolled agent, by id.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<AgentView>)))]
pub async fn list_agents(
    State(state): State<ServerState>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    Ok(Json(ops::agents::list(&state).await?))
}

/// Remove (revoke) an agent, by id or host name: its record goes (the audit keeps it), its
/// connection is closed and the handshake refuses it from now on. Refused (409) while stacks
/// are recorded on its host, while a migration through it is in flight, or while it keeps a
/// committed migration's source for a rollback.
#[utoipa::path(delete, path = "/api/v1/agents/{agent}", tag = "agents",
    params(("agent" = String, Path, description = "agent id or host name")),
    responses(
        (status = 200, body = Removed),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn remove_agent(
    State(state): State<ServerState>,
    actor: Option<axum::Extension<crate::server::auth::Actor>>,
    Path(key): Path<String>,
) -> Result<Json<Removed>, ApiError> {
    Ok(Json(
        ops::agents::remove(&state, &key, &super::actor(&actor)).await?,
    ))
}

/// The agent upgrade policy, the evaluator's state, the agents' counters and the binaries
/// served.
#[utoipa::path(get, path = "/api/v1/agents/upgrade-policy", tag = "agents",
    responses((status = 200, body = crate::server::rollout::PolicyView)))]
pub async fn get_policy(
    State(state): State<ServerState>,
) -> Result<Json<crate::server::rollout::PolicyView>, ApiError> {
    Ok(Json(ops::agents::policy(&state).await?))
}

/// Replace the upgrade policy (`mode` manual|auto|staged; `staged`: `percent` 1–100,
/// `min_gap`, `canaries`, `halt_after_failures`; `interval`; `upgrade_timeout`;
/// `allow_downgrade` (off: agents refuse an order older than their version); durations
/// like `5m` or `PT5M`; fields left out take their defaults). An invalid value is refused
/// with 400 naming the field, and nothing changes. Audited as `agent.upgrade_policy`.
#[utoipa::path(put, path = "/api/v1/agents/upgrade-policy", tag = "agents",
    request_body(content = Object, description = "the policy"),
    responses(
        (status = 200, body = crate::server::rollout::PolicyView),
        (status = 400, body = crate::server::error::ErrorBody)))]
pub async fn put_policy(
    State(state): State<ServerState>,
    actor: Option<axum::Extension<crate::server::auth::Actor>>,
    ApiJson(policy): ApiJson<dockmesh_core::rollout::RolloutPolicy>,
) -> Result<Json<crate::server::rollout::PolicyView>, ApiError> {
    Ok(Json(
        ops::agents::set_policy(&state, policy, &super::actor(&actor)).await?,
    ))
}

/// Evaluate the rollout now ("Run now"; audited as `agent.upgrade_run`). The staged gap and
/// a halt still hold. 409 when the server has no agent binaries.
#[utoipa::path(post, path = "/api/v1/agents/upgrade-policy/run", tag = "agents",
    responses(
        (status = 200, body = crate::server::rollout::Evaluation),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn run_policy(
    State(state): State<ServerState>,
    actor: Option<axum::Extension<crate::server::auth::Actor>>,
) -> Result<Json<crate::server::rollout::Evaluation>, ApiError> {
    Ok(Json(ops::agents::run(&state, &super::actor(&actor)).await?))
}

/// Resume a rollout halted by failures (409 when it is not halted).
#[utoipa::path(post, path = "/api/v1/agents/upgrade-policy/resume", tag = "agents",
    responses(
        (status = 200, body = crate::server::rollout::PolicyView),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn resume_policy(
    State(state): State<ServerState>,
    actor: Option<axum::Extension<crate::server::auth::Actor>>,
) -> Result<Json<crate::server::rollout::PolicyView>, ApiError> {
    Ok(Json(
        ops::agents::resume(&state, &super::actor(&actor)).await?,
    ))
}

/// Upgrade one agent (by id or host name) in any mode, even while the rollout is halted:
/// it is sent the order now when connected, else when it connects. 409 when an upgrade is in
/// flight, when it already runs the server's version, when it is too old to take an order
/// (the manual steps are in the error), or when the server has no binaries.
#[utoipa::path(post, path = "/api/v1/agents/{agent}/upgrade", tag = "agents",
    params(("agent" = String, Path, description = "agent id or host name")),
    responses(
        (status = 202, body = AgentView),
        (status = 404, body = crate::server::error::ErrorBody),
        (status = 409, body = crate::server::error::ErrorBody)))]
pub async fn upgrade_agent(
    State(state): State<ServerState>,
    actor: Option<axum::Extension<crate::server::auth::Actor>>,
    Path(key): Path<String>,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let view = ops::agents::upgrade(&state, &key, &super::actor(&actor)).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// A signed agent binary (no token needed: agents download it, and check its size, SHA-256
/// and signature). Range requests resume an interrupted download.
pub async fn download_binary(
    State(state): State<ServerState>,
    Path(file): Path<String>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let Some(path) = state
        .config()
        .agent_binaries
        .as_ref()
        .and_then(|b| b.served_path(&file))
    else {
        return ApiError::not_found(format!("no signed agent binary named {file:?}"))
            .into_response();
    };
    match tower_http::services::ServeFile::new(path)
        .oneshot(req)
        .await
    {
        Ok(r) => r.into_response(),
        Err(e) => ApiError::internal(format!("reading the binary failed: {e}")).into_response(),
    }
}
