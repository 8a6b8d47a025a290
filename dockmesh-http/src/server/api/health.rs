//! Liveness, readiness, the version and database check, and metrics.

use crate::server::state::{Lifecycle, ServerState};
use crate::server::supervisor::all_migrations;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dockmesh_core::migration::Migration;
use dockmesh_core::ports::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The server's health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `error` when the database does not answer.
    pub status: String,
    /// `ok` or `error`.
    pub db: String,
    /// The server's version.
    pub version: String,
    /// Why the database counts as down, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_error: Option<String>,
}

/// Whether the database answers a read.
async fn db_check(state: &ServerState) -> Result<(), String> {
    state
        .store()
        .get_rollout()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `GET /healthz/live`: 200 while the process serves.
pub async fn live() -> &'static str {
    "ok\n"
}

/// `GET /healthz/ready`: 200 when serving with a working database; 503 with `Retry-After`
/// while starting, shutting down, or when the database does not answer.
pub async fn ready(State(state): State<ServerState>) -> Response {
    let why = match state.lifecycle() {
        Lifecycle::Starting => Some("starting".to_owned()),
        Lifecycle::Draining => Some("shutting down".to_owned()),
        Lifecycle::Ready => db_check(&state)
            .await
            .err()
            .map(|e| format!("database: {e}")),
    };
    match why {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

/// The server's version and whether its database answers.
#[utoipa::path(get, path = "/api/v1/health", tag = "health", security(()),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    ))]
pub async fn api_health(State(state): State<ServerState>) -> Response {
    let body = health(&state).await;
    let status = if body.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The server's health, as `GET /api/v1/health` answers it.
pub async fn health(state: &ServerState) -> Health {
    let db = db_check(state).await;
    let ok = db.is_ok();
    Health {
        status: if ok { "ok" } else { "error" }.into(),
        db: if ok { "ok" } else { "error" }.into(),
        version: state.config().version.clone(),
        db_error: db.err(),
    }
}

/// Read every stored migration's phase once into the metrics' counters (from then on they
/// follow each recorded event). Called when the server starts, and by the first scrape of a
/// server that was not started through [`crate::server::serve()`]; loading again changes nothing.
pub async fn load_migration_phases(state: &ServerState) -> Result<(), StoreError> {
    let list = all_migrations(state.store().as_ref(), false).await?;
    state
        .metrics()
        .load_migration_phases(list.into_iter().map(|s| {
            let id = s.spec.id;
            let phase = Migration::replay(s.spec, &s.events)
                .map(|m| wire_name(m.phase()))
                .unwrap_or_else(|_| "unreadable".into());
            (id, phase)
        }));
    Ok(())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<ServerState>) -> Response {
    let mut gauges = Vec::new();
    let mut db_up = 1;
    // Migrations by phase: counters kept as events are recorded, never the whole log again.
    if !state.metrics().migration_phases_loaded() && load_migration_phases(&state).await.is_err() {
        db_up = 0;
    }
    gauges.push(crate::server::metrics::Gauge {
        name: "dockmesh_migrations",
        help: "Migrations by phase.",
        values: state
            .metrics()
            .migrations_by_phase()
            .into_iter()
            .map(|(p, n)| (vec![("phase", p)], n))
            .collect(),
    });
    let mut agents: BTreeMap<(String, String), u64> = BTreeMap::new();
    match state.store().list_agents().await {
        Ok(list) => {
            for a in list {
                *agents
                    .entry((a.version, wire_name(a.connection)))
                    .or_default() += 1;
            }
        }
        Err(_) => db_up = 0,
    }
    gauges.push(crate::server::metrics::Gauge {
        name: "dockmesh_agents",
        help: "Agents by version and connection state.",
        values: agents
            .into_iter()
            .map(|((v, s), n)| (vec![("version", v), ("state", s)], n))
            .collect(),
    });
    gauges.push(crate::server::metrics::Gauge {
        name: "dockmesh_hosts",
        help: "Hosts the server manages.",
        values: vec![(vec![], state.hosts().ids().len() as u64)],
    });
    gauges.push(crate::server::metrics::Gauge {
        name: "dockmesh_database_up",
        help: "1 when the database answered this scrape.",
        values: vec![(vec![], db_up)],
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(&gauges),
    )
        .into_response()
}

/// The name a unit enum variant has on the wire (`committed`, `rolling_back`, `transfer_volumes`,
/// …): its serde name.
pub fn wire_name<T: Serialize + std::fmt::Debug>(v: T) -> String {
    match serde_json::to_value(&v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{v:?}"),
    }
}
