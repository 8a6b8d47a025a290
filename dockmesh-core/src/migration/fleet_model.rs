//! Property test over many migrations of one stack between three hosts: whatever sequence of
//! migrations, steps, faults, rollbacks, purges and clock jumps happens, at most one host runs
//! the stack at any moment (checked before every command the driver executes), and a rollback
//! is refused exactly when the reference rule says a later migration moved the stack on.

use super::*;
use crate::ports::{Clock, MigrationLog, MigrationQuery, StackStore, migration_lease};
use crate::records::StackRecord;
use crate::testing::{FakeFleet, FakeHost, FakeOp, FixedClock, MemStore, SeqIds};
use crate::types::{HostId, MigrationId, StackFiles};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use std::sync::Arc;

const HOSTS: [&str; 3] = ["a", "b", "c"];
const FAULTS: [FakeOp; 6] = [
    FakeOp::Stop,
    FakeOp::Start,
    FakeOp::Deploy,
    FakeOp::Health,
    FakeOp::Import,
    FakeOp::Remove,
];

#[derive(Debug, Clone)]
enum Op {
    /// Ask for a migration of the stack to this host.
    Migrate(usize),
    /// One step of the k-th migration (modulo how many there are).
    Step(usize),
    /// Drive the k-th migration until it settles or must retry.
    Run(usize),
    /// The next call of this kind on this host fails once.
    Fault(usize, usize),
    /// Ask for the rollback of the k-th migration (and drive it).
    Rollback(usize),
    /// Ask for the purge of the k-th migration's source (and drive it).
    Purge(usize),
    /// Time passes.
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize).prop_map(Op::Migrate),
        4 => (0..8usize).prop_map(Op::Step),
        3 => (0..8usize).prop_map(Op::Run),
        2 => (0..3usize, 0..FAULTS.len()).prop_map(|(h, f)| Op::Fault(h, f)),
        2 => (0..8usize).prop_map(Op::Rollback),
        1 => (0..8usize).prop_map(Op::Purge),
        1 => (1..80i64).prop_map(Op::Advance),
    ]
}

struct World {
    store: Arc<MemStore>,
    fleet: Arc<FakeFleet>,
    clock: Arc<FixedClock>,
    ids: Arc<SeqIds>,
    migrations: Vec<MigrationId>,
}

/// Hosts on which the stack runs now.
fn running(fleet: &FakeFleet) -> Vec<&'static str> {
    HOSTS
        .into_iter()
        .filter(|h| fleet.get(h).stack("app").is_some_and(|s| s.running))
        .collect()
}

fn at_most_one(fleet: &FakeFleet, when: &str) {
    let r = running(fleet);
    assert!(r.len() <= 1, "the stack runs on {r:?} {when}");
}

impl World {
    async fn new() -> World {
        let clock = Arc::new(FixedClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let store = Arc::new(MemStore::with_clock(clock.clone()));
        let fleet = Arc::new(FakeFleet::new());
        let files = StackFiles {
            name: "app".into(),
            compose: "c".into(),
            env: None,
        };
        let a = Arc::new(FakeHost::new("a"));
        a.seed_stack(files.clone(), &[("app_db", b"rows")], 1 << 20);
        fleet.add(a);
        fleet.add(Arc::new(FakeHost::new("b")));
        fleet.add(Arc::new(FakeHost::new("c")));
        store
            .put_stack(
                &StackRecord {
                    name: "app".into(),
                    compose: files.compose,
                    env: None,
                    host: Some(HostId::from("a")),
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
            migrations: Vec::new(),
        }
    }

    fn driver(&self) -> Driver {
        let fleet = self.fleet.clone();
        Driver::new(
            self.store.clone(),
            self.fleet.clone(),
            self.clock.clone(),
            self.ids.clone(),
        )
        .with_owner("model")
        .with_progress(Arc::new(move |e| {
            if let ProgressEvent::Command { what, .. } = e {
                at_most_one(&fleet, &format!("before {what}"));
            }
        }))
    }

    fn pick(&self, k: usize) -> Option<MigrationId> {
        (!self.migrations.is_empty()).then(|| self.migrations[k % self.migrations.len()])
    }

    /// The reference rule: the migrations of the stack asked for after `id` that moved it on
    /// or are moving it (anything but failed or rolled back).
    async fn superseding(&self, id: MigrationId) -> Vec<MigrationId> {
        let all = self
            .store
            .list_migrations(&MigrationQuery::default())
            .await
            .unwrap();
        let me = all.iter().find(|m| m.spec.id == id).unwrap();
        all.iter()
            .filter(|m| (m.spec.requested_at, m.spec.id) > (me.spec.requested_at, me.spec.id))
            .filter(|m| {
                let phase = Migration::replay(m.spec.clone(), &m.events)
                    .unwrap()
                    .phase();
                !matches!(phase, Phase::Failed | Phase::RolledBack)
            })
            .map(|m| m.spec.id)
            .collect()
    }

    async fn apply(&mut self, op: &Op) {
        let d = self.driver();
        match *op {
            Op::Migrate(t) => {
                let res = d
                    .start(MigrationRequest {
                        stack: "app".into(),
                        target: HostId::from(HOSTS[t]),
                        by: "model".into(),
                        retention: DEFAULT_RETENTION,
                    })
                    .await;
                if let Ok(id) = res {
                    self.migrations.push(id);
                }
            }
            Op::Step(k) => {
                if let Some(id) = self.pick(k) {
                    let lease = d.claim(&migration_lease(id)).await.unwrap();
                    let mut m = d.load(id).await.unwrap();
                    let _ = d.step(&mut m, &lease).await;
                }
            }
            Op::Run(k) => {
                if let Some(id) = self.pick(k) {
                    let _ = d.run(id).await;
                }
            }
            Op::Fault(h, f) => self.fleet.get(HOSTS[h]).fail(FAULTS[f], 1),
            Op::Rollback(k) => {
                if let Some(id) = self.pick(k) {
                    let before = d.load(id).await.unwrap();
                    let later = self.superseding(id).await;
                    match d.rollback(id, "model").await {
                        Err(DriveError::Refused(RequestError::Superseded { later: l, .. })) => {
                            assert!(later.contains(&l), "refused naming {l}, not in {later:?}");
                        }
                        Err(DriveError::Refused(_)) => {}
                        _ => assert!(
                            later.is_empty() || before.phase() == Phase::RollingBack,
                            "a rollback of {id} went ahead past later migrations {later:?}"
                        ),
                    }
                }
            }
            Op::Purge(k) => {
                if let Some(id) = self.pick(k) {
                    let _ = d.purge_source(id, "model").await;
                }
            }
            Op::Advance(h) => self.clock.advance(SignedDuration::from_hours(h)),
        }
        at_most_one(&self.fleet, &format!("after {op:?}"));
        for id in &self.migrations {
            let stored = self.store.load_migration(*id).await.unwrap().unwrap();
            Migration::replay(stored.spec, &stored.events).expect("every log replays");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn at_most_one_host_runs_the_stack(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut w = World::new().await;
            for op in &ops {
                w.apply(op).await;
            }
        });
    }
}

/// The case the rule exists for: two committed migrations in a row, then a rollback of the
/// first. Without the rule the first's source starts while the second's target runs.
#[tokio::test]
async fn rolling_back_a_superseded_migration_would_run_two_copies() {
    let mut w = World::new().await;
    for op in [
        Op::Migrate(1),
        Op::Run(0),
        Op::Migrate(2),
        Op::Run(1),
        Op::Rollback(0),
    ] {
        w.apply(&op).await;
    }
    assert_eq!(running(&w.fleet), ["c"]);
}

/// Driving an old, purged migration again must not point the stack's record back at the host
/// it left (the next migration would start from there, with stale data).
#[tokio::test]
async fn an_old_migration_driven_again_leaves_the_stack_record_alone() {
    let mut w = World::new().await;
    for op in [
        Op::Migrate(2),
        Op::Run(0),
        Op::Purge(0),
        Op::Migrate(0),
        Op::Run(1),
        Op::Run(0),
    ] {
        w.apply(&op).await;
    }
    let rec = w.store.get_stack("app").await.unwrap().unwrap();
    assert_eq!(rec.host, Some(HostId::from("a")));
}
