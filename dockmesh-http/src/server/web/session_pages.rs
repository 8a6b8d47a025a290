//! The login and logout pages.

use super::session::{
    LOGIN_CSRF_COOKIE, SESSION_COOKIE, User, cookie_value, random_token, set_cookie,
};
use super::{WebState, render_with};
use crate::server::auth::{TokenRefusal, authenticate, hash_token};
use crate::server::limit::ClientKey;
use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// How long a login form stays valid.
const LOGIN_FORM_SECS: u64 = 3600;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    next: String,
    error: Option<String>,
    version: String,
}

/// Where to go after logging in: a path on this server, never another site.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && p.chars().all(|c| c.is_ascii_graphic() && c != '\\') =>
        {
            p.to_owned()
        }
        _ => "/hosts".to_owned(),
    }
}

/// The `next` of the login page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

fn login_page(
    web: &WebState,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    error: Option<String>,
) -> Response {
    let csrf = random_token();
    let mut resp = render_with(
        status,
        &LoginPage {
            csrf: csrf.clone(),
            next,
            error,
            version: web.api.config().version.clone(),
        },
    );
    resp.headers_mut().append(
        SET_COOKIE,
        set_cookie(headers, LOGIN_CSRF_COOKIE, &csrf, Some(LOGIN_FORM_SECS)),
    );
    resp
}

/// `GET /login`.
pub async fn login_form(
    State(web): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    login_page(
        &web,
        &headers,
        StatusCode::OK,
        local_path(q.next.as_deref()),
        None,
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`: a valid API token opens a session.
pub async fn login(
    State(web): State<WebState>,
    ClientKey(client): ClientKey,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(form.next.as_deref());
    let limit = &web.api.auth_limits().login;
    if let Some(wait) = limit.blocked(client) {
        return too_many_logins(&web, &headers, next, wait);
    }
    let secret = form.token.trim();
    if secret.is_empty() {
        return login_page(
            &web,
            &headers,
            StatusCode::BAD_REQUEST,
            next,
            Some("Enter an API token (`dockmesh token create` makes one).".into()),
        );
    }
    match authenticate(&web.api, secret).await {
        Ok(actor) => {
            tracing::info!(actor = %actor.0, "dashboard login");
            let id = web.sessions.open(actor, hash_token(secret));
            let mut resp = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
            let h = resp.headers_mut();
            h.append(SET_COOKIE, set_cookie(&headers, SESSION_COOKIE, &id, None));
            h.append(
                SET_COOKIE,
                set_cookie(&headers, LOGIN_CSRF_COOKIE, "", Some(0)),
            );
            resp
        }
        Err(TokenRefusal::Store(e)) => login_page(
            &web,
            &headers,
            e.status,
            next,
            Some(format!("The token could not be checked: {}", e.body.error)),
        ),
        Err(refusal) => match limit.failed(client) {
            Some(wait) => too_many_logins(&web, &headers, next, wait),
            None => login_page(
                &web,
                &headers,
                StatusCode::UNAUTHORIZED,
                next,
                Some(format!("Not logged in: {refusal}.")),
            ),
        },
    }
}

/// The login page answered 429 with `Retry-After`: too many failed logins from this address.
fn too_many_logins(
    web: &WebState,
    headers: &HeaderMap,
    next: String,
    wait: std::time::Duration,
) -> Response {
    let secs = crate::server::limit::retry_secs(wait).max(1);
    let mut resp = login_page(
        web,
        headers,
        StatusCode::TOO_MANY_REQUESTS,
        next,
        Some(format!(
            "Too many failed logins from this address; no token was checked. Try again in {secs} s."
        )),
    );
    resp.headers_mut()
        .insert(RETRY_AFTER, crate::server::limit::retry_after(wait));
    resp
}

/// `POST /logout`: the session ends and its cookie is removed.
pub async fn logout(State(web): State<WebState>, headers: HeaderMap, _user: User) -> Response {
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        web.sessions.close(&id);
    }
    let mut resp = (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
    resp.headers_mut().append(
        SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", Some(0)),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(local_path(Some("/stacks/x")), "/stacks/x");
        assert_eq!(local_path(Some("//evil.example/")), "/hosts");
        assert_eq!(local_path(Some("https://evil.example/")), "/hosts");
        assert_eq!(local_path(Some("/\\evil.example")), "/hosts");
        assert_eq!(local_path(Some("/\t/evil.example")), "/hosts");
        assert_eq!(local_path(None), "/hosts");
    }
}
