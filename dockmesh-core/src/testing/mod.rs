//! In-memory fakes of every port and a conformance suite per port.
//!
//! Adapters prove they behave like the fakes by running the same suite against themselves:
//! [`store_conformance`] for a [`crate::ports::Store`], [`host_runtime_conformance`] for a
//! [`crate::ports::HostRuntime`]. The suites panic with a message naming the broken promise.

mod conformance;
mod fakes;

pub use conformance::{RuntimeFixture, host_runtime_conformance, store_conformance};
pub use fakes::{
    CUT_AFTER, FakeFleet, FakeHost, FakeOp, FakeStack, FixedClock, MemStore, SeqIds, fake_snapshot,
};
