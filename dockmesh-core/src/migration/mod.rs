//! Stack migration: the sans-IO state machine, its event log, and the async driver.
//!
//! The flow: requested → pre-flight passed → source stopped → volumes transferred (each
//! verified by comparing manifests) → files shipped → target started → target healthy →
//! committed (source kept for the retention window). A volume transfer cut off by a host that
//! stops answering starts that volume again when both answer (volumes already verified stay),
//! within [`TRANSFER_RESUME_DEADLINE`]. From committed: rollback while the window
//! is open, or purge of the source. A failure before the commit is compensated (the target is
//! cleaned, the source restarted) and the migration ends `failed` with the step and reason.
//!
//! **Architecture Invariant:** the migration is its event log. [`Migration::replay`] rebuilds it;
//! the driver persists each outcome before taking the next action and resumes after a crash by
//! re-issuing the next (idempotent) command. A restart never marks a migration failed.

mod driver;
mod event;
mod machine;
mod timeline;

pub use driver::{
    DEFAULT_LEASE_TTL, DriveError, Driver, MigrationRequest, ProgressEvent, command_words,
};
pub use event::{DEFAULT_RETENTION, MigrationEvent, MigrationSpec, Step, StoredMigration};
pub use machine::{
    Command, Decision, Failure, Migration, Phase, RequestError, State, TRANSFER_RESUME_DEADLINE,
    TransitionError,
};
pub use timeline::{Cut, Span, Stage, Timeline, Window, duration_words};

#[cfg(test)]
mod fleet_model;
#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timeline_tests;
