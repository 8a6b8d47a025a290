//! Dashboard sessions: log in with an API token, a session cookie from then on, CSRF tokens.
//!
//! A session lives in this process's memory only: a restart logs every user out. It keeps the
//! SHA-256 of the token it was opened with (never the token), and every request checks that
//! token again, so revoking a token ends its sessions at once.
//!
//! The cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the request came
//! over TLS as far as the server can tell: always when the server serves HTTPS itself (its TLS
//! listener sets `X-Forwarded-Proto: https` on every request, [`crate::server::tls::serve_app`]), and
//! behind a TLS-terminating proxy (`--insecure-http`) when the proxy says
//! `X-Forwarded-Proto: https`.
//!
//! Every state-changing request carries the session's CSRF token in a form field (`csrf`),
//! checked by [`csrf_guard`] before any handler runs; the login form carries a token from a
//! short-lived cookie set with the form (a double-submit token), so a login cannot be forced
//! from another site either. A request whose `Origin` names another site is refused as well.

use super::WebState;
use crate::server::auth::Actor;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{CONTENT_TYPE, COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use cookie::{Cookie, SameSite};
use dockmesh_core::ports::Clock;
use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "dockmesh_session";
/// The login form's double-submit cookie.
pub const LOGIN_CSRF_COOKIE: &str = "dockmesh_login_csrf";
/// The form field every state-changing request carries.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts without a request.
pub const IDLE_TIMEOUT: SignedDuration = SignedDuration::from_hours(8);
/// How long a session lasts at most, however busy: then its user logs in again.
pub const ABSOLUTE_LIFETIME: SignedDuration = SignedDuration::from_hours(24);
/// The largest form the dashboard reads (a compose file with its `.env`).
const FORM_LIMIT: usize = 4 << 20;

/// A logged-in user's session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who: `token:<name>`, as the API records it.
    pub actor: Actor,
    /// The SHA-256 of the token the session was opened with.
    token_hash: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The SHA-256 of the session's cookie value: its key among the open sessions.
    key: String,
    opened: Timestamp,
    last_seen: Timestamp,
}

impl Session {
    /// Whether the session is still open at `now`: used within [`IDLE_TIMEOUT`] and opened
    /// less than [`ABSOLUTE_LIFETIME`] ago.
    fn live_at(&self, now: Timestamp) -> bool {
        now.duration_since(self.last_seen) < IDLE_TIMEOUT
            && now.duration_since(self.opened) < ABSOLUTE_LIFETIME
    }
}

/// Every open session, by its cookie value's SHA-256; time is the server's clock.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    clock: Arc<dyn Clock>,
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex::encode(bytes)
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    /// No sessions yet, on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Sessions {
        Sessions {
            map: Mutex::default(),
            clock,
        }
    }

    /// Open a session for `actor` (whose token has hash `token_hash`); the cookie value.
    pub fn open(&self, actor: Actor, token_hash: String) -> String {
        let id = random_token();
        let now = self.clock.now();
        let key = crate::server::auth::hash_token(&id);
        let session = Session {
            actor,
            token_hash,
            csrf: random_token(),
            key: key.clone(),
            opened: now,
            last_seen: now,
        };
        let mut map = self.map.lock().expect("sessions poisoned");
        map.retain(|_, s| s.live_at(now));
        map.insert(key, session);
        id
    }

    /// The session of a cookie value, if it is open and neither idle nor past its lifetime.
    fn get(&self, id: &str) -> Option<Session> {
        let now = self.clock.now();
        let mut map = self.map.lock().expect("sessions poisoned");
        let key = crate::server::auth::hash_token(id);
        match map.get_mut(&key) {
            Some(s) if s.live_at(now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether `session` is still open (not closed, idle or past its lifetime), without
    /// counting as a use of it.
    pub fn is_open(&self, session: &Session) -> bool {
        let now = self.clock.now();
        self.map
            .lock()
            .expect("sessions poisoned")
            .get(&session.key)
            .is_some_and(|s| s.live_at(now))
    }

    /// Close a session.
    pub fn close(&self, id: &str) {
        self.map
            .lock()
            .expect("sessions poisoned")
            .remove(&crate::server::auth::hash_token(id));
    }

    /// How many sessions are open.
    pub fn len(&self) -> usize {
        self.map.lock().expect("sessions poisoned").len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// Whether the request reached the server over TLS (through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` over TLS;
/// `max_age` zero removes the cookie.
pub fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut c = Cookie::build((name.to_owned(), value.to_owned()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path("/")
        .secure(over_tls(headers));
    if let Some(secs) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(secs as i64));
    }
    HeaderValue::from_str(&c.build().to_string()).expect("cookie values are hex")
}

/// The logged-in user of a page request; without a session, a redirect to the login page.
#[derive(Debug, Clone)]
pub struct User {
    /// The session.
    pub session: Session,
}

/// Where to send a request without a session: the login page, then back here (for a page;
/// a form's target is not a page to come back to).
fn to_login(parts: &Parts) -> Response {
    if parts.method != Method::GET {
        return Redirect::to("/login").into_response();
    }
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
    Redirect::to(&format!("/login?next={next}")).into_response()
}

impl FromRequestParts<WebState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, web: &WebState) -> Result<Self, Response> {
        if let Some(user) = parts.extensions.get::<User>() {
            return Ok(user.clone());
        }
        match session_of(web, &parts.headers).await {
            Some(session) => Ok(User { session }),
            None => Err(to_login(parts)),
        }
    }
}

/// Whether `session` is still open and the token it was opened with still valid: what a
/// live view checks before each update.
pub async fn still_valid(web: &WebState, session: &Session) -> bool {
    web.sessions.is_open(session)
        && crate::server::auth::authenticate_hash(&web.api, &session.token_hash)
            .await
            .is_ok()
}

/// The open session a request's cookie names, its token still valid.
async fn session_of(web: &WebState, headers: &HeaderMap) -> Option<Session> {
    let id = cookie_value(headers, SESSION_COOKIE)?;
    let session = web.sessions.get(&id)?;
    match crate::server::auth::authenticate_hash(&web.api, &session.token_hash).await {
        // The token's scope as it is now.
        Ok(actor) => Some(Session { actor, ..session }),
        Err(_) => {
            web.sessions.close(&id);
            None
        }
    }
}

/// Why a state-changing request was refused before it reached a handler (403).
fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}; nothing was changed. Reload the page and try again.\n"),
    )
        .into_response()
}

/// Whether an `Origin` header, when there is one, names this server: its `Host`, or the
/// `X-Forwarded-Host` a reverse proxy in front of it passes on.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(origin_host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    [HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .any(|h| h.trim().eq_ignore_ascii_case(origin_host))
}

/// The `csrf` field of a URL-encoded form.
fn csrf_field(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned())
}

/// The CSRF check of every request that is not a read: the `Origin` must be this server's and
/// the form must carry the session's token (or, for the login form, its cookie's token).
/// Only URL-encoded forms are accepted, and a form is read only once its session is found
/// (the login form's up to 16 KiB). A session found here is handed to the handler.
pub async fn csrf_guard(State(web): State<WebState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    if !same_origin(&parts.headers) {
        return forbidden("this request came from another site");
    }
    let urlencoded = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !urlencoded {
        return forbidden("the dashboard accepts only its own forms");
    }
    // Any other form is read only for an open session; the login form is read before anyone
    // is authenticated: a small budget.
    let login = parts.uri.path() == "/login";
    let session = if login {
        None
    } else {
        match session_of(&web, &parts.headers).await {
            Some(session) => Some(session),
            None => return to_login(&parts),
        }
    };
    let limit = if login {
        crate::server::api::PUBLIC_BODY_LIMIT
    } else {
        FORM_LIMIT
    };
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the form is larger than {} KiB; nothing was changed\n",
                    limit >> 10
                ),
            )
                .into_response();
        }
    };
    let given = csrf_field(&bytes).unwrap_or_default();
    if let Some(session) = session {
        if given.is_empty() || !same_secret(&given, &session.csrf) {
            return forbidden("the form's CSRF token is missing or wrong");
        }
        let route = parts
            .extensions
            .get::<axum::extract::MatchedPath>()
            .map_or(parts.uri.path(), |p| p.as_str());
        if let Err(refused) =
            crate::server::scope::authorize_dashboard(&parts.method, route, session.actor.1)
        {
            return refused;
        }
        parts.extensions.insert(User { session });
    } else {
        let expected = cookie_value(&parts.headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
        if expected.is_empty() || !same_secret(&given, &expected) {
            return forbidden("the login form expired or did not come from this page");
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn origins_must_name_this_host() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(
            same_origin(&h),
            "no Origin: a same-site form or a non-browser client"
        );
        h.insert(ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert(ORIGIN, "null".parse().unwrap());
        assert!(!same_origin(&h));
        // Behind a reverse proxy that passes the public host on.
        h.insert(ORIGIN, "https://dockmesh.example".parse().unwrap());
        assert!(!same_origin(&h));
        h.insert("x-forwarded-host", "dockmesh.example".parse().unwrap());
        assert!(same_origin(&h));
    }

    fn clock() -> Arc<dockmesh_core::testing::FixedClock> {
        Arc::new(dockmesh_core::testing::FixedClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ))
    }

    #[test]
    fn sessions_open_find_and_close() {
        let s = Sessions::new(clock());
        let id = s.open(
            Actor("token:a".into(), crate::server::scope::Scope::Read),
            "h".into(),
        );
        let got = s.get(&id).expect("open session");
        assert_eq!(
            got.actor,
            Actor("token:a".into(), crate::server::scope::Scope::Read)
        );
        assert_eq!(got.csrf.len(), 64);
        assert!(s.get("other").is_none());
        s.close(&id);
        assert!(s.get(&id).is_none());
        assert!(s.is_empty());
    }

    #[test]
    fn a_session_ends_when_idle_and_at_its_absolute_lifetime_however_busy() {
        let clock = clock();
        let s = Sessions::new(clock.clone());
        let idle = s.open(
            Actor("token:a".into(), crate::server::scope::Scope::Admin),
            "h".into(),
        );
        clock.advance(IDLE_TIMEOUT - SignedDuration::from_secs(1));
        assert!(s.get(&idle).is_some(), "used just within the idle timeout");
        clock.advance(IDLE_TIMEOUT);
        assert!(s.get(&idle).is_none(), "idle for too long");

        let busy = s.open(
            Actor("token:a".into(), crate::server::scope::Scope::Admin),
            "h".into(),
        );
        let opened = clock.now();
        let session = s.get(&busy).unwrap();
        // Used every hour: never idle, yet it ends 24 h after it was opened.
        while clock.now().duration_since(opened) < ABSOLUTE_LIFETIME - SignedDuration::from_hours(1)
        {
            clock.advance(SignedDuration::from_hours(1));
            assert!(s.get(&busy).is_some(), "at {}", clock.now());
        }
        clock.advance(SignedDuration::from_hours(1));
        assert!(!s.is_open(&session), "past its lifetime");
        assert!(s.get(&busy).is_none(), "past its lifetime");
    }

    /// Read a live view of `user`'s session to its end while `end` runs: whether it ended
    /// within 5 s.
    async fn ends_when(
        web: &WebState,
        user: &User,
        end: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        let sse = crate::server::web::session_live(web, user, || async {
            ("<p>running</p>".to_owned(), false)
        });
        let body = sse.into_response().into_body();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            end.await;
        });
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            axum::body::to_bytes(body, usize::MAX),
        )
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn a_live_view_ends_at_logout_and_when_the_token_is_revoked() {
        use dockmesh_core::ports::prelude::*;
        let store = Arc::new(dockmesh_core::testing::MemStore::new());
        let clock = clock();
        let (token, record) = crate::server::auth::new_api_token("ops", clock.now()).unwrap();
        store.put_token(&record).await.unwrap();
        let api = crate::server::ServerState::new(
            store.clone(),
            crate::server::Hosts::new(),
            clock.clone(),
            Arc::new(dockmesh_core::testing::SeqIds::default()),
            crate::server::ServerConfig::default(),
        );
        api.set_lifecycle(crate::server::Lifecycle::Ready);
        let web = WebState {
            api,
            sessions: Arc::new(Sessions::new(clock.clone())),
        };
        let hash = crate::server::auth::hash_token(&token);

        let id = web.sessions.open(
            Actor("token:ops".into(), crate::server::scope::Scope::Admin),
            hash.clone(),
        );
        let user = User {
            session: web.sessions.get(&id).unwrap(),
        };
        let sessions = web.sessions.clone();
        assert!(
            ends_when(&web, &user, async move { sessions.close(&id) }).await,
            "the view ends at logout"
        );

        let id = web.sessions.open(
            Actor("token:ops".into(), crate::server::scope::Scope::Admin),
            hash.clone(),
        );
        let user = User {
            session: web.sessions.get(&id).unwrap(),
        };
        let revoke = store.clone();
        assert!(
            ends_when(&web, &user, async move {
                revoke.delete_token(&hash).await.unwrap();
            })
            .await,
            "the view ends once the token is revoked"
        );
    }

    #[test]
    fn the_csrf_field_is_read_from_a_form() {
        assert_eq!(csrf_field(b"a=1&csrf=xyz&b=2").as_deref(), Some("xyz"));
        assert_eq!(csrf_field(b"a=1"), None);
    }
}
