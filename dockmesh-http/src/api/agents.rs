//! Agent enrollment: `POST /api/v1/agents/enroll`, authenticated by the one-time enrollment
//! token in the body rather than an API token.

use crate::enroll::{self, EnrollError, EnrollRequest, Enrolled};
use crate::error::{ApiError, ApiJson};
use crate::state::ServerState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

impl From<EnrollError> for ApiError {
    fn from(e: EnrollError) -> Self {
        let hint = e.hint();
        let api = match &e {
            EnrollError::Malformed | EnrollError::Csr(_) => ApiError::bad_request(format!("{e}"))
                .with_details(serde_json::json!({
                    "cause": std::error::Error::source(&e).map(|s| s.to_string()),
                })),
            EnrollError::WrongCa
            | EnrollError::Unknown
            | EnrollError::Expired
            | EnrollError::AlreadyUsed => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "enrollment_refused",
                e.to_string(),
            ),
            EnrollError::Store(_) | EnrollError::Pki(_) | EnrollError::Random(_) => {
                tracing::error!(error = ?e, "enrollment failed");
                ApiError::internal(e.to_string())
            }
        };
        api.with_hint(hint)
    }
}

/// Exchange a one-time enrollment token for the agent's client certificate. Refused tokens
/// and bad requests write nothing; 503 when the server has no agent CA.
#[utoipa::path(post, path = "/api/v1/agents/enroll", tag = "agents", security(()),
    request_body = EnrollRequest,
    responses(
        (status = 200, body = Enrolled),
        (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn enroll(
    State(state): State<ServerState>,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<Json<Enrolled>, ApiError> {
    let Some(ca) = state.agent_ca() else {
        return Err(
            ApiError::unavailable("agent enrollment is not enabled on this server")
                .with_hint("start the server with its agent listener to enroll agents"),
        );
    };
    let now = state.clock().now();
    Ok(Json(
        enroll::enroll(state.store().as_ref(), ca, &req, now).await?,
    ))
}
