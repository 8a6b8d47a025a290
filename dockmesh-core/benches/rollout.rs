//! One rollout evaluator tick over 1,000,000 agents.
//!
//! Run with `cargo bench -p dockmesh-core --bench rollout`. The fleet mixes up-to-date,
//! drifted, in-flight, completed, disconnected, failed, pending-manual and requested agents (see
//! [`fleet`]). `count_drifted` is a plain pass over the same slice comparing version strings, the
//! least any evaluator must do, measured in the same run so the ratio means something on a
//! loaded machine. Each tick's time includes dropping its outcome. The outcome borrows the agents'
//! ids and builds its audit events on demand; the `*_and_audit_events` benchmarks add building
//! every one of them.

use divan::{Bencher, black_box};
use dockmesh_core::AgentId;
use dockmesh_core::rollout::{
    AgentRecord, ConnectionState, RolloutMode, RolloutPolicy, RolloutState, UpgradeOrder,
    UpgradeState, tick,
};
use jiff::{SignedDuration, Timestamp};
use std::sync::LazyLock;

const AGENTS: usize = 1_000_000;
const SERVER: &str = "1.5.0";
const OLD: &str = "1.4.0";

fn main() {
    divan::main();
}

fn now() -> Timestamp {
    Timestamp::from_second(1_750_000_000).unwrap()
}

fn record(i: usize, version: &str, connected: bool, upgrade: UpgradeState) -> AgentRecord {
    AgentRecord {
        id: AgentId::new(format!("host-{i:07}")),
        name: String::new(),
        version: version.to_owned(),
        commit: None,
        protocol_version: 1,
        arch: String::new(),
        docker_version: String::new(),
        last_seen: None,
        connection: if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        },
        upgrade,
    }
}

/// The fleet, by `i % 20`: 60% up to date; 15% drifted, connected and idle; 5% in flight
/// (sent one minute ago, still on the old version); 5% in flight that now report the new
/// version; 5% drifted and disconnected; 5% up to date and disconnected; 5% drifted and
/// failed, pending manual or requested (a third each). 30% are drifted.
fn fleet(all_drifted: bool) -> Vec<AgentRecord> {
    let minute_ago = now() - SignedDuration::from_mins(1);
    (0..AGENTS)
        .map(|i| {
            if all_drifted {
                return record(i, OLD, true, UpgradeState::Idle);
            }
            match i % 20 {
                0..=11 => record(i, SERVER, true, UpgradeState::Idle),
                12..=14 => record(i, OLD, true, UpgradeState::Idle),
                15 => record(
                    i,
                    OLD,
                    true,
                    UpgradeState::InFlight {
                        since: minute_ago,
                        target_version: SERVER.into(),
                    },
                ),
                16 => record(
                    i,
                    SERVER,
                    true,
                    UpgradeState::InFlight {
                        since: minute_ago,
                        target_version: SERVER.into(),
                    },
                ),
                17 => record(i, OLD, false, UpgradeState::Idle),
                18 => record(i, SERVER, false, UpgradeState::Idle),
                _ => {
                    let upgrade = match i % 60 {
                        19 => UpgradeState::Failed {
                            at: minute_ago,
                            reason: "timeout".into(),
                        },
                        39 => UpgradeState::PendingManual {
                            since: minute_ago,
                            reason: "air-gapped".into(),
                        },
                        _ => UpgradeState::Requested { at: minute_ago },
                    };
                    record(i, OLD, true, upgrade)
                }
            }
        })
        .collect()
}

static MIXED: LazyLock<Vec<AgentRecord>> = LazyLock::new(|| fleet(false));
static ALL_DRIFTED: LazyLock<Vec<AgentRecord>> = LazyLock::new(|| fleet(true));

fn order() -> UpgradeOrder {
    UpgradeOrder {
        version: SERVER.into(),
        binary: "dockmesh-1.5.0-x86_64-unknown-linux-gnu".into(),
        size: 0,
        sha256: "ab".repeat(32),
        signature: None,
        allow_downgrade: false,
    }
}

fn policy(mode: RolloutMode) -> RolloutPolicy {
    RolloutPolicy {
        mode,
        ..RolloutPolicy::default()
    }
}

/// One tick; with `audit`, also build every audit event of the outcome (one at a time, as a
/// driver appending them to the store would).
fn bench_tick(b: Bencher, agents: &[AgentRecord], mode: RolloutMode, audit: bool) {
    let policy = policy(mode);
    let state = RolloutState::default();
    let order = order();
    b.bench_local(|| {
        let out = tick(
            black_box(now()),
            black_box(&policy),
            black_box(&state),
            black_box(&order),
            black_box(agents),
        );
        if audit {
            for event in out.audit_events() {
                black_box(event);
            }
        }
        black_box(&out);
        drop(out);
    });
}

/// Baseline: one pass over the same slice counting drifted agents.
#[divan::bench(sample_count = 30)]
fn count_drifted(b: Bencher) {
    let agents = &*MIXED;
    b.bench_local(|| {
        black_box(agents)
            .iter()
            .filter(|a| a.version != black_box(SERVER))
            .count()
    });
}

/// Baseline for the all-drifted fleet.
#[divan::bench(sample_count = 30)]
fn count_drifted_every_agent_drifted(b: Bencher) {
    let agents = &*ALL_DRIFTED;
    b.bench_local(|| {
        black_box(agents)
            .iter()
            .filter(|a| a.version != black_box(SERVER))
            .count()
    });
}

/// Staged mode (10% waves, no canaries): a wave of 30,000 plus 16,667 operator requests.
#[divan::bench(sample_count = 30)]
fn tick_staged(b: Bencher) {
    bench_tick(b, &MIXED, RolloutMode::Staged, false);
}

/// Auto mode: 150,000 idle drifted agents plus 16,667 operator requests are dispatched.
#[divan::bench(sample_count = 30)]
fn tick_auto(b: Bencher) {
    bench_tick(b, &MIXED, RolloutMode::Auto, false);
}

/// Manual mode: only the 16,667 operator requests are dispatched.
#[divan::bench(sample_count = 30)]
fn tick_manual(b: Bencher) {
    bench_tick(b, &MIXED, RolloutMode::Manual, false);
}

/// The worst case: auto mode right after a server upgrade, every one of the 1,000,000 agents
/// drifted, connected and idle, so every agent is dispatched and audited.
#[divan::bench(sample_count = 5)]
fn tick_auto_every_agent_drifted(b: Bencher) {
    bench_tick(b, &ALL_DRIFTED, RolloutMode::Auto, false);
}

/// Staged mode, and building the 46,667 audit events of the outcome.
#[divan::bench(sample_count = 30)]
fn tick_staged_and_audit_events(b: Bencher) {
    bench_tick(b, &MIXED, RolloutMode::Staged, true);
}

/// Auto mode, and building the 166,667 audit events of the outcome.
#[divan::bench(sample_count = 10)]
fn tick_auto_and_audit_events(b: Bencher) {
    bench_tick(b, &MIXED, RolloutMode::Auto, true);
}
