//! The schema guard on real databases: newer, modified, gapped and half-applied databases are
//! refused untouched; pending migrations are applied in order and audited.

mod common;

use dockmesh_core::audit::{AuditQuery, SERVER_SCHEMA_MIGRATE};
use dockmesh_core::ports::{AuditLog, MigrationLog, TokenStore};
use dockmesh_core::records::{Scope, TokenUse};
use dockmesh_sqlx::{Backend, DbTarget, SchemaStatus, SqlStore, SqlStoreError};
use sqlx::Connection;
use sqlx::migrate::Migrator;
use std::path::Path;

/// The binary's schema version (its latest migration).
fn latest() -> i64 {
    dockmesh_sqlx::schema::known_migrations(Backend::Sqlite)
        .last()
        .unwrap()
        .version
}

/// The versions after `from`, up to the binary's.
fn after(from: i64) -> Vec<i64> {
    (from + 1..=latest()).collect()
}

fn migrations_dir(backend: Backend) -> &'static Path {
    match backend {
        Backend::Sqlite => Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")),
        Backend::Postgres => Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")),
    }
}

/// Run raw SQL against a target (as an operator or a newer binary would).
async fn exec(target: &DbTarget, sql: &str) {
    match target {
        DbTarget::Sqlite { path } => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
        DbTarget::Postgres { url } => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
    }
}

/// Everything observable in a database: every row of `_sqlx_migrations`, the audit log and
/// the table list, as text.
async fn fingerprint(target: &DbTarget) -> String {
    match target {
        DbTarget::Sqlite { path } => {
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let m: Vec<(i64, Vec<u8>, bool)> = sqlx::query_as(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            let t: Vec<(String,)> = sqlx::query_as("SELECT name FROM sqlite_master ORDER BY name")
                .fetch_all(&mut c)
                .await
                .unwrap();
            let a: Vec<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq")
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
            c.close().await.unwrap();
            format!("{m:?}\n{t:?}\n{a:?}")
        }
        DbTarget::Postgres { url } => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let m: Vec<(i64, Vec<u8>, bool)> = sqlx::query_as(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            let t: Vec<(String,)> = sqlx::query_as(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            let a: Vec<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq")
                    .fetch_all(&mut c)
                    .await
                    .unwrap();
            c.close().await.unwrap();
            format!("{m:?}\n{t:?}\n{a:?}")
        }
    }
}

/// A binary literal in the target's dialect.
fn blob(target: &DbTarget, hex: &str) -> String {
    match target {
        DbTarget::Sqlite { .. } => format!("X'{hex}'"),
        DbTarget::Postgres { .. } => format!("'\\x{hex}'::bytea"),
    }
}

fn file_bytes(target: &DbTarget) -> Option<Vec<u8>> {
    match target {
        DbTarget::Sqlite { path } => Some(std::fs::read(path).unwrap()),
        DbTarget::Postgres { .. } => None,
    }
}

/// Open, then make the database newer than the binary: a migration it does not know, applied
/// by "a newer dockmesh" that also declared it irreversible.
async fn newer_database_is_refused_untouched(target: DbTarget) {
    let store = SqlStore::open(&target).await.unwrap();
    store.close().await;
    exec(
        &target,
        &format!(
            "CREATE TABLE future_things (id INTEGER PRIMARY KEY);
             INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
               VALUES (99, 'future things', TRUE, {}, 1);
             INSERT INTO schema_notes (version, description, reversible, note)
               VALUES (99, 'future things', FALSE, 'rewrites every stack');",
            blob(&target, "0102")
        ),
    )
    .await;
    let before = fingerprint(&target).await;
    let bytes = file_bytes(&target);

    let err = SqlStore::open(&target)
        .await
        .expect_err("a newer database is refused");
    let msg = err.to_string();
    assert!(matches!(err, SqlStoreError::Refused(_)), "{err:?}");
    assert!(msg.contains("99"), "names the database's version: {msg}");
    assert!(
        msg.contains(&format!(" {}", latest())),
        "names the binary's version: {msg}"
    );
    assert!(
        msg.contains("not modified") || msg.contains("Nothing was changed"),
        "{msg}"
    );
    assert!(msg.contains("restore"), "says what to do: {msg}");
    assert!(
        msg.contains("rewrites every stack"),
        "names the irreversible migration: {msg}"
    );

    assert_eq!(fingerprint(&target).await, before, "nothing changed");
    assert_eq!(
        file_bytes(&target),
        bytes,
        "the database file is byte for byte the same"
    );

    let report = SqlStore::status(&target).await.unwrap();
    assert_eq!(report.database_version, 99);
    assert_eq!(report.binary_version, latest());
    assert!(report.status.is_refused());
    assert_eq!(
        report
            .irreversible_between
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>(),
        vec![99],
        "the newer database's own notes name its irreversible migration"
    );
    assert_eq!(fingerprint(&target).await, before, "status changes nothing");
}

#[tokio::test]
async fn sqlite_newer_database_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    newer_database_is_refused_untouched(common::sqlite_in(dir.path())).await;
}

#[tokio::test]
async fn postgres_newer_database_is_refused_untouched() {
    let Some(db) = common::PgDb::create("postgres_newer_database_is_refused_untouched").await
    else {
        return;
    };
    newer_database_is_refused_untouched(db.target()).await;
}

async fn modified_migration_is_refused_untouched(target: DbTarget) {
    SqlStore::open(&target).await.unwrap().close().await;
    exec(
        &target,
        &format!(
            "UPDATE _sqlx_migrations SET checksum = {} WHERE version = 2",
            blob(&target, "00112233")
        ),
    )
    .await;
    let before = fingerprint(&target).await;
    let bytes = file_bytes(&target);
    let err = SqlStore::open(&target)
        .await
        .expect_err("a modified migration is refused");
    let msg = err.to_string();
    assert!(msg.contains("migration 2"), "{msg}");
    assert!(
        msg.contains("not modified") || msg.contains("Nothing was changed"),
        "{msg}"
    );
    assert_eq!(fingerprint(&target).await, before);
    assert_eq!(file_bytes(&target), bytes);
    assert!(matches!(
        SqlStore::status(&target).await.unwrap().status,
        SchemaStatus::RefusedModified { version: 2 }
    ));
}

#[tokio::test]
async fn sqlite_modified_migration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    modified_migration_is_refused_untouched(common::sqlite_in(dir.path())).await;
}

#[tokio::test]
async fn postgres_modified_migration_is_refused() {
    let Some(db) = common::PgDb::create("postgres_modified_migration_is_refused").await else {
        return;
    };
    modified_migration_is_refused_untouched(db.target()).await;
}

#[tokio::test]
async fn gap_and_half_applied_migrations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = common::sqlite_in(dir.path());
    SqlStore::open(&target).await.unwrap().close().await;
    exec(&target, "DELETE FROM _sqlx_migrations WHERE version = 2").await;
    let err = SqlStore::open(&target).await.expect_err("a gap is refused");
    assert!(err.to_string().contains('2'), "{err}");
    assert!(matches!(
        SqlStore::status(&target).await.unwrap().status,
        SchemaStatus::RefusedGap { .. }
    ));

    let dir2 = tempfile::tempdir().unwrap();
    let target2 = common::sqlite_in(dir2.path());
    SqlStore::open(&target2).await.unwrap().close().await;
    exec(
        &target2,
        "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 3",
    )
    .await;
    let err = SqlStore::open(&target2)
        .await
        .expect_err("a half-applied migration is refused");
    assert!(err.to_string().contains("did not finish"), "{err}");
}

/// A database at version 1 (as an older dockmesh left it) is reported pending and migrated
/// forward in order, with the audit event recorded.
async fn pending_migrations_apply_in_order(target: DbTarget) {
    let migrator = Migrator::new(migrations_dir(target.backend()))
        .await
        .unwrap();
    match &target {
        DbTarget::Sqlite { path } => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            migrator.run_to(1, &mut c).await.unwrap();
            c.close().await.unwrap();
        }
        DbTarget::Postgres { url } => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            migrator.run_to(1, &mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }
    let report = SqlStore::status(&target).await.unwrap();
    assert_eq!(report.database_version, 1);
    assert_eq!(report.status, SchemaStatus::Pending { versions: after(1) });
    assert!(
        report.irreversible_between.is_empty(),
        "2 and later are reversible"
    );
    assert!(
        report
            .lines()
            .iter()
            .any(|l| l.contains(&format!("pending: 1 -> {}", latest()))),
        "{:?}",
        report.lines()
    );

    let (store, opened) = SqlStore::open_reporting(&target).await.unwrap();
    assert_eq!(
        (opened.from, opened.to, opened.applied.clone()),
        (1, latest(), after(1))
    );
    let events = store
        .query_audit(&AuditQuery {
            action: Some(SERVER_SCHEMA_MIGRATE.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "one audit event for one migration run");
    assert_eq!(events[0].event.detail["from"], "1");
    assert_eq!(events[0].event.detail["to"], latest().to_string());
    assert_eq!(
        events[0].event.detail["migrations"],
        after(1)
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(
        store.schema_report().await.unwrap().status,
        SchemaStatus::UpToDate
    );
    store.close().await;

    // Opening an up-to-date database applies nothing and records nothing.
    let (store, opened) = SqlStore::open_reporting(&target).await.unwrap();
    assert!(opened.applied.is_empty());
    let all = store
        .query_audit(&AuditQuery {
            action: Some(SERVER_SCHEMA_MIGRATE.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn sqlite_pending_migrations_apply_in_order() {
    let dir = tempfile::tempdir().unwrap();
    pending_migrations_apply_in_order(common::sqlite_in(dir.path())).await;
}

#[tokio::test]
async fn postgres_pending_migrations_apply_in_order() {
    let Some(db) = common::PgDb::create("postgres_pending_migrations_apply_in_order").await else {
        return;
    };
    pending_migrations_apply_in_order(db.target()).await;
}

#[tokio::test]
async fn status_of_a_missing_database_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let target = common::sqlite_in(dir.path());
    let report = SqlStore::status(&target).await.unwrap();
    assert_eq!(report.database_version, 0);
    assert_eq!(report.status, SchemaStatus::Pending { versions: after(0) });
    assert_eq!(
        report
            .irreversible_between
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>(),
        vec![1],
        "the first schema is declared irreversible"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no file was created"
    );
}

#[tokio::test]
async fn sqlite_database_is_wal_with_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&common::sqlite_in(dir.path()))
        .await
        .unwrap();
    store.close().await;
    let path = dir.path().join("dockmesh.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    c.close().await.unwrap();
    // Foreign keys are enforced on the store's connections: an event of an unknown migration
    // cannot be inserted behind the store's back through them either.
    let store = SqlStore::open(&common::sqlite_in(dir.path()))
        .await
        .unwrap();
    let r = store
        .append_migration_event(
            dockmesh_core::MigrationId(uuid::Uuid::from_u128(5)),
            0,
            &dockmesh_core::migration::MigrationEvent::SourceStopped {
                at: jiff::Timestamp::from_second(1).unwrap(),
            },
            &dockmesh_core::ports::Fence {
                lease: "migration:none".into(),
                token: 0,
            },
            None,
        )
        .await;
    assert!(matches!(
        r,
        Err(dockmesh_core::ports::StoreError::NotFound { .. })
    ));
    store.close().await;
}

/// Several servers sharing one PostgreSQL database open it at once: the advisory lock lets
/// one migrate it; the others find it up to date. One audit event, one set of migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_opens_migrate_once() {
    let Some(db) = common::PgDb::create("postgres_concurrent_opens_migrate_once").await else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let target = db.target();
        tasks.push(tokio::spawn(async move {
            let (store, report) = SqlStore::open_reporting(&target).await.unwrap();
            store.close().await;
            report.applied
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        applied.push(t.await.unwrap());
    }
    assert_eq!(
        applied.iter().filter(|a| !a.is_empty()).count(),
        1,
        "exactly one opener migrates: {applied:?}"
    );
    let store = SqlStore::open(&db.target()).await.unwrap();
    let events = store
        .query_audit(&AuditQuery {
            action: Some(SERVER_SCHEMA_MIGRATE.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    store.close().await;
}

/// Every path under `dir`, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
        }
    }
    out.sort();
    out
}

/// A newer database in rollback-journal mode is refused without a single write: its journal
/// mode is not switched to WAL, no `-wal`/`-shm` files appear, no directory is created.
#[tokio::test]
async fn sqlite_newer_database_in_rollback_journal_mode_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dockmesh.db");
    let target = common::sqlite_in_file(&path);
    SqlStore::open(&target).await.unwrap().close().await;
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
               VALUES (99, 'future things', TRUE, X'0102', 1);",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    // Bytes 18 and 19 of the header: 1 = rollback journal, 2 = WAL.
    assert_eq!(
        (bytes[18], bytes[19]),
        (1, 1),
        "the test database is not in WAL mode"
    );
    let before = tree(dir.path());
    assert_eq!(
        before,
        vec!["audit.key".to_owned(), "dockmesh.db".to_owned()]
    );

    let err = SqlStore::open(&target)
        .await
        .expect_err("a newer database is refused");
    assert!(matches!(err, SqlStoreError::Refused(_)), "{err:?}");

    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the file is byte for byte the same"
    );
    assert_eq!(
        tree(dir.path()),
        before,
        "no -wal, -shm, journal or directory appeared"
    );
}

/// A database at version 7 (before token scopes) with an API token and an enrollment token:
/// migrating it makes the API token `admin` (it keeps the power it had) and the enrollment
/// token `read`; tokens made afterwards keep the scope they are given.
async fn tokens_get_scopes_when_migrated(target: DbTarget) {
    let migrator = Migrator::new(migrations_dir(target.backend()))
        .await
        .unwrap();
    match &target {
        DbTarget::Sqlite { path } => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true);
            let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            migrator.run_to(7, &mut c).await.unwrap();
            c.close().await.unwrap();
        }
        DbTarget::Postgres { url } => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            migrator.run_to(7, &mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }
    let ts = match target.backend() {
        Backend::Sqlite => "'2026-01-01T00:00:00.000000Z'",
        Backend::Postgres => "'2026-01-01T00:00:00Z'",
    };
    exec(
        &target,
        &format!(
            "INSERT INTO tokens (hash, kind, name, created_at, expires_at, one_time, used_at) VALUES \
             ('old-api', 'api', 'ci', {ts}, NULL, FALSE, NULL), \
             ('old-enroll', 'enrollment', 'new host', {ts}, NULL, TRUE, NULL)"
        ),
    )
    .await;
    let (store, opened) = SqlStore::open_reporting(&target).await.unwrap();
    assert_eq!((opened.from, opened.to), (7, latest()));
    let scopes: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.hash, t.scope))
        .collect();
    assert_eq!(
        scopes,
        [
            ("old-api".to_owned(), Scope::Admin),
            ("old-enroll".to_owned(), Scope::Read)
        ]
    );
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let mut fresh = store.list_tokens().await.unwrap()[0].clone();
    fresh.hash = "new-read".into();
    fresh.scope = Scope::Read;
    store.put_token(&fresh).await.unwrap();
    match store.use_token("new-read", now).await.unwrap() {
        TokenUse::Accepted { token } => assert_eq!(token.scope, Scope::Read),
        other => panic!("the new token is accepted, got {other:?}"),
    }
    store.delete_token("new-read").await.unwrap();
    assert_eq!(
        store.use_token("new-read", now).await.unwrap(),
        TokenUse::Unknown
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_tokens_get_scopes_when_migrated() {
    let dir = tempfile::tempdir().unwrap();
    tokens_get_scopes_when_migrated(common::sqlite_in(dir.path())).await;
}

#[tokio::test]
async fn postgres_tokens_get_scopes_when_migrated() {
    let Some(db) = common::PgDb::create("postgres_tokens_get_scopes_when_migrated").await else {
        return;
    };
    tokens_get_scopes_when_migrated(db.target()).await;
}
