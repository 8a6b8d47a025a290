//! [`SqlStore`]: the [`Store`](dockmesh_core::ports::Store) port on SQLite and PostgreSQL.
//!
//! Opening is here; connecting and migrating in `open`; the mapping of rows to records in
//! `rows`; one file per focused store trait (`agents`, `tokens`, `stacks`, `migrations`,
//! `drains`, `rollout`, `audit`, `leases`).
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
    AgentStore, AuditLog, DeployEntry, DrainStore, Fence, Lease, LeaseClaim, LeaseStore,
    MigrationLog, MigrationQuery, PageQuery, RolloutStore, StackStore, StoreError, TokenStore,
    page_size,
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

/// Store a release, its stack's record and its deploy entry through the transaction `$tx`:
/// the release's revision must be the stack's next ([`StackStore::put_release`]'s rules).
/// Returns from the enclosing function with the error when it is not.
macro_rules! put_release_in {
    ($tx:ident, $release:expr, $stack:expr, $deploy:expr) => {{
        let release: &ReleaseRecord = $release;
        let stack: &StackRecord = $stack;
        let deploy: Option<&DeployRecord> = $deploy;
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
        let newest: (Option<i64>,) =
            sqlx::query_as("SELECT MAX(rev) FROM releases WHERE stack = $1")
                .bind(&release.stack)
                .fetch_one(&mut *$tx)
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
        .execute(&mut *$tx)
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
        .execute(&mut *$tx)
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
            .execute(&mut *$tx)
            .await
            .map_err(se("append to a stack's deploy history"))?;
        }
    }};
}

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

/// The dockmesh [`Store`](dockmesh_core::ports::Store) on SQLite or PostgreSQL.
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

mod agents;
mod audit;
mod drains;
mod leases;
mod migrations;
mod open;
mod rollout;
mod rows;
mod stack_upgrades;
mod stacks;
mod tokens;

pub(crate) use audit::head_mismatch;
use open::read_err;
pub(crate) use open::{connect, inspect, read_state, sqlite_inspect_options, sqlite_options};
pub(crate) use rows::{AUDIT_COLUMNS, AuditRow};

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

fn const_format(a: &str, b: &str) -> String {
    format!("{a}{b}")
}
