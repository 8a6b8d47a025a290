//! What an unauthenticated client can make the server do, in process
//! (`tower::ServiceExt::oneshot`): enrollment holds nothing for a refused request, the
//! unauthenticated bodies are small, failed tokens, logins and enrollments are limited per
//! client address (429 with `Retry-After`), and an enrollment token shown where an API token
//! is expected is refused without being spent.

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::ports::{Clock, Store};
use dockmesh_core::records::{TokenKind, TokenRecord};
use dockmesh_core::testing::{FixedClock, MemStore, SeqIds};
use dockmesh_http::channel::enroll::new_enrollment_token;
use dockmesh_http::channel::pki::Ca;
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use tower::ServiceExt;

struct World {
    app: Router,
    state: ServerState,
    store: Arc<MemStore>,
    clock: Arc<FixedClock>,
    ca: Arc<Ca>,
    token: String,
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

/// A ready server on a fixed clock with an API token and agent enrollment enabled.
async fn world() -> World {
    let store = Arc::new(MemStore::new());
    let clock = Arc::new(FixedClock::new(now()));
    let (token, record) = dockmesh_http::server::auth::new_api_token("ops", now()).unwrap();
    store.put_token(&record).await.unwrap();
    let state = ServerState::new(
        store.clone(),
        Hosts::new(),
        clock.clone(),
        Arc::new(SeqIds::default()),
        ServerConfig {
            agent_port: Some(7443),
            ..ServerConfig::default()
        },
    );
    state.set_lifecycle(Lifecycle::Ready);
    let ca = Arc::new(Ca::ephemeral().unwrap());
    assert!(state.set_agent_ca(ca.clone()));
    World {
        app: api::router(state.clone()),
        state,
        store,
        clock,
        ca,
        token,
    }
}

/// An answer: status, `Retry-After`, body (JSON when it is).
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
    /// The `name=value` of a session cookie set by the answer.
    session: Option<String>,
}

impl World {
    async fn send(&self, from: &str, mut req: Request<Body>) -> Answer {
        let addr: SocketAddr = format!("{from}:40000").parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let session = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with("dockmesh_session=") && c.len() > "dockmesh_session=".len());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            retry_after,
            body,
            session,
        }
    }

    async fn get_hosts(&self, from: &str, token: &str) -> Answer {
        let req = Request::get("/api/v1/hosts")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        self.send(from, req).await
    }

    async fn enroll(&self, from: &str, body: String) -> Answer {
        let req = Request::post("/api/v1/agents/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        self.send(from, req).await
    }

    async fn enrollment_token(&self) -> String {
        let (token, record) = new_enrollment_token(
            "edge",
            &self.ca.fingerprint(),
            self.clock.now(),
            SignedDuration::from_hours(1),
        )
        .unwrap();
        self.store.put_token(&record).await.unwrap();
        token
    }

    /// Post the login form with `token` (and a good CSRF pair), padded to `pad` extra bytes.
    async fn login(&self, from: &str, token: &str, pad: usize) -> Answer {
        let csrf = "c".repeat(64);
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("csrf", &csrf)
            .append_pair("token", token)
            .append_pair("next", "/hosts")
            .append_pair("pad", &"x".repeat(pad))
            .finish();
        let req = Request::post("/login")
            .header(header::HOST, "dash.test")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, format!("dockmesh_login_csrf={csrf}"))
            .body(Body::from(form))
            .unwrap();
        self.send(from, req).await
    }
}

fn wrong_token() -> String {
    format!("dmt_{}", "0".repeat(64))
}

fn bad_enrollment_token() -> String {
    format!("dme_{}_{}", "1".repeat(64), "2".repeat(64))
}

#[tokio::test]
async fn a_refused_enrollment_holds_no_lock_whatever_its_name() {
    let w = world().await;
    // A bad token with a long, invalid name: refused before anything is held.
    let long = "X".repeat(12 << 10);
    let a = w
        .enroll(
            "10.0.0.1",
            json!({"token": bad_enrollment_token(), "name": long}).to_string(),
        )
        .await;
    assert!(a.status.is_client_error(), "{}: {}", a.status, a.body);
    assert_eq!(w.state.stack_locks_held(), 0, "no lock entry is left");
    // The token is checked before the name's lock is taken: a bad token is answered at once
    // even while an enrollment of that name holds its lock.
    let held = w.state.lock_stack("\u{0}agent-name:edge-9").await;
    let a = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        w.enroll(
            "10.0.0.1",
            json!({"token": bad_enrollment_token(), "name": "edge-9"}).to_string(),
        ),
    )
    .await
    .expect("answered without waiting for the name's lock");
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    drop(held);

    // A good token with a name too long: 400 naming the length, the name not echoed whole,
    // the token not spent, nothing held.
    let token = w.enrollment_token().await;
    let a = w
        .enroll(
            "10.0.0.2",
            json!({"token": token, "name": "a".repeat(5000)}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let text = a.body.to_string();
    assert!(text.contains("at most 63"), "{text}");
    assert!(
        text.len() < 1000,
        "the name is not echoed whole: {} bytes",
        text.len()
    );
    assert_eq!(w.state.stack_locks_held(), 0);

    // The same token still enrolls, and the lock it took is gone afterwards.
    let a = w
        .enroll(
            "10.0.0.2",
            json!({"token": token, "name": "edge-1"}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(
        w.state.stack_locks_held(),
        0,
        "an unused lock entry is removed"
    );
}

#[tokio::test]
async fn stack_locks_are_removed_once_nobody_holds_or_waits_for_them() {
    let w = world().await;
    let g = w.state.lock_stack("shop").await;
    assert_eq!(w.state.stack_locks_held(), 1);
    let state = w.state.clone();
    let waiter = tokio::spawn(async move {
        let _g = state.lock_stack("shop").await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(g);
    waiter.await.unwrap();
    assert_eq!(w.state.stack_locks_held(), 0);
    // A waiter that gives up leaves nothing behind either.
    let g = w.state.lock_stack("shop").await;
    let state = w.state.clone();
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(50), async move {
        state.lock_stack("shop").await
    })
    .await;
    assert!(gave_up.is_err());
    drop(g);
    assert_eq!(w.state.stack_locks_held(), 0);
}

#[tokio::test]
async fn unauthenticated_bodies_over_16_kib_are_refused_413() {
    let w = world().await;
    let token = w.enrollment_token().await;
    let body = json!({"token": token, "name": "edge-1", "csr_pem": "x".repeat(17 << 10)});
    let a = w.enroll("10.0.0.1", body.to_string()).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["code"], "payload_too_large", "{}", a.body);
    assert_eq!(w.state.stack_locks_held(), 0);

    let a = w.login("10.0.0.1", &w.token, 17 << 10).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    // A login form of ordinary size still works.
    let a = w.login("10.0.0.1", &w.token, 100).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
}

/// Send `attempt` until it is answered 429 (at most `max` times): the 429's answer.
async fn until_limited<F, Fut>(max: usize, mut attempt: F) -> Answer
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Answer>,
{
    for i in 0..max {
        let a = attempt().await;
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(i >= 5, "limited after only {i} attempts");
            return a;
        }
        assert!(a.status.is_client_error(), "{}: {}", a.status, a.body);
    }
    panic!("never limited after {max} attempts");
}

#[tokio::test]
async fn failed_bearer_tokens_from_one_address_are_limited_and_others_are_not() {
    let w = world().await;
    let wrong = wrong_token();
    let a = until_limited(100, || w.get_hosts("10.0.0.1", &wrong)).await;
    assert_eq!(a.body["code"], "rate_limited", "{}", a.body);
    let wait = a.retry_after.expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    // The address is held back even with a good token: nothing is checked for it.
    let a = w.get_hosts("10.0.0.1", &w.token).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert!(a.retry_after.is_some());
    // Another address is not affected: a good token works, a wrong one is a plain 401.
    let a = w.get_hosts("10.0.0.2", &w.token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = w.get_hosts("10.0.0.2", &wrong).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    // Once the wait is over, the first address gets in with its good token.
    w.clock.advance(SignedDuration::from_secs(wait as i64));
    let a = w.get_hosts("10.0.0.1", &w.token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn failed_logins_from_one_address_are_limited_and_others_are_not() {
    let w = world().await;
    let wrong = wrong_token();
    let a = until_limited(100, || w.login("10.0.0.1", &wrong, 0)).await;
    let wait = a.retry_after.expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(
        a.body.to_string().contains("Too many failed logins"),
        "{}",
        a.body
    );
    let a = w.login("10.0.0.1", &w.token, 0).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let a = w.login("10.0.0.2", &w.token, 0).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "another address logs in");
    w.clock.advance(SignedDuration::from_secs(wait as i64));
    let a = w.login("10.0.0.1", &w.token, 0).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "after the wait");
}

#[tokio::test]
async fn enrollment_attempts_from_one_address_are_limited_and_others_are_not() {
    let w = world().await;
    let bad = json!({"token": bad_enrollment_token(), "name": "edge-1"}).to_string();
    let a = until_limited(100, || w.enroll("10.0.0.1", bad.clone())).await;
    assert_eq!(a.body["code"], "rate_limited", "{}", a.body);
    assert!(a.retry_after.is_some_and(|s| (1..=60).contains(&s)));
    // A good token from that address waits too; from another address it enrolls.
    let token = w.enrollment_token().await;
    let good = json!({"token": token, "name": "edge-1"}).to_string();
    let a = w.enroll("10.0.0.1", good.clone()).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let a = w.enroll("10.0.0.2", good).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn an_ipv6_client_is_limited_by_its_64() {
    let w = world().await;
    let wrong = wrong_token();
    let mut n = 0u32;
    let a = until_limited(100, || {
        n += 1;
        // Each attempt from another address of the same /64.
        let from = format!("2001:db8:0:1::{n:x}");
        let wrong = wrong.clone();
        let w = &w;
        async move {
            let addr: SocketAddr = SocketAddr::new(from.parse().unwrap(), 40000);
            let mut req = Request::get("/api/v1/hosts")
                .header(header::AUTHORIZATION, format!("Bearer {wrong}"))
                .body(Body::empty())
                .unwrap();
            req.extensions_mut().insert(ConnectInfo(addr));
            let resp = w.app.clone().oneshot(req).await.unwrap();
            Answer {
                status: resp.status(),
                retry_after: resp
                    .headers()
                    .get(header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().parse().unwrap()),
                body: Value::Null,
                session: None,
            }
        }
    })
    .await;
    assert!(a.retry_after.is_some());
}

#[tokio::test]
async fn an_enrollment_token_is_refused_as_a_bearer_or_at_login_and_not_spent() {
    let w = world().await;
    let token = w.enrollment_token().await;
    let a = w.get_hosts("10.0.0.1", &token).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert!(
        a.body["error"]
            .as_str()
            .unwrap()
            .contains("enrollment token"),
        "{}",
        a.body
    );
    let a = w.login("10.0.0.1", &token, 0).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    let used: Vec<TokenRecord> = w
        .store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.kind == TokenKind::Enrollment)
        .collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].used_at, None, "not spent");
    // It still enrolls an agent.
    let a = w
        .enroll(
            "10.0.0.1",
            json!({"token": token, "name": "edge-1"}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn a_one_time_token_of_another_kind_is_not_spent_by_the_api_path() {
    let w = world().await;
    // A one-time enrollment-kind token whose secret does not look like one.
    let secret = "plain-secret";
    w.store
        .put_token(&TokenRecord {
            hash: dockmesh_http::server::auth::hash_token(secret),
            kind: TokenKind::Enrollment,
            name: "odd".into(),
            created_at: now(),
            expires_at: None,
            one_time: true,
            used_at: None,
            scope: dockmesh_core::records::Scope::Read,
        })
        .await
        .unwrap();
    let out = dockmesh_http::server::auth::authenticate(&w.state, secret).await;
    assert!(
        matches!(out, Err(dockmesh_http::server::auth::TokenRefusal::NotApi)),
        "{out:?}"
    );
    let a = w.get_hosts("10.0.0.1", secret).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let t = w.store.list_tokens().await.unwrap();
    let odd = t.iter().find(|t| t.name == "odd").unwrap();
    assert_eq!(odd.used_at, None, "not spent");
}

#[tokio::test]
async fn a_dashboard_session_ends_24_hours_after_login_however_busy() {
    let w = world().await;
    let a = w.login("10.0.0.1", &w.token, 0).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let cookie = a.session.expect("a session cookie");
    let page = |cookie: String| {
        let req = Request::get("/hosts")
            .header(header::HOST, "dash.test")
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        w.send("10.0.0.1", req)
    };
    // Used every 6 hours: never idle for long.
    for _ in 0..3 {
        w.clock.advance(SignedDuration::from_hours(6));
        let a = page(cookie.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "at {}", w.clock.now());
    }
    w.clock.advance(SignedDuration::from_hours(6));
    let a = page(cookie.clone()).await;
    assert_eq!(
        a.status,
        StatusCode::SEE_OTHER,
        "24 h after login the session is over"
    );
}

#[tokio::test]
async fn a_dashboard_form_without_a_session_is_not_read() {
    let w = world().await;
    // A body that never ends: reading it would hold the request (and its memory) open.
    let endless = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
    let req = Request::post("/stacks")
        .header(header::HOST, "dash.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from_stream(endless))
        .unwrap();
    let a = tokio::time::timeout(std::time::Duration::from_secs(5), w.send("10.0.0.1", req))
        .await
        .expect("answered without reading the form");
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
}
