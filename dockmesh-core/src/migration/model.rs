//! Model-based test of the migration driver: a reference model predicts where the migration
//! stands after random steps, faults, crashes, operator requests and clock jumps; the driver
//! runs against fake hosts and must agree with the model while the invariants hold.

use super::*;
use crate::ports::{Clock, MigrationLog, StackStore};
use crate::records::StackRecord;
use crate::testing::{FakeFleet, FakeHost, FakeOp, FixedClock, MemStore, SeqIds};
use crate::types::{HostId, MigrationId, StackFiles};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest, prop_state_machine};
use std::sync::Arc;

const VOLUMES: [(&str, &[u8]); 2] = [("app_db", b"rows and rows"), ("app_files", b"a b c")];
const RETENTION_HOURS: i64 = 72;

#[derive(Debug, Clone)]
enum Transition {
    /// Execute the next command successfully.
    Step,
    /// Execute the next command, and its action fails.
    FailNext,
    /// Execute the next command's action, then crash before its outcome is recorded.
    Crash,
    /// An operator asks for a rollback.
    Rollback,
    /// An operator asks for the source to be purged.
    Purge,
    /// Time passes.
    Advance(i64),
    /// The next volume transfer finds the target not answering (a dropped connection).
    Cut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefPhase {
    Requested,
    Preflighted,
    Transferring {
        volume: usize,
        begun: bool,
    },
    Verified,
    Shipped,
    Started,
    Healthy,
    Committed {
        until_hours: i64,
    },
    Compensating {
        touched_target: bool,
        touched_source: bool,
        cleaned: bool,
        restarted: bool,
    },
    Failed,
    RollingBack {
        stopped: bool,
        restarted: bool,
    },
    RolledBack,
    Purging,
    Purged,
}

#[derive(Debug, Clone)]
struct RefState {
    phase: RefPhase,
    hours: i64,
    /// The volume whose transfer was cut off, and since when (hours).
    interrupted: Option<(usize, i64)>,
}

impl RefState {
    /// Whether the next command is an action that can fail (not a pure record).
    fn next_is_fallible(&self) -> bool {
        use RefPhase::*;
        match self.phase {
            Requested | Preflighted | Verified | Shipped | Started => true,
            Transferring { begun, .. } => begun,
            Compensating {
                touched_target,
                touched_source,
                cleaned,
                restarted,
            } => (touched_target && !cleaned) || (touched_source && !restarted),
            RollingBack { stopped, restarted } => !stopped || !restarted,
            Purging => true,
            Healthy | Committed { .. } | Failed | RolledBack | Purged => false,
        }
    }

    fn settled(&self) -> bool {
        matches!(
            self.phase,
            RefPhase::Committed { .. } | RefPhase::Failed | RefPhase::RolledBack | RefPhase::Purged
        )
    }

    fn fail_forward(&mut self, touched_target: bool, touched_source: bool) {
        self.phase = RefPhase::Compensating {
            touched_target,
            touched_source,
            cleaned: false,
            restarted: false,
        };
    }

    fn step(&mut self, fails: bool) {
        use RefPhase::*;
        self.phase = match self.phase {
            Requested if fails => return self.fail_forward(false, false),
            Requested => Preflighted,
            Preflighted if fails => return self.fail_forward(false, true),
            Preflighted => Transferring {
                volume: 0,
                begun: false,
            },
            Transferring {
                volume,
                begun: false,
            } => Transferring {
                volume,
                begun: true,
            },
            Transferring { .. } if fails => return self.fail_forward(true, true),
            Transferring { volume, .. } if volume + 1 < VOLUMES.len() => Transferring {
                volume: volume + 1,
                begun: false,
            },
            Transferring { .. } => Verified,
            Verified if fails => return self.fail_forward(true, true),
            Verified => Shipped,
            Shipped if fails => return self.fail_forward(true, true),
            Shipped => Started,
            Started if fails => return self.fail_forward(true, true),
            Started => Healthy,
            Healthy => Committed {
                until_hours: self.hours + RETENTION_HOURS,
            },
            p @ Compensating { .. } if fails => p,
            Compensating {
                touched_target,
                touched_source,
                cleaned,
                restarted,
            } => {
                if touched_target && !cleaned {
                    Compensating {
                        touched_target,
                        touched_source,
                        cleaned: true,
                        restarted,
                    }
                } else if touched_source && !restarted {
                    Compensating {
                        touched_target,
                        touched_source,
                        cleaned,
                        restarted: true,
                    }
                } else {
                    Failed
                }
            }
            p @ RollingBack { .. } if fails => p,
            RollingBack {
                stopped: false,
                restarted,
            } => RollingBack {
                stopped: true,
                restarted,
            },
            RollingBack {
                stopped: true,
                restarted: false,
            } => RollingBack {
                stopped: true,
                restarted: true,
            },
            RollingBack { .. } => RolledBack,
            Purging if fails => Purging,
            Purging => Purged,
            p @ (Committed { .. } | Failed | RolledBack | Purged) => p,
        };
    }
}

struct RefMachine;

impl ReferenceStateMachine for RefMachine {
    type State = RefState;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<RefState> {
        Just(RefState {
            phase: RefPhase::Requested,
            hours: 0,
            interrupted: None,
        })
        .boxed()
    }

    fn transitions(_: &RefState) -> BoxedStrategy<Transition> {
        prop_oneof![
            6 => Just(Transition::Step),
            2 => Just(Transition::FailNext),
            2 => Just(Transition::Crash),
            1 => Just(Transition::Rollback),
            1 => Just(Transition::Purge),
            1 => (1i64..50).prop_map(Transition::Advance),
            2 => Just(Transition::Cut),
        ]
        .boxed()
    }

    fn preconditions(state: &RefState, t: &Transition) -> bool {
        match t {
            Transition::FailNext => state.next_is_fallible(),
            Transition::Cut => matches!(state.phase, RefPhase::Transferring { begun: true, .. }),
            Transition::Crash => !state.settled(),
            _ => true,
        }
    }

    fn apply(mut state: RefState, t: &Transition) -> RefState {
        match t {
            Transition::Step => {
                if !state.settled() {
                    state.step(false)
                }
            }
            // The action ran but its outcome was never recorded: nothing changed.
            Transition::Crash => {}
            Transition::FailNext => state.step(true),
            Transition::Rollback => {
                if let RefPhase::Committed { until_hours } = state.phase
                    && state.hours < until_hours
                {
                    state.phase = RefPhase::RollingBack {
                        stopped: false,
                        restarted: false,
                    };
                }
            }
            Transition::Purge => {
                if matches!(state.phase, RefPhase::Committed { .. }) {
                    state.phase = RefPhase::Purging;
                }
            }
            Transition::Advance(h) => state.hours += h,
            Transition::Cut => {
                let RefPhase::Transferring { volume, .. } = state.phase else {
                    unreachable!("precondition")
                };
                match state.interrupted {
                    // The first cut is recorded; the transfer starts again later.
                    None => state.interrupted = Some((volume, state.hours)),
                    // Past the deadline (any advance is hours, the deadline minutes): failed.
                    Some((_, since)) if state.hours > since => state.fail_forward(true, true),
                    // Within it: the driver waits and retries; nothing is recorded.
                    Some(_) => {}
                }
            }
        }
        // An interruption belongs to the transfer of one volume.
        if let Some((v, _)) = state.interrupted
            && state.phase
                != (RefPhase::Transferring {
                    volume: v,
                    begun: true,
                })
        {
            state.interrupted = None;
        }
        state
    }
}

struct Sut {
    rt: tokio::runtime::Runtime,
    store: Arc<MemStore>,
    fleet: Arc<FakeFleet>,
    clock: Arc<FixedClock>,
    ids: Arc<SeqIds>,
    id: MigrationId,
}

impl Sut {
    fn driver(&self) -> Driver {
        Driver::new(
            self.store.clone(),
            self.fleet.clone(),
            self.clock.clone(),
            self.ids.clone(),
        )
        .with_owner("model")
    }

    fn lease(&self, d: &Driver) -> crate::ports::Lease {
        self.rt
            .block_on(d.claim(&crate::ports::migration_lease(self.id)))
            .unwrap()
    }

    fn load(&self) -> Migration {
        self.rt.block_on(self.driver().load(self.id)).unwrap()
    }

    fn inject_fault_for(&self, cmd: &Command) {
        let (host, op) = match cmd {
            Command::RunPreflight => ("dst", FakeOp::Snapshot),
            Command::StopSource => ("src", FakeOp::Stop),
            Command::TransferVolume(_) => ("dst", FakeOp::CorruptImport),
            Command::ShipFiles => ("dst", FakeOp::WriteFiles),
            Command::StartTarget => ("dst", FakeOp::Deploy),
            Command::CheckTargetHealth => ("dst", FakeOp::Health),
            Command::CleanTarget { .. } => ("dst", FakeOp::Remove),
            Command::RestartSource => ("src", FakeOp::Start),
            Command::StopTarget => ("dst", FakeOp::Stop),
            Command::PurgeSource { .. } => ("src", FakeOp::Remove),
            other => panic!("{other:?} performs no action and cannot fail"),
        };
        self.fleet.get(host).fail(op, 1);
    }

    fn check_invariants(&self, m: &Migration) {
        let (src, dst) = (self.fleet.get("src"), self.fleet.get("dst"));
        let committed = matches!(
            m.phase(),
            Phase::Committed
                | Phase::Purging
                | Phase::Purged
                | Phase::RollingBack
                | Phase::RolledBack
        );
        if src.volume("app_db").is_none() || src.stack("app").is_none_or(|s| !s.deployed) {
            assert!(
                matches!(m.phase(), Phase::Purging | Phase::Purged),
                "the source was removed in phase {:?}",
                m.phase()
            );
        }
        if dst.stack("app").is_some_and(|s| s.deployed) {
            assert_eq!(
                m.verified_volumes().len(),
                VOLUMES.len(),
                "the target was started before every volume was verified"
            );
        }
        if m.phase() == Phase::Failed {
            assert!(
                src.stack("app").unwrap().running,
                "failed: the source runs again"
            );
            assert!(
                dst.holds_nothing_of("app"),
                "failed: the target holds nothing"
            );
            assert!(
                dst.volume_names().is_empty(),
                "failed: no volume left on the target"
            );
        }
        if m.phase().is_settled() {
            let both = src.stack("app").is_some_and(|s| s.running)
                && dst.stack("app").is_some_and(|s| s.running);
            assert!(!both, "source and target both run the stack at the end");
        }
        if committed && m.phase() != Phase::RolledBack {
            for (name, data) in VOLUMES {
                assert_eq!(
                    dst.volume(name).as_deref(),
                    Some(data),
                    "target data of {name}"
                );
            }
        }
        for (name, data) in VOLUMES {
            if let Some(d) = src.volume(name) {
                assert_eq!(d, data, "source data of {name} never changes");
            }
        }
    }
}

fn phase_matches(model: &RefPhase, phase: Phase) -> bool {
    use RefPhase as R;
    matches!(
        (model, phase),
        (R::Requested, Phase::Requested)
            | (R::Preflighted, Phase::PreflightPassed)
            | (R::Transferring { .. }, Phase::SourceStopped)
            | (R::Verified, Phase::VolumesVerified)
            | (R::Shipped, Phase::FilesShipped)
            | (R::Started, Phase::TargetStarted)
            | (R::Healthy, Phase::TargetHealthy)
            | (R::Committed { .. }, Phase::Committed)
            | (R::Compensating { .. }, Phase::Compensating)
            | (R::Failed, Phase::Failed)
            | (R::RollingBack { .. }, Phase::RollingBack)
            | (R::RolledBack, Phase::RolledBack)
            | (R::Purging, Phase::Purging)
            | (R::Purged, Phase::Purged)
    )
}

impl StateMachineTest for Sut {
    type SystemUnderTest = Sut;
    type Reference = RefMachine;

    fn init_test(_: &RefState) -> Sut {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = Arc::new(MemStore::new());
        let fleet = Arc::new(FakeFleet::new());
        let src = Arc::new(FakeHost::new("src"));
        let files = StackFiles {
            name: "app".into(),
            compose: "c".into(),
            env: None,
        };
        src.seed_stack(files.clone(), &VOLUMES, 1 << 20);
        fleet.add(src);
        fleet.add(Arc::new(FakeHost::new("dst")));
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let clock = Arc::new(FixedClock::new(start));
        let ids = Arc::new(SeqIds::default());
        rt.block_on(store.put_stack(
            &StackRecord {
                name: "app".into(),
                compose: files.compose,
                env: None,
                host: Some(HostId::from("src")),
                updated_at: start,
            },
            None,
        ))
        .unwrap();
        let driver = Driver::new(store.clone(), fleet.clone(), clock.clone(), ids.clone());
        let id = rt
            .block_on(driver.start(MigrationRequest {
                stack: "app".into(),
                target: HostId::from("dst"),
                by: "model".into(),
                retention: SignedDuration::from_hours(RETENTION_HOURS),
            }))
            .unwrap();
        Sut {
            rt,
            store,
            fleet,
            clock,
            ids,
            id,
        }
    }

    fn apply(sut: Sut, model: &RefState, t: Transition) -> Sut {
        let d = sut.driver();
        let lease = sut.lease(&d);
        let fence = lease.fence();
        let mut m = sut.load();
        match t {
            Transition::Step => {
                if let Err(e) = sut.rt.block_on(d.step(&mut m, &lease)) {
                    panic!("a step without faults failed: {e}");
                }
            }
            Transition::FailNext => {
                let cmd = m.next_command().expect("a fallible command is next");
                sut.inject_fault_for(&cmd);
                let _ = sut.rt.block_on(d.step(&mut m, &lease));
            }
            Transition::Crash => {
                let cmd = m.next_command().expect("not settled");
                let _ = sut.rt.block_on(d.execute(&m, cmd));
            }
            Transition::Rollback => {
                let allowed = m.request_rollback(sut.clock.now(), "op", &[]).is_ok();
                let res = sut.rt.block_on(async {
                    let mut m = d.load(sut.id).await?;
                    let e = m.request_rollback(sut.clock.now(), "op", &[])?;
                    d.record(&mut m, e, &fence).await
                });
                assert_eq!(res.is_ok(), allowed);
            }
            Transition::Purge => {
                let res = sut.rt.block_on(async {
                    let mut m = d.load(sut.id).await?;
                    let e = m.request_purge(sut.clock.now(), "op")?;
                    d.record(&mut m, e, &fence).await
                });
                let _ = res;
            }
            Transition::Advance(h) => sut.clock.advance(SignedDuration::from_hours(h)),
            Transition::Cut => {
                let dst = sut.fleet.get("dst");
                dst.set_online(false);
                let _ = sut.rt.block_on(d.step(&mut m, &lease));
                dst.set_online(true);
            }
        }
        let m = sut.load();
        assert!(
            phase_matches(&model.phase, m.phase()),
            "after {t:?}: the model says {:?}, the driver is in {:?}",
            model.phase,
            m.phase()
        );
        sut
    }

    fn check_invariants(sut: &Sut, _: &RefState) {
        let m = sut.load();
        sut.check_invariants(&m);
        let stored = sut
            .rt
            .block_on(sut.store.load_migration(sut.id))
            .unwrap()
            .unwrap();
        let replayed = Migration::replay(stored.spec, &stored.events).unwrap();
        assert_eq!(replayed, m, "replaying the log gives the same state");
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn the_driver_agrees_with_the_model_under_random_faults(sequential 1..60 => Sut);
}
