//! A SQLite database is private: the directory made for it is 0700, the database, its `-wal`
//! and `-shm` and the audit key 0600, whatever the umask; a database of ours found open to
//! others is tightened when opened.

use dockmesh_sqlx::{DbTarget, OpenOptions, SqlStore};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn a_new_data_dir_and_its_database_and_key_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (store, _) = SqlStore::open_with(
        &DbTarget::sqlite_in(&data),
        &OpenOptions::in_data_dir(&data),
    )
    .await
    .unwrap();
    // The WAL and its index exist while the store is open.
    assert_eq!(mode(&data), 0o700, "the data directory");
    for f in [
        "dockmesh.db",
        "dockmesh.db-wal",
        "dockmesh.db-shm",
        "audit.key",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    store.close().await;
}

#[tokio::test]
async fn a_database_open_to_others_is_tightened_when_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let target = DbTarget::sqlite_in(&data);
    let (store, _) = SqlStore::open_with(&target, &OpenOptions::in_data_dir(&data))
        .await
        .unwrap();
    store.close().await;
    let db = data.join("dockmesh.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (store, _) = SqlStore::open_with(&target, &OpenOptions::in_data_dir(&data))
        .await
        .unwrap();
    for f in ["dockmesh.db", "dockmesh.db-wal", "dockmesh.db-shm"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    store.close().await;
}
