//! Least privilege: the scope each API route and each dashboard action needs.
//!
//! A token's [`Scope`] is `read`, `operate` or `admin` (each includes the ones before it).
//! [`API_ROUTES`] names the scope of every protected API route by method and path template
//! (the OpenAPI path, which is also axum's matched path); [`DASHBOARD_ACTIONS`] does the same
//! for the dashboard's forms. A route missing from a table needs `admin`, so a forgotten route
//! fails closed; a test walks every route of [`crate::server::api::openapi`] and refuses a route
//! without an entry, or an entry without a route.
//!
//! A token with too little scope is answered 403 with the scope needed named in the error.
//!
//! **Architecture Invariant:** what a request may do is decided here, from the method and the
//! matched route, before its handler runs; no handler checks scopes itself.

use crate::server::auth::Actor;
use crate::server::error::ApiError;
use axum::extract::{MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
pub use dockmesh_core::records::Scope;

use Scope::{Admin, Operate, Read};

/// The routes outside the OpenAPI document that need a token, with their scope: `/metrics`
/// (any token reads it).
pub const OTHER_ROUTES: &[(&str, &str, Scope)] = &[("GET", "/metrics", Read)];

/// The scope of every protected API route: method, OpenAPI path, scope.
pub const API_ROUTES: &[(&str, &str, Scope)] = &[
    // Hosts, drains.
    ("GET", "/api/v1/hosts", Read),
    ("POST", "/api/v1/hosts/{id}/cordon", Operate),
    ("POST", "/api/v1/hosts/{id}/uncordon", Operate),
    ("POST", "/api/v1/hosts/{id}/drain/plan", Operate),
    ("POST", "/api/v1/hosts/{id}/drain", Operate),
    ("GET", "/api/v1/hosts/{id}/projects", Read),
    ("GET", "/api/v1/hosts/{id}/events", Read),
    ("GET", "/api/v1/drains", Read),
    ("GET", "/api/v1/drains/{id}", Read),
    ("POST", "/api/v1/drains/{id}/pause", Operate),
    ("POST", "/api/v1/drains/{id}/resume", Operate),
    ("POST", "/api/v1/drains/{id}/abort", Operate),
    // Stacks: new compose content is root on the target host.
    ("GET", "/api/v1/stacks", Read),
    ("POST", "/api/v1/stacks", Admin),
    ("GET", "/api/v1/stacks/{name}", Read),
    ("PUT", "/api/v1/stacks/{name}", Admin),
    ("DELETE", "/api/v1/stacks/{name}", Admin),
    ("POST", "/api/v1/stacks/{name}/deploy", Admin),
    ("GET", "/api/v1/stacks/{name}/status", Read),
    ("GET", "/api/v1/stacks/{name}/releases", Read),
    ("POST", "/api/v1/stacks/{name}/rollback", Admin),
    ("POST", "/api/v1/hosts/{id}/projects/{name}/adopt", Admin),
    // Migrations.
    ("POST", "/api/v1/stacks/{name}/migrate/preflight", Operate),
    ("POST", "/api/v1/stacks/{name}/migrate", Operate),
    ("GET", "/api/v1/migrations", Read),
    ("GET", "/api/v1/migrations/{id}", Read),
    ("POST", "/api/v1/migrations/{id}/rollback", Operate),
    (
        "DELETE",
        "/api/v1/stacks/{name}/migrate/{id}/source",
        Operate,
    ),
    ("DELETE", "/api/v1/migrations/{id}/target", Operate),
    // Audit.
    ("GET", "/api/v1/audit", Read),
    ("GET", "/api/v1/audit/verify", Read),
    // Agents.
    ("GET", "/api/v1/agents", Read),
    ("DELETE", "/api/v1/agents/{agent}", Admin),
    ("GET", "/api/v1/agents/upgrade-policy", Read),
    ("PUT", "/api/v1/agents/upgrade-policy", Admin),
    ("POST", "/api/v1/agents/upgrade-policy/run", Operate),
    ("POST", "/api/v1/agents/upgrade-policy/resume", Operate),
    ("POST", "/api/v1/agents/{agent}/upgrade", Operate),
];

/// The scope of every dashboard form (`POST`): path, scope. Every dashboard page (`GET`) needs
/// `read`, which every token has; the login and logout forms need none.
pub const DASHBOARD_ACTIONS: &[(&str, Scope)] = &[
    ("/hosts/{id}/cordon", Operate),
    ("/hosts/{id}/uncordon", Operate),
    ("/hosts/{id}/drain", Operate),
    ("/drains/{id}/{action}", Operate),
    ("/stacks", Admin),
    ("/stacks/{name}/migrate", Operate),
    ("/stacks/{name}/migrate/preflight", Operate),
    ("/migrations/{id}/rollback", Operate),
    ("/migrations/{id}/purge-source", Operate),
    ("/migrations/{id}/purge-target", Operate),
    ("/agents/upgrade-policy", Admin),
    ("/agents/upgrade-policy/run", Operate),
    ("/agents/upgrade-policy/resume", Operate),
    ("/agents/{id}/upgrade", Operate),
    ("/agents/{id}/remove", Admin),
];

/// The dashboard forms open to anyone (they carry no session yet, or end one).
const DASHBOARD_OPEN: &[&str] = &["/login", "/logout"];

/// The scope an API request needs: its route's in [`API_ROUTES`], `admin` for a route not
/// listed there.
pub fn api_scope(method: &Method, path: &str) -> Scope {
    API_ROUTES
        .iter()
        .chain(OTHER_ROUTES)
        .find(|(m, p, _)| *p == path && method_is(method, m))
        .map(|(_, _, s)| *s)
        .unwrap_or(Admin)
}

/// The scope a dashboard request needs (`None`: the login and logout forms).
pub fn dashboard_scope(method: &Method, path: &str) -> Option<Scope> {
    if matches!(*method, Method::GET | Method::HEAD) {
        return Some(Read);
    }
    if DASHBOARD_OPEN.contains(&path) {
        return None;
    }
    Some(
        DASHBOARD_ACTIONS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, s)| *s)
            .unwrap_or(Admin),
    )
}

/// `HEAD` is answered like `GET`.
fn method_is(method: &Method, name: &str) -> bool {
    method.as_str() == name || (*method == Method::HEAD && name == "GET")
}

/// The matched route of a request (`None` before routing).
fn matched(req: &Request) -> Option<&str> {
    req.extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
}

/// Why a request was refused: the scope it needs and the one the token has.
fn refusal_text(need: Scope, have: Scope) -> String {
    format!("this request needs a token of scope `{need}`; this token's scope is `{have}`")
}

fn hint(need: Scope) -> String {
    format!("use a token of scope `{need}` or more (`dockmesh token create --scope {need}`)")
}

/// Let an API request through when its token's scope covers its route; else a 403 JSON error
/// naming the scope needed.
#[allow(clippy::result_large_err)]
pub fn authorize_api(req: &Request, actor: &Actor) -> Result<(), Response> {
    let need = matched(req)
        .map(|path| api_scope(req.method(), path))
        .unwrap_or(Admin);
    let have = actor.1;
    if have.allows(need) {
        return Ok(());
    }
    Err(
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal_text(need, have))
            .with_hint(hint(need))
            .with_details(serde_json::json!({
                "required_scope": need,
                "token_scope": have,
            }))
            .into_response(),
    )
}

/// Let a dashboard request through when its session's token covers it; else a 403 page
/// naming the scope needed.
#[allow(clippy::result_large_err)]
pub fn authorize_dashboard(req_method: &Method, path: &str, have: Scope) -> Result<(), Response> {
    let Some(need) = dashboard_scope(req_method, path) else {
        return Ok(());
    };
    if have.allows(need) {
        return Ok(());
    }
    Err((
        StatusCode::FORBIDDEN,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "{}; nothing was changed. Log in with a token of scope `{need}` to do this.\n",
            refusal_text(need, have)
        ),
    )
        .into_response())
}

/// Name each protected operation's scope in the OpenAPI document: as the bearer requirement's
/// role (OpenAPI 3.1) and in its description.
pub(crate) fn describe(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::SecurityRequirement;
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("GET", &mut item.get),
            ("PUT", &mut item.put),
            ("POST", &mut item.post),
            ("DELETE", &mut item.delete),
            ("PATCH", &mut item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op.as_mut() else { continue };
            let method = Method::from_bytes(method.as_bytes()).expect("a method name");
            let need = api_scope(&method, path);
            op.security = Some(vec![SecurityRequirement::new("bearer", [need.as_str()])]);
            let line = format!("Needs a token of scope `{need}`.");
            op.description = Some(match op.description.take() {
                Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
                _ => line,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every operation of the protected API: (method, path).
    fn protected_operations() -> BTreeSet<(String, String)> {
        let (_, doc) = crate::server::api::protected().split_for_parts();
        let mut out = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
                ("HEAD", &item.head),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ] {
                if op.is_some() {
                    out.insert((method.to_owned(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_protected_route_has_exactly_one_scope() {
        let routes = protected_operations();
        assert!(
            routes.len() > 30,
            "the protected API has its routes: {routes:?}"
        );
        let table: Vec<(String, String)> = API_ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let listed: BTreeSet<_> = table.iter().cloned().collect();
        assert_eq!(listed.len(), table.len(), "an entry is listed twice");
        let missing: Vec<_> = routes.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "routes without a scope in scope::API_ROUTES: {missing:?}"
        );
        let stale: Vec<_> = listed.difference(&routes).collect();
        assert!(stale.is_empty(), "scope entries without a route: {stale:?}");
    }

    #[test]
    fn reads_need_read_and_changes_need_more() {
        for (method, path, scope) in API_ROUTES {
            if *method == "GET" {
                assert_eq!(*scope, Read, "{method} {path}");
            } else {
                assert_ne!(*scope, Read, "{method} {path} changes something");
            }
        }
        // Deploying compose content is root on the host: admin only.
        for (method, path) in [
            ("POST", "/api/v1/stacks"),
            ("PUT", "/api/v1/stacks/{name}"),
            ("POST", "/api/v1/stacks/{name}/deploy"),
            ("POST", "/api/v1/hosts/{id}/projects/{name}/adopt"),
            ("POST", "/api/v1/stacks/{name}/rollback"),
        ] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(api_scope(&m, path), Admin, "{method} {path}");
        }
        let m = Method::POST;
        assert_eq!(api_scope(&m, "/api/v1/stacks/{name}/migrate"), Operate);
        assert_eq!(api_scope(&Method::HEAD, "/api/v1/stacks"), Read);
        assert_eq!(
            api_scope(&Method::POST, "/api/v1/not-listed"),
            Admin,
            "a route not listed fails closed"
        );
    }

    #[test]
    fn dashboard_forms_have_scopes() {
        assert_eq!(dashboard_scope(&Method::GET, "/stacks"), Some(Read));
        assert_eq!(dashboard_scope(&Method::POST, "/login"), None);
        assert_eq!(dashboard_scope(&Method::POST, "/stacks"), Some(Admin));
        assert_eq!(
            dashboard_scope(&Method::POST, "/stacks/{name}/migrate"),
            Some(Operate)
        );
        assert_eq!(
            dashboard_scope(&Method::POST, "/not/listed"),
            Some(Admin),
            "a form not listed fails closed"
        );
    }

    #[test]
    fn describe_appends_the_scope_to_each_description() {
        use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem, Paths};
        use utoipa::openapi::{Info, OpenApi};
        let op = |d: Option<&str>| OperationBuilder::new().description(d).build();
        let migrate = "/api/v1/stacks/{name}/migrate";
        let paths = Paths::builder()
            .path("/api/v1/hosts", PathItem::new(HttpMethod::Get, op(None)))
            .path(
                "/api/v1/stacks",
                PathItem::new(HttpMethod::Post, op(Some(""))),
            )
            .path(
                migrate,
                PathItem::new(HttpMethod::Post, op(Some("Move it."))),
            )
            .build();
        let mut doc = OpenApi::new(Info::new("t", "1"), paths);
        describe(&mut doc);
        for (path, description, scope) in [
            ("/api/v1/hosts", "Needs a token of scope `read`.", "read"),
            ("/api/v1/stacks", "Needs a token of scope `admin`.", "admin"),
            (
                migrate,
                "Move it.\n\nNeeds a token of scope `operate`.",
                "operate",
            ),
        ] {
            let item = &doc.paths.paths[path];
            let op = item.get.as_ref().or(item.post.as_ref()).unwrap();
            assert_eq!(op.description.as_deref(), Some(description), "{path}");
            assert_eq!(
                serde_json::to_value(&op.security).unwrap(),
                serde_json::json!([{ "bearer": [scope] }]),
                "{path}"
            );
        }
    }

    #[test]
    fn the_openapi_document_names_each_scope() {
        let doc = crate::server::api::openapi();
        let deploy = doc.paths.paths["/api/v1/stacks/{name}/deploy"]
            .post
            .as_ref()
            .unwrap();
        let json = serde_json::to_value(deploy).unwrap();
        assert_eq!(json["security"], serde_json::json!([{"bearer": ["admin"]}]));
        assert!(
            json["description"]
                .as_str()
                .unwrap()
                .ends_with("Needs a token of scope `admin`."),
            "{json}"
        );
        let health = doc.paths.paths["/api/v1/health"].get.as_ref().unwrap();
        assert_eq!(
            serde_json::to_value(health).unwrap()["security"],
            serde_json::json!([{}]),
            "public routes stay public"
        );
    }
}
