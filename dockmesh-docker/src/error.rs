//! Turning engine errors into [`RuntimeError`]s that say what happened.

use bollard::errors::Error as BollardError;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};

/// The kind of a bollard error: 404 is not found, 409 a conflict, transport failures mean the
/// engine cannot be reached.
pub(crate) fn kind_of(e: &BollardError) -> RuntimeErrorKind {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeErrorKind::NotFound,
        BollardError::DockerResponseServerError {
            status_code: 409, ..
        } => RuntimeErrorKind::Conflict,
        BollardError::DockerResponseServerError { .. } => RuntimeErrorKind::Engine,
        BollardError::SocketNotFoundError(_)
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError => RuntimeErrorKind::Unreachable,
        _ => RuntimeErrorKind::Engine,
    }
}

/// The engine's own message, without bollard's wrapping.
pub(crate) fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `"{action}: {engine message}"`, of the kind the error implies.
pub(crate) fn engine(action: impl std::fmt::Display, e: BollardError) -> RuntimeError {
    let kind = kind_of(&e);
    let message = match kind {
        RuntimeErrorKind::Unreachable => format!(
            "{action}: the Docker engine cannot be reached ({}); check that dockerd is running and that this process may use its socket",
            engine_message(&e)
        ),
        _ => format!("{action}: {}", engine_message(&e)),
    };
    RuntimeError::new(kind, message).with_source(e)
}

/// True when the error is the engine's 404.
pub(crate) fn is_not_found(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
