//! The dashboard in process (`tower::ServiceExt::oneshot`) over the core's fakes: security
//! headers, the session cookie's attributes, login and logout, CSRF refusals that change
//! nothing, bad input refused with its reason, and the deploy → migrate → rollback flow
//! through the pages.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::ports::{Clock, prelude::*};
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{FakeHost, MemStore, SeqIds};
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// One answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value of the first hidden `csrf` field of the page.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a csrf field") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }
}

struct Web {
    app: Router,
    state: ServerState,
    store: Arc<MemStore>,
    token: String,
}

/// Add a fake host to `hosts`.
fn add_host(hosts: &mut Hosts, host: Arc<FakeHost>) {
    hosts.add(host).unwrap();
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

impl Web {
    async fn new() -> Web {
        Web::with_config(|_| {}).await
    }

    /// A server whose configuration `configure` changed.
    async fn with_config(configure: impl FnOnce(&mut ServerConfig)) -> Web {
        let store = Arc::new(MemStore::new());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (token, record) =
            dockmesh_http::server::auth::new_api_token("ops", clock.now()).unwrap();
        store.put_token(&record).await.unwrap();
        let mut hosts = Hosts::new();
        for id in ["a", "b"] {
            add_host(&mut hosts, Arc::new(FakeHost::new(id)));
        }
        let mut config = ServerConfig {
            max_retry_delay: Duration::from_millis(50),
            ..ServerConfig::default()
        };
        configure(&mut config);
        let state = ServerState::new(
            store.clone(),
            hosts,
            clock,
            Arc::new(SeqIds::default()),
            config,
        );
        state.set_lifecycle(Lifecycle::Ready);
        Web {
            // One router for the whole test: the sessions live in it.
            app: api::router(state.clone()),
            state,
            store,
            token,
        }
    }

    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut req = Request::get(path).header(header::HOST, "dash.test");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Answer {
        self.post_with(path, cookie, form, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::post(path)
            .header(header::HOST, "dash.test")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// Log in with `token`: the login page's answer to the form.
    async fn login_with(&self, token: &str) -> Answer {
        let form = self.get("/login", None).await;
        let login_cookie = cookie_pair(&form.cookie("dockmesh_login_csrf").unwrap());
        self.post(
            "/login",
            Some(&login_cookie),
            &[
                ("csrf", &form.csrf()),
                ("token", token),
                ("next", "/stacks"),
            ],
        )
        .await
    }

    /// A logged-in session: its cookie and its CSRF token.
    async fn session(&self) -> (String, String) {
        let a = self.login_with(&self.token).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let cookie = cookie_pair(&a.cookie("dockmesh_session").unwrap());
        let page = self.get("/hosts", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        (cookie, page.csrf())
    }
}

#[tokio::test]
async fn pages_carry_a_strict_csp_and_refuse_framing() {
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    for path in [
        "/login",
        "/hosts",
        "/stacks",
        "/audit",
        "/assets/dashboard.css",
    ] {
        let a = w.get(path, Some(&cookie)).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let csp = a.header("content-security-policy");
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(a.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(a.header("x-content-type-options"), "nosniff", "{path}");
    }
    // No inline script or style in a page: everything comes from /assets.
    let page = w.get("/hosts", Some(&cookie)).await.body;
    assert!(!page.contains("<style"), "inline style block");
    assert!(!page.contains(" style=\""), "inline style attribute");
    assert!(!page.contains("<script>"), "inline script");
    assert!(page.contains("<script src=\"/assets/dashboard.js\""));
}

#[tokio::test]
async fn the_session_cookie_is_http_only_and_same_site_strict() {
    let w = Web::new().await;
    let a = w.login_with(&w.token).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header("location"), "/stacks");
    let c = a.cookie("dockmesh_session").expect("a session cookie");
    assert!(c.contains("HttpOnly"), "{c}");
    assert!(c.contains("SameSite=Strict"), "{c}");
    assert!(c.contains("Path=/"), "{c}");
    assert!(!c.contains("Secure"), "plain HTTP: no Secure flag: {c}");
    // The value is not the token.
    assert!(!c.contains(&w.token[4..]), "{c}");

    // Behind a TLS proxy the cookie is Secure.
    let form = w.get("/login", None).await;
    let login_cookie = cookie_pair(&form.cookie("dockmesh_login_csrf").unwrap());
    let a = w
        .post_with(
            "/login",
            Some(&login_cookie),
            &[("csrf", &form.csrf()), ("token", &w.token)],
            &[("x-forwarded-proto", "https")],
        )
        .await;
    let c = a.cookie("dockmesh_session").unwrap();
    assert!(c.contains("Secure") && c.contains("HttpOnly"), "{c}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_opens_no_session() {
    let w = Web::new().await;
    let a = w.login_with("dmt_0000").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("not known"), "{}", a.body);
    assert!(a.cookie("dockmesh_session").is_none());
    let a = w.login_with("").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("Enter an API token"), "{}", a.body);
    // A login form without its token (another site's form) is refused before the token is looked at.
    let a = w.post("/login", None, &[("token", &w.token)]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.cookie("dockmesh_session").is_none());
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_the_login_page() {
    let w = Web::new().await;
    for path in [
        "/hosts",
        "/stacks",
        "/migrations",
        "/audit",
        "/server",
        "/stacks/new",
    ] {
        let a = w.get(path, None).await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{path}");
        assert!(a.header("location").starts_with("/login?next="), "{path}");
    }
    let a = w.get("/hosts", Some("dockmesh_session=forged")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    // The API keeps its own answer.
    let a = w.get("/api/v1/hosts", None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let b = dockmesh_core::HostId::from("b");

    let a = w.post("/hosts/b/cordon", Some(&cookie), &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a.body.contains("CSRF"), "{}", a.body);
    let a = w
        .post(
            "/hosts/b/cordon",
            Some(&cookie),
            &[("csrf", "0".repeat(64).as_str())],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // The right token from another site's page.
    let a = w
        .post_with(
            "/hosts/b/cordon",
            Some(&cookie),
            &[("csrf", &csrf)],
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(!w.state.hosts().is_cordoned(&b));
    assert!(w.store.list_cordons().await.unwrap().is_empty());
    let stacks_before = w.store.list_stacks().await.unwrap().len();
    let a = w
        .post(
            "/stacks",
            Some(&cookie),
            &[("name", "x"), ("host", "a"), ("compose", "services: {}")],
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(w.store.list_stacks().await.unwrap().len(), stacks_before);

    // With the token it goes through.
    let a = w
        .post_with(
            "/hosts/b/cordon",
            Some(&cookie),
            &[("csrf", &csrf)],
            &[("origin", "http://dash.test")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert!(w.state.hosts().is_cordoned(&b));
    let page = w.get("/hosts", Some(&cookie)).await;
    assert!(page.body.contains("cordoned"));
    assert!(page.body.contains("Uncordon"));
}

#[tokio::test]
async fn logout_ends_the_session_and_a_revoked_token_ends_it_too() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let a = w.post("/logout", Some(&cookie), &[("csrf", &csrf)]).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header("location"), "/login");
    assert!(a.cookie("dockmesh_session").unwrap().contains("Max-Age=0"));
    let a = w.get("/hosts", Some(&cookie)).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);

    let (cookie, _) = w.session().await;
    w.store
        .delete_token(&dockmesh_http::server::auth::hash_token(&w.token))
        .await
        .unwrap();
    let a = w.get("/hosts", Some(&cookie)).await;
    assert_eq!(
        a.status,
        StatusCode::SEE_OTHER,
        "a revoked token's session ends"
    );
}

#[tokio::test]
async fn bad_deploy_input_is_named_beside_its_field_and_changes_nothing() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    /// The form's fields, the status, the id of the error beside the field, what it says.
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str, &'a str);
    let cases: [Case; 3] = [
        (
            &[("name", "shop"), ("host", "a"), ("compose", "  ")],
            StatusCode::BAD_REQUEST,
            "compose-error",
            "the compose file is empty",
        ),
        (
            &[
                ("name", "Bad Name"),
                ("host", "a"),
                ("compose", "services: {}"),
            ],
            StatusCode::BAD_REQUEST,
            "name-error",
            "lowercase",
        ),
        (
            &[
                ("name", "shop"),
                ("host", "nowhere"),
                ("compose", "services: {}"),
            ],
            StatusCode::UNPROCESSABLE_ENTITY,
            "host-error",
            "host nowhere is not known",
        ),
    ];
    for (fields, status, id, text) in cases {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let a = w.post("/stacks", Some(&cookie), &form).await;
        assert_eq!(a.status, status, "{fields:?}: {}", a.body);
        let at = a
            .body
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("{id} in {}", a.body));
        assert!(a.body[at..].contains(text), "{fields:?}: {}", &a.body[at..]);
        // The form keeps what was typed.
        assert!(a.body.contains("services: {}") || fields[2].1.trim().is_empty());
        assert!(
            w.store.list_stacks().await.unwrap().is_empty(),
            "{fields:?} registered a stack"
        );
    }
}

#[tokio::test]
async fn a_stack_is_deployed_moved_and_rolled_back_through_the_pages() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let a = w
        .post(
            "/stacks",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("name", "shop"),
                ("host", "a"),
                ("compose", "services: {}"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.header("location"), "/stacks/shop");
    let page = w.get("/stacks/shop", Some(&cookie)).await;
    assert!(
        page.body.contains("href=\"/stacks/shop/migrate\""),
        "two hosts: migrate offered"
    );

    let page = w
        .post(
            "/stacks/shop/migrate/preflight",
            Some(&cookie),
            &[("csrf", &csrf), ("target", "b")],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("id=\"preflight\""));
    assert!(page.body.contains("target_online"));
    assert!(page.body.contains("id=\"confirm-migrate\""));
    assert!(
        w.store
            .list_migrations(&Default::default())
            .await
            .unwrap()
            .is_empty(),
        "pre-flight changes nothing"
    );

    let a = w
        .post(
            "/stacks/shop/migrate",
            Some(&cookie),
            &[("csrf", &csrf), ("target", "b")],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let location = a.header("location").to_owned();
    assert!(location.starts_with("/migrations/"));
    let mut page = w.get(&location, Some(&cookie)).await;
    for _ in 0..500 {
        if page.body.contains("id=\"migration-state\">committed<") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        page = w.get(&location, Some(&cookie)).await;
    }
    assert!(page.body.contains(">committed<"), "{}", page.body);
    assert!(page.body.contains("id=\"retain-until\""));
    assert!(
        page.body.contains("migration.start"),
        "its audit entries are shown"
    );
    assert!(page.body.contains("id=\"rollback\""));
    // Its timeline: an inline picture labelled by its facts in words, drawn with classes only.
    assert!(
        page.body
            .contains(r#"role="img" aria-labelledby="timeline-words""#),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"<figcaption id="timeline-words">Down for "#),
        "{}",
        page.body
    );
    for step in ["preflight", "stop_source", "target_health", "commit"] {
        assert!(page.body.contains(&format!("tl-bar step-{step}")), "{step}");
    }
    assert!(page.body.contains(r#"<rect class="tl-down""#));
    assert!(
        !page.body.contains("style="),
        "no inline style under the CSP"
    );
    let list = w.get("/migrations", Some(&cookie)).await;
    assert!(
        list.body.contains(r#"class="chart downbar""#)
            && list.body.contains("aria-label=\"down for "),
        "{}",
        list.body
    );

    // The live view of a settled migration ends with `settled`.
    let live = w.get(&format!("{location}/live"), Some(&cookie)).await;
    assert_eq!(live.header("content-type"), "text/event-stream");
    assert!(live.body.contains("event: settled"), "{}", live.body);
    assert!(live.body.contains("committed"));

    let confirm = w
        .get(&format!("{location}/purge-source"), Some(&cookie))
        .await;
    assert!(
        confirm.body.contains("volume")
            || confirm
                .body
                .contains("stopped containers of stack shop on host a")
    );
    let confirm = w.get(&format!("{location}/rollback"), Some(&cookie)).await;
    assert!(confirm.body.contains("Roll shop back to a"));
    let a = w
        .post(
            &format!("{location}/rollback"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    for _ in 0..500 {
        page = w.get(&location, Some(&cookie)).await;
        if page.body.contains(">rolled_back<") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(page.body.contains(">rolled_back<"), "{}", page.body);
    let audit = w
        .get(
            "/audit?verify=true&action=migration.rollback",
            Some(&cookie),
        )
        .await;
    assert!(audit.body.contains("Chain intact"), "{}", audit.body);
    assert!(audit.body.contains("migration.rollback"));
    assert!(
        !audit.body.contains("migration.start<"),
        "the action filter applies"
    );
}

#[tokio::test]
async fn unknown_things_get_a_page_that_names_them() {
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    for (path, status, text) in [
        (
            "/stacks/nope",
            StatusCode::NOT_FOUND,
            "stack nope is not known",
        ),
        (
            "/migrations/not-an-id",
            StatusCode::BAD_REQUEST,
            "is not a migration id",
        ),
        (
            "/hosts/zz/drain",
            StatusCode::NOT_FOUND,
            "host zz is not known; known hosts: a, b",
        ),
    ] {
        let a = w.get(path, Some(&cookie)).await;
        assert_eq!(a.status, status, "{path}");
        assert!(a.body.contains(text), "{path}: {}", a.body);
        assert!(a.header("content-type").starts_with("text/html"), "{path}");
    }
}

#[tokio::test]
async fn a_bad_audit_time_is_named_beside_its_field() {
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    let a = w.get("/audit?since=yesterday", Some(&cookie)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let at = a
        .body
        .find("id=\"since-error\"")
        .expect("an error beside `since`");
    assert!(a.body[at..].contains("is not an RFC 3339 time"));
}

#[tokio::test]
async fn a_live_view_sends_changes_only_and_ends_when_the_server_shuts_down() {
    use axum::response::IntoResponse;
    let w = Web::new().await;
    let polls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = polls.clone();
    let sse = dockmesh_http::server::web::live(w.state.clone(), move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { (format!("<p>{}</p>", n.min(1)), false) }
    });
    let body = sse.into_response().into_body();
    let stopper = w.state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stopper.set_lifecycle(Lifecycle::Draining);
    });
    let bytes = tokio::time::timeout(
        Duration::from_secs(10),
        axum::body::to_bytes(body, usize::MAX),
    )
    .await
    .expect("the stream ends once the server shuts down")
    .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        polls.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "it kept polling"
    );
    // Two distinct fragments, each sent once.
    assert_eq!(text.matches("event: update").count(), 2, "{text}");
    assert!(
        text.contains("data: <p>0</p>") && text.contains("data: <p>1</p>"),
        "{text}"
    );
    assert!(!text.contains("event: settled"), "{text}");
}

#[tokio::test]
async fn a_drain_is_planned_then_run_from_the_pages() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let a = w
        .post(
            "/stacks",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("name", "shop"),
                ("host", "a"),
                ("compose", "services: {}"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let plan = w.get("/hosts/a/drain", Some(&cookie)).await;
    assert_eq!(plan.status, StatusCode::OK);
    assert!(plan.body.contains("id=\"drain-plan\"") && plan.body.contains("shop"));
    assert!(plan.body.contains("id=\"start-drain\""));
    assert!(
        !w.state
            .hosts()
            .is_cordoned(&dockmesh_core::HostId::from("a")),
        "a plan changes nothing"
    );
    let a = w
        .post("/hosts/a/drain", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let drain = a.header("location").to_owned();
    assert!(drain.starts_with("/drains/"));
    let mut page = w.get(&drain, Some(&cookie)).await;
    for _ in 0..500 {
        if page.body.contains("id=\"drain-state\">completed<") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        page = w.get(&drain, Some(&cookie)).await;
    }
    assert!(page.body.contains(">completed<"), "{}", page.body);
    assert!(page.body.contains(">moved<"));
    assert!(
        w.state
            .hosts()
            .is_cordoned(&dockmesh_core::HostId::from("a"))
    );
    // A finished drain cannot be paused; an unknown action is named.
    let a = w
        .post(&format!("{drain}/pause"), Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert!(a.body.contains("is not running"), "{}", a.body);
    let a = w
        .post(
            &format!("{drain}/explode"),
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.body.contains("paused, resumed or aborted"), "{}", a.body);
}

#[tokio::test]
async fn the_audit_log_is_paged_and_keeps_its_filters() {
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    for i in 0..60 {
        let at = jiff::Timestamp::now();
        let e = dockmesh_core::audit::AuditEvent::new(at, "test", "stack.deploy", format!("s{i}"));
        w.store.append_audit(&e).await.unwrap();
    }
    let first = w.get("/audit?action=stack.deploy", Some(&cookie)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first
            .body
            .matches("<td class=\"mono\">stack.deploy</td>")
            .count(),
        50
    );
    let marker = "href=\"/audit?";
    let at = first.body.find(marker).expect("a link to older entries") + "href=\"".len();
    let href = first.body[at..at + first.body[at..].find('"').unwrap()].replace("&#38;", "&");
    assert!(
        href.contains("action=stack.deploy") && href.contains("before="),
        "{href}"
    );
    let older = w.get(&href, Some(&cookie)).await;
    assert_eq!(
        older
            .body
            .matches("<td class=\"mono\">stack.deploy</td>")
            .count(),
        10
    );
    assert!(older.body.contains(">s0<") && !older.body.contains(">s59<"));
    assert!(
        !older.body.contains("id=\"older\""),
        "the last page links no further"
    );
}

#[tokio::test]
async fn a_move_to_a_cordoned_host_is_refused_beside_the_target_and_changes_nothing() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let a = w
        .post(
            "/stacks",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("name", "shop"),
                ("host", "a"),
                ("compose", "services: {}"),
            ],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let a = w
        .post("/hosts/b/cordon", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let form = w.get("/stacks/shop/migrate", Some(&cookie)).await;
    assert!(form.body.contains("b (cordoned)"), "{}", form.body);
    for path in ["/stacks/shop/migrate/preflight", "/stacks/shop/migrate"] {
        let page = w
            .post(path, Some(&cookie), &[("csrf", &csrf), ("target", "b")])
            .await;
        assert_eq!(page.status, StatusCode::CONFLICT, "{path}");
        let at = page
            .body
            .find("id=\"target-error\"")
            .expect("an error beside the target");
        assert!(
            page.body[at..].contains("host b is cordoned"),
            "{}",
            &page.body[at..]
        );
    }
    assert!(
        w.store
            .list_migrations(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let stack = w.store.get_stack("shop").await.unwrap().unwrap();
    assert_eq!(stack.host, Some(dockmesh_core::HostId::from("a")));
}

#[tokio::test]
async fn the_agents_page_lists_agents_calls_out_manual_upgrades_and_removes_one() {
    use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let empty = w.get("/agents", Some(&cookie)).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(
        empty.body.contains("No agent is enrolled yet"),
        "{}",
        empty.body
    );
    let record = |id: &str, name: &str, version: &str, upgrade: UpgradeState| AgentRecord {
        id: id.into(),
        name: name.into(),
        version: version.into(),
        commit: None,
        protocol_version: 1,
        arch: "x86_64".into(),
        docker_version: "28.2.2".into(),
        last_seen: Some(jiff::Timestamp::now()),
        connection: ConnectionState::Disconnected,
        upgrade,
    };
    let server = w.state.config().version.clone();
    w.store
        .upsert_agent(&record("agent-1", "edge-1", &server, UpgradeState::Idle))
        .await
        .unwrap();
    w.store
        .upsert_agent(&record(
            "agent-2",
            "edge-2",
            "0.0.1",
            UpgradeState::PendingManual {
                since: jiff::Timestamp::now(),
                reason: "this agent speaks protocol 0".into(),
            },
        ))
        .await
        .unwrap();
    let page = w.get("/agents", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    for text in [
        "edge-1",
        "edge-2",
        "differs from the server",
        "needs a manual upgrade: this agent speaks protocol 0",
        "pending manual upgrade",
        "up to date",
        "Pending upgrade: 1 agent(s)",
        "Steps: on the host, install the dockmesh",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert_eq!(
        page.body.matches("differs from the server").count(),
        1,
        "only the drifted agent"
    );

    // Removal: a confirmation that names what goes, then the agent is gone, with an audit entry.
    let confirm = w.get("/agents/edge-2/remove", Some(&cookie)).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(
        confirm
            .body
            .contains("the enrollment of agent agent-2 (host edge-2)")
    );
    let refused = w.post("/agents/agent-2/remove", Some(&cookie), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "no CSRF token");
    assert_eq!(
        w.store.list_agents().await.unwrap().len(),
        2,
        "nothing removed"
    );
    let done = w
        .post("/agents/agent-2/remove", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let left = w.store.list_agents().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, "edge-1");
    let audit = w.get("/audit?action=agent.remove", Some(&cookie)).await;
    assert!(audit.body.contains("edge-2"), "{}", audit.body);
}

/// An agent record for the store.
fn agent_record(
    id: &str,
    name: &str,
    version: &str,
    upgrade: dockmesh_core::rollout::UpgradeState,
) -> dockmesh_core::rollout::AgentRecord {
    dockmesh_core::rollout::AgentRecord {
        id: id.into(),
        name: name.into(),
        version: version.into(),
        commit: None,
        protocol_version: dockmesh_core::protocol::PROTOCOL_VERSION,
        arch: std::env::consts::ARCH.into(),
        docker_version: "28.2.2".into(),
        last_seen: Some(jiff::Timestamp::now()),
        connection: dockmesh_core::rollout::ConnectionState::Disconnected,
        upgrade,
    }
}

/// The audit entries with `action`, newest first.
async fn audit_of(w: &Web, action: &str) -> Vec<dockmesh_core::audit::AuditEntry> {
    w.store
        .query_audit(&dockmesh_core::audit::AuditQuery {
            action: Some(action.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn audit_len(w: &Web) -> usize {
    w.store
        .query_audit(&dockmesh_core::audit::AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

/// A server with a release key and one agent binary signed as its own version for this
/// machine's platform; the temporary directory lives as long as the server is used.
async fn web_with_binaries() -> (Web, tempfile::TempDir, String) {
    use dockmesh_http::channel::agent_binaries::{
        AgentBinaries, keygen, parse_private, parse_public, sign_file,
    };
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keygen().unwrap();
    let signing = parse_private(&private, "the test's private key").unwrap();
    let verifying = parse_public(&public, "the test's public key").unwrap();
    let binary = dir.path().join("dockmesh-agent-test");
    std::fs::write(&binary, b"#!/bin/sh\necho not really dockmesh\n").unwrap();
    let version = ServerConfig::default().version;
    sign_file(&signing, &binary, &version, "linux", std::env::consts::ARCH).unwrap();
    let fingerprint = dockmesh_http::channel::agent_binaries::fingerprint(&verifying);
    let binaries = AgentBinaries::new(dir.path().to_owned(), verifying);
    let w = Web::with_config(|c| c.agent_binaries = Some(binaries)).await;
    (w, dir, fingerprint)
}

/// The part of `body` from the label of field `id` to the end of its input.
fn field_html<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!("<label for=\"{id}\">"))
        .unwrap_or_else(|| panic!("no label for {id}: {body}"));
    let input = body[start..]
        .find(&format!("id=\"{id}\" name=\"{id}\""))
        .unwrap_or_else(|| panic!("no input {id}: {body}"));
    let end = body[start + input..].find('>').unwrap();
    &body[start..start + input + end]
}

#[tokio::test]
async fn the_upgrade_policy_form_names_a_bad_value_beside_its_field_and_stores_a_good_one() {
    use dockmesh_core::rollout::RolloutMode;
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let page = w.get("/agents", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    for text in [
        "id=\"policy-form\"",
        "Agent upgrades are off on this server",
        "--release-key FILE",
        "--agent-binaries DIR",
        "dockmesh release sign",
        "id=\"run-now\"",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert!(!page.body.contains("id=\"resume-rollout\""), "not halted");
    let before = w.store.get_rollout().await.unwrap();
    let form = |percent: &'static str, gap: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("mode", "staged".to_owned()),
            ("percent", percent.to_owned()),
            ("min_gap", gap.to_owned()),
            ("canaries", "1".to_owned()),
            ("halt_after_failures", "2".to_owned()),
            ("upgrade_timeout", "10m".to_owned()),
            ("interval", "60s".to_owned()),
        ]
    };
    let post = |f: Vec<(&'static str, String)>| {
        let cookie = cookie.clone();
        let w = &w;
        async move {
            let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            w.post("/agents/upgrade-policy", Some(&cookie), &pairs)
                .await
        }
    };

    for bad in ["0", "150"] {
        let a = post(form(bad, "1m")).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "percent {bad}: {}",
            a.body
        );
        let field = field_html(&a.body, "percent");
        assert!(field.contains("id=\"percent-error\""), "{field}");
        assert!(
            field.contains(&format!("is {bad}, it must be between 1 and 100")),
            "{field}"
        );
        assert!(field.contains(&format!("value=\"{bad}\"")), "kept: {field}");
        assert!(field.contains("aria-invalid=\"true\""), "{field}");
        assert!(
            field_html(&a.body, "min_gap").contains("value=\"1m\""),
            "the other fields are kept too"
        );
        assert!(!field_html(&a.body, "min_gap").contains("-error"));
        assert!(a.body.contains("The upgrade policy was not saved"));
        assert_eq!(
            w.store.get_rollout().await.unwrap(),
            before,
            "nothing stored"
        );
    }
    // A duration that is not one, and a number that is not one, are named too.
    let a = post(form("20", "soon")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let field = field_html(&a.body, "min_gap");
    assert!(field.contains("“soon” is not a duration"), "{field}");
    assert!(field.contains("value=\"soon\""), "{field}");
    assert!(!field_html(&a.body, "percent").contains("-error"));
    let a = post(form("lots", "1m")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(field_html(&a.body, "percent").contains("“lots” is not a whole number"));
    assert_eq!(
        w.store.get_rollout().await.unwrap(),
        before,
        "nothing stored"
    );
    assert!(audit_of(&w, "agent.upgrade_policy").await.is_empty());

    // A valid staged policy is stored and audited, as the session's user.
    let a = post(form("20", "1m")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.header("location"), "/agents");
    let stored = w.store.get_rollout().await.unwrap().policy;
    assert_eq!(stored.mode, RolloutMode::Staged);
    assert_eq!(stored.staged.percent, 20);
    assert_eq!(stored.staged.min_gap, jiff::SignedDuration::from_mins(1));
    assert_eq!(stored.staged.canaries, 1);
    assert_eq!(stored.staged.halt_after_failures, 2);
    assert_eq!(stored.upgrade_timeout, jiff::SignedDuration::from_mins(10));
    assert_eq!(stored.interval, jiff::SignedDuration::from_secs(60));
    let audit = audit_of(&w, "agent.upgrade_policy").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].event.actor, "token:ops");
    assert_eq!(audit[0].event.detail["percent"], "20");
    let page = w.get("/agents", Some(&cookie)).await;
    assert!(page.body.contains("waves of 20%"), "{}", page.body);
    assert!(field_html(&page.body, "percent").contains("value=\"20\""));

    // `allow_downgrade` is not on the form: saving the form keeps what the API set.
    let mut record = w.store.get_rollout().await.unwrap();
    record.policy.allow_downgrade = true;
    w.store.put_rollout(&record).await.unwrap();
    let a = post(form("30", "1m")).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let stored = w.store.get_rollout().await.unwrap().policy;
    assert_eq!(stored.staged.percent, 30);
    assert!(
        stored.allow_downgrade,
        "the form left allow_downgrade as it was"
    );
}

#[tokio::test]
async fn run_now_without_agent_binaries_says_so_and_records_nothing() {
    let w = Web::new().await;
    let (cookie, csrf) = w.session().await;
    let server = w.state.config().version.clone();
    w.store
        .upsert_agent(&agent_record(
            "agent-1",
            "edge-1",
            "0.0.1",
            dockmesh_core::rollout::UpgradeState::Idle,
        ))
        .await
        .unwrap();
    let rollout = w.store.get_rollout().await.unwrap();
    let agents = w.store.list_agents().await.unwrap();
    let entries = audit_len(&w).await;

    let a = w
        .post(
            "/agents/upgrade-policy/run",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("id=\"action-error\""), "{}", a.body);
    assert!(a.body.contains("Run now did nothing"), "{}", a.body);
    assert!(a.body.contains("no agent binaries"), "{}", a.body);
    assert!(a.body.contains("id=\"agents\""), "the page is still there");
    // An idle drifted agent reads "drifted"; the Upgrade button is there, and refused the same way.
    assert!(a.body.contains(">drifted</span>"), "{}", a.body);
    let u = w
        .post("/agents/agent-1/upgrade", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(u.status, StatusCode::CONFLICT, "{}", u.body);
    assert!(
        u.body.contains("Agent agent-1 was not upgraded"),
        "{}",
        u.body
    );
    assert!(u.body.contains("no agent binaries"), "{}", u.body);

    assert_eq!(w.store.get_rollout().await.unwrap(), rollout);
    assert_eq!(w.store.list_agents().await.unwrap(), agents);
    assert_eq!(audit_len(&w).await, entries, "no audit entry");
    assert!(audit_of(&w, "agent.upgrade_run").await.is_empty());
    assert_ne!(server, "0.0.1");
}

#[tokio::test]
async fn run_now_resume_and_upgrade_go_through_the_api_as_the_session_user() {
    use dockmesh_core::rollout::{Halt, RolloutRecord, RolloutState, UpgradeState};
    let (w, _dir, fingerprint) = web_with_binaries().await;
    let (cookie, csrf) = w.session().await;
    let server = w.state.config().version.clone();
    w.store
        .upsert_agent(&agent_record(
            "agent-1",
            "edge-1",
            &server,
            UpgradeState::Idle,
        ))
        .await
        .unwrap();
    w.store
        .upsert_agent(&agent_record(
            "agent-2",
            "edge-2",
            "0.0.1",
            UpgradeState::Idle,
        ))
        .await
        .unwrap();

    let page = w.get("/agents", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    for text in [
        fingerprint.as_str(),
        "dockmesh-agent-test",
        "id=\"binaries\"",
        "id=\"upgrade-edge-2\"",
        "id=\"upgrade-counters\"",
    ] {
        assert!(page.body.contains(text), "{text}: {}", page.body);
    }
    assert!(!page.body.contains("Agent upgrades are off"));
    assert!(!page.body.contains("id=\"upgrade-edge-1\""), "up to date");

    // Run now: evaluated as the session's user, and the page says what it did.
    let a = w
        .post(
            "/agents/upgrade-policy/run",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("id=\"run-outcome\""), "{}", a.body);
    assert!(a.body.contains("Manual mode"), "{}", a.body);
    assert!(a.body.contains("No upgrade order was sent."), "{}", a.body);
    let runs = audit_of(&w, "agent.upgrade_run").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].event.actor, "token:ops");
    assert!(
        w.store
            .get_rollout()
            .await
            .unwrap()
            .state
            .last_evaluated_at
            .is_some(),
        "the evaluation is recorded"
    );

    // Upgrade one agent: requested (it is not connected, so it waits), audited; its button goes.
    let a = w
        .post("/agents/agent-2/upgrade", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let agent = w.store.get_agent(&"agent-2".into()).await.unwrap().unwrap();
    assert!(
        matches!(agent.upgrade, UpgradeState::Requested { .. }),
        "{:?}",
        agent.upgrade
    );
    let runs = audit_of(&w, "agent.upgrade_run").await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].event.actor, "token:ops");
    assert_eq!(runs[0].event.target, "agent-2");
    let page = w.get("/agents", Some(&cookie)).await;
    assert!(page.body.contains("upgrade requested"), "{}", page.body);
    assert!(
        !page.body.contains("id=\"upgrade-edge-2\""),
        "{}",
        page.body
    );
    // An agent that runs the server's version is refused, as text.
    let a = w
        .post("/agents/edge-1/upgrade", Some(&cookie), &[("csrf", &csrf)])
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("already reports the server"), "{}", a.body);

    // Resume: only offered while halted, with the reason.
    let a = w
        .post(
            "/agents/upgrade-policy/resume",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.body);
    assert!(a.body.contains("not halted"), "{}", a.body);
    let mut record: RolloutRecord = w.store.get_rollout().await.unwrap();
    record.state = RolloutState {
        halted: Some(Halt {
            at: jiff::Timestamp::now(),
            reason: "2 upgrades failed (edge-3, edge-4)".into(),
        }),
        failures: 2,
        ..record.state
    };
    w.store.put_rollout(&record).await.unwrap();
    let page = w.get("/agents", Some(&cookie)).await;
    assert!(page.body.contains("id=\"rollout-halted\""), "{}", page.body);
    assert!(page.body.contains("2 upgrades failed (edge-3, edge-4)"));
    assert!(page.body.contains("id=\"resume-rollout\""));
    let a = w
        .post(
            "/agents/upgrade-policy/resume",
            Some(&cookie),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    let state = w.store.get_rollout().await.unwrap().state;
    assert!(state.halted.is_none());
    assert_eq!(state.failures, 0);
    let page = w.get("/agents", Some(&cookie)).await;
    assert!(!page.body.contains("id=\"resume-rollout\""));
}

#[tokio::test]
async fn the_upgrade_buttons_refuse_a_post_without_the_csrf_token_and_change_nothing() {
    use dockmesh_core::rollout::{Halt, UpgradeState};
    let (w, _dir, _) = web_with_binaries().await;
    let (cookie, _csrf) = w.session().await;
    w.store
        .upsert_agent(&agent_record(
            "agent-2",
            "edge-2",
            "0.0.1",
            UpgradeState::Idle,
        ))
        .await
        .unwrap();
    let mut record = w.store.get_rollout().await.unwrap();
    record.state.halted = Some(Halt {
        at: jiff::Timestamp::now(),
        reason: "1 upgrade failed".into(),
    });
    w.store.put_rollout(&record).await.unwrap();
    let agents = w.store.list_agents().await.unwrap();
    let entries = audit_len(&w).await;
    let policy = [
        ("mode", "auto"),
        ("percent", "50"),
        ("min_gap", "1m"),
        ("canaries", "0"),
        ("halt_after_failures", "1"),
        ("upgrade_timeout", "5m"),
        ("interval", "60s"),
    ];
    for (path, form) in [
        ("/agents/upgrade-policy", &policy[..]),
        ("/agents/upgrade-policy/run", &[][..]),
        ("/agents/upgrade-policy/resume", &[][..]),
        ("/agents/agent-2/upgrade", &[][..]),
    ] {
        let a = w.post(path, Some(&cookie), form).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
        assert!(a.body.contains("CSRF"), "{path}: {}", a.body);
        let mut with_wrong = form.to_vec();
        let wrong = "0".repeat(64);
        with_wrong.push(("csrf", &wrong));
        let a = w.post(path, Some(&cookie), &with_wrong).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
        assert_eq!(w.store.get_rollout().await.unwrap(), record, "{path}");
        assert_eq!(w.store.list_agents().await.unwrap(), agents, "{path}");
        assert_eq!(audit_len(&w).await, entries, "{path}");
    }
}

/// The `<tr>` of `host` on the hosts page.
fn host_row<'a>(body: &'a str, host: &str) -> &'a str {
    let start = body
        .find(&format!("data-host=\"{host}\""))
        .unwrap_or_else(|| panic!("no row for host {host}: {body}"));
    let end = body[start..].find("</tr>").unwrap();
    &body[start..start + end]
}

#[tokio::test]
async fn the_hosts_page_lists_the_hosts_recent_events_newest_first() {
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    let page = w.get("/hosts", Some(&cookie)).await;
    assert!(page.body.contains("id=\"no-events\""), "{}", page.body);
    // Each host's use over time, from the snapshots taken so far: labelled sparklines.
    for host in ["a", "b"] {
        let row = host_row(&page.body, host);
        for what in ["memory", "disk", "running-containers"] {
            assert!(
                row.contains(&format!(r#"class="chart spark {what}" "#)),
                "{host} {what}: {row}"
            );
        }
        assert!(row.contains(r#"role="img" aria-label="memory: "#), "{row}");
    }
    let event = |s: i64, action: &str, exit_code: Option<i64>| dockmesh_core::ports::HostEvent {
        at: jiff::Timestamp::from_second(1_800_000_000 + s).unwrap(),
        stack: "shop".into(),
        service: Some("db".into()),
        container: "shop-db-1".into(),
        action: action.into(),
        exit_code,
    };
    let events = w.state.host_events();
    events.record(&"a".into(), event(1, "start", None));
    events.record(&"b".into(), event(2, "oom", None));
    events.record(&"a".into(), event(3, "die", Some(137)));
    let page = w.get("/hosts", Some(&cookie)).await;
    assert!(!page.body.contains("id=\"no-events\""));
    let table = &page.body[page.body.find("id=\"events\"").expect("an events table")..];
    let die = table.find("exit 137").expect("the exit code");
    let oom = table.find(">oom<").expect("the OOM kill");
    let start = table.find(">start<").expect("the start");
    assert!(die < oom && oom < start, "newest first: {table}");
    assert!(table.contains("shop-db-1"), "{table}");
}

#[tokio::test]
async fn the_hosts_page_shows_each_agents_version_and_drift_and_socket_hosts() {
    use dockmesh_core::rollout::UpgradeState;
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    let server = w.state.config().version.clone();
    assert_ne!(server, "0.0.1");
    // Host "a" is served by an agent on another version; "b" is reached by its socket.
    w.store
        .upsert_agent(&agent_record("agent-1", "a", "0.0.1", UpgradeState::Idle))
        .await
        .unwrap();
    let page = w.get("/hosts", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let a = host_row(&page.body, "a");
    assert!(a.contains("0.0.1"), "{a}");
    assert!(
        a.contains(&format!("differs from the server ({server})")),
        "{a}"
    );
    let b = host_row(&page.body, "b");
    assert!(b.contains("socket"), "{b}");
    assert!(!b.contains("differs from the server"), "{b}");
    assert!(!b.contains("0.0.1"), "{b}");

    // The agent on the server's version: no drift. The same view as the agents page.
    w.store
        .upsert_agent(&agent_record("agent-1", "a", &server, UpgradeState::Idle))
        .await
        .unwrap();
    let page = w.get("/hosts", Some(&cookie)).await;
    let a = host_row(&page.body, "a");
    assert!(
        a.contains(&server) && a.contains("same as the server"),
        "{a}"
    );
    assert!(!a.contains("differs from the server"), "{a}");
    let agents = w.get("/agents", Some(&cookie)).await;
    assert!(!agents.body.contains("differs from the server"));
}

#[tokio::test]
async fn the_server_page_shows_the_newest_recorded_backup() {
    use dockmesh_core::audit::{AuditEvent, SERVER_BACKUP};
    let w = Web::new().await;
    let (cookie, _) = w.session().await;
    let page = w.get("/server", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No backup recorded"), "{}", page.body);
    assert!(
        page.body.contains("dockmesh backup --out FILE"),
        "{}",
        page.body
    );

    let now = w.state.clock().now();
    let backup = |hours: i64, path: &str, bytes: &str| {
        AuditEvent::new(
            now - jiff::SignedDuration::from_hours(hours),
            "system",
            SERVER_BACKUP,
            "database",
        )
        .with("path", path)
        .with("bytes", bytes)
        .with("schema_version", "7")
        .with("backend", "sqlite")
        .with("by", "dockmesh backup")
    };
    w.store
        .append_audit(&backup(30, "/srv/backups/old.tar.zst", "1000"))
        .await
        .unwrap();
    w.store
        .append_audit(&backup(3, "/srv/backups/dockmesh-new.tar.zst", "123456"))
        .await
        .unwrap();
    let page = w.get("/server", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    let start = page.body.find("id=\"last-backup\"").unwrap();
    let end = start + page.body[start..].find("</dd>").unwrap();
    let dd = &page.body[start..end];
    for text in [
        "/srv/backups/dockmesh-new.tar.zst",
        "120.6 KiB (123456 bytes)",
        "schema version 7",
        "3 hours ago",
        "dockmesh backup",
    ] {
        assert!(dd.contains(text), "{text}: {dd}");
    }
    assert!(!page.body.contains("old.tar.zst"), "only the newest");
    assert!(!page.body.contains("No backup recorded"));
}
