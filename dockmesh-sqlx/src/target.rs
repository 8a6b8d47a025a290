//! Where the database is: a SQLite file or a PostgreSQL URL.

use crate::error::{SqlStoreError, redact};
use crate::schema::Backend;
use std::path::{Path, PathBuf};

/// The file name of the SQLite database inside a data directory.
pub const SQLITE_FILE_NAME: &str = "dockmesh.db";

/// A database location. Its `Debug` form hides the password, as [`DbTarget::display`] does.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite database file.
    Sqlite {
        /// The file.
        path: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://…` (may hold a password: print [`DbTarget::display`] instead).
        url: String,
    },
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            DbTarget::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact(url))
                .finish(),
        }
    }
}

impl DbTarget {
    /// Parse `sqlite://PATH`, `sqlite:PATH` or `postgres://…` (`postgresql://…`).
    pub fn parse(url: &str) -> Result<DbTarget, SqlStoreError> {
        let invalid = |reason: &str| SqlStoreError::InvalidUrl {
            url: redact(url),
            reason: reason.to_owned(),
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbTarget::Postgres {
                url: url.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or("");
            if path.is_empty() {
                return Err(invalid("it names no file"));
            }
            if path == ":memory:" || rest.contains("mode=memory") {
                return Err(invalid(
                    "an in-memory SQLite database is a separate database for every connection and is \
                     lost on exit; give a file",
                ));
            }
            return Ok(DbTarget::Sqlite {
                path: PathBuf::from(path),
            });
        }
        Err(invalid("only sqlite: and postgres: URLs are supported"))
    }

    /// The SQLite database of a data directory: `<data-dir>/dockmesh.db`.
    pub fn sqlite_in(data_dir: &Path) -> DbTarget {
        DbTarget::Sqlite {
            path: data_dir.join(SQLITE_FILE_NAME),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        match self {
            DbTarget::Sqlite { .. } => Backend::Sqlite,
            DbTarget::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The location, safe to print (no password).
    pub fn display(&self) -> String {
        match self {
            DbTarget::Sqlite { path } => format!("sqlite://{}", path.display()),
            DbTarget::Postgres { url } => redact(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            DbTarget::parse("sqlite:///var/lib/dockmesh/dockmesh.db").unwrap(),
            DbTarget::Sqlite {
                path: "/var/lib/dockmesh/dockmesh.db".into()
            }
        );
        assert_eq!(
            DbTarget::parse("sqlite:data/x.db?mode=rwc").unwrap(),
            DbTarget::Sqlite {
                path: "data/x.db".into()
            }
        );
        assert_eq!(
            DbTarget::parse("postgres://u:p@h/db").unwrap().backend(),
            Backend::Postgres
        );
        assert!(DbTarget::parse("sqlite::memory:").is_err());
        assert!(DbTarget::parse("mysql://x").is_err());
        assert!(DbTarget::parse("sqlite://").is_err());
        let shown = DbTarget::parse("postgres://u:secret@h/db")
            .unwrap()
            .display();
        assert!(!shown.contains("secret"), "{shown}");
    }
}
