//! The server page: version, health, lifecycle, hosts.

use super::session::User;
use super::{Layout, WebState, render};
use crate::api::health::{Health, health};
use crate::state::Lifecycle;
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
    })
}
