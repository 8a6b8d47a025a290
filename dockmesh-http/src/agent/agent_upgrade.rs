//! The agent's side of an upgrade order: `POST /v1/upgrade` over the channel, handed to the
//! [`AgentUpgrader`] the binary injects (download, checks, swap, restart).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use dockmesh_core::rollout::{AgentReport, UpgradeOrder};
use std::sync::Arc;

/// What carries out an upgrade order on the agent.
#[async_trait::async_trait]
pub trait AgentUpgrader: Send + Sync + 'static {
    /// Download the order's binary, check its version (no downgrade), size, SHA-256 and
    /// signature, and put it in place of the running one; `Ok` once the swap is certain to be
    /// attempted (the agent restarts after answering). `Err` says why nothing was changed.
    async fn upgrade(&self, order: UpgradeOrder) -> Result<(), AgentReport>;
    /// The server offers its release public key (PEM) on each connection. It is taken only
    /// when it is the key the agent pinned at enrollment (or its operator put in place); any
    /// other key, or any key when none is pinned, is refused (`Err` says why) and upgrades
    /// signed with it are refused. An order for a version older than the running one is
    /// refused too.
    fn offer_release_key(&self, pem: &str) -> Result<(), String>;
}

/// Where the server offers its release key (`PUT`, the PEM as the body) on each connection.
pub const RELEASE_KEY_PATH: &str = "/v1/release-key";

/// The agent's upgrade route (`POST` [`crate::server::rollout::UPGRADE_PATH`]): `202` when the order
/// is taken, `422` with the [`AgentReport`] when it is refused.
pub fn upgrade_routes(upgrader: Arc<dyn AgentUpgrader>) -> Router {
    Router::new()
        .route(crate::server::rollout::UPGRADE_PATH, post(take_order))
        .route(RELEASE_KEY_PATH, axum::routing::put(take_key))
        .with_state(upgrader)
}

async fn take_order(
    State(upgrader): State<Arc<dyn AgentUpgrader>>,
    Json(order): Json<UpgradeOrder>,
) -> (StatusCode, Json<serde_json::Value>) {
    match upgrader.upgrade(order).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"status": "swapping"})),
        ),
        Err(report) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::to_value(&report).expect("a report serialises")),
        ),
    }
}

async fn take_key(
    State(upgrader): State<Arc<dyn AgentUpgrader>>,
    pem: String,
) -> (StatusCode, String) {
    match upgrader.offer_release_key(&pem) {
        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
        Err(e) => (StatusCode::CONFLICT, e),
    }
}

/// Call `seen` each time the server reads this agent's `hello` through `router` (a new binary
/// on trial knows from it that the server took its connection).
pub fn on_hello(router: Router, seen: Arc<dyn Fn() + Send + Sync>) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let seen = seen.clone();
            async move {
                let hello = req.uri().path() == "/v1/hello";
                let resp = next.run(req).await;
                if hello && resp.status().is_success() {
                    seen();
                }
                resp
            }
        },
    ))
}
