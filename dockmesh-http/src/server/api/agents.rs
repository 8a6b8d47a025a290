//! Agents: enrollment (`POST /api/v1/agents/enroll`, authenticated by the one-time enrollment
//! token in the body rather than an API token), the list of agents, and removal (revocation).

use crate::channel::enroll::{self, EnrollError, EnrollRequest, Enrolled};
use crate::server::error::{ApiError, ApiJson};
use crate::server::limit::ClientKey;
use crate::server::state::ServerState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use dockmesh_core::audit::AuditEvent;
use dockmesh_core::migration::{Migration, Phase};
use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
use dockmesh_core::types::{AgentId, HostId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> Self {
        let hint = e.hint();
        let api = match &e {
            EnrollError::Malformed | EnrollError::Csr(_) | EnrollError::BadName { .. } => {
                ApiError::bad_request(format!("{e}")).with_details(serde_json::json!({
                    "cause": std::error::Error::source(&e).map(|s| s.to_string()),
                }))
            }
            EnrollError::NameTaken(_) => ApiError::conflict(e.to_string()),
            EnrollError::WrongCa
            | EnrollError::Unknown
            | EnrollError::Expired
            | EnrollError::AlreadyUsed => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "enrollment_refused",
                e.to_string(),
            ),
            EnrollError::Store(_) | EnrollError::Pki(_) | EnrollError::Random(_) => {
                tracing::error!(error = ?e, "enrollment failed");
                ApiError::internal(e.to_string())
            }
        };
        api.with_hint(hint)
    }
}

/// Where agents dial: the configured endpoint, else the host the request reached the API at
/// with the agent listener's port.
fn agent_endpoint(state: &ServerState, headers: &HeaderMap, port: u16) -> String {
    if let Some(e) = &state.config().agent_endpoint {
        return e.clone();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map(|a| a.host().to_owned())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{port}")
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
    enroll_checked(state, headers, req)
        .await
        .map_err(IntoResponse::into_response)
}

async fn enroll_checked(
    state: ServerState,
    headers: HeaderMap,
    req: EnrollRequest,
) -> Result<Json<Enrolled>, ApiError> {
    let (Some(ca), Some(port)) = (state.agent_ca(), state.config().agent_port) else {
        return Err(
            ApiError::unavailable("agent enrollment is not enabled on this server")
                .with_hint("start the server with its agent listener to enroll agents"),
        );
    };
    // The token and the name are checked before anything is held for the request.
    enroll::check_request(state.store().as_ref(), ca, &req, state.clock().now()).await?;
    // One enrollment per name at a time, so two agents cannot take the same name.
    let _guard = state
        .lock_stack(&format!("\u{0}agent-name:{}", req.name))
        .await;
    let now = state.clock().now();
    let taken: Vec<String> = state.hosts().ids().into_iter().map(|h| h.0).collect();
    let endpoint = agent_endpoint(&state, &headers, port);
    let mut enrolled =
        enroll::enroll(state.store().as_ref(), ca, &req, &taken, now, endpoint).await?;
    // Pinned by the agent at enrollment, the only time it takes a release key unasked.
    enrolled.release_key_pem = (state.config().agent_binaries.as_ref())
        .map(|b| crate::channel::agent_binaries::public_pem(b.key()));
    if let Some(rec) = state
        .store()
        .get_agent(&AgentId::from(enrolled.agent_id.as_str()))
        .await?
    {
        crate::server::agents::register_host(&state, &rec).map_err(ApiError::conflict)?;
    }
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, &enrolled.agent_id, "agent.enroll", &enrolled.host)
                .with("agent", enrolled.agent_id.clone()),
        )
        .await;
    tracing::info!(agent = %enrolled.agent_id, host = %enrolled.host, "agent enrolled");
    Ok(Json(enrolled))
}

/// An agent as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    /// The agent's id (its certificate names it).
    pub id: String,
    /// The host it serves.
    pub host: String,
    /// Whether it is connected now.
    pub connected: bool,
    /// The version it reports.
    pub version: String,
    /// Whether that version differs from the server's.
    pub drift: bool,
    /// The protocol it speaks.
    pub protocol_version: u32,
    /// CPU architecture.
    pub arch: String,
    /// The host's Docker engine version.
    pub docker_version: String,
    /// When it was last heard from.
    #[schema(value_type = Option<String>)]
    pub last_seen: Option<Timestamp>,
    /// Its upgrade state (`idle`, `pending_manual` with the reason, …).
    #[schema(value_type = Object)]
    pub upgrade: UpgradeState,
    /// Where it stands, in one word: `up_to_date`, `drifted`, `requested`, `upgrading`,
    /// `failed` or `pending_manual`.
    pub status: String,
    /// For an agent that needs a person (`pending_manual`), what to do on its host.
    pub manual_steps: Option<String>,
}

/// An agent's upgrade standing in one word.
pub fn upgrade_status(a: &AgentRecord, server_version: &str) -> &'static str {
    match a.upgrade {
        UpgradeState::Requested { .. } => "requested",
        UpgradeState::InFlight { .. } => "upgrading",
        UpgradeState::Failed { .. } => "failed",
        UpgradeState::PendingManual { .. } => "pending_manual",
        UpgradeState::Idle if a.version == server_version => "up_to_date",
        UpgradeState::Idle => "drifted",
    }
}

pub(crate) fn agent_view(state: &ServerState, a: AgentRecord) -> AgentView {
    let connected = state.connected_agents().get(&a.id.0).is_some();
    let server = state.config().version.as_str();
    let status = upgrade_status(&a, server).to_owned();
    let manual_steps = matches!(a.upgrade, UpgradeState::PendingManual { .. })
        .then(|| crate::server::rollout::manual_steps(server, &a.arch));
    AgentView {
        status,
        manual_steps,
        drift: !a.version.is_empty() && a.version != server,
        connected,
        id: a.id.0,
        host: a.name,
        version: a.version,
        protocol_version: a.protocol_version,
        arch: a.arch,
        docker_version: a.docker_version,
        last_seen: a.last_seen,
        upgrade: a.upgrade,
    }
}

/// Every enrolled agent, by id.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<AgentView>)))]
pub async fn list_agents(
    State(state): State<ServerState>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = state.store().list_agents().await?;
    Ok(Json(
        agents.into_iter().map(|a| agent_view(&state, a)).collect(),
    ))
}

/// How an agent is named in a path: its id or its host's name.
async fn find_agent(state: &ServerState, key: &str) -> Result<AgentRecord, ApiError> {
    let agents = state.store().list_agents().await?;
    agents
        .into_iter()
        .find(|a| a.id.0 == key || a.name == key)
        .ok_or_else(|| ApiError::not_found(format!("no agent with id or host name {key:?}")))
}

/// What removing an agent did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Removed {
    /// The agent's id.
    pub id: String,
    /// Its host.
    pub host: String,
    /// Whether its live connection was closed.
    pub disconnected: bool,
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
    let agent = find_agent(&state, &key).await?;
    let host = HostId::from(agent.name.as_str());
    let stacks: Vec<String> = state
        .store()
        .list_stacks()
        .await?
        .into_iter()
        .filter(|s| s.host.as_ref() == Some(&host))
        .map(|s| s.name)
        .collect();
    if !stacks.is_empty() {
        return Err(ApiError::conflict(format!(
            "host {} still runs stacks: {}",
            agent.name,
            stacks.join(", ")
        ))
        .with_hint("move them with `dockmesh stack migrate` or drain the host first"));
    }
    // A migration still in flight through this host, or one whose source it keeps for a
    // rollback, would lose what it needs.
    let now = state.clock().now();
    let mut holds = Vec::new();
    for m in crate::server::supervisor::all_migrations(state.store().as_ref(), false).await? {
        let Ok(mig) = Migration::replay(m.spec.clone(), &m.events) else {
            continue;
        };
        let spec = mig.spec();
        let kept_source = spec.source == host
            && mig.phase() == Phase::Committed
            && mig.retain_until().is_some_and(|u| u > now);
        let in_flight = !mig.phase().is_settled() && (spec.source == host || spec.target == host);
        if kept_source || in_flight {
            holds.push(format!(
                "{} (stack {}, {})",
                spec.id,
                spec.stack,
                wire_phase(mig.phase())
            ));
        }
    }
    if !holds.is_empty() {
        return Err(ApiError::conflict(format!(
            "host {} is still needed by migration(s): {}",
            agent.name,
            holds.join(", ")
        ))
        .with_hint(
            "wait for migrations in flight to settle; purge a kept source with `dockmesh \
             migration purge-source ID` (or let its rollback window close) first",
        ));
    }
    state
        .store()
        .append_audit(
            &AuditEvent::new(now, super::actor(&actor), "agent.remove", &agent.name)
                .with("agent", agent.id.0.clone())
                .with("version", agent.version.clone())
                .with(
                    "connected",
                    (agent.connection == ConnectionState::Connected).to_string(),
                ),
        )
        .await?;
    state.store().delete_agent(&agent.id).await?;
    state.hosts().remove(&host);
    state.host_events().forget(&host);
    let disconnected = state.connected_agents().disconnect(&agent.id.0);
    tracing::info!(agent = %agent.id, host = %agent.name, "agent removed");
    Ok(Json(Removed {
        id: agent.id.0,
        host: agent.name,
        disconnected,
    }))
}

fn wire_phase(p: Phase) -> String {
    super::health::wire_name(p)
}

impl From<crate::server::rollout::RolloutServiceError> for ApiError {
    fn from(e: crate::server::rollout::RolloutServiceError) -> Self {
        use crate::server::rollout::RolloutServiceError as E;
        use dockmesh_core::rollout::RolloutError as R;
        match e {
            E::Rule(R::InvalidPolicy { field, ref problem }) => {
                ApiError::bad_request(e.to_string()).with_details(serde_json::json!({
                    "field": field,
                    "problem": problem,
                }))
            }
            E::Rule(_) | E::NoBinaries | E::TooOld { .. } => ApiError::conflict(e.to_string()),
            E::UnknownAgent(_) => ApiError::not_found(e.to_string()),
            E::Store(s) => s.into(),
        }
    }
}

/// The agent upgrade policy, the evaluator's state, the agents' counters and the binaries
/// served.
#[utoipa::path(get, path = "/api/v1/agents/upgrade-policy", tag = "agents",
    responses((status = 200, body = crate::server::rollout::PolicyView)))]
pub async fn get_policy(
    State(state): State<ServerState>,
) -> Result<Json<crate::server::rollout::PolicyView>, ApiError> {
    Ok(Json(crate::server::rollout::policy_view(&state).await?))
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
    crate::server::rollout::set_policy(&state, &super::actor(&actor), policy).await?;
    Ok(Json(crate::server::rollout::policy_view(&state).await?))
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
    Ok(Json(
        crate::server::rollout::evaluate(&state, Some(&super::actor(&actor))).await?,
    ))
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
    crate::server::rollout::resume(&state, &super::actor(&actor)).await?;
    Ok(Json(crate::server::rollout::policy_view(&state).await?))
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
    let rec = crate::server::rollout::request(&state, &super::actor(&actor), &key).await?;
    Ok((StatusCode::ACCEPTED, Json(agent_view(&state, rec))))
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
