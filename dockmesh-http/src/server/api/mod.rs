//! The REST API under `/api/v1`, health and metrics, with the OpenAPI document generated from
//! the handlers' annotations (`GET /api/v1/openapi.json`).
//!
//! Every `/api/v1` route but health, the OpenAPI document and agent enrollment (which carries
//! its one-time enrollment token in the body) needs `Authorization: Bearer`, and so does
//! `/metrics` (any token; [`metrics_router`] serves it without one on a listener of its own).
//! Errors are [`crate::server::error::ErrorBody`] JSON. Bodies are limited
//! ([`crate::server::ServerConfig::body_limit`]; [`PUBLIC_BODY_LIMIT`] for enrollment and the login
//! form; 413 above it) and requests time out (408). Failed bearer tokens, failed logins and
//! enrollment attempts are limited per client address ([`crate::server::limit`], 429).

pub mod agents;
pub mod audit;
pub(crate) mod contract;
pub mod drains;
pub mod health;
pub mod hosts;
pub mod migrations;
pub mod releases;
pub mod stacks;

use crate::server::error::ApiError;
use crate::server::state::{Lifecycle, ServerState};
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dockmesh",
        description = "Move and upgrade Docker Compose workloads across a fleet of hosts without losing data."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "health", description = "Liveness, readiness, version"),
        (name = "hosts", description = "The hosts the server manages"),
        (name = "stacks", description = "Compose stacks: register, deploy, status"),
        (name = "migrations", description = "Moving a stack with its data to another host"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "agents", description = "Agents: enrollment, list, removal"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from `dockmesh token create --scope read|operate|admin`. \
                         Each operation names the scope it needs (`read` ⊆ `operate` ⊆ `admin`); \
                         a token with too little scope is answered 403.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The routes that need a token, with their OpenAPI paths (each has its scope in
/// [`crate::server::scope::API_ROUTES`]).
pub(crate) fn protected() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(hosts::list_hosts))
        .routes(routes!(hosts::cordon))
        .routes(routes!(hosts::uncordon))
        .routes(routes!(hosts::drain_plan))
        .routes(routes!(hosts::list_projects))
        .routes(routes!(hosts::host_events))
        .routes(routes!(stacks::adopt_stack))
        .routes(routes!(drains::start_drain))
        .routes(routes!(drains::list_drains))
        .routes(routes!(drains::get_drain))
        .routes(routes!(drains::pause_drain))
        .routes(routes!(drains::resume_drain))
        .routes(routes!(drains::abort_drain))
        .routes(routes!(stacks::list_stacks, stacks::create_stack))
        .routes(routes!(
            stacks::get_stack,
            stacks::delete_stack,
            releases::upgrade_stack
        ))
        .routes(routes!(releases::list_releases))
        .routes(routes!(releases::rollback_stack))
        .routes(routes!(stacks::deploy_stack))
        .routes(routes!(stacks::stack_status))
        .routes(routes!(migrations::preflight))
        .routes(routes!(migrations::migrate))
        .routes(routes!(migrations::list_migrations))
        .routes(routes!(migrations::get_migration))
        .routes(routes!(migrations::rollback))
        .routes(routes!(migrations::purge_source))
        .routes(routes!(migrations::purge_target))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::remove_agent))
        .routes(routes!(agents::get_policy, agents::put_policy))
        .routes(routes!(agents::run_policy))
        .routes(routes!(agents::resume_policy))
        .routes(routes!(agents::upgrade_agent))
}

/// The public routes documented in the OpenAPI document.
fn public() -> OpenApiRouter<ServerState> {
    OpenApiRouter::new()
        .routes(routes!(health::api_health))
        .routes(routes!(agents::enroll))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = OpenApiRouter::<ServerState>::with_openapi(ApiDoc::openapi())
        .merge(protected())
        .split_for_parts();
    crate::server::scope::describe(&mut doc);
    contract::complete(&mut doc, contract::Access::Token);
    let (_, mut public_doc) = public().split_for_parts();
    contract::complete(&mut public_doc, contract::Access::Public);
    doc.merge(public_doc);
    short_health_path(&mut doc);
    contract::add_links(&mut doc);
    doc
}

/// `GET /health` answers as `GET /api/v1/health` does (probes and scripts use the short path);
/// the document lists it as an operation of its own.
fn short_health_path(doc: &mut utoipa::openapi::OpenApi) {
    let Some(mut item) = doc.paths.paths.get("/api/v1/health").cloned() else {
        return;
    };
    if let Some(op) = item.get.as_mut() {
        op.operation_id = Some("health_short".to_owned());
        op.summary =
            Some("The server's version and whether its database answers (short path)".to_owned());
    }
    doc.paths.paths.insert("/health".to_owned(), item);
}

/// The largest body the unauthenticated routes read (enrollment, the dashboard's login), in
/// bytes: 413 above it.
pub const PUBLIC_BODY_LIMIT: usize = 16 << 10;

/// The whole HTTP application of a server.
pub fn router(state: ServerState) -> Router {
    let doc = openapi();
    let (protected, _) = protected().split_for_parts();
    let protected = protected.route_layer(middleware::from_fn_with_state(
        state.clone(),
        crate::server::auth::require_token,
    ));
    let (public, _) = public().split_for_parts();
    // Nothing unauthenticated is read past a small budget (the enrollment request).
    let public = public.layer(DefaultBodyLimit::max(PUBLIC_BODY_LIMIT));
    let config = state.config().clone();
    Router::new()
        .merge(protected)
        .merge(public)
        .route("/health", axum::routing::get(health::api_health))
        .route("/healthz/live", axum::routing::get(health::live))
        .route("/healthz/ready", axum::routing::get(health::ready))
        .route(
            "/metrics",
            axum::routing::get(health::metrics).route_layer(middleware::from_fn_with_state(
                state.clone(),
                crate::server::auth::require_token,
            )),
        )
        .route(
            "/api/v1/agent-binaries/{file}",
            axum::routing::get(agents::download_binary),
        )
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .merge(crate::server::web::router(state.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_while_draining,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .layer(middleware::from_fn(contract::json_errors))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /metrics` alone and without a token, for a listener of its own (`--metrics-listen`)
/// that only the scraper reaches.
pub fn metrics_router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(|| async { ApiError::not_found("only /metrics is served here") })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// While shutting down, refuse what would start new work (reads still answer).
async fn refuse_while_draining(
    State(state): State<ServerState>,
    req: Request,
    next: Next,
) -> Response {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating && state.lifecycle() == Lifecycle::Draining {
        let mut r = ApiError::unavailable("the server is shutting down and takes no new work")
            .with_hint("send the request again once the server is back")
            .into_response();
        r.headers_mut()
            .insert("retry-after", "5".parse().expect("static header"));
        return r;
    }
    next.run(req).await
}

async fn count_requests(State(state): State<ServerState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let resp = next.run(req).await;
    state
        .metrics()
        .count_request(&method, &route, resp.status().as_u16());
    resp
}

/// The `by` of an audit entry or a migration request: the token's name.
pub(crate) fn actor(ext: &Option<axum::Extension<crate::server::auth::Actor>>) -> String {
    ext.as_ref()
        .map(|e| e.0.0.clone())
        .unwrap_or_else(|| "api".to_owned())
}
