//! The server's client end of the channel: one HTTP/2 client per connected agent
//! ([`AgentConnection`]), the registry of live connections ([`ConnectedAgents`]), and the
//! errors of a call. The listener that makes them is `crate::server::agent_listener`.

use axum::body::Body;
use dockmesh_core::protocol::Hello;
use hyper::client::conn::http2::SendRequest;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::AbortHandle;

/// Why a call to an agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be sent or answered (connection closed, peer dead).
    #[error("the agent's connection failed")]
    Connection(#[from] hyper::Error),
    /// The agent answered with an error status.
    #[error("the agent answered {status}")]
    Status {
        /// The status.
        status: hyper::StatusCode,
    },
    /// The body could not be read.
    #[error("the agent's answer could not be read")]
    Body(#[source] axum::Error),
    /// The body is not the JSON expected.
    #[error("the agent's answer is not the expected JSON")]
    Json(#[from] serde_json::Error),
}

/// One live connection to an agent: the HTTP/2 client of its API.
#[derive(Clone)]
pub struct AgentConnection {
    pub(crate) agent_id: String,
    pub(crate) protocol: u32,
    pub(crate) cert_not_after: Option<i64>,
    pub(crate) send: SendRequest<Body>,
}

impl std::fmt::Debug for AgentConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConnection")
            .field("agent_id", &self.agent_id)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// The largest answer body read into memory by [`AgentConnection::get_json`].
const JSON_LIMIT: usize = 4 << 20;

impl AgentConnection {
    /// The agent's id (from its certificate).
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }

    /// The protocol version the connection negotiated.
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// When the certificate the agent presented ends (seconds since the Unix epoch).
    pub fn cert_not_after(&self) -> Option<i64> {
        self.cert_not_after
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// Send a request to the agent's API (its URI's path names the endpoint).
    pub async fn request(
        &self,
        req: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CallError> {
        let mut send = self.send.clone();
        send.ready().await?;
        Ok(send.send_request(req).await?)
    }

    /// `GET path` on the agent's API, its JSON answer decoded.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, CallError> {
        let req = hyper::Request::get(format!("http://agent{path}"))
            .body(Body::empty())
            .expect("a GET with a path is a valid request");
        let resp = self.request(req).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(CallError::Status { status });
        }
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), JSON_LIMIT)
            .await
            .map_err(CallError::Body)?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// What the agent says about itself (`GET /v1/hello`).
    pub async fn hello(&self) -> Result<Hello, CallError> {
        self.get_json("/v1/hello").await
    }
}

struct Slot {
    generation: u64,
    conn: AgentConnection,
    task: AbortHandle,
}

/// The agents connected now: one live connection per agent id.
#[derive(Clone, Default)]
pub struct ConnectedAgents {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    generation: Arc<AtomicU64>,
}

impl std::fmt::Debug for ConnectedAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectedAgents")
            .field("agents", &self.ids())
            .finish()
    }
}

impl ConnectedAgents {
    /// The live connection of `agent_id`.
    pub fn get(&self, agent_id: &str) -> Option<AgentConnection> {
        let slots = self.slots.lock().expect("agent registry lock");
        slots
            .get(agent_id)
            .filter(|s| !s.conn.is_closed())
            .map(|s| s.conn.clone())
    }

    /// The ids of the connected agents, sorted.
    pub fn ids(&self) -> Vec<String> {
        let slots = self.slots.lock().expect("agent registry lock");
        let mut ids: Vec<String> = slots.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How many agents are connected.
    pub fn len(&self) -> usize {
        self.slots.lock().expect("agent registry lock").len()
    }

    /// Close `agent_id`'s connection (when it is removed); returns whether it had one.
    pub fn disconnect(&self, agent_id: &str) -> bool {
        let slot = self
            .slots
            .lock()
            .expect("agent registry lock")
            .remove(agent_id);
        slot.map(|s| s.task.abort()).is_some()
    }

    /// Whether no agent is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Close `agent_id`'s connection of `generation` if it is still the live one (an admission
    /// withdrawn while the connection was being registered); returns whether it was.
    pub(crate) fn disconnect_generation(&self, agent_id: &str, generation: u64) -> bool {
        let mut slots = self.slots.lock().expect("agent registry lock");
        if slots
            .get(agent_id)
            .is_some_and(|s| s.generation == generation)
        {
            slots.remove(agent_id).map(|s| s.task.abort()).is_some()
        } else {
            false
        }
    }

    /// Keep `conn`, driven by `driver` (the HTTP/2 connection future); a connection the agent
    /// already had is closed. The entry is removed when the driver ends. Returns the
    /// connection's generation.
    pub(crate) fn insert<F>(&self, conn: AgentConnection, driver: F, on_end: Option<OnEnd>) -> u64
    where
        F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let id = conn.agent_id.clone();
        let me = self.clone();
        // The lock is held across the spawn so the driver's removal cannot run before the
        // entry exists.
        let mut slots = self.slots.lock().expect("agent registry lock");
        let task = tokio::spawn(async move {
            if let Err(e) = driver.await {
                tracing::info!(agent = %id, error = %e, "agent connection ended");
            } else {
                tracing::info!(agent = %id, "agent connection closed");
            }
            let ended = {
                let mut slots = me.slots.lock().expect("agent registry lock");
                let current = slots.get(&id).is_some_and(|s| s.generation == generation);
                if current {
                    slots.remove(&id);
                }
                current
            };
            if ended && let Some(on_end) = on_end {
                on_end().await;
            }
        })
        .abort_handle();
        let id = conn.agent_id.clone();
        if let Some(old) = slots.insert(
            id.clone(),
            Slot {
                generation,
                conn,
                task,
            },
        ) {
            tracing::info!(agent = %id, "a newer connection replaces the agent's previous one");
            old.task.abort();
        }
        generation
    }
}

/// What runs when an agent's live connection ends.
pub(crate) type OnEnd = Box<dyn FnOnce() -> futures_util::future::BoxFuture<'static, ()> + Send>;
