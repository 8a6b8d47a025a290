//! Connecting to a database, reading where its schema stands, and migrating it.

use super::*;

pub(crate) fn sqlite_options(path: &std::path::Path, create: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true)
}

/// Options to look at an existing SQLite database without changing it: no file is created and
/// no journal mode is set. (A read-only connection would leave `-wal`/`-shm` files behind; a
/// read-write one that only reads removes them again when it closes.)
pub(crate) fn sqlite_inspect_options(path: &std::path::Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
}

pub(crate) async fn connect(target: &DbTarget, create: bool) -> Result<Pool, SqlStoreError> {
    let connect_err = |source| SqlStoreError::Connect {
        url: target.display(),
        source,
    };
    match target {
        DbTarget::Sqlite { path } => {
            if create
                && let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                crate::private::create_dir(parent).map_err(|source| SqlStoreError::Io {
                    what: "creating the directory of the SQLite database".into(),
                    path: parent.to_owned(),
                    safe: "Nothing was changed",
                    source,
                })?;
            }
            if create {
                crate::private::create_file(path).map_err(|source| SqlStoreError::Io {
                    what: "creating the SQLite database file".into(),
                    path: path.to_owned(),
                    safe: "Nothing was changed",
                    source,
                })?;
            }
            let tighten = || {
                crate::private::tighten_sqlite(path).map_err(|(file, source)| SqlStoreError::Io {
                    what: "making the SQLite database private (0600)".into(),
                    path: file,
                    safe: "Nothing was changed",
                    source,
                })
            };
            // Before (SQLite gives a new `-wal` the database's mode) and after (files left
            // by an earlier opener).
            tighten()?;
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(sqlite_options(path, create))
                .await
                .map_err(connect_err)?;
            tighten()?;
            Ok(Pool::Sqlite(pool))
        }
        DbTarget::Postgres { url } => {
            let opts = PgConnectOptions::from_str(url).map_err(|e| SqlStoreError::InvalidUrl {
                url: target.display(),
                reason: e.to_string(),
            })?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(connect_err)?;
            Ok(Pool::Postgres(pool))
        }
    }
}

pub(super) fn read_err(what: &str) -> impl FnOnce(sqlx::Error) -> SqlStoreError + '_ {
    move |source| SqlStoreError::Database {
        what: what.to_owned(),
        safe: "Nothing was changed.",
        source,
    }
}

const SQLITE_TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)";
const PG_TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1)";

/// Whether a table exists, and the schema state, read without writing anything.
pub(crate) async fn inspect(pool: &Pool) -> Result<SchemaReport, SqlStoreError> {
    let backend = pool.backend();
    let (applied, notes) = on!(pool, p => {
        let mut conn = p.acquire().await.map_err(read_err("connecting"))?;
        read_state::<Db>(&mut conn, backend).await?
    });
    Ok(SchemaReport::decide(backend, &applied, &notes))
}

#[derive(sqlx::FromRow)]
pub(crate) struct NoteRow {
    version: i64,
    description: String,
    reversible: bool,
    note: String,
}

pub(crate) async fn read_state<DB>(
    conn: &mut DB::Connection,
    backend: Backend,
) -> Result<(Vec<AppliedRow>, BTreeMap<i64, MigrationInfo>), SqlStoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'r> AppliedRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> NoteRow: sqlx::FromRow<'r, DB::Row>,
    for<'r> (bool,): sqlx::FromRow<'r, DB::Row>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    let exists_sql = match backend {
        Backend::Sqlite => SQLITE_TABLE_EXISTS,
        Backend::Postgres => PG_TABLE_EXISTS,
    };
    let exists = |name: &'static str| sqlx::query_as::<DB, (bool,)>(exists_sql).bind(name);
    let (has_migrations,) = exists("_sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(read_err("reading the schema version"))?;
    if !has_migrations {
        return Ok((Vec::new(), BTreeMap::new()));
    }
    let applied: Vec<AppliedRow> = sqlx::query_as::<DB, AppliedRow>(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(read_err("reading the applied schema migrations"))?;
    let (has_notes,) = exists("schema_notes")
        .fetch_one(&mut *conn)
        .await
        .map_err(read_err("reading the schema notes"))?;
    let mut notes = BTreeMap::new();
    if has_notes {
        let rows: Vec<NoteRow> = sqlx::query_as::<DB, NoteRow>(
            "SELECT version, description, reversible, note FROM schema_notes ORDER BY version",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(read_err("reading the schema notes"))?;
        for r in rows {
            notes.insert(
                r.version,
                MigrationInfo {
                    version: r.version,
                    description: r.description,
                    reversible: r.reversible,
                    note: r.note,
                },
            );
        }
    }
    Ok((applied, notes))
}

impl Pool {
    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn close(&self) {
        on!(self, p => p.close().await)
    }
}

impl SqlStore {
    /// Run the guard and apply pending migrations up to `upto` (all when `None`).
    pub(crate) async fn migrate_to(&self, upto: Option<i64>) -> Result<OpenReport, SqlStoreError> {
        let backend = self.backend();
        let migrator = schema::migrator(backend);
        let (before, applied_now) = on!(&self.pool, p => {
            let mut conn = p.acquire().await.map_err(read_err("connecting"))?;
            if backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(PG_SCHEMA_LOCK)
                    .execute(&mut *conn)
                    .await
                    .map_err(read_err("taking the schema lock"))?;
            }
            let result = async {
                let (applied, notes) = read_state::<Db>(&mut conn, backend).await?;
                let report = SchemaReport::decide(backend, &applied, &notes);
                if let Some(refusal) = report.refusal() {
                    return Err(SqlStoreError::Refused(refusal));
                }
                let pending: Vec<i64> = match &report.status {
                    SchemaStatus::Pending { versions } => versions
                        .iter()
                        .copied()
                        .filter(|v| upto.is_none_or(|u| *v <= u))
                        .collect(),
                    _ => Vec::new(),
                };
                if !pending.is_empty() {
                    migrator
                        .run_direct(upto, &mut *conn, false)
                        .await
                        .map_err(|source| SqlStoreError::Migrate {
                            from: report.database_version,
                            source,
                        })?;
                }
                // Record what each applied migration declares, when `schema_notes` lacks it.
                let now_applied: Vec<i64> = applied
                    .iter()
                    .map(|a| a.version)
                    .chain(pending.iter().copied())
                    .collect();
                let missing: Vec<MigrationInfo> = schema::known_migrations(backend)
                    .into_iter()
                    .filter(|k| now_applied.contains(&k.version) && notes.get(&k.version) != Some(k))
                    .collect();
                if !missing.is_empty() {
                    let mut tx = conn.begin().await.map_err(read_err("writing the schema notes"))?;
                    for k in &missing {
                        sqlx::query(
                            "INSERT INTO schema_notes (version, description, reversible, note) \
                             VALUES ($1, $2, $3, $4) ON CONFLICT (version) DO UPDATE SET \
                             description = excluded.description, reversible = excluded.reversible, \
                             note = excluded.note",
                        )
                        .bind(k.version)
                        .bind(&k.description)
                        .bind(k.reversible)
                        .bind(&k.note)
                        .execute(&mut *tx)
                        .await
                        .map_err(read_err("writing the schema notes"))?;
                    }
                    tx.commit().await.map_err(read_err("writing the schema notes"))?;
                }
                let to = pending.last().copied().unwrap_or(report.database_version);
                // The audit table arrives with migration 3: a partial migration may stop before it.
                if !pending.is_empty() && to >= AUDIT_SCHEMA_VERSION {
                    let event = AuditEvent::new(Timestamp::now(), "system", SERVER_SCHEMA_MIGRATE, "database")
                        .with("from", report.database_version.to_string())
                        .with("to", to.to_string())
                        .with(
                            "migrations",
                            pending.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","),
                        )
                        .with("backend", backend.to_string())
                        .with("dockmesh_version", env!("CARGO_PKG_VERSION"));
                    let audit_err = |e: StoreError| SqlStoreError::Database {
                        what: format!("recording the audit event {SERVER_SCHEMA_MIGRATE}"),
                        safe: "The schema migrations were applied and committed.",
                        source: sqlx::Error::Protocol(e.to_string()),
                    };
                    let mut tx = conn.begin().await.map_err(|e| audit_err(store_err("begin", e)))?;
                    let key = if to >= crate::audit::ANCHOR_SCHEMA_VERSION { self.audit.key() } else { None };
                    append_audit_in!(tx, event, key).await.map_err(audit_err)?;
                    tx.commit().await.map_err(|e| audit_err(store_err("commit", e)))?;
                }
                Ok((report.database_version, pending))
            }
            .await;
            if backend == Backend::Postgres {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(PG_SCHEMA_LOCK)
                    .execute(&mut *conn)
                    .await;
            }
            result?
        });
        let to = applied_now.last().copied().unwrap_or(before);
        if !applied_now.is_empty() {
            tracing::info!("Database migration from {before} -> {to} complete");
        }
        Ok(OpenReport {
            from: before,
            to,
            applied: applied_now,
        })
    }
}
