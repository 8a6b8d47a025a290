//! Token scopes through the API and the dashboard, in process over the core's fakes: a `read`
//! token reads and changes nothing, an `operate` token migrates but does not deploy, an
//! `admin` token does everything; a refusal is 403 and names the scope needed.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::ports::{Clock, DrainStore, StackStore, TokenStore};
use dockmesh_core::records::Scope;
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{FakeHost, MemStore, SeqIds};
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// A ready server over two fake hosts `a` and `b`, with one token of each scope.
struct World {
    app: Router,
    store: Arc<MemStore>,
    read: String,
    operate: String,
    admin: String,
}

async fn world() -> World {
    let store = Arc::new(MemStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut secrets = Vec::new();
    for scope in Scope::ALL {
        let (secret, record) =
            dockmesh_http::server::auth::new_scoped_api_token(scope.as_str(), scope, clock.now())
                .unwrap();
        assert_eq!(record.scope, scope);
        store.put_token(&record).await.unwrap();
        secrets.push(secret);
    }
    let hosts = Hosts::new();
    hosts.add(Arc::new(FakeHost::new("a"))).unwrap();
    hosts.add(Arc::new(FakeHost::new("b"))).unwrap();
    let config = ServerConfig {
        max_retry_delay: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let state = ServerState::new(
        store.clone(),
        hosts,
        clock,
        Arc::new(SeqIds::default()),
        config,
    );
    state.set_lifecycle(Lifecycle::Ready);
    let [read, operate, admin] = <[String; 3]>::try_from(secrets).unwrap();
    World {
        app: api::router(state),
        store,
        read,
        operate,
        admin,
    }
}

impl World {
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    /// `web` registered and deployed on host `a` by the admin token.
    async fn deployed(&self) {
        let (s, v) = self
            .call(
                &self.admin,
                "POST",
                "/api/v1/stacks",
                Some(json!({"name": "web", "compose": "services: {}"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .call(
                &self.admin,
                "POST",
                "/api/v1/stacks/web/deploy",
                Some(json!({"host": "a"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

/// A 403 whose JSON body names the scope needed and the token's.
fn assert_refused(answer: &(StatusCode, Value), need: &str, have: &str) {
    let (s, v) = answer;
    assert_eq!(*s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "forbidden", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("scope `{need}`")) && error.contains(&format!("`{have}`")),
        "{error}"
    );
    assert_eq!(v["details"]["required_scope"], need, "{v}");
    assert_eq!(v["details"]["token_scope"], have, "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("--scope"),
        "the hint says how to get one: {v}"
    );
}

#[tokio::test]
async fn a_read_token_reads_and_changes_nothing() {
    let w = world().await;
    w.deployed().await;
    for path in [
        "/api/v1/hosts",
        "/api/v1/stacks",
        "/api/v1/stacks/web",
        "/api/v1/stacks/web/releases",
        "/api/v1/migrations",
        "/api/v1/audit",
        "/api/v1/agents",
        "/api/v1/agents/upgrade-policy",
    ] {
        let (s, v) = w.call(&w.read, "GET", path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
    }
    let before = w.store.list_stacks().await.unwrap();
    assert_refused(
        &w.call(
            &w.read,
            "POST",
            "/api/v1/stacks",
            Some(json!({"name": "evil", "compose": "services: {}"})),
        )
        .await,
        "admin",
        "read",
    );
    assert_refused(
        &w.call(
            &w.read,
            "POST",
            "/api/v1/stacks/web/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await,
        "operate",
        "read",
    );
    assert_refused(
        &w.call(&w.read, "POST", "/api/v1/hosts/a/cordon", None)
            .await,
        "operate",
        "read",
    );
    assert_refused(
        &w.call(&w.read, "DELETE", "/api/v1/stacks/web", None).await,
        "admin",
        "read",
    );
    assert_eq!(
        w.store.list_stacks().await.unwrap(),
        before,
        "nothing changed"
    );
    assert!(w.store.list_cordons().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_operate_token_migrates_but_does_not_deploy() {
    let w = world().await;
    w.deployed().await;
    assert_refused(
        &w.call(
            &w.operate,
            "POST",
            "/api/v1/stacks/web/deploy",
            Some(json!({"host": "b"})),
        )
        .await,
        "admin",
        "operate",
    );
    assert_refused(
        &w.call(
            &w.operate,
            "POST",
            "/api/v1/stacks",
            Some(json!({"name": "new", "compose": "services: {}"})),
        )
        .await,
        "admin",
        "operate",
    );
    assert_refused(
        &w.call(
            &w.operate,
            "PUT",
            "/api/v1/agents/upgrade-policy",
            Some(json!({"mode": "manual"})),
        )
        .await,
        "admin",
        "operate",
    );
    // Past the scope check: the migration is accepted and runs.
    let (s, v) = w
        .call(
            &w.operate,
            "POST",
            "/api/v1/stacks/web/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = w
        .call(&w.operate, "POST", "/api/v1/hosts/b/cordon", None)
        .await;
    assert!(s.is_success(), "{s} {v}");
}

#[tokio::test]
async fn an_admin_token_does_everything() {
    let w = world().await;
    w.deployed().await;
    let (s, v) = w
        .call(
            &w.admin,
            "POST",
            "/api/v1/stacks/web/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let (s, v) = w.call(&w.admin, "GET", "/api/v1/stacks", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_openapi_document_names_the_scopes() {
    let w = world().await;
    let req = Request::get("/api/v1/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    let op = &doc["paths"]["/api/v1/stacks/{name}/migrate"]["post"];
    assert_eq!(op["security"], json!([{"bearer": ["operate"]}]), "{op}");
    let op = &doc["paths"]["/api/v1/stacks"]["get"];
    assert_eq!(op["security"], json!([{"bearer": ["read"]}]), "{op}");
}

// ---- The dashboard ----

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

struct Page {
    status: StatusCode,
    cookies: Vec<String>,
    body: String,
}

impl Page {
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| cookie_pair(c))
    }

    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a csrf field") + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }
}

impl World {
    async fn page(&self, req: axum::http::request::Builder, body: Body) -> Page {
        let req = req.header(header::HOST, "dash.test").body(body).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let cookies = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Page {
            status,
            cookies,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn get_page(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = Request::get(path);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.page(req, Body::empty()).await
    }

    async fn post_form(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::COOKIE, cookie);
        self.page(req, Body::from(body)).await
    }

    /// A dashboard session opened with `token`: its cookie and CSRF token.
    async fn session(&self, token: &str) -> (String, String) {
        let form = self.get_page("/login", None).await;
        let login_cookie = form.cookie("dockmesh_login_csrf").unwrap();
        let a = self
            .post_form(
                "/login",
                &login_cookie,
                &[("csrf", &form.csrf()), ("token", token), ("next", "/hosts")],
            )
            .await;
        assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
        let cookie = a.cookie("dockmesh_session").unwrap();
        let page = self.get_page("/hosts", Some(&cookie)).await;
        assert_eq!(page.status, StatusCode::OK);
        (cookie, page.csrf())
    }
}

#[tokio::test]
async fn the_dashboard_obeys_the_same_scopes() {
    let w = world().await;
    w.deployed().await;

    let (cookie, csrf) = w.session(&w.read).await;
    for path in ["/hosts", "/stacks", "/stacks/web", "/migrations", "/audit"] {
        let p = w.get_page(path, Some(&cookie)).await;
        assert_eq!(p.status, StatusCode::OK, "a read token views {path}");
    }
    let p = w
        .post_form("/hosts/a/cordon", &cookie, &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("scope `operate`"), "{}", p.body);
    assert!(w.store.list_cordons().await.unwrap().is_empty());
    let p = w
        .post_form(
            "/stacks",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "evil"),
                ("compose", "services: {}"),
                ("host", "a"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(p.body.contains("scope `admin`"), "{}", p.body);
    assert!(w.store.get_stack("evil").await.unwrap().is_none());

    // An operate token may cordon, not deploy.
    let (cookie, csrf) = w.session(&w.operate).await;
    let p = w
        .post_form("/hosts/a/cordon", &cookie, &[("csrf", &csrf)])
        .await;
    assert_ne!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert_eq!(w.store.list_cordons().await.unwrap().len(), 1);
    let p = w
        .post_form(
            "/stacks",
            &cookie,
            &[
                ("csrf", &csrf),
                ("name", "evil"),
                ("compose", "services: {}"),
                ("host", "a"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    assert!(w.store.get_stack("evil").await.unwrap().is_none());
}

/// `/metrics` takes a token of any scope on the API listener (it is no API route, so the scope
/// table outside the OpenAPI document names it), and none is refused for its scope.
#[tokio::test]
async fn any_token_reads_the_metrics() {
    let w = world().await;
    for token in [&w.read, &w.operate, &w.admin] {
        let (s, v) = w.call(token, "GET", "/metrics", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v.as_str().is_some_and(|t| t.contains("dockmesh_")), "{v}");
    }
    let (s, _) = w.call("dmt_wrong", "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}
