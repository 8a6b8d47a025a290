//! The agents page: each enrolled agent's host, connection, version against the server's,
//! protocol and upgrade state, agents that need a manual upgrade called out with the steps,
//! how to enroll a host, and removing an agent (behind a confirmation).

use super::migrations::ConfirmPage;
use super::session::User;
use super::{ErrorText, Layout, WebState, api, error_page, render, render_with, when};
use crate::api::agents::{AgentView, list_agents, remove_agent};
use crate::error::ApiError;
use askama::Template;
use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use dockmesh_core::rollout::UpgradeState;

/// One agent as the page shows it.
struct Row {
    a: AgentView,
    last_seen: String,
    upgrade: String,
    /// Why it needs a manual upgrade, when it does.
    manual: Option<String>,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsPage {
    l: Layout,
    rows: Vec<Row>,
    server_version: String,
    listener: bool,
}

fn upgrade_words(u: &UpgradeState) -> (String, Option<String>) {
    match u {
        UpgradeState::Idle => ("up to date".into(), None),
        UpgradeState::Requested { .. } => ("upgrade requested".into(), None),
        UpgradeState::InFlight { target_version, .. } => {
            (format!("upgrading to {target_version}"), None)
        }
        UpgradeState::Failed { reason, .. } => (format!("upgrade failed: {reason}"), None),
        UpgradeState::PendingManual { reason, .. } => {
            ("pending manual upgrade".into(), Some(reason.clone()))
        }
    }
}

/// `GET /agents`.
pub async fn list(State(web): State<WebState>, user: User) -> Response {
    let agents = match list_agents(api(&web)).await {
        Ok(Json(a)) => a,
        Err(e) => return error_page(&web, &user, "agents", &e, "/hosts"),
    };
    let rows = agents
        .into_iter()
        .map(|a| {
            let (upgrade, manual) = upgrade_words(&a.upgrade);
            Row {
                last_seen: a
                    .last_seen
                    .as_ref()
                    .map(when)
                    .unwrap_or_else(|| "never".into()),
                upgrade,
                manual,
                a,
            }
        })
        .collect();
    render(&AgentsPage {
        l: Layout::new(&web, &user, "agents"),
        rows,
        server_version: web.api.config().version.clone(),
        listener: web.api.agent_ca().is_some(),
    })
}

async fn find(web: &WebState, key: &str) -> Result<AgentView, ApiError> {
    let Json(agents) = list_agents(api(web)).await?;
    agents
        .into_iter()
        .find(|a| a.id == key || a.host == key)
        .ok_or_else(|| ApiError::not_found(format!("no agent with id or host name {key:?}")))
}

fn remove_page(web: &WebState, user: &User, a: &AgentView, error: Option<&ApiError>) -> Response {
    render_with(
        error.map(|e| e.status).unwrap_or(StatusCode::OK),
        &ConfirmPage {
            l: Layout::new(web, user, "agents"),
            title: format!("Remove the agent of host {}?", a.host),
            consequences: vec![
                format!(
                    "Agent {} is refused from its next connection, and told why.",
                    a.id
                ),
                format!(
                    "Host {} leaves this server; containers on it keep running, untouched.",
                    a.host
                ),
                "The audit log keeps the agent's record. To bring the host back, enroll it \
                 again with a new token."
                    .into(),
            ],
            deleted: vec![format!(
                "the enrollment of agent {} (host {})",
                a.id, a.host
            )],
            action: format!("/agents/{}/remove", a.id),
            button: "Remove agent".into(),
            danger: true,
            back: "/agents".into(),
            error: error.map(ErrorText::from),
        },
    )
}

/// `GET /agents/{id}/remove`: what removing the agent does, and the button.
pub async fn remove_confirm(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match find(&web, &id).await {
        Ok(a) => remove_page(&web, &user, &a, None),
        Err(e) => error_page(&web, &user, "agents", &e, "/agents"),
    }
}

/// `POST /agents/{id}/remove`.
pub async fn remove(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    let a = match find(&web, &id).await {
        Ok(a) => a,
        Err(e) => return error_page(&web, &user, "agents", &e, "/agents"),
    };
    let by = Some(Extension(user.session.actor.clone()));
    match remove_agent(api(&web), by, Path(a.id.clone())).await {
        Ok(_) => Redirect::to("/agents").into_response(),
        Err(e) => remove_page(&web, &user, &a, Some(&e)),
    }
}
