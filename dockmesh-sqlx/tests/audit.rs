//! Integrity of the audit chain beyond the store tests: `verify_audit` reads one snapshot while
//! appends commit.

mod common;

use dockmesh_core::audit::{AuditEvent, MIGRATION_START};
use dockmesh_core::ports::Store;
use dockmesh_sqlx::SqlStore;
use jiff::Timestamp;
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
