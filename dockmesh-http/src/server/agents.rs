//! The server's agents: the registry of enrolled agents (their [`AgentRecord`]s in the store),
//! admission at the handshake, and the host each agent serves.
//!
//! An agent is admitted only while its record exists: removing the record revokes the agent
//! (its certificate stays valid for the CA, but the handshake refuses it and tells it why). A
//! connected agent's record follows what it says in `hello` (version, protocol, arch, Docker
//! version) and whether it is connected; an agent refused for its protocol is recorded as
//! needing a manual upgrade. Every agent is a host named by its record's `name`, a
//! [`RemoteHost`] that follows the agent across reconnects and is unreachable while it is away.

use crate::channel::wire::Refusal;
use crate::channel::{AgentConnection, RemoteHost};
use crate::server::agent_listener::AgentGate;
use crate::server::renew;
use crate::server::state::ServerState;
use dockmesh_core::ports::StoreError;
use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
use dockmesh_core::types::{AgentId, HostId};
use std::sync::Arc;
use std::time::Duration;

/// How long the server waits for a new connection's `hello`.
const HELLO_WAIT: Duration = Duration::from_secs(15);

/// The [`AgentGate`] of a server: admission by the store's records, records kept current.
#[derive(Clone)]
pub struct AgentRegistry {
    state: ServerState,
}

impl std::fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRegistry").finish_non_exhaustive()
    }
}

impl AgentRegistry {
    /// Hold the agent's event stream open on `conn` (`GET /v1/events`) until the connection
    /// ends; its events are kept as its host's. An agent that does not serve events (an older
    /// one) is noted and left alone.
    fn follow_events(&self, conn: AgentConnection) {
        let state = self.state.clone();
        tokio::spawn(async move {
            let id = AgentId::from(conn.agent_id());
            let Ok(Some(rec)) = state.store().get_agent(&id).await else {
                return;
            };
            let host = RemoteHost::new(HostId::from(rec.name.as_str()), conn.clone());
            // The open stream would keep a closed (replaced, removed) connection's socket
            // alive: it is dropped once the connection is closed.
            let closed = async {
                while !conn.is_closed() {
                    tokio::time::sleep(EVENTS_CLOSED_POLL).await;
                }
            };
            tokio::select! {
                r = state.host_events().follow(&host) => if let Err(e) = r {
                    tracing::debug!(agent = %id, error = %e, "the agent's event stream ended");
                },
                () = closed => {}
            }
        });
    }

    /// The registry of `state`'s server.
    pub fn new(state: ServerState) -> AgentRegistry {
        AgentRegistry { state }
    }

    /// Add the host of every stored agent (at start); returns how many were added. A name
    /// already taken by a host reached by socket is logged and skipped.
    pub async fn register_stored(&self) -> Result<usize, StoreError> {
        let mut added = 0;
        for agent in self.state.store().list_agents().await? {
            match register_host(&self.state, &agent) {
                Ok(()) => added += 1,
                Err(e) => tracing::warn!(agent = %agent.id, host = %agent.name, error = %e,
                    "the agent's host is not served: its name is taken"),
            }
        }
        Ok(added)
    }

    async fn update(&self, agent_id: &str, change: impl FnOnce(&mut AgentRecord)) {
        let _records = self.state.agent_records().lock().await;
        let store = self.state.store();
        let id = AgentId::from(agent_id);
        match store.get_agent(&id).await {
            Ok(Some(mut rec)) => {
                change(&mut rec);
                if let Err(e) = store.upsert_agent(&rec).await {
                    tracing::warn!(agent = agent_id, error = %e, "recording the agent failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(agent = agent_id, error = %e, "reading the agent failed"),
        }
    }
}

impl AgentRegistry {
    /// While `conn` lives, renew its agent's certificate when it ends within
    /// [`renew::RENEW_BEFORE`] (looked at on connection and every [`renew::RENEW_CHECK`]).
    fn keep_certificate_fresh(&self, conn: AgentConnection) {
        let Some(ca) = self.state.agent_ca().cloned() else {
            return;
        };
        let clock = self.state.clock().clone();
        let mut ends = conn.cert_not_after();
        tokio::spawn(async move {
            let mut next_check = Duration::ZERO;
            while !conn.is_closed() {
                if next_check.is_zero() {
                    next_check = renew::RENEW_CHECK;
                    let now = clock.now().as_second();
                    let due = ends.is_some_and(|e| {
                        e - now < i64::try_from(renew::RENEW_BEFORE.as_secs()).unwrap_or(i64::MAX)
                    });
                    if due {
                        match renew::renew(&conn, &ca).await {
                            Ok(new_end) => {
                                tracing::info!(
                                    agent = conn.agent_id(),
                                    until = new_end,
                                    "agent certificate renewed"
                                );
                                ends = Some(new_end);
                            }
                            Err(e) => tracing::warn!(agent = conn.agent_id(), error = %e,
                                "renewing the agent's certificate failed; retried later"),
                        }
                    }
                }
                let nap = next_check.min(CLOSED_POLL);
                tokio::time::sleep(nap).await;
                next_check = next_check.saturating_sub(nap);
            }
        });
    }
}

/// Offer the agent the release key (it takes only the key it pinned at enrollment); a
/// refusal is logged.
async fn offer_release_key(conn: &AgentConnection, pem: &str) {
    let req = hyper::Request::put(format!(
        "http://agent{}",
        crate::agent::agent_upgrade::RELEASE_KEY_PATH
    ))
    .body(axum::body::Body::from(pem.to_owned()))
    .expect("a PUT with a path is a valid request");
    match conn.request(req).await {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) if resp.status() == hyper::StatusCode::NOT_FOUND => {
            tracing::debug!(agent = conn.agent_id(), "the agent takes no release key")
        }
        Ok(resp) => {
            let status = resp.status();
            let body = axum::body::to_bytes(axum::body::Body::new(resp.into_body()), 16 << 10)
                .await
                .unwrap_or_default();
            tracing::warn!(agent = conn.agent_id(), %status,
                "the agent refused the release key: {}; upgrades signed with it will be refused",
                String::from_utf8_lossy(&body));
        }
        Err(e) => {
            tracing::warn!(agent = conn.agent_id(), error = %e, "offering the release key failed")
        }
    }
}

/// How often the renewal task looks whether its connection closed.
const CLOSED_POLL: Duration = Duration::from_secs(30);
/// How often an agent's event stream looks whether its connection was closed.
const EVENTS_CLOSED_POLL: Duration = Duration::from_secs(1);

/// Serve `agent`'s host (a [`RemoteHost`] over the server's connected agents).
pub fn register_host(state: &ServerState, agent: &AgentRecord) -> Result<(), String> {
    state.hosts().add(Arc::new(
        RemoteHost::registered(
            HostId::from(agent.name.as_str()),
            state.connected_agents().clone(),
            agent.id.0.clone(),
        )
        .with_compression(state.config().agent_compression),
    ))
}

#[async_trait::async_trait]
impl AgentGate for AgentRegistry {
    async fn admit(&self, agent_id: &str) -> Result<(), Refusal> {
        match self.state.store().get_agent(&AgentId::from(agent_id)).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Refusal::not_admitted(&format!(
                "agent {agent_id} is not enrolled on this server (it was removed, or enrolled \
                 with another server): enroll it again with a token from `dockmesh agent token \
                 create`"
            ))),
            Err(e) => Err(Refusal::unavailable(&format!(
                "the server could not read its agent registry ({e}); the agent retries"
            ))),
        }
    }

    async fn refused_protocol(&self, agent_id: &str, agent_protocol: u32, reason: &str) {
        let now = self.state.clock().now();
        let reason = reason.to_owned();
        self.update(agent_id, move |rec| {
            rec.protocol_version = agent_protocol;
            rec.last_seen = Some(now);
            if !matches!(rec.upgrade, UpgradeState::PendingManual { .. }) {
                rec.upgrade = UpgradeState::PendingManual { since: now, reason };
            }
        })
        .await;
    }

    async fn connected(&self, conn: AgentConnection) {
        let hello = match tokio::time::timeout(HELLO_WAIT, conn.hello()).await {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => {
                tracing::warn!(agent = conn.agent_id(), error = %e, "the agent's hello failed");
                None
            }
            Err(_) => {
                tracing::warn!(agent = conn.agent_id(), "the agent's hello did not come");
                None
            }
        };
        self.keep_certificate_fresh(conn.clone());
        self.follow_events(conn.clone());
        if let Some(b) = &self.state.config().agent_binaries {
            offer_release_key(&conn, &crate::channel::agent_binaries::public_pem(b.key())).await;
        }
        let now = self.state.clock().now();
        let protocol = conn.protocol();
        let failure = hello.as_ref().and_then(|h| h.upgrade_failure.clone());
        if let Some(h) = &hello {
            tracing::info!(agent = conn.agent_id(), version = %h.version, "agent hello");
        }
        self.update(conn.agent_id(), move |rec| {
            rec.connection = ConnectionState::Connected;
            rec.last_seen = Some(now);
            rec.protocol_version = protocol;
            if let Some(h) = hello {
                rec.version = h.version;
                rec.commit = h.commit;
                rec.arch = h.arch;
                rec.docker_version = h.docker_version;
            }
            if matches!(rec.upgrade, UpgradeState::PendingManual { .. }) {
                // It connects with an accepted protocol now: it was upgraded by hand.
                rec.upgrade = UpgradeState::Idle;
            }
        })
        .await;
        // A reverted upgrade is reported in the hello of the previous binary; only the upgrade
        // in flight to that version is settled by it.
        if let Some(f) = failure {
            let id = AgentId::from(conn.agent_id());
            let in_flight = self.state.store().get_agent(&id).await.ok().flatten().is_some_and(
                |r| matches!(&r.upgrade, UpgradeState::InFlight { target_version, .. } if *target_version == f.target_version),
            );
            if in_flight {
                crate::server::rollout::record_report(
                    &self.state,
                    &id,
                    &dockmesh_core::rollout::AgentReport::UpgradeFailed { reason: f.reason },
                )
                .await;
            }
        }
        self.state.wake_rollout();
    }

    async fn disconnected(&self, agent_id: &str) {
        let now = self.state.clock().now();
        self.update(agent_id, move |rec| {
            rec.connection = ConnectionState::Disconnected;
            rec.last_seen = Some(now);
        })
        .await;
    }
}
