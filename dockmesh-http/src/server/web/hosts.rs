//! The hosts page: online or not, how the server reaches the host (its agent's version against
//! the server's, from the API's agent view, or the engine's socket), engine, capacity and use,
//! stacks; cordon and uncordon; a drain's plan, then the drain itself with its progress.

use super::session::User;
use super::{ErrorText, Layout, WebState, error_page, human_bytes, percent, render};
use crate::server::ops::agents::AgentView;
use crate::server::ops::drains::DrainView;
use crate::server::ops::hosts::{EventsParams, HostView};
use crate::server::ops::{self, OpError, OpErrorKind};
use askama::Template;
use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use dockmesh_core::drain::DrainPlan;
use futures_util::Stream;
use std::collections::BTreeMap;
use std::convert::Infallible;

/// A host as the page shows it.
pub struct HostRow {
    /// The API's view.
    pub h: HostView,
    /// Used memory, in words.
    pub memory: String,
    /// Used memory, per cent.
    pub memory_pct: u64,
    /// Used disk, in words.
    pub disk: String,
    /// Used disk, per cent.
    pub disk_pct: u64,
    /// The Compose projects on the host.
    pub stacks: Vec<ProjectRow>,
    /// The agent that serves the host (the API's view: version, drift), `None` for a host the
    /// server reaches through its engine's socket.
    pub agent: Option<AgentView>,
    /// How old the figures are (`as of 3 s ago`), or that the host never answered.
    pub observed: String,
    /// Memory, disk and running containers over time (sparklines with their words).
    pub trends: String,
}

/// How long ago a host's snapshot was observed, for its row.
fn as_of(observed_at: Option<jiff::Timestamp>, now: jiff::Timestamp) -> String {
    match observed_at {
        None => "never answered since the server started".to_owned(),
        Some(t) => match now.duration_since(t).as_secs() {
            s @ 0..60 => format!("as of {s} s ago"),
            ..0 => "as of just now".to_owned(),
            _ => format!("as of {}", super::ago(t, now)),
        },
    }
}

/// A Compose project on a host.
pub struct ProjectRow {
    /// Its name.
    pub name: String,
    /// Whether it is a stack of this server.
    pub managed: bool,
    /// For a stack of this server: the host it runs on when that is another one (this is a
    /// stopped copy a migration kept).
    pub runs_on: Option<String>,
}

impl HostRow {
    fn new(
        h: HostView,
        managed: &BTreeMap<String, Option<String>>,
        agents: &mut BTreeMap<String, AgentView>,
        now: jiff::Timestamp,
        history: &[crate::server::snapshots::HostSample],
        events: &[super::chart::host::EventMark],
    ) -> Self {
        HostRow {
            trends: super::chart::host::html(&super::chart::host::trends(history, events)),
            observed: as_of(h.observed_at, now),
            agent: agents.remove(&h.id),
            stacks: h
                .stacks
                .iter()
                .map(|s| ProjectRow {
                    name: s.clone(),
                    managed: managed.contains_key(s),
                    runs_on: managed.get(s).cloned().flatten().filter(|on| *on != h.id),
                })
                .collect(),
            memory: format!(
                "{} of {}",
                human_bytes(h.memory_used),
                human_bytes(h.memory_total)
            ),
            memory_pct: percent(h.memory_used, h.memory_total),
            disk: format!(
                "{} of {}",
                human_bytes(h.disk_used),
                human_bytes(h.disk_total)
            ),
            disk_pct: percent(h.disk_used, h.disk_total),
            h,
        }
    }
}

#[derive(Template)]
#[template(path = "hosts.html")]
struct HostsPage {
    l: Layout,
    hosts: Vec<HostRow>,
    drains: Vec<DrainView>,
    server_version: String,
    events: Vec<EventRow>,
}

/// How many recent events the hosts page lists (all hosts together, newest first).
const EVENTS_SHOWN: usize = 20;

/// One host event on the hosts page.
pub struct EventRow {
    /// The host.
    pub host: String,
    /// When, on one line.
    pub at: String,
    /// The event as the host reported it.
    pub e: dockmesh_core::ports::HostEvent,
}

/// The newest events of every host, newest first.
async fn recent_events(web: &WebState, hosts: &[HostView]) -> Vec<EventRow> {
    let mut rows = Vec::new();
    for h in hosts {
        let q = EventsParams {
            limit: Some(EVENTS_SHOWN),
        };
        if let Ok(v) = ops::hosts::events(&web.api, &h.id, q) {
            rows.extend(v.events.into_iter().map(|e| EventRow {
                host: v.host.clone(),
                at: super::when(&e.at),
                e,
            }));
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.e.at));
    rows.truncate(EVENTS_SHOWN);
    rows
}

/// `GET /hosts`.
pub async fn list(State(web): State<WebState>, user: User) -> Response {
    let hosts = ops::hosts::list(&web.api, Default::default()).await;
    let managed = match ops::stacks::list(&web.api).await {
        Ok(list) => list.into_iter().map(|s| (s.name, s.host)).collect(),
        Err(e) => return error_page(&web, &user, "hosts", &e, "/hosts"),
    };
    let drains = match ops::drains::list(&web.api).await {
        Ok(d) => d
            .into_iter()
            .filter(|d| d.state == "running" || d.state == "paused")
            .collect(),
        Err(e) => return error_page(&web, &user, "hosts", &e, "/hosts"),
    };
    // An agent serves the host named as it enrolled (host names are unique).
    let mut agents = match ops::agents::list(&web.api).await {
        Ok(a) => a.into_iter().map(|a| (a.host.clone(), a)).collect(),
        Err(e) => return error_page(&web, &user, "hosts", &e, "/hosts"),
    };
    let events = recent_events(&web, &hosts).await;
    let now = web.api.clock().now();
    let rows = hosts
        .into_iter()
        .map(|h| {
            let history = ops::hosts::history(&web.api, &h.id);
            let marks: Vec<_> = events
                .iter()
                .filter(|e| e.host == h.id)
                .map(|e| {
                    let what = format!("{} {} {} {}", e.at, e.e.stack, e.e.container, e.e.action);
                    (e.e.at, what)
                })
                .collect();
            HostRow::new(h, &managed, &mut agents, now, &history, &marks)
        })
        .collect();
    render(&HostsPage {
        l: Layout::new(&web, &user, "hosts"),
        events,
        hosts: rows,
        drains,
        server_version: web.api.config().version.clone(),
    })
}

fn done_or_error(web: &WebState, user: &User, r: Result<(), OpError>, to: &str) -> Response {
    match r {
        Ok(()) => Redirect::to(to).into_response(),
        Err(e) => error_page(web, user, "hosts", &e, "/hosts"),
    }
}

/// Who asks, as the operations record it: the session's token.
fn by(user: &User) -> &str {
    &user.session.actor.0
}

/// `POST /hosts/{id}/cordon`.
pub async fn cordon(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    let r = ops::hosts::cordon(&web.api, &id, by(&user)).await;
    done_or_error(&web, &user, r.map(|_| ()), "/hosts")
}

/// `POST /hosts/{id}/uncordon`.
pub async fn uncordon(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    let r = ops::hosts::uncordon(&web.api, &id).await;
    done_or_error(&web, &user, r.map(|_| ()), "/hosts")
}

#[derive(Template)]
#[template(path = "drain_plan.html")]
struct DrainPlanPage {
    l: Layout,
    host: String,
    plan: Option<DrainPlan>,
    error: Option<ErrorText>,
}

/// `GET /hosts/{id}/drain`: the plan, nothing moves yet.
pub async fn drain_plan(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match ops::hosts::drain_plan(&web.api, &id).await {
        Ok(plan) => render(&DrainPlanPage {
            l: Layout::new(&web, &user, "hosts"),
            host: id,
            plan: Some(plan),
            error: None,
        }),
        Err(e) if e.kind == OpErrorKind::Conflict => render(&DrainPlanPage {
            l: Layout::new(&web, &user, "hosts"),
            host: id,
            plan: None,
            error: Some((&e).into()),
        }),
        Err(e) => error_page(&web, &user, "hosts", &e, "/hosts"),
    }
}

/// `POST /hosts/{id}/drain`: cordon the host and move its stacks, one at a time.
pub async fn start_drain(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Response {
    match ops::drains::start(&web.api, &id, by(&user)).await {
        Ok(d) => Redirect::to(&format!("/drains/{}", d.id)).into_response(),
        Err(e) => error_page(&web, &user, "hosts", &e, "/hosts"),
    }
}

#[derive(Template)]
#[template(path = "drain.html")]
struct DrainPage {
    l: Layout,
    d: DrainView,
    started: String,
    progress: String,
}

/// The live part of a drain's page.
#[derive(Template)]
#[template(path = "drain_progress.html")]
struct DrainProgress {
    d: DrainView,
}

fn drain_active(d: &DrainView) -> bool {
    d.state == "running"
}

/// `GET /drains/{id}`.
pub async fn drain(State(web): State<WebState>, user: User, Path(id): Path<String>) -> Response {
    match ops::drains::get(&web.api, &id).await {
        Ok(d) => render(&DrainPage {
            l: Layout::new(&web, &user, "hosts"),
            started: super::when(&d.created_at),
            progress: super::fragment(&DrainProgress { d: d.clone() }),
            d,
        }),
        Err(e) => error_page(&web, &user, "hosts", &e, "/hosts"),
    }
}

/// `GET /drains/{id}/live`: the drain's progress as server-sent events, until it stops
/// running.
pub async fn drain_live(
    State(web): State<WebState>,
    user: User,
    Path(id): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let view = web.clone();
    super::session_live(&view, &user, move || {
        let web = web.clone();
        let id = id.clone();
        async move {
            match ops::drains::get(&web.api, &id).await {
                Ok(d) => {
                    let settled = !drain_active(&d);
                    (super::fragment(&DrainProgress { d }), settled)
                }
                Err(e) => (super::error_fragment(&e), true),
            }
        }
    })
}

/// `POST /drains/{id}/{pause|resume|abort}`.
pub async fn steer_drain(
    State(web): State<WebState>,
    user: User,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let r = match action.as_str() {
        "pause" => ops::drains::pause(&web.api, &id, by(&user)).await,
        "resume" => ops::drains::resume(&web.api, &id).await,
        "abort" => ops::drains::abort(&web.api, &id, by(&user)).await,
        other => Err(OpError::not_found(format!(
            "a drain can be paused, resumed or aborted, not {other:?}"
        ))),
    };
    done_or_error(&web, &user, r.map(|_| ()), &format!("/drains/{id}"))
}
