//! The audit page: entries filtered by action, target and time, a page at a time, and the
//! verification of the hash chain.

use super::migrations::AuditRow;
use super::session::User;
use super::{ErrorText, Layout, WebState, render_with};
use crate::server::ops::{self, audit::AuditParams};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// Entries per page.
const PAGE: u32 = 50;

/// The page's query: the API's filters, and whether to verify the chain.
#[derive(Debug, Default, Deserialize)]
pub struct AuditForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before: Option<u64>,
    #[serde(default)]
    verify: bool,
}

/// The result of walking the chain, in words.
pub struct Verification {
    /// Whether every link holds.
    pub ok: bool,
    /// What was found.
    pub text: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    l: Layout,
    f: AuditForm,
    rows: Vec<AuditRow>,
    /// The query string of the next page, when there is one.
    next: Option<String>,
    since_error: Option<String>,
    until_error: Option<String>,
    error: Option<ErrorText>,
    verification: Option<Verification>,
    actions: Vec<&'static str>,
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `GET /audit`.
pub async fn list(State(web): State<WebState>, user: User, Query(f): Query<AuditForm>) -> Response {
    let params = AuditParams {
        action: some(&f.action),
        target: some(&f.target),
        since: some(&f.since),
        until: some(&f.until),
        before: f.before,
        limit: PAGE,
    };
    let mut page = AuditPage {
        l: Layout::new(&web, &user, "audit"),
        rows: vec![],
        next: None,
        since_error: None,
        until_error: None,
        error: None,
        verification: None,
        actions: known_actions(),
        f,
    };
    let mut status = StatusCode::OK;
    if page.f.verify {
        page.verification = Some(match ops::audit::verify(&web.api).await {
            Ok(v) => Verification {
                ok: v.ok,
                text: match &v.verification.first_broken {
                    None => format!(
                        "Chain intact: {} entries checked, every link holds.",
                        v.verification.entries_checked
                    ),
                    Some(b) => format!(
                        "Chain broken at entry {}: {} ({} entries checked before it).",
                        b.seq, b.reason, v.verification.entries_checked
                    ),
                },
            },
            Err(e) => Verification {
                ok: false,
                text: format!("The chain could not be verified: {}", e.message),
            },
        });
    }
    match ops::audit::list(&web.api, &params).await {
        Ok(p) => {
            page.rows = p.entries.iter().map(AuditRow::from).collect();
            page.next = p.next_before.map(|before| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                for (k, v) in [
                    ("action", &page.f.action),
                    ("target", &page.f.target),
                    ("since", &page.f.since),
                    ("until", &page.f.until),
                ] {
                    if !v.trim().is_empty() {
                        q.append_pair(k, v.trim());
                    }
                }
                q.append_pair("before", &before.to_string());
                q.finish()
            });
        }
        Err(e) => {
            status = e.status();
            let msg = e.message.clone();
            if let Some(m) = msg.strip_prefix("since: ") {
                page.since_error = Some(m.to_owned());
            } else if let Some(m) = msg.strip_prefix("until: ") {
                page.until_error = Some(m.to_owned());
            } else {
                page.error = Some((&e).into());
            }
        }
    }
    render_with(status, &page)
}

/// The actions the log records, for the filter's suggestions.
fn known_actions() -> Vec<&'static str> {
    use dockmesh_core::audit as a;
    vec![
        a::MIGRATION_START,
        a::MIGRATION_COMPLETE,
        a::MIGRATION_FAIL,
        a::MIGRATION_ROLLBACK,
        a::MIGRATION_PURGE_SOURCE,
        "migration.purge_target",
        a::STACK_DEPLOY,
        "stack.remove",
        "stack.adopt",
        "host.drain",
        a::AGENT_UPGRADE_POLICY,
        a::AGENT_UPGRADE_RUN,
        a::SERVER_SCHEMA_MIGRATE,
        a::SERVER_BACKUP,
    ]
}
