//! The server page: version, schema version, health, lifecycle, hosts.

use super::session::User;
use super::{Layout, WebState, render, when};
use crate::api::audit::{AuditParams, list_audit};
use crate::api::health::{Health, health};
use crate::state::Lifecycle;
use askama::Template;
use axum::Json;
use axum::extract::Query;
use axum::extract::State;
use axum::response::Response;

#[derive(Template)]
#[template(path = "server.html")]
struct ServerPage {
    l: Layout,
    health: Health,
    lifecycle: &'static str,
    hosts: Vec<String>,
    retention: String,
    schema: Option<String>,
}

/// The schema version as the audit log records it: the last `server.schema_migrate` entry's
/// `to` (a server runs only on an up-to-date schema), with when and by which version.
async fn schema_version(web: &WebState) -> Option<String> {
    let Json(page) = list_audit(
        State(web.api.clone()),
        Query(AuditParams {
            action: Some(dockmesh_core::audit::SERVER_SCHEMA_MIGRATE.to_owned()),
            limit: 1,
            ..Default::default()
        }),
    )
    .await
    .ok()?;
    let e = page.entries.first()?;
    let d = &e.event.detail;
    Some(format!(
        "{} (migrated {}{}{})",
        d.get("to")?,
        when(&e.event.at),
        d.get("dockmesh_version")
            .map(|v| format!(" by dockmesh {v}"))
            .unwrap_or_default(),
        d.get("backend")
            .map(|b| format!(", {b}"))
            .unwrap_or_default(),
    ))
}

/// `GET /server`.
pub async fn page(State(web): State<WebState>, user: User) -> Response {
    let lifecycle = match web.api.lifecycle() {
        Lifecycle::Starting => "starting",
        Lifecycle::Ready => "ready",
        Lifecycle::Draining => "shutting down",
    };
    let hours = web.api.config().retention.as_secs() / 3600;
    render(&ServerPage {
        l: Layout::new(&web, &user, "server"),
        health: health(&web.api).await,
        lifecycle,
        hosts: web.api.hosts().ids().into_iter().map(|h| h.0).collect(),
        retention: format!("{hours} h"),
        schema: schema_version(&web).await,
    })
}
