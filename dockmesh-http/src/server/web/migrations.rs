//! The migrations pages: the list, one migration (live progress per volume, its steps and
//! audit entries), and the rollback and purge confirmations.

use super::session::User;
use super::{ErrorText, Layout, WebState, error_page, human_bytes, render, when};
use crate::server::ops::audit::AuditParams;
use crate::server::ops::migrations::{EventView, ListQuery, MigrationView};
use crate::server::ops::{self, OpError};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use dockmesh_core::audit::AuditEntry;
use futures_util::Stream;
use serde::Deserialize;
use std::convert::Infallible;

/// A migration in a list.
pub struct Row {
    /// The API's view.
    pub m: MigrationView,
    /// When it was asked for.
    pub requested: String,
    /// When it last changed.
    pub updated: String,
    /// Its downtime as a small bar, its length the share of the longest on the page.
    pub downtime: String,
}

impl Row {
    /// The row of `m` on a page whose longest downtime is `longest_ms`.
    fn new(m: MigrationView, longest_ms: u64) -> Self {
        Row {
            requested: when(&m.requested_at),
            updated: when(&m.updated_at),
            downtime: super::chart::bar::downtime(m.downtime_ms, longest_ms),
            m,
        }
    }
}

#[derive(Template)]
#[template(path = "migrations.html")]
struct ListPage {
    l: Layout,
    rows: Vec<Row>,
    active: bool,
    next: Option<String>,
}

/// The list's filters.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    #[serde(default)]
    active: bool,
    after: Option<String>,
}

/// Migrations per page.
const PAGE: u32 = 50;

/// `GET /migrations`.
pub async fn list(
    State(web): State<WebState>,
    user: User,
    Query(p): Query<ListParams>,
) -> Response {
    let q = ListQuery {
        active: p.active,
        stack: None,
        after: p.after.filter(|a| !a.is_empty()),
        limit: PAGE,
    };
    match ops::migrations::list(&web.api, q).await {
        Ok(list) => {
            let next = (list.len() as u32 >= PAGE)
                .then(|| list.last().map(|m| m.id.clone()))
                .flatten();
            let longest = list.iter().filter_map(|m| m.downtime_ms).max().unwrap_or(0);
            render(&ListPage {
                l: Layout::new(&web, &user, "migrations"),
                rows: list.into_iter().map(|m| Row::new(m, longest)).collect(),
                active: p.active,
                next,
            })
        }
        Err(e) => error_page(&web, &user, "migrations", &e, "/migrations"),
    }
}

/// One volume's progress, for the page.
pub struct VolumeRow {
    /// The volume.
    pub name: String,
    /// Bytes so far.
    pub done: u64,
    /// The total, or the bytes so far when the total is not known.
    pub total: u64,
    /// `12.0 MiB of 40.0 MiB`.
    pub words: String,
    /// Whether the target's copy was verified.
    pub verified: bool,
    /// How a cut transfer went on: `resumed at 64.1 MiB; 208.1 KiB sent again`.
    pub resumed: Option<String>,
}

/// The live part of a migration's page: state, step, volumes, error.
#[derive(Template)]
#[template(path = "migration_progress.html")]
pub struct Progress {
    m: MigrationView,
    volumes: Vec<VolumeRow>,
    steps: Vec<StepRow>,
    /// The timeline's figure (inline SVG and its words), once the view carries it.
    timeline: Option<String>,
    /// The transfer rate of each volume, when this server saw the transfer.
    rates: Option<String>,
}

impl Progress {
    /// The progress of `m` with the transfer rates this server saw.
    fn of(web: &WebState, m: &MigrationView) -> Self {
        let rates = ops::timeline::transfer_rates(&web.api, m);
        let cuts = m
            .timeline
            .as_ref()
            .map(|t| t.cuts.as_slice())
            .unwrap_or(&[]);
        Progress {
            rates: super::chart::rates::figure(&rates, cuts),
            ..Progress::from(m)
        }
    }
}

impl From<&MigrationView> for Progress {
    fn from(m: &MigrationView) -> Self {
        Progress {
            timeline: m.timeline.as_ref().map(super::chart::timeline::figure),
            rates: None,
            volumes: m
                .volumes
                .iter()
                .map(|v| {
                    let total = v.size_bytes.unwrap_or(v.bytes_done).max(v.bytes_done);
                    VolumeRow {
                        name: v.name.clone(),
                        done: v.bytes_done,
                        total,
                        words: match v.size_bytes {
                            Some(s) => {
                                format!("{} of {}", human_bytes(v.bytes_done), human_bytes(s))
                            }
                            None => human_bytes(v.bytes_done),
                        },
                        verified: v.verified,
                        resumed: match (v.resumed_from, v.bytes_resent) {
                            (Some(at), again) => Some(format!(
                                "cut, resumed at {}; {} sent again",
                                human_bytes(at),
                                human_bytes(again)
                            )),
                            (None, 0) => None,
                            (None, again) => Some(format!(
                                "cut, sent again from its start; {} sent again",
                                human_bytes(again)
                            )),
                        },
                    }
                })
                .collect(),
            steps: m
                .events
                .iter()
                .flatten()
                .map(|e| StepRow {
                    at: when(&e.at),
                    kind: e.kind.clone(),
                    detail: summary(e),
                })
                .collect(),
            m: m.clone(),
        }
    }
}

/// One recorded step, for the page.
pub struct StepRow {
    /// When.
    pub at: String,
    /// What.
    pub kind: String,
    /// Its details in words (`volume=…, bytes=…`).
    pub detail: String,
}

/// An event's details in one line: every field but its type and time; lists and objects
/// summarised.
fn summary(e: &EventView) -> String {
    let Some(obj) = e.detail.as_object() else {
        return String::new();
    };
    obj.iter()
        .filter(|(k, _)| *k != "type" && *k != "at")
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) if k == "bytes" => n
                    .as_u64()
                    .map(|b| format!("{} ({})", b, human_bytes(b)))
                    .unwrap_or_else(|| n.to_string()),
                serde_json::Value::Array(a) => format!("{} item(s)", a.len()),
                serde_json::Value::Object(o) if o.contains_key("checks") => {
                    "pre-flight report (below)".to_owned()
                }
                other => other.to_string(),
            };
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An audit entry, for the page.
pub struct AuditRow {
    /// Its sequence number.
    pub seq: u64,
    /// When.
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: String,
    /// Its details in one line.
    pub detail: String,
    /// The migration it belongs to, when it names one.
    pub migration: Option<String>,
}

impl From<&AuditEntry> for AuditRow {
    fn from(a: &AuditEntry) -> Self {
        AuditRow {
            seq: a.seq,
            at: when(&a.event.at),
            actor: a.event.actor.clone(),
            action: a.event.action.clone(),
            target: a.event.target.clone(),
            migration: a.event.detail.get("migration").cloned(),
            detail: a
                .event
                .detail
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[derive(Template)]
#[template(path = "migration.html")]
struct DetailPage {
    l: Layout,
    m: MigrationView,
    requested: String,
    retain_until: Option<String>,
    progress: String,
    live: bool,
    can_rollback: bool,
    can_purge: bool,
    can_purge_target: bool,
    checks: Vec<super::stacks::CheckRow>,
    audit: Vec<AuditRow>,
}

/// Whether a committed migration can still be rolled back from the page.
fn can_rollback(m: &MigrationView) -> bool {
    m.state == "committed" && !m.retention_expired
}

/// `GET /migrations/{id}`.
pub async fn detail(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    let m = match ops::migrations::get(&web.api, &id).await {
        Ok(m) => m,
        Err(e) => return error_page(&web, &user, "migrations", &e, "/migrations"),
    };
    let audit: Vec<AuditRow> = match ops::audit::list(
        &web.api,
        &AuditParams {
            target: Some(m.stack.clone()),
            limit: dockmesh_core::ports::MAX_PAGE,
            ..Default::default()
        },
    )
    .await
    {
        Ok(page) => page
            .entries
            .iter()
            .filter(|a| a.event.detail.get("migration") == Some(&m.id))
            .rev()
            .map(AuditRow::from)
            .collect(),
        Err(e) => return error_page(&web, &user, "migrations", &e, "/migrations"),
    };
    render(&DetailPage {
        l: Layout::new(&web, &user, "migrations"),
        requested: when(&m.requested_at),
        retain_until: m.retain_until.as_ref().map(|t| {
            let left = t.duration_since(web.api.clock().now());
            if left.is_positive() {
                let mins = left.as_secs() / 60;
                format!("{} (closes in {} h {} min)", when(t), mins / 60, mins % 60)
            } else {
                format!("{} (closed)", when(t))
            }
        }),
        can_purge_target: m.state == "rolled_back"
            && !audit.iter().any(|a| a.action == "migration.purge_target"),
        progress: super::fragment(&Progress::of(&web, &m)),
        live: !m.settled,
        can_rollback: can_rollback(&m),
        can_purge: m.state == "committed",
        checks: m
            .preflight
            .iter()
            .flat_map(|r| r.checks.iter())
            .map(|c| super::stacks::CheckRow {
                name: c.name.clone(),
                status: crate::server::api::health::wire_name(c.status),
                detail: c.detail.clone(),
            })
            .collect(),
        audit,
        m,
    })
}

/// `GET /migrations/{id}/live`: the migration's progress as server-sent events, until it
/// settles.
pub async fn live(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let view = web.clone();
    super::session_live(&view, &user, move || {
        let web = web.clone();
        let id = id.clone();
        async move {
            match ops::migrations::get(&web.api, &id).await {
                Ok(m) => (super::fragment(&Progress::of(&web, &m)), m.settled),
                Err(e) => (super::error_fragment(&e), true),
            }
        }
    })
}

/// A confirmation page: what an action does and deletes, by name, and its button.
#[derive(Template)]
#[template(path = "confirm.html")]
pub(super) struct ConfirmPage {
    pub(super) l: Layout,
    pub(super) title: String,
    /// What the action does, one line each.
    pub(super) consequences: Vec<String>,
    /// Names of what is deleted.
    pub(super) deleted: Vec<String>,
    pub(super) action: String,
    pub(super) button: String,
    pub(super) danger: bool,
    pub(super) back: String,
    pub(super) error: Option<ErrorText>,
}

async fn load(web: &WebState, user: &User, id: &str) -> Result<MigrationView, Response> {
    ops::migrations::get(&web.api, id)
        .await
        .map_err(|e| error_page(web, user, "migrations", &e, "/migrations"))
}

fn rollback_page(
    web: &WebState,
    user: &User,
    m: &MigrationView,
    error: Option<&OpError>,
) -> Response {
    let deadline = m
        .retain_until
        .as_ref()
        .map(when)
        .unwrap_or_else(|| "–".into());
    super::render_with(
        error
            .map(OpError::status)
            .unwrap_or(axum::http::StatusCode::OK),
        &ConfirmPage {
            l: Layout::new(web, user, "migrations"),
            title: format!("Roll back {} to {}?", m.stack, m.source),
            consequences: vec![
                format!("{} stops on {}.", m.stack, m.target),
                format!(
                    "{} starts again on {} with the data it had when it left (changes made on {} since are not carried back).",
                    m.stack, m.source, m.target
                ),
                format!(
                    "The copy on {} is kept, stopped; nothing is deleted.",
                    m.target
                ),
                format!("The rollback window closes at {deadline}."),
            ],
            deleted: vec![],
            action: format!("/migrations/{}/rollback", m.id),
            button: format!("Roll {} back to {}", m.stack, m.source),
            danger: false,
            back: format!("/migrations/{}", m.id),
            error: error.map(ErrorText::from),
        },
    )
}

/// `GET /migrations/{id}/rollback`: what a rollback does, and the button.
pub async fn rollback_confirm(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match load(&web, &user, &id).await {
        Ok(m) => rollback_page(&web, &user, &m, None),
        Err(r) => r,
    }
}

/// `POST /migrations/{id}/rollback`.
pub async fn rollback(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    match ops::migrations::rollback(&web.api, &id, &user.session.actor.0).await {
        Ok(_) => Redirect::to(&format!("/migrations/{id}")).into_response(),
        Err(e) => match load(&web, &user, &id).await {
            Ok(m) => rollback_page(&web, &user, &m, Some(&e)),
            Err(r) => r,
        },
    }
}

fn purge_page(web: &WebState, user: &User, m: &MigrationView, error: Option<&OpError>) -> Response {
    let mut deleted = vec![format!(
        "the stopped containers of stack {} on host {}",
        m.stack, m.source
    )];
    deleted.extend(
        m.volumes
            .iter()
            .map(|v| format!("volume {} on host {}", v.name, m.source)),
    );
    deleted.push(format!(
        "the files of stack {} on host {} (compose.yaml, .env)",
        m.stack, m.source
    ));
    super::render_with(
        error
            .map(OpError::status)
            .unwrap_or(axum::http::StatusCode::OK),
        &ConfirmPage {
            l: Layout::new(web, user, "migrations"),
            title: format!("Delete the kept source of {} on {}?", m.stack, m.source),
            consequences: vec![
                format!(
                    "{} keeps running on {}; nothing there changes.",
                    m.stack, m.target
                ),
                "A rollback of this migration is impossible afterwards.".into(),
            ],
            deleted,
            action: format!("/migrations/{}/purge-source", m.id),
            button: format!("Delete the source of {} on {}", m.stack, m.source),
            danger: true,
            back: format!("/migrations/{}", m.id),
            error: error.map(ErrorText::from),
        },
    )
}

/// `GET /migrations/{id}/purge-source`: what a purge deletes, by name, and the button.
pub async fn purge_confirm(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match load(&web, &user, &id).await {
        Ok(m) => purge_page(&web, &user, &m, None),
        Err(r) => r,
    }
}

/// `POST /migrations/{id}/purge-source`.
pub async fn purge(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    let m = match load(&web, &user, &id).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match ops::migrations::purge_source(&web.api, &m.stack, &id, &user.session.actor.0).await {
        Ok(_) => Redirect::to(&format!("/migrations/{id}")).into_response(),
        Err(e) => purge_page(&web, &user, &m, Some(&e)),
    }
}

fn purge_target_page(
    web: &WebState,
    user: &User,
    m: &MigrationView,
    error: Option<&OpError>,
) -> Response {
    let mut deleted = vec![format!(
        "the stopped containers of stack {} on host {}",
        m.stack, m.target
    )];
    deleted.extend(
        m.volumes
            .iter()
            .map(|v| format!("volume {} on host {}", v.name, m.target)),
    );
    deleted.push(format!(
        "the files of stack {} on host {} (compose.yaml, .env)",
        m.stack, m.target
    ));
    super::render_with(
        error
            .map(OpError::status)
            .unwrap_or(axum::http::StatusCode::OK),
        &ConfirmPage {
            l: Layout::new(web, user, "migrations"),
            title: format!(
                "Delete the stopped copy of {} that the rollback left on {}?",
                m.stack, m.target
            ),
            consequences: vec![
                format!(
                    "{} keeps running on {}; nothing there changes.",
                    m.stack, m.source
                ),
                format!("Afterwards {} can be moved to {} again.", m.stack, m.target),
            ],
            deleted,
            action: format!("/migrations/{}/purge-target", m.id),
            button: format!("Delete the copy of {} on {}", m.stack, m.target),
            danger: true,
            back: format!("/migrations/{}", m.id),
            error: error.map(ErrorText::from),
        },
    )
}

/// `GET /migrations/{id}/purge-target`: what deleting a rolled-back copy removes, by name.
pub async fn purge_target_confirm(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match load(&web, &user, &id).await {
        Ok(m) => purge_target_page(&web, &user, &m, None),
        Err(r) => r,
    }
}

/// `POST /migrations/{id}/purge-target`.
pub async fn purge_target(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match ops::migrations::purge_target(&web.api, &id, &user.session.actor.0).await {
        Ok(_) => Redirect::to(&format!("/migrations/{id}")).into_response(),
        Err(e) => match load(&web, &user, &id).await {
            Ok(m) => purge_target_page(&web, &user, &m, Some(&e)),
            Err(r) => r,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::Template;

    fn view(volumes: serde_json::Value) -> MigrationView {
        serde_json::from_value(serde_json::json!({
            "id": "m1", "stack": "shop", "source": "a", "target": "b",
            "state": "transferring_volumes", "settled": false, "step": null,
            "requested_at": "2026-11-28T10:00:00Z", "requested_by": "token:ops",
            "updated_at": "2026-11-28T10:00:05Z", "volumes": volumes, "error": null,
            "retain_until": null, "retention_expired": false, "outside_links": [],
            "preflight": null, "events": null,
        }))
        .unwrap()
    }

    #[test]
    fn the_progress_says_how_a_cut_transfer_went_on() {
        let m = view(serde_json::json!([
            {"name": "shop_db", "size_bytes": 536870912, "bytes_done": 100 << 20,
             "verified": false, "bytes_resent": 213109, "resumed_from": 67207042},
            {"name": "shop_files", "size_bytes": 4096, "bytes_done": 4096,
             "verified": true, "bytes_resent": 0},
            {"name": "shop_logs", "size_bytes": 1 << 20, "bytes_done": 1024,
             "verified": false, "bytes_resent": 2 << 20},
        ]));
        let html = Progress::from(&m).render().unwrap();
        assert!(
            html.contains("cut, resumed at 64.1 MiB; 208.1 KiB sent again"),
            "{html}"
        );
        assert!(
            html.contains("cut, sent again from its start; 2.0 MiB sent again"),
            "{html}"
        );
        assert_eq!(
            html.matches("class=\"small muted resumed\"").count(),
            2,
            "{html}"
        );
    }
}
