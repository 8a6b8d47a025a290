//! The API in process (`tower::ServiceExt::oneshot`) over the core's in-memory fakes: auth,
//! errors, readiness, the whole migrate → rollback → purge flow, cordons and shutdown.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::HostId;
use dockmesh_core::ports::{Clock, prelude::*};
use dockmesh_core::records::TokenKind;
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{FakeHost, FakeOp, MemStore, SeqIds};
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

struct World {
    state: ServerState,
    token: String,
    a: Arc<FakeHost>,
    b: Arc<FakeHost>,
}

async fn world() -> World {
    world_on(Arc::new(MemStore::new()), Arc::new(SystemClock)).await
}

/// Two fake hosts `a` and `b`, an API token, and a ready server over `store` and `clock`.
async fn world_on(store: Arc<MemStore>, clock: Arc<dyn Clock>) -> World {
    let (token, record) = dockmesh_http::server::auth::new_api_token("ops", clock.now()).unwrap();
    store.put_token(&record).await.unwrap();
    let a = Arc::new(FakeHost::new("a"));
    let b = Arc::new(FakeHost::new("b"));
    World {
        state: server(store, &a, &b, clock),
        token,
        a,
        b,
    }
}

/// A ready server over these fakes (retries every 50 ms at most).
fn server(
    store: Arc<dyn Store>,
    a: &Arc<FakeHost>,
    b: &Arc<FakeHost>,
    clock: Arc<dyn Clock>,
) -> ServerState {
    let hosts = Hosts::new();
    hosts.add(a.clone()).unwrap();
    hosts.add(b.clone()).unwrap();
    let config = ServerConfig {
        max_retry_delay: Duration::from_millis(50),
        ..ServerConfig::default()
    };
    let state = ServerState::new(store, hosts, clock, Arc::new(SeqIds::default()), config);
    state.set_lifecycle(Lifecycle::Ready);
    state
}

impl World {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.raw(method, path, body.map(|b| b.to_string()), Some(&self.token))
            .await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = api::router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn deployed(&self, name: &str) {
        let (s, v) = self
            .call(
                "POST",
                "/api/v1/stacks",
                Some(json!({"name": name, "compose": "services: {}"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, v) = self
            .call(
                "POST",
                &format!("/api/v1/stacks/{name}/deploy"),
                Some(json!({"host": "a"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    /// GET `path` every 10 ms until `done` holds (at most 10 s).
    async fn poll(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            let (s, v) = self.call("GET", path, None).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            if done(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{path} never got there");
    }

    async fn settled(&self, id: &str) -> Value {
        self.poll(&format!("/api/v1/migrations/{id}"), |m| {
            m["settled"] == true
        })
        .await
    }

    /// The same store and hosts under a new server (a restarted one); nothing resumed yet.
    fn restarted(&self) -> World {
        World {
            state: server(
                self.state.store().clone(),
                &self.a,
                &self.b,
                Arc::new(SystemClock),
            ),
            token: self.token.clone(),
            a: self.a.clone(),
            b: self.b.clone(),
        }
    }
}

#[tokio::test]
async fn every_api_route_needs_a_valid_api_token() {
    let w = world().await;
    for (path, token) in [
        ("/api/v1/stacks", None),
        ("/api/v1/stacks", Some("dmt_unknown")),
        ("/api/v1/hosts", Some("")),
        ("/api/v1/audit", Some("not-bearer")),
    ] {
        let (s, v) = w.raw("GET", path, None, token).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} {token:?}");
        assert_eq!(v["code"], "unauthorized");
    }
    // An enrollment token is not an API token.
    let (secret, mut record) =
        dockmesh_http::server::auth::new_api_token("enroll", jiff::Timestamp::now()).unwrap();
    record.kind = TokenKind::Enrollment;
    w.state.store().put_token(&record).await.unwrap();
    let (s, v) = w.raw("GET", "/api/v1/stacks", None, Some(&secret)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(v["error"].as_str().unwrap().contains("enrollment"), "{v}");
    // Health and the OpenAPI document need none.
    let (s, v) = w.raw("GET", "/api/v1/health", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["db"], "ok");
    let (s, doc) = w.raw("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["paths"]["/api/v1/migrations/{id}/rollback"]["post"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let (s, _) = w.call("GET", "/api/v1/stacks", None).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn readiness_follows_the_lifecycle_and_shutdown_refuses_new_work() {
    let w = world().await;
    w.state.set_lifecycle(Lifecycle::Starting);
    let (s, _) = w.raw("GET", "/healthz/ready", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, _) = w.raw("GET", "/healthz/live", None, None).await;
    assert_eq!(s, StatusCode::OK);
    w.state.set_lifecycle(Lifecycle::Ready);
    let (s, _) = w.raw("GET", "/healthz/ready", None, None).await;
    assert_eq!(s, StatusCode::OK);
    w.state.set_lifecycle(Lifecycle::Draining);
    w.state.set_lifecycle(Lifecycle::Ready);
    assert_eq!(
        w.state.lifecycle(),
        Lifecycle::Draining,
        "draining is final"
    );
    let (s, _) = w.raw("GET", "/healthz/ready", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks",
            Some(json!({"name": "x", "compose": "services: {}"})),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(w.state.store().get_stack("x").await.unwrap().is_none());
    let (s, _) = w.call("GET", "/api/v1/stacks", None).await;
    assert_eq!(s, StatusCode::OK, "reads still answer");
}

#[tokio::test]
async fn bad_bodies_are_refused_naming_the_problem() {
    let w = world().await;
    for (body, needle) in [
        (r#"{"name": "x", "#, "EOF"),
        (r#"{"name": "x"}"#, "compose"),
        (r#"{"name": 5, "compose": "a"}"#, "name"),
        (r#"{"name": "Bad!", "compose": "a"}"#, "name:"),
        (r#"{"name": "ok", "compose": "  "}"#, "compose:"),
    ] {
        let (s, v) = w
            .raw("POST", "/api/v1/stacks", Some(body.into()), Some(&w.token))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{body}: {v}");
    }
    let big = json!({"name": "big", "compose": "x".repeat(5 << 20)}).to_string();
    let (s, v) = w
        .raw("POST", "/api/v1/stacks", Some(big), Some(&w.token))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(w.state.store().list_stacks().await.unwrap().is_empty());
    let (s, _) = w.call("GET", "/api/v1/migrations/zzz", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.call("GET", "/api/v1/audit?since=yesterday", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = w.call("GET", "/api/v1/nothing-here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_stack_moves_rolls_back_and_its_source_is_purged_through_the_api() {
    let w = world().await;
    w.deployed("shop").await;
    assert!(w.a.stack("shop").unwrap().running);
    // A deploy elsewhere is refused: stacks move with migrate.
    let (s, _) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/deploy",
            Some(json!({"host": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (s, report) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate/preflight",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        report["checks"].as_array().unwrap().len(),
        dockmesh_core::preflight::CHECK_NAMES.len()
    );
    let (s, m) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let m = w.settled(&id).await;
    assert_eq!(m["state"], "committed", "{m}");
    assert_eq!(m["retention_expired"], false);
    assert_eq!(m["volumes"][0]["verified"], true);
    assert!(m["events"].as_array().unwrap().len() >= 7);
    timeline_numbers_agree_with_the_log(&w, &m).await;
    assert!(w.b.stack("shop").unwrap().running);
    assert!(!w.a.stack("shop").unwrap().running);
    let (_, st) = w.call("GET", "/api/v1/stacks/shop", None).await;
    assert_eq!(st["host"], "b");

    let (s, m) = w
        .call("POST", &format!("/api/v1/migrations/{id}/rollback"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    assert_eq!(w.settled(&id).await["state"], "rolled_back");
    assert!(w.a.stack("shop").unwrap().running);
    let (s, _) = w
        .call("POST", &format!("/api/v1/migrations/{id}/rollback"), None)
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a rolled-back migration is not rolled back twice"
    );
    // The copy left on b is removed on request; then the stack moves again and is purged.
    let (s, v) = w
        .call("DELETE", &format!("/api/v1/migrations/{id}/target"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(w.b.holds_nothing_of("shop"));
    let (s, m) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    let id2 = m["id"].as_str().unwrap().to_owned();
    assert_eq!(w.settled(&id2).await["state"], "committed");
    let (s, _) = w
        .call(
            "DELETE",
            &format!("/api/v1/stacks/other/migrate/{id2}/source"),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "the path names the migration's stack"
    );
    let (s, _) = w
        .call(
            "DELETE",
            &format!("/api/v1/stacks/shop/migrate/{id2}/source"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.settled(&id2).await["state"], "purged");
    assert!(w.a.holds_nothing_of("shop"));

    let (_, audit) = w
        .call("GET", "/api/v1/audit?target=shop&limit=2", None)
        .await;
    assert_eq!(audit["entries"].as_array().unwrap().len(), 2);
    let before = audit["next_before"].as_u64().unwrap();
    let (_, next) = w
        .call(
            "GET",
            &format!("/api/v1/audit?target=shop&before={before}"),
            None,
        )
        .await;
    assert!(
        next["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() < before)
    );
    let (_, v) = w.call("GET", "/api/v1/audit/verify", None).await;
    assert_eq!(v["ok"], true);
    let (s, metrics) = w.call("GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("dockmesh_migrations{phase=\"purged\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dockmesh_migrations{phase=\"rolled_back\"} 1"),
        "{metrics}"
    );
}

/// A committed migration's timeline in the API: its steps in order with their durations, and
/// the downtime exactly from `source_stopped` to `target_healthy`, the same in the list and in
/// the OpenAPI document.
async fn timeline_numbers_agree_with_the_log(w: &World, m: &Value) {
    let at = |kind: &str| -> jiff::Timestamp {
        let e = m["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind);
        e.unwrap_or_else(|| panic!("no {kind} in {m}"))["at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let down = at("target_healthy")
        .duration_since(at("source_stopped"))
        .as_millis() as u64;
    assert_eq!(m["downtime_ms"], down, "{m}");
    let tl = &m["timeline"];
    assert_eq!(tl["downtime"]["duration_ms"], down, "{tl}");
    assert_eq!(tl["downtime"]["open"], false);
    assert_eq!(
        tl["downtime"]["from"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
        at("source_stopped")
    );
    let steps = tl["steps"].as_array().unwrap();
    let mut names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    names.dedup();
    assert_eq!(
        names,
        [
            "preflight",
            "stop_source",
            "transfer",
            "ship_files",
            "start_target",
            "target_health",
            "commit"
        ],
        "{tl}"
    );
    let volumes = m["volumes"].as_array().unwrap().len();
    assert_eq!(
        steps.iter().filter(|s| s["step"] == "transfer").count(),
        volumes
    );
    for s in steps {
        let start: jiff::Timestamp = s["started_at"].as_str().unwrap().parse().unwrap();
        let end: jiff::Timestamp = s["ended_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            s["duration_ms"],
            end.duration_since(start).as_millis() as u64,
            "{s}"
        );
        assert_eq!(s["failed"], false);
    }
    assert!(
        tl["summary"].as_str().unwrap().starts_with("down for "),
        "{tl}"
    );
    let (_, list) = w.call("GET", "/api/v1/migrations", None).await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == m["id"])
        .unwrap();
    assert_eq!(row["downtime_ms"], down);
    assert!(
        row.get("timeline").is_none(),
        "the list leaves the timeline out"
    );
    let (_, doc) = w.raw("GET", "/api/v1/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    assert!(
        schemas["MigrationView"]["properties"]["downtime_ms"].is_object(),
        "{schemas}"
    );
    assert!(
        schemas["TimelineView"]["properties"]["steps"].is_object(),
        "{schemas}"
    );
    assert!(
        schemas["StepView"]["properties"]["duration_ms"].is_object(),
        "{schemas}"
    );
}

#[tokio::test]
async fn refusals_change_nothing() {
    let w = world().await;
    w.deployed("shop").await;
    // Unknown target, unknown stack, the stack's own host, a cordoned host.
    for (stack, target, status) in [
        ("shop", "zz", StatusCode::UNPROCESSABLE_ENTITY),
        ("nope", "b", StatusCode::NOT_FOUND),
        ("shop", "a", StatusCode::CONFLICT),
        ("shop", "", StatusCode::BAD_REQUEST),
    ] {
        let (s, v) = w
            .call(
                "POST",
                &format!("/api/v1/stacks/{stack}/migrate"),
                Some(json!({"target_host_id": target})),
            )
            .await;
        assert_eq!(s, status, "{stack} -> {target}: {v}");
    }
    let (s, v) = w.call("POST", "/api/v1/hosts/b/cordon", None).await;
    assert_eq!((s, v["changed"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("cordoned"));
    let (_, hosts) = w.call("GET", "/api/v1/hosts", None).await;
    assert_eq!(hosts[1]["cordoned"], true);
    w.call("POST", "/api/v1/hosts/b/uncordon", None).await;
    // A target that is down: pre-flight refuses with the report, nothing is recorded.
    w.b.set_online(false);
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "preflight_failed");
    assert!(v["details"]["checks"].is_array());
    let (_, list) = w.call("GET", "/api/v1/migrations", None).await;
    assert_eq!(list, json!([]));
    assert!(w.a.stack("shop").unwrap().running);
    assert!(!w.a.calls().iter().any(|c| c.starts_with("Stop")));
}

#[tokio::test]
async fn a_migration_waiting_on_a_host_is_retried_until_it_answers() {
    let w = world().await;
    w.deployed("shop").await;
    // The target's health check fails once: compensation then needs the target, which is
    // down for a while; the supervisor retries until it is back.
    w.b.fail(FakeOp::Health, 1);
    let (s, m) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    // Take b down as soon as compensation is under way.
    for _ in 0..500 {
        let (_, m) = w
            .call("GET", &format!("/api/v1/migrations/{id}"), None)
            .await;
        if m["state"] == "compensating" {
            w.b.set_online(false);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, m) = w
        .call("GET", &format!("/api/v1/migrations/{id}"), None)
        .await;
    assert!(m["settled"] == false || m["state"] == "failed", "{m}");
    w.b.set_online(true);
    let m = w.settled(&id).await;
    assert_eq!(m["state"], "failed", "{m}");
    assert!(w.a.stack("shop").unwrap().running);
    assert!(w.b.holds_nothing_of("shop"));
    assert_eq!(
        w.state
            .store()
            .get_stack("shop")
            .await
            .unwrap()
            .unwrap()
            .host,
        Some(HostId::from("a"))
    );
}

#[tokio::test]
async fn shutdown_stops_at_a_checkpoint_and_a_new_server_resumes() {
    let w = world().await;
    w.deployed("shop").await;
    let (_, m) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let left = w.state.supervisor().shutdown(Duration::from_secs(10)).await;
    assert_eq!(left, 0, "every task reached a checkpoint");
    let (_, m) = w
        .call("GET", &format!("/api/v1/migrations/{id}"), None)
        .await;
    // A new supervisor over the same store (a restarted server) finishes it.
    let w2 = w.restarted();
    if m["settled"] == false {
        assert_eq!(w2.state.supervisor().resume_all().await.unwrap(), 1);
    }
    assert_eq!(w2.settled(&id).await["state"], "committed");
}

/// Seed a stack on `a` as if deployed there (with memory metrics, which a drain plan needs).
async fn seeded(w: &World, name: &str) {
    use dockmesh_core::records::StackRecord;
    use dockmesh_core::types::StackFiles;
    let files = StackFiles {
        name: name.into(),
        compose: "services: {}".into(),
        env: None,
    };
    let volume = format!("{name}_data");
    w.a.seed_stack(
        files.clone(),
        &[(volume.as_str(), b"bytes".as_slice())],
        1 << 20,
    );
    w.state
        .store()
        .put_stack(
            &StackRecord {
                name: name.into(),
                compose: files.compose,
                env: None,
                host: Some(HostId::from("a")),
                updated_at: jiff::Timestamp::now(),
            },
            None,
        )
        .await
        .unwrap();
}

async fn drain_until(w: &World, id: &str, want: &str) -> Value {
    w.poll(&format!("/api/v1/drains/{id}"), |d| d["state"] == want)
        .await
}

#[tokio::test]
async fn a_drain_moves_every_stack_pauses_on_a_failure_and_resumes() {
    let w = world().await;
    seeded(&w, "one").await;
    seeded(&w, "two").await;
    let (s, plan) = w.call("POST", "/api/v1/hosts/a/drain/plan", None).await;
    assert_eq!(s, StatusCode::OK, "{plan}");
    assert_eq!(plan["entries"].as_array().unwrap().len(), 2);
    // The first target health check fails: that stack's migration is undone and the drain
    // pauses after it, before the next stack.
    w.b.fail(FakeOp::Health, 1);
    let (s, d) = w.call("POST", "/api/v1/hosts/a/drain", None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let (s, _) = w.call("POST", "/api/v1/hosts/a/drain", None).await;
    assert_eq!(s, StatusCode::CONFLICT, "one drain per host");
    let d = drain_until(&w, &id, "paused").await;
    assert!(d["reason"].as_str().unwrap().contains("failed"), "{d}");
    let statuses: Vec<&str> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "pending"], "{d}");
    // The drained host is cordoned: nothing moves onto it.
    let (_, hosts) = w.call("GET", "/api/v1/hosts", None).await;
    assert_eq!(hosts[0]["cordoned"], true);
    assert_eq!(w.state.store().list_cordons().await.unwrap().len(), 1);
    // Resume: the failed stack is tried again, then the next; the drain completes.
    let (s, _) = w
        .call("POST", &format!("/api/v1/drains/{id}/resume"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let d = drain_until(&w, &id, "completed").await;
    let statuses: Vec<&str> = d["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["moved", "moved"], "{d}");
    for name in ["one", "two"] {
        assert!(w.b.stack(name).unwrap().running, "{name} runs on b");
        let rec = w.state.store().get_stack(name).await.unwrap().unwrap();
        assert_eq!(rec.host, Some(HostId::from("b")));
    }
    let (s, _) = w
        .call("POST", &format!("/api/v1/drains/{id}/abort"), None)
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a completed drain cannot be aborted"
    );
}

#[tokio::test]
async fn a_paused_drain_starts_nothing_and_a_new_server_resumes_a_running_one() {
    let w = world().await;
    seeded(&w, "one").await;
    seeded(&w, "two").await;
    // Stop every task at its first checkpoint, as a shutdown does, then pause the drain.
    let (_, d) = w.call("POST", "/api/v1/hosts/a/drain", None).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let (s, d) = w
        .call("POST", &format!("/api/v1/drains/{id}/pause"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["state"], "paused");
    w.state.supervisor().shutdown(Duration::from_secs(10)).await;
    let (s, _) = w
        .call("POST", &format!("/api/v1/drains/{id}/pause"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        w.b.stack("two").is_none(),
        "a paused drain starts no next stack"
    );
    // A restarted server over the same store: resume the drain there; it completes.
    let w2 = w.restarted();
    w2.state.supervisor().resume_all().await.unwrap();
    assert_eq!(
        w2.state.drains().resume_all(&w2.state).await.unwrap(),
        0,
        "a paused drain is not resumed by itself"
    );
    let (s, _) = w2
        .call("POST", &format!("/api/v1/drains/{id}/resume"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let d = drain_until(&w2, &id, "completed").await;
    assert_eq!(d["entries"][1]["status"], "moved", "{d}");
    let (s, _) = w2.call("GET", "/api/v1/drains/nope", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn after_the_window_the_source_is_kept_marked_and_reminded_once() {
    use dockmesh_core::testing::FixedClock;
    let clock = Arc::new(FixedClock::new(jiff::Timestamp::now()));
    let w = world_on(Arc::new(MemStore::with_clock(clock.clone())), clock.clone()).await;
    w.deployed("shop").await;
    let (_, m) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_owned();
    let m = w.settled(&id).await;
    assert_eq!(m["retention_expired"], false);
    assert!(
        w.state
            .supervisor()
            .remind_retention()
            .await
            .unwrap()
            .is_empty()
    );
    clock.advance(jiff::SignedDuration::from_hours(72));
    let (_, m) = w
        .call("GET", &format!("/api/v1/migrations/{id}"), None)
        .await;
    assert_eq!(m["retention_expired"], true, "{m}");
    assert_eq!(
        m["state"], "committed",
        "the source is never deleted by itself"
    );
    assert!(w.a.stack("shop").is_some(), "the source is still there");
    let due = w.state.supervisor().remind_retention().await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].to_string(), id);
    assert!(
        w.state
            .supervisor()
            .remind_retention()
            .await
            .unwrap()
            .is_empty(),
        "one reminder per migration"
    );
    let (s, _) = w
        .call("POST", &format!("/api/v1/migrations/{id}/rollback"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "no rollback after the window");
}

#[tokio::test]
async fn metrics_need_a_token_on_the_api_listener_and_not_on_their_own() {
    let w = world().await;
    let (s, v) = w.raw("GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = w.raw("GET", "/metrics", None, Some("dmt_wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = w.call("GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let names = metric_names(v.as_str().unwrap());
    for want in [
        "dockmesh_http_requests_total",
        "dockmesh_volume_bytes_moved_total",
        "dockmesh_migrations",
        "dockmesh_agents",
        "dockmesh_hosts",
        "dockmesh_database_up",
    ] {
        assert!(names.contains(&want.to_owned()), "{want} in {names:?}");
    }
    // Its own listener's router answers without a token, and serves nothing else.
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let resp = api::metrics_router(w.state.clone())
        .oneshot(get("/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = api::metrics_router(w.state.clone())
        .oneshot(get("/api/v1/stacks"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// The `# TYPE` names of an exposition text.
fn metric_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// `dockmesh_migrations` by phase as a scrape shows it.
async fn scraped_phases(w: &World) -> std::collections::BTreeMap<String, u64> {
    let (s, v) = w.call("GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    v.as_str()
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("dockmesh_migrations{phase=\""))
        .map(|l| {
            let (phase, n) = l.split_once("\"} ").unwrap();
            (phase.to_owned(), n.parse().unwrap())
        })
        .collect()
}

/// The reference: every stored migration's log replayed, counted by phase (what each scrape
/// used to compute).
async fn replayed_phases(w: &World) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let list = dockmesh_http::server::supervisor::all_migrations(w.state.store().as_ref(), false)
        .await
        .unwrap();
    for m in list {
        let phase = dockmesh_core::migration::Migration::replay(m.spec, &m.events)
            .map(|m| dockmesh_http::server::api::health::wire_name(m.phase()))
            .unwrap();
        *out.entry(phase).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn migration_counters_match_a_replay_of_every_log() {
    let w = world().await;
    w.deployed("shop").await;
    w.deployed("blog").await;
    let migrate = |stack: &'static str, to: &'static str| {
        let w = &w;
        async move {
            let (s, m) = w
                .call(
                    "POST",
                    &format!("/api/v1/stacks/{stack}/migrate"),
                    Some(json!({ "target_host_id": to })),
                )
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{m}");
            m["id"].as_str().unwrap().to_owned()
        }
    };
    let id = migrate("shop", "b").await;
    assert_eq!(w.settled(&id).await["state"], "committed");
    assert_eq!(scraped_phases(&w).await, replayed_phases(&w).await);
    // A failure: the target's health check fails, the source is put back.
    w.b.fail(FakeOp::Health, 1);
    let failed = migrate("blog", "b").await;
    assert_eq!(w.settled(&failed).await["state"], "failed");
    assert_eq!(scraped_phases(&w).await, replayed_phases(&w).await);
    let (s, _) = w
        .call("POST", &format!("/api/v1/migrations/{id}/rollback"), None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.settled(&id).await["state"], "rolled_back");
    assert_eq!(scraped_phases(&w).await, replayed_phases(&w).await);
    let again = migrate("blog", "b").await;
    assert_eq!(w.settled(&again).await["state"], "committed");
    let (s, _) = w
        .call(
            "DELETE",
            &format!("/api/v1/stacks/blog/migrate/{again}/source"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(w.settled(&again).await["state"], "purged");
    let scraped = scraped_phases(&w).await;
    assert_eq!(scraped, replayed_phases(&w).await);
    assert_eq!(scraped.values().sum::<u64>(), 3, "{scraped:?}");
    // A restarted server reads the store once and counts the same.
    let w2 = w.restarted();
    assert_eq!(scraped_phases(&w2).await, scraped);
    assert!(w2.state.metrics().migration_phases_loaded());
}
