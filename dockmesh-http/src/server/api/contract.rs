//! What every operation of the API can answer besides its own success: the answers of the
//! layers around the handlers (authentication, scopes, limits, timeouts, shutdown, extractors),
//! written into the OpenAPI document so that it tells the whole truth, and the middleware that
//! makes every one of those answers the JSON error body.
//!
//! Each rule here mirrors a layer of [`super::router`]:
//! - a token is needed ([`crate::server::auth::require_token`]): 401 without a valid one, 403
//!   with one of too little scope, 429 once an address has presented too many failed tokens;
//! - every request has a deadline: 408 past the server's request timeout;
//! - a request that would start work is refused while shutting down: 503 with `Retry-After`;
//! - a JSON body ([`crate::server::error::ApiJson`]): 400 when it is not the JSON the
//!   operation takes, 413 over the body limit, 415 without `Content-Type: application/json`;
//! - a parameter that does not parse: 400; a path naming nothing: 404.

use crate::server::error::ErrorBody;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Responses,
};

/// The name of the error body's schema in the document's components.
const ERROR_SCHEMA: &str = "ErrorBody";

/// Whether an operation needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Behind [`crate::server::auth::require_token`].
    Token,
    /// Open (health, enrollment).
    Public,
}

/// Add to every operation of `doc` the answers of the layers around its handler, and give
/// every response a description (OpenAPI requires one).
pub(crate) fn complete(doc: &mut OpenApi, access: Access) {
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.put, true),
            (&mut item.post, true),
            (&mut item.delete, true),
            (&mut item.patch, true),
        ];
        for (op, mutating) in ops {
            if let Some(op) = op.as_mut() {
                complete_operation(op, access, mutating);
            }
        }
    }
}

fn complete_operation(op: &mut Operation, access: Access, mutating: bool) {
    let params = op.parameters.as_deref().unwrap_or_default();
    let has_path = params
        .iter()
        .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path));
    let has_params = !params.is_empty();
    let has_body = op.request_body.is_some();
    let r = &mut op.responses;
    if access == Access::Token {
        add(
            r,
            401,
            "No token, or one that is unknown, expired or revoked",
            None,
        );
        add(
            r,
            403,
            "The token's scope is too small for this operation",
            None,
        );
        add(
            r,
            429,
            "Too many failed tokens from this address: wait as `Retry-After` says",
            Some("retry-after"),
        );
    }
    if has_body {
        add(
            r,
            400,
            "The body is not the JSON this operation takes (the message names the field)",
            None,
        );
        add(r, 413, "The body is larger than the server's limit", None);
        add(
            r,
            415,
            "The body is not sent as `Content-Type: application/json`",
            None,
        );
    }
    if has_params {
        add(
            r,
            400,
            "A parameter is malformed (the message names it)",
            None,
        );
    }
    if has_path {
        add(r, 404, "Nothing of that name or id", None);
    }
    add(
        r,
        408,
        "The request took longer than the server's request timeout",
        None,
    );
    if mutating {
        add(
            r,
            503,
            "The server is shutting down and takes no new work: send again after `Retry-After`",
            Some("retry-after"),
        );
    }
    for (status, resp) in r.responses.iter_mut() {
        if let RefOr::T(resp) = resp
            && resp.description.trim().is_empty()
        {
            resp.description = default_description(status).to_owned();
        }
    }
}

/// Document `status` with the error body unless the operation documents it already.
fn add(r: &mut Responses, status: u16, description: &str, header: Option<&str>) {
    let key = status.to_string();
    if r.responses.contains_key(&key) {
        return;
    }
    let mut resp = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ERROR_SCHEMA)))
            .build(),
    );
    if let Some(name) = header {
        resp = resp.header(
            name,
            HeaderBuilder::new()
                .description(Some("Seconds to wait before sending again"))
                .schema(Some(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String),
                ))
                .build(),
        );
    }
    r.responses.insert(key, RefOr::T(resp.build()));
}

/// A description for a response its operation left without one.
fn default_description(status: &str) -> &'static str {
    match status {
        "200" => "Done; the body is the result",
        "201" => "Created",
        "202" => "Accepted: the work goes on in the background",
        "204" => "Done, with nothing to answer",
        "400" => "The request is malformed (the message names the problem)",
        "401" => "No token, or one that is unknown, expired or revoked",
        "403" => "Not allowed",
        "404" => "Nothing of that name or id",
        "409" => "The request conflicts with the state of what it names (the message says how)",
        "413" => "The body is larger than the limit",
        "415" => "The body's content type is not the one this operation takes",
        "422" => "Refused by a check (the body's `details` say which)",
        "429" => "Too many attempts: wait as `Retry-After` says",
        "503" => "Not available now: send again after `Retry-After`",
        _ => "An error; the body says which",
    }
}

/// The stable `code` of an error answered by a layer rather than a handler.
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "too_many_requests",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// The largest body of a non-JSON error that is read to put its text into the JSON body.
const TEXT_ERROR_LIMIT: usize = 4 << 10;

/// Whether `path` is answered in JSON (the API, the short health path and the metrics'
/// errors), as opposed to the dashboard's pages.
fn json_path(path: &str) -> bool {
    path.starts_with("/api/") || path == "/health" || path == "/metrics"
}

/// Make every error answer of the API the JSON error body, whatever layer produced it: an
/// extractor's rejection (query string, path, body), a method the path does not take (405, its
/// `Allow` kept), the request timeout (408), a body over the limit. Errors that are already
/// JSON pass unchanged; the dashboard's pages are not touched.
pub(crate) async fn json_errors(req: Request, next: Next) -> Response {
    let json = json_path(req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    if !json || !(status.is_client_error() || status.is_server_error()) || is_json(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = match axum::body::to_bytes(body, TEXT_ERROR_LIMIT).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_owned()
    } else {
        text
    };
    let body = ErrorBody {
        error,
        code: code_for(status).to_owned(),
        hint: None,
        details: None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = serde_json::to_vec(&body).expect("an error body serializes");
    let mut out = Response::from_parts(parts, Body::from(bytes));
    *out.status_mut() = status;
    out.into_response()
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// One link of the document: from a success answer of an operation (path, method, status) to
/// another operation that takes a value of that answer (link name, operation id, its
/// parameters) — OpenAPI links, what a client or a stateful test chains.
type LinkRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const STACK_FROM_BODY: &[(&str, &str)] = &[("name", "$response.body#/name")];
const STACK_FROM_PATH: &[(&str, &str)] = &[("name", "$request.path.name")];
const MIGRATION: &[(&str, &str)] = &[("id", "$response.body#/id")];
const MIGRATION_SOURCE: &[(&str, &str)] =
    &[("name", "$request.path.name"), ("id", "$response.body#/id")];
const FIRST_HOST: &[(&str, &str)] = &[("id", "$response.body#/0/id")];
const FIRST_DRAIN: &[(&str, &str)] = &[("id", "$response.body#/0/id")];
const DRAIN: &[(&str, &str)] = &[("id", "$response.body#/id")];
const FIRST_AGENT: &[(&str, &str)] = &[("agent", "$response.body#/0/id")];

/// Register → read, deploy, upgrade, roll back, remove; deploy → status, pre-flight, migrate;
/// migrate → follow, roll back, purge; hosts → cordon, drain, projects; drains → follow,
/// pause, resume, abort; agents → upgrade, remove.
#[rustfmt::skip]
const LINKS: &[LinkRow] = &[
    ("/api/v1/stacks", "post", "201", "GetStack", "get_stack", STACK_FROM_BODY),
    ("/api/v1/stacks", "post", "201", "DeployStack", "deploy_stack", STACK_FROM_BODY),
    ("/api/v1/stacks", "post", "201", "StackReleases", "list_releases", STACK_FROM_BODY),
    ("/api/v1/stacks", "post", "201", "DeleteStack", "delete_stack", STACK_FROM_BODY),
    ("/api/v1/stacks/{name}/deploy", "post", "200", "StackStatus", "stack_status", STACK_FROM_PATH),
    ("/api/v1/stacks/{name}/deploy", "post", "200", "UpgradeStack", "upgrade_stack", STACK_FROM_PATH),
    ("/api/v1/stacks/{name}/deploy", "post", "200", "RollbackStack", "rollback_stack", STACK_FROM_PATH),
    ("/api/v1/stacks/{name}/deploy", "post", "200", "Preflight", "preflight", STACK_FROM_PATH),
    ("/api/v1/stacks/{name}/deploy", "post", "200", "Migrate", "migrate", STACK_FROM_PATH),
    ("/api/v1/stacks/{name}/migrate", "post", "202", "GetMigration", "get_migration", MIGRATION),
    ("/api/v1/stacks/{name}/migrate", "post", "202", "RollbackMigration", "rollback", MIGRATION),
    ("/api/v1/stacks/{name}/migrate", "post", "202", "PurgeSource", "purge_source", MIGRATION_SOURCE),
    ("/api/v1/migrations/{id}/rollback", "post", "202", "PurgeTarget", "purge_target", MIGRATION),
    ("/api/v1/hosts", "get", "200", "Cordon", "cordon", FIRST_HOST),
    ("/api/v1/hosts", "get", "200", "Uncordon", "uncordon", FIRST_HOST),
    ("/api/v1/hosts", "get", "200", "DrainPlan", "drain_plan", FIRST_HOST),
    ("/api/v1/hosts", "get", "200", "Projects", "list_projects", FIRST_HOST),
    ("/api/v1/hosts", "get", "200", "Events", "host_events", FIRST_HOST),
    ("/api/v1/hosts/{id}/drain", "post", "202", "GetDrain", "get_drain", DRAIN),
    ("/api/v1/hosts/{id}/drain", "post", "202", "PauseDrain", "pause_drain", DRAIN),
    ("/api/v1/drains", "get", "200", "GetDrain", "get_drain", FIRST_DRAIN),
    ("/api/v1/drains", "get", "200", "PauseDrain", "pause_drain", FIRST_DRAIN),
    ("/api/v1/drains", "get", "200", "ResumeDrain", "resume_drain", FIRST_DRAIN),
    ("/api/v1/drains", "get", "200", "AbortDrain", "abort_drain", FIRST_DRAIN),
    ("/api/v1/agents", "get", "200", "UpgradeAgent", "upgrade_agent", FIRST_AGENT),
    ("/api/v1/agents", "get", "200", "RemoveAgent", "remove_agent", FIRST_AGENT),
];

/// Add [`LINKS`] to the document. A row whose operation or answer is missing is a mistake
/// of this table: it panics, and the document's test finds it.
pub(crate) fn add_links(doc: &mut OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    for &(path, method, status, name, to, params) in LINKS {
        let item = doc
            .paths
            .paths
            .get_mut(path)
            .unwrap_or_else(|| panic!("link from {}: no such path", path));
        let op = match method {
            "get" => item.get.as_mut(),
            "post" => item.post.as_mut(),
            "put" => item.put.as_mut(),
            "delete" => item.delete.as_mut(),
            m => panic!("link from {}: method {m}", path),
        }
        .unwrap_or_else(|| panic!("link from {} {}: no such operation", method, path));
        let Some(RefOr::T(resp)) = op.responses.responses.get_mut(status) else {
            panic!("link from {} {}: no answer {}", method, path, status);
        };
        let mut link = LinkBuilder::new().operation_id(to);
        for (name, value) in params {
            link = link.parameter(*name, serde_json::Value::String((*value).to_owned()));
        }
        resp.links.insert(name.to_owned(), RefOr::T(link.build()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_a_layer_answers_has_its_own_code() {
        let expected = [
            (400, "bad_request"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "not_found"),
            (405, "method_not_allowed"),
            (408, "timeout"),
            (409, "conflict"),
            (413, "payload_too_large"),
            (415, "unsupported_media_type"),
            (422, "unprocessable"),
            (429, "too_many_requests"),
            (503, "unavailable"),
            (500, "internal"),
            (502, "internal"),
            (418, "error"),
        ];
        for (status, code) in expected {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(code_for(s), code, "{status}");
        }
    }

    #[test]
    fn a_response_left_without_words_gets_words_for_its_status() {
        let all = [
            "200", "201", "202", "204", "400", "401", "403", "404", "409", "413", "415", "422",
            "429", "503",
        ];
        let words: std::collections::BTreeSet<&str> =
            all.iter().map(|s| default_description(s)).collect();
        assert_eq!(words.len(), all.len(), "each status has words of its own");
        assert!(!words.contains(default_description("599")));
        assert!(all.iter().all(|s| !default_description(s).is_empty()));
    }

    #[test]
    fn only_the_api_health_and_metrics_answer_errors_in_json() {
        for p in ["/api/v1/stacks", "/api/", "/health", "/metrics"] {
            assert!(json_path(p), "{p}");
        }
        for p in [
            "/",
            "/stacks",
            "/login",
            "/healthz/live",
            "/healthy",
            "/metrics/x",
            "/apis",
        ] {
            assert!(!json_path(p), "{p}");
        }
    }
}
