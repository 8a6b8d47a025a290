//! The stacks pages: every stack per host with its services' state and health; deploying
//! from a compose file; a stack's page; moving it (target, pre-flight report, confirm).

use super::session::User;
use super::{ErrorText, Layout, WebState, error_page, render, render_with, when};
use crate::server::api::health::wire_name;
use crate::server::ops::migrations::{ListQuery, MigrateRequest, MigrationView};
use crate::server::ops::stacks::{CreateStack, DeployRequest, StackDetail, StatusView};
use crate::server::ops::{self, OpError, OpErrorKind};
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use dockmesh_core::preflight::{CheckStatus, PreflightReport};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A stack in the list: where it runs and how its services are.
pub struct StackRow {
    /// The stack.
    pub name: String,
    /// Its containers' state, or why it could not be read.
    pub status: Result<StatusView, ErrorText>,
}

#[derive(Template)]
#[template(path = "stacks.html")]
struct StacksPage {
    l: Layout,
    /// Deployed stacks by host.
    by_host: BTreeMap<String, Vec<StackRow>>,
    /// Registered, not deployed.
    undeployed: Vec<String>,
}

/// `GET /stacks`.
pub async fn list(State(web): State<WebState>, user: User) -> Response {
    let stacks = match ops::stacks::list(&web.api).await {
        Ok(s) => s,
        Err(e) => return error_page(&web, &user, "stacks", &e, "/hosts"),
    };
    let mut by_host: BTreeMap<String, Vec<StackRow>> = web
        .api
        .hosts()
        .ids()
        .into_iter()
        .map(|h| (h.0, vec![]))
        .collect();
    let mut undeployed = vec![];
    let mut deployed = vec![];
    for s in stacks {
        match s.host {
            Some(host) => deployed.push((host, s.name)),
            None => undeployed.push(s.name),
        }
    }
    let statuses = futures_util::future::join_all(deployed.iter().map(|(_, name)| {
        let web = web.clone();
        let name = name.clone();
        async move {
            ops::stacks::status(&web.api, &name)
                .await
                .map_err(|e| ErrorText::from(&e))
        }
    }))
    .await;
    for ((host, name), status) in deployed.into_iter().zip(statuses) {
        by_host
            .entry(host)
            .or_default()
            .push(StackRow { name, status });
    }
    render(&StacksPage {
        l: Layout::new(&web, &user, "stacks"),
        by_host,
        undeployed,
    })
}

/// The deploy form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    compose: String,
    #[serde(default)]
    env: String,
}

/// Errors beside the deploy form's fields.
#[derive(Debug, Default)]
struct DeployErrors {
    name: Option<String>,
    host: Option<String>,
    compose: Option<String>,
    other: Option<ErrorText>,
}

impl DeployErrors {
    fn any(&self) -> bool {
        self.name.is_some() || self.host.is_some() || self.compose.is_some() || self.other.is_some()
    }

    /// Put an operation's error beside the field it names (`name: …`, `compose: …`, a
    /// compose file the host refused), or above the form.
    fn place(&mut self, e: &OpError) {
        let msg = e.message.clone();
        if let Some(m) = msg.strip_prefix("name: ") {
            self.name = Some(m.to_owned());
        } else if let Some(m) = msg.strip_prefix("compose: ") {
            self.compose = Some(m.to_owned());
        } else if e.kind == OpErrorKind::InvalidStack {
            self.compose = Some(msg);
        } else if e.kind == OpErrorKind::Conflict && msg.starts_with("stack ") {
            self.name = Some(msg);
        } else {
            self.other = Some(e.into());
        }
    }
}

#[derive(Template)]
#[template(path = "deploy.html")]
struct DeployPage {
    l: Layout,
    hosts: Vec<String>,
    form: DeployForm,
    errors: DeployErrors,
}

fn host_ids(web: &WebState) -> Vec<String> {
    web.api.hosts().ids().into_iter().map(|h| h.0).collect()
}

/// `GET /stacks/new`.
pub async fn deploy_form(State(web): State<WebState>, user: User) -> Response {
    let hosts = host_ids(&web);
    render(&DeployPage {
        l: Layout::new(&web, &user, "stacks"),
        form: DeployForm {
            host: hosts.first().cloned().unwrap_or_default(),
            ..Default::default()
        },
        hosts,
        errors: DeployErrors::default(),
    })
}

/// `POST /stacks`: register the files, then deploy them on the host, as
/// `POST /api/v1/stacks` and `POST /api/v1/stacks/{name}/deploy` do. A stack this form
/// registered whose first deploy fails is not kept: bad input changes nothing.
pub async fn deploy(
    State(web): State<WebState>,
    user: User,
    Form(form): Form<DeployForm>,
) -> Response {
    let mut errors = DeployErrors::default();
    let name = form.name.trim().to_owned();
    if name.is_empty() {
        errors.name = Some("the stack needs a name".into());
    }
    if form.host.trim().is_empty() {
        errors.host = Some("choose the host to deploy on".into());
    }
    if form.compose.trim().is_empty() {
        errors.compose = Some("the compose file is empty: paste it or choose the file".into());
    }
    let page = |form: DeployForm, errors: DeployErrors, status: StatusCode| {
        render_with(
            status,
            &DeployPage {
                l: Layout::new(&web, &user, "stacks"),
                hosts: host_ids(&web),
                form,
                errors,
            },
        )
    };
    if errors.any() {
        return page(form, errors, StatusCode::BAD_REQUEST);
    }
    let existed = match ops::stacks::exists(&web.api, &name).await {
        Ok(existed) => existed,
        Err(e) => {
            errors.place(&e);
            return page(form, errors, StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let env = Some(form.env.clone()).filter(|e| !e.trim().is_empty());
    let created = ops::stacks::create(
        &web.api,
        CreateStack {
            name: name.clone(),
            compose: form.compose.clone(),
            env,
        },
    )
    .await;
    if let Err(e) = created {
        errors.place(&e);
        return page(form, errors, e.status());
    }
    let deployed = ops::stacks::deploy(
        &web.api,
        &name,
        DeployRequest {
            host: form.host.trim().to_owned(),
        },
        &user.session.actor.0,
    )
    .await;
    match deployed {
        Ok(_) => Redirect::to(&format!("/stacks/{name}")).into_response(),
        Err(e) => {
            if !existed {
                // The registration above was only for this deploy: take it back.
                ops::stacks::forget_undeployed(&web.api, &name).await;
            }
            if e.message.starts_with("host ") && e.kind == OpErrorKind::Unprocessable {
                errors.host = Some(e.message.clone());
            } else {
                errors.place(&e);
            }
            page(form, errors, e.status())
        }
    }
}

/// A migration of a stack, for the page.
pub struct MigrationRow {
    /// The API's view.
    pub m: MigrationView,
    /// When it was asked for.
    pub requested: String,
    /// Until when it can be rolled back, while it can.
    pub rollback_until: Option<String>,
}

impl From<MigrationView> for MigrationRow {
    fn from(m: MigrationView) -> Self {
        MigrationRow {
            requested: when(&m.requested_at),
            rollback_until: m
                .retain_until
                .as_ref()
                .filter(|_| m.state == "committed" && !m.retention_expired)
                .map(when),
            m,
        }
    }
}

#[derive(Template)]
#[template(path = "stack.html")]
struct StackPage {
    l: Layout,
    s: StackDetail,
    updated: String,
    status: Option<Result<StatusView, ErrorText>>,
    migrations: Vec<MigrationRow>,
    can_migrate: bool,
}

/// `GET /stacks/{name}`.
pub async fn detail(State(web): State<WebState>, user: User, Path(name): Path<String>) -> Response {
    let s = match ops::stacks::get(&web.api, &name).await {
        Ok(s) => s,
        Err(e) => return error_page(&web, &user, "stacks", &e, "/stacks"),
    };
    let status = match &s.host {
        Some(_) => Some(
            ops::stacks::status(&web.api, &name)
                .await
                .map_err(|e| ErrorText::from(&e)),
        ),
        None => None,
    };
    let migrations = match ops::migrations::list(
        &web.api,
        ListQuery {
            stack: Some(name.clone()),
            limit: 20,
            ..Default::default()
        },
    )
    .await
    {
        Ok(list) => list.into_iter().map(MigrationRow::from).collect(),
        Err(e) => return error_page(&web, &user, "stacks", &e, "/stacks"),
    };
    render(&StackPage {
        l: Layout::new(&web, &user, "stacks"),
        updated: when(&s.updated_at),
        can_migrate: s.host.is_some() && web.api.hosts().ids().len() > 1,
        s,
        status,
        migrations,
    })
}

/// A host a stack could move to.
pub struct TargetOption {
    /// Its id.
    pub id: String,
    /// Whether it is cordoned (never a target).
    pub cordoned: bool,
}

#[derive(Template)]
#[template(path = "migrate.html")]
struct MigratePage {
    l: Layout,
    name: String,
    source: String,
    targets: Vec<TargetOption>,
    chosen: String,
    error: Option<ErrorText>,
}

/// The hosts a deployed stack could move to, and where it runs; or why it cannot move.
async fn targets(web: &WebState, name: &str) -> Result<(String, Vec<TargetOption>), OpError> {
    let s = ops::stacks::get(&web.api, name).await?;
    let source = s
        .host
        .ok_or_else(|| OpError::conflict(format!("stack {name} is not deployed on any host")))?;
    let targets = web
        .api
        .hosts()
        .ids()
        .into_iter()
        .filter(|h| h.0 != source)
        .map(|h| TargetOption {
            cordoned: web.api.hosts().is_cordoned(&h),
            id: h.0,
        })
        .collect::<Vec<_>>();
    if targets.is_empty() {
        return Err(OpError::conflict(format!(
            "there is no other host to move {name} to"
        )));
    }
    Ok((source, targets))
}

async fn migrate_page(
    web: &WebState,
    user: &User,
    name: String,
    chosen: String,
    error: Option<&OpError>,
) -> Response {
    let (source, targets) = match targets(web, &name).await {
        Ok(t) => t,
        Err(e) => return error_page(web, user, "stacks", &e, &format!("/stacks/{name}")),
    };
    let chosen = if chosen.is_empty() {
        targets
            .iter()
            .find(|t| !t.cordoned)
            .map(|t| t.id.clone())
            .unwrap_or_default()
    } else {
        chosen
    };
    render_with(
        error.map(OpError::status).unwrap_or(StatusCode::OK),
        &MigratePage {
            l: Layout::new(web, user, "stacks"),
            name,
            source,
            targets,
            chosen,
            error: error.map(ErrorText::from),
        },
    )
}

/// `GET /stacks/{name}/migrate`: choose where to move the stack.
pub async fn migrate_form(
    State(web): State<WebState>,
    user: User,
    Path(name): Path<String>,
) -> Response {
    migrate_page(&web, &user, name, String::new(), None).await
}

/// The migrate form's field.
#[derive(Debug, Deserialize)]
pub struct TargetForm {
    #[serde(default)]
    target: String,
}

/// One pre-flight check, for the page.
pub struct CheckRow {
    /// Its name.
    pub name: String,
    /// `pass`, `warn` or `fail`.
    pub status: String,
    /// What was found.
    pub detail: String,
}

#[derive(Template)]
#[template(path = "preflight.html")]
struct PreflightPage {
    l: Layout,
    name: String,
    target: String,
    checks: Vec<CheckRow>,
    passed: bool,
    /// `13 pass · 1 warn · 0 fail`.
    counts: String,
    error: Option<ErrorText>,
}

fn preflight_page(
    web: &WebState,
    user: &User,
    name: String,
    target: String,
    report: &PreflightReport,
    error: Option<&OpError>,
) -> Response {
    render_with(
        error.map(OpError::status).unwrap_or(StatusCode::OK),
        &PreflightPage {
            l: Layout::new(web, user, "stacks"),
            name,
            target,
            checks: report
                .checks
                .iter()
                .map(|c| CheckRow {
                    name: c.name.clone(),
                    status: wire_name(c.status),
                    detail: c.detail.clone(),
                })
                .collect(),
            passed: report.passed(),
            counts: {
                let n = |s: CheckStatus| report.checks.iter().filter(|c| c.status == s).count();
                format!(
                    "{} pass · {} warn · {} fail",
                    n(CheckStatus::Pass),
                    n(CheckStatus::Warn),
                    n(CheckStatus::Fail)
                )
            },
            error: error.map(ErrorText::from),
        },
    )
}

/// `POST /stacks/{name}/migrate/preflight`: the pre-flight report; nothing changes.
pub async fn preflight(
    State(web): State<WebState>,
    user: User,
    Path(name): Path<String>,
    Form(form): Form<TargetForm>,
) -> Response {
    let req = MigrateRequest {
        target_host_id: form.target.trim().to_owned(),
    };
    match ops::migrations::preflight(&web.api, &name, &req).await {
        Ok(report) => preflight_page(&web, &user, name, form.target, &report, None),
        Err(e) => migrate_page(&web, &user, name, form.target, Some(&e)).await,
    }
}

/// `POST /stacks/{name}/migrate`: start the move (pre-flight runs again first), then follow
/// it on the migration's page.
pub async fn migrate(
    State(web): State<WebState>,
    user: User,
    Path(name): Path<String>,
    Form(form): Form<TargetForm>,
) -> Response {
    let req = MigrateRequest {
        target_host_id: form.target.trim().to_owned(),
    };
    match ops::migrations::migrate(&web.api, &name, &req, &user.session.actor.0).await {
        Ok(m) => Redirect::to(&format!("/migrations/{}", m.id)).into_response(),
        Err(e) => {
            let report = e
                .details
                .clone()
                .and_then(|d| serde_json::from_value::<PreflightReport>(d).ok());
            match report {
                Some(r) => preflight_page(&web, &user, name, form.target, &r, Some(&e)),
                None => migrate_page(&web, &user, name, form.target, Some(&e)).await,
            }
        }
    }
}
