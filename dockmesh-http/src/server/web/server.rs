//! The server page: version, schema version, last backup, health, lifecycle, hosts.

use super::session::User;
use super::{Layout, WebState, ago, human_bytes, render, when};
use crate::server::api::health::{Health, health};
use crate::server::ops;
use crate::server::state::Lifecycle;
use askama::Template;
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
    backup: Option<LastBackup>,
}

/// The newest backup the audit log records.
struct LastBackup {
    /// When it was taken.
    at: String,
    /// How long ago.
    ago: String,
    /// Where the bundle was written.
    path: String,
    /// Its size, in words and in bytes.
    size: String,
    /// The schema version of the database it holds.
    schema: String,
    /// The command that took it.
    by: String,
}

/// The newest audit entry of `action`.
async fn newest(web: &WebState, action: &str) -> Option<dockmesh_core::audit::AuditEntry> {
    ops::audit::newest(&web.api, action).await.ok().flatten()
}

/// The newest `server.backup` entry of the audit log (every backup dockmesh takes is recorded
/// there once written and verified).
async fn last_backup(web: &WebState) -> Option<LastBackup> {
    let e = newest(web, dockmesh_core::audit::SERVER_BACKUP).await?;
    let d = &e.event.detail;
    let unknown = || "not recorded".to_owned();
    Some(LastBackup {
        at: when(&e.event.at),
        ago: ago(e.event.at, web.api.clock().now()),
        path: d.get("path").cloned().unwrap_or_else(unknown),
        size: match d.get("bytes").and_then(|b| b.parse::<u64>().ok()) {
            Some(b) => format!("{} ({b} bytes)", human_bytes(b)),
            None => "size not recorded".to_owned(),
        },
        schema: d.get("schema_version").cloned().unwrap_or_else(unknown),
        by: d
            .get("by")
            .cloned()
            .unwrap_or_else(|| e.event.actor.clone()),
    })
}

/// The schema version as the audit log records it: the last `server.schema_migrate` entry's
/// `to` (a server runs only on an up-to-date schema), with when and by which version.
async fn schema_version(web: &WebState) -> Option<String> {
    let e = newest(web, dockmesh_core::audit::SERVER_SCHEMA_MIGRATE).await?;
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
        backup: last_backup(&web).await,
    })
}
