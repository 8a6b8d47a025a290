//! A stack upgrade is a stored run: a server stopped in the middle of one finishes it on its
//! next start, from the stored stage, once the stack's host answers.

use dockmesh_core::HostId;
use dockmesh_core::audit::{AuditQuery, STACK_DEPLOY};
use dockmesh_core::ports::{
    ExportRequest, HostRuntime, ImportRequest, VolumeTarget, no_progress, prelude::*,
};
use dockmesh_core::records::StackRecord;
use dockmesh_core::release::{ReleaseOutcome, ReleaseRecord};
use dockmesh_core::snapshot::VolumeUsage;
use dockmesh_core::stack_upgrade::{BackupCopy, StackUpgradeRun};
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{FakeHost, MemStore, SeqIds};
use dockmesh_core::types::StackFiles;
use dockmesh_http::server::stack_upgrade::resume_all;
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn files(compose: &str) -> StackFiles {
    StackFiles {
        name: "shop".into(),
        compose: compose.into(),
        env: None,
    }
}

fn record(compose: &str) -> StackRecord {
    StackRecord {
        name: "shop".into(),
        compose: compose.into(),
        env: None,
        host: Some(HostId::from("a")),
        updated_at: jiff::Timestamp::UNIX_EPOCH,
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("com.docker.compose.project".to_owned(), "shop".to_owned())])
}

/// A server over one fake host `a` holding stack `shop` (release v1) with volume `shop_db`.
async fn world() -> (ServerState, Arc<MemStore>, Arc<FakeHost>) {
    let store = Arc::new(MemStore::new());
    let a = Arc::new(FakeHost::new("a"));
    a.seed_stack(
        files("v1"),
        &[("shop_db", b"orders and customers")],
        1 << 20,
    );
    let hosts = Hosts::new();
    hosts.add(a.clone()).unwrap();
    let state = ServerState::new(
        store.clone(),
        hosts,
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
        ServerConfig::default(),
    );
    state.set_lifecycle(Lifecycle::Ready);
    // Release 1 runs: the upgrade under test is release 2.
    let first = ReleaseRecord {
        stack: "shop".into(),
        rev: 1,
        at: jiff::Timestamp::UNIX_EPOCH,
        host: HostId::from("a"),
        compose: "v1".into(),
        env: None,
        images: BTreeMap::new(),
        outcome: ReleaseOutcome::Deployed,
        detail: None,
        from_rev: None,
        actor: "alice".into(),
    };
    store
        .put_release(&first, &record("v1"), None)
        .await
        .unwrap();
    (state, store, a)
}

/// Copy `from` into `to` on `host` as a backup does; the copy's manifest digest.
async fn copy(host: &FakeHost, from: &str, to: &str) -> String {
    let export = host.export_volume(&ExportRequest::new(from)).await.unwrap();
    let target = VolumeTarget {
        name: to.into(),
        labels: BTreeMap::new(),
        expected_bytes: None,
    };
    let m = host
        .import_volume(&ImportRequest::new(target), export.stream, no_progress())
        .await
        .unwrap();
    m.digest()
}

/// A run of release 2 (v2) with a backup of `shop_db`, as the API starts it.
fn run() -> StackUpgradeRun {
    StackUpgradeRun::start(
        "shop",
        2,
        HostId::from("a"),
        files("v1"),
        files("v2"),
        BTreeMap::new(),
        vec![VolumeUsage {
            name: "shop_db".into(),
            bytes: Some(20),
            labels: labels(),
        }],
        "alice",
        "upgrade",
        None,
        jiff::Timestamp::UNIX_EPOCH,
    )
}

async fn until_settled(store: &MemStore, host: &FakeHost) {
    for _ in 0..200 {
        if store.unfinished_stack_upgrades().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the resumed stack upgrade did not end within 10 s: {:?}; the host saw {:?}",
        store.unfinished_stack_upgrades().await.unwrap(),
        host.calls()
    );
}

#[tokio::test]
async fn a_server_stopped_after_the_backup_deploys_the_release_on_its_next_start() {
    let (state, store, a) = world().await;
    // The stopped server had stopped the stack and copied its volume.
    a.stop_stack("shop").await.unwrap();
    let digest = copy(&a, "shop_db", "shop_db-backup-r2").await;
    let copy = BackupCopy {
        volume: run().backup[0].clone(),
        copy: "shop_db-backup-r2".into(),
        digest,
    };
    let stored = run().backed_up(vec![copy]).unwrap();
    store.begin_stack_upgrade(&stored).await.unwrap();

    assert_eq!(resume_all(&state).await.unwrap(), 1);
    until_settled(&store, &a).await;

    let releases = store.list_releases("shop").await.unwrap();
    assert_eq!(releases.len(), 2);
    assert_eq!(
        (releases[0].rev, releases[0].outcome),
        (2, ReleaseOutcome::Deployed)
    );
    assert_eq!(
        store.get_stack("shop").await.unwrap().unwrap().compose,
        "v2"
    );
    let on_host = a.stack("shop").unwrap();
    assert_eq!(on_host.files.unwrap().compose, "v2");
    assert!(on_host.running);
    assert_eq!(a.volume("shop_db").unwrap(), b"orders and customers");
    assert_eq!(
        a.volume("shop_db-backup-r2").unwrap(),
        b"orders and customers",
        "the backup is kept"
    );
    let audit = store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].event.action, STACK_DEPLOY);
    assert_eq!(audit[0].event.detail["outcome"], "deployed");
    assert_eq!(audit[0].event.actor, "alice");
}

#[tokio::test]
async fn a_server_stopped_while_putting_a_release_back_restores_it_once_the_host_answers() {
    let (state, store, a) = world().await;
    // The stopped server had backed up, deployed v2 (which clobbered the data and failed), and
    // was putting v1 back.
    a.stop_stack("shop").await.unwrap();
    let digest = copy(&a, "shop_db", "shop_db-backup-r2").await;
    a.write_stack_files(&files("v2")).await.unwrap();
    a.deploy(&files("v2")).await.unwrap();
    a.remove_stack("shop", false).await.unwrap();
    a.remove_volume("shop_db").await.unwrap();
    a.seed_stack(files("v2"), &[("shop_db", b"clobbered")], 1 << 20);
    let copy = BackupCopy {
        volume: run().backup[0].clone(),
        copy: "shop_db-backup-r2".into(),
        digest,
    };
    let stored = run()
        .backed_up(vec![copy])
        .unwrap()
        .deploy_ended(Err("web: unhealthy".into()))
        .unwrap();
    store.begin_stack_upgrade(&stored).await.unwrap();

    // The host is not back yet: the run waits, and nothing is touched.
    a.set_online(false);
    assert_eq!(resume_all(&state).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.unfinished_stack_upgrades().await.unwrap(),
        vec![stored]
    );
    a.set_online(true);
    assert_eq!(a.volume("shop_db").unwrap(), b"clobbered");
    until_settled(&store, &a).await;

    assert_eq!(a.volume("shop_db").unwrap(), b"orders and customers");
    let on_host = a.stack("shop").unwrap();
    assert_eq!(on_host.files.unwrap().compose, "v1");
    assert!(on_host.running);
    let releases = store.list_releases("shop").await.unwrap();
    assert_eq!(releases[0].outcome, ReleaseOutcome::RolledBack);
    assert_eq!(
        releases[0].detail.as_deref(),
        Some("web: unhealthy; the previous release was put back and is healthy")
    );
    assert_eq!(
        releases[0].compose, "v2",
        "the release records what was tried"
    );
    assert_eq!(
        store.get_stack("shop").await.unwrap().unwrap().compose,
        "v1"
    );
    let history = store
        .deploy_history("shop", &Default::default())
        .await
        .unwrap();
    assert_eq!(history[0].record.action, "upgrade-rolled-back");
    let audit = store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(audit[0].event.detail["outcome"], "rolled back");
}

#[tokio::test]
async fn a_restore_that_reads_back_other_than_the_backup_fails_the_release_and_says_why() {
    let (state, store, a) = world().await;
    a.stop_stack("shop").await.unwrap();
    copy(&a, "shop_db", "shop_db-backup-r2").await;
    // The digest recorded for the copy is not the copy's: what a restore reads back differs.
    let copy = BackupCopy {
        volume: run().backup[0].clone(),
        copy: "shop_db-backup-r2".into(),
        digest: "not-the-copys-digest".into(),
    };
    let stored = run()
        .backed_up(vec![copy])
        .unwrap()
        .deploy_ended(Err("web: unhealthy".into()))
        .unwrap();
    store.begin_stack_upgrade(&stored).await.unwrap();
    resume_all(&state).await.unwrap();
    until_settled(&store, &a).await;
    let releases = store.list_releases("shop").await.unwrap();
    assert_eq!(releases[0].outcome, ReleaseOutcome::Failed);
    let detail = releases[0].detail.clone().unwrap();
    assert!(
        detail.contains("volume shop_db restored from shop_db-backup-r2 differs from the backup")
            && detail.contains("not-the-copys-digest"),
        "{detail}"
    );
}

#[tokio::test]
async fn nothing_unfinished_resumes_nothing() {
    let (state, store, a) = world().await;
    assert_eq!(resume_all(&state).await.unwrap(), 0);
    assert_eq!(store.list_releases("shop").await.unwrap().len(), 1);
    assert!(a.calls().is_empty(), "{:?}", a.calls());
}
