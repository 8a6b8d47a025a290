//! The web dashboard, served at `/` on the API listener: server-rendered HTML (askama
//! templates under `templates/`), one embedded stylesheet and one small script that only
//! enhances (live progress over server-sent events, loading a compose file into the form);
//! every page works without it.
//!
//! **Architecture Invariant:** the dashboard has no model of its own. Every page calls the
//! same operations the JSON API's handlers call ([`crate::server::ops`]) and renders their views; a
//! change through the dashboard is the API's change, with the same checks, locks and audit
//! entries, made as the token the user logged in with.
//!
//! Security: sessions and CSRF in [`session`]; every response carries a strict
//! Content-Security-Policy (`default-src 'self'`, no inline script or style),
//! `frame-ancestors 'none'` and `X-Frame-Options: DENY`.

pub mod agents;
pub mod audit;
pub mod chart;
pub mod hosts;
pub mod migrations;
pub mod server;
pub mod session;
pub mod stacks;

use crate::server::ops::OpError;
use crate::server::state::ServerState;
use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use session::{Sessions, User};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// The Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     object-src 'none'";

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// What the dashboard's handlers share: the API's state and the open sessions.
#[derive(Clone)]
pub struct WebState {
    /// The server's state, as the API handlers take it.
    pub api: ServerState,
    /// Open sessions (in memory).
    pub sessions: Arc<Sessions>,
}

/// The dashboard's routes, to merge into the API's router.
pub fn router(state: ServerState) -> Router<ServerState> {
    let web = WebState {
        sessions: Arc::new(Sessions::new(state.clock().clone())),
        api: state,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/hosts") }))
        .route(
            "/login",
            get(session_pages::login_form).post(session_pages::login),
        )
        .route("/logout", post(session_pages::logout))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        .route("/hosts", get(hosts::list))
        .route("/hosts/{id}/cordon", post(hosts::cordon))
        .route("/hosts/{id}/uncordon", post(hosts::uncordon))
        .route(
            "/hosts/{id}/drain",
            get(hosts::drain_plan).post(hosts::start_drain),
        )
        .route("/drains/{id}", get(hosts::drain))
        .route("/drains/{id}/live", get(hosts::drain_live))
        .route("/drains/{id}/{action}", post(hosts::steer_drain))
        .route("/stacks", get(stacks::list).post(stacks::deploy))
        .route("/stacks/new", get(stacks::deploy_form))
        .route("/stacks/{name}", get(stacks::detail))
        .route(
            "/stacks/{name}/migrate",
            get(stacks::migrate_form).post(stacks::migrate),
        )
        .route("/stacks/{name}/migrate/preflight", post(stacks::preflight))
        .route("/migrations", get(migrations::list))
        .route("/migrations/{id}", get(migrations::detail))
        .route("/migrations/{id}/live", get(migrations::live))
        .route(
            "/migrations/{id}/rollback",
            get(migrations::rollback_confirm).post(migrations::rollback),
        )
        .route(
            "/migrations/{id}/purge-source",
            get(migrations::purge_confirm).post(migrations::purge),
        )
        .route(
            "/migrations/{id}/purge-target",
            get(migrations::purge_target_confirm).post(migrations::purge_target),
        )
        .route("/agents", get(agents::list))
        .route("/agents/upgrade-policy", post(agents::save_policy))
        .route("/agents/upgrade-policy/run", post(agents::run_now))
        .route("/agents/upgrade-policy/resume", post(agents::resume))
        .route("/agents/{id}/upgrade", post(agents::upgrade))
        .route(
            "/agents/{id}/remove",
            get(agents::remove_confirm).post(agents::remove),
        )
        .route("/audit", get(audit::list))
        .route("/server", get(server::page))
        .layer(middleware::from_fn_with_state(
            web.clone(),
            session::csrf_guard,
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(web)
}

mod session_pages;

/// Strict security headers on every dashboard response; pages are never cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().starts_with("/assets/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !is_asset {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "no-cache"),
        ],
        JS,
    )
        .into_response()
}

/// What every page's frame shows: who is logged in, the form token, the current section.
pub struct Layout {
    /// `token:<name>`.
    pub actor: String,
    /// The session's CSRF token, for every form.
    pub csrf: String,
    /// The navigation entry to highlight (`hosts`, `stacks`, …).
    pub section: &'static str,
    /// The server's version.
    pub version: String,
}

impl Layout {
    /// The frame of a page in `section` for `user`.
    pub fn new(web: &WebState, user: &User, section: &'static str) -> Self {
        Layout {
            actor: user.session.actor.0.clone(),
            csrf: user.session.csrf.clone(),
            section,
            version: web.api.config().version.clone(),
        }
    }
}

/// A rendered template as an HTML response with `status`.
pub fn render_with<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered\n",
            )
                .into_response()
        }
    }
}

/// A rendered template as a 200 HTML response.
pub fn render<T: Template>(t: &T) -> Response {
    render_with(StatusCode::OK, t)
}

/// An operation's error shown as a page of its own (with the status the API gives it).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// The frame.
    pub l: Layout,
    /// A title.
    pub title: String,
    /// The API's error.
    pub error: ErrorText,
    /// Where to go back to.
    pub back: String,
}

/// An operation's error: its message and advice, for a template.
#[derive(Debug, Clone)]
pub struct ErrorText {
    /// What went wrong.
    pub message: String,
    /// What to do, when known.
    pub hint: Option<String>,
}

impl From<&OpError> for ErrorText {
    fn from(e: &OpError) -> Self {
        ErrorText {
            message: e.message.clone(),
            hint: e.hint.clone(),
        }
    }
}

/// The error page of an operation's error (with the status the API gives it).
pub fn error_page(
    web: &WebState,
    user: &User,
    section: &'static str,
    e: &OpError,
    back: &str,
) -> Response {
    render_with(
        e.status(),
        &ErrorPage {
            l: Layout::new(web, user, section),
            title: "That did not work".into(),
            error: e.into(),
            back: back.to_owned(),
        },
    )
}

/// Bytes in a unit people read (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// A timestamp as the dashboard shows it: UTC, to the second.
pub fn when(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// How long before `now` `then` was, in the largest whole unit (`3 hours ago`); `just now`
/// under a minute (and for a time after `now`: clocks differ).
pub fn ago(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let secs = now.duration_since(then).as_secs();
    let (n, unit) = match secs {
        ..60 => return "just now".to_owned(),
        60..3_600 => (secs / 60, "minute"),
        3_600..172_800 => (secs / 3_600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// The per-cent of `part` in `whole` (0 when `whole` is 0).
pub fn percent(part: u64, whole: u64) -> u64 {
    if whole == 0 {
        0
    } else {
        ((part as u128 * 100) / whole as u128) as u64
    }
}

/// A template rendered as a fragment of a page (for a live update); an error's text if it fails.
pub fn fragment<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a dashboard fragment failed to render");
        "<p class=\"alert error\">This part of the page could not be rendered.</p>".to_owned()
    })
}

/// An operation's error as a fragment of a page.
pub fn error_fragment(e: &OpError) -> String {
    fragment(&ErrorFragment { error: e.into() })
}

#[derive(Template)]
#[template(path = "error_fragment.html")]
struct ErrorFragment {
    error: ErrorText,
}

/// How often a live view polls what it shows.
pub const LIVE_INTERVAL: Duration = Duration::from_millis(700);

/// A live view: server-sent events, an `update` with the HTML `poll` renders each time it
/// changes, until `poll` says the view is settled; the last event is `settled` (the script then
/// reloads the page). The stream also ends when the server starts shutting down, so that an
/// open page never holds a shutdown back (the browser reconnects to the next server).
pub fn live<F, Fut>(
    state: ServerState,
    poll: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = (String, bool)> + Send,
{
    live_while(state, || async { true }, poll)
}

/// A live view of `user`'s session ([`live`]): it also ends, without a last event, as soon as
/// the session is closed (logout), idle or past its lifetime, or the token it was opened with
/// is revoked. The browser's reconnect then meets the login page.
pub fn session_live<F, Fut>(
    web: &WebState,
    user: &User,
    poll: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<F, Fut>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = (String, bool)> + Send,
{
    let web = web.clone();
    let session = user.session.clone();
    live_while(
        web.api.clone(),
        move || {
            let web = web.clone();
            let session = session.clone();
            async move { session::still_valid(&web, &session).await }
        },
        poll,
    )
}

/// [`live`], checking `allowed` before each poll: the stream ends when it says no.
fn live_while<A, AFut, F, Fut>(
    state: ServerState,
    allowed: A,
    poll: F,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>>
where
    A: Fn() -> AFut + Send + 'static,
    AFut: Future<Output = bool> + Send,
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = (String, bool)> + Send,
{
    struct Tick<A, F> {
        state: ServerState,
        allowed: A,
        poll: F,
        first: bool,
        last: Option<String>,
    }
    let start = Tick {
        state,
        allowed,
        poll,
        first: true,
        last: None,
    };
    let stream = futures_util::stream::unfold(Some(start), |tick| async move {
        let mut t = tick?;
        loop {
            if !t.first {
                tokio::time::sleep(LIVE_INTERVAL).await;
            }
            t.first = false;
            if t.state.lifecycle() == crate::server::state::Lifecycle::Draining
                || !(t.allowed)().await
            {
                return None;
            }
            let (html, settled) = (t.poll)().await;
            if settled {
                let event = Event::default().event("settled").data(html);
                return Some((Ok(event), None));
            }
            if t.last.as_deref() != Some(html.as_str()) {
                t.last = Some(html.clone());
                let event = Event::default().event("update").data(html);
                return Some((Ok(event), Some(t)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::ago;

    fn check(secs_before: i64, expected: &str) {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let then = jiff::Timestamp::from_second(1_800_000_000 - secs_before).unwrap();
        assert_eq!(ago(then, now), expected, "{secs_before} s before");
    }

    #[test]
    fn ago_names_the_largest_whole_unit() {
        check(-30, "just now");
        check(0, "just now");
        check(59, "just now");
        check(60, "1 minute ago");
        check(119, "1 minute ago");
        check(3_599, "59 minutes ago");
        check(3_600, "1 hour ago");
        check(2 * 86_400 - 1, "47 hours ago");
        check(2 * 86_400, "2 days ago");
        check(400 * 86_400, "400 days ago");
    }
}
