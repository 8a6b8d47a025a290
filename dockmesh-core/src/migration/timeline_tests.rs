//! The timeline drawn up from event logs: steps in order, the downtime window exactly from
//! `source_stopped` to `target_healthy`, failures, cuts, and degenerate logs.

use super::*;
use crate::preflight::PreflightReport;
use crate::testing::{MIGRATION_EVENT_KINDS, migration_event};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

const T0: i64 = 1_800_000_000_000;

/// The time `ms` milliseconds after the request.
fn t(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(T0 + ms).unwrap()
}

fn passed(ms: i64) -> MigrationEvent {
    MigrationEvent::PreflightPassed {
        at: t(ms),
        report: PreflightReport { checks: vec![] },
        volumes: vec![],
    }
}

fn started(ms: i64, v: &str) -> MigrationEvent {
    MigrationEvent::VolumeTransferStarted {
        at: t(ms),
        volume: v.into(),
    }
}

fn verified(ms: i64, v: &str) -> MigrationEvent {
    MigrationEvent::VolumeVerified {
        at: t(ms),
        volume: v.into(),
        bytes: 10,
        digest: "d".into(),
        outside_links: vec![],
    }
}

/// A committed move of two volumes: down from 1 000 ms to 9 300 ms (8.3 s), of which 4.9 s
/// transfer and 2.3 s health wait.
fn committed() -> Vec<MigrationEvent> {
    use MigrationEvent as E;
    vec![
        passed(400),
        E::SourceStopped { at: t(1_000) },
        started(1_100, "shop_db"),
        verified(4_000, "shop_db"),
        started(4_000, "shop_files"),
        verified(6_000, "shop_files"),
        E::FilesShipped { at: t(6_300) },
        E::TargetStarted { at: t(7_000) },
        E::TargetHealthy { at: t(9_300) },
        E::Committed {
            at: t(9_350),
            retain_until: t(100_000_000),
        },
    ]
}

fn stages(tl: &Timeline) -> Vec<(Stage, Option<&str>)> {
    tl.spans
        .iter()
        .map(|s| (s.stage, s.volume.as_deref()))
        .collect()
}

#[test]
fn a_committed_log_gives_every_step_in_order_and_the_exact_downtime() {
    let tl = Timeline::of(t(0), &committed(), t(50_000));
    assert_eq!(
        stages(&tl),
        vec![
            (Stage::Preflight, None),
            (Stage::StopSource, None),
            (Stage::Transfer, Some("shop_db")),
            (Stage::Transfer, Some("shop_files")),
            (Stage::ShipFiles, None),
            (Stage::StartTarget, None),
            (Stage::TargetHealth, None),
            (Stage::Commit, None),
        ]
    );
    let w = tl.downtime.unwrap();
    assert_eq!((w.start, w.end, w.open), (t(1_000), t(9_300), false));
    assert_eq!(tl.downtime(), Some(SignedDuration::from_millis(8_300)));
    // A settled migration ends with its last event, not at `now`.
    assert_eq!((tl.start, tl.end), (t(0), t(9_350)));
    let db = &tl.spans[2];
    assert_eq!((db.start, db.end), (t(1_100), t(4_000)));
    assert!(tl.spans.iter().all(|s| !s.failed && !s.running));
    assert_eq!(
        tl.to_string(),
        "down for 8.3 s: 4.9 s transfer, 2.3 s health wait, 700 ms start, 300 ms ship; \
         9.3 s in all"
    );
}

#[test]
fn a_failure_is_drawn_with_its_compensation_and_the_source_restart_ends_the_downtime() {
    use MigrationEvent as E;
    let mut log = committed();
    log.truncate(8); // up to target_started
    log.extend([
        E::StepFailed {
            at: t(12_000),
            step: Step::TargetHealth,
            reason: "web is unhealthy".into(),
            kind: None,
        },
        E::TargetCleaned { at: t(12_500) },
        E::SourceRestarted {
            at: t(13_000),
            redeployed: false,
        },
        E::Failed { at: t(13_100) },
    ]);
    let tl = Timeline::of(t(0), &log, t(60_000));
    let failed: Vec<_> = tl.spans.iter().filter(|s| s.failed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].stage, Stage::TargetHealth);
    assert_eq!((failed[0].start, failed[0].end), (t(7_000), t(12_000)));
    let comp = tl.spans.last().unwrap();
    assert_eq!(comp.stage, Stage::Compensation);
    assert_eq!((comp.start, comp.end), (t(12_000), t(13_100)));
    let w = tl.downtime.unwrap();
    assert_eq!((w.start, w.end, w.open), (t(1_000), t(13_000), false));
    assert!(
        tl.to_string()
            .contains("; health wait failed, compensated in 1.1 s"),
        "{tl}"
    );
}

#[test]
fn a_transfer_that_fails_is_drawn_failed_on_its_volume_and_its_cut_is_kept() {
    use MigrationEvent as E;
    let log = vec![
        passed(100),
        E::SourceStopped { at: t(200) },
        started(300, "shop_db"),
        E::VolumeTransferInterrupted {
            at: t(900),
            volume: "shop_db".into(),
            reason: "agent went away".into(),
        },
        E::StepFailed {
            at: t(5_000),
            step: Step::TransferVolumes,
            reason: "gone".into(),
            kind: None,
        },
    ];
    let tl = Timeline::of(t(0), &log, t(6_000));
    let db = tl.spans.iter().find(|s| s.failed).unwrap();
    assert_eq!(
        (db.stage, db.volume.as_deref(), db.start, db.end),
        (Stage::Transfer, Some("shop_db"), t(300), t(5_000))
    );
    assert_eq!(tl.cuts.len(), 1);
    assert_eq!(
        (tl.cuts[0].at, tl.cuts[0].volume.as_str()),
        (t(900), "shop_db")
    );
    // Compensation runs now: drawn up to now, and the stack is still down.
    let last = tl.spans.last().unwrap();
    assert_eq!((last.stage, last.running), (Stage::Compensation, true));
    assert_eq!(last.end, t(6_000));
    assert!(tl.downtime.unwrap().open);
    assert_eq!(tl.downtime(), None);
    assert!(tl.to_string().starts_with("down so far for 5.8 s"), "{tl}");
    assert!(
        tl.to_string()
            .contains("transfer failed on volume shop_db, compensating; 1 transfer cut (shop_db)"),
        "{tl}"
    );
}

#[test]
fn a_running_transfer_runs_until_now_and_a_later_rollback_is_not_part_of_the_move() {
    use MigrationEvent as E;
    let log = vec![
        passed(100),
        E::SourceStopped { at: t(200) },
        started(300, "db"),
    ];
    let tl = Timeline::of(t(0), &log, t(2_000));
    let s = tl.spans.last().unwrap();
    assert_eq!(
        (s.stage, s.running, s.end),
        (Stage::Transfer, true, t(2_000))
    );
    assert_eq!(tl.end, t(2_000));

    let mut log = committed();
    log.push(E::RollbackRequested {
        at: t(3_600_000),
        by: "ops".into(),
    });
    log.push(E::RolledBack { at: t(3_700_000) });
    let tl = Timeline::of(t(0), &log, t(4_000_000));
    assert_eq!(tl.end, t(9_350));
    assert_eq!(tl.spans.len(), 8);
}

#[test]
fn degenerate_logs_give_empty_or_zero_spans_never_negative_ones() {
    // No event: pre-flight runs.
    let tl = Timeline::of(t(0), &[], t(500));
    assert_eq!(stages(&tl), vec![(Stage::Preflight, None)]);
    assert_eq!(tl.spans[0].duration(), SignedDuration::from_millis(500));
    assert!(tl.downtime.is_none());
    assert_eq!(
        tl.to_string(),
        "the stack has not been stopped; 500 ms in all"
    );
    // Every event at the request's instant.
    let log: Vec<_> = committed()
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap();
            v["at"] = serde_json::json!(t(0));
            serde_json::from_value(v).unwrap()
        })
        .collect();
    let tl = Timeline::of(t(0), &log, t(0));
    assert_eq!(tl.spans.len(), 8);
    assert!(tl.spans.iter().all(|s| s.duration().is_zero()));
    assert_eq!(tl.downtime(), Some(SignedDuration::ZERO));
    assert_eq!(tl.to_string(), "down for 0 ms; 0 ms in all");
    // The clock stepped back: the health check "ended" before the start.
    let mut log = committed();
    log[8] = MigrationEvent::TargetHealthy { at: t(500) };
    let tl = Timeline::of(t(0), &log, t(0));
    assert!(tl.spans.iter().all(|s| !s.duration().is_negative()));
    assert_eq!(tl.downtime(), Some(SignedDuration::ZERO));
}

#[test]
fn durations_read_in_the_right_unit() {
    let w = |ms| duration_words(SignedDuration::from_millis(ms));
    assert_eq!(w(-5), "0 ms");
    assert_eq!(w(999), "999 ms");
    assert_eq!(w(8_349), "8.3 s");
    assert_eq!(w(252_000), "4 min 12 s");
    assert_eq!(w(7_500_000), "2 h 5 min");
    assert_eq!(w(720_000), "12 min");
    assert_eq!(w(7_200_000), "2 h");
}

/// Any event, at any time (out of order, equal, before the request).
fn any_event() -> impl Strategy<Value = MigrationEvent> {
    let vol = prop_oneof![Just("a"), Just("b")];
    (0..MIGRATION_EVENT_KINDS, -2_000i64..20_000, vol)
        .prop_map(|(k, ms, v)| migration_event(k, t(ms), v))
}

proptest! {
    /// Whatever the log, every span lies on the axis with a non-negative length, spans are in
    /// the order they began, and the downtime window lies on the axis too.
    #[test]
    fn any_log_gives_a_timeline_within_its_axis(
        log in proptest::collection::vec(any_event(), 0..16),
        now in -1_000i64..30_000,
    ) {
        let tl = Timeline::of(t(0), &log, t(now));
        prop_assert!(tl.start <= tl.end);
        for s in &tl.spans {
            prop_assert!(tl.start <= s.start && s.start <= s.end && s.end <= tl.end, "{s:?} {tl:?}");
        }
        prop_assert!(tl.spans.windows(2).all(|w| w[0].start <= w[1].start));
        if let Some(w) = tl.downtime {
            prop_assert!(tl.start <= w.start && w.start <= w.end && w.end <= tl.end);
            for (_, d) in tl.downtime_by_stage() {
                prop_assert!(!d.is_negative());
            }
        }
        prop_assert!(!tl.to_string().is_empty());
    }

    /// A well-formed committed log with any gaps: its steps in their order, and the downtime
    /// exactly from `source_stopped` to `target_healthy`.
    #[test]
    fn a_committed_log_has_its_downtime_exactly(
        gaps in proptest::collection::vec(0i64..100_000, 10),
    ) {
        use MigrationEvent as E;
        let mut at = 0;
        let mut next = |i: usize| { at += gaps[i]; at };
        let log = vec![
            passed(next(0)),
            E::SourceStopped { at: t(next(1)) },
            started(next(2), "a"),
            verified(next(3), "a"),
            E::FilesShipped { at: t(next(4)) },
            E::TargetStarted { at: t(next(5)) },
            E::TargetHealthy { at: t(next(6)) },
            E::Committed { at: t(next(7)), retain_until: t(0) },
        ];
        let tl = Timeline::of(t(0), &log, t(at + 1));
        let order: Vec<Stage> = tl.spans.iter().map(|s| s.stage).collect();
        prop_assert_eq!(order, vec![
            Stage::Preflight, Stage::StopSource, Stage::Transfer, Stage::ShipFiles,
            Stage::StartTarget, Stage::TargetHealth, Stage::Commit,
        ]);
        let w = tl.downtime.unwrap();
        prop_assert_eq!((w.start, w.end), (log[1].at(), log[6].at()));
        prop_assert_eq!(tl.downtime(), Some(log[6].at().duration_since(log[1].at())));
        let parts = tl.downtime_by_stage().iter().fold(SignedDuration::ZERO, |a, (_, d)| a + *d);
        prop_assert!(parts <= w.duration());
    }
}
