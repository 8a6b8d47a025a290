//! Stack migration: the sans-IO state machine, its event log, and the async driver.

mod event;

pub use event::{DEFAULT_RETENTION, MigrationEvent, MigrationSpec, Step, StoredMigration};
