//! [`OpError`]: why an operation was refused or failed, in the words users see. The API
//! answers it as its error JSON ([`crate::server::error::ApiError`], the status of its
//! [`OpErrorKind`]); the dashboard shows its message and hint beside a form or on an error
//! page.

use crate::server::error::ApiError;
use crate::server::host_policy::PolicyCheck;
use axum::http::StatusCode;
use dockmesh_core::migration::DriveError;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind, StoreError};

/// What kind of refusal or failure an [`OpError`] is: its HTTP status and its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpErrorKind {
    /// The request is malformed; the message names the field (400 `bad_request`).
    BadRequest,
    /// What the request names does not exist (404 `not_found`).
    NotFound,
    /// The request conflicts with what is, or what is in progress (409 `conflict`).
    Conflict,
    /// The server or its database cannot serve it now (503 `unavailable`).
    Unavailable,
    /// A fault of the server (500 `internal`).
    Internal,
    /// The request is well formed but its compose file cannot be deployed: it does not load,
    /// or the host refuses what it asks for (422 `invalid_stack`).
    InvalidStack,
    /// A host did not answer (502 `host_unreachable`).
    HostUnreachable,
    /// A host answered with an error (502 `host_error`).
    HostError,
    /// A migration's pre-flight refused it; the details hold the report (422 `preflight_failed`).
    PreflightFailed,
    /// A host's policy refuses the stack (403 `host_policy`).
    HostPolicy,
    /// An enrollment token was refused (401 `enrollment_refused`).
    EnrollmentRefused,
    /// The request has the shape its schema gives, but what it says cannot be done: a value
    /// that names nothing (a release number the stack does not have), a certificate request
    /// that is not one (422 `unprocessable`).
    Unprocessable,
}

impl OpErrorKind {
    const ALL: [OpErrorKind; 12] = [
        OpErrorKind::BadRequest,
        OpErrorKind::NotFound,
        OpErrorKind::Conflict,
        OpErrorKind::Unavailable,
        OpErrorKind::Internal,
        OpErrorKind::InvalidStack,
        OpErrorKind::HostUnreachable,
        OpErrorKind::HostError,
        OpErrorKind::PreflightFailed,
        OpErrorKind::HostPolicy,
        OpErrorKind::EnrollmentRefused,
        OpErrorKind::Unprocessable,
    ];

    /// The HTTP status the API answers it with.
    pub fn status(self) -> StatusCode {
        match self {
            OpErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            OpErrorKind::InvalidStack => StatusCode::UNPROCESSABLE_ENTITY,
            OpErrorKind::NotFound => StatusCode::NOT_FOUND,
            OpErrorKind::Conflict => StatusCode::CONFLICT,
            OpErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            OpErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            OpErrorKind::HostUnreachable | OpErrorKind::HostError => StatusCode::BAD_GATEWAY,
            OpErrorKind::PreflightFailed | OpErrorKind::Unprocessable => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            OpErrorKind::HostPolicy => StatusCode::FORBIDDEN,
            OpErrorKind::EnrollmentRefused => StatusCode::UNAUTHORIZED,
        }
    }

    /// The stable code of the API's error JSON.
    pub fn code(self) -> &'static str {
        match self {
            OpErrorKind::BadRequest => "bad_request",
            OpErrorKind::NotFound => "not_found",
            OpErrorKind::Conflict => "conflict",
            OpErrorKind::Unavailable => "unavailable",
            OpErrorKind::Internal => "internal",
            OpErrorKind::InvalidStack => "invalid_stack",
            OpErrorKind::HostUnreachable => "host_unreachable",
            OpErrorKind::HostError => "host_error",
            OpErrorKind::PreflightFailed => "preflight_failed",
            OpErrorKind::HostPolicy => "host_policy",
            OpErrorKind::EnrollmentRefused => "enrollment_refused",
            OpErrorKind::Unprocessable => "unprocessable",
        }
    }
}

/// Why an operation was refused or failed: one sentence, advice when there is some, and
/// details a client can read (a refused pre-flight's report, the field a policy names).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct OpError {
    /// Its kind (status and code).
    pub kind: OpErrorKind,
    /// What went wrong, in one sentence.
    pub message: String,
    /// What to do next, when there is advice.
    pub hint: Option<String>,
    /// Details for a client.
    pub details: Option<serde_json::Value>,
}

impl OpError {
    /// An error of this kind.
    pub fn new(kind: OpErrorKind, message: impl Into<String>) -> Self {
        OpError {
            kind,
            message: message.into(),
            hint: None,
            details: None,
        }
    }

    /// [`OpErrorKind::BadRequest`]: the message names the field (`name: …`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(OpErrorKind::BadRequest, message)
    }

    /// [`OpErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(OpErrorKind::NotFound, message)
    }

    /// [`OpErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(OpErrorKind::Conflict, message)
    }

    /// [`OpErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(OpErrorKind::Unavailable, message)
    }

    /// [`OpErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(OpErrorKind::Internal, message)
    }

    /// Add advice.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Add details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// The HTTP status of its kind (the dashboard answers a refused form with it too).
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let mut api = ApiError::new(e.kind.status(), e.kind.code(), e.message);
        api.body.hint = e.hint;
        api.body.details = e.details;
        api
    }
}

/// An error of the code that still answers [`ApiError`]s (the stack upgrade, host policy
/// checks): its kind read back from its code, else from its status.
impl From<ApiError> for OpError {
    fn from(e: ApiError) -> Self {
        let kind = OpErrorKind::ALL
            .into_iter()
            .find(|k| k.code() == e.body.code)
            .or_else(|| {
                OpErrorKind::ALL
                    .into_iter()
                    .find(|k| k.status() == e.status)
            })
            .unwrap_or(OpErrorKind::Internal);
        OpError {
            kind,
            message: e.body.error,
            hint: e.body.hint,
            details: e.body.details,
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { what } => OpError::conflict(what),
            StoreError::NotFound { what } => OpError::not_found(what),
            e => OpError::unavailable(format!("the database failed: {e}"))
                .with_hint("check the database; the request changed nothing it did not record"),
        }
    }
}

impl From<RuntimeError> for OpError {
    fn from(e: RuntimeError) -> Self {
        let kind = match e.kind {
            RuntimeErrorKind::NotFound => OpErrorKind::NotFound,
            RuntimeErrorKind::InvalidStack => OpErrorKind::InvalidStack,
            RuntimeErrorKind::Conflict => OpErrorKind::Conflict,
            RuntimeErrorKind::Unreachable => OpErrorKind::HostUnreachable,
            _ => OpErrorKind::HostError,
        };
        OpError::new(kind, e.to_string())
    }
}

impl From<DriveError> for OpError {
    fn from(e: DriveError) -> Self {
        let hint = e.hint();
        let kind = match &e {
            DriveError::NotFound(_) => OpErrorKind::NotFound,
            DriveError::Busy { .. } | DriveError::Refused(_) | DriveError::Fenced { .. } => {
                OpErrorKind::Conflict
            }
            DriveError::Stack { reason, .. } if reason.contains("not known") => {
                OpErrorKind::NotFound
            }
            DriveError::Stack { .. } => OpErrorKind::Conflict,
            DriveError::Stopped { .. } => OpErrorKind::Unavailable,
            DriveError::Retry { .. } => OpErrorKind::HostError,
            _ => OpErrorKind::Internal,
        };
        let err = OpError::new(kind, e.to_string());
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }
}

impl From<PolicyCheck> for OpError {
    fn from(c: PolicyCheck) -> Self {
        match c {
            PolicyCheck::Refused(r) => {
                let details = serde_json::json!({ "host": r.host, "violations": r.violations });
                OpError::new(OpErrorKind::HostPolicy, r.to_string())
                    .with_hint(r.hint())
                    .with_details(details)
            }
            // A compose file that does not load is an invalid stack, answered as a deploy
            // answers one (the dashboard shows it beside the compose field).
            c @ PolicyCheck::Unreadable(_) => {
                OpError::new(OpErrorKind::InvalidStack, c.to_string())
                    .with_hint("fix the compose file; nothing was deployed")
            }
            c @ PolicyCheck::NoInspector => OpError::internal(c.to_string()).with_hint(
                "the server is assembled without a compose inspector; nothing was deployed",
            ),
        }
    }
}

impl From<crate::server::rollout::RolloutServiceError> for OpError {
    fn from(e: crate::server::rollout::RolloutServiceError) -> Self {
        use crate::server::rollout::RolloutServiceError as E;
        use dockmesh_core::rollout::RolloutError as R;
        match e {
            E::Rule(R::InvalidPolicy { field, ref problem }) => OpError::bad_request(e.to_string())
                .with_details(serde_json::json!({
                    "field": field,
                    "problem": problem,
                })),
            E::Rule(_) | E::NoBinaries | E::TooOld { .. } => OpError::conflict(e.to_string()),
            E::UnknownAgent(_) => OpError::not_found(e.to_string()),
            E::Store(s) => s.into(),
        }
    }
}

impl From<crate::channel::enroll::EnrollError> for OpError {
    fn from(e: crate::channel::enroll::EnrollError) -> Self {
        use crate::channel::enroll::EnrollError;
        let hint = e.hint();
        let op = match &e {
            EnrollError::Malformed | EnrollError::BadName { .. } => {
                OpError::bad_request(format!("{e}")).with_details(serde_json::json!({
                    "cause": std::error::Error::source(&e).map(|s| s.to_string()),
                }))
            }
            // A string where a CSR goes, that is not a usable CSR.
            EnrollError::Csr(_) => OpError::new(OpErrorKind::Unprocessable, format!("{e}"))
                .with_details(serde_json::json!({
                    "cause": std::error::Error::source(&e).map(|s| s.to_string()),
                })),
            EnrollError::NameTaken(_) => OpError::conflict(e.to_string()),
            EnrollError::WrongCa
            | EnrollError::Unknown
            | EnrollError::Expired
            | EnrollError::AlreadyUsed => {
                OpError::new(OpErrorKind::EnrollmentRefused, e.to_string())
            }
            EnrollError::Store(_) | EnrollError::Pki(_) | EnrollError::Random(_) => {
                tracing::error!(error = ?e, "enrollment failed");
                OpError::internal(e.to_string())
            }
        };
        op.with_hint(hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_api_error() {
        for kind in OpErrorKind::ALL {
            let api = ApiError::from(OpError::new(kind, "x").with_hint("h"));
            assert_eq!(api.status, kind.status(), "{kind:?}");
            assert_eq!(api.body.code, kind.code(), "{kind:?}");
            let back = OpError::from(api);
            assert_eq!(back.kind, kind);
            assert_eq!(back.hint.as_deref(), Some("h"));
        }
    }

    #[test]
    fn an_unknown_code_reads_back_by_status() {
        let api = ApiError::new(StatusCode::CONFLICT, "something_else", "x");
        assert_eq!(OpError::from(api).kind, OpErrorKind::Conflict);
        let api = ApiError::new(StatusCode::IM_A_TEAPOT, "teapot", "x");
        assert_eq!(OpError::from(api).kind, OpErrorKind::Internal);
    }
}
