//! [`ServerLock`]: the lock a running server holds on its database, and that a restore takes
//! before it replaces the database.
//!
//! - **SQLite**: an exclusive lock ([`std::fs::File::try_lock`]) on the file
//!   `<database file>.lock` beside the database (`<data-dir>/dockmesh.db.lock` by default). The
//!   file holds a line naming the holder; the lock, not the file, is what counts: it is released
//!   by the operating system when the holder exits, however it exits, and the file is left in
//!   place (deleting a lock file races with the next holder).
//! - **PostgreSQL**: the session advisory lock [`SERVER_LOCK_KEY`] (`pg_try_advisory_lock`), held
//!   on a dedicated connection whose `application_name` names the holder; it ends with that
//!   connection.
//!
//! A second [`ServerLock::acquire`] while one is held fails at once with
//! [`SqlStoreError::Locked`] naming the holder.

use crate::error::SqlStoreError;
use crate::target::DbTarget;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The PostgreSQL advisory lock key of a running server (`"dmserver"` in ASCII).
pub const SERVER_LOCK_KEY: i64 = 0x646d_7365_7276_6572;

/// The exclusive hold of a running server (or of a restore) on one database. Dropping it
/// releases the lock; [`ServerLock::release`] does the same and waits for PostgreSQL to see it.
#[derive(Debug)]
pub struct ServerLock {
    inner: Inner,
    database: String,
}

#[derive(Debug)]
enum Inner {
    Sqlite { _file: File },
    Postgres { conn: PgConnection },
}

impl ServerLock {
    /// The lock file of a SQLite database: `<database file>.lock`, beside it.
    pub fn sqlite_lock_file(database: &Path) -> PathBuf {
        let mut name = database
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| crate::SQLITE_FILE_NAME.into());
        name.push(".lock");
        database.with_file_name(name)
    }

    /// Take the lock on the database at `target` for `holder` (a short description such as
    /// `"dockmesh server on host-a"`; the process id is added). Fails at once, without
    /// waiting, with [`SqlStoreError::Locked`] naming the current holder when it is held.
    /// On SQLite the database's directory must exist; the lock file is created when missing.
    pub async fn acquire(target: &DbTarget, holder: &str) -> Result<ServerLock, SqlStoreError> {
        let who = format!("{holder} (pid {})", std::process::id());
        let database = target.display();
        match target {
            DbTarget::Sqlite { path } => {
                let lock_path = Self::sqlite_lock_file(path);
                let io = |what: &str| {
                    let what = what.to_owned();
                    let lock_path = lock_path.clone();
                    move |source| SqlStoreError::Io {
                        what,
                        path: lock_path,
                        safe: "Nothing was changed.",
                        source,
                    }
                };
                let mut file = std::os::unix::fs::OpenOptionsExt::mode(
                    OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false),
                    0o600,
                )
                .open(&lock_path)
                .map_err(io("opening the server lock file"))?;
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => {
                        let mut held_by = String::new();
                        let _ = file.read_to_string(&mut held_by);
                        let held_by = held_by.trim();
                        return Err(SqlStoreError::Locked {
                            database,
                            holder: if held_by.is_empty() {
                                format!("an unnamed process (lock file {})", lock_path.display())
                            } else {
                                format!("{held_by} (lock file {})", lock_path.display())
                            },
                        });
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(io("locking the server lock file")(e));
                    }
                }
                file.set_len(0)
                    .map_err(io("writing the server lock file"))?;
                file.rewind().map_err(io("writing the server lock file"))?;
                writeln!(file, "{who}").map_err(io("writing the server lock file"))?;
                Ok(ServerLock {
                    inner: Inner::Sqlite { _file: file },
                    database,
                })
            }
            DbTarget::Postgres { url } => {
                let mut app: String = format!("dockmesh lock: {who}");
                app.truncate(app.floor_char_boundary(63));
                let opts = PgConnectOptions::from_str(url)
                    .map_err(|e| SqlStoreError::InvalidUrl {
                        url: database.clone(),
                        reason: e.to_string(),
                    })?
                    .application_name(&app);
                let mut conn = PgConnection::connect_with(&opts).await.map_err(|source| {
                    SqlStoreError::Connect {
                        url: database.clone(),
                        source,
                    }
                })?;
                let db_err = |source| SqlStoreError::Database {
                    what: "taking the server lock (pg_try_advisory_lock)".into(),
                    safe: "Nothing was changed.",
                    source,
                };
                let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(SERVER_LOCK_KEY)
                    .fetch_one(&mut conn)
                    .await
                    .map_err(db_err)?;
                if !taken {
                    let holder = pg_holder(&mut conn).await;
                    let _ = conn.close().await;
                    return Err(SqlStoreError::Locked { database, holder });
                }
                Ok(ServerLock {
                    inner: Inner::Postgres { conn },
                    database,
                })
            }
        }
    }

    /// The database this lock holds, as printed (no password).
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Release the lock.
    pub async fn release(self) {
        match self.inner {
            Inner::Sqlite { _file } => drop(_file),
            Inner::Postgres { mut conn } => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(SERVER_LOCK_KEY)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
            }
        }
    }
}

/// Who holds the server advisory lock of the current database, as well as PostgreSQL can tell.
async fn pg_holder(conn: &mut PgConnection) -> String {
    let row: Result<Option<(i32, String, String)>, sqlx::Error> = sqlx::query_as(
        "SELECT a.pid, COALESCE(a.application_name, ''), COALESCE(host(a.client_addr), 'a local socket') \
         FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
           AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
         LIMIT 1",
    )
    .bind((SERVER_LOCK_KEY >> 32) & 0xffff_ffff)
    .bind(SERVER_LOCK_KEY & 0xffff_ffff)
    .fetch_optional(&mut *conn)
    .await;
    match row {
        Ok(Some((pid, app, addr))) if !app.is_empty() => {
            format!("{app} (PostgreSQL backend pid {pid}, from {addr})")
        }
        Ok(Some((pid, _, addr))) => format!("PostgreSQL backend pid {pid} (from {addr})"),
        _ => format!("another session (advisory lock {SERVER_LOCK_KEY})"),
    }
}
