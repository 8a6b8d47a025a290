//! Agent upgrades in the server: core's rollout evaluator run every interval (and at once when
//! asked) under the `rollout` lease, the orders sent to agents over their channel, and what
//! agents report back.
//!
//! One evaluation: read the policy, the evaluator state and every agent; let core's
//! [`tick`](rollout::tick) decide; persist each agent's new upgrade state, the evaluator state
//! and the audit events (one `stack.deploy` with `action=agent-upgrade` per dispatch); only then
//! send each order (`POST /v1/upgrade` on the agent's channel). An agent answers at once when it
//! refuses the binary (size, SHA-256, signature) or cannot download it; that answer, or the
//! failure a reverted agent states in its next `hello`, goes through core's
//! [`handle_report`](rollout::handle_report) and is audited as `agent.upgrade_failed`.
//!
//! The evaluator owns the agents' `upgrade` field; the agent registry owns the rest of the
//! record. Both change records under [`ServerState::agent_records`], so neither overwrites the
//! other's change within a server; the lease keeps a second server from evaluating at the same
//! time.

use crate::channel::agent_binaries::{AgentBinaries, ReleaseMeta};
use crate::server::state::ServerState;
use axum::body::Body;
use dockmesh_core::audit::{AGENT_UPGRADE_FAILED, AGENT_UPGRADE_RUN, AuditEvent};
use dockmesh_core::ports::{LeaseClaim, StoreError};
use dockmesh_core::protocol;
use dockmesh_core::rollout::{
    self, AgentRecord, AgentReport, Automatic, ReportOutcome, RolloutError, RolloutPolicy,
    RolloutRecord, UpgradeOrder, UpgradeState,
};
use dockmesh_core::types::AgentId;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The lease that lets one server process drive the rollout.
pub const ROLLOUT_LEASE: &str = "rollout";

/// Where an agent takes an upgrade order (`POST`, an [`UpgradeOrder`]): `202` once the binary
/// is checked and being swapped in, `422` with an [`AgentReport`] when it is refused.
pub const UPGRADE_PATH: &str = "/v1/upgrade";

/// How long an agent may take to download and check a binary before answering an order.
const ORDER_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest the evaluator loop sleeps before looking at the policy and the lease again.
const LOOP_NAP: Duration = Duration::from_secs(5);

/// Why a rollout request was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutServiceError {
    /// Core refused it (invalid policy, upgrade already in flight, nothing to resume, …).
    #[error(transparent)]
    Rule(#[from] RolloutError),
    /// The server serves no agent binaries.
    #[error(
        "this server has no agent binaries to send: start it with --release-key (the public \
         key from `dockmesh release keygen`) and put binaries signed with `dockmesh release \
         sign` in its --agent-binaries directory"
    )]
    NoBinaries,
    /// No agent has that id or host name.
    #[error("no agent with id or host name {0:?}")]
    UnknownAgent(String),
    /// The agent cannot take upgrade orders.
    #[error(
        "agent {agent} speaks protocol {protocol}, which this server does not accept, so it \
         cannot be sent an upgrade: {steps}"
    )]
    TooOld {
        /// The agent.
        agent: String,
        /// Its protocol.
        protocol: u32,
        /// What to do by hand.
        steps: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one evaluation did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evaluation {
    /// The automatic decision (`manual`, `halted`, `waiting_for_gap`, `nothing_eligible`,
    /// `dispatched`).
    #[schema(value_type = Object)]
    pub automatic: Automatic,
    /// The agents sent an order.
    pub dispatched: Vec<String>,
    /// Agents that would have been sent one but have no binary for their platform (now
    /// `pending_manual`).
    pub no_binary: Vec<String>,
    /// Agents whose version differs from the server's.
    pub drifted: u64,
    /// Upgrade states changed without a dispatch (completed, timed out, settled).
    pub settled: usize,
}

/// The manual steps for an agent that cannot upgrade itself.
pub fn manual_steps(version: &str, arch: &str) -> String {
    format!(
        "on the host, install the dockmesh {version} binary for linux/{arch} in place of the \
         agent's (the server serves signed ones under {}/ ; check its SHA-256 against the \
         .release.json beside it), then restart the agent; it reconnects and reports the new \
         version",
        crate::channel::agent_binaries::BINARIES_PATH
    )
}

/// The order of the release the server runs, for the tick (the binary is chosen per agent).
fn release_order(version: &str) -> UpgradeOrder {
    UpgradeOrder {
        version: version.to_owned(),
        binary: format!("dockmesh {version}"),
        size: 0,
        sha256: String::new(),
        signature: None,
        allow_downgrade: false,
    }
}

/// The server's agent binaries, or why there are none.
pub fn binaries(state: &ServerState) -> Result<&AgentBinaries, RolloutServiceError> {
    state
        .config()
        .agent_binaries
        .as_ref()
        .ok_or(RolloutServiceError::NoBinaries)
}

/// Evaluate the rollout now: as the periodic evaluator (`run_by` `None`) or as "run now" asked
/// by `run_by` (an `agent.upgrade_run` event first). Returns once every order is persisted;
/// the orders are sent in the background.
pub async fn evaluate(
    state: &ServerState,
    run_by: Option<&str>,
) -> Result<Evaluation, RolloutServiceError> {
    let binaries = binaries(state)?.clone();
    let version = state.config().version.clone();
    let order = release_order(&version);
    let mut sends: Vec<(AgentId, UpgradeOrder)> = Vec::new();
    let evaluation = {
        let _records = state.agent_records().lock().await;
        let store = state.store();
        let record = store.get_rollout().await?;
        let agents = store.list_agents().await?;
        let now = state.clock().now();
        let outcome = match run_by {
            Some(actor) => {
                rollout::run_now(now, actor, &record.policy, &record.state, &order, &agents)
            }
            None => rollout::tick(now, &record.policy, &record.state, &order, &agents),
        };
        // Each dispatched agent's binary, by its platform (looked up and hashed once per
        // platform, off the async threads); without one it needs a person.
        let mut by_arch: std::collections::BTreeMap<String, Result<ReleaseMeta, String>> =
            Default::default();
        for d in &outcome.dispatches {
            let arch = agents[d.index].arch.clone();
            if let std::collections::btree_map::Entry::Vacant(slot) = by_arch.entry(arch) {
                let (b, v, a) = (binaries.clone(), version.clone(), slot.key().clone());
                let found = tokio::task::spawn_blocking(move || b.find(&v, "linux", &a))
                    .await
                    .unwrap_or_else(|e| Err(format!("looking up the binary failed: {e}")));
                slot.insert(found);
            }
        }
        let metas: std::collections::HashMap<usize, Result<ReleaseMeta, String>> = outcome
            .dispatches
            .iter()
            .map(|d| (d.index, by_arch[&agents[d.index].arch].clone()))
            .collect();
        let mut changes = outcome.owned_changes();
        for (index, upgrade) in changes.iter_mut() {
            if let Some(Err(reason)) = metas.get(index) {
                *upgrade = UpgradeState::PendingManual {
                    since: now,
                    reason: format!("{reason}; {}", manual_steps(&version, &agents[*index].arch)),
                };
            }
        }
        for (index, upgrade) in &changes {
            set_upgrade(state, &agents[*index].id, upgrade.clone()).await?;
        }
        store
            .put_rollout(&RolloutRecord {
                policy: record.policy.clone(),
                state: outcome.state.clone(),
            })
            .await?;
        if let Some(actor) = run_by {
            store
                .append_audit(
                    &AuditEvent::new(now, actor, AGENT_UPGRADE_RUN, "agents")
                        .with("mode", record.policy.mode.as_str())
                        .with("server_version", version.as_str()),
                )
                .await?;
        }
        let mut dispatched = Vec::new();
        let mut no_binary = Vec::new();
        for d in &outcome.dispatches {
            let agent = &agents[d.index];
            let meta = metas
                .get(&d.index)
                .cloned()
                .expect("every dispatch has its binary looked up");
            match meta {
                Ok(meta) => {
                    let event = outcome
                        .dispatch_event(d)
                        .with("binary", meta.file.as_str())
                        .with("sha256", meta.sha256.as_str())
                        .with("host", agent.name.as_str());
                    store.append_audit(&event).await?;
                    dispatched.push(agent.id.0.clone());
                    let mut order = meta.order();
                    order.allow_downgrade = record.policy.allow_downgrade;
                    sends.push((agent.id.clone(), order));
                }
                Err(reason) => {
                    store
                        .append_audit(
                            &AuditEvent::new(
                                now,
                                "system",
                                AGENT_UPGRADE_FAILED,
                                agent.id.as_str(),
                            )
                            .with("agent", agent.id.as_str())
                            .with("host", agent.name.as_str())
                            .with("target_version", version.as_str())
                            .with("kind", "no_binary")
                            .with("reason", reason),
                        )
                        .await?;
                    no_binary.push(agent.id.0.clone());
                }
            }
        }
        Evaluation {
            automatic: outcome.automatic,
            dispatched,
            no_binary,
            drifted: outcome.drifted,
            settled: outcome.transitions.len(),
        }
    };
    for (agent, order) in sends {
        let state = state.clone();
        tokio::spawn(async move { send_order(&state, &agent, &order).await });
    }
    Ok(evaluation)
}

/// Set one agent's upgrade state, keeping the rest of its record as stored now.
async fn set_upgrade(
    state: &ServerState,
    id: &AgentId,
    upgrade: UpgradeState,
) -> Result<(), StoreError> {
    if let Some(mut rec) = state.store().get_agent(id).await? {
        rec.upgrade = upgrade;
        state.store().upsert_agent(&rec).await?;
    }
    Ok(())
}

/// Send `order` to `agent` over its channel; a refusal it answers with is recorded.
async fn send_order(state: &ServerState, agent: &AgentId, order: &UpgradeOrder) {
    let Some(conn) = state.connected_agents().get(agent.as_str()) else {
        record_report(
            state,
            agent,
            &AgentReport::UpgradeFailed {
                reason: "the agent was not connected when its order was to be sent".into(),
            },
        )
        .await;
        return;
    };
    let req = hyper::Request::post(format!("http://agent{UPGRADE_PATH}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(order).expect("an order serialises"),
        ))
        .expect("a POST with a path is a valid request");
    tracing::info!(%agent, version = %order.version, binary = %order.binary, "upgrade order sent");
    let answer = tokio::time::timeout(ORDER_TIMEOUT, async {
        let resp = conn.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = axum::body::to_bytes(Body::new(resp.into_body()), 64 << 10)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body))
    })
    .await;
    match answer {
        Ok(Ok((status, _))) if status.is_success() => {
            tracing::info!(%agent, "the agent took the order and is swapping its binary");
        }
        Ok(Ok((status, body))) => {
            let report = serde_json::from_slice::<AgentReport>(&body).unwrap_or_else(|_| {
                AgentReport::UpgradeFailed {
                    reason: format!(
                        "the agent answered the order with {status}: {}",
                        String::from_utf8_lossy(&body)
                    ),
                }
            });
            record_report(state, agent, &report).await;
        }
        // The connection ended before an answer (the agent may be swapping) or the agent took
        // too long: the upgrade stays in flight; its version or the timeout settles it.
        Ok(Err(e)) => {
            tracing::warn!(%agent, error = %e, "no answer to the upgrade order; waiting for the agent")
        }
        Err(_) => tracing::warn!(%agent, "the agent did not answer the upgrade order in time"),
    }
}

/// Record what an agent reported about its upgrade in flight (core's
/// [`handle_report`](rollout::handle_report)) and audit it; a report about no upgrade in
/// flight changes nothing.
pub async fn record_report(state: &ServerState, agent: &AgentId, report: &AgentReport) {
    if let Err(e) = try_record_report(state, agent, report).await {
        tracing::warn!(%agent, error = %e, "recording the agent's upgrade report failed");
    }
    state.wake_rollout();
}

async fn try_record_report(
    state: &ServerState,
    agent: &AgentId,
    report: &AgentReport,
) -> Result<(), StoreError> {
    let _records = state.agent_records().lock().await;
    let store = state.store();
    let Some(mut rec) = store.get_agent(agent).await? else {
        return Ok(());
    };
    let mut record = store.get_rollout().await?;
    let now = state.clock().now();
    let target = match &rec.upgrade {
        UpgradeState::InFlight { target_version, .. } => target_version.clone(),
        _ => String::new(),
    };
    let ReportOutcome::Changed { upgrade, state: st } =
        rollout::handle_report(now, &rec.upgrade, &record.state, report)
    else {
        return Ok(());
    };
    let (kind, reason) = match report {
        AgentReport::CannotDownload { reason } => ("cannot_download", reason.clone()),
        AgentReport::UpgradeFailed { reason } => ("upgrade_failed", reason.clone()),
        _ => ("other", String::new()),
    };
    tracing::warn!(%agent, kind, %reason, "agent upgrade failed");
    rec.upgrade = upgrade;
    store.upsert_agent(&rec).await?;
    record.state = st;
    store.put_rollout(&record).await?;
    store
        .append_audit(
            &AuditEvent::new(now, agent.as_str(), AGENT_UPGRADE_FAILED, agent.as_str())
                .with("agent", agent.as_str())
                .with("host", rec.name.as_str())
                .with("target_version", target)
                .with("kind", kind)
                .with("reason", reason),
        )
        .await?;
    Ok(())
}

/// An operator asks for one agent's upgrade (by id or host name): it is `requested`, audited
/// as `agent.upgrade_run`, and an evaluation runs at once (it is dispatched when connected).
pub async fn request(
    state: &ServerState,
    actor: &str,
    key: &str,
) -> Result<AgentRecord, RolloutServiceError> {
    binaries(state)?;
    let version = state.config().version.clone();
    {
        let _records = state.agent_records().lock().await;
        let store = state.store();
        let mut rec = store
            .list_agents()
            .await?
            .into_iter()
            .find(|a| a.id.0 == key || a.name == key)
            .ok_or_else(|| RolloutServiceError::UnknownAgent(key.to_owned()))?;
        if !protocol::check(protocol::PROTOCOL_VERSION, rec.protocol_version).accepted() {
            return Err(RolloutServiceError::TooOld {
                agent: rec.id.0.clone(),
                protocol: rec.protocol_version,
                steps: manual_steps(&version, &rec.arch),
            });
        }
        let now = state.clock().now();
        rec.upgrade = rollout::request_upgrade(now, &rec, &version)?;
        store.upsert_agent(&rec).await?;
        store
            .append_audit(
                &AuditEvent::new(now, actor, AGENT_UPGRADE_RUN, rec.id.as_str())
                    .with("action", "request")
                    .with("agent", rec.id.as_str())
                    .with("host", rec.name.as_str())
                    .with("from_version", rec.version.as_str())
                    .with("server_version", version.as_str()),
            )
            .await?;
    }
    evaluate(state, None).await?;
    let id = state
        .store()
        .list_agents()
        .await?
        .into_iter()
        .find(|a| a.id.0 == key || a.name == key)
        .ok_or_else(|| RolloutServiceError::UnknownAgent(key.to_owned()))?;
    Ok(id)
}

/// Replace the policy (checked by core; audited as `agent.upgrade_policy`).
pub async fn set_policy(
    state: &ServerState,
    actor: &str,
    policy: RolloutPolicy,
) -> Result<RolloutRecord, RolloutServiceError> {
    let record = {
        let _records = state.agent_records().lock().await;
        let store = state.store();
        let current = store.get_rollout().await?;
        let change = rollout::set_policy(state.clock().now(), actor, &current, policy)?;
        store.put_rollout(&change.record).await?;
        store.append_audit(&change.event).await?;
        change.record
    };
    state.wake_rollout();
    Ok(record)
}

/// Resume a halted rollout (audited as `agent.upgrade_policy` with `action=resume`).
pub async fn resume(
    state: &ServerState,
    actor: &str,
) -> Result<RolloutRecord, RolloutServiceError> {
    let record = {
        let _records = state.agent_records().lock().await;
        let store = state.store();
        let mut current = store.get_rollout().await?;
        let resumed = rollout::resume(state.clock().now(), actor, &current.state)?;
        current.state = resumed.state;
        store.put_rollout(&current).await?;
        store.append_audit(&resumed.event).await?;
        current
    };
    state.wake_rollout();
    Ok(record)
}

/// Run the evaluator until the task is dropped: whenever it is due by the policy's interval or
/// woken ([`ServerState::wake_rollout`]), while this process holds the rollout lease.
pub async fn run_loop(state: ServerState, owner: String) {
    if state.config().agent_binaries.is_none() {
        tracing::info!(
            "agent upgrades are off: no release key and agent binaries were given \
             (--release-key, --agent-binaries)"
        );
        return;
    }
    let mut woken = true;
    loop {
        let record = match state.store().get_rollout().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the rollout policy failed; retrying");
                tokio::time::sleep(LOOP_NAP).await;
                continue;
            }
        };
        let now = state.clock().now();
        let due = woken || rollout::evaluation_due(now, &record.state, &record.policy);
        if due {
            let ttl = record
                .policy
                .interval
                .checked_mul(3)
                .unwrap_or(SignedDuration::MAX)
                .max(SignedDuration::from_secs(30));
            match state.store().claim_lease(ROLLOUT_LEASE, &owner, ttl).await {
                Ok(LeaseClaim::Granted(_)) => match evaluate(&state, None).await {
                    Ok(e) => {
                        if !e.dispatched.is_empty() || !e.no_binary.is_empty() || e.settled > 0 {
                            tracing::info!(
                                dispatched = e.dispatched.len(),
                                no_binary = e.no_binary.len(),
                                settled = e.settled,
                                drifted = e.drifted,
                                "rollout evaluated"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the rollout evaluation failed"),
                },
                Ok(_) => tracing::debug!("another server holds the rollout lease"),
                Err(e) => tracing::warn!(error = %e, "claiming the rollout lease failed"),
            }
        }
        let wait = rollout::next_evaluation_due(&record.state, &record.policy)
            .map(|at| {
                let left = at.duration_since(state.clock().now());
                Duration::try_from(left).unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::ZERO)
            .clamp(Duration::from_millis(100), LOOP_NAP);
        woken = tokio::time::timeout(wait, state.rollout_woken())
            .await
            .is_ok();
    }
}

/// How many agents stand where, for the policy panel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Counters {
    /// Enrolled agents.
    pub agents: u64,
    /// Connected now.
    pub connected: u64,
    /// Reporting the server's version.
    pub up_to_date: u64,
    /// Reporting another version.
    pub drifted: u64,
    /// Asked for by an operator, not sent yet.
    pub requested: u64,
    /// Sent an order, new version not reported yet.
    pub in_flight: u64,
    /// Whose last upgrade failed.
    pub failed: u64,
    /// Needing a person to install the binary.
    pub pending_manual: u64,
}

/// Count `agents` against the server's `version`.
pub fn counters(
    agents: &[AgentRecord],
    version: &str,
    connected: impl Fn(&str) -> bool,
) -> Counters {
    let mut c = Counters::default();
    for a in agents {
        c.agents += 1;
        c.connected += u64::from(connected(a.id.as_str()));
        if a.version == version {
            c.up_to_date += 1;
        } else {
            c.drifted += 1;
        }
        match a.upgrade {
            UpgradeState::Idle => {}
            UpgradeState::Requested { .. } => c.requested += 1,
            UpgradeState::InFlight { .. } => c.in_flight += 1,
            UpgradeState::Failed { .. } => c.failed += 1,
            UpgradeState::PendingManual { .. } => c.pending_manual += 1,
        }
    }
    c
}

/// The policy, the evaluator's state and where the agents stand.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyView {
    /// The policy (`mode`, `staged` {`percent`, `min_gap`, `canaries`,
    /// `halt_after_failures`}, `interval`, `upgrade_timeout`).
    #[schema(value_type = Object)]
    pub policy: RolloutPolicy,
    /// The evaluator's state (`halted`, `waves`, `failures`, `last_wave_at`, …).
    #[schema(value_type = Object)]
    pub state: rollout::RolloutState,
    /// The version agents are brought to.
    pub server_version: String,
    /// Where the agents stand.
    pub counters: Counters,
    /// Whether the server can send upgrades (it has a release key and a binaries directory).
    pub upgrades_enabled: bool,
    /// The release key's fingerprint, when set.
    pub release_key: Option<String>,
    /// The signed binaries served.
    #[schema(value_type = Vec<Object>)]
    pub binaries: Vec<ReleaseMeta>,
    /// Files of the binaries directory that are not served, with the reason.
    pub refused_binaries: Vec<String>,
    /// When the evaluator runs next by the interval.
    #[schema(value_type = Option<String>)]
    pub next_evaluation: Option<jiff::Timestamp>,
}

/// The policy panel's view.
pub async fn policy_view(state: &ServerState) -> Result<PolicyView, StoreError> {
    let record = state.store().get_rollout().await?;
    let agents = state.store().list_agents().await?;
    let version = state.config().version.clone();
    let connected = state.connected_agents();
    let counters = counters(&agents, &version, |id| connected.get(id).is_some());
    let (release_key, binaries, refused) = match &state.config().agent_binaries {
        Some(b) => {
            let scan = b.scan();
            (
                Some(crate::channel::agent_binaries::fingerprint(b.key())),
                scan.served,
                scan.refused,
            )
        }
        None => (None, Vec::new(), Vec::new()),
    };
    Ok(PolicyView {
        next_evaluation: state
            .config()
            .agent_binaries
            .as_ref()
            .and_then(|_| rollout::next_evaluation_due(&record.state, &record.policy)),
        policy: record.policy,
        state: record.state,
        server_version: version,
        counters,
        upgrades_enabled: state.config().agent_binaries.is_some(),
        release_key,
        binaries,
        refused_binaries: refused,
    })
}
