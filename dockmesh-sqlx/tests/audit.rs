//! Integrity of the audit chain beyond the store tests: `verify_audit` reads one snapshot while
//! appends commit; `TRUNCATE` is refused; a chain cut at its tail with its head moved back is
//! found through the keyed anchor; a missing key is reported, not passed.

mod common;

use dockmesh_core::audit::{AuditEvent, MIGRATION_START};
use dockmesh_core::ports::AuditLog;
use dockmesh_sqlx::{AUDIT_KEY_FILE_NAME, DbTarget, OpenOptions, SqlStore};
use jiff::Timestamp;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// Verification in a loop while another task appends never reports a break: the head and the
/// rows are read in one snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_during_appends_sees_one_snapshot() {
    let Some(db) = common::PgDb::create("postgres_verify_during_appends_sees_one_snapshot").await
    else {
        return;
    };
    let store = Arc::new(SqlStore::open(&db.target()).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                store
                    .append_audit(&AuditEvent::new(
                        t(i),
                        "alice",
                        MIGRATION_START,
                        format!("s{i}"),
                    ))
                    .await
                    .unwrap();
                i += 1;
            }
            i
        })
    };
    let mut checks = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        let v = store.verify_audit().await.unwrap();
        assert_eq!(v.first_broken, None, "after {checks} clean checks: {v:?}");
        checks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let appended = writer.await.unwrap();
    assert!(
        appended > 20 && checks > 5,
        "{appended} appends, {checks} checks"
    );
    store.close().await;
}

async fn open(target: &DbTarget, data_dir: &Path) -> SqlStore {
    SqlStore::open_with(target, &OpenOptions::for_target(target, Some(data_dir)))
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn postgres_truncate_of_the_audit_log_is_refused() {
    let Some(db) = common::PgDb::create("postgres_truncate_of_the_audit_log_is_refused").await
    else {
        return;
    };
    let store = SqlStore::open(&db.target()).await.unwrap();
    store
        .append_audit(&AuditEvent::new(t(0), "alice", MIGRATION_START, "s"))
        .await
        .unwrap();
    let before = store.verify_audit().await.unwrap();
    store.close().await;
    let err = common::exec(&db.target(), "TRUNCATE audit_log")
        .await
        .expect_err("TRUNCATE is refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let store = SqlStore::open(&db.target()).await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap(), before);
    store.close().await;
}

/// Someone with database access only (not the key file) drops the guards, removes the newest
/// entries and moves the head back to the new last entry: chain and head agree, the anchor
/// does not.
async fn a_rewound_head_is_found(target: DbTarget, data_dir: &Path) {
    let store = open(&target, data_dir).await;
    for i in 0..6 {
        store
            .append_audit(&AuditEvent::new(
                t(i),
                "alice",
                MIGRATION_START,
                format!("s{i}"),
            ))
            .await
            .unwrap();
    }
    let n = store.verify_audit().await.unwrap().entries_checked;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
    store.close().await;
    let key = data_dir.join(AUDIT_KEY_FILE_NAME);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is the owner's only");
    }
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);

    let drop_guard = match &target {
        DbTarget::Sqlite { .. } => "DROP TRIGGER audit_log_no_delete;",
        DbTarget::Postgres { .. } => "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;",
    };
    common::exec(&target, drop_guard).await.unwrap();
    common::exec(
        &target,
        &format!(
            "DELETE FROM audit_log WHERE seq > {keep};
             UPDATE audit_head SET seq = {keep},
               hash = (SELECT hash FROM audit_log WHERE seq = {keep}) WHERE id = 1;",
            keep = n - 2
        ),
    )
    .await
    .unwrap();
    let store = open(&target, data_dir).await;
    let v = store.verify_audit().await.unwrap();
    let b = v.first_broken.expect("a rewound head is found");
    assert_eq!(b.seq, n - 1, "{b:?}");
    assert!(b.reason.contains("anchor"), "{b:?}");
    assert!(
        b.reason.contains(&format!("entry {n}")),
        "names where it was: {b:?}"
    );
    store.close().await;

    // Also replacing the anchor's MAC with any other value is found.
    common::exec(
        &target,
        &format!(
            "UPDATE audit_anchor SET seq = {}, mac = '{}' WHERE id = 1",
            n - 2,
            "ab".repeat(32)
        ),
    )
    .await
    .unwrap();
    let store = open(&target, data_dir).await;
    let b = store
        .verify_audit()
        .await
        .unwrap()
        .first_broken
        .expect("a forged anchor is found");
    assert!(b.reason.contains("does not match"), "{b:?}");
    store.close().await;

    // Removing the anchor is found too.
    common::exec(&target, "DELETE FROM audit_anchor")
        .await
        .unwrap();
    let store = open(&target, data_dir).await;
    let b = store
        .verify_audit()
        .await
        .unwrap()
        .first_broken
        .expect("a removed anchor is found");
    assert!(b.reason.contains("no anchor"), "{b:?}");
    store.close().await;
}

#[tokio::test]
async fn sqlite_a_rewound_head_is_found() {
    let dir = tempfile::tempdir().unwrap();
    a_rewound_head_is_found(common::sqlite_in(dir.path()), dir.path()).await;
}

#[tokio::test]
async fn postgres_a_rewound_head_is_found() {
    let Some(db) = common::PgDb::create("postgres_a_rewound_head_is_found").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    a_rewound_head_is_found(db.target(), dir.path()).await;
}

/// A deleted key file is not silently replaced: the anchor is reported as unverifiable, and
/// the chain verifies again once the key is put back.
#[tokio::test]
async fn sqlite_a_missing_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let target = common::sqlite_in(dir.path());
    let store = SqlStore::open(&target).await.unwrap();
    store
        .append_audit(&AuditEvent::new(t(0), "alice", MIGRATION_START, "s"))
        .await
        .unwrap();
    store.close().await;
    let key = dir.path().join(AUDIT_KEY_FILE_NAME);
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();

    let store = SqlStore::open(&target).await.unwrap();
    let b = store
        .verify_audit()
        .await
        .unwrap()
        .first_broken
        .expect("an unverifiable anchor is reported");
    assert!(
        b.reason.contains("missing") && b.reason.contains(AUDIT_KEY_FILE_NAME),
        "{b:?}"
    );
    store.close().await;
    assert!(!key.exists(), "no new key replaces the lost one");

    std::fs::write(&key, &saved).unwrap();
    let store = SqlStore::open(&target).await.unwrap();
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
    store.close().await;

    // A damaged key file is refused on open, naming the file.
    std::fs::write(&key, b"short").unwrap();
    let err = SqlStore::open(&target)
        .await
        .expect_err("a damaged key is refused");
    assert!(err.to_string().contains(AUDIT_KEY_FILE_NAME), "{err}");
    assert!(err.hint().is_some());
}

/// A key that was once published (committed in a source tree) is refused on open, naming the
/// file and saying why, and the database is not opened; a fresh key works.
#[tokio::test]
async fn sqlite_a_published_key_is_refused() {
    let published =
        hex::decode("4c4e9a37467496593d831dd01c0022cc8128471aef738f5caeae457c204f7900").unwrap();
    assert!(dockmesh_sqlx::is_published_audit_key(&published));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join(AUDIT_KEY_FILE_NAME);
    std::fs::write(&key, &published).unwrap();
    let target = common::sqlite_in(dir.path());
    let err = SqlStore::open(&target)
        .await
        .expect_err("a published key is refused");
    let text = err.to_string();
    assert!(
        text.contains(AUDIT_KEY_FILE_NAME) && text.contains("published"),
        "{text}"
    );
    assert!(
        err.hint().unwrap().contains("move the file away"),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        published,
        "the file is left as it was"
    );

    std::fs::remove_file(&key).unwrap();
    let store = SqlStore::open(&target).await.unwrap();
    store.close().await;
    let fresh = std::fs::read(&key).unwrap();
    assert_eq!(fresh.len(), 32);
    assert!(!dockmesh_sqlx::is_published_audit_key(&fresh));
}
