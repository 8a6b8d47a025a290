//! The API's errors: one JSON shape, `{"error": "...", "code": "...", "hint": "..."}`, with the
//! status that fits, and the JSON body extractor whose rejections use it.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dockmesh_core::migration::DriveError;
use dockmesh_core::ports::{RuntimeError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, in one sentence.
    pub error: String,
    /// A stable, machine-readable code: `bad_request` (400: the request is not what the
    /// schema allows), `unauthorized`, `enrollment_refused`, `forbidden` (a token of too
    /// little scope), `host_policy` (refused by a host's policy), `not_found`,
    /// `method_not_allowed`, `timeout`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `unprocessable` (422: allowed by the schema, but what it
    /// names does not exist), `invalid_stack` (422: a compose file that cannot be deployed),
    /// `preflight_failed` (422), `too_many_requests`, `host_unreachable`, `host_error`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// What to do next, when there is advice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Details: the pre-flight report of a refused migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub details: Option<serde_json::Value>,
}

/// An error an API handler returns.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                code: code.to_owned(),
                hint: None,
                details: None,
            },
        }
    }

    /// 400: the request is malformed; the message names the field.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", error)
    }

    /// 404.
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", error)
    }

    /// 409: the request conflicts with what is in progress.
    pub fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", error)
    }

    /// 503: the server is not ready or shutting down.
    pub fn unavailable(error: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error)
    }

    /// 500.
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error)
    }

    /// Add advice.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.body.hint = Some(hint.into());
        self
    }

    /// Add details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.body.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        crate::server::ops::OpError::from(e).into()
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        crate::server::ops::OpError::from(e).into()
    }
}

impl From<DriveError> for ApiError {
    fn from(e: DriveError) -> Self {
        crate::server::ops::OpError::from(e).into()
    }
}

/// A JSON body whose rejections are [`ApiError`]s: 400 naming what is wrong (a missing field,
/// a wrong type, malformed JSON, a body that is not a JSON object), 415 without a JSON
/// content type, 413 over the body limit.
///
/// Every request body of the API is an object: an array is refused here, where serde alone
/// would read `[]` as a struct whose fields all have defaults.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(rejection) => return Err(rejection_error(rejection)),
        };
        let mut value = value;
        whole_numbers(&mut value);
        if !value.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body must be a JSON object, not {}",
                json_kind(&value)
            )));
        }
        // Read again as the request, so that a wrong field is named with its path.
        let bytes = serde_json::to_vec(&value).expect("a JSON value serializes");
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(rejection_error(rejection)),
        }
    }
}

/// JSON Schema's `integer` is any number without a fraction, so `3.0` is the integer 3; serde
/// reads `3.0` only into a float. Whole numbers written with a fraction become integers before
/// the body is read as its request (a float field still reads an integer).
fn whole_numbers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0) else {
                return;
            };
            if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                *n = (f as u64).into();
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                *n = (f as i64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The API's error for a rejected JSON body.
fn rejection_error(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        // A body that parses as JSON but not as this request: still a bad request.
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    ApiError::new(status, code, rejection.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::ports::RuntimeErrorKind;

    #[test]
    fn store_conflicts_are_409_and_outages_503() {
        let e: ApiError = StoreError::Conflict {
            what: "migration x is active".into(),
        }
        .into();
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert_eq!(e.body.code, "conflict");
        let e: ApiError = StoreError::NotFound { what: "m".into() }.into();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn host_errors_map_by_kind() {
        for (kind, status) in [
            (
                RuntimeErrorKind::InvalidStack,
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (RuntimeErrorKind::NotFound, StatusCode::NOT_FOUND),
            (RuntimeErrorKind::Conflict, StatusCode::CONFLICT),
            (RuntimeErrorKind::Unreachable, StatusCode::BAD_GATEWAY),
        ] {
            let e: ApiError = RuntimeError::new(kind, "x").into();
            assert_eq!(e.status, status, "{kind:?}");
        }
    }
}
