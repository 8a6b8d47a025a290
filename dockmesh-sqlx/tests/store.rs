//! Promises of the SQL store beyond the core conformance suite, on SQLite and PostgreSQL:
//! migration logs survive a reopen and replay to the same state, leases are taken over only
//! after expiry and by one claimant, the audit log is append-only and tampering (including
//! removing the newest entries) is found, concurrent writers cannot fork the chain or spend a
//! one-time token twice.

mod common;

use dockmesh_core::audit::{AuditEvent, AuditQuery, MIGRATION_START};
use dockmesh_core::migration::{
    DEFAULT_RETENTION, Driver, Migration, MigrationRequest, Phase, StoredMigration,
};
use dockmesh_core::migration::{DriveError, MigrationEvent};
use dockmesh_core::ports::{
    AuditLog, Clock, LeaseClaim, LeaseStore, MigrationLog, MigrationQuery, StackStore, TokenStore,
    migration_lease,
};
use dockmesh_core::records::{StackRecord, TokenKind, TokenRecord, TokenUse};
use dockmesh_core::testing::{FakeFleet, FakeHost, FixedClock, SeqIds};
use dockmesh_core::{HostId, StackFiles};
use dockmesh_sqlx::{DbTarget, SqlStore};
use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// Run the same check on SQLite and (when configured) PostgreSQL.
macro_rules! on_both {
    ($sqlite:ident, $postgres:ident, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $check(common::sqlite_in(dir.path())).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $postgres() {
            let Some(db) = common::PgDb::create(stringify!($postgres)).await else {
                return;
            };
            $check(db.target()).await;
        }
    };
}

fn fleet_with_stack() -> (Arc<FakeFleet>, StackFiles) {
    let fleet = Arc::new(FakeFleet::new());
    let files = StackFiles {
        name: "shop".into(),
        compose: "services:\n  web:\n    image: shop:1\n".into(),
        env: Some("A=1\n".into()),
    };
    let source = Arc::new(FakeHost::new("edge-1"));
    source.seed_stack(
        files.clone(),
        &[("shop_db", b"orders and customers")],
        256 << 20,
    );
    fleet.add(source);
    fleet.add(Arc::new(FakeHost::new("edge-2")));
    (fleet, files)
}

/// Drive a migration part way, "crash", reopen the database, and finish it: the log survives
/// the reopen, replays to the same state, and the migration completes from where it stood.
async fn migration_log_survives_reopen(target: DbTarget) {
    let (fleet, files) = fleet_with_stack();
    let clock = Arc::new(FixedClock::new(t(0)));
    let ids = Arc::new(SeqIds::default());
    let store = Arc::new(SqlStore::open(&target).await.unwrap());
    store
        .put_stack(
            &StackRecord {
                name: files.name.clone(),
                compose: files.compose.clone(),
                env: files.env.clone(),
                host: Some(HostId::from("edge-1")),
                updated_at: clock.now(),
            },
            None,
        )
        .await
        .unwrap();
    let driver = Driver::new(store.clone(), fleet.clone(), clock.clone(), ids.clone())
        .with_lease_ttl(SignedDuration::ZERO);
    let id = driver
        .start(MigrationRequest {
            stack: "shop".into(),
            target: HostId::from("edge-2"),
            by: "alice".into(),
            retention: DEFAULT_RETENTION,
        })
        .await
        .unwrap();
    let lease = driver.claim(&migration_lease(id)).await.unwrap();
    let mut m = driver.load(id).await.unwrap();
    for _ in 0..3 {
        clock.advance(SignedDuration::from_secs(1));
        driver.step(&mut m, &lease).await.unwrap();
    }
    let before: StoredMigration = store.load_migration(id).await.unwrap().unwrap();
    assert!(before.events.len() >= 3, "{before:?}");
    store.close().await;
    drop(driver);
    drop(store);

    // A new process: reopen and replay.
    let store = Arc::new(SqlStore::open(&target).await.unwrap());
    let after = store.load_migration(id).await.unwrap().unwrap();
    assert_eq!(after, before, "the event log survives a reopen unchanged");
    let replayed = Migration::replay(after.spec.clone(), &after.events).unwrap();
    assert_eq!(
        replayed,
        Migration::replay(before.spec.clone(), &before.events).unwrap(),
        "and replays to the same state"
    );
    assert_eq!(replayed.event_count(), before.events.len() as u64);
    assert_eq!(
        store.list_migrations(&active()).await.unwrap(),
        vec![after.clone()]
    );

    let driver = Driver::new(store.clone(), fleet.clone(), clock.clone(), ids);
    let done = driver.run(id).await.unwrap();
    assert_eq!(done.phase(), Phase::Committed);
    assert!(
        store.list_migrations(&active()).await.unwrap().is_empty(),
        "committed is not active"
    );
    let stored = store.load_migration(id).await.unwrap().unwrap();
    assert_eq!(
        Migration::replay(stored.spec.clone(), &stored.events).unwrap(),
        done
    );
    let rolled = driver.rollback(id, "alice").await.unwrap();
    store.close().await;
    let store = SqlStore::open(&target).await.unwrap();
    let stored = store.load_migration(id).await.unwrap().unwrap();
    assert_eq!(
        Migration::replay(stored.spec.clone(), &stored.events).unwrap(),
        rolled
    );
    assert_eq!(
        store.get_stack("shop").await.unwrap().unwrap().host,
        Some(HostId::from("edge-1")),
        "rolled back to the source"
    );
    let starts = store
        .query_audit(&AuditQuery {
            action: Some(MIGRATION_START.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(starts.len(), 1);
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
    store.close().await;
}

on_both!(
    sqlite_migration_log_survives_reopen,
    postgres_migration_log_survives_reopen,
    migration_log_survives_reopen
);

fn active() -> MigrationQuery {
    MigrationQuery {
        active_only: true,
        ..Default::default()
    }
}

async fn leases(target: DbTarget) {
    let store = SqlStore::open(&target).await.unwrap();
    let hour = SignedDuration::from_hours(1);
    let before = Timestamp::now();
    let LeaseClaim::Granted(a) = store.claim_lease("rollout", "a", hour).await.unwrap() else {
        panic!("a free lease is granted");
    };
    // The database's clock sets the expiry (it is this machine's clock here, so the two agree
    // to within the test's run time).
    assert!(
        a.expires_at >= before + hour - SignedDuration::from_secs(5),
        "{a:?}"
    );
    assert!(
        a.expires_at <= Timestamp::now() + hour + SignedDuration::from_secs(5),
        "{a:?}"
    );
    assert_eq!(
        store.lease("rollout").await.unwrap(),
        Some(("a".into(), a.expires_at))
    );
    assert!(matches!(
        store.claim_lease("rollout", "b", hour).await.unwrap(),
        LeaseClaim::Held { owner, .. } if owner == "a"
    ));
    // Renewed for no time: it has expired by the database's clock, and many claimants of it
    // at once see exactly one winner, with the next token.
    let LeaseClaim::Granted(a0) = store
        .claim_lease("rollout", "a", SignedDuration::ZERO)
        .await
        .unwrap()
    else {
        panic!("renew");
    };
    assert_eq!(a0.token, a.token);
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.claim_lease("rollout", &format!("p{i}"), hour)
                .await
                .unwrap()
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        if let LeaseClaim::Granted(l) = task.await.unwrap() {
            winners.push(l);
        }
    }
    assert_eq!(winners.len(), 1, "one claimant takes an expired lease");
    assert_eq!(winners[0].token, a.token + 1, "with a greater token");
    store.release_lease("rollout", "a").await.unwrap();
    assert_eq!(
        store.lease("rollout").await.unwrap().map(|l| l.0),
        Some(winners[0].owner.clone()),
        "only the holder releases"
    );
    store.close().await;
}

/// Two drivers on one migration: while one holds the lease the other is refused; when the
/// lease passed to the other (the first stalled past its ttl), the first is fenced and writes
/// nothing; the log stays consistent and replays.
async fn two_drivers_on_one_migration(target: DbTarget) {
    let (fleet, files) = fleet_with_stack();
    let clock = Arc::new(FixedClock::new(t(0)));
    let ids = Arc::new(SeqIds::default());
    let store = Arc::new(SqlStore::open(&target).await.unwrap());
    store
        .put_stack(
            &StackRecord {
                name: files.name.clone(),
                compose: files.compose.clone(),
                env: files.env.clone(),
                host: Some(HostId::from("edge-1")),
                updated_at: clock.now(),
            },
            None,
        )
        .await
        .unwrap();
    let driver = |owner: &str, ttl: SignedDuration| {
        Driver::new(store.clone(), fleet.clone(), clock.clone(), ids.clone())
            .with_owner(owner)
            .with_lease_ttl(ttl)
    };
    let a = driver("server-a", SignedDuration::from_hours(1));
    let id = a
        .start(MigrationRequest {
            stack: "shop".into(),
            target: HostId::from("edge-2"),
            by: "alice".into(),
            retention: DEFAULT_RETENTION,
        })
        .await
        .unwrap();
    let lease_a = a.claim(&migration_lease(id)).await.unwrap();
    let mut m = a.load(id).await.unwrap();
    assert!(a.step(&mut m, &lease_a).await.unwrap());
    let b = driver("server-b", SignedDuration::from_hours(1));
    let err = b.run(id).await.unwrap_err();
    assert!(
        matches!(&err, DriveError::Busy { owner, .. } if owner == "server-a"),
        "{err}"
    );
    assert_eq!(
        store
            .load_migration(id)
            .await
            .unwrap()
            .unwrap()
            .events
            .len(),
        1
    );

    // A's lease runs out on the database's clock; B takes over and finishes.
    let a_short = driver("server-a", SignedDuration::ZERO);
    a_short.claim(&migration_lease(id)).await.unwrap();
    let done = b.run(id).await.unwrap();
    assert_eq!(done.phase(), Phase::Committed);
    let log = store.load_migration(id).await.unwrap().unwrap();

    // A wakes up with its stale state and token: fenced, nothing written.
    let err = a.step(&mut m, &lease_a).await.unwrap_err();
    assert!(matches!(err, DriveError::Fenced { .. }), "{err}");
    let mut stale = Migration::replay(log.spec.clone(), &log.events[..3]).unwrap();
    let err = a.step(&mut stale, &lease_a).await.unwrap_err();
    assert!(matches!(err, DriveError::Fenced { .. }), "{err}");
    let after = store.load_migration(id).await.unwrap().unwrap();
    assert_eq!(after, log, "the fenced driver wrote nothing");
    let first_len = after.events.len();
    assert_eq!(Migration::replay(after.spec, &after.events).unwrap(), done);

    // Many drivers racing to drive one migration: each either drives it or is told who does;
    // no event is written twice.
    fleet.add(Arc::new(FakeHost::new("edge-3")));
    let id = b
        .start(MigrationRequest {
            stack: "shop".into(),
            target: HostId::from("edge-3"),
            by: "alice".into(),
            retention: DEFAULT_RETENTION,
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let d = driver(&format!("racer-{i}"), SignedDuration::from_hours(1));
        tasks.push(tokio::spawn(async move { d.run(id).await }));
    }
    let mut committed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(m) => {
                assert_eq!(m.phase(), Phase::Committed);
                committed += 1;
            }
            Err(DriveError::Busy { .. }) => {}
            Err(e) => panic!("a racer failed: {e}"),
        }
    }
    assert!(committed >= 1, "someone drove it");
    let log = store.load_migration(id).await.unwrap().unwrap();
    let m = Migration::replay(log.spec.clone(), &log.events).unwrap();
    assert_eq!(m.phase(), Phase::Committed);
    // One driver alone writes each fact once: (kind, volume) never repeats.
    let keys: Vec<String> = log
        .events
        .iter()
        .map(|e| match e {
            MigrationEvent::VolumeTransferStarted { volume, .. }
            | MigrationEvent::VolumeVerified { volume, .. } => format!("{} {volume}", e.kind()),
            _ => e.kind().to_owned(),
        })
        .collect();
    let unique: std::collections::BTreeSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no event written twice: {keys:?}");
    assert!(log.events.len() >= first_len, "{keys:?}");
    store.close().await;
}

on_both!(
    sqlite_two_drivers_on_one_migration,
    postgres_two_drivers_on_one_migration,
    two_drivers_on_one_migration
);

on_both!(sqlite_leases, postgres_leases, leases);

async fn audit_is_append_only_and_tamper_evident(target: DbTarget) {
    let store = SqlStore::open(&target).await.unwrap();
    let base = store.verify_audit().await.unwrap().entries_checked;
    for i in 0..6 {
        store
            .append_audit(
                &AuditEvent::new(t(i), "alice", MIGRATION_START, format!("s{i}"))
                    .with("i", i.to_string()),
            )
            .await
            .unwrap();
    }
    let n = base + 6;
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
    store.close().await;

    assert!(
        common::exec(&target, "UPDATE audit_log SET target = 'x' WHERE seq = 2")
            .await
            .is_err(),
        "the database refuses to change an audit entry"
    );
    assert!(
        common::exec(&target, "DELETE FROM audit_log WHERE seq = 2")
            .await
            .is_err(),
        "the database refuses to delete an audit entry"
    );

    // Someone with enough rights to drop the guard edits and removes entries: verify finds it.
    let (drop_guard, restore_guard) = match &target {
        DbTarget::Sqlite { .. } => (
            "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;",
            "",
        ),
        DbTarget::Postgres { .. } => (
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change;",
            "",
        ),
    };
    let _ = restore_guard;
    common::exec(&target, drop_guard).await.unwrap();

    common::exec(&target, &format!("DELETE FROM audit_log WHERE seq = {n}"))
        .await
        .unwrap();
    let store = SqlStore::open(&target).await.unwrap();
    let v = store.verify_audit().await.unwrap();
    let b = v.first_broken.expect("removing the newest entry is found");
    assert_eq!(b.seq, n, "{b:?}");
    assert!(b.reason.contains("removed"), "{b:?}");
    store.close().await;

    common::exec(
        &target,
        &format!("DELETE FROM audit_log WHERE seq = {}", n - 3),
    )
    .await
    .unwrap();
    let store = SqlStore::open(&target).await.unwrap();
    let b = store
        .verify_audit()
        .await
        .unwrap()
        .first_broken
        .expect("a removed entry is found");
    assert_eq!(
        b.seq,
        n - 2,
        "the break is at the entry after the removed one: {b:?}"
    );
    store.close().await;

    common::exec(
        &target,
        &format!(
            "UPDATE audit_log SET actor = 'mallory' WHERE seq = {}",
            base + 2
        ),
    )
    .await
    .unwrap();
    let store = SqlStore::open(&target).await.unwrap();
    let v = store.verify_audit().await.unwrap();
    let b = v.first_broken.expect("an altered entry is found");
    assert_eq!(b.seq, base + 2, "{b:?}");
    assert_eq!(v.entries_checked, base + 2);
    store.close().await;
}

on_both!(
    sqlite_audit_is_append_only_and_tamper_evident,
    postgres_audit_is_append_only_and_tamper_evident,
    audit_is_append_only_and_tamper_evident
);

async fn concurrent_writers(target: DbTarget) {
    let store = Arc::new(SqlStore::open(&target).await.unwrap());
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.append_audit(&AuditEvent::new(
                    t(i),
                    format!("w{w}"),
                    MIGRATION_START,
                    "x",
                ))
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, None, "concurrent appends keep one chain");
    assert_eq!(
        v.entries_checked, 101,
        "100 entries and the schema migration"
    );

    store
        .put_token(&TokenRecord {
            hash: "once".into(),
            kind: TokenKind::Enrollment,
            name: "new host".into(),
            created_at: t(0),
            expires_at: Some(t(1000)),
            one_time: true,
            used_at: None,
            scope: dockmesh_core::records::Scope::Read,
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.use_token("once", t(5)).await.unwrap()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            TokenUse::Accepted { .. } => accepted += 1,
            TokenUse::AlreadyUsed => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        accepted, 1,
        "a one-time token is spent once, however many present it at once"
    );
    store.close().await;
}

on_both!(
    sqlite_concurrent_writers,
    postgres_concurrent_writers,
    concurrent_writers
);

async fn timestamps_keep_microseconds(target: DbTarget) {
    let store = SqlStore::open(&target).await.unwrap();
    let precise = Timestamp::from_nanosecond(1_800_000_000_123_456_789).unwrap();
    let stack = StackRecord {
        name: "web".into(),
        compose: "x".into(),
        env: None,
        host: None,
        updated_at: precise,
    };
    store.put_stack(&stack, None).await.unwrap();
    let back = store.get_stack("web").await.unwrap().unwrap();
    assert_eq!(back.updated_at.as_nanosecond(), 1_800_000_000_123_456_000);
    let mut ev = AuditEvent::new(precise, "a", MIGRATION_START, "web");
    ev.at = precise; // bypass the constructor's truncation
    let entry = store.append_audit(&ev).await.unwrap();
    assert_eq!(entry.event.at.as_nanosecond(), 1_800_000_000_123_456_000);
    let q = store
        .query_audit(&AuditQuery {
            target: Some("web".into()),
            since: Some(precise),
            until: Some(precise + SignedDuration::from_nanos(1)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        q,
        vec![entry],
        "range bounds compare at the stored precision"
    );
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
    store.close().await;
}

on_both!(
    sqlite_timestamps_keep_microseconds,
    postgres_timestamps_keep_microseconds,
    timestamps_keep_microseconds
);

async fn batch_append_continues_the_chain(target: DbTarget) {
    let store = SqlStore::open(&target).await.unwrap();
    let first = store
        .append_audit(&AuditEvent::new(t(0), "a", MIGRATION_START, "x"))
        .await
        .unwrap();
    let events: Vec<AuditEvent> = (0..1200)
        .map(|i| {
            AuditEvent::new(t(i), "b", MIGRATION_START, format!("s{i}")).with("i", i.to_string())
        })
        .collect();
    let batch = store.append_audit_batch(&events).await.unwrap();
    assert_eq!(batch.len(), 1200);
    assert_eq!(batch[0].prev_hash, first.hash);
    assert_eq!(batch[0].seq, first.seq + 1);
    let last = store
        .append_audit(&AuditEvent::new(t(2000), "c", MIGRATION_START, "y"))
        .await
        .unwrap();
    assert_eq!(last.prev_hash, batch[1199].hash);
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, None);
    assert_eq!(v.entries_checked, last.seq);
    let page = store
        .query_audit(&AuditQuery {
            before_seq: Some(last.seq),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page,
        vec![
            batch[1199].clone(),
            batch[1198].clone(),
            batch[1197].clone()
        ]
    );
    store.close().await;
}

on_both!(
    sqlite_batch_append_continues_the_chain,
    postgres_batch_append_continues_the_chain,
    batch_append_continues_the_chain
);
