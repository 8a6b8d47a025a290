//! The agent upgrade API in process over the in-memory store: the policy checked field by
//! field and audited, run now and per-agent requests refused with the reason when they cannot
//! be carried out, and the signed binaries served (with ranges) and nothing else.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::ports::prelude::*;
use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{MemStore, SeqIds};
use dockmesh_http::channel::agent_binaries::{
    AgentBinaries, keygen, parse_private, parse_public, sign_file,
};
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

struct World {
    state: ServerState,
    store: Arc<MemStore>,
    token: String,
    _dir: Option<tempfile::TempDir>,
}

const BINARY: &[u8] = b"#!/bin/sh\necho agent binary\n";

/// A ready server with no hosts; with `binaries`, a release key and one binary signed as the
/// server's version for this machine's platform.
async fn world(binaries: bool) -> World {
    let store = Arc::new(MemStore::new());
    let (token, record) =
        dockmesh_http::server::auth::new_api_token("ops", jiff::Timestamp::now()).unwrap();
    store.put_token(&record).await.unwrap();
    let mut config = ServerConfig::default();
    let mut dir = None;
    if binaries {
        let d = tempfile::tempdir().unwrap();
        let (private, public) = keygen().unwrap();
        let bin = d.path().join("dockmesh-linux-test");
        std::fs::write(&bin, BINARY).unwrap();
        sign_file(
            &parse_private(&private, "k").unwrap(),
            &bin,
            &config.version,
            "linux",
            std::env::consts::ARCH,
        )
        .unwrap();
        config.agent_binaries = Some(AgentBinaries::new(
            d.path().to_owned(),
            parse_public(&public, "p").unwrap(),
        ));
        dir = Some(d);
    }
    let state = ServerState::new(
        store.clone(),
        Hosts::new(),
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
        config,
    );
    state.set_lifecycle(Lifecycle::Ready);
    World {
        state,
        store,
        token,
        _dir: dir,
    }
}

impl World {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, bytes) = self
            .raw(
                method,
                path,
                body.map(|b| b.to_string()),
                Some(&self.token),
                None,
            )
            .await;
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
        range: Option<&str>,
    ) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
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
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let (status, v) = self
            .call("GET", &format!("/api/v1/audit?action={action}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["entries"].as_array().unwrap().clone()
    }

    async fn agent(&self, id: &str, version: &str, protocol: u32) {
        self.store
            .upsert_agent(&AgentRecord {
                id: id.into(),
                name: format!("host-{id}"),
                version: version.into(),
                commit: None,
                protocol_version: protocol,
                arch: std::env::consts::ARCH.into(),
                docker_version: "28.0.0".into(),
                last_seen: None,
                connection: ConnectionState::Disconnected,
                upgrade: UpgradeState::Idle,
            })
            .await
            .unwrap();
    }
}

const POLICY: &str = "/api/v1/agents/upgrade-policy";

#[tokio::test]
async fn the_policy_is_refused_by_field_and_a_valid_one_is_stored_and_audited() {
    let w = world(false).await;
    let before = w.store.get_rollout().await.unwrap();
    for (body, field) in [
        (
            json!({"mode": "staged", "staged": {"percent": 0}}),
            "staged.percent",
        ),
        (
            json!({"mode": "staged", "staged": {"percent": 101}}),
            "staged.percent",
        ),
        (json!({"staged": {"min_gap": "-5m"}}), "staged.min_gap"),
        (json!({"interval": "0s"}), "interval"),
        (json!({"upgrade_timeout": "500ms"}), "upgrade_timeout"),
    ] {
        let (status, v) = w.call("PUT", POLICY, Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["details"]["field"], field, "{v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{v}");
    }
    // Not even a policy: the JSON error names where.
    for (body, word) in [
        (json!({"mode": "sometimes"}), "mode"),
        (json!({"staged": {"percent": "many"}}), "staged.percent"),
        (json!({"staged": {"min_gap": "soon"}}), "staged.min_gap"),
    ] {
        let (status, v) = w.call("PUT", POLICY, Some(body.clone())).await;
        assert!(status.is_client_error(), "{body}: {status} {v}");
        assert!(v["error"].as_str().unwrap().contains(word), "{body}: {v}");
    }
    assert_eq!(
        w.store.get_rollout().await.unwrap(),
        before,
        "nothing stored"
    );
    assert!(w.audit("agent.upgrade_policy").await.is_empty());

    let (status, v) = w
        .call(
            "PUT",
            POLICY,
            Some(json!({"mode": "staged", "staged": {"percent": 20, "min_gap": "2m", "canaries": 1}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["policy"]["mode"], "staged");
    assert_eq!(v["upgrades_enabled"], false);
    let stored = w.store.get_rollout().await.unwrap().policy;
    assert_eq!(stored.staged.percent, 20);
    assert_eq!(stored.staged.min_gap, jiff::SignedDuration::from_mins(2));
    assert_eq!(stored.staged.canaries, 1);
    let audit = w.audit("agent.upgrade_policy").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["event"]["actor"], "token:ops");
    assert_eq!(audit[0]["event"]["detail"]["mode"], "staged");
    assert_eq!(audit[0]["event"]["detail"]["percent"], "20");
    // Nothing to resume.
    let (status, v) = w.call("POST", &format!("{POLICY}/resume"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn without_binaries_run_now_and_requests_say_how_to_turn_upgrades_on() {
    let w = world(false).await;
    w.agent("agent-1", "0.0.1", 1).await;
    for path in [
        format!("{POLICY}/run"),
        "/api/v1/agents/agent-1/upgrade".into(),
    ] {
        let (status, v) = w.call("POST", &path, None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("--release-key") && e.contains("dockmesh release sign"),
            "{e}"
        );
    }
    assert!(w.audit("agent.upgrade_run").await.is_empty());
    let rec = w.store.get_agent(&"agent-1".into()).await.unwrap().unwrap();
    assert_eq!(rec.upgrade, UpgradeState::Idle);
}

#[tokio::test]
async fn a_request_names_the_agent_and_is_refused_when_it_cannot_be_carried_out() {
    let w = world(true).await;
    let version = w.state.config().version.clone();
    // A protocol outside the server's window (N and N−1 are accepted).
    w.agent("agent-old", "0.0.1", 99).await;
    w.agent("agent-now", &version, 1).await;
    w.agent("agent-away", "0.0.1", 1).await;

    let (status, v) = w.call("POST", "/api/v1/agents/nobody/upgrade", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    // It cannot take an order: the manual steps are in the error.
    let (status, v) = w
        .call("POST", "/api/v1/agents/agent-old/upgrade", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("protocol 99") && e.contains("on the host, install"),
        "{e}"
    );
    // Already on the server's version.
    let (status, v) = w
        .call("POST", "/api/v1/agents/host-agent-now/upgrade", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("already reports"),
        "{v}"
    );
    assert!(w.audit("agent.upgrade_run").await.is_empty());

    // Not connected: requested, sent when it connects; audited with who and what.
    let (status, v) = w
        .call("POST", "/api/v1/agents/host-agent-away/upgrade", None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["status"], "requested", "{v}");
    assert_eq!(v["upgrade"]["state"], "requested");
    let runs = w.audit("agent.upgrade_run").await;
    assert_eq!(runs.len(), 1);
    let e = &runs[0]["event"];
    assert_eq!(e["actor"], "token:ops");
    assert_eq!(e["detail"]["agent"], "agent-away");
    assert_eq!(e["detail"]["action"], "request");
    assert_eq!(e["detail"]["server_version"], version.as_str());
    // No dispatch to an agent that is not connected.
    let deploys = w.audit("stack.deploy").await;
    assert!(deploys.is_empty(), "{deploys:?}");

    // An upgrade in flight: a second request is refused (409) with when and to what, and
    // nothing changes or is audited.
    let mut rec = w
        .store
        .get_agent(&"agent-away".into())
        .await
        .unwrap()
        .unwrap();
    let since = w.state.clock().now();
    rec.upgrade = UpgradeState::InFlight {
        since,
        target_version: version.clone(),
    };
    w.store.upsert_agent(&rec).await.unwrap();
    let (status, v) = w
        .call("POST", "/api/v1/agents/agent-away/upgrade", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("in flight") && e.contains(&version), "{e}");
    assert_eq!(
        w.store
            .get_agent(&"agent-away".into())
            .await
            .unwrap()
            .unwrap()
            .upgrade,
        rec.upgrade
    );
    assert_eq!(w.audit("agent.upgrade_run").await.len(), 1);
    rec.upgrade = UpgradeState::Requested { at: since };
    w.store.upsert_agent(&rec).await.unwrap();

    // The panel's view counts it.
    let (status, v) = w.call("GET", POLICY, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["counters"]["agents"], 3);
    assert_eq!(v["counters"]["up_to_date"], 1);
    assert_eq!(v["counters"]["drifted"], 2);
    assert_eq!(v["counters"]["requested"], 1);
    assert_eq!(v["upgrades_enabled"], true);
    assert_eq!(v["binaries"].as_array().unwrap().len(), 1);
    assert_eq!(v["binaries"][0]["file"], "dockmesh-linux-test");
    // Run now: evaluated and audited by the caller; nothing is connected, nothing sent.
    let (status, v) = w.call("POST", &format!("{POLICY}/run"), None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["dispatched"], json!([]));
    assert_eq!(v["automatic"]["decision"], "manual");
    assert_eq!(w.audit("agent.upgrade_run").await.len(), 2);
}

#[tokio::test]
async fn signed_binaries_are_served_with_ranges_and_nothing_else_is() {
    let w = world(true).await;
    let path = "/api/v1/agent-binaries/dockmesh-linux-test";
    let (status, _, body) = w.raw("GET", path, None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, BINARY);
    let (status, headers, body) = w.raw("GET", path, None, None, Some("bytes=10-")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &BINARY[10..]);
    assert!(headers.contains_key(header::CONTENT_RANGE));
    for bad in [
        "/api/v1/agent-binaries/dockmesh-linux-test.release.json",
        "/api/v1/agent-binaries/..%2Fetc%2Fpasswd",
        "/api/v1/agent-binaries/nothing",
    ] {
        let (status, _, _) = w.raw("GET", bad, None, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
    // Without binaries configured, nothing is served.
    let none = world(false).await;
    let (status, _, _) = none.raw("GET", path, None, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An agent pins the release key at enrollment: the server hands out its key there, and
/// nothing when it has none (the agent then takes no key offered later).
#[tokio::test]
async fn enrollment_hands_out_the_release_key_to_pin_when_the_server_has_one() {
    for binaries in [true, false] {
        let w = world(binaries).await;
        let mut config = w.state.config().clone();
        config.agent_port = Some(7443);
        let state = ServerState::new(
            w.store.clone(),
            Hosts::new(),
            Arc::new(SystemClock),
            Arc::new(SeqIds::default()),
            config,
        );
        state.set_lifecycle(Lifecycle::Ready);
        let ca = Arc::new(dockmesh_http::channel::pki::Ca::ephemeral().unwrap());
        assert!(state.set_agent_ca(ca.clone()));
        let (token, record) = dockmesh_http::channel::enroll::new_enrollment_token(
            "t",
            &ca.fingerprint(),
            state.clock().now(),
            jiff::SignedDuration::from_hours(1),
        )
        .unwrap();
        w.store.put_token(&record).await.unwrap();
        let req = Request::post("/api/v1/agents/enroll")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"token": token, "name": "edge"}).to_string(),
            ))
            .unwrap();
        let resp = api::router(state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = serde_json::from_slice(
            &axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap(),
        )
        .unwrap();
        match state.config().agent_binaries.as_ref() {
            Some(b) => assert_eq!(
                v["release_key_pem"],
                dockmesh_http::channel::agent_binaries::public_pem(b.key()),
                "{v}"
            ),
            None => assert!(v["release_key_pem"].is_null(), "{v}"),
        }
    }
}

/// Downgrades are off unless the policy turns them on by name.
#[tokio::test]
async fn downgrades_are_allowed_only_by_the_policy_saying_so() {
    let w = world(false).await;
    assert!(!w.store.get_rollout().await.unwrap().policy.allow_downgrade);
    let (status, v) = w.call("GET", POLICY, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["policy"]["allow_downgrade"], false, "{v}");
    let (status, v) = w
        .call("PUT", POLICY, Some(json!({"allow_downgrade": true})))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["policy"]["allow_downgrade"], true, "{v}");
    assert!(w.store.get_rollout().await.unwrap().policy.allow_downgrade);
}
