//! dockmesh's [`dockmesh_core::ports::HostRuntime`] on one local Docker engine, through bollard.
//!
//! **Architecture Invariant:** this crate depends on `dockmesh-core` and on no other adapter.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod volume;
