//! The core `Store` conformance suite against SQLite and a real PostgreSQL.

mod common;

use dockmesh_core::testing::store_conformance;
use dockmesh_sqlx::SqlStore;

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&common::sqlite_in(dir.path()))
        .await
        .unwrap();
    store_conformance(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = common::PgDb::create("postgres_store_conforms").await else {
        return;
    };
    let store = SqlStore::open(&db.target()).await.unwrap();
    store_conformance(&store).await;
    store.close().await;
}
