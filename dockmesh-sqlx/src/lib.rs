//! The dockmesh [`Store`](dockmesh_core::ports::Store) on SQLite (the embedded default) and
//! PostgreSQL, through sqlx: schema migrations guarded against newer and modified databases, a
//! hash-chained audit log, leases, and verified backup bundles that restore across backends.
//!
//! **Architecture Invariant:** this crate depends on `dockmesh-core` and on no other adapter.
//! Only the root binary assembles adapters.
//!
//! **Architecture Invariant:** opening a database runs the schema guard before anything is
//! written. A database that is newer than the binary, whose applied migrations differ from the
//! binary's, that has a gap, or a half-applied migration, is refused untouched.
//!
//! **Architecture Invariant:** one SQL text serves both backends; the `on!` macro expands each
//! body once per backend so each is type-checked against its own driver. Queries are runtime
//! `query_as` with `FromRow`; no query needs a database at build time.
//!
//! **Architecture Invariant:** a backup bundle is a logical, backend-neutral export of every
//! table, so one restore path serves SQLite → SQLite, SQLite → PostgreSQL and back. Every file of
//! a bundle is checked against its manifest before anything is changed.
//!
//! **The audit chain: what it proves and what it cannot.** Each entry hashes its predecessor
//! and `audit_head` names the newest, so an edited or removed entry, or removed newest entries,
//! are found. A keyed anchor (HMAC-SHA256 over the head's sequence number and hash, with a key in
//! a file outside the database, `audit.key`, see [`OpenOptions`]) is moved with each append, so
//! a tail cut with the head moved back is found by someone who holds the key and not the
//! database. It cannot stop someone who holds both the database and the key, nor a rollback to
//! an anchor and head copied earlier; a missing key makes the anchor unverifiable and
//! `verify_audit` reports that, never passes it. `verify_audit` reads the chain, the head and
//! the anchor in one snapshot (`REPEATABLE READ READ ONLY` on PostgreSQL).
//!
//! **Architecture Invariant:** a restore never replaces a database a server holds: both take
//! [`ServerLock`].
//!
//! Code map:
//! - [`store`]: [`SqlStore`], the `Store` implementation, opening and migrating.
//! - [`schema`]: the embedded migrations, their reversible/irreversible declarations, the
//!   [`SchemaReport`] of where a database stands.
//! - [`mod@backup`]: bundles: writing, verifying, restoring ([`backup()`], [`restore()`]).
//! - `audit`: verifying the chain in one snapshot, and its keyed anchor ([`OpenOptions`] says
//!   where the key is). What the chain proves and what it cannot is written at the top of
//!   `src/audit.rs` and in `README.md`.
//! - [`ServerLock`]: the lock a running server holds and a restore takes.
//! - `catalog`, `dump`: the table catalog and the logical export/import behind bundles.
//! - [`ts`]: timestamps that sort on both backends.
//!
//! Design notes (the bundle format and why it is logical, what a PostgreSQL restore keeps, the
//! data-directory default, the benchmarks): `README.md` beside this crate.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
pub mod backup;
mod catalog;
mod dump;
mod error;
mod lock;
mod options;
mod private;
pub mod schema;
pub mod store;
mod target;
pub mod ts;

pub use audit::{AUDIT_KEY_FILE_NAME, PUBLISHED_AUDIT_KEYS, is_published_audit_key};
pub use backup::{
    BackupReport, Manifest, ManifestFile, RestoreOptions, RestoreReport, backup, restore,
};
pub use error::{BundleError, SchemaRefusal, SqlStoreError};
pub use lock::{SERVER_LOCK_KEY, ServerLock};
pub use options::OpenOptions;
pub use schema::{
    Backend, MigrationInfo, SchemaReport, SchemaStatus, binary_version, known_migrations,
};
pub use store::{OpenReport, SqlStore};
pub use target::{DbTarget, SQLITE_FILE_NAME};
