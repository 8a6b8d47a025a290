//! The server's operations: one function per thing a user can ask of the server, shaped
//! `(state, args, actor) -> Result<View, OpError>`, one module per domain. The REST API's
//! handlers ([`crate::server::api`]) extract a request, call one operation and answer its view
//! as JSON (an [`OpError`] as the API's error JSON, [`crate::server::error::ApiError`]); the
//! dashboard's pages ([`crate::server::web`]) call the same operations and render their views
//! and errors.
//!
//! The actor is the name an operation records as who asked (`token:<name>`): in its audit
//! entries, a migration's `requested_by`, a cordon's `by`. Read-only operations take none.
//!
//! **Architecture Invariant:** an operation does not know HTTP: it takes values, not
//! extractors, and answers views and [`OpError`]s, not responses.
//!
//! **Architecture Invariant:** what a caller may do is decided before an operation runs (the
//! token's scope, [`crate::server::scope`]); an operation holds the checks, locks and audit
//! entries of the change it makes, so the API and the dashboard make the same change.

pub mod agents;
pub mod audit;
pub mod drains;
mod error;
pub mod hosts;
pub mod migrations;
pub mod releases;
pub mod stacks;
pub mod timeline;

pub use error::{OpError, OpErrorKind};

/// Refuse a page size above [`dockmesh_core::ports::MAX_PAGE`] (0 means the default).
pub(crate) fn check_limit(limit: u32) -> Result<(), OpError> {
    let max = dockmesh_core::ports::MAX_PAGE;
    if limit > max {
        return Err(OpError::bad_request(format!(
            "limit: {limit} is above the largest page, {max}"
        ))
        .with_hint("page through with the cursor of the last page"));
    }
    Ok(())
}
