//! Tests of the migration machine and driver over the in-memory fakes.

use super::*;
use crate::audit::{self, AuditQuery};
use crate::ports::{
    AuditLog, Clock, HostResume, HostRuntime, ImportRequest, Lease, MigrationLog, MigrationQuery,
    StackStore, StoreError, StreamCoding, VolumeTarget, migration_lease,
};
use crate::records::StackRecord;
use crate::testing::{FakeFleet, FakeHost, FakeOp, FixedClock, MemStore, SeqIds};
use crate::types::{HostId, MigrationId, StackFiles};
use futures_util::StreamExt;
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
        World::with_codings(&[], &[]).await
    }

    /// A world whose source and target also move volume streams in these codings.
    async fn with_codings(src: &[StreamCoding], dst: &[StreamCoding]) -> Self {
        let clock = Arc::new(FixedClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let store = Arc::new(MemStore::with_clock(clock.clone()));
        let fleet = Arc::new(FakeFleet::new());
        let src = Arc::new(FakeHost::new("src").with_stream_codings(src));
        let dst = Arc::new(FakeHost::new("dst").with_stream_codings(dst));
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
        fleet.add(Arc::new(FakeHost::new("third")));
        store
            .put_stack(
                &StackRecord {
                    name: "shop".into(),
                    compose: files.compose,
                    env: files.env,
                    host: Some(HostId::from("src")),
                    updated_at: clock.now(),
                },
                None,
            )
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
        self.start_to("dst").await.unwrap()
    }

    async fn start_to(&self, target: &str) -> Result<MigrationId, DriveError> {
        self.driver()
            .start(MigrationRequest {
                stack: "shop".into(),
                target: HostId::from(target),
                by: "alice".into(),
                retention: DEFAULT_RETENTION,
            })
            .await
    }

    /// A crashed driver's lease runs out.
    fn let_leases_expire(&self) {
        self.clock
            .advance(DEFAULT_LEASE_TTL + SignedDuration::from_secs(1));
    }

    /// Hosts on which the stack runs now.
    fn running_on(&self) -> Vec<&'static str> {
        ["src", "dst", "third"]
            .into_iter()
            .filter(|h| self.fleet.get(h).stack("shop").is_some_and(|s| s.running))
            .collect()
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
            let lease = d.claim(&migration_lease(id)).await.unwrap();
            let mut m = d.load(id).await.unwrap();
            for _ in 0..k {
                assert!(d.step(&mut m, &lease).await.unwrap());
            }
        }
        assert!(
            matches!(w.driver().run(id).await, Err(DriveError::Busy { .. })),
            "the crashed driver's lease is still held"
        );
        w.let_leases_expire();
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
        let lease = d.claim(&migration_lease(id)).await.unwrap();
        let mut m = d.load(id).await.unwrap();
        for _ in 0..k {
            if !d.step(&mut m, &lease).await.unwrap() {
                break;
            }
        }
        w.let_leases_expire();
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
        let f = m.failure().unwrap();
        let (failed_step, reason) = (&f.step, &f.reason);
        assert_eq!(failed_step, step, "{op:?}: {reason}");
        assert!(
            f.kind.is_some(),
            "{op:?}: the host's error kind is recorded"
        );
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
    assert_eq!(m.failure().unwrap().step, Step::Preflight);
    assert!(
        m.failure().unwrap().reason.contains("target_online"),
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
    let lease = d.claim(&migration_lease(id)).await.unwrap();
    let mut m = d.load(id).await.unwrap();
    while m.phase() != Phase::Compensating {
        d.step(&mut m, &lease).await.unwrap();
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

/// Rolling back a migration after a later one moved the stack on would start it on a second
/// host: refused, naming the later migration; allowed again once the later one rolled back.
#[tokio::test]
async fn a_rollback_is_refused_while_a_later_migration_moved_the_stack_on() {
    let w = World::new().await;
    let d = w.driver();
    let first = w.start().await;
    d.run(first).await.unwrap();
    let second = w.start_to("third").await.unwrap();

    // While the second one is in flight.
    let err = d.rollback(first, "alice").await.unwrap_err();
    assert!(
        matches!(err, DriveError::Refused(RequestError::Superseded { later, .. }) if later == second),
        "{err}"
    );
    d.run(second).await.unwrap();
    assert_eq!(w.running_on(), ["third"]);

    // After it committed.
    let err = d.rollback(first, "alice").await.unwrap_err();
    assert!(
        matches!(err, DriveError::Refused(RequestError::Superseded { later, phase: Phase::Committed }) if later == second),
        "{err}"
    );
    assert!(err.to_string().contains(&second.to_string()), "{err}");
    assert_eq!(w.running_on(), ["third"], "nothing was started");
    assert_eq!(d.load(first).await.unwrap().phase(), Phase::Committed);

    // The later migration rolled back: the stack is where the first put it.
    d.rollback(second, "alice").await.unwrap();
    assert_eq!(w.running_on(), ["dst"]);
    d.rollback(first, "alice").await.unwrap();
    assert_eq!(w.running_on(), ["src"]);
}

/// The store keeps one active migration per stack, rollbacks included.
#[tokio::test]
async fn a_rollback_request_cannot_become_active_beside_another_migration() {
    let w = World::new().await;
    let d = w.driver();
    let first = w.start().await;
    d.run(first).await.unwrap();
    let second = w.start_to("third").await.unwrap();
    let lease = d.claim(&migration_lease(first)).await.unwrap();
    let m = d.load(first).await.unwrap();
    let e = m.request_rollback(w.clock.now(), "mallory", &[]).unwrap();
    let err = w
        .store
        .append_migration_event(first, m.event_count(), &e, &lease.fence(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { what } if what.contains(&second.to_string())),
        "{err}"
    );
}

/// A new migration of the stack is refused while a rollback runs.
#[tokio::test]
async fn a_new_migration_is_refused_while_a_rollback_runs() {
    let w = World::new().await;
    let d = w.driver();
    let first = w.start().await;
    d.run(first).await.unwrap();
    w.dst().set_online(false);
    let err = d.rollback(first, "alice").await.unwrap_err();
    assert!(matches!(err, DriveError::Retry { .. }), "{err}");
    assert_eq!(d.load(first).await.unwrap().phase(), Phase::RollingBack);
    let err = w.start_to("third").await.unwrap_err();
    assert!(err.to_string().contains("active migration"), "{err}");
}

/// An event the machine refuses is never written: the log stays replayable.
#[tokio::test]
async fn a_refused_event_writes_nothing() {
    let w = World::new().await;
    let id = w.start().await;
    let d = w.driver();
    let lease = d.claim(&migration_lease(id)).await.unwrap();
    let mut m = d.load(id).await.unwrap();
    let err = d
        .record(
            &mut m,
            MigrationEvent::TargetStarted { at: w.clock.now() },
            &lease.fence(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, DriveError::Corrupt(_)), "{err}");
    let stored = w.store.load_migration(id).await.unwrap().unwrap();
    assert!(stored.events.is_empty(), "nothing was appended");
    assert_eq!(m.event_count(), 0);
    assert_eq!(d.load(id).await.unwrap().phase(), Phase::Requested);
}

/// Two drivers on one migration: the second is refused while the first holds the lease; once
/// it took the lease over, the first is fenced and writes nothing more.
#[tokio::test]
async fn a_second_driver_is_refused_or_fences_the_first() {
    let w = World::new().await;
    let id = w.start().await;
    let (a, b) = (w.driver(), w.driver());
    let lease_a: Lease = a.claim(&migration_lease(id)).await.unwrap();
    let mut m = a.load(id).await.unwrap();
    assert!(a.step(&mut m, &lease_a).await.unwrap());
    let err = b.run(id).await.unwrap_err();
    assert!(
        matches!(&err, DriveError::Busy { owner, .. } if owner == a.owner()),
        "{err}"
    );
    // A stalls past its ttl; B takes over and finishes.
    w.let_leases_expire();
    let done = b.run(id).await.unwrap();
    assert_eq!(done.phase(), Phase::Committed);
    let before = w.store.load_migration(id).await.unwrap().unwrap().events;
    // A wakes up with its stale state and stale token.
    let mut stale = a.load(id).await.unwrap();
    stale = Migration::replay(stale.spec().clone(), &before[..1]).unwrap();
    let err = a.step(&mut stale, &lease_a).await.unwrap_err();
    assert!(matches!(err, DriveError::Fenced { .. }), "{err}");
    let after = w.store.load_migration(id).await.unwrap().unwrap().events;
    assert_eq!(before, after, "the fenced driver wrote nothing");
    Migration::replay(done.spec().clone(), &after).expect("the log replays");
}

/// Compensation brings the source back even when its containers are gone: deployed again
/// from its retained files and volumes.
#[tokio::test]
async fn compensation_redeploys_a_source_whose_containers_are_gone() {
    let w = World::new().await;
    let id = w.start().await;
    w.dst().fail(FakeOp::Health, 1);
    let d = w.driver();
    let lease = d.claim(&migration_lease(id)).await.unwrap();
    let mut m = d.load(id).await.unwrap();
    while m.phase() != Phase::Compensating {
        d.step(&mut m, &lease).await.unwrap();
    }
    use crate::ports::HostRuntime;
    w.src().remove_stack("shop", false).await.unwrap();
    assert!(!w.src().stack("shop").unwrap().deployed);
    drop(lease);
    w.let_leases_expire();
    let m = d.run(id).await.unwrap();
    assert_eq!(m.phase(), Phase::Failed);
    w.assert_compensated();
    let events = w.store.load_migration(id).await.unwrap().unwrap().events;
    assert!(
        events.iter().any(|e| matches!(
            e,
            MigrationEvent::SourceRestarted {
                redeployed: true,
                ..
            }
        )),
        "{events:?}"
    );
}

/// A rollback brings the source back even when its containers are gone.
#[tokio::test]
async fn rollback_redeploys_a_source_whose_containers_are_gone() {
    let w = World::new().await;
    let id = w.start().await;
    let d = w.driver();
    d.run(id).await.unwrap();
    use crate::ports::HostRuntime;
    w.src().remove_stack("shop", false).await.unwrap();
    let m = d.rollback(id, "alice").await.unwrap();
    assert_eq!(m.phase(), Phase::RolledBack);
    assert_eq!(w.running_on(), ["src"]);
    assert_eq!(w.src().volume("shop_db").as_deref(), Some(DB));
}

/// The migration's audit entries are written by the same store call as its events.
#[tokio::test]
async fn lists_are_paged() {
    let w = World::new().await;
    let d = w.driver();
    let mut ids = Vec::new();
    for target in ["dst", "third", "src", "dst"] {
        let id = w.start_to(target).await.unwrap();
        d.run(id).await.unwrap();
        w.clock.advance(SignedDuration::from_secs(1));
        ids.push(id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut q = MigrationQuery {
        stack: Some("shop".into()),
        limit: 3,
        ..Default::default()
    };
    loop {
        let page = w.store.list_migrations(&q).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        q.after = Some(last.spec.id);
        seen.extend(page.iter().map(|m| m.spec.id));
    }
    assert_eq!(seen, ids, "newest first, each once");
}

/// A timer that lets the other branch run and counts its sleeps.
#[derive(Default)]
struct YieldTimer(std::sync::atomic::AtomicU32);

#[async_trait::async_trait]
impl crate::ports::Timer for YieldTimer {
    async fn sleep(&self, _d: std::time::Duration) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
}

/// While a long step runs the lease is renewed beside it; when another driver took the lease
/// over meanwhile, the step is abandoned before it records anything.
#[tokio::test]
async fn the_lease_is_renewed_during_a_long_step_and_a_lost_lease_stops_it() {
    let w = World::new().await;
    let id = w.start().await;
    let timer = Arc::new(YieldTimer::default());
    let d = w.driver().with_timer(timer.clone());
    let lease = d.claim(&migration_lease(id)).await.unwrap();

    // A step that takes a while, with the lease kept: it finishes, renewed along the way.
    let slow = async {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        42
    };
    assert_eq!(d.guarded(&lease, slow).await.unwrap(), 42);
    assert!(
        timer.0.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "renewed while the step ran"
    );

    // Another driver takes the lease over: the step never ends by itself, the renewal notices.
    w.store.steal_lease(&migration_lease(id), "other").unwrap();
    let never = std::future::pending::<()>();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), d.guarded(&lease, never))
        .await
        .expect("the lost lease stops the step")
        .unwrap_err();
    assert!(matches!(err, DriveError::Fenced { .. }), "{err}");
}

#[tokio::test]
async fn a_stop_request_halts_at_a_checkpoint_and_the_migration_resumes_later() {
    let w = World::new().await;
    let id = w.start().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress_stop = stop.clone();
    // Ask to stop while the first step (pre-flight) runs: that step is still recorded.
    let d = w
        .driver()
        .with_stop(stop.clone())
        .with_progress(Arc::new(move |_| {
            progress_stop.store(true, std::sync::atomic::Ordering::SeqCst)
        }));
    let err = d.run(id).await.unwrap_err();
    assert!(matches!(err, DriveError::Stopped { .. }), "{err}");
    let m = d.load(id).await.unwrap();
    assert_eq!(m.event_count(), 1, "exactly the running step was recorded");
    assert!(
        w.src().stack("shop").unwrap().running,
        "the source still runs"
    );
    // A driver without the stop request carries it through.
    let m = w.driver().run(id).await.unwrap();
    assert_eq!(m.phase(), Phase::Committed);
}

#[tokio::test]
async fn preflight_on_request_reports_without_recording_anything() {
    let w = World::new().await;
    let d = w.driver();
    let report = d.preflight("shop", &HostId::from("dst")).await.unwrap();
    assert!(report.passed(), "{report:?}");
    w.dst().set_online(false);
    let report = d.preflight("shop", &HostId::from("dst")).await.unwrap();
    let failed: Vec<_> = report.failures().map(|c| c.name.as_str()).collect();
    assert_eq!(failed.first(), Some(&"target_online"), "{failed:?}");
    assert!(
        report.checks[0].detail.contains('('),
        "the host's own error is named: {:?}",
        report.checks[0]
    );
    let err = d.preflight("shop", &HostId::from("src")).await.unwrap_err();
    assert!(err.to_string().contains("already runs on src"), "{err}");
    let err = d.preflight("nope", &HostId::from("dst")).await.unwrap_err();
    assert!(err.to_string().contains("not known"), "{err}");
    let listed = w
        .store
        .list_migrations(&MigrationQuery::default())
        .await
        .unwrap();
    assert!(listed.is_empty(), "pre-flight recorded nothing");
    assert!(!w.src().calls().iter().any(|c| c.starts_with("Stop")));
}

#[tokio::test]
async fn a_later_migration_of_another_stack_does_not_block_a_rollback() {
    let w = World::new().await;
    let d = w.driver();
    let first = w.start().await;
    d.run(first).await.unwrap();
    // Another stack moves later (and stays committed).
    let blog = StackFiles {
        name: "blog".into(),
        compose: "services: {}".into(),
        env: None,
    };
    w.src()
        .seed_stack(blog.clone(), &[("blog_data", b"posts")], 1 << 20);
    w.store
        .put_stack(
            &StackRecord {
                name: "blog".into(),
                compose: blog.compose,
                env: None,
                host: Some(HostId::from("src")),
                updated_at: w.clock.now(),
            },
            None,
        )
        .await
        .unwrap();
    let other = d
        .start(MigrationRequest {
            stack: "blog".into(),
            target: HostId::from("dst"),
            by: "bob".into(),
            retention: DEFAULT_RETENTION,
        })
        .await
        .unwrap();
    assert_eq!(d.run(other).await.unwrap().phase(), Phase::Committed);
    // Rolling back shop is not superseded by blog's migration.
    assert_eq!(
        d.rollback(first, "alice").await.unwrap().phase(),
        Phase::RolledBack
    );
    assert_eq!(w.running_on(), ["src"]);
}

/// A migration of stack `s` (volumes `volumes`, 1 byte each) whose source is stopped and
/// whose transfer of `started` began, at `t0`.
fn transferring(t0: Timestamp, volumes: &[&str], started: &[&str]) -> Migration {
    let spec = MigrationSpec {
        id: MigrationId(uuid::Uuid::from_u128(7)),
        stack: "s".into(),
        source: HostId::from("a"),
        target: HostId::from("b"),
        requested_at: t0,
        requested_by: "x".into(),
        retention: DEFAULT_RETENTION,
    };
    let mut events = vec![
        MigrationEvent::PreflightPassed {
            at: t0,
            report: Default::default(),
            volumes: volumes.iter().map(|v| usage(v)).collect(),
        },
        MigrationEvent::SourceStopped { at: t0 },
    ];
    events.extend(
        started
            .iter()
            .map(|v| MigrationEvent::VolumeTransferStarted {
                at: t0,
                volume: (*v).into(),
            }),
    );
    Migration::replay(spec, &events).unwrap()
}

fn usage(name: &str) -> crate::snapshot::VolumeUsage {
    crate::snapshot::VolumeUsage {
        name: name.into(),
        bytes: Some(1),
        labels: Default::default(),
    }
}

/// A volume transfer cut off by an unreachable host: recorded once, retried until the
/// deadline counted from the first cut, failed from the deadline on; other errors fail at once.
#[test]
fn a_cut_transfer_waits_until_its_deadline_and_no_longer() {
    use crate::ports::{RuntimeError, RuntimeErrorKind};
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let volume = usage("s_db");
    let mut m = transferring(t0, &["s_db"], &["s_db"]);
    let cmd = m.next_command().unwrap();
    assert_eq!(cmd, Command::TransferVolume(volume.clone()));
    let gone = RuntimeError::new(RuntimeErrorKind::Unreachable, "host b is unreachable");
    let cut_at = t0 + jiff::SignedDuration::from_secs(30);

    // The first cut is recorded.
    let Decision::Record(e) = m.decide_failure(&cmd, &gone, cut_at) else {
        panic!("the first cut is recorded")
    };
    assert_eq!(e.kind(), "volume_transfer_interrupted");
    m.apply(&e).unwrap();
    assert_eq!(
        m.next_command(),
        Some(cmd.clone()),
        "the volume is sent again"
    );

    // Within the deadline: retried, nothing recorded; a second cut does not move the start.
    let just_before = cut_at + TRANSFER_RESUME_DEADLINE - jiff::SignedDuration::from_secs(1);
    assert_eq!(m.decide_failure(&cmd, &gone, just_before), Decision::Retry);
    let again = MigrationEvent::VolumeTransferInterrupted {
        at: just_before,
        volume: "s_db".into(),
        reason: "again".into(),
    };
    m.apply(&again).unwrap();
    assert_eq!(m.decide_failure(&cmd, &gone, just_before), Decision::Retry);

    // From the deadline on: the step fails, and compensation follows.
    for late in [
        cut_at + TRANSFER_RESUME_DEADLINE,
        cut_at + TRANSFER_RESUME_DEADLINE * 3,
    ] {
        let Decision::Record(MigrationEvent::StepFailed {
            step, kind, reason, ..
        }) = m.decide_failure(&cmd, &gone, late)
        else {
            panic!("past the deadline the step fails")
        };
        assert_eq!(step, Step::TransferVolumes);
        assert_eq!(kind, Some(RuntimeErrorKind::Unreachable));
        assert!(reason.contains("waited 10 min"), "{reason}");
    }

    // A verification failure is not waited for.
    let bad = RuntimeError::new(RuntimeErrorKind::Integrity, "manifests differ");
    assert!(matches!(
        m.decide_failure(&cmd, &bad, cut_at),
        Decision::Record(MigrationEvent::StepFailed { .. })
    ));

    // Once the volume is verified the interruption is over: a later cut is recorded anew.
    let mut fresh = transferring(t0, &["s_db", "s_files"], &["s_db"]);
    fresh.apply(&e).unwrap();
    fresh
        .apply(&MigrationEvent::VolumeVerified {
            at: t0,
            volume: "s_db".into(),
            bytes: 10,
            digest: "d".into(),
            outside_links: vec![],
        })
        .unwrap();
    fresh
        .apply(&MigrationEvent::VolumeTransferStarted {
            at: t0,
            volume: "s_files".into(),
        })
        .unwrap();
    let next = fresh.next_command().unwrap();
    let much_later = cut_at + TRANSFER_RESUME_DEADLINE * 5;
    assert!(matches!(
        fresh.decide_failure(&next, &gone, much_later),
        Decision::Record(MigrationEvent::VolumeTransferInterrupted { .. })
    ));
    // An interruption of a volume that is not being transferred is refused.
    assert!(
        fresh
            .apply(&MigrationEvent::VolumeTransferInterrupted {
                at: much_later,
                volume: "s_db".into(),
                reason: "x".into(),
            })
            .is_err()
    );
}

/// The transfer's bookkeeping: a volume the migration does not move cannot start, one that
/// did not start cannot be verified, and a failure mid-transfer cleans only what started.
#[test]
fn transfer_events_follow_the_volumes_and_compensation_cleans_only_what_started() {
    let t0 = Timestamp::from_second(1_800_000_000).unwrap();
    let mut m = transferring(t0, &["s_db", "s_files"], &[]);
    let started = |v: &str| MigrationEvent::VolumeTransferStarted {
        at: t0,
        volume: v.into(),
    };
    let verified = |v: &str| MigrationEvent::VolumeVerified {
        at: t0,
        volume: v.into(),
        bytes: 1,
        digest: "d".into(),
        outside_links: vec![],
    };
    assert!(
        m.apply(&started("other")).is_err(),
        "not a volume of the stack"
    );
    assert!(m.apply(&verified("s_db")).is_err(), "not started");
    m.apply(&started("s_db")).unwrap();
    m.apply(&MigrationEvent::StepFailed {
        at: t0,
        step: Step::TransferVolumes,
        reason: "r".into(),
        kind: None,
    })
    .unwrap();
    assert_eq!(
        m.next_command(),
        Some(Command::CleanTarget {
            volumes: vec!["s_db".into()]
        }),
        "only the volume that started may be on the target"
    );
}

/// Drive `id` to its end, running again while the driver stops for a retry.
async fn drive_through_retries(d: &Driver, id: MigrationId) -> Migration {
    for _ in 0..10 {
        match d.run(id).await {
            Ok(m) => return m,
            Err(DriveError::Retry { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the migration did not end in 10 runs")
}

type Seen = Arc<std::sync::Mutex<Vec<ProgressEvent>>>;

fn watched(w: &World) -> (Driver, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let d = w
        .driver()
        .with_progress(Arc::new(move |e| sink.lock().unwrap().push(e)));
    (d, seen)
}

/// [`watched`], injecting one `op` fault into the target as the first bytes of a volume flow.
fn watched_then(w: &World, op: FakeOp) -> (Driver, Seen) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let dst = w.dst();
    let once = std::sync::atomic::AtomicBool::new(false);
    let d = w.driver().with_progress(Arc::new(move |e| {
        if matches!(e, ProgressEvent::VolumeBytes { .. })
            && !once.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            dst.fail(op, 1);
        }
        sink.lock().unwrap().push(e);
    }));
    (d, seen)
}

/// The bytes each import of `volume` reported, one list per attempt.
fn attempts(seen: &Seen, volume: &str) -> Vec<Vec<u64>> {
    let mut out: Vec<Vec<u64>> = Vec::new();
    let mut last = None;
    let mut resumed = false;
    for e in seen.lock().unwrap().iter() {
        match e {
            ProgressEvent::VolumeResumed { volume: v, .. } if v == volume => resumed = true,
            ProgressEvent::VolumeBytes {
                volume: v, bytes, ..
            } if v == volume => {
                if resumed || last.is_none_or(|l| *bytes <= l) {
                    out.push(Vec::new());
                    resumed = false;
                }
                out.last_mut().unwrap().push(*bytes);
                last = Some(*bytes);
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn a_cut_transfer_goes_on_from_the_byte_the_target_took_in() {
    use crate::testing::CUT_AFTER;
    let w = World::new().await;
    assert!(DB.len() > CUT_AFTER);
    w.dst().fail(FakeOp::CutImport, 1);
    let id = w.start().await;
    let (d, seen) = watched(&w);
    let m = drive_through_retries(&d, id).await;
    assert_eq!(m.phase(), Phase::Committed);
    w.assert_committed();
    let resumed: Vec<(String, u64)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::VolumeResumed { volume, offset, .. } => Some((volume.clone(), *offset)),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, [("shop_db".to_owned(), CUT_AFTER as u64)]);
    // The second attempt starts past what the first delivered: nothing was sent twice.
    let tries = attempts(&seen, "shop_db");
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(
        *tries[0].last().unwrap(),
        (CUT_AFTER - CUT_AFTER % 7) as u64
    );
    assert!(tries[1][0] > CUT_AFTER as u64, "{tries:?}");
    assert_eq!(*tries[1].last().unwrap(), DB.len() as u64);
    // The cut was recorded, and nothing waits on the target any more.
    let stored = w.store.load_migration(id).await.unwrap().unwrap();
    assert!(
        stored
            .events
            .iter()
            .any(|e| e.kind() == "volume_transfer_interrupted")
    );
    assert_eq!(w.dst().import_resume_point("shop_db").await.unwrap(), None);
}

#[tokio::test]
async fn a_resumed_transfer_that_does_not_verify_is_sent_whole() {
    let w = World::new().await;
    w.dst().fail(FakeOp::CutImport, 1);
    w.dst().fail(FakeOp::CorruptImport, 1);
    let id = w.start().await;
    let (d, seen) = watched(&w);
    let m = drive_through_retries(&d, id).await;
    assert_eq!(m.phase(), Phase::Committed);
    w.assert_committed();
    // Cut, resumed (and corrupted), then whole from byte 0.
    let tries = attempts(&seen, "shop_db");
    assert_eq!(tries.len(), 3, "{tries:?}");
    assert!(tries[1][0] > CUT_AFTER_BYTES, "{tries:?}");
    assert!(tries[2][0] <= 7, "sent whole: {tries:?}");
    assert_eq!(*tries[2].last().unwrap(), DB.len() as u64);
}

const CUT_AFTER_BYTES: u64 = crate::testing::CUT_AFTER as u64;

#[tokio::test]
async fn a_resume_the_target_does_not_hold_is_refused_and_changes_nothing() {
    let w = World::new().await;
    let dst = w.dst();
    dst.fail(FakeOp::CutImport, 1);
    let into = ImportRequest::new(VolumeTarget {
        name: "v".into(),
        labels: Default::default(),
        expected_bytes: None,
    });
    let data = |b: &'static [u8]| {
        futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(b))]).boxed()
    };
    let err = dst
        .import_volume(&into, data(DB), crate::ports::no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.kind, crate::ports::RuntimeErrorKind::Unreachable);
    assert_eq!(
        dst.import_resume_point("v").await.unwrap(),
        Some(CUT_AFTER_BYTES)
    );
    let err = dst
        .import_volume(
            &into.clone().resume_at(Some(5)),
            data(&DB[5..]),
            crate::ports::no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, crate::ports::RuntimeErrorKind::Integrity);
    assert!(err.message.contains("waits at 21"), "{err}");
    assert_eq!(
        dst.import_resume_point("v").await.unwrap(),
        Some(CUT_AFTER_BYTES),
        "the waiting import is kept"
    );
    let m = dst
        .import_volume(
            &into.clone().resume_at(Some(CUT_AFTER_BYTES)),
            data(&DB[crate::testing::CUT_AFTER..]),
            crate::ports::no_progress(),
        )
        .await
        .unwrap();
    assert_eq!(dst.volume("v").as_deref(), Some(DB));
    assert_eq!(m.content_bytes(), DB.len() as u64);
}

/// The offsets the transfers of `volume` went on from.
fn resumed_at(seen: &Seen, volume: &str) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::VolumeResumed {
                volume: v, offset, ..
            } if v == volume => Some(*offset),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_transfer_cut_twice_goes_on_twice() {
    let w = World::new().await;
    let long: Vec<u8> = (0..100u8).collect();
    w.src().seed_stack(
        StackFiles {
            name: "shop".into(),
            compose: "services: {}".into(),
            env: Some("A=1".into()),
        },
        &[("shop_db", &long), ("shop_uploads", UPLOADS)],
        1 << 30,
    );
    w.dst().fail(FakeOp::CutImport, 2);
    let id = w.start().await;
    let (d, seen) = watched(&w);
    let m = drive_through_retries(&d, id).await;
    assert_eq!(m.phase(), Phase::Committed);
    assert_eq!(w.dst().volume("shop_db").as_deref(), Some(&long[..]));
    // The second cut came inside the resumed attempt: it went on again, from further on.
    assert_eq!(
        resumed_at(&seen, "shop_db"),
        [CUT_AFTER_BYTES, 2 * CUT_AFTER_BYTES]
    );
}

#[tokio::test]
async fn a_target_that_cannot_tell_where_it_waits_is_sent_the_whole_volume() {
    let w = World::new().await;
    w.dst().fail(FakeOp::CutImport, 1);
    let id = w.start().await;
    // The target's trouble comes once the first attempt is under way, before its cut.
    let (d, seen) = watched_then(&w, FakeOp::ResumePoint);
    let m = drive_through_retries(&d, id).await;
    assert_eq!(m.phase(), Phase::Committed);
    w.assert_committed();
    assert!(resumed_at(&seen, "shop_db").is_empty());
    let tries = attempts(&seen, "shop_db");
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert!(tries[1][0] <= 7, "sent whole: {tries:?}");
}

#[tokio::test]
async fn a_target_not_back_yet_is_asked_again_rather_than_sent_the_whole_volume() {
    let w = World::new().await;
    w.dst().fail(FakeOp::CutImport, 1);
    let id = w.start().await;
    // The target's trouble comes once the first attempt is under way, before its cut.
    let (d, seen) = watched_then(&w, FakeOp::ResumePointGone);
    let m = drive_through_retries(&d, id).await;
    assert_eq!(m.phase(), Phase::Committed);
    w.assert_committed();
    // A whole import would have dropped what waited there; it went on from the cut instead.
    assert_eq!(resumed_at(&seen, "shop_db"), [CUT_AFTER_BYTES]);
}

fn coded_calls(host: &FakeHost) -> Vec<String> {
    host.calls()
        .into_iter()
        .filter(|c| c.starts_with("coded "))
        .collect()
}

#[tokio::test]
async fn a_stream_both_hosts_code_goes_from_one_to_the_other_still_coded() {
    let w = World::with_codings(&[StreamCoding::Zstd], &[StreamCoding::Zstd]).await;
    let id = w.start().await;
    let m = w.driver().run(id).await.unwrap();
    assert_eq!(m.phase(), Phase::Committed);
    // The fake's coding inverts every byte: the data arrives whole only when the target is
    // handed the stream coded, as the source made it, and told so.
    w.assert_committed();
    assert_eq!(
        coded_calls(&w.src()),
        [
            "coded export zstd shop_db",
            "coded export zstd shop_uploads"
        ]
    );
    assert_eq!(
        coded_calls(&w.dst()),
        [
            "coded import zstd shop_db",
            "coded import zstd shop_uploads"
        ]
    );
}

#[tokio::test]
async fn a_target_that_takes_no_coding_is_sent_the_plain_stream() {
    for (src, dst) in [
        (vec![StreamCoding::Zstd], vec![]),
        (vec![], vec![StreamCoding::Zstd]),
    ] {
        let w = World::with_codings(&src, &dst).await;
        let id = w.start().await;
        let m = w.driver().run(id).await.unwrap();
        assert_eq!(m.phase(), Phase::Committed);
        w.assert_committed();
        assert!(coded_calls(&w.src()).is_empty(), "{:?}", w.src().calls());
        assert!(coded_calls(&w.dst()).is_empty(), "{:?}", w.dst().calls());
    }
}

#[tokio::test]
async fn a_cut_coded_transfer_goes_on_coded_from_the_byte_the_target_took_in() {
    let w = World::with_codings(&[StreamCoding::Zstd], &[StreamCoding::Zstd]).await;
    w.dst().fail(FakeOp::CutImport, 1);
    let id = w.start().await;
    let (d, seen) = watched(&w);
    let m = drive_through_retries(&d, id).await;
    assert_eq!(m.phase(), Phase::Committed);
    w.assert_committed();
    let tries = attempts(&seen, "shop_db");
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert!(tries[1][0] > CUT_AFTER_BYTES, "{tries:?}");
    assert_eq!(
        coded_calls(&w.src())
            .iter()
            .filter(|c| c.ends_with("shop_db"))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_coding_the_host_does_not_take_is_refused_and_changes_nothing() {
    let host = FakeHost::new("h");
    let into = ImportRequest::new(VolumeTarget {
        name: "v".into(),
        labels: Default::default(),
        expected_bytes: None,
    });
    let data = futures_util::stream::iter(vec![Ok(bytes::Bytes::from_static(DB))]).boxed();
    let err = host
        .import_volume(
            &into.coded(StreamCoding::Zstd),
            data,
            crate::ports::no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, crate::ports::RuntimeErrorKind::Integrity);
    assert!(err.message.contains("coded as zstd"), "{err}");
    assert_eq!(host.volume("v"), None);
    assert!(host.calls().is_empty(), "{:?}", host.calls());
}
