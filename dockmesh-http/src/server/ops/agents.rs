//! Agents: enrollment, the list of agents, removal (revocation), and agent upgrades (the
//! policy, "run now", resume, one agent's upgrade).

use super::OpError;
use crate::channel::enroll::{self, EnrollRequest, Enrolled};
use crate::server::rollout::{Evaluation, PolicyView};
use crate::server::state::ServerState;
use dockmesh_core::audit::AuditEvent;
use dockmesh_core::migration::{Migration, Phase};
use dockmesh_core::rollout::{AgentRecord, ConnectionState, RolloutPolicy, UpgradeState};
use dockmesh_core::types::{AgentId, HostId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where agents dial: the configured endpoint, else the host the request reached the API at
/// (`request_host`) with the agent listener's port.
fn agent_endpoint(state: &ServerState, request_host: Option<&str>, port: u16) -> String {
    if let Some(e) = &state.config().agent_endpoint {
        return e.clone();
    }
    format!("{}:{port}", request_host.unwrap_or("localhost"))
}

/// Exchange a one-time enrollment token for the agent's client certificate and record the
/// agent as host `req.name`; `request_host` is the host the request reached the API at.
/// Refused tokens and bad requests write nothing; unavailable when the server runs no agent
/// listener.
pub async fn enroll(
    state: &ServerState,
    req: &EnrollRequest,
    request_host: Option<&str>,
) -> Result<Enrolled, OpError> {
    let (Some(ca), Some(port)) = (state.agent_ca(), state.config().agent_port) else {
        return Err(
            OpError::unavailable("agent enrollment is not enabled on this server")
                .with_hint("start the server with its agent listener to enroll agents"),
        );
    };
    // The token and the name are checked before anything is held for the request.
    enroll::check_request(state.store().as_ref(), ca, req, state.clock().now()).await?;
    // One enrollment per name at a time, so two agents cannot take the same name.
    let _guard = state
        .lock_stack(&format!("\u{0}agent-name:{}", req.name))
        .await;
    let now = state.clock().now();
    let taken: Vec<String> = state.hosts().ids().into_iter().map(|h| h.0).collect();
    let endpoint = agent_endpoint(state, request_host, port);
    let mut enrolled =
        enroll::enroll(state.store().as_ref(), ca, req, &taken, now, endpoint).await?;
    // Pinned by the agent at enrollment, the only time it takes a release key unasked.
    enrolled.release_key_pem = (state.config().agent_binaries.as_ref())
        .map(|b| crate::channel::agent_binaries::public_pem(b.key()));
    if let Some(rec) = state
        .store()
        .get_agent(&AgentId::from(enrolled.agent_id.as_str()))
        .await?
    {
        crate::server::agents::register_host(state, &rec).map_err(OpError::conflict)?;
    }
    let _ = state
        .store()
        .append_audit(
            &AuditEvent::new(now, &enrolled.agent_id, "agent.enroll", &enrolled.host)
                .with("agent", enrolled.agent_id.clone()),
        )
        .await;
    tracing::info!(agent = %enrolled.agent_id, host = %enrolled.host, "agent enrolled");
    Ok(enrolled)
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
pub async fn list(state: &ServerState) -> Result<Vec<AgentView>, OpError> {
    let agents = state.store().list_agents().await?;
    Ok(agents.into_iter().map(|a| agent_view(state, a)).collect())
}

/// The agent named by its id or its host's name.
pub async fn find(state: &ServerState, key: &str) -> Result<AgentView, OpError> {
    Ok(agent_view(state, find_agent(state, key).await?))
}

/// How an agent is named in a path: its id or its host's name.
async fn find_agent(state: &ServerState, key: &str) -> Result<AgentRecord, OpError> {
    let agents = state.store().list_agents().await?;
    agents
        .into_iter()
        .find(|a| a.id.0 == key || a.name == key)
        .ok_or_else(|| OpError::not_found(format!("no agent with id or host name {key:?}")))
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

/// Remove (revoke) an agent, by id or host name, as `by`: its record goes (the audit keeps
/// it), its connection is closed and the handshake refuses it from now on. Refused while
/// stacks are recorded on its host, while a migration through it is in flight, or while it
/// keeps a committed migration's source for a rollback.
pub async fn remove(state: &ServerState, key: &str, by: &str) -> Result<Removed, OpError> {
    let agent = find_agent(state, key).await?;
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
        return Err(OpError::conflict(format!(
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
        return Err(OpError::conflict(format!(
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
            &AuditEvent::new(now, by, "agent.remove", &agent.name)
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
    Ok(Removed {
        id: agent.id.0,
        host: agent.name,
        disconnected,
    })
}

fn wire_phase(p: Phase) -> String {
    crate::server::api::health::wire_name(p)
}

/// The agent upgrade policy, the evaluator's state, the agents' counters and the binaries
/// served.
pub async fn policy(state: &ServerState) -> Result<PolicyView, OpError> {
    Ok(crate::server::rollout::policy_view(state).await?)
}

/// Replace the upgrade policy, as `by` (audited as `agent.upgrade_policy`). An invalid value
/// is refused naming the field in the details, and nothing changes.
pub async fn set_policy(
    state: &ServerState,
    policy: RolloutPolicy,
    by: &str,
) -> Result<PolicyView, OpError> {
    crate::server::rollout::set_policy(state, by, policy).await?;
    Ok(crate::server::rollout::policy_view(state).await?)
}

/// The policy as stored, with `allow_downgrade` (which the dashboard's form does not show).
pub async fn stored_policy(state: &ServerState) -> Result<RolloutPolicy, OpError> {
    Ok(state.store().get_rollout().await?.policy)
}

/// Evaluate the rollout now, as `by` ("Run now"; audited as `agent.upgrade_run`). The
/// staged gap and a halt still hold.
pub async fn run(state: &ServerState, by: &str) -> Result<Evaluation, OpError> {
    Ok(crate::server::rollout::evaluate(state, Some(by)).await?)
}

/// Resume a rollout halted by failures, as `by`.
pub async fn resume(state: &ServerState, by: &str) -> Result<PolicyView, OpError> {
    crate::server::rollout::resume(state, by).await?;
    Ok(crate::server::rollout::policy_view(state).await?)
}

/// Upgrade one agent (by id or host name), as `by`, in any mode, even while the rollout is
/// halted: it is sent the order now when connected, else when it connects.
pub async fn upgrade(state: &ServerState, key: &str, by: &str) -> Result<AgentView, OpError> {
    let rec = crate::server::rollout::request(state, by, key).await?;
    Ok(agent_view(state, rec))
}
