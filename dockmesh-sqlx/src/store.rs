//! [`SqlStore`]: the [`Store`] port on SQLite and PostgreSQL.
//!
//! One SQL text serves both backends (`$N` placeholders, `ON CONFLICT … DO UPDATE`,
//! `RETURNING`, partial unique indexes: SQLite and PostgreSQL both have them). The `on!` macro
//! expands a body once per backend, so each is type-checked against its own driver.

use crate::error::SqlStoreError;
use crate::options::OpenOptions;
use crate::schema::{self, AppliedRow, Backend, MigrationInfo, SchemaReport, SchemaStatus};
use crate::target::DbTarget;
use crate::ts::{Ts, truncate_micros};
use async_trait::async_trait;
use dockmesh_core::audit::{
    AuditEntry, AuditEvent, AuditQuery, BrokenLink, ChainVerification, SERVER_SCHEMA_MIGRATE,
};
use dockmesh_core::drain::{DrainPlan, DrainRecord, DrainState};
use dockmesh_core::migration::{MigrationEvent, MigrationSpec, StoredMigration};
use dockmesh_core::ports::{
    DeployEntry, Fence, Lease, LeaseClaim, MigrationQuery, PageQuery, Store, StoreError, page_size,
};
use dockmesh_core::records::{
    CordonRecord, DeployRecord, Scope, StackRecord, TokenKind, TokenRecord, TokenUse,
};
use dockmesh_core::release::{ReleaseOutcome, ReleaseRecord};
use dockmesh_core::rollout::{
    AgentRecord, ConnectionState, RolloutPolicy, RolloutRecord, RolloutState, UpgradeState,
};
use dockmesh_core::types::{AgentId, HostId, MigrationId};
use jiff::{SignedDuration, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Connection, QueryBuilder};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// How long a SQLite connection waits for a lock held by another writer.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL advisory lock key held while the schema guard and the migrations run, so
/// that several servers sharing one database migrate it once.
const PG_SCHEMA_LOCK: i64 = 0x646f_636b_6d65_7368; // "dockmesh"

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$p` bound to the pool of whichever backend `$pool` holds.
macro_rules! on {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::store::Pool::Sqlite($p) => {
                #[allow(dead_code)]
                type Db = sqlx::Sqlite;
                $body
            }
            $crate::store::Pool::Postgres($p) => {
                #[allow(dead_code)]
                type Db = sqlx::Postgres;
                $body
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on;

/// Insert one chained entry into `audit_log` through `$exec`.
macro_rules! insert_audit {
    ($exec:expr, $entry:expr) => {{
        let entry: &AuditEntry = $entry;
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(to_i64(entry.seq, "audit sequence number")?)
        .bind(Ts::new(entry.event.at))
        .bind(entry.event.actor.as_str())
        .bind(entry.event.action.as_str())
        .bind(entry.event.target.as_str())
        .bind(Json(&entry.event.detail))
        .bind(entry.prev_hash.as_str())
        .bind(entry.hash.as_str())
        .execute($exec)
        .await
        .map_err(se("append to the audit log"))
    }};
}

/// Append `$event` (already truncated to microseconds) to the chain inside the open
/// transaction `$tx`; evaluates to `Result<AuditEntry, StoreError>`.
macro_rules! append_audit_in {
    ($tx:expr, $event:expr, $key:expr) => {
        async {
            // Touching the head first takes the write lock (SQLite) / the row lock (PostgreSQL)
            // before reading it, so concurrent appends queue up instead of forking the chain.
            let (seq, hash): (i64, String) =
                sqlx::query_as("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
                    .fetch_one(&mut *$tx)
                    .await
                    .map_err(se("read the audit chain head"))?;
            let prev = if seq == 0 {
                None
            } else {
                Some((seq as u64, hash.as_str()))
            };
            let entry = AuditEntry::chain(prev, $event);
            insert_audit!(&mut *$tx, &entry)?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(to_i64(entry.seq, "audit sequence number")?)
                .bind(entry.hash.as_str())
                .execute(&mut *$tx)
                .await
                .map_err(se("move the audit chain head"))?;
            let key: Option<&[u8; 32]> = $key;
            if let Some(key) = key {
                sqlx::query(ANCHOR_UPSERT)
                    .bind(to_i64(entry.seq, "audit sequence number")?)
                    .bind(crate::audit::anchor_mac(key, entry.seq, &entry.hash))
                    .execute(&mut *$tx)
                    .await
                    .map_err(se("move the audit chain anchor"))?;
            }
            Ok::<AuditEntry, StoreError>(entry)
        }
    };
}

/// Move the audit anchor (schema version 4) in an append's transaction.
const ANCHOR_UPSERT: &str = "INSERT INTO audit_anchor (id, seq, mac) VALUES (1, $1, $2) \
     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac";

/// The dockmesh [`Store`] on SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pub(crate) pool: Pool,
    target: DbTarget,
    pub(crate) audit: crate::audit::AuditKey,
}

/// What happened when a database was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Schema version before opening.
    pub from: i64,
    /// Schema version now.
    pub to: i64,
    /// The migrations applied by this open, in order.
    pub applied: Vec<i64>,
}

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

fn read_err(what: &str) -> impl FnOnce(sqlx::Error) -> SqlStoreError + '_ {
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
    /// Open (creating a SQLite file if needed) the database at `url` (`sqlite://PATH` or
    /// `postgres://…`), run the schema guard, and apply pending migrations.
    pub async fn open_url(url: &str) -> Result<SqlStore, SqlStoreError> {
        Self::open(&DbTarget::parse(url)?).await
    }

    /// Open the database at `target`: the schema guard runs first and refuses (without writing
    /// anything) a database that is newer than this binary, has a modified applied migration,
    /// a gap, or a half-applied migration. Pending migrations are then applied, in order, each
    /// in its own transaction; when any were, one line `Database migration from A -> B complete`
    /// is logged and an audit event `server.schema_migrate` is recorded.
    pub async fn open(target: &DbTarget) -> Result<SqlStore, SqlStoreError> {
        Ok(Self::open_reporting(target).await?.0)
    }

    /// [`SqlStore::open`], also telling what the open did to the schema.
    pub async fn open_reporting(
        target: &DbTarget,
    ) -> Result<(SqlStore, OpenReport), SqlStoreError> {
        Self::open_with(target, &OpenOptions::for_target(target, None)).await
    }

    /// [`SqlStore::open_reporting`] with explicit [`OpenOptions`] (where the audit anchor key
    /// is: a server on PostgreSQL passes [`OpenOptions::in_data_dir`]).
    pub async fn open_with(
        target: &DbTarget,
        options: &OpenOptions,
    ) -> Result<(SqlStore, OpenReport), SqlStoreError> {
        // An existing SQLite file is judged before it is opened for writing: switching it to
        // WAL would already change a database the guard then refuses.
        if let DbTarget::Sqlite { path } = target
            && path.exists()
            && let Some(refusal) = Self::status(target).await?.refusal()
        {
            return Err(SqlStoreError::Refused(refusal));
        }
        let key = match &options.audit_key {
            Some(path) => crate::audit::read_key(path)?.map(|k| (k, path.clone())),
            None => None,
        };
        let pool = connect(target, true).await?;
        let mut store = SqlStore {
            pool,
            target: target.clone(),
            audit: match key {
                Some((key, path)) => crate::audit::AuditKey::Loaded {
                    key: std::sync::Arc::new(key),
                    path,
                },
                None => crate::audit::AuditKey::Off,
            },
        };
        let opened = async {
            let report = store.migrate_to(None).await?;
            if store.audit.key().is_none() {
                crate::audit::setup_key(&mut store, options.audit_key.clone()).await?;
            }
            Ok(report)
        }
        .await;
        match opened {
            Ok(report) => Ok((store, report)),
            Err(e) => {
                store.pool.close().await;
                Err(e)
            }
        }
    }

    /// Where the database at `target` stands against this binary, without changing anything
    /// (a missing SQLite file is reported as an empty database and is not created).
    pub async fn status(target: &DbTarget) -> Result<SchemaReport, SqlStoreError> {
        if let DbTarget::Sqlite { path } = target
            && !path.exists()
        {
            return Ok(SchemaReport::decide(Backend::Sqlite, &[], &BTreeMap::new()));
        }
        let pool = match target {
            DbTarget::Sqlite { path } => {
                let opts = sqlite_inspect_options(path);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(opts)
                        .await
                        .map_err(|source| SqlStoreError::Connect {
                            url: target.display(),
                            source,
                        })?,
                )
            }
            DbTarget::Postgres { .. } => connect(target, false).await?,
        };
        let report = inspect(&pool).await;
        pool.close().await;
        report
    }

    /// Open the database at `target` to read it: no file is created, no migration is applied,
    /// no journal mode is set and no audit anchor is moved. It is refused (nothing changed)
    /// unless the schema is up to date with this binary, so the queries match the tables. The
    /// caller only reads through it (as `dockmesh upgrade preflight` does).
    pub async fn open_for_reading(target: &DbTarget) -> Result<SqlStore, SqlStoreError> {
        let pool = match target {
            DbTarget::Sqlite { path } => {
                if !path.exists() {
                    return Err(SqlStoreError::NotReadable(format!(
                        "there is no database at {}; nothing was changed",
                        target.display()
                    )));
                }
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(sqlite_inspect_options(path))
                        .await
                        .map_err(|source| SqlStoreError::Connect {
                            url: target.display(),
                            source,
                        })?,
                )
            }
            DbTarget::Postgres { .. } => connect(target, false).await?,
        };
        let report = match inspect(&pool).await {
            Ok(r) => r,
            Err(e) => {
                pool.close().await;
                return Err(e);
            }
        };
        if report.status != SchemaStatus::UpToDate {
            pool.close().await;
            return Err(SqlStoreError::NotReadable(format!(
                "the database {} is at schema version {} and this binary at {} ({:?}); it is read \
                 only when they match; nothing was changed",
                target.display(),
                report.database_version,
                report.binary_version,
                report.status
            )));
        }
        Ok(SqlStore {
            pool,
            target: target.clone(),
            audit: crate::audit::AuditKey::Off,
        })
    }

    /// The database's size in bytes: the SQLite file (with its write-ahead log), or
    /// PostgreSQL's `pg_database_size` of the current database.
    pub async fn database_bytes(&self) -> Result<u64, SqlStoreError> {
        match (&self.pool, &self.target) {
            (Pool::Sqlite(_), DbTarget::Sqlite { path }) => {
                let mut total = 0;
                for p in [path.clone(), {
                    let mut wal = path.clone().into_os_string();
                    wal.push("-wal");
                    std::path::PathBuf::from(wal)
                }] {
                    if let Ok(m) = std::fs::metadata(&p) {
                        total += m.len();
                    }
                }
                Ok(total)
            }
            (Pool::Postgres(p), _) => {
                let n: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                    .fetch_one(p)
                    .await
                    .map_err(read_err("reading the database size"))?;
                Ok(u64::try_from(n).unwrap_or(0))
            }
            (Pool::Sqlite(_), DbTarget::Postgres { .. }) => Ok(0),
        }
    }

    /// Where this database stands against this binary.
    pub async fn schema_report(&self) -> Result<SchemaReport, SqlStoreError> {
        inspect(&self.pool).await
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// Where the database is.
    pub fn target(&self) -> &DbTarget {
        &self.target
    }

    /// Close every connection (SQLite checkpoints its WAL into the database file).
    pub async fn close(&self) {
        self.pool.close().await
    }

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

    /// Append many events to the audit log in one transaction (bulk import, benchmarks).
    pub async fn append_audit_batch(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("append to the audit log"))?;
            let (mut seq, mut hash): (i64, String) = sqlx::query_as(
                "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(se("read the audit chain head"))?;
            let mut out = Vec::with_capacity(events.len());
            for event in events {
                let mut event = event.clone();
                event.at = truncate_micros(event.at);
                let prev = if seq == 0 { None } else { Some((seq as u64, hash.as_str())) };
                let entry = AuditEntry::chain(prev, event);
                seq = to_i64(entry.seq, "audit sequence number")?;
                hash = entry.hash.clone();
                out.push(entry);
            }
            // Many rows per statement (8 parameters each, well under both backends' limits).
            for chunk in out.chunks(500) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) ",
                );
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.seq as i64)
                        .push_bind(Ts::new(e.event.at))
                        .push_bind(e.event.actor.as_str())
                        .push_bind(e.event.action.as_str())
                        .push_bind(e.event.target.as_str())
                        .push_bind(Json(&e.event.detail))
                        .push_bind(e.prev_hash.as_str())
                        .push_bind(e.hash.as_str());
                });
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(se("append to the audit log"))?;
            }
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .map_err(se("move the audit chain head"))?;
            if let Some(key) = self.audit.key() {
                sqlx::query(ANCHOR_UPSERT)
                    .bind(seq)
                    .bind(crate::audit::anchor_mac(key, seq as u64, &hash))
                    .execute(&mut *tx)
                    .await
                    .map_err(se("move the audit chain anchor"))?;
            }
            tx.commit().await.map_err(se("append to the audit log"))?;
            Ok(out)
        })
    }

    /// The query that reads the database's clock, as a [`Ts`].
    fn now_sql(&self) -> &'static str {
        match self.pool.backend() {
            Backend::Postgres => "SELECT now()",
            // `%f` is seconds with milliseconds; padded to the fixed width `Ts` stores.
            Backend::Sqlite => "SELECT strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')",
        }
    }

    /// The active migration of the stack of migration `id`, other than `id` itself.
    async fn active_migration_of(&self, id: MigrationId) -> Result<Option<uuid::Uuid>, StoreError> {
        on!(&self.pool, p => {
            sqlx::query_scalar(
                "SELECT o.id FROM migrations o JOIN migrations m ON m.stack = o.stack \
                 WHERE m.id = $1 AND o.id <> $1 AND o.active = TRUE",
            )
            .bind(id.0)
            .fetch_optional(p)
            .await
            .map_err(se("read a migration"))
        })
    }

    /// The lease `name`: its holder and until when, if anyone holds it.
    pub async fn lease(&self, name: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        on!(&self.pool, p => {
            let row: Option<(String, Ts)> =
                sqlx::query_as("SELECT owner, held_until FROM leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(p)
                    .await
                    .map_err(se("read a lease"))?;
            Ok(row.map(|(o, t)| (o, t.0)))
        })
    }
}

/// The schema version that creates the audit log.
const AUDIT_SCHEMA_VERSION: i64 = 3;

/// Map a driver error to a [`StoreError`], naming the operation.
pub(crate) fn se(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| store_err(op, e)
}

fn store_err(op: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => StoreError::Corrupt {
            what: format!("{op}: {e}"),
        },
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict {
            what: format!("{op}: {}", db.message()),
        },
        _ => StoreError::backend(
            format!("could not {op}; the change, if any, was rolled back"),
            e,
        ),
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Conflict {
        what: format!("{what} {v} is too large to store"),
    })
}

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    name: String,
    version: String,
    commit_sha: Option<String>,
    protocol_version: i64,
    arch: String,
    docker_version: String,
    last_seen: Option<Ts>,
    connection: String,
    upgrade: Json<UpgradeState>,
}

impl AgentRow {
    fn into_record(self) -> Result<AgentRecord, StoreError> {
        let connection = match self.connection.as_str() {
            "connected" => ConnectionState::Connected,
            "disconnected" => ConnectionState::Disconnected,
            other => {
                return Err(corrupt(format!(
                    "agent {}: unknown connection state {other:?}",
                    self.id
                )));
            }
        };
        Ok(AgentRecord {
            protocol_version: u32::try_from(self.protocol_version).map_err(|_| {
                corrupt(format!(
                    "agent {}: protocol version {} out of range",
                    self.id, self.protocol_version
                ))
            })?,
            id: HostId(self.id),
            name: self.name,
            version: self.version,
            commit: self.commit_sha,
            arch: self.arch,
            docker_version: self.docker_version,
            last_seen: self.last_seen.map(|t| t.0),
            connection,
            upgrade: self.upgrade.0,
        })
    }
}

fn connection_text(c: ConnectionState) -> &'static str {
    match c {
        ConnectionState::Connected => "connected",
        ConnectionState::Disconnected => "disconnected",
    }
}

fn kind_text(k: TokenKind) -> &'static str {
    match k {
        TokenKind::Enrollment => "enrollment",
        TokenKind::Api => "api",
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    hash: String,
    kind: String,
    name: String,
    created_at: Ts,
    expires_at: Option<Ts>,
    one_time: bool,
    used_at: Option<Ts>,
    scope: Option<String>,
}

impl TokenRow {
    fn into_record(self) -> Result<TokenRecord, StoreError> {
        let kind = match self.kind.as_str() {
            "enrollment" => TokenKind::Enrollment,
            "api" => TokenKind::Api,
            other => return Err(corrupt(format!("token: unknown kind {other:?}"))),
        };
        let scope = match self.scope.as_deref().map(str::parse::<Scope>) {
            Some(Ok(scope)) => scope,
            Some(Err(e)) => return Err(corrupt(format!("token {:?}: {e}", self.name))),
            None => return Err(corrupt(format!("token {:?} has no scope", self.name))),
        };
        Ok(TokenRecord {
            hash: self.hash,
            kind,
            name: self.name,
            created_at: self.created_at.0,
            expires_at: self.expires_at.map(|t| t.0),
            one_time: self.one_time,
            used_at: self.used_at.map(|t| t.0),
            scope,
        })
    }
}

#[derive(sqlx::FromRow)]
struct StackRow {
    name: String,
    compose: String,
    env: Option<String>,
    host: Option<String>,
    updated_at: Ts,
}

impl StackRow {
    fn into_record(self) -> StackRecord {
        StackRecord {
            name: self.name,
            compose: self.compose,
            env: self.env,
            host: self.host.map(HostId),
            updated_at: self.updated_at.0,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ReleaseRow {
    stack: String,
    rev: i64,
    at: Ts,
    host: String,
    compose: String,
    env: Option<String>,
    images: Json<BTreeMap<String, String>>,
    outcome: String,
    detail: Option<String>,
    from_rev: Option<i64>,
    actor: String,
}

fn outcome_name(o: ReleaseOutcome) -> &'static str {
    match o {
        ReleaseOutcome::Deployed => "deployed",
        ReleaseOutcome::RolledBack => "rolled_back",
        ReleaseOutcome::Failed => "failed",
    }
}

impl ReleaseRow {
    fn into_record(self) -> Result<ReleaseRecord, StoreError> {
        let outcome = match self.outcome.as_str() {
            "deployed" => ReleaseOutcome::Deployed,
            "rolled_back" => ReleaseOutcome::RolledBack,
            "failed" => ReleaseOutcome::Failed,
            other => {
                return Err(corrupt(format!(
                    "release {} of stack {} has an unknown outcome {other:?}",
                    self.rev, self.stack
                )));
            }
        };
        let rev = |v: i64| {
            u64::try_from(v).map_err(|_| {
                corrupt(format!(
                    "release of stack {} has a negative revision {v}",
                    self.stack
                ))
            })
        };
        Ok(ReleaseRecord {
            rev: rev(self.rev)?,
            from_rev: self.from_rev.map(rev).transpose()?,
            stack: self.stack.clone(),
            at: self.at.0,
            host: HostId(self.host),
            compose: self.compose,
            env: self.env,
            images: self.images.0,
            outcome,
            detail: self.detail,
            actor: self.actor,
        })
    }
}

#[derive(sqlx::FromRow)]
struct DeployRow {
    id: i64,
    stack: String,
    at: Ts,
    host: String,
    action: String,
    actor: String,
}

#[derive(sqlx::FromRow)]
struct MigrationRow {
    id: uuid::Uuid,
    stack: String,
    source: String,
    target: String,
    requested_at: Ts,
    requested_by: String,
    retention: String,
}

impl MigrationRow {
    fn into_spec(self) -> Result<MigrationSpec, StoreError> {
        let retention = SignedDuration::from_str(&self.retention).map_err(|e| {
            corrupt(format!(
                "migration {}: retention {:?}: {e}",
                self.id, self.retention
            ))
        })?;
        Ok(MigrationSpec {
            id: MigrationId(self.id),
            stack: self.stack,
            source: HostId(self.source),
            target: HostId(self.target),
            requested_at: self.requested_at.0,
            requested_by: self.requested_by,
            retention,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    body: Json<MigrationEvent>,
}

#[derive(sqlx::FromRow)]
struct DrainRow {
    id: uuid::Uuid,
    created_at: Ts,
    plan: Json<DrainPlan>,
    migrations: Json<Vec<MigrationId>>,
    state: Option<Json<DrainProgress>>,
}

/// The execution state of a drain, kept in `drain_states` (absent: never executed, running).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct DrainProgress {
    #[serde(default)]
    state: DrainState,
    #[serde(default)]
    acknowledged: Vec<MigrationId>,
}

impl DrainRow {
    fn into_record(self) -> DrainRecord {
        let progress = self.state.map(|j| j.0).unwrap_or_default();
        DrainRecord {
            id: self.id,
            created_at: self.created_at.0,
            plan: self.plan.0,
            migrations: self.migrations.0,
            state: progress.state,
            acknowledged: progress.acknowledged,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    seq: i64,
    at: Ts,
    actor: String,
    action: String,
    target: String,
    detail: Json<BTreeMap<String, String>>,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    pub(crate) fn into_entry(self) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            seq: u64::try_from(self.seq)
                .map_err(|_| corrupt(format!("audit entry with sequence number {}", self.seq)))?,
            event: AuditEvent {
                at: self.at.0,
                actor: self.actor,
                action: self.action,
                target: self.target,
                detail: self.detail.0,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor, action, target, detail, prev_hash, hash";
const AGENT_COLUMNS: &str = "SELECT id, name, version, commit_sha, protocol_version, arch, docker_version, last_seen, connection, upgrade FROM agents";
const TOKEN_COLUMNS: &str = "SELECT hash, kind, name, created_at, expires_at, one_time, used_at, \
     scope FROM tokens LEFT JOIN token_scopes USING (hash)";
const MIGRATION_COLUMNS: &str =
    "SELECT id, stack, source, target, requested_at, requested_by, retention FROM migrations";

#[async_trait]
impl Store for SqlStore {
    async fn upsert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO agents (id, name, version, commit_sha, protocol_version, arch, docker_version, \
                 last_seen, connection, upgrade) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, version = excluded.version, \
                 commit_sha = excluded.commit_sha, protocol_version = excluded.protocol_version, \
                 arch = excluded.arch, docker_version = excluded.docker_version, \
                 last_seen = excluded.last_seen, connection = excluded.connection, upgrade = excluded.upgrade",
            )
            .bind(agent.id.as_str())
            .bind(&agent.name)
            .bind(&agent.version)
            .bind(agent.commit.as_deref())
            .bind(i64::from(agent.protocol_version))
            .bind(&agent.arch)
            .bind(&agent.docker_version)
            .bind(agent.last_seen.map(Ts::new))
            .bind(connection_text(agent.connection))
            .bind(Json(&agent.upgrade))
            .execute(p)
            .await
            .map_err(se("store an agent"))?;
            Ok(())
        })
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let sql = const_format(AGENT_COLUMNS, " WHERE id = $1");
        on!(&self.pool, p => {
            let row: Option<AgentRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.as_str())
                .fetch_optional(p)
                .await
                .map_err(se("read an agent"))?;
            row.map(AgentRow::into_record).transpose()
        })
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let sql = const_format(AGENT_COLUMNS, " ORDER BY id");
        on!(&self.pool, p => {
            let rows: Vec<AgentRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .map_err(se("list agents"))?;
            rows.into_iter().map(AgentRow::into_record).collect()
        })
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query("DELETE FROM agents WHERE id = $1")
                .bind(id.as_str())
                .execute(p)
                .await
                .map_err(se("delete an agent"))?;
            Ok(())
        })
    }

    async fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            // The token and its scope are one write: a token is never seen without its scope.
            let mut tx = p.begin().await.map_err(se("store a token"))?;
            sqlx::query(
                "INSERT INTO tokens (hash, kind, name, created_at, expires_at, one_time, used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&token.hash)
            .bind(kind_text(token.kind))
            .bind(&token.name)
            .bind(Ts::new(token.created_at))
            .bind(token.expires_at.map(Ts::new))
            .bind(token.one_time)
            .bind(token.used_at.map(Ts::new))
            .execute(&mut *tx)
            .await
            .map_err(|e| match store_err("store a token", e) {
                StoreError::Conflict { .. } => StoreError::Conflict {
                    what: "a token with this hash already exists; nothing was stored".into(),
                },
                other => other,
            })?;
            sqlx::query(
                "INSERT INTO token_scopes (hash, scope) VALUES ($1, $2) \
                 ON CONFLICT (hash) DO UPDATE SET scope = excluded.scope",
            )
            .bind(&token.hash)
            .bind(token.scope.as_str())
            .execute(&mut *tx)
            .await
            .map_err(se("store a token's scope"))?;
            tx.commit().await.map_err(se("store a token"))?;
            Ok(())
        })
    }

    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<TokenUse, StoreError> {
        let now = Ts::new(now);
        let sql = const_format(TOKEN_COLUMNS, " WHERE hash = $1");
        on!(&self.pool, p => {
            // Spending a one-time token is one conditional UPDATE: of two concurrent uses, one
            // changes the row and the other sees it used.
            let spent = sqlx::query(
                "UPDATE tokens SET used_at = $2 WHERE hash = $1 AND one_time = TRUE \
                 AND used_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(hash)
            .bind(now)
            .execute(p)
            .await
            .map_err(se("use a token"))?
            .rows_affected()
                == 1;
            let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(hash)
                .fetch_optional(p)
                .await
                .map_err(se("read a token"))?;
            let Some(row) = row else {
                return Ok(TokenUse::Unknown);
            };
            let token = row.into_record()?;
            if spent {
                return Ok(TokenUse::Accepted { token });
            }
            if token.expires_at.is_some_and(|e| e <= now.0) {
                return Ok(TokenUse::Expired);
            }
            if token.one_time {
                return Ok(TokenUse::AlreadyUsed);
            }
            Ok(TokenUse::Accepted { token })
        })
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = const_format(TOKEN_COLUMNS, " ORDER BY created_at, hash");
        on!(&self.pool, p => {
            let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .map_err(se("list tokens"))?;
            rows.into_iter().map(TokenRow::into_record).collect()
        })
    }

    async fn delete_token(&self, hash: &str) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("delete a token"))?;
            for sql in [
                "DELETE FROM token_scopes WHERE hash = $1",
                "DELETE FROM tokens WHERE hash = $1",
            ] {
                sqlx::query(sql)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(se("delete a token"))?;
            }
            tx.commit().await.map_err(se("delete a token"))?;
            Ok(())
        })
    }

    async fn put_stack(
        &self,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("store a stack"))?;
            sqlx::query(
                "INSERT INTO stacks (name, compose, env, host, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET compose = excluded.compose, env = excluded.env, \
                 host = excluded.host, updated_at = excluded.updated_at",
            )
            .bind(&stack.name)
            .bind(&stack.compose)
            .bind(stack.env.as_deref())
            .bind(stack.host.as_ref().map(|h| h.as_str()))
            .bind(Ts::new(stack.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(se("store a stack"))?;
            if let Some(record) = deploy {
                sqlx::query(
                    "INSERT INTO deploys (stack, at, host, action, actor) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&record.stack)
                .bind(Ts::new(record.at))
                .bind(record.host.as_str())
                .bind(&record.action)
                .bind(&record.actor)
                .execute(&mut *tx)
                .await
                .map_err(se("append to a stack's deploy history"))?;
            }
            tx.commit().await.map_err(se("store a stack"))?;
            Ok(())
        })
    }

    async fn get_stack(&self, name: &str) -> Result<Option<StackRecord>, StoreError> {
        on!(&self.pool, p => {
            let row: Option<StackRow> = sqlx::query_as(
                "SELECT name, compose, env, host, updated_at FROM stacks WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(p)
            .await
            .map_err(se("read a stack"))?;
            Ok(row.map(StackRow::into_record))
        })
    }

    async fn list_stacks(&self) -> Result<Vec<StackRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<StackRow> = sqlx::query_as(
                "SELECT name, compose, env, host, updated_at FROM stacks ORDER BY name",
            )
            .fetch_all(p)
            .await
            .map_err(se("list stacks"))?;
            Ok(rows.into_iter().map(StackRow::into_record).collect())
        })
    }

    async fn delete_stack(&self, name: &str) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("delete a stack"))?;
            sqlx::query("DELETE FROM deploys WHERE stack = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(se("delete a stack's deploy history"))?;
            sqlx::query("DELETE FROM releases WHERE stack = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(se("delete a stack's releases"))?;
            sqlx::query("DELETE FROM stacks WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(se("delete a stack"))?;
            tx.commit().await.map_err(se("delete a stack"))?;
            Ok(())
        })
    }

    async fn deploy_history(
        &self,
        stack: &str,
        page: &PageQuery,
    ) -> Result<Vec<DeployEntry>, StoreError> {
        let before = page
            .before
            .map(|b| to_i64(b, "deploy history cursor"))
            .transpose()?
            .unwrap_or(i64::MAX);
        let limit = i64::from(page_size(page.limit));
        on!(&self.pool, p => {
            let rows: Vec<DeployRow> = sqlx::query_as(
                "SELECT id, stack, at, host, action, actor FROM deploys \
                 WHERE stack = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(stack)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(se("read a stack's deploy history"))?;
            Ok(rows
                .into_iter()
                .map(|r| DeployEntry {
                    seq: r.id as u64,
                    record: DeployRecord {
                        stack: r.stack,
                        at: r.at.0,
                        host: HostId(r.host),
                        action: r.action,
                        actor: r.actor,
                    },
                })
                .collect())
        })
    }

    async fn put_release(
        &self,
        release: &ReleaseRecord,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError> {
        if stack.name != release.stack {
            return Err(StoreError::Conflict {
                what: format!(
                    "release of stack {} written with the record of stack {}",
                    release.stack, stack.name
                ),
            });
        }
        let rev = to_i64(release.rev, "release revision")?;
        let from_rev = release
            .from_rev
            .map(|r| to_i64(r, "release revision"))
            .transpose()?;
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("store a release"))?;
            let newest: (Option<i64>,) =
                sqlx::query_as("SELECT MAX(rev) FROM releases WHERE stack = $1")
                    .bind(&release.stack)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(se("read a stack's releases"))?;
            let next = newest.0.unwrap_or(0) + 1;
            if rev != next {
                return Err(StoreError::Conflict {
                    what: format!(
                        "release {rev} of stack {}: the next revision is {next}",
                        release.stack
                    ),
                });
            }
            sqlx::query(
                "INSERT INTO releases (stack, rev, at, host, compose, env, images, outcome, detail, from_rev, actor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&release.stack)
            .bind(rev)
            .bind(Ts::new(release.at))
            .bind(release.host.as_str())
            .bind(&release.compose)
            .bind(release.env.as_deref())
            .bind(Json(&release.images))
            .bind(outcome_name(release.outcome))
            .bind(release.detail.as_deref())
            .bind(from_rev)
            .bind(&release.actor)
            .execute(&mut *tx)
            .await
            .map_err(se("store a release"))?;
            sqlx::query(
                "INSERT INTO stacks (name, compose, env, host, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET compose = excluded.compose, env = excluded.env, \
                 host = excluded.host, updated_at = excluded.updated_at",
            )
            .bind(&stack.name)
            .bind(&stack.compose)
            .bind(stack.env.as_deref())
            .bind(stack.host.as_ref().map(|h| h.as_str()))
            .bind(Ts::new(stack.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(se("store a stack"))?;
            if let Some(record) = deploy {
                sqlx::query(
                    "INSERT INTO deploys (stack, at, host, action, actor) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&record.stack)
                .bind(Ts::new(record.at))
                .bind(record.host.as_str())
                .bind(&record.action)
                .bind(&record.actor)
                .execute(&mut *tx)
                .await
                .map_err(se("append to a stack's deploy history"))?;
            }
            tx.commit().await.map_err(se("store a release"))?;
            Ok(())
        })
    }

    async fn list_releases(&self, stack: &str) -> Result<Vec<ReleaseRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<ReleaseRow> = sqlx::query_as(
                "SELECT stack, rev, at, host, compose, env, images, outcome, detail, from_rev, actor \
                 FROM releases WHERE stack = $1 ORDER BY rev DESC",
            )
            .bind(stack)
            .fetch_all(p)
            .await
            .map_err(se("list a stack's releases"))?;
            rows.into_iter().map(ReleaseRow::into_record).collect()
        })
    }

    async fn create_migration(
        &self,
        spec: &MigrationSpec,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let audit = audit.map(|a| {
            let mut a = a.clone();
            a.at = truncate_micros(a.at);
            a
        });
        let result = on!(&self.pool, p => {
            async {
                let mut tx = p.begin().await.map_err(se("record a migration"))?;
                sqlx::query(
                    "INSERT INTO migrations (id, stack, source, target, requested_at, requested_by, \
                     retention, active, event_count) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, 0)",
                )
                .bind(spec.id.0)
                .bind(&spec.stack)
                .bind(spec.source.as_str())
                .bind(spec.target.as_str())
                .bind(Ts::new(spec.requested_at))
                .bind(&spec.requested_by)
                .bind(spec.retention.to_string())
                .execute(&mut *tx)
                .await
                .map_err(se("record a migration"))?;
                if let Some(a) = audit {
                    append_audit_in!(tx, a, self.audit.key()).await?;
                }
                tx.commit().await.map_err(se("record a migration"))
            }
            .await
        });
        match result {
            Err(StoreError::Conflict { .. }) => {
                // Name what conflicts: the id, or the stack's active migration.
                let (exists, active) = on!(&self.pool, p => {
                    let exists: Option<uuid::Uuid> =
                        sqlx::query_scalar("SELECT id FROM migrations WHERE id = $1")
                            .bind(spec.id.0)
                            .fetch_optional(p)
                            .await
                            .map_err(se("read a migration"))?;
                    let active: Option<uuid::Uuid> = sqlx::query_scalar(
                        "SELECT id FROM migrations WHERE stack = $1 AND active = TRUE",
                    )
                    .bind(&spec.stack)
                    .fetch_optional(p)
                    .await
                    .map_err(se("read a migration"))?;
                    (exists, active)
                });
                let what = if exists.is_some() {
                    format!("migration {} already exists; nothing was written", spec.id)
                } else if let Some(other) = active {
                    format!(
                        "stack {} already has an active migration ({other}); nothing was written: \
                         wait for it to finish or fail",
                        spec.stack
                    )
                } else {
                    format!(
                        "migration {} of stack {} conflicts with a concurrent write; nothing was written",
                        spec.id, spec.stack
                    )
                };
                Err(StoreError::Conflict { what })
            }
            other => other,
        }
    }

    async fn append_migration_event(
        &self,
        id: MigrationId,
        seq: u64,
        event: &MigrationEvent,
        fence: &Fence,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let seq_i = to_i64(seq, "event sequence number")?;
        let audit = audit.map(|a| {
            let mut a = a.clone();
            a.at = truncate_micros(a.at);
            a
        });
        // The lease row is locked against a concurrent takeover until this commits (SQLite:
        // the first write below already holds the database's write lock).
        let fence_sql = match self.pool.backend() {
            Backend::Sqlite => "SELECT token FROM lease_fences WHERE name = $1",
            Backend::Postgres => "SELECT token FROM lease_fences WHERE name = $1 FOR SHARE",
        };
        let result = on!(&self.pool, p => {
            async {
                let mut tx = p.begin().await.map_err(se("append a migration event"))?;
                // The optimistic check and the lock in one statement: it changes the row only
                // when the log has exactly `seq` events.
                let moved = sqlx::query(
                    "UPDATE migrations SET event_count = event_count + 1, \
                     active = COALESCE($3, active) WHERE id = $1 AND event_count = $2",
                )
                .bind(id.0)
                .bind(seq_i)
                .bind(event.activity())
                .execute(&mut *tx)
                .await
                .map_err(se("append a migration event"))?
                .rows_affected();
                let current: Option<i64> = sqlx::query_scalar(fence_sql)
                    .bind(&fence.lease)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(se("check the migration's lease"))?;
                let current = current.unwrap_or(0) as u64;
                if current != fence.token {
                    return Err(StoreError::Fenced {
                        lease: fence.lease.clone(),
                        token: fence.token,
                        current,
                    });
                }
                if moved != 1 {
                    let count: Option<i64> =
                        sqlx::query_scalar("SELECT event_count FROM migrations WHERE id = $1")
                            .bind(id.0)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(se("read a migration"))?;
                    return Err(match count {
                        None => StoreError::NotFound {
                            what: format!("migration {id}"),
                        },
                        Some(n) => StoreError::Conflict {
                            what: format!(
                                "migration {id} has {n} events, not {seq}: another writer appended \
                                 first; nothing was written, reload the migration"
                            ),
                        },
                    });
                }
                sqlx::query(
                    "INSERT INTO migration_events (migration_id, seq, kind, at, body) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id.0)
                .bind(seq_i)
                .bind(event.kind())
                .bind(Ts::new(event.at()))
                .bind(Json(event))
                .execute(&mut *tx)
                .await
                .map_err(se("append a migration event"))?;
                if let Some(a) = audit {
                    append_audit_in!(tx, a, self.audit.key()).await?;
                }
                tx.commit().await.map_err(se("append a migration event"))
            }
            .await
        });
        match result {
            // Only resuming activity can hit the one-active-per-stack index: name the other.
            Err(StoreError::Conflict { what }) if event.activity() == Some(true) => {
                let other = self.active_migration_of(id).await?;
                Err(StoreError::Conflict {
                    what: match other {
                        Some(o) => format!(
                            "the stack of migration {id} already has an active migration ({o}); \
                             nothing was written"
                        ),
                        None => what,
                    },
                })
            }
            other => other,
        }
    }

    async fn load_migration(&self, id: MigrationId) -> Result<Option<StoredMigration>, StoreError> {
        let sql = const_format(MIGRATION_COLUMNS, " WHERE id = $1");
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("read a migration"))?;
            let row: Option<MigrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(se("read a migration"))?;
            let Some(row) = row else { return Ok(None) };
            let events: Vec<EventRow> = sqlx::query_as(
                "SELECT body FROM migration_events WHERE migration_id = $1 ORDER BY seq",
            )
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(se("read a migration's events"))?;
            tx.commit().await.map_err(se("read a migration"))?;
            Ok(Some(StoredMigration {
                spec: row.into_spec()?,
                events: events.into_iter().map(|e| e.body.0).collect(),
            }))
        })
    }

    async fn list_migrations(
        &self,
        query: &MigrationQuery,
    ) -> Result<Vec<StoredMigration>, StoreError> {
        // One statement shape whatever the filters: NULL parameters switch a filter off. The
        // cursor is the (requested_at, id) of the last migration of the previous page.
        let sql = const_format(
            MIGRATION_COLUMNS,
            " WHERE ($1 = FALSE OR active = TRUE) AND ($2 IS NULL OR stack = $2) \
             AND ($3 IS NULL OR requested_at < $3 OR (requested_at = $3 AND id < $4)) \
             ORDER BY requested_at DESC, id DESC LIMIT $5",
        );
        let limit = i64::from(page_size(query.limit));
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("list migrations"))?;
            let cursor: Option<(Ts, uuid::Uuid)> = match query.after {
                None => None,
                Some(after) => Some(
                    sqlx::query_as("SELECT requested_at, id FROM migrations WHERE id = $1")
                        .bind(after.0)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(se("list migrations"))?
                        .ok_or_else(|| StoreError::NotFound {
                            what: format!("migration {after} (the cursor)"),
                        })?,
                ),
            };
            let rows: Vec<MigrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(query.active_only)
                .bind(query.stack.as_deref())
                .bind(cursor.map(|c| c.0))
                .bind(cursor.map(|c| c.1))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(se("list migrations"))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let events: Vec<EventRow> = sqlx::query_as(
                    "SELECT body FROM migration_events WHERE migration_id = $1 ORDER BY seq",
                )
                .bind(r.id)
                .fetch_all(&mut *tx)
                .await
                .map_err(se("list migration events"))?;
                out.push(StoredMigration {
                    spec: r.into_spec()?,
                    events: events.into_iter().map(|e| e.body.0).collect(),
                });
            }
            tx.commit().await.map_err(se("list migrations"))?;
            Ok(out)
        })
    }

    async fn put_drain(&self, drain: &DrainRecord) -> Result<(), StoreError> {
        let progress = DrainProgress {
            state: drain.state.clone(),
            acknowledged: drain.acknowledged.clone(),
        };
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("store a drain"))?;
            sqlx::query(
                "INSERT INTO drains (id, created_at, plan, migrations) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, \
                 plan = excluded.plan, migrations = excluded.migrations",
            )
            .bind(drain.id)
            .bind(Ts::new(drain.created_at))
            .bind(Json(&drain.plan))
            .bind(Json(&drain.migrations))
            .execute(&mut *tx)
            .await
            .map_err(se("store a drain"))?;
            sqlx::query(
                "INSERT INTO drain_states (id, state) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            )
            .bind(drain.id)
            .bind(Json(&progress))
            .execute(&mut *tx)
            .await
            .map_err(se("store a drain's state"))?;
            tx.commit().await.map_err(se("store a drain"))?;
            Ok(())
        })
    }

    async fn get_drain(&self, id: uuid::Uuid) -> Result<Option<DrainRecord>, StoreError> {
        on!(&self.pool, p => {
            let row: Option<DrainRow> = sqlx::query_as(
                "SELECT d.id, d.created_at, d.plan, d.migrations, s.state \
                 FROM drains d LEFT JOIN drain_states s ON s.id = d.id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await
            .map_err(se("read a drain"))?;
            Ok(row.map(DrainRow::into_record))
        })
    }

    async fn list_drains(&self) -> Result<Vec<DrainRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<DrainRow> = sqlx::query_as(
                "SELECT d.id, d.created_at, d.plan, d.migrations, s.state \
                 FROM drains d LEFT JOIN drain_states s ON s.id = d.id \
                 ORDER BY d.created_at DESC, d.id DESC",
            )
            .fetch_all(p)
            .await
            .map_err(se("list drains"))?;
            Ok(rows.into_iter().map(DrainRow::into_record).collect())
        })
    }

    async fn put_cordon(&self, cordon: &CordonRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO cordons (host, cordoned_at, cordoned_by) VALUES ($1, $2, $3) \
                 ON CONFLICT (host) DO UPDATE SET cordoned_at = excluded.cordoned_at, \
                 cordoned_by = excluded.cordoned_by",
            )
            .bind(&cordon.host.0)
            .bind(Ts::new(cordon.at))
            .bind(&cordon.by)
            .execute(p)
            .await
            .map_err(se("cordon a host"))?;
            Ok(())
        })
    }

    async fn delete_cordon(&self, host: &HostId) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query("DELETE FROM cordons WHERE host = $1")
                .bind(&host.0)
                .execute(p)
                .await
                .map_err(se("uncordon a host"))?;
            Ok(())
        })
    }

    async fn list_cordons(&self) -> Result<Vec<CordonRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<(String, Ts, String)> = sqlx::query_as(
                "SELECT host, cordoned_at, cordoned_by FROM cordons ORDER BY host",
            )
            .fetch_all(p)
            .await
            .map_err(se("list cordons"))?;
            Ok(rows
                .into_iter()
                .map(|(host, at, by)| CordonRecord {
                    host: HostId(host),
                    at: at.0,
                    by,
                })
                .collect())
        })
    }

    async fn get_rollout(&self) -> Result<RolloutRecord, StoreError> {
        on!(&self.pool, p => {
            let row: Option<(Json<RolloutPolicy>, Json<RolloutState>)> =
                sqlx::query_as("SELECT policy, state FROM rollout WHERE id = 1")
                    .fetch_optional(p)
                    .await
                    .map_err(se("read the rollout policy"))?;
            Ok(row
                .map(|(policy, state)| RolloutRecord {
                    policy: policy.0,
                    state: state.0,
                })
                .unwrap_or_default())
        })
    }

    async fn put_rollout(&self, record: &RolloutRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO rollout (id, policy, state) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET policy = excluded.policy, state = excluded.state",
            )
            .bind(Json(&record.policy))
            .bind(Json(&record.state))
            .execute(p)
            .await
            .map_err(se("store the rollout policy"))?;
            Ok(())
        })
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditEntry, StoreError> {
        let mut event = event.clone();
        event.at = truncate_micros(event.at);
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("append to the audit log"))?;
            let entry = append_audit_in!(tx, event, self.audit.key()).await?;
            tx.commit().await.map_err(se("append to the audit log"))?;
            Ok(entry)
        })
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let before = query
            .before_seq
            .map(|b| to_i64(b, "audit cursor"))
            .transpose()?;
        let limit = i64::from(query.effective_limit());
        on!(&self.pool, p => {
            let mut qb = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
            if let Some(a) = &query.action {
                qb.push(" AND action = ").push_bind(a.clone());
            }
            if let Some(t) = &query.target {
                qb.push(" AND target = ").push_bind(t.clone());
            }
            if let Some(s) = query.since {
                qb.push(" AND at >= ").push_bind(Ts::new(s));
            }
            if let Some(u) = query.until {
                // `until` is exclusive: an event at 10.0000005 s is stored as 10.000000 s, so
                // compare against the truncated bound rounded up.
                let u_trunc = truncate_micros(u);
                let bound = if u_trunc == u { u } else { u_trunc + SignedDuration::from_micros(1) };
                qb.push(" AND at < ").push_bind(Ts::new(bound));
            }
            if let Some(b) = before {
                qb.push(" AND seq < ").push_bind(b);
            }
            qb.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
            let rows: Vec<AuditRow> = qb
                .build_query_as()
                .fetch_all(p)
                .await
                .map_err(se("query the audit log"))?;
            rows.into_iter().map(AuditRow::into_entry).collect()
        })
    }

    async fn verify_audit(&self) -> Result<ChainVerification, StoreError> {
        crate::audit::verify(self, true).await
    }

    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: SignedDuration,
    ) -> Result<LeaseClaim, StoreError> {
        let ttl = ttl.max(SignedDuration::ZERO);
        let now_sql = self.now_sql();
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("claim a lease"))?;
            // Lock the lease's fence row first (the row lock on PostgreSQL, the write lock on
            // SQLite): concurrent claimants of one lease queue up here.
            let (token,): (i64,) = sqlx::query_as(
                "INSERT INTO lease_fences (name, token) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET token = lease_fences.token RETURNING token",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(se("claim a lease"))?;
            // The database's clock decides expiry, never the caller's.
            let (now,): (Ts,) = sqlx::query_as(now_sql)
                .fetch_one(&mut *tx)
                .await
                .map_err(se("read the database's clock"))?;
            let current: Option<(String, Ts)> =
                sqlx::query_as("SELECT owner, held_until FROM leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(se("read a lease"))?;
            let token = match &current {
                // A renewal keeps the token (a lease from before fencing gets its first one).
                Some((o, _)) if o == owner => token.max(1),
                Some((o, until)) if until.0 > now.0 => {
                    return Ok(LeaseClaim::Held {
                        owner: o.clone(),
                        until: until.0,
                    });
                }
                // Free or expired: a new holder, a greater token.
                _ => token + 1,
            };
            let expires_at = Ts::new(now.0.saturating_add(ttl).unwrap_or(now.0));
            sqlx::query(
                "INSERT INTO leases (name, owner, held_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                 held_until = excluded.held_until",
            )
            .bind(name)
            .bind(owner)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(se("claim a lease"))?;
            sqlx::query("UPDATE lease_fences SET token = $2 WHERE name = $1")
                .bind(name)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(se("claim a lease"))?;
            tx.commit().await.map_err(se("claim a lease"))?;
            Ok(LeaseClaim::Granted(Lease {
                name: name.to_owned(),
                owner: owner.to_owned(),
                token: token as u64,
                expires_at: expires_at.0,
            }))
        })
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        // The fence row stays, with its token, so that the next holder's token is greater.
        let now_sql = self.now_sql();
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("release a lease"))?;
            let (now,): (Ts,) = sqlx::query_as(now_sql)
                .fetch_one(&mut *tx)
                .await
                .map_err(se("read the database's clock"))?;
            sqlx::query(
                "UPDATE leases SET held_until = $3 WHERE name = $1 AND owner = $2 AND held_until > $3",
            )
            .bind(name)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(se("release a lease"))?;
            tx.commit().await.map_err(se("release a lease"))?;
            Ok(())
        })
    }
}

/// Compare the newest entry of an intact chain with the recorded head.
pub(crate) fn head_mismatch(
    head: Option<(i64, String)>,
    last: &(u64, String),
) -> Option<BrokenLink> {
    let (last_seq, last_hash) = (last.0, last.1.as_str());
    let Some((head_seq, head_hash)) = head else {
        return Some(BrokenLink {
            seq: last_seq + 1,
            reason: "the recorded head of the chain is missing".into(),
        });
    };
    let head_seq = u64::try_from(head_seq).unwrap_or(0);
    if head_seq > last_seq {
        Some(BrokenLink {
            seq: last_seq + 1,
            reason: format!(
                "the chain ends at entry {last_seq} but its recorded head is entry {head_seq}: \
                 the newest entries were removed"
            ),
        })
    } else if head_seq < last_seq {
        Some(BrokenLink {
            seq: head_seq + 1,
            reason: format!(
                "entries after the recorded head {head_seq} were added outside the store"
            ),
        })
    } else if head_hash != last_hash {
        Some(BrokenLink {
            seq: last_seq,
            reason: "the newest entry does not match the recorded head's hash".into(),
        })
    } else {
        None
    }
}

fn const_format(a: &str, b: &str) -> String {
    format!("{a}{b}")
}
