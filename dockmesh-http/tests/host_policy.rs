//! Host policies through the API, in process over the core's fakes: a deploy, an upgrade and a
//! migration onto a host whose policy refuses the stack are refused by name and change
//! nothing; the same stack goes where there is no policy. The compose file is read by a small
//! inspector made for this test (the compose loader's is tested in dockmesh-docker).

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::HostId;
use dockmesh_core::host_policy::{self, BindSource, ComposeInspector, ServicePrivileges};
use dockmesh_core::ports::{Clock, MigrationLog, StackStore, TokenStore};
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{FakeHost, MemStore, SeqIds};
use dockmesh_core::types::StackFiles;
use dockmesh_http::server::host_policy::HostPolicies;
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// One service, `app`: `privileged: true` and `bind: /PATH` lines of the compose file.
struct LineInspector;

impl ComposeInspector for LineInspector {
    fn inspect(&self, files: &StackFiles) -> Result<Vec<ServicePrivileges>, String> {
        if files.compose.contains("unreadable") {
            return Err("line 1: not a compose file".into());
        }
        let mut app = ServicePrivileges {
            service: "app".into(),
            ..Default::default()
        };
        for line in files
            .compose
            .lines()
            .map(|l| l.trim().trim_start_matches("# "))
        {
            if line == "privileged: true" {
                app.privileged = true;
            }
            if let Some(path) = line.strip_prefix("bind: ") {
                app.binds.push(BindSource::Absolute(path.into()));
            }
        }
        Ok(vec![app])
    }
}

const GOOD: &str = "services: {}\n# bind: /srv/app\n";
const PRIVILEGED: &str = "services: {}\n# privileged: true\n";

struct World {
    app: Router,
    store: Arc<MemStore>,
    token: String,
    a: Arc<FakeHost>,
    b: Arc<FakeHost>,
}

async fn world(policies: HostPolicies) -> World {
    let store = Arc::new(MemStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (token, record) = dockmesh_http::server::auth::new_api_token("ops", clock.now()).unwrap();
    store.put_token(&record).await.unwrap();
    let a = Arc::new(FakeHost::new("a"));
    let hosts = Hosts::new();
    hosts.add(a.clone()).unwrap();
    let b = Arc::new(FakeHost::new("b"));
    hosts.add(b.clone()).unwrap();
    let config = ServerConfig {
        max_retry_delay: Duration::from_millis(50),
        host_policies: policies,
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
    World {
        app: api::router(state),
        store,
        token,
        a,
        b,
    }
}

/// Host `a`: strict, binds beneath /srv only, and /var/lib/dockmesh protected.
fn policies() -> HostPolicies {
    let mut p = HostPolicies::new(Arc::new(LineInspector));
    let (host, policy) = host_policy::parse("a=strict,bind-prefixes=/srv").unwrap();
    p.set(HostId::new(host), policy);
    p.protect(HostId::new("a"), "/var/lib/dockmesh");
    p
}

impl World {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
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

    async fn register(&self, name: &str, compose: &str) {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/stacks",
                Some(json!({"name": name, "compose": compose})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    async fn deploy(&self, name: &str, host: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/api/v1/stacks/{name}/deploy"),
            Some(json!({"host": host})),
        )
        .await
    }
}

fn assert_policy_refusal(answer: &(StatusCode, Value), names: &[&str]) {
    let (s, v) = answer;
    assert_eq!(*s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "host_policy", "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.starts_with("the host policy of a refuses this stack"),
        "{error}"
    );
    for n in names {
        assert!(error.contains(n), "{error} names {n}");
    }
    assert_eq!(v["details"]["host"], "a", "{v}");
}

#[tokio::test]
async fn a_deploy_the_policy_refuses_changes_nothing() {
    let w = world(policies()).await;
    w.register("priv", PRIVILEGED).await;
    assert_policy_refusal(
        &w.deploy("priv", "a").await,
        &["service `app`", "`privileged`"],
    );
    assert!(w.a.holds_nothing_of("priv"), "nothing reached the host");
    let record = w.store.get_stack("priv").await.unwrap().unwrap();
    assert_eq!(record.host, None, "the stack is still not deployed");

    for (name, bind, why) in [
        ("etc", "/etc", "outside the allowed prefixes (/srv)"),
        (
            "data",
            "/var/lib/dockmesh/ca",
            "the server's data directory",
        ),
        ("above", "/var", "the server's data directory"),
    ] {
        w.register(name, &format!("services: {{}}\n# bind: {bind}\n"))
            .await;
        assert_policy_refusal(&w.deploy(name, "a").await, &["`volumes`", why]);
        assert!(w.a.holds_nothing_of(name));
    }

    // What keeps to the policy deploys; what does not deploys where there is no policy.
    w.register("good", GOOD).await;
    let (s, v) = w.deploy("good", "a").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w.deploy("priv", "b").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn an_upgrade_to_refused_content_is_refused() {
    let w = world(policies()).await;
    w.register("web", GOOD).await;
    let (s, v) = w.deploy("web", "a").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let answer = w
        .call(
            "PUT",
            "/api/v1/stacks/web",
            Some(json!({"compose": PRIVILEGED})),
        )
        .await;
    assert_policy_refusal(&answer, &["`privileged`"]);
    let record = w.store.get_stack("web").await.unwrap().unwrap();
    assert_eq!(record.compose, GOOD, "the stack's files are unchanged");
}

#[tokio::test]
async fn a_migration_to_a_host_whose_policy_refuses_fails_preflight() {
    let w = world(policies()).await;
    w.register("priv", PRIVILEGED).await;
    let (s, v) = w.deploy("priv", "b").await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/priv/migrate/preflight",
            Some(json!({"target_host_id": "a"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let check = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "host_policy")
        .expect("a host_policy check");
    assert_eq!(check["status"], "fail", "{check}");
    assert!(
        check["detail"].as_str().unwrap().contains("`privileged`"),
        "{check}"
    );

    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/priv/migrate",
            Some(json!({"target_host_id": "a"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("host_policy: "),
        "{v}"
    );
    assert!(
        w.store
            .list_migrations(&Default::default())
            .await
            .unwrap()
            .is_empty(),
        "no migration was recorded"
    );
    assert!(w.a.holds_nothing_of("priv"));

    // A host without a policy has no such check.
    w.register("good", GOOD).await;
    let (s, v) = w.deploy("good", "a").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/good/migrate/preflight",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "host_policy"),
        "{v}"
    );
}

#[tokio::test]
async fn a_policy_that_cannot_be_checked_refuses() {
    let w = world(policies()).await;
    w.register("odd", "services: {}\n# unreadable\n").await;
    let (s, v) = w.deploy("odd", "a").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["code"], "invalid_stack",
        "answered as a deploy answers one: {v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot be checked against the host's policy: line 1"),
        "{v}"
    );

    // A policy and no inspector: nothing is deployed unchecked.
    let mut p = HostPolicies::default();
    p.protect(HostId::new("a"), "/var/lib/dockmesh");
    let w = world(p).await;
    w.register("good", GOOD).await;
    let (s, v) = w.deploy("good", "a").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert!(w.a.holds_nothing_of("good"));
    let (s, v) = w.deploy("good", "b").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_drain_pauses_before_moving_a_stack_the_target_refuses() {
    use dockmesh_core::records::StackRecord;
    let w = world(policies()).await;
    // `priv` runs on `b`; draining `b` plans it onto `a`, whose policy refuses it.
    let files = StackFiles {
        name: "priv".into(),
        compose: PRIVILEGED.into(),
        env: None,
    };
    w.b.seed_stack(
        files.clone(),
        &[("priv_data", b"bytes".as_slice())],
        1 << 20,
    );
    w.store
        .put_stack(
            &StackRecord {
                name: "priv".into(),
                compose: files.compose,
                env: None,
                host: Some(HostId::from("b")),
                updated_at: jiff::Timestamp::now(),
            },
            None,
        )
        .await
        .unwrap();
    let (s, d) = w.call("POST", "/api/v1/hosts/b/drain", None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let mut paused = Value::Null;
    for _ in 0..500 {
        let (s, d) = w.call("GET", &format!("/api/v1/drains/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        if d["state"] == "paused" {
            paused = d;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reason = paused["reason"].as_str().expect("the drain paused");
    assert!(
        reason.contains("stack priv cannot move to a")
            && reason.contains("service `app`: `privileged`"),
        "{reason}"
    );
    assert!(
        w.store
            .list_migrations(&Default::default())
            .await
            .unwrap()
            .is_empty(),
        "no migration was started"
    );
    assert!(w.a.holds_nothing_of("priv"));
}
