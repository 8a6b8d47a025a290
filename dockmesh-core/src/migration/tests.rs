//! Tests of the migration machine and driver over the in-memory fakes.

use super::*;
use crate::audit::{self, AuditQuery};
use crate::ports::{Clock, Store};
use crate::records::StackRecord;
use crate::testing::{FakeFleet, FakeHost, FakeOp, FixedClock, MemStore, SeqIds};
use crate::types::{HostId, MigrationId, StackFiles};
use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;

const DB: &[u8] = b"the database files, every byte of them";
const UPLOADS: &[u8] = b"uploads: cat.png dog.png";

struct World {
    store: Arc<MemStore>,
    fleet: Arc<FakeFleet>,
    clock: Arc<FixedClock>,
    ids: Arc<SeqIds>,
}

impl World {
    async fn new() -> Self {
        let store = Arc::new(MemStore::new());
        let fleet = Arc::new(FakeFleet::new());
        let src = Arc::new(FakeHost::new("src"));
        let dst = Arc::new(FakeHost::new("dst"));
        let files = StackFiles {
            name: "shop".into(),
            compose: "services: {}".into(),
            env: Some("A=1".into()),
        };
        src.seed_stack(
            files.clone(),
            &[("shop_db", DB), ("shop_uploads", UPLOADS)],
            1 << 30,
        );
        fleet.add(src);
        fleet.add(dst);
        let clock = Arc::new(FixedClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        store
            .put_stack(&StackRecord {
                name: "shop".into(),
                compose: files.compose,
                env: files.env,
                host: Some(HostId::from("src")),
                updated_at: clock.now(),
            })
            .await
            .unwrap();
        World {
            store,
            fleet,
            clock,
            ids: Arc::new(SeqIds::default()),
        }
    }

    fn driver(&self) -> Driver {
        Driver::new(
            self.store.clone(),
            self.fleet.clone(),
            self.clock.clone(),
            self.ids.clone(),
        )
    }

    fn src(&self) -> Arc<FakeHost> {
        self.fleet.get("src")
    }
    fn dst(&self) -> Arc<FakeHost> {
        self.fleet.get("dst")
    }

    async fn start(&self) -> MigrationId {
        self.driver()
            .start(MigrationRequest {
                stack: "shop".into(),
                target: HostId::from("dst"),
                by: "alice".into(),
                retention: DEFAULT_RETENTION,
            })
            .await
            .unwrap()
    }

    async fn actions(&self) -> Vec<String> {
        self.store
            .query_audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .rev()
            .map(|e| e.event.action)
            .collect()
    }

    fn assert_committed(&self) {
        assert_eq!(self.dst().volume("shop_db").as_deref(), Some(DB));
        assert_eq!(self.dst().volume("shop_uploads").as_deref(), Some(UPLOADS));
        assert!(self.dst().stack("shop").unwrap().running, "target runs");
        let src = self.src().stack("shop").unwrap();
        assert!(!src.running && src.deployed, "source stopped and retained");
        assert_eq!(
            self.src().volume("shop_db").as_deref(),
            Some(DB),
            "source data kept"
        );
    }

    fn assert_compensated(&self) {
        assert!(
            self.src().stack("shop").unwrap().running,
            "source runs again"
        );
        assert_eq!(
            self.src().volume("shop_db").as_deref(),
            Some(DB),
            "source data intact"
        );
        assert!(
            self.dst().holds_nothing_of("shop"),
            "target holds nothing of the stack"
        );
        assert!(
            self.dst().volume_names().is_empty(),
            "no volume left on the target"
        );
    }
}

#[tokio::test]
async fn a_migration_moves_the_stack_with_its_data_and_keeps_the_source() {
    let w = World::new().await;
    let id = w.start().await;
    let m = w.driver().run(id).await.unwrap();
    assert_eq!(m.phase(), Phase::Committed);
    w.assert_committed();
    assert_eq!(
        m.retain_until(),
        Some(w.clock.now() + SignedDuration::from_hours(72))
    );
    let rec = w.store.get_stack("shop").await.unwrap().unwrap();
    assert_eq!(
        rec.host,
        Some(HostId::from("dst")),
        "the stack record follows"
    );
    assert_eq!(
        w.actions().await,
        [audit::MIGRATION_START, audit::MIGRATION_COMPLETE]
    );
    let stored = w.store.load_migration(id).await.unwrap().unwrap();
    let verified: Vec<_> = stored
        .events
        .iter()
        .filter_map(|e| match e {
            MigrationEvent::VolumeVerified { volume, bytes, .. } => Some((volume.clone(), *bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(
        verified,
        [
            ("shop_db".to_owned(), DB.len() as u64),
            ("shop_uploads".to_owned(), UPLOADS.len() as u64)
        ]
    );
}

#[tokio::test]
async fn a_second_migration_of_the_same_stack_is_refused_while_one_is_active() {
    let w = World::new().await;
    w.start().await;
    let err = w
        .driver()
        .start(MigrationRequest {
            stack: "shop".into(),
            target: HostId::from("dst"),
            by: "bob".into(),
            retention: DEFAULT_RETENTION,
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("active migration"), "{err}");
}

/// Stop after `k` recorded steps, drop the driver (a crash), and resume with a new one.
#[tokio::test]
async fn a_crash_after_any_step_resumes_to_the_same_end() {
    let total = {
        let w = World::new().await;
        let id = w.start().await;
        w.driver().run(id).await.unwrap();
        w.store
            .load_migration(id)
            .await
            .unwrap()
            .unwrap()
            .events
            .len()
    };
    for k in 0..total {
        let w = World::new().await;
        let id = w.start().await;
        {
            let d = w.driver();
            let mut m = d.load(id).await.unwrap();
            for _ in 0..k {
                assert!(d.step(&mut m).await.unwrap());
            }
        }
        let m = w.driver().run(id).await.unwrap();
        assert_eq!(m.phase(), Phase::Committed, "resumed after {k} steps");
        w.assert_committed();
        let events = w.store.load_migration(id).await.unwrap().unwrap().events;
        assert_eq!(
            events.len(),
            total,
            "no step recorded twice after a crash at {k}"
        );
    }
}

/// The action happened but its outcome was not recorded: the next command is re-issued and,
/// being idempotent, leads to the same end.
#[tokio::test]
async fn a_crash_between_an_action_and_its_record_resumes() {
    for k in 1..12 {
        let w = World::new().await;
        let id = w.start().await;
        let d = w.driver();
        let mut m = d.load(id).await.unwrap();
        for _ in 0..k {
            if !d.step(&mut m).await.unwrap() {
                break;
            }
        }
        // Re-run the command the crashed process had executed, without its record.
        let again = d.load(id).await.unwrap();
        if again.phase().is_settled() {
            continue;
        }
        let cmd = again.next_command().expect("not settled");
        let _ = d.execute(&again, cmd).await;
        let m = w.driver().run(id).await.unwrap();
        assert_eq!(m.phase(), Phase::Committed, "crash at {k}");
        w.assert_committed();
        let again = d.load(id).await.unwrap();
        assert_eq!(again.phase(), Phase::Committed);
    }
}

#[tokio::test]
async fn a_fault_at_any_forward_step_is_compensated() {
    let cases: &[(&str, FakeOp, Step)] = &[
        ("src", FakeOp::Stop, Step::StopSource),
        ("src", FakeOp::Export, Step::TransferVolumes),
        ("dst", FakeOp::Import, Step::TransferVolumes),
        ("dst", FakeOp::CorruptImport, Step::TransferVolumes),
        ("dst", FakeOp::WriteFiles, Step::ShipFiles),
        ("dst", FakeOp::Deploy, Step::StartTarget),
        ("dst", FakeOp::Health, Step::TargetHealth),
    ];
    for (host, op, step) in cases {
        let w = World::new().await;
        let id = w.start().await;
        w.fleet.get(host).fail(*op, 1);
        let m = w.driver().run(id).await.unwrap();
        assert_eq!(m.phase(), Phase::Failed, "{op:?}");
        let (failed_step, reason) = m.failure().unwrap();
        assert_eq!(failed_step, step, "{op:?}: {reason}");
        if *op == FakeOp::CorruptImport {
            assert!(reason.contains("failed verification"), "{reason}");
        }
        w.assert_compensated();
        let rec = w.store.get_stack("shop").await.unwrap().unwrap();
        assert_eq!(rec.host, Some(HostId::from("src")));
        assert_eq!(
            w.actions().await,
            [audit::MIGRATION_START, audit::MIGRATION_FAIL]
        );
    }
}

#[tokio::test]
async fn preflight_failure_touches_nothing() {
    let w = World::new().await;
    let id = w.start().await;
    w.dst().set_online(false);
    let m = w.driver().run(id).await.unwrap();
    assert_eq!(m.phase(), Phase::Failed);
    assert_eq!(m.failure().unwrap().0, Step::Preflight);
    assert!(
        m.failure().unwrap().1.contains("target_online"),
        "{:?}",
        m.failure()
    );
    assert!(w.src().stack("shop").unwrap().running);
    assert!(
        !w.src().calls().iter().any(|c| c.starts_with("Stop")),
        "the source was never stopped"
    );
}

#[tokio::test]
async fn compensation_waits_for_an_unreachable_target_and_never_gives_up_the_source() {
    let w = World::new().await;
    let id = w.start().await;
    w.dst().fail(FakeOp::Health, 1);
    let d = w.driver();
    let mut m = d.load(id).await.unwrap();
    while m.phase() != Phase::Compensating {
        d.step(&mut m).await.unwrap();
    }
    w.dst().set_online(false);
    let err = d.run(id).await.unwrap_err();
    assert!(matches!(err, DriveError::Retry { .. }), "{err}");
    assert_eq!(d.load(id).await.unwrap().phase(), Phase::Compensating);
    w.dst().set_online(true);
    let m = d.run(id).await.unwrap();
    assert_eq!(m.phase(), Phase::Failed);
    w.assert_compensated();
}

#[tokio::test]
async fn rollback_within_the_window_restores_the_source() {
    let w = World::new().await;
    let id = w.start().await;
    let d = w.driver();
    d.run(id).await.unwrap();
    w.clock.advance(SignedDuration::from_hours(71));
    let m = d.rollback(id, "alice").await.unwrap();
    assert_eq!(m.phase(), Phase::RolledBack);
    assert!(w.src().stack("shop").unwrap().running, "source runs");
    assert!(!w.dst().stack("shop").unwrap().running, "target stopped");
    assert_eq!(w.src().volume("shop_db").as_deref(), Some(DB));
    let rec = w.store.get_stack("shop").await.unwrap().unwrap();
    assert_eq!(rec.host, Some(HostId::from("src")));
    assert!(
        w.actions()
            .await
            .contains(&audit::MIGRATION_ROLLBACK.to_owned())
    );
    let err = d.purge_source(id, "alice").await.unwrap_err();
    assert!(err.to_string().contains("cannot purge"), "{err}");
    assert!(
        w.src().volume("shop_db").is_some(),
        "a rolled-back source is never purged"
    );
}

#[tokio::test]
async fn rollback_is_refused_outside_the_window_and_after_purge() {
    let w = World::new().await;
    let id = w.start().await;
    let d = w.driver();
    d.run(id).await.unwrap();
    w.clock.advance(SignedDuration::from_hours(72));
    let err = d.rollback(id, "alice").await.unwrap_err();
    assert!(
        matches!(err, DriveError::Refused(RequestError::WindowClosed { .. })),
        "{err}"
    );

    let w = World::new().await;
    let id = w.start().await;
    let d = w.driver();
    d.run(id).await.unwrap();
    let m = d.purge_source(id, "alice").await.unwrap();
    assert_eq!(m.phase(), Phase::Purged);
    assert!(w.src().holds_nothing_of("shop"), "the source is purged");
    assert_eq!(
        w.dst().volume("shop_db").as_deref(),
        Some(DB),
        "the target keeps the data"
    );
    let err = d.rollback(id, "alice").await.unwrap_err();
    assert!(
        matches!(err, DriveError::Refused(RequestError::Purged)),
        "{err}"
    );
    assert!(
        w.actions()
            .await
            .contains(&audit::MIGRATION_PURGE_SOURCE.to_owned())
    );
}

#[tokio::test]
async fn a_purge_or_rollback_before_the_commit_is_refused() {
    let w = World::new().await;
    let id = w.start().await;
    let d = w.driver();
    assert!(matches!(
        d.purge_source(id, "a").await.unwrap_err(),
        DriveError::Refused(RequestError::PurgeNotCommitted(Phase::Requested))
    ));
    assert!(matches!(
        d.rollback(id, "a").await.unwrap_err(),
        DriveError::Refused(RequestError::NotCommitted(Phase::Requested))
    ));
    assert!(w.src().calls().iter().all(|c| !c.starts_with("Remove")));
}

#[test]
fn replay_refuses_an_illegal_log_naming_the_event() {
    let spec = MigrationSpec {
        id: MigrationId(uuid::Uuid::from_u128(1)),
        stack: "s".into(),
        source: HostId::from("a"),
        target: HostId::from("b"),
        requested_at: Timestamp::UNIX_EPOCH,
        requested_by: "x".into(),
        retention: DEFAULT_RETENTION,
    };
    let at = Timestamp::UNIX_EPOCH;
    let err = Migration::replay(spec, &[MigrationEvent::TargetStarted { at }]).unwrap_err();
    assert_eq!(err.event, "target_started");
    assert_eq!(err.phase, Phase::Requested);
}
