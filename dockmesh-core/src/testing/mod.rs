//! In-memory fakes of every port and a conformance suite per port.
//!
//! Adapters prove they behave like the fakes by running the same suite against themselves:
//! [`store_conformance`] for a [`crate::ports::Store`] (or one suite per focused store trait,
//! e.g. [`migration_log_conformance`]), [`host_runtime_conformance`] for a
//! [`crate::ports::HostRuntime`]. The suites panic with a message naming the broken promise.

mod conformance;
mod events;
mod fakes;

pub use conformance::{
    RuntimeFixture, agent_store_conformance, audit_log_conformance, drain_store_conformance,
    host_runtime_conformance, lease_store_conformance, migration_log_conformance,
    rollout_store_conformance, stack_store_conformance, stack_upgrade_log_conformance,
    store_conformance, token_store_conformance,
};
pub use events::{MIGRATION_EVENT_KINDS, migration_event};
pub use fakes::{
    CUT_AFTER, FakeFleet, FakeHost, FakeOp, FakeStack, FixedClock, MemStore, SeqIds, fake_snapshot,
};
