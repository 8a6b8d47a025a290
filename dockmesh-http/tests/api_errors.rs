//! The API's contract in process: every error is the JSON error body whatever layer answers it
//! (extractors, the router's 404 and 405, body limits), a request the schema refuses is 400
//! and one the schema allows but whose content names nothing is 422, and the OpenAPI document
//! describes every answer, the layers' answers included, with links that name real operations.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::ports::{Clock, prelude::*};
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{FakeHost, MemStore, SeqIds};
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use tower::ServiceExt;

/// A ready server with one fake host `a` and an API token.
async fn server() -> (ServerState, String) {
    let store = Arc::new(MemStore::new());
    let (token, record) =
        dockmesh_http::server::auth::new_api_token("ops", SystemClock.now()).unwrap();
    store.put_token(&record).await.unwrap();
    let hosts = Hosts::new();
    hosts.add(Arc::new(FakeHost::new("a"))).unwrap();
    let config = ServerConfig {
        body_limit: 64 << 10,
        ..ServerConfig::default()
    };
    let state = ServerState::new(
        store,
        hosts,
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
        config,
    );
    state.set_lifecycle(Lifecycle::Ready);
    (state, token)
}

struct Answer {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: Value,
}

async fn send(
    state: &ServerState,
    token: &str,
    method: &str,
    path: &str,
    body: Option<(&str, String)>,
) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let req = match body {
        Some((content_type, b)) => req
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = api::router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let header_of = |name| {
        resp.headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let content_type = header_of(header::CONTENT_TYPE).unwrap_or_default();
    let allow = header_of(header::ALLOW);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        content_type,
        allow,
        body,
    }
}

fn json_body(v: Value) -> Option<(&'static str, String)> {
    Some(("application/json", v.to_string()))
}

/// `a` is the JSON error body with this status and code, and its message contains `says`.
#[track_caller]
fn is_error(a: &Answer, status: StatusCode, code: &str, says: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(
        a.content_type.starts_with("application/json"),
        "an error is JSON, not {:?}: {}",
        a.content_type,
        a.body
    );
    assert_eq!(a.body["code"], code, "{}", a.body);
    let error = a.body["error"].as_str().unwrap_or_default();
    assert!(error.contains(says), "{error:?} should say {says:?}");
}

#[tokio::test]
async fn every_layer_answers_errors_as_the_json_body() {
    let (s, t) = server().await;
    // The query string's extractor.
    let a = send(&s, &t, "GET", "/api/v1/audit?limit=many", None).await;
    is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "limit");
    // The path's extractor is the handler's own parse.
    let a = send(&s, &t, "GET", "/api/v1/migrations/not-an-id", None).await;
    is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "not-an-id");
    // The router: no route, and a method the path does not take (its Allow kept).
    let a = send(&s, &t, "GET", "/api/v1/nothing-here", None).await;
    is_error(&a, StatusCode::NOT_FOUND, "not_found", "no such route");
    let a = send(&s, &t, "PATCH", "/api/v1/stacks", None).await;
    is_error(&a, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "");
    let allow = a.allow.expect("a 405 says what the path takes");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    // The body: no JSON content type, over the limit, not an object, a field too many.
    let a = send(
        &s,
        &t,
        "POST",
        "/api/v1/stacks",
        Some(("text/plain", "x".into())),
    )
    .await;
    is_error(
        &a,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "application/json",
    );
    let big = json!({"name": "web", "compose": "x".repeat(80 << 10)});
    let a = send(&s, &t, "POST", "/api/v1/stacks", json_body(big)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.body);
    assert_eq!(a.body["code"], "payload_too_large", "{}", a.body);
    let a = send(&s, &t, "POST", "/api/v1/stacks", json_body(json!([]))).await;
    is_error(
        &a,
        StatusCode::BAD_REQUEST,
        "bad_request",
        "must be a JSON object, not an array",
    );
    let extra = json!({"name": "web", "compose": "services: {}", "hosts": "a"});
    let a = send(&s, &t, "POST", "/api/v1/stacks", json_body(extra)).await;
    is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "hosts");
    // Nothing of the refused requests was recorded.
    let a = send(&s, &t, "GET", "/api/v1/stacks", None).await;
    assert_eq!(a.body, json!([]));
}

#[tokio::test]
async fn pages_and_cursors_are_bounded_as_the_document_says() {
    let (s, t) = server().await;
    for path in ["/api/v1/audit?limit=1001", "/api/v1/migrations?limit=1001"] {
        let a = send(&s, &t, "GET", path, None).await;
        is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "limit: 1001");
    }
    for path in ["/api/v1/audit?limit=1000", "/api/v1/migrations?limit=1000"] {
        let a = send(&s, &t, "GET", path, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
    }
    let a = send(
        &s,
        &t,
        "GET",
        "/api/v1/audit?before=9223372036854775808",
        None,
    )
    .await;
    is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "before");
    let a = send(&s, &t, "GET", "/api/v1/audit?since=yesterday", None).await;
    is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "since");
}

#[tokio::test]
async fn schema_valid_requests_naming_nothing_are_422() {
    let (s, t) = server().await;
    let web = json!({"name": "web", "compose": "services:\n  app:\n    image: busybox\n"});
    let a = send(&s, &t, "POST", "/api/v1/stacks", json_body(web)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    // A host no one has.
    let a = send(
        &s,
        &t,
        "POST",
        "/api/v1/stacks/web/deploy",
        json_body(json!({"host": "z"})),
    )
    .await;
    is_error(
        &a,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable",
        "host z is not known",
    );
    for path in [
        "/api/v1/stacks/web/migrate",
        "/api/v1/stacks/web/migrate/preflight",
    ] {
        let a = send(
            &s,
            &t,
            "POST",
            path,
            json_body(json!({"target_host_id": " "})),
        )
        .await;
        is_error(
            &a,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "is not known",
        );
    }
    // Empty is what the schema refuses (minLength): 400.
    let a = send(
        &s,
        &t,
        "POST",
        "/api/v1/stacks/web/migrate",
        json_body(json!({"target_host_id": ""})),
    )
    .await;
    is_error(&a, StatusCode::BAD_REQUEST, "bad_request", "target_host_id");
    // A release the stack does not have; a revision written `2.0` is the number 2.
    let a = send(
        &s,
        &t,
        "POST",
        "/api/v1/stacks/web/deploy",
        json_body(json!({"host": "a"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let cases = [
        (
            json!(9),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "has no release 9",
        ),
        (
            json!(9.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "has no release 9",
        ),
        (
            json!(9.5),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "to: invalid type: floating point `9.5`",
        ),
    ];
    for (to, status, code, says) in cases {
        let body = json_body(json!({ "to": to }));
        let a = send(&s, &t, "POST", "/api/v1/stacks/web/rollback", body).await;
        is_error(&a, status, code, says);
    }
}

#[tokio::test]
async fn the_short_health_path_answers_as_the_long_one() {
    let (s, t) = server().await;
    let long = send(&s, &t, "GET", "/api/v1/health", None).await;
    let short = send(&s, "", "GET", "/health", None).await;
    assert_eq!(short.status, StatusCode::OK, "{}", short.body);
    assert_eq!(short.body, long.body);
    assert_eq!(short.body["status"], "ok");
    assert_eq!(short.body["db"], "ok");
    assert!(short.body["version"].is_string(), "{}", short.body);
}

/// Every operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
    }
    out
}

#[test]
fn the_document_describes_every_answer_and_links_real_operations() {
    let doc = serde_json::to_value(api::openapi()).unwrap();
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    let ids: BTreeSet<String> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), ops.len(), "operation ids are unique");
    let mut links = 0;
    for (path, method, op) in &ops {
        let responses = op["responses"].as_object().unwrap();
        let has = |s: &str| responses.contains_key(s);
        for (status, r) in responses {
            let d = r["description"].as_str().unwrap_or_default();
            assert!(
                !d.trim().is_empty(),
                "{method} {path} {status} has no description"
            );
            for (name, l) in r["links"].as_object().into_iter().flatten() {
                let to = l["operationId"].as_str().unwrap();
                assert!(ids.contains(to), "{method} {path} link {name} → {to}");
                links += 1;
            }
        }
        let protected = op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
        if protected {
            for s in ["401", "403", "429"] {
                assert!(has(s), "{method} {path} needs a token but does not say {s}");
            }
        }
        assert!(has("408"), "{method} {path}: the request timeout");
        if method != "get" {
            assert!(has("503"), "{method} {path}: refused while shutting down");
        }
        if op.get("requestBody").is_some() {
            for s in ["400", "413", "415"] {
                assert!(has(s), "{method} {path} takes a body but does not say {s}");
            }
        }
        let params = op["parameters"].as_array().map_or(0, Vec::len);
        if params > 0 {
            assert!(
                has("400"),
                "{method} {path} parses parameters but does not say 400"
            );
        } else if op.get("requestBody").is_none() {
            assert!(
                !has("400"),
                "{method} {path} reads nothing that could be malformed"
            );
        }
        if path.contains('{') {
            assert!(
                has("404"),
                "{method} {path} names a thing but does not say 404"
            );
        }
    }
    assert!(links >= 20, "{links} links");
    // Ids and times are declared with their formats.
    let get = &doc["paths"]["/api/v1/migrations/{id}"]["get"]["parameters"][0]["schema"];
    assert_eq!(get["format"], "uuid", "{get}");
    let audit = doc["paths"]["/api/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let since = audit.iter().find(|p| p["name"] == "since").unwrap();
    assert_eq!(since["schema"]["format"], "date-time", "{since}");
}
