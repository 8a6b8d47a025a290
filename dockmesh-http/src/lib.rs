//! dockmesh's REST API, the mTLS agent channel and the built-in CA.
//!
//! **Not built yet.** This crate only reserves its place in the workspace; it exports nothing.
//! The server, the agent channel and the REST API are planned work, and the binary says so
//! instead of pretending they exist.
//!
//! **Architecture Invariant:** this crate depends on `dockmesh-core` and on no other adapter.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
