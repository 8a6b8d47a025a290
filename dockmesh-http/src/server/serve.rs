//! Running a server: answer HTTP, resume unsettled migrations, remind of ended retention
//! windows, and shut down at a checkpoint.

use crate::server::state::{Lifecycle, ServerState};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The listener failed.
    #[error("the HTTP listener failed")]
    Listener(#[source] std::io::Error),
    /// Resuming the stored migrations and drains failed: the database did not answer.
    #[error("the migrations and drains in progress could not be listed to resume them")]
    Resume(#[source] dockmesh_core::ports::StoreError),
}

/// Serve the API over plain HTTP on `listener` until `shutdown` resolves: [`serve_with`]
/// without TLS.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, None, state, shutdown).await
}

/// Serve the API on `listener` (HTTPS when `tls` is given, see [`crate::server::tls`]) until
/// `shutdown` resolves.
///
/// In order: every migration in progress in the store is resumed under its lease, the server
/// becomes ready, and requests are answered. When `shutdown` resolves, readiness turns 503
/// and new work is refused, each running migration finishes its current step and stops at that
/// checkpoint (within [`crate::server::ServerConfig::shutdown_grace`]), then open requests finish.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = crate::server::api::router(state.clone());
    // Migrations by phase are counted from here on as events are recorded.
    crate::server::api::health::load_migration_phases(&state)
        .await
        .map_err(ServeError::Resume)?;
    let resumed = state
        .supervisor()
        .resume_all()
        .await
        .map_err(ServeError::Resume)?;
    tracing::info!(resumed, "migrations in progress resumed");
    let cordons = state
        .store()
        .list_cordons()
        .await
        .map_err(ServeError::Resume)?;
    for c in &cordons {
        state.hosts().set_cordoned(&c.host, true);
    }
    let drains = state
        .drains()
        .resume_all(&state)
        .await
        .map_err(ServeError::Resume)?;
    let upgrades = crate::server::stack_upgrade::resume_all(&state)
        .await
        .map_err(ServeError::Resume)?;
    tracing::info!(
        drains,
        upgrades,
        cordons = cordons.len(),
        "drains and stack upgrades resumed, cordons loaded"
    );
    let reminders = tokio::spawn(remind_loop(state.clone()));
    let mut followers = follow_socket_hosts(&state).await;
    followers.push(tokio::spawn(state.snapshots().clone().refresh_forever()));
    state.set_lifecycle(Lifecycle::Ready);
    tracing::info!("ready");
    let drain_state = state.clone();
    // The peer address of each connection reaches the handlers (`ConnectInfo`) on both
    // transports: the per-address limits of `crate::server::limit` key on it.
    let res = crate::server::tls::serve_app(listener, tls, app, async move {
            shutdown.await;
            tracing::info!("shutting down: no new work; running migration steps finish first");
            drain_state.set_lifecycle(Lifecycle::Draining);
            let left = drain_state
                .supervisor()
                .shutdown(drain_state.config().shutdown_grace)
                .await;
            if left > 0 {
                tracing::warn!(
                    left,
                    "migration steps still running at the end of the grace period were abandoned; they resume from their last recorded step on the next start"
                );
            }
        })
    .await;
    reminders.abort();
    for f in followers {
        f.abort();
    }
    tracing::info!("stopped");
    res.map_err(ServeError::Listener)
}

/// Follow the events of every host that is not an agent's (hosts reached by socket); an
/// agent's events are followed on each of its connections (`crate::server::agents`).
async fn follow_socket_hosts(state: &ServerState) -> Vec<tokio::task::JoinHandle<()>> {
    let agents: Vec<String> = match state.store().list_agents().await {
        Ok(a) => a.into_iter().map(|a| a.name).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the agents failed; host events are not followed");
            return Vec::new();
        }
    };
    state
        .hosts()
        .ids()
        .into_iter()
        .filter(|h| !agents.contains(&h.0))
        .filter_map(|h| state.hosts().get(&h))
        .map(|host| {
            let events = state.host_events().clone();
            tokio::spawn(async move { events.follow_forever(host).await })
        })
        .collect()
}

async fn remind_loop(state: ServerState) {
    let every = state.config().reminder_interval;
    loop {
        if let Err(e) = state.supervisor().remind_retention().await {
            tracing::warn!(error = %e, "checking retention windows failed");
        }
        tokio::time::sleep(every).await;
    }
}
