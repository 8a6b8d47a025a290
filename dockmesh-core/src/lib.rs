//! The pure engine of dockmesh.
//!
//! **Architecture Invariant:** this crate performs no I/O. It depends on no adapter crate, no
//! bollard, sqlx or axum. Time comes in as a value (or through the [`ports::Clock`] port); ids
//! through the [`ports::IdGen`] port. It never reads the system clock, the environment, files or
//! the network. Its decisions are deterministic functions of their inputs. The one exception is
//! opt-in and outside every decision: the feature `system` adds `system`, the adapters of the time
//! ports to the real clock, UUIDv7 and tokio's timer, so that no embedder writes them again.
//!
//! **Architecture Invariant:** every host, local or remote, is a [`ports::HostRuntime`]. Core does
//! not know the difference.
//!
//! **Architecture Invariant:** every state change of a migration, drain or rollout is persisted
//! through the [`ports::Store`] before the action it allows is taken, so a restarted server resumes
//! from the store, never from memory.
//!
//! Modules:
//! - [`version`]: lenient version parsing, upgrade rule presets, `check` and multi-hop `plan`.
//! - [`schema`]: the schema guard (up to date / pending / refuse).
//! - [`rollout`]: agent upgrade policy, drift, the evaluator tick.
//! - [`preflight`]: checks over host and stack snapshots.
//! - [`migration`]: the stack migration state machine, its event log, and the async driver.
//! - [`drain`]: planning the migration of every stack off a host.
//! - [`release`]: stack release upgrades: the diff, rolling replacement of replicas, release history.
//! - [`verify`]: the checks after a server upgrade.
//! - [`agent_upgrade`]: the agent's self-upgrade: order checks, resumed download, trial, watchdog.
//! - [`server_upgrade`]: the server's self-upgrade: the judgement, hop by hop with undo, the run record.
//! - [`stack_upgrade`]: a stack's release upgrade as a persisted run: backup, deploy, put back, settle.
//! - [`audit`]: the audit event model and the hash chain rule.
//! - [`ports`]: the traits adapters implement.
//! - `testing` (feature `testing`): in-memory fakes and a conformance suite per port.
//! - `system` (feature `system`): `SystemClock`, `UuidV7Ids` and `TokioTimer`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent_upgrade;
pub mod audit;
pub mod drain;
pub mod fleet;
pub mod host_policy;
pub mod manifest;
pub mod migration;
pub mod ports;
pub mod preflight;
pub mod protocol;
pub mod records;
pub mod release;
pub mod rollout;
pub mod schema;
pub mod server_upgrade;
pub mod snapshot;
pub mod stack_upgrade;
pub mod types;
pub mod verify;
pub mod version;

#[cfg(feature = "system")]
pub mod system;
#[cfg(feature = "testing")]
pub mod testing;

pub use types::{AgentId, HostId, MigrationId, StackFiles};
