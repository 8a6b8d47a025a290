//! Restoring a verified bundle: the refusals, the server lock, the SQLite file swap and the
//! PostgreSQL schema swap.

use super::verify::{Verified, verify_bundle};
use super::*;
use crate::catalog::{self, Table};
use crate::dump::{self, Cell};
use crate::error::SqlStoreError;
use crate::lock::ServerLock;
use crate::options::OpenOptions;
use crate::schema::{self, Backend, SchemaStatus};
use crate::store::{self, Pool, SqlStore, connect};
use crate::target::DbTarget;
use jiff::Timestamp;
use sqlx::Connection;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self};
use std::path::{Path, PathBuf};

pub(super) const SQLITE_TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)";
pub(super) const PG_TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1)";

/// Rows a database holds, per known table (`None` when it cannot be known).
pub(super) async fn existing_data(
    target: &DbTarget,
) -> Result<Option<BTreeMap<String, i64>>, SqlStoreError> {
    if let DbTarget::Sqlite { path } = target
        && !path.exists()
    {
        return Ok(Some(BTreeMap::new()));
    }
    let pool = match target {
        DbTarget::Sqlite { path } => Pool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(store::sqlite_inspect_options(path))
                .await
                .map_err(|source| SqlStoreError::Connect {
                    url: target.display(),
                    source,
                })?,
        ),
        DbTarget::Postgres { .. } => connect(target, false).await?,
    };
    let result = async {
        let report = store::inspect(&pool).await?;
        let mut counts = BTreeMap::new();
        for t in catalog::TABLES {
            if t.seeded {
                continue;
            }
            let acquire_err = |source| SqlStoreError::Database {
                what: "connecting".into(),
                safe: "Nothing was changed.",
                source,
            };
            let n = match &pool {
                Pool::Sqlite(p) => {
                    let mut c = p.acquire().await.map_err(acquire_err)?;
                    if t.name == "audit_log" {
                        data_audit_rows_sqlite(&mut c, SQLITE_TABLE_EXISTS).await?
                    } else {
                        dump::sqlite::count_rows(&mut c, t.name, SQLITE_TABLE_EXISTS).await?
                    }
                }
                Pool::Postgres(p) => {
                    let mut c = p.acquire().await.map_err(acquire_err)?;
                    if t.name == "audit_log" {
                        data_audit_rows_pg(&mut c, PG_TABLE_EXISTS).await?
                    } else {
                        dump::postgres::count_rows(&mut c, t.name, PG_TABLE_EXISTS).await?
                    }
                }
            };
            if let Some(n) = n
                && n > 0
            {
                counts.insert(t.name.to_owned(), n);
            }
        }
        if matches!(report.status, SchemaStatus::RefusedNewer { .. }) {
            counts.insert(
                format!(
                    "(tables of schema version {}, unknown to this binary)",
                    report.database_version
                ),
                1,
            );
        }
        Ok::<_, SqlStoreError>(Some(counts))
    }
    .await;
    pool.close().await;
    result
}

/// Audit entries that count as data (the schema-migration entries do not).
macro_rules! data_audit_rows {
    ($f:ident, $conn:ty) => {
        async fn $f(
            conn: &mut $conn,
            exists_sql: &'static str,
        ) -> Result<Option<i64>, SqlStoreError> {
            let db = |source| SqlStoreError::Database {
                what: "counting the audit entries".into(),
                safe: "Nothing was changed.",
                source,
            };
            let exists: bool = sqlx::query_scalar(exists_sql)
                .bind("audit_log")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            if !exists {
                return Ok(None);
            }
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action <> $1")
                .bind(dockmesh_core::audit::SERVER_SCHEMA_MIGRATE)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            Ok(Some(n))
        }
    };
}
data_audit_rows!(data_audit_rows_sqlite, sqlx::SqliteConnection);
data_audit_rows!(data_audit_rows_pg, sqlx::PgConnection);

/// Restore a bundle into the database at `target` and, when given, into `data_dir`.
///
/// Everything is verified before anything is changed: a truncated, altered or unsafe bundle,
/// a bundle whose schema is newer than this binary, or (without `force`) a target database
/// that holds data, is refused with nothing changed. With `dry_run` nothing is ever changed.
pub async fn restore(
    bundle: &Path,
    target: &DbTarget,
    data_dir: Option<&Path>,
    options: RestoreOptions,
) -> Result<RestoreReport, SqlStoreError> {
    let staging = match data_dir {
        Some(dd) if !options.dry_run => {
            crate::private::create_dir(dd).map_err(io_err(
                "creating the data directory",
                dd,
                RESTORE_SAFE,
            ))?;
            tempfile::Builder::new()
                .prefix(".dockmesh-restore-")
                .tempdir_in(dd)
        }
        _ => tempfile::Builder::new()
            .prefix("dockmesh-restore-")
            .tempdir(),
    }
    .map_err(io_err(
        "creating a staging directory",
        Path::new("."),
        RESTORE_SAFE,
    ))?;

    let staged = staging.path().to_owned();
    let bundle_owned = bundle.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_bundle(&bundle_owned, &staged))
        .await
        .map_err(|e| {
            SqlStoreError::RestoreRefused(format!(
                "verifying the bundle stopped: {e}. Nothing was changed"
            ))
        })??;

    let existing = existing_data(target).await?;
    let replaced_data = existing.as_ref().is_some_and(|c| !c.is_empty());
    if replaced_data && !options.force {
        let what = existing
            .unwrap_or_default()
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let keep = match target {
            DbTarget::Sqlite { path } => format!(
                "the current file is kept as {}.pre-restore-<time>",
                path.display()
            ),
            DbTarget::Postgres { .. } => {
                "the current tables are kept in the schema dockmesh_pre_restore_<time>".into()
            }
        };
        return Err(SqlStoreError::RestoreRefused(format!(
            "the database {} holds data ({what}); the restore would replace it. Nothing was changed. \
             Pass --force to replace it ({keep})",
            target.display()
        )));
    }

    let mut report = RestoreReport {
        tables: verified
            .rows
            .iter()
            .map(|(t, r)| (t.name.to_owned(), r.len() as u64))
            .collect(),
        manifest: verified.manifest.clone(),
        dry_run: options.dry_run,
        database: target.display(),
        replaced_data,
        kept: Vec::new(),
        directories: match data_dir {
            Some(_) => verified.manifest.directories.clone(),
            None => Vec::new(),
        },
        migrated: None,
        audit_entries: verified.audit_entries,
    };
    if options.dry_run {
        return Ok(report);
    }

    // A running server holds this lock: the restore would replace the database underneath it.
    if let DbTarget::Sqlite { path } = target
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        crate::private::create_dir(parent).map_err(io_err(
            "creating the database's directory",
            parent,
            RESTORE_SAFE,
        ))?;
    }
    let lock = ServerLock::acquire(target, "dockmesh restore").await?;
    let result = replace(verified, staging.path(), target, data_dir, &mut report).await;
    lock.release().await;
    result?;
    Ok(report)
}

/// Replace the database (and the bundled data-directory folders) with a verified bundle.
pub(super) async fn replace(
    verified: Verified,
    staging: &Path,
    target: &DbTarget,
    data_dir: Option<&Path>,
    report: &mut RestoreReport,
) -> Result<(), SqlStoreError> {
    let now = stamp(Timestamp::now());
    let version = verified.manifest.schema_version;
    match target {
        DbTarget::Sqlite { path } => {
            let kept = restore_sqlite(path, version, verified.rows, &now).await?;
            report.kept.extend(kept);
        }
        DbTarget::Postgres { .. } => {
            if let Some(k) = restore_postgres(target, version, verified.rows, &now).await? {
                report.kept.push(k);
            }
        }
    }
    // Migrate forward with the ordinary open (guard, log line, audit event).
    let key = OpenOptions::for_target(target, data_dir);
    let (store, opened) = SqlStore::open_with(target, &key).await?;
    if !opened.applied.is_empty() {
        report.migrated = Some((opened.from, opened.to));
    }
    // A bundle carries no anchor (it is bound to the source's key): the restored chain is
    // verified against its head, then anchored with this data directory's key.
    let chain = crate::audit::verify(&store, false).await;
    let chain = match chain {
        Ok(c) if c.first_broken.is_none() => {
            crate::audit::anchor_head(&store, true).await.map(|()| c)
        }
        other => other,
    };
    let chain = chain.map_err(|e| {
        SqlStoreError::RestoreRefused(format!(
            "the restored audit chain could not be checked: {e}. The restored database is in place; \
             the replaced one was kept"
        ))
    })?;
    store.close().await;
    if let Some(b) = chain.first_broken {
        return Err(SqlStoreError::RestoreRefused(format!(
            "the restored audit chain is broken at entry {}: {}. The restored database is in place; \
             the replaced one was kept",
            b.seq, b.reason
        )));
    }
    report.audit_entries = chain.entries_checked;

    if let Some(dd) = data_dir {
        for d in &verified.manifest.directories {
            let dest = dd.join(d);
            if dest.exists() {
                let kept = dd.join(format!("{d}.pre-restore-{now}"));
                fs::rename(&dest, &kept).map_err(io_err(
                    format!("keeping the current {d}/ aside"),
                    &dest,
                    "The database was restored; the data directory's files were not.",
                ))?;
                report
                    .kept
                    .push(format!("the replaced {d}/ as {}", kept.display()));
            }
            fs::rename(staging.join(d), &dest).map_err(io_err(
                format!("moving the restored {d}/ into place"),
                &dest,
                "The database was restored; the previous directory was kept aside.",
            ))?;
        }
    }
    Ok(())
}

/// Rows per table, imported in one transaction on one connection.
macro_rules! import_all {
    ($m:ident, $conn:expr, $rows:expr) => {{
        let mut tx = $conn
            .begin()
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "starting the restore transaction".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
        for (t, rows) in $rows {
            if t.seeded {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", t.name)))
                    .execute(&mut *tx)
                    .await
                    .map_err(|source| SqlStoreError::Database {
                        what: format!("emptying {}", t.name),
                        safe: RESTORE_SAFE,
                        source,
                    })?;
            }
            dump::$m::import_rows(&mut tx, t, rows).await?;
        }
        tx.commit()
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "committing the restore".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
    }};
}

/// Apply the binary's migrations up to `version` on one connection (no audit event: the
/// restored log brings its own history).
pub(super) async fn migrate_fresh<C: sqlx::migrate::Migrate>(
    backend: Backend,
    conn: &mut C,
    version: i64,
) -> Result<(), SqlStoreError> {
    schema::migrator(backend)
        .run_direct(Some(version), conn, false)
        .await
        .map_err(|source| SqlStoreError::Migrate { from: 0, source })
}

pub(super) async fn restore_sqlite(
    path: &Path,
    version: i64,
    rows: Vec<(&'static Table, Vec<Vec<Cell>>)>,
    now: &str,
) -> Result<Vec<String>, SqlStoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| crate::SQLITE_FILE_NAME.to_owned());
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        crate::private::create_dir(parent).map_err(io_err(
            "creating the database's directory",
            parent,
            RESTORE_SAFE,
        ))?;
    }
    let tmp = path.with_file_name(format!("{name}.restore-{now}.tmp"));
    let cleanup = |p: &Path| {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = fs::remove_file(format!("{}{suffix}", p.display()));
        }
    };
    cleanup(&tmp);
    let built = async {
        let mut conn = sqlx::SqliteConnection::connect_with(&store::sqlite_options(&tmp, true))
            .await
            .map_err(|source| SqlStoreError::Connect {
                url: format!("sqlite://{}", tmp.display()),
                source,
            })?;
        migrate_fresh(Backend::Sqlite, &mut conn, version).await?;
        import_all!(sqlite, conn, rows);
        // Leave one self-contained file behind (no WAL) before it is moved.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "checkpointing the restored database".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
        conn.close()
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "closing the restored database".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
        Ok::<(), SqlStoreError>(())
    }
    .await;
    if let Err(e) = built {
        cleanup(&tmp);
        return Err(e);
    }
    if path.exists() {
        // Close cleanly once so that the current WAL is folded into the file that is kept.
        if let Ok(mut c) = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(store::SQLITE_BUSY_TIMEOUT),
        )
        .await
        {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut c)
                .await;
            let _ = c.close().await;
        }
    }
    let swapped = swap_in(path, &tmp, &name, now);
    if swapped.is_err() {
        cleanup(&tmp);
    }
    swapped
}

/// Put the built database `tmp` at `path` so that a database file exists at `path` at every
/// moment: the current file is hard-linked (copied where links are not supported) to
/// `<name>.pre-restore-<now>`, its `-wal`/`-shm` are moved beside that copy (a WAL left beside
/// the new file would be replayed into it), the new file is renamed over `path` (one atomic
/// step), and the directory is synced so the swap survives a crash.
pub(super) fn swap_in(
    path: &Path,
    tmp: &Path,
    name: &str,
    now: &str,
) -> Result<Vec<String>, SqlStoreError> {
    let sidecar = |p: &Path, suffix: &str| PathBuf::from(format!("{}{suffix}", p.display()));
    File::open(tmp).and_then(|f| f.sync_all()).map_err(io_err(
        "syncing the restored database",
        tmp,
        "The current database is unchanged; the restored copy was removed.",
    ))?;
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(sidecar(tmp, suffix));
    }
    let mut kept = Vec::new();
    if path.exists() {
        // Never overwrite an earlier kept database (two restores within one second).
        let keep = (0..)
            .map(|n| match n {
                0 => path.with_file_name(format!("{name}.pre-restore-{now}")),
                n => path.with_file_name(format!("{name}.pre-restore-{now}-{n}")),
            })
            .find(|k| !k.exists() && !sidecar(k, "-wal").exists())
            .expect("some name is free");
        fs::hard_link(path, &keep)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Err(e)
                } else {
                    fs::copy(path, &keep).map(|_| ())
                }
            })
            .map_err(io_err(
                "keeping the current database aside",
                path,
                "The current database is unchanged; the restored copy was removed.",
            ))?;
        for suffix in ["-wal", "-shm"] {
            let side = sidecar(path, suffix);
            if side.exists() {
                fs::rename(&side, sidecar(&keep, suffix)).map_err(io_err(
                    "keeping the current database's WAL aside",
                    &side,
                    "The current database is unchanged; the restored copy was removed.",
                ))?;
            }
        }
        kept.push(format!("the replaced database as {}", keep.display()));
    }
    fs::rename(tmp, path).map_err(io_err(
        "moving the restored database into place",
        path,
        "The current database is still in place (a copy was kept aside).",
    ))?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        sync_dir(dir).map_err(io_err(
            "syncing the database's directory",
            dir,
            "The restored database is in place; the replaced one was kept aside.",
        ))?;
    }
    Ok(kept)
}

#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

pub(super) async fn restore_postgres(
    target: &DbTarget,
    version: i64,
    rows: Vec<(&'static Table, Vec<Vec<Cell>>)>,
    now: &str,
) -> Result<Option<String>, SqlStoreError> {
    let DbTarget::Postgres { url } = target else {
        unreachable!("called for PostgreSQL targets")
    };
    let db = |what: &'static str| {
        move |source| SqlStoreError::Database {
            what: what.to_owned(),
            safe: "The restore transaction was rolled back; nothing was changed.",
            source,
        }
    };
    let opts: sqlx::postgres::PgConnectOptions =
        url.parse()
            .map_err(|e: sqlx::Error| SqlStoreError::InvalidUrl {
                url: target.display(),
                reason: e.to_string(),
            })?;
    let mut conn = sqlx::PgConnection::connect_with(&opts)
        .await
        .map_err(|source| SqlStoreError::Connect {
            url: target.display(),
            source,
        })?;
    let mut tx = conn
        .begin()
        .await
        .map_err(db("starting the restore transaction"))?;
    let schema_name: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *tx)
        .await
        .map_err(db("reading the current schema"))?;
    let Some(schema_name) = schema_name else {
        return Err(SqlStoreError::RestoreRefused(
            "the PostgreSQL connection has no current schema (search_path names no existing schema); \
             nothing was changed. Create the schema or fix search_path"
                .into(),
        ));
    };
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1")
            .bind(&schema_name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("listing the current tables"))?;
    let mut kept = None;
    if tables > 0 {
        let keep = format!("dockmesh_pre_restore_{now}");
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote(&schema_name),
            quote(&keep)
        )))
        .execute(&mut *tx)
        .await
        .map_err(db(
            "keeping the current schema aside (ALTER SCHEMA … RENAME)",
        ))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            quote(&schema_name)
        )))
        .execute(&mut *tx)
        .await
        .map_err(db("creating a fresh schema"))?;
        kept = Some(format!(
            "the replaced tables in PostgreSQL schema {keep} (drop it with `DROP SCHEMA {keep} CASCADE` once the restore is confirmed)"
        ));
    }
    migrate_fresh(Backend::Postgres, &mut *tx, version).await?;
    {
        let conn: &mut sqlx::PgConnection = &mut tx;
        import_all!(postgres, conn, rows);
    }
    // Identity columns continue after the restored ids.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('deploys', 'id'), (SELECT COALESCE(max(id), 0) + 1 FROM deploys), false)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db("moving the deploy id sequence past the restored rows"))?;
    tx.commit().await.map_err(db("committing the restore"))?;
    let _ = conn.close().await;
    Ok(kept)
}
