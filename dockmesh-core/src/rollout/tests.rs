//! Tests of the rollout rules: one data-driven test per rule, and property tests that simulate
//! fleets over many ticks.

use super::*;
use crate::audit::{AGENT_UPGRADE_POLICY, AGENT_UPGRADE_RUN, AuditEvent, STACK_DEPLOY};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

const SERVER: &str = "1.5.0";
const OLD: &str = "1.4.0";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_750_000_000 + secs).unwrap()
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn order() -> &'static UpgradeOrder {
    static ORDER: std::sync::LazyLock<UpgradeOrder> = std::sync::LazyLock::new(|| UpgradeOrder {
        version: SERVER.into(),
        binary: "dockmesh-1.5.0-x86_64-linux".into(),
        size: 0,
        sha256: "ab".repeat(32),
        signature: None,
        allow_downgrade: false,
    });
    &ORDER
}

/// Every change of the outcome as (agent id, kind of the new state).
fn changes<'a>(out: &'a TickOutcome<'_>) -> Vec<(&'a str, &'static str)> {
    out.upgrade_changes()
        .map(|(_, id, to)| (id.as_str(), kind(&to)))
        .collect()
}

fn agent(id: &str, version: &str, connected: bool, upgrade: UpgradeState) -> AgentRecord {
    AgentRecord {
        id: AgentId::from(id),
        name: id.into(),
        version: version.into(),
        commit: None,
        protocol_version: 1,
        arch: "x86_64".into(),
        docker_version: "28.2.2".into(),
        last_seen: None,
        connection: if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        },
        upgrade,
    }
}

/// A connected, idle agent reporting `version`.
fn idle(id: &str, version: &str) -> AgentRecord {
    agent(id, version, true, UpgradeState::Idle)
}

/// `n` connected, idle, drifted agents named `a00`, `a01`, …
fn drifted_fleet(n: usize) -> Vec<AgentRecord> {
    (0..n).map(|i| idle(&format!("a{i:02}"), OLD)).collect()
}

fn in_flight(since: Timestamp, target: &str) -> UpgradeState {
    UpgradeState::InFlight {
        since,
        target_version: target.into(),
    }
}

fn failed() -> UpgradeState {
    UpgradeState::Failed {
        at: t(-100),
        reason: "timeout".into(),
    }
}

fn pending_manual() -> UpgradeState {
    UpgradeState::PendingManual {
        since: t(-100),
        reason: "no route to the download host".into(),
    }
}

fn requested() -> UpgradeState {
    UpgradeState::Requested { at: t(-10) }
}

fn policy(mode: RolloutMode) -> RolloutPolicy {
    RolloutPolicy {
        mode,
        ..RolloutPolicy::default()
    }
}

fn staged(percent: u8, canaries: u32, halt_after_failures: u32) -> RolloutPolicy {
    RolloutPolicy {
        mode: RolloutMode::Staged,
        staged: StagedPolicy {
            percent,
            canaries,
            halt_after_failures,
            ..StagedPolicy::default()
        },
        ..RolloutPolicy::default()
    }
}

fn kind(u: &UpgradeState) -> &'static str {
    match u {
        UpgradeState::Idle => "idle",
        UpgradeState::Requested { .. } => "requested",
        UpgradeState::InFlight { .. } => "in_flight",
        UpgradeState::Failed { .. } => "failed",
        UpgradeState::PendingManual { .. } => "pending_manual",
    }
}

/// Run one tick at `now` and check the agents dispatched and the transitions (agent id and the
/// kind of its new state). Returns the outcome for further checks.
#[track_caller]
fn check<'a>(
    now: Timestamp,
    policy: &RolloutPolicy,
    state: &RolloutState,
    agents: &'a [AgentRecord],
    dispatched: &[&str],
    transitions: &[(&str, &str)],
) -> TickOutcome<'a> {
    let out = tick(now, policy, state, order(), agents);
    let got: Vec<&str> = out.dispatches.iter().map(|d| d.agent.as_str()).collect();
    assert_eq!(got, dispatched, "dispatched agents");
    assert_eq!(changes(&out), transitions, "transitions");
    for d in &out.dispatches {
        assert_eq!(
            agents[d.index].id, *d.agent,
            "dispatch index names the agent"
        );
    }
    for (index, id, _) in out.upgrade_changes() {
        assert_eq!(agents[index].id, *id, "change index names the agent");
    }
    assert_eq!(out.audit_event_count(), out.audit_events().count());
    assert_eq!(out.state.last_evaluated_at, Some(now));
    out
}

// --- drift ---

#[test]
fn drift_is_string_inequality_not_semver_order() {
    let agents = vec![
        idle("same", SERVER),
        idle("v-prefix", "v1.5.0"),
        idle("build", "1.5.0+abc"),
        idle("older", "1.4.9"),
        idle("newer", "1.6.0"),
    ];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &["v-prefix", "build", "older", "newer"],
        &[
            ("v-prefix", "in_flight"),
            ("build", "in_flight"),
            ("older", "in_flight"),
            ("newer", "in_flight"),
        ],
    );
    assert_eq!(out.drifted, 4);
}

#[test]
fn an_up_to_date_fleet_gets_nothing_in_any_mode() {
    let agents = vec![idle("a", SERVER), idle("b", SERVER)];
    for mode in [RolloutMode::Manual, RolloutMode::Auto, RolloutMode::Staged] {
        let out = check(
            t(0),
            &policy(mode),
            &RolloutState::default(),
            &agents,
            &[],
            &[],
        );
        assert_eq!(out.audit_events().count(), 0);
        assert_eq!(out.drifted, 0);
    }
}

// --- auto ---

#[test]
fn auto_dispatches_every_drifted_connected_idle_agent_and_nothing_else() {
    let agents = vec![
        idle("up-to-date", SERVER),
        idle("drifted", OLD),
        agent("offline", OLD, false, UpgradeState::Idle),
        agent("in-flight", OLD, true, in_flight(t(-60), SERVER)),
        agent("failed", OLD, true, failed()),
        agent("pending-manual", OLD, true, pending_manual()),
        idle("drifted-2", "0.9.0"),
    ];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &["drifted", "drifted-2"],
        &[("drifted", "in_flight"), ("drifted-2", "in_flight")],
    );
    assert!(out.dispatches.iter().all(|d| d.trigger == Trigger::Auto));
    assert_eq!(
        out.automatic,
        Automatic::Dispatched {
            wave: 0,
            limit: 2,
            count: 2
        }
    );
    // Auto mode does not count waves: a later switch to staged starts with its canaries.
    assert_eq!(out.state.waves, 0);
    assert_eq!(out.state.last_wave_at, None);
    match &out.upgrade_changes().next().unwrap().2 {
        UpgradeState::InFlight {
            since,
            target_version,
        } => {
            assert_eq!(*since, t(0));
            assert_eq!(target_version, SERVER);
        }
        other => panic!("expected in flight, got {other:?}"),
    }
}

#[test]
fn requests_and_automatic_dispatches_come_out_in_slice_order() {
    let agents = vec![
        idle("a", OLD),
        agent("b", OLD, true, requested()),
        idle("c", OLD),
        agent("d", SERVER, true, in_flight(t(-5), SERVER)),
        agent("e", OLD, true, requested()),
        idle("f", OLD),
    ];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &["a", "b", "c", "e", "f"],
        &[
            ("a", "in_flight"),
            ("b", "in_flight"),
            ("c", "in_flight"),
            ("d", "idle"),
            ("e", "in_flight"),
            ("f", "in_flight"),
        ],
    );
    let triggers: Vec<Trigger> = out.dispatches.iter().map(|d| d.trigger).collect();
    assert_eq!(
        triggers,
        [
            Trigger::Auto,
            Trigger::Requested,
            Trigger::Auto,
            Trigger::Requested,
            Trigger::Auto
        ]
    );
}

#[test]
fn auto_with_nothing_eligible_says_so() {
    let agents = vec![agent("offline", OLD, false, UpgradeState::Idle)];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &[],
        &[],
    );
    assert_eq!(out.automatic, Automatic::NothingEligible);
    assert_eq!(out.eligible, 0);
}

// --- manual and requests ---

#[test]
fn manual_dispatches_nothing_by_itself() {
    let fleet = drifted_fleet(5);
    let out = check(
        t(0),
        &policy(RolloutMode::Manual),
        &RolloutState::default(),
        &fleet,
        &[],
        &[],
    );
    assert_eq!(out.automatic, Automatic::Manual);
    assert_eq!(out.audit_events().count(), 0);
}

#[test]
fn a_request_is_dispatched_in_every_mode_and_while_halted() {
    let agents = vec![
        agent("asked", OLD, true, requested()),
        agent("asked-offline", OLD, false, requested()),
    ];
    let halted = RolloutState {
        halted: Some(Halt {
            at: t(-5),
            reason: "1 failure".into(),
        }),
        rollout_version: Some(SERVER.into()),
        ..RolloutState::default()
    };
    for (mode, state) in [
        (RolloutMode::Manual, RolloutState::default()),
        (RolloutMode::Auto, RolloutState::default()),
        (RolloutMode::Staged, RolloutState::default()),
        (RolloutMode::Staged, halted.clone()),
        (RolloutMode::Auto, halted.clone()),
    ] {
        let out = check(
            t(0),
            &policy(mode),
            &state,
            &agents,
            &["asked"],
            &[("asked", "in_flight")],
        );
        assert_eq!(out.dispatches[0].trigger, Trigger::Requested);
        // A request is not a wave.
        assert_eq!(out.state.waves, state.waves);
        assert_eq!(out.state.last_wave_at, state.last_wave_at);
    }
}

#[test]
fn a_request_for_an_agent_that_caught_up_is_dropped() {
    let agents = vec![agent("asked", SERVER, true, requested())];
    check(
        t(0),
        &policy(RolloutMode::Manual),
        &RolloutState::default(),
        &agents,
        &[],
        &[("asked", "idle")],
    );
}

#[test]
fn request_upgrade_rules() {
    struct Case {
        upgrade: UpgradeState,
        version: &'static str,
        expect: Result<&'static str, &'static str>,
    }
    let cases = [
        Case {
            upgrade: UpgradeState::Idle,
            version: OLD,
            expect: Ok("requested"),
        },
        Case {
            upgrade: failed(),
            version: OLD,
            expect: Ok("requested"),
        },
        Case {
            upgrade: pending_manual(),
            version: OLD,
            expect: Ok("requested"),
        },
        Case {
            upgrade: in_flight(t(-1), SERVER),
            version: OLD,
            expect: Err("in flight"),
        },
        Case {
            upgrade: UpgradeState::Idle,
            version: SERVER,
            expect: Err("already reports"),
        },
    ];
    for c in cases {
        let a = agent("x", c.version, true, c.upgrade.clone());
        match (request_upgrade(t(0), &a, SERVER), c.expect) {
            (Ok(u), Ok(k)) => {
                assert_eq!(kind(&u), k);
                assert_eq!(u, UpgradeState::Requested { at: t(0) });
            }
            (Err(e), Err(msg)) => assert!(e.to_string().contains(msg), "{e} ~ {msg}"),
            (got, want) => panic!("{:?}: got {got:?}, want {want:?}", c.upgrade),
        }
    }
    // Asking twice keeps the first request.
    let a = agent("x", OLD, false, requested());
    assert_eq!(request_upgrade(t(50), &a, SERVER), Ok(requested()));
}

// --- in flight ---

#[test]
fn an_upgrade_in_flight_is_never_sent_twice() {
    let agents = vec![agent("busy", OLD, true, in_flight(t(-10), SERVER))];
    for mode in [RolloutMode::Auto, RolloutMode::Staged] {
        check(
            t(0),
            &policy(mode),
            &RolloutState::default(),
            &agents,
            &[],
            &[],
        );
    }
}

#[test]
fn an_upgrade_that_reports_its_target_is_done() {
    let agents = vec![
        agent("done", SERVER, true, in_flight(t(-10), SERVER)),
        // Disconnected while restarting into the new binary still counts once it reported.
        agent("done-offline", SERVER, false, in_flight(t(-10), SERVER)),
    ];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &[],
        &[("done", "idle"), ("done-offline", "idle")],
    );
    assert_eq!(out.state.failures, 0);
}

#[test]
fn an_upgrade_to_an_older_target_completes_and_the_agent_is_sent_the_new_one() {
    // The server moved on to 1.5.0 while the agent was upgrading to 1.4.0.
    let agents = vec![agent("a", OLD, true, in_flight(t(-10), OLD))];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &["a"],
        &[("a", "in_flight")],
    );
    assert_eq!(out.upgrade_changes().count(), 1, "one change per agent");
    assert!(out.transitions.is_empty());
}

#[test]
fn the_upgrade_timeout_marks_a_failure_at_exactly_the_timeout() {
    struct Case {
        age: SignedDuration,
        expect: &'static [(&'static str, &'static str)],
        failures: u32,
    }
    let cases = [
        Case {
            age: mins(5) - SignedDuration::from_secs(1),
            expect: &[],
            failures: 0,
        },
        Case {
            age: mins(5),
            expect: &[("slow", "failed")],
            failures: 1,
        },
        Case {
            age: mins(50),
            expect: &[("slow", "failed")],
            failures: 1,
        },
        // A clock that went backwards never fails an upgrade.
        Case {
            age: -mins(1),
            expect: &[],
            failures: 0,
        },
    ];
    for c in cases {
        let agents = vec![agent("slow", OLD, true, in_flight(t(0) - c.age, SERVER))];
        let out = check(
            t(0),
            &policy(RolloutMode::Auto),
            &RolloutState::default(),
            &agents,
            &[],
            c.expect,
        );
        assert_eq!(out.state.failures, c.failures, "age {:#}", c.age);
    }
}

#[test]
fn failed_and_pending_manual_agents_are_not_retried_but_clear_once_up_to_date() {
    let agents = vec![
        agent("failed", OLD, true, failed()),
        agent("manual", OLD, true, pending_manual()),
        agent("failed-fixed", SERVER, true, failed()),
        agent("manual-installed", SERVER, true, pending_manual()),
    ];
    let out = check(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        &agents,
        &[],
        &[("failed-fixed", "idle"), ("manual-installed", "idle")],
    );
    assert_eq!(out.automatic, Automatic::NothingEligible);
}

// --- agent reports ---

#[test]
fn cannot_download_makes_the_agent_pending_manual_without_counting_a_failure() {
    let state = RolloutState::default();
    let report = AgentReport::CannotDownload {
        reason: "air-gapped".into(),
    };
    let out = handle_report(t(3), &in_flight(t(0), SERVER), &state, &report);
    assert_eq!(
        out,
        ReportOutcome::Changed {
            upgrade: UpgradeState::PendingManual {
                since: t(3),
                reason: "air-gapped".into()
            },
            state: state.clone(),
        }
    );
    // And it stays visible: the evaluator does not send it the order again, even in auto mode.
    let agents = vec![agent(
        "gapped",
        OLD,
        true,
        UpgradeState::PendingManual {
            since: t(3),
            reason: "air-gapped".into(),
        },
    )];
    check(
        t(600),
        &policy(RolloutMode::Auto),
        &state,
        &agents,
        &[],
        &[],
    );
}

#[test]
fn a_reported_failure_counts_and_halts_the_staged_rollout_at_the_next_tick() {
    let state = RolloutState::default();
    let report = AgentReport::UpgradeFailed {
        reason: "checksum mismatch".into(),
    };
    let ReportOutcome::Changed { upgrade, state } =
        handle_report(t(1), &in_flight(t(0), SERVER), &state, &report)
    else {
        panic!("an in-flight upgrade takes the report")
    };
    assert_eq!(kind(&upgrade), "failed");
    assert_eq!(state.failures, 1);
    // The rollout version is already this server's, so the failure belongs to this rollout.
    let state = RolloutState {
        rollout_version: Some(SERVER.into()),
        ..state
    };
    let fleet = drifted_fleet(3);
    let out = check(t(2), &staged(10, 0, 1), &state, &fleet, &[], &[]);
    assert_eq!(out.automatic, Automatic::Halted);
}

#[test]
fn a_report_without_an_upgrade_in_flight_is_ignored() {
    let report = AgentReport::CannotDownload { reason: "x".into() };
    for u in [UpgradeState::Idle, failed(), requested(), pending_manual()] {
        assert_eq!(
            handle_report(t(0), &u, &RolloutState::default(), &report),
            ReportOutcome::Ignored
        );
    }
}

// --- staged ---

#[test]
fn staged_wave_size_is_the_ceiling_of_the_percentage_and_at_least_one() {
    struct Case {
        drifted: usize,
        percent: u8,
        wave: usize,
    }
    let cases = [
        Case {
            drifted: 25,
            percent: 10,
            wave: 3,
        },
        Case {
            drifted: 20,
            percent: 10,
            wave: 2,
        },
        Case {
            drifted: 5,
            percent: 1,
            wave: 1,
        },
        Case {
            drifted: 7,
            percent: 100,
            wave: 7,
        },
        Case {
            drifted: 3,
            percent: 50,
            wave: 2,
        },
    ];
    for c in cases {
        let agents = drifted_fleet(c.drifted);
        let out = tick(
            t(0),
            &staged(c.percent, 0, 1),
            &RolloutState::default(),
            order(),
            &agents,
        );
        assert_eq!(
            out.dispatches.len(),
            c.wave,
            "{}% of {}",
            c.percent,
            c.drifted
        );
        // The first agents in the order given.
        let want: Vec<usize> = (0..c.wave).collect();
        let got: Vec<usize> = out.dispatches.iter().map(|d| d.index).collect();
        assert_eq!(got, want);
        assert!(out.dispatches.iter().all(|d| d.trigger == Trigger::Wave));
        assert_eq!(out.state.waves, 1);
        assert_eq!(out.state.last_wave_at, Some(t(0)));
    }
}

#[test]
fn the_percentage_counts_every_drifted_agent_of_the_rollout() {
    // 30 drifted, only 10 of them connected and idle: a 10% wave is 3, not 1.
    let mut agents = drifted_fleet(10);
    for i in 0..20 {
        agents.push(agent(&format!("off{i:02}"), OLD, false, UpgradeState::Idle));
    }
    let out = tick(
        t(0),
        &staged(10, 0, 1),
        &RolloutState::default(),
        order(),
        &agents,
    );
    assert_eq!(out.dispatches.len(), 3);
    assert_eq!(out.drifted, 30);
    assert_eq!(out.eligible, 10);
    // Later, with 20 agents caught up, the wave keeps its size: the base is the rollout's.
    let state = RolloutState {
        last_wave_at: None,
        ..out.state
    };
    assert_eq!(state.wave_base, 30);
    let agents: Vec<AgentRecord> = drifted_fleet(10);
    let out = tick(t(600), &staged(10, 0, 1), &state, order(), &agents);
    assert_eq!(out.dispatches.len(), 3);
}

#[test]
fn canaries_go_first_then_percentage_waves_after_the_gap() {
    let policy = staged(50, 2, 1);
    let mut agents = drifted_fleet(10);
    let out = check(
        t(0),
        &policy,
        &RolloutState::default(),
        &agents,
        &["a00", "a01"],
        &[("a00", "in_flight"), ("a01", "in_flight")],
    );
    assert!(out.dispatches.iter().all(|d| d.trigger == Trigger::Canary));
    assert_eq!(
        out.automatic,
        Automatic::Dispatched {
            wave: 1,
            limit: 2,
            count: 2
        }
    );
    let state = out.state.clone();
    let changes = out.owned_changes();
    apply_changes(&mut agents, changes);
    // The canaries upgrade.
    agents[0].version = SERVER.into();
    agents[1].version = SERVER.into();
    // Before the gap: nothing but the canaries' completion.
    let early = check(
        t(299),
        &policy,
        &state,
        &agents,
        &[],
        &[("a00", "idle"), ("a01", "idle")],
    );
    assert_eq!(early.automatic, Automatic::WaitingForGap { until: t(300) });
    // After the gap: 50% of the 10 agents of the rollout.
    let out = check(
        t(300),
        &policy,
        &state,
        &agents,
        &["a02", "a03", "a04", "a05", "a06"],
        &[
            ("a00", "idle"),
            ("a01", "idle"),
            ("a02", "in_flight"),
            ("a03", "in_flight"),
            ("a04", "in_flight"),
            ("a05", "in_flight"),
            ("a06", "in_flight"),
        ],
    );
    assert!(out.dispatches.iter().all(|d| d.trigger == Trigger::Wave));
    assert_eq!(out.state.waves, 2);
}

#[test]
fn fewer_agents_than_canaries_makes_a_smaller_canary_wave() {
    let fleet = drifted_fleet(2);
    let out = tick(
        t(0),
        &staged(10, 5, 1),
        &RolloutState::default(),
        order(),
        &fleet,
    );
    assert_eq!(out.dispatches.len(), 2);
    assert_eq!(
        out.automatic,
        Automatic::Dispatched {
            wave: 1,
            limit: 5,
            count: 2
        }
    );
}

#[test]
fn the_minimum_gap_between_waves_is_enforced() {
    struct Case {
        since_last_wave: SignedDuration,
        dispatched: usize,
    }
    let cases = [
        Case {
            since_last_wave: mins(5) - SignedDuration::from_nanos(1),
            dispatched: 0,
        },
        Case {
            since_last_wave: mins(5),
            dispatched: 1,
        },
        Case {
            since_last_wave: mins(60),
            dispatched: 1,
        },
        Case {
            since_last_wave: -mins(1),
            dispatched: 0,
        },
    ];
    for c in cases {
        let state = RolloutState {
            last_wave_at: Some(t(0) - c.since_last_wave),
            waves: 1,
            rollout_version: Some(SERVER.into()),
            ..RolloutState::default()
        };
        let fleet = drifted_fleet(5);
        let out = tick(t(0), &staged(10, 0, 1), &state, order(), &fleet);
        assert_eq!(
            out.dispatches.len(),
            c.dispatched,
            "{:#}",
            c.since_last_wave
        );
        if c.dispatched == 0 {
            assert_eq!(
                out.automatic,
                Automatic::WaitingForGap {
                    until: state.last_wave_at.unwrap() + mins(5)
                }
            );
            assert_eq!(out.state.last_wave_at, state.last_wave_at);
        }
    }
}

// --- halting ---

#[test]
fn failures_halt_a_staged_rollout_until_an_operator_resumes() {
    let policy = staged(100, 0, 1);
    let state = RolloutState {
        rollout_version: Some(SERVER.into()),
        ..RolloutState::default()
    };
    let mut agents = drifted_fleet(3);
    agents[0].upgrade = in_flight(t(-600), SERVER);
    agents.push(agent("asked", OLD, true, requested()));
    let out = check(
        t(0),
        &policy,
        &state,
        &agents,
        &["asked"],
        &[("a00", "failed"), ("asked", "in_flight")],
    );
    assert_eq!(out.automatic, Automatic::Halted);
    assert_eq!(out.state.failures, 1);
    let halt = out.state.halted.clone().expect("halted");
    assert_eq!(halt.at, t(0));
    assert!(halt.reason.contains("1 upgrade failure"), "{}", halt.reason);
    // Still halted at later ticks, the gap long passed. The requested agent upgraded.
    let state = out.state.clone();
    let changes = out.owned_changes();
    apply_changes(&mut agents, changes);
    agents[3].version = SERVER.into();
    let later = check(t(3600), &policy, &state, &agents, &[], &[("asked", "idle")]);
    assert_eq!(later.automatic, Automatic::Halted);
    assert_eq!(later.state.halted, Some(halt.clone()));
    let state = later.state.clone();
    let changes = later.owned_changes();
    apply_changes(&mut agents, changes);
    // The operator resumes: the next tick dispatches the remaining idle agents, not the failed one.
    let resumed = resume(t(3700), "ops", &state).unwrap();
    assert_eq!(resumed.state.halted, None);
    assert_eq!(resumed.state.failures, 0);
    assert_eq!(resumed.event.action, AGENT_UPGRADE_POLICY);
    assert_eq!(resumed.event.actor, "ops");
    assert_eq!(resumed.event.detail["action"], "resume");
    assert_eq!(resumed.event.detail["failures"], "1");
    check(
        t(3800),
        &policy,
        &resumed.state,
        &agents,
        &["a01", "a02"],
        &[("a01", "in_flight"), ("a02", "in_flight")],
    );
    assert_eq!(
        resume(t(0), "ops", &RolloutState::default()),
        Err(RolloutError::NotHalted)
    );
}

#[test]
fn the_halt_threshold_is_the_number_of_failures() {
    struct Case {
        halt_after: u32,
        failures_before: u32,
        halted: bool,
    }
    let cases = [
        Case {
            halt_after: 2,
            failures_before: 0,
            halted: false,
        },
        Case {
            halt_after: 2,
            failures_before: 1,
            halted: true,
        },
        Case {
            halt_after: 0,
            failures_before: 10,
            halted: false,
        },
    ];
    for c in cases {
        let state = RolloutState {
            failures: c.failures_before,
            rollout_version: Some(SERVER.into()),
            ..RolloutState::default()
        };
        let mut agents = drifted_fleet(2);
        agents[0].upgrade = in_flight(t(-600), SERVER);
        let out = tick(
            t(0),
            &staged(100, 0, c.halt_after),
            &state,
            order(),
            &agents,
        );
        assert_eq!(out.state.failures, c.failures_before + 1);
        assert_eq!(
            out.state.halted.is_some(),
            c.halted,
            "halt after {}",
            c.halt_after
        );
        assert_eq!(out.dispatches.len(), usize::from(!c.halted));
    }
}

#[test]
fn failures_do_not_halt_auto_mode_but_a_halt_stops_it() {
    let mut agents = drifted_fleet(2);
    agents[0].upgrade = in_flight(t(-600), SERVER);
    let out = tick(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        order(),
        &agents,
    );
    assert_eq!(out.state.failures, 1);
    assert_eq!(out.state.halted, None);
    assert_eq!(out.dispatches.len(), 1);
    // A halt left by a staged rollout holds in auto mode too, until resumed.
    let halted = RolloutState {
        halted: Some(Halt {
            at: t(0),
            reason: "x".into(),
        }),
        ..out.state
    };
    let fleet = drifted_fleet(2);
    let out = tick(t(60), &policy(RolloutMode::Auto), &halted, order(), &fleet);
    assert_eq!(out.automatic, Automatic::Halted);
    assert!(out.dispatches.is_empty());
}

#[test]
fn a_new_server_version_starts_a_new_rollout_and_keeps_a_halt() {
    let halt = Halt {
        at: t(-50),
        reason: "1 failure".into(),
    };
    let state = RolloutState {
        halted: Some(halt.clone()),
        last_wave_at: Some(t(-10)),
        waves: 4,
        failures: 1,
        last_evaluated_at: Some(t(-60)),
        rollout_version: Some(OLD.into()),
        wave_base: 500,
    };
    let fleet = drifted_fleet(3);
    let out = tick(t(0), &staged(10, 0, 1), &state, order(), &fleet);
    assert_eq!(
        out.state,
        RolloutState {
            halted: Some(halt),
            last_wave_at: Some(t(-10)),
            waves: 0,
            failures: 0,
            last_evaluated_at: Some(t(0)),
            rollout_version: Some(SERVER.into()),
            wave_base: 3,
        }
    );
    // The same version again: the rollout continues.
    let fleet = drifted_fleet(2);
    let again = tick(t(60), &staged(10, 0, 1), &out.state, order(), &fleet);
    assert_eq!(again.state.wave_base, 3);
}

// --- audit ---

#[test]
fn a_dispatch_is_audited_as_stack_deploy_agent_upgrade() {
    let agents = vec![idle("host-7", OLD)];
    let out = tick(
        t(0),
        &policy(RolloutMode::Auto),
        &RolloutState::default(),
        order(),
        &agents,
    );
    let events: Vec<AuditEvent> = out.audit_events().collect();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.at, t(0));
    assert_eq!(e.actor, "system");
    assert_eq!(e.action, STACK_DEPLOY);
    assert_eq!(e.target, "host-7");
    let detail: Vec<(&str, &str)> = e
        .detail
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        detail,
        [
            ("action", "agent-upgrade"),
            ("agent", "host-7"),
            ("binary", "dockmesh-1.5.0-x86_64-linux"),
            ("server_version", SERVER),
            ("trigger", "auto"),
        ]
    );
}

#[test]
fn run_now_is_one_evaluation_recorded_as_agent_upgrade_run() {
    let agents = drifted_fleet(2);
    let policy = policy(RolloutMode::Auto);
    let state = RolloutState::default();
    let ran = run_now(t(0), "alice", &policy, &state, order(), &agents);
    let ticked = tick(t(0), &policy, &state, order(), &agents);
    assert_eq!(ran.dispatches, ticked.dispatches);
    assert_eq!(ran.transitions, ticked.transitions);
    assert_eq!(ran.state, ticked.state);
    let events: Vec<AuditEvent> = ran.audit_events().collect();
    assert_eq!(events.len(), 3);
    assert_eq!(ran.audit_event_count(), 3);
    let first = &events[0];
    assert_eq!(first.action, AGENT_UPGRADE_RUN);
    assert_eq!(first.actor, "alice");
    assert_eq!(first.detail["mode"], "auto");
    assert_eq!(first.detail["server_version"], SERVER);
    assert!(events[1..].iter().all(|e| e.actor == "alice"
        && e.action == STACK_DEPLOY
        && e.detail["action"] == "agent-upgrade"));
    // Run now still honours the staged gap.
    let state = RolloutState {
        last_wave_at: Some(t(-1)),
        rollout_version: Some(SERVER.into()),
        ..RolloutState::default()
    };
    let ran = run_now(t(0), "alice", &staged(10, 0, 1), &state, order(), &agents);
    assert!(ran.dispatches.is_empty());
    assert_eq!(ran.audit_events().count(), 1);
}

#[test]
fn set_policy_validates_and_records_agent_upgrade_policy() {
    let record = RolloutRecord::default();
    let change = set_policy(t(0), "alice", &record, staged(25, 3, 2)).unwrap();
    assert_eq!(change.record.policy, staged(25, 3, 2));
    assert_eq!(change.record.state, record.state);
    let e = &change.event;
    assert_eq!(e.action, AGENT_UPGRADE_POLICY);
    assert_eq!(e.actor, "alice");
    assert_eq!(e.detail["action"], "set");
    assert_eq!(e.detail["previous_mode"], "manual");
    assert_eq!(e.detail["mode"], "staged");
    assert_eq!(e.detail["percent"], "25");
    assert_eq!(e.detail["canaries"], "3");
    assert_eq!(e.detail["halt_after_failures"], "2");
    assert_eq!(e.detail["min_gap"], "5m");
    assert_eq!(e.detail["interval"], "1m");
    assert_eq!(e.detail["upgrade_timeout"], "5m");

    type Edit = fn(&mut RolloutPolicy);
    let bad: [(&str, Edit); 5] = [
        ("staged.percent", |p| p.staged.percent = 0),
        ("staged.percent", |p| p.staged.percent = 101),
        ("staged.min_gap", |p| p.staged.min_gap = -mins(1)),
        ("interval", |p| p.interval = SignedDuration::ZERO),
        ("upgrade_timeout", |p| {
            p.upgrade_timeout = SignedDuration::from_millis(10)
        }),
    ];
    for (field, edit) in bad {
        let mut p = RolloutPolicy::default();
        edit(&mut p);
        let err = set_policy(t(0), "alice", &record, p).unwrap_err();
        assert!(
            matches!(&err, RolloutError::InvalidPolicy { field: f, .. } if *f == field),
            "{err}"
        );
        assert!(err.to_string().contains("current policy is kept"), "{err}");
    }
}

// --- evaluator interval ---

#[test]
fn the_evaluator_is_due_one_interval_after_the_last_run() {
    let p = RolloutPolicy::default();
    let never = RolloutState::default();
    assert_eq!(next_evaluation_due(&never, &p), None);
    assert!(evaluation_due(t(0), &never, &p));
    let agents = [idle("a", SERVER)];
    let out = tick(t(0), &p, &never, order(), &agents);
    assert_eq!(next_evaluation_due(&out.state, &p), Some(t(60)));
    assert!(!evaluation_due(t(59), &out.state, &p));
    assert!(evaluation_due(t(60), &out.state, &p));
}

// --- shapes ---

#[test]
fn defaults_are_the_documented_ones() {
    let p = RolloutPolicy::default();
    assert_eq!(p.mode, RolloutMode::Manual);
    assert_eq!(p.staged.percent, 10);
    assert_eq!(p.staged.min_gap, mins(5));
    assert_eq!(p.staged.canaries, 0);
    assert_eq!(p.staged.halt_after_failures, 1);
    assert_eq!(p.interval, SignedDuration::from_secs(60));
    assert_eq!(p.upgrade_timeout, mins(5));
    assert_eq!(p.validate(), Ok(()));
}

#[test]
fn state_written_before_the_rollout_fields_existed_still_loads() {
    let old =
        r#"{"halted":null,"last_wave_at":null,"waves":2,"failures":0,"last_evaluated_at":null}"#;
    let s: RolloutState = serde_json::from_str(old).unwrap();
    assert_eq!(s.waves, 2);
    assert_eq!(s.rollout_version, None);
    assert_eq!(s.wave_base, 0);
    let json = serde_json::to_value(pending_manual()).unwrap();
    assert_eq!(json["state"], "pending_manual");
    let record = RolloutRecord::default();
    let back: RolloutRecord =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    assert_eq!(back, record);
}

#[test]
fn borrowed_views_give_the_same_outcome_as_records() {
    let agents = vec![
        idle("a", OLD),
        agent("b", OLD, true, requested()),
        agent("c", SERVER, true, in_flight(t(-1), SERVER)),
        agent("d", OLD, true, in_flight(t(-600), SERVER)),
    ];
    let p = staged(50, 0, 5);
    let s = RolloutState::default();
    let by_record = tick(t(0), &p, &s, order(), &agents);
    let refs: Vec<&AgentRecord> = agents.iter().collect();
    let views: Vec<AgentRef<'_>> = agents.iter().map(AgentRef::from).collect();
    assert_eq!(tick(t(0), &p, &s, order(), &refs), by_record);
    assert_eq!(tick(t(0), &p, &s, order(), &views), by_record);
}

// --- property tests ---

/// How a simulated agent behaves once sent the order.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Reports the new version this many seconds after the order (if connected then).
    Succeeds(i64),
    /// Never reports anything.
    Silent,
    /// Reports that it cannot download the binary.
    CannotDownload,
    /// Reports that the upgrade failed.
    ReportsFailure,
}

#[derive(Debug, Clone)]
struct SimAgent {
    version: &'static str,
    connected: bool,
    initial: u8,
    behaviour: Behaviour,
}

/// One step of the simulation: advance the clock, maybe flip one agent's connection, maybe
/// request one agent's upgrade, maybe resume.
#[derive(Debug, Clone)]
struct Step {
    advance: i64,
    flip: Option<usize>,
    request: Option<usize>,
    resume: bool,
}

fn arb_policy() -> impl Strategy<Value = RolloutPolicy> {
    (
        prop_oneof![
            Just(RolloutMode::Manual),
            Just(RolloutMode::Auto),
            Just(RolloutMode::Staged)
        ],
        1u8..=100,
        0i64..=1200,
        0u32..4,
        0u32..4,
        60i64..=900,
    )
        .prop_map(
            |(mode, percent, gap, canaries, halt, timeout)| RolloutPolicy {
                mode,
                staged: StagedPolicy {
                    percent,
                    min_gap: SignedDuration::from_secs(gap),
                    canaries,
                    halt_after_failures: halt,
                },
                interval: SignedDuration::from_secs(60),
                upgrade_timeout: SignedDuration::from_secs(timeout),
                allow_downgrade: false,
            },
        )
}

fn arb_behaviour() -> impl Strategy<Value = Behaviour> {
    prop_oneof![
        6 => (0i64..1200).prop_map(Behaviour::Succeeds),
        1 => Just(Behaviour::Silent),
        1 => Just(Behaviour::CannotDownload),
        1 => Just(Behaviour::ReportsFailure),
    ]
}

fn arb_agent() -> impl Strategy<Value = SimAgent> {
    (
        prop_oneof![Just(SERVER), Just(OLD), Just("1.3.2")],
        prop::bool::weighted(0.8),
        0u8..5,
        arb_behaviour(),
    )
        .prop_map(|(version, connected, initial, behaviour)| SimAgent {
            version,
            connected,
            initial,
            behaviour,
        })
}

fn arb_steps(n: usize) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            0i64..900,
            prop::option::weighted(0.3, 0..n),
            prop::option::weighted(0.2, 0..n),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(advance, flip, request, resume)| Step {
                advance,
                flip,
                request,
                resume,
            }),
        1..40,
    )
}

fn initial_upgrade(code: u8, now: Timestamp) -> UpgradeState {
    match code {
        0 | 1 => UpgradeState::Idle,
        2 => UpgradeState::Requested { at: now - mins(1) },
        3 => in_flight(now - mins(2), SERVER),
        _ => failed(),
    }
}

/// The wave limit, computed here from the rules rather than by the code under test.
fn expected_wave_limit(p: &StagedPolicy, waves: u32, base: u64) -> u64 {
    if waves == 0 && p.canaries > 0 {
        u64::from(p.canaries)
    } else {
        let n = u64::from(p.percent) * base;
        (n / 100 + u64::from(!n.is_multiple_of(100))).max(1)
    }
}

fn fleet_and_steps() -> impl Strategy<Value = (Vec<SimAgent>, Vec<Step>)> {
    prop::collection::vec(arb_agent(), 1..40).prop_flat_map(|fleet| {
        let n = fleet.len();
        (Just(fleet), arb_steps(n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random fleets, policies, clocks, disconnections, requests, failures and resumes:
    /// no double dispatch, waves within their size, the gap honoured, a halt dispatching only
    /// operator requests, manual mode dispatching only operator requests.
    #[test]
    fn the_evaluator_keeps_its_rules_over_random_runs(
        policy in arb_policy(),
        (fleet, steps) in fleet_and_steps(),
    ) {
        let order = order();
        let mut now = t(0);
        let mut records: Vec<AgentRecord> = fleet
            .iter()
            .enumerate()
            .map(|(i, a)| {
                agent(&format!("h{i:03}"), a.version, a.connected, initial_upgrade(a.initial, now))
            })
            .collect();
        // The order each agent is acting on (when it was sent), as the agent sees it.
        let mut acting: Vec<Option<Timestamp>> = records
            .iter()
            .map(|r| match r.upgrade {
                UpgradeState::InFlight { since, .. } => Some(since),
                _ => None,
            })
            .collect();
        // Orders the server considers outstanding.
        let mut outstanding: Vec<bool> = acting.iter().map(Option::is_some).collect();
        let mut state = RolloutState::default();
        let mut last_wave: Option<Timestamp> = None;

        for step in steps {
            now += SignedDuration::from_secs(step.advance);
            // Agents act on their orders.
            for (i, a) in fleet.iter().enumerate() {
                let Some(sent) = acting[i] else { continue };
                let report = match a.behaviour {
                    Behaviour::Succeeds(delay) => {
                        if records[i].connection == ConnectionState::Connected
                            && now >= sent + SignedDuration::from_secs(delay)
                        {
                            records[i].version = SERVER.into();
                            acting[i] = None;
                        }
                        None
                    }
                    Behaviour::Silent => None,
                    Behaviour::CannotDownload => Some(AgentReport::CannotDownload {
                        reason: "offline mirror".into(),
                    }),
                    Behaviour::ReportsFailure => Some(AgentReport::UpgradeFailed {
                        reason: "bad checksum".into(),
                    }),
                };
                if let Some(report) = report {
                    acting[i] = None;
                    if let ReportOutcome::Changed { upgrade, state: s } =
                        handle_report(now, &records[i].upgrade, &state, &report)
                    {
                        records[i].upgrade = upgrade;
                        state = s;
                        outstanding[i] = false;
                    }
                }
            }
            if let Some(i) = step.flip {
                records[i].connection = match records[i].connection {
                    ConnectionState::Connected => ConnectionState::Disconnected,
                    ConnectionState::Disconnected => ConnectionState::Connected,
                };
            }
            if let Some(i) = step.request {
                match request_upgrade(now, &records[i], SERVER) {
                    Ok(u) => records[i].upgrade = u,
                    Err(RolloutError::AlreadyInFlight { .. }) => {
                        let busy = matches!(records[i].upgrade, UpgradeState::InFlight { .. });
                        prop_assert!(busy, "refused as in flight, but it is not");
                    }
                    Err(RolloutError::UpToDate { .. }) => {
                        prop_assert_eq!(records[i].version.as_str(), SERVER);
                    }
                    Err(e) => prop_assert!(false, "unexpected {}", e),
                }
            }
            if step.resume
                && let Ok(r) = resume(now, "ops", &state)
            {
                state = r.state;
            }

            let before = records.clone();
            let out = tick(now, &policy, &state, order, &before);
            let changes = out.owned_changes();

            // At most one change per agent.
            let mut seen = std::collections::BTreeSet::new();
            for (index, _) in &changes {
                prop_assert!(seen.insert(*index), "two changes for {}", before[*index].id);
            }
            let halted_before = state.halted.is_some();
            let halted_after = out.state.halted.is_some();
            prop_assert!(!halted_before || halted_after, "only resume clears a halt");

            let drifted = before.iter().filter(|r| r.version != SERVER).count() as u64;
            prop_assert_eq!(out.drifted, drifted);
            let mut automatic = 0u64;
            for d in &out.dispatches {
                let pre = &before[d.index];
                prop_assert!(
                    !matches!(pre.upgrade, UpgradeState::InFlight { .. }),
                    "dispatched to {} with an upgrade in flight", pre.id
                );
                prop_assert!(!outstanding[d.index], "second outstanding order for {}", pre.id);
                prop_assert_eq!(pre.connection, ConnectionState::Connected);
                prop_assert_ne!(pre.version.as_str(), SERVER);
                prop_assert_eq!(
                    d.trigger == Trigger::Requested,
                    matches!(pre.upgrade, UpgradeState::Requested { .. })
                );
                prop_assert!(!matches!(
                    pre.upgrade,
                    UpgradeState::Failed { .. } | UpgradeState::PendingManual { .. }
                ), "{} retried automatically", pre.id);
                let change = changes.iter().find(|(i, _)| *i == d.index);
                prop_assert_eq!(
                    change.map(|(_, to)| to),
                    Some(&UpgradeState::InFlight { since: now, target_version: SERVER.into() })
                );
                automatic += u64::from(d.trigger.is_automatic());
            }
            match policy.mode {
                RolloutMode::Manual => prop_assert_eq!(automatic, 0, "manual dispatched by itself"),
                _ if halted_after => prop_assert_eq!(automatic, 0, "a halted rollout dispatched"),
                RolloutMode::Auto => {}
                RolloutMode::Staged => {
                    let waves_before = if state.rollout_version.as_deref() == Some(SERVER) {
                        state.waves
                    } else {
                        0
                    };
                    let base = if state.rollout_version.as_deref() == Some(SERVER) {
                        state.wave_base.max(drifted)
                    } else {
                        drifted
                    };
                    let limit = expected_wave_limit(&policy.staged, waves_before, base);
                    prop_assert!(automatic <= limit, "wave of {} over its size {}", automatic, limit);
                    if automatic > 0 {
                        if let Some(last) = last_wave {
                            prop_assert!(
                                now.duration_since(last) >= policy.staged.min_gap,
                                "waves at {} and {} closer than {:#}", last, now, policy.staged.min_gap
                            );
                        }
                        last_wave = Some(now);
                    }
                }
            }
            if policy.mode == RolloutMode::Staged
                && policy.staged.halt_after_failures > 0
                && out.state.failures >= policy.staged.halt_after_failures
            {
                prop_assert!(halted_after, "failures reached the threshold without a halt");
            }

            state = out.state;
            for (index, to) in &changes {
                match to {
                    UpgradeState::InFlight { since, .. } => {
                        outstanding[*index] = true;
                        acting[*index] = Some(*since);
                    }
                    _ => outstanding[*index] = false,
                }
            }
            apply_changes(&mut records, changes);
        }
    }

    /// When nothing fails, every drifted connected agent is dispatched, once, and the fleet
    /// ends up on the server's version, in auto and in staged mode.
    #[test]
    fn every_drifted_connected_agent_is_eventually_upgraded(
        staged_mode in any::<bool>(),
        percent in 1u8..=100,
        gap in 0i64..=1800,
        canaries in 0u32..5,
        timeout in 60i64..=900,
        fleet in prop::collection::vec(
            (prop_oneof![Just(SERVER), Just(OLD), Just("1.3.2")], prop::bool::weighted(0.85),
             any::<bool>(), 0.0f64..1.0),
            1..60,
        ),
        jitter in prop::collection::vec(0i64..120, 200),
    ) {
        let policy = RolloutPolicy {
            mode: if staged_mode { RolloutMode::Staged } else { RolloutMode::Auto },
            staged: StagedPolicy {
                percent,
                min_gap: SignedDuration::from_secs(gap),
                canaries,
                halt_after_failures: 1,
            },
            interval: SignedDuration::from_secs(60),
            upgrade_timeout: SignedDuration::from_secs(timeout),
                allow_downgrade: false,
        };
        let order = order();
        let mut now = t(0);
        let mut records: Vec<AgentRecord> = fleet
            .iter()
            .enumerate()
            .map(|(i, (v, connected, asked, _))| {
                let upgrade = if *asked && *v != SERVER { requested() } else { UpgradeState::Idle };
                agent(&format!("h{i:03}"), v, *connected, upgrade)
            })
            .collect();
        // Each agent reports the new version some fraction of the timeout after its order.
        let delays: Vec<SignedDuration> = fleet
            .iter()
            .map(|f| SignedDuration::from_secs((f.3 * (timeout - 1) as f64) as i64))
            .collect();
        let must_upgrade: Vec<bool> = records
            .iter()
            .map(|r| r.version != SERVER && r.connection == ConnectionState::Connected)
            .collect();
        let mut sent: Vec<Option<Timestamp>> = vec![None; records.len()];
        let mut dispatched = vec![0u32; records.len()];
        let mut state = RolloutState::default();
        // Enough ticks for one agent per wave, plus the canary wave and the last completions.
        let max_ticks = records.len() + 4;
        for tick_no in 0..max_ticks {
            for (i, s) in sent.iter().enumerate() {
                if let Some(at) = s && now >= *at + delays[i] {
                    records[i].version = SERVER.into();
                }
            }
            let out = tick(now, &policy, &state, order, &records);
            prop_assert_eq!(out.state.failures, 0);
            for d in &out.dispatches {
                dispatched[d.index] += 1;
                sent[d.index] = Some(now);
            }
            let changes = out.owned_changes();
            state = out.state;
            apply_changes(&mut records, changes);
            if records.iter().all(|r| r.connection == ConnectionState::Disconnected
                || (r.version == SERVER && r.upgrade == UpgradeState::Idle))
            {
                break;
            }
            prop_assert!(tick_no + 1 < max_ticks, "rollout did not finish: {:?}", records);
            // The clock moves at least the gap and the time agents take to report.
            now += SignedDuration::from_secs(gap.max(timeout) + jitter[tick_no % jitter.len()]);
        }
        for (i, r) in records.iter().enumerate() {
            if must_upgrade[i] {
                prop_assert_eq!(dispatched[i], 1, "{} dispatched {} times", r.id, dispatched[i]);
                prop_assert_eq!(r.version.as_str(), SERVER);
            } else {
                prop_assert_eq!(dispatched[i], 0, "{} should not be dispatched", r.id);
            }
        }
    }
}
