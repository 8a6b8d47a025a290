//! The audit log: filtered, cursor-paginated listing, and verification of the hash chain.
//! The operations are [`crate::server::ops::audit`].

use crate::server::error::ApiError;
use crate::server::ops;
use crate::server::state::ServerState;
use axum::Json;
use axum::extract::{Query, State};

pub use crate::server::ops::audit::{AuditPage, AuditParams, VerifyView};

/// Audit entries, newest first, filtered by action, target and time.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::server::error::ErrorBody)))]
pub async fn list_audit(
    State(state): State<ServerState>,
    Query(p): Query<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(ops::audit::list(&state, &p).await?))
}

/// Walk the audit chain and say whether every link holds (and where the first break is).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = VerifyView)))]
pub async fn verify_audit(State(state): State<ServerState>) -> Result<Json<VerifyView>, ApiError> {
    Ok(Json(ops::audit::verify(&state).await?))
}
