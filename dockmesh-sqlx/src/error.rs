//! Errors of opening, migrating, backing up and restoring a database.
//!
//! (The [`dockmesh_core::ports::Store`] methods return core's `StoreError`.)

use crate::schema::SchemaReport;
use std::path::PathBuf;

/// The schema guard refused a database. Nothing was written to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRefusal {
    /// Where the database stands.
    pub report: SchemaReport,
}

impl std::fmt::Display for SchemaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.report;
        match &r.refusal {
            Some(text) => write!(f, "{text}")?,
            None => write!(
                f,
                "the database (schema version {}) is not refused by this binary (schema version {})",
                r.database_version, r.binary_version
            )?,
        }
        if r.status.is_refused() {
            write!(
                f,
                " (database schema version {}, this binary's {}; the database was not modified; \
                 to go back to an earlier state use `dockmesh restore --from FILE`)",
                r.database_version, r.binary_version
            )?;
        }
        if !r.irreversible_between.is_empty() {
            write!(
                f,
                ". Irreversible migrations between them (going back across these needs a restore): {}",
                r.irreversible_between
                    .iter()
                    .map(|m| format!("{} {} ({})", m.version, m.description, m.note))
                    .collect::<Vec<_>>()
                    .join("; ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaRefusal {}

/// An error of opening, migrating, backing up or restoring a dockmesh database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlStoreError {
    /// The database URL cannot be used.
    #[error(
        "the database URL {url:?} cannot be used: {reason}. Nothing was opened; use \
         sqlite://PATH (the default is a file in the data directory) or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    InvalidUrl {
        /// The URL, with any password hidden.
        url: String,
        /// Why.
        reason: String,
    },
    /// The database could not be reached.
    #[error(
        "cannot connect to the database {url}: {source}. Nothing was changed; check that the database \
         is running and that the URL, user and password are right"
    )]
    Connect {
        /// The URL, with any password hidden.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The schema guard refused the database. It was not modified.
    #[error(transparent)]
    Refused(#[from] SchemaRefusal),
    /// Applying a schema migration failed.
    #[error(
        "applying the schema migrations from version {from} failed: {source}. Each migration runs in its \
         own transaction, so the database is at the last migration that completed; `dockmesh db status` \
         shows where it stands. Fix the cause and run `dockmesh db migrate` again"
    )]
    Migrate {
        /// The schema version before.
        from: i64,
        /// sqlx's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A database statement failed.
    #[error("{what} failed: {source}. {safe}")]
    Database {
        /// What was being done.
        what: String,
        /// What is known to be safe.
        safe: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A file could not be read or written.
    #[error("{what} ({path}): {source}. {safe}")]
    Io {
        /// What was being done.
        what: String,
        /// The file.
        path: PathBuf,
        /// What is known to be safe.
        safe: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A backup bundle was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A restore was refused before anything was changed.
    #[error("{0}")]
    RestoreRefused(String),
    /// A backup was refused; no bundle was written.
    #[error("{0}")]
    BackupRefused(String),
    /// The audit anchor key file cannot be used.
    #[error("the audit key file {path} cannot be used: {problem}; the database was not opened")]
    AuditKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The database cannot be opened for reading (no such SQLite file, or a schema other than
    /// this binary's); nothing was changed.
    #[error("{0}")]
    NotReadable(String),
    /// The database is held by a running server (or a restore): see [`crate::ServerLock`].
    #[error("the database {database} is in use by {holder}; nothing was changed")]
    Locked {
        /// The database, with any password hidden.
        database: String,
        /// Who holds it, as well as can be told.
        holder: String,
    },
}

impl SqlStoreError {
    /// What to do about this error, when there is something more to say than its message.
    pub fn hint(&self) -> Option<String> {
        match self {
            SqlStoreError::Locked { .. } => Some(
                "stop the dockmesh server using this database (or wait for the other restore to \
                 finish), then run the command again"
                    .into(),
            ),
            SqlStoreError::AuditKey { problem, .. } if problem.contains("published") => Some(
                "move the file away (and never use a data directory from a source tree): the \
                 next start makes a new key, and `audit verify` then reports the old anchor as \
                 unverifiable"
                    .into(),
            ),
            SqlStoreError::AuditKey { .. } => Some(
                "the file must hold the 32 bytes dockmesh wrote there; put back a copy of it \
                 (without it the audit chain's anchor cannot be checked)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// A backup bundle that cannot be restored. Nothing was changed when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle is truncated or corrupt: it cannot be read to its end.
    #[error(
        "the backup bundle {bundle} is truncated or corrupt ({detail}){at}. Nothing was restored and \
         nothing was changed; use another copy of the bundle"
    , at = match file { Some(f) => format!(" while reading {f}"), None => String::new() })]
    Unreadable {
        /// The bundle.
        bundle: PathBuf,
        /// The file inside the bundle being read, when known.
        file: Option<String>,
        /// What went wrong.
        detail: String,
    },
    /// A file of the bundle does not match its manifest entry.
    #[error(
        "the backup bundle {bundle} was altered or damaged: {file} {detail}. Nothing was restored and \
         nothing was changed; use another copy of the bundle"
    )]
    Mismatch {
        /// The bundle.
        bundle: PathBuf,
        /// The file that failed.
        file: String,
        /// What differs.
        detail: String,
    },
    /// The bundle holds something a dockmesh bundle never holds.
    #[error(
        "the backup bundle {bundle} holds {file}, which a dockmesh bundle never contains ({detail}). \
         Nothing was restored and nothing was changed"
    )]
    Unexpected {
        /// The bundle.
        bundle: PathBuf,
        /// The entry.
        file: String,
        /// Why it is refused.
        detail: String,
    },
    /// The bundle's schema is newer than this binary's.
    #[error(
        "the backup bundle {bundle} holds a database at schema version {bundle_version}, newer than this \
         dockmesh binary's schema version {binary_version} (it was made by dockmesh {made_by}). Nothing was \
         changed; restore it with dockmesh {made_by} or newer"
    )]
    Newer {
        /// The bundle.
        bundle: PathBuf,
        /// The bundle's schema version.
        bundle_version: i64,
        /// The binary's.
        binary_version: i64,
        /// The dockmesh version that made the bundle.
        made_by: String,
    },
}

/// A URL safe to print: the password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.split_once('@')
        && let Some((user, _)) = creds.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("sqlite:///x/y.db"), "sqlite:///x/y.db");
    }
}
