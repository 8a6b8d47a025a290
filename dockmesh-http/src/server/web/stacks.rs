//! The stacks pages: every stack per host with its services' state and health; deploying
//! from a compose file; a stack's page; moving it (target, pre-flight report, confirm).

use super::session::User;
use super::{ErrorText, Layout, WebState, api, error_page, render, render_with, when};
use crate::server::api::health::wire_name;
use crate::server::api::migrations::{ListQuery, MigrateRequest, MigrationView, list_migrations};
use crate::server::api::stacks::{
    CreateStack, DeployRequest, StackDetail, StatusView, create_stack, deploy_stack, get_stack,
    list_stacks, stack_status,
};
use crate::server::error::{ApiError, ApiJson};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form, Json};
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
    let stacks = match list_stacks(api(&web)).await {
        Ok(Json(s)) => s,
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
            stack_status(api(&web), Path(name))
                .await
                .map(|Json(v)| v)
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

    /// Put an API error beside the field it names (`name: …`, `compose: …`, a compose file
    /// the host refused), or above the form.
    fn place(&mut self, e: &ApiError) {
        let msg = e.body.error.clone();
        if let Some(m) = msg.strip_prefix("name: ") {
            self.name = Some(m.to_owned());
        } else if let Some(m) = msg.strip_prefix("compose: ") {
            self.compose = Some(m.to_owned());
        } else if e.body.code == "invalid_stack" {
            self.compose = Some(msg);
        } else if e.status == StatusCode::CONFLICT && msg.starts_with("stack ") {
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
    let existed = match web.api.store().get_stack(&name).await {
        Ok(s) => s.is_some(),
        Err(e) => {
            errors.place(&e.into());
            return page(form, errors, StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let env = Some(form.env.clone()).filter(|e| !e.trim().is_empty());
    let created = create_stack(
        api(&web),
        ApiJson(CreateStack {
            name: name.clone(),
            compose: form.compose.clone(),
            env,
        }),
    )
    .await;
    if let Err(e) = created {
        errors.place(&e);
        return page(form, errors, e.status);
    }
    let deployed = deploy_stack(
        api(&web),
        Path(name.clone()),
        Some(Extension(user.session.actor.clone())),
        ApiJson(DeployRequest {
            host: form.host.trim().to_owned(),
        }),
    )
    .await;
    match deployed {
        Ok(_) => Redirect::to(&format!("/stacks/{name}")).into_response(),
        Err(e) => {
            if !existed {
                // The registration above was only for this deploy: take it back.
                let _guard = web.api.lock_stack(&name).await;
                if let Ok(Some(rec)) = web.api.store().get_stack(&name).await
                    && rec.host.is_none()
                    && let Err(err) = web.api.store().delete_stack(&name).await
                {
                    tracing::warn!(stack = %name, error = %err, "a stack whose deploy failed stays registered");
                }
            }
            if e.body.error.starts_with("host ") && e.status == StatusCode::NOT_FOUND {
                errors.host = Some(e.body.error.clone());
            } else {
                errors.place(&e);
            }
            page(form, errors, e.status)
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
    let s = match get_stack(api(&web), Path(name.clone())).await {
        Ok(Json(s)) => s,
        Err(e) => return error_page(&web, &user, "stacks", &e, "/stacks"),
    };
    let status = match &s.host {
        Some(_) => Some(
            stack_status(api(&web), Path(name.clone()))
                .await
                .map(|Json(v)| v)
                .map_err(|e| ErrorText::from(&e)),
        ),
        None => None,
    };
    let migrations = match list_migrations(
        api(&web),
        Query(ListQuery {
            stack: Some(name.clone()),
            limit: 20,
            ..Default::default()
        }),
    )
    .await
    {
        Ok(Json(list)) => list.into_iter().map(MigrationRow::from).collect(),
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
async fn targets(web: &WebState, name: &str) -> Result<(String, Vec<TargetOption>), ApiError> {
    let Json(s) = get_stack(api(web), Path(name.to_owned())).await?;
    let source = s
        .host
        .ok_or_else(|| ApiError::conflict(format!("stack {name} is not deployed on any host")))?;
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
        return Err(ApiError::conflict(format!(
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
    error: Option<&ApiError>,
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
        error.map(|e| e.status).unwrap_or(StatusCode::OK),
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
    error: Option<&ApiError>,
) -> Response {
    render_with(
        error.map(|e| e.status).unwrap_or(StatusCode::OK),
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
    match crate::server::api::migrations::preflight(api(&web), Path(name.clone()), ApiJson(req))
        .await
    {
        Ok(Json(report)) => preflight_page(&web, &user, name, form.target, &report, None),
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
    let by = Some(Extension(user.session.actor.clone()));
    match crate::server::api::migrations::migrate(api(&web), Path(name.clone()), by, ApiJson(req))
        .await
    {
        Ok((_, Json(m))) => Redirect::to(&format!("/migrations/{}", m.id)).into_response(),
        Err(e) => {
            let report = e
                .body
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
