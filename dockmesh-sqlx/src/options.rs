//! [`OpenOptions`]: how to open a database beyond where it is.

use crate::audit::AUDIT_KEY_FILE_NAME;
use crate::target::DbTarget;
use std::path::{Path, PathBuf};

/// How to open a database.
///
/// The one option is where the **audit anchor key** is (see the crate's `audit` notes in
/// `README.md`): a 32-byte file, outside the database, that the store creates (mode 0600) on
/// first open. With a key, every append moves a keyed anchor over the chain's head and
/// `verify_audit` checks it; without one, the chain and its head are still checked, not the
/// anchor.
///
/// [`crate::SqlStore::open`] uses [`OpenOptions::for_target`]`(target, None)`: for a SQLite
/// database the key file beside it (`<data-dir>/audit.key` for the default
/// `<data-dir>/dockmesh.db`); for PostgreSQL **no key**, because the database is elsewhere and
/// only the caller knows the data directory: a server on PostgreSQL, like `dockmesh db migrate`
/// and `restore`, passes its data directory (`for_target(target, Some(data_dir))`), so the key
/// lives in `<data-dir>/audit.key` on the server's machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The audit anchor key file, or `None` for no anchor.
    pub audit_key: Option<PathBuf>,
}

impl OpenOptions {
    /// No audit key: the anchor is neither moved nor checked.
    pub fn without_audit_key() -> OpenOptions {
        OpenOptions { audit_key: None }
    }

    /// The audit key at `<data_dir>/audit.key`.
    pub fn in_data_dir(data_dir: &Path) -> OpenOptions {
        OpenOptions {
            audit_key: Some(data_dir.join(AUDIT_KEY_FILE_NAME)),
        }
    }

    /// The audit key in the file `path`.
    pub fn audit_key_file(path: impl Into<PathBuf>) -> OpenOptions {
        OpenOptions {
            audit_key: Some(path.into()),
        }
    }

    /// The default for `target`: for SQLite, the key file `audit.key` beside the database file
    /// (whatever `data_dir` says: the key stays with the database it anchors); for PostgreSQL,
    /// `<data_dir>/audit.key` when a data directory is given, else no key.
    pub fn for_target(target: &DbTarget, data_dir: Option<&Path>) -> OpenOptions {
        match (target, data_dir) {
            (DbTarget::Sqlite { path }, _) => {
                OpenOptions::audit_key_file(path.with_file_name(AUDIT_KEY_FILE_NAME))
            }
            (DbTarget::Postgres { .. }, Some(dd)) => OpenOptions::in_data_dir(dd),
            (DbTarget::Postgres { .. }, None) => OpenOptions::without_audit_key(),
        }
    }
}
