//! The seams of dockmesh: traits that adapters implement and the driver calls.
//!
//! Every trait is object safe (`Arc<dyn Store>`, `Arc<dyn HostRuntime>`). The `testing` feature
//! has an in-memory fake of each and a conformance suite each adapter runs against itself.

mod fleet;
mod host;
mod store;
mod time;

pub use fleet::*;
pub use host::*;
pub use store::*;
pub use time::*;

/// Every store trait, for code that calls a concrete store's methods (`use
/// dockmesh_core::ports::prelude::*;`): a method of a focused trait needs its trait in scope.
pub mod prelude {
    pub use super::{
        AgentStore, AuditLog, DrainStore, LeaseStore, MigrationLog, RolloutStore, StackStore,
        StackUpgradeLog, Store, TokenStore,
    };
}
