//! Conformance suites: the promises of each port, checked against any implementation.

mod host;
mod stack_upgrade;
mod store;

pub use host::{RuntimeFixture, host_runtime_conformance};
pub use stack_upgrade::stack_upgrade_log_conformance;
pub use store::{
    agent_store_conformance, audit_log_conformance, drain_store_conformance,
    lease_store_conformance, migration_log_conformance, rollout_store_conformance,
    stack_store_conformance, store_conformance, token_store_conformance,
};
