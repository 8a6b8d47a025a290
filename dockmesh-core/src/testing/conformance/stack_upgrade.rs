//! The conformance suite of [`StackUpgradeLog`].

use crate::audit::STACK_DEPLOY;
use crate::ports::{AuditLog, StackStore, StackUpgradeLog, StoreError};
use crate::records::StackRecord;
use crate::release::ReleaseOutcome;
use crate::snapshot::VolumeUsage;
use crate::stack_upgrade::{BackupCopy, StackUpgradeRun};
use crate::types::{HostId, StackFiles};
use jiff::Timestamp;
use std::collections::BTreeMap;

fn t(s: i64) -> Timestamp {
    // Sub-second precision: a stored run must come back exactly.
    Timestamp::from_second(1_800_000_000 + s)
        .and_then(|t| t.checked_add(jiff::SignedDuration::from_micros(123_456)))
        .expect("valid timestamp")
}

fn files(name: &str, compose: &str) -> StackFiles {
    StackFiles {
        name: name.into(),
        compose: compose.into(),
        env: Some(format!("TAG={compose}\n")),
    }
}

fn run(name: &str, rev: u64) -> StackUpgradeRun {
    let volume = VolumeUsage {
        name: format!("{name}_db"),
        bytes: Some(4096),
        labels: BTreeMap::from([("com.docker.compose.project".to_owned(), name.to_owned())]),
    };
    StackUpgradeRun::start(
        name,
        rev,
        HostId::from("h1"),
        files(name, "v1"),
        files(name, "v2"),
        BTreeMap::from([("web".to_owned(), "sha256:2".to_owned())]),
        vec![volume],
        "alice",
        "upgrade",
        None,
        t(1),
    )
}

fn record(name: &str) -> StackRecord {
    StackRecord {
        name: name.into(),
        compose: "v1".into(),
        env: Some("TAG=v1\n".into()),
        host: Some(HostId::from("h1")),
        updated_at: t(0),
    }
}

async fn audit_count<S: AuditLog + ?Sized>(store: &S) -> u64 {
    store.verify_audit().await.unwrap().entries_checked
}

/// Check every promise of [`StackUpgradeLog`] (with the [`StackStore`] and [`AuditLog`] of the
/// same store, which a settlement writes to). `store` must hold no stack named
/// `upgrading-shop`, `upgrading-blog` or `upgrading-wiki`, and no unfinished stack upgrade.
pub async fn stack_upgrade_log_conformance<S>(store: &S)
where
    S: StackUpgradeLog + StackStore + AuditLog + ?Sized,
{
    let (shop, blog, wiki) = ("upgrading-shop", "upgrading-blog", "upgrading-wiki");
    assert_eq!(store.unfinished_stack_upgrades().await.unwrap(), vec![]);
    store.put_stack(&record(shop), None).await.unwrap();
    store.put_stack(&record(blog), None).await.unwrap();

    // A run is stored as given; a second run of the same stack is refused and changes nothing.
    let first = run(shop, 1);
    store.begin_stack_upgrade(&first).await.unwrap();
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![first.clone()]
    );
    let again = store.begin_stack_upgrade(&run(shop, 2)).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict { .. }), "{again:?}");
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![first.clone()]
    );

    // Each stage replaces the stored run, exactly.
    let backed_up = first
        .clone()
        .backed_up(vec![BackupCopy {
            volume: first.backup[0].clone(),
            copy: "upgrading-shop_db-backup-r1".into(),
            digest: "ab".repeat(32),
        }])
        .unwrap();
    store.save_stack_upgrade(&backed_up).await.unwrap();
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![backed_up.clone()]
    );
    let failed = backed_up
        .deploy_ended(Err("web: unhealthy".into()))
        .unwrap();
    store.save_stack_upgrade(&failed).await.unwrap();
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![failed.clone()]
    );

    // Saving a run that is not stored (another stack, another revision) is refused.
    let e = store.save_stack_upgrade(&run(wiki, 1)).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    let e = store.save_stack_upgrade(&run(shop, 7)).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![failed.clone()]
    );

    // Two stacks' runs are stored side by side, by stack name.
    let other = run(blog, 1);
    store.begin_stack_upgrade(&other).await.unwrap();
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![other.clone(), failed.clone()]
    );

    // A run that is not over yet has nothing to settle; a settlement of another revision is
    // refused and writes nothing.
    let put_back = failed
        .put_back_ended(vec!["upgrading-shop_db".into()], vec![])
        .unwrap();
    assert!(failed_settles_nothing(&other));
    let mut wrong = put_back.clone();
    wrong.rev = 2;
    let entries = audit_count(store).await;
    let settled = wrong.settled(&record(shop), t(5)).unwrap();
    let e = store.settle_stack_upgrade(&settled).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert_eq!(audit_count(store).await, entries);
    assert_eq!(store.list_releases(shop).await.unwrap(), vec![]);

    // A settlement whose release breaks the release rule (not the next revision) writes
    // nothing: the run stays unfinished, no audit entry.
    store.save_stack_upgrade(&put_back).await.unwrap();
    let blog_settled = other
        .clone()
        .backed_up(vec![])
        .unwrap()
        .deploy_ended(Ok(()))
        .unwrap();
    let mut ahead = blog_settled.settled(&record(blog), t(6)).unwrap();
    ahead.release.rev = 2;
    let mut stored_ahead = blog_settled.clone();
    stored_ahead.rev = 2;
    store.drop_stack_upgrade(blog).await.unwrap();
    store.begin_stack_upgrade(&stored_ahead).await.unwrap();
    let e = store.settle_stack_upgrade(&ahead).await.unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    assert_eq!(audit_count(store).await, entries);
    assert_eq!(store.list_releases(blog).await.unwrap(), vec![]);
    assert_eq!(store.get_stack(blog).await.unwrap(), Some(record(blog)));
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![stored_ahead.clone(), put_back.clone()]
    );

    // Dropping forgets a run and records nothing; dropping none is not an error.
    store.drop_stack_upgrade(blog).await.unwrap();
    store.drop_stack_upgrade(blog).await.unwrap();
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![put_back.clone()]
    );
    assert_eq!(store.list_releases(blog).await.unwrap(), vec![]);

    // Settling stores the release, the stack, its deploy entry and the audit entry, and ends
    // the run.
    let settled = put_back.settled(&record(shop), t(7)).unwrap();
    let entry = store.settle_stack_upgrade(&settled).await.unwrap();
    assert_eq!(entry.event, settled.audit);
    assert_eq!(entry.event.action, STACK_DEPLOY);
    assert_eq!(audit_count(store).await, entries + 1);
    assert_eq!(store.unfinished_stack_upgrades().await.unwrap(), vec![]);
    let releases = store.list_releases(shop).await.unwrap();
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0].outcome, ReleaseOutcome::RolledBack);
    assert_eq!(releases[0].rev, 1);
    assert_eq!(store.get_stack(shop).await.unwrap(), Some(record(shop)));
    let history = store
        .deploy_history(shop, &Default::default())
        .await
        .unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].record, settled.deploy);
    // Settled once: a second settlement finds no run.
    let e = store.settle_stack_upgrade(&settled).await.unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");

    store.delete_stack(shop).await.unwrap();
    store.delete_stack(blog).await.unwrap();
}

fn failed_settles_nothing(r: &StackUpgradeRun) -> bool {
    r.settled(&record(&r.stack), t(9)).is_none()
}
