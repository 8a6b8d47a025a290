//! Helpers shared by the integration tests: temporary SQLite files and per-test PostgreSQL
//! databases (created from `DOCKMESH_TEST_POSTGRES_URL`, dropped afterwards).
#![allow(dead_code)]

use dockmesh_sqlx::DbTarget;
use sqlx::Connection;
use std::path::Path;

/// A SQLite database in a data directory.
pub fn sqlite_in(dir: &Path) -> DbTarget {
    DbTarget::sqlite_in(dir)
}

/// A SQLite database file.
pub fn sqlite_in_file(path: &Path) -> DbTarget {
    DbTarget::Sqlite {
        path: path.to_owned(),
    }
}

/// The admin URL of the test PostgreSQL, or `None` (with the reason printed) when it is not
/// configured. Under `DOCKMESH_REQUIRE_SERVICES=1` a missing PostgreSQL fails the test.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("DOCKMESH_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("DOCKMESH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!(
                    "{test}: DOCKMESH_TEST_POSTGRES_URL is not set but DOCKMESH_REQUIRE_SERVICES=1: \
                     start PostgreSQL with scripts/start-postgres.sh and export the URL it prints"
                );
            }
            eprintln!(
                "{test}: skipped: DOCKMESH_TEST_POSTGRES_URL is not set (run scripts/start-postgres.sh \
                 and export the URL it prints)"
            );
            None
        }
    }
}

/// A PostgreSQL database of its own for one test, dropped when this value is dropped.
pub struct PgDb {
    admin: String,
    name: String,
    /// The URL of the test's database.
    pub url: String,
}

impl PgDb {
    /// Create a fresh database, or `None` when PostgreSQL is not configured (see [`postgres_url`]).
    pub async fn create(test: &str) -> Option<PgDb> {
        let admin = postgres_url(test)?;
        let name = format!("dockmesh_t_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot connect to {admin}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{test}: cannot create a test database: {e}"));
        let _ = conn.close().await;
        let url = replace_database(&admin, &name);
        Some(PgDb { admin, name, url })
    }

    /// The database as a target.
    pub fn target(&self) -> DbTarget {
        DbTarget::parse(&self.url).unwrap()
    }
}

/// `url` with its database name replaced.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let cut = base.rfind('/').expect("a postgres URL has a path");
    let mut out = format!("{}/{}", &base[..cut], name);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// Run raw SQL on the database behind the store's back (tampering, tests of triggers).
pub async fn exec(target: &DbTarget, sql: &str) -> Result<(), sqlx::Error> {
    match target {
        DbTarget::Sqlite { path } => {
            let mut c =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
            let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await;
            c.close().await?;
            r.map(|_| ())
        }
        DbTarget::Postgres { url } => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await;
            c.close().await?;
            r.map(|_| ())
        }
    }
}
