use super::*;
use crate::rollout::UpgradeOrder;
use jiff::Timestamp;
use proptest::prelude::*;
use std::path::PathBuf;
use std::time::Duration;

fn order() -> UpgradeOrder {
    UpgradeOrder {
        version: "1.2.3".into(),
        binary: "/api/v1/agent-binaries/x".into(),
        size: 10,
        sha256: "ab".repeat(32),
        signature: Some("00".repeat(64)),
        allow_downgrade: false,
    }
}

#[test]
fn an_order_is_checked_before_anything_is_downloaded() {
    assert_eq!(check_order(&order()), Ok(()));
    type Change = fn(&mut UpgradeOrder);
    let bad: [(Change, &str); 9] = [
        (|o| o.version = String::new(), "is not a version"),
        (|o| o.version = "1.2 3".into(), "is not a version"),
        (|o| o.version = "1".repeat(65), "is not a version"),
        (|o| o.sha256 = "ab".repeat(31), "64 hex digits"),
        (|o| o.sha256 = "zz".repeat(32), "64 hex digits"),
        (|o| o.size = 0, "between 1 byte"),
        (|o| o.size = MAX_BINARY + 1, "between 1 byte"),
        (|o| o.signature = None, "no release signature"),
        (|o| o.sha256 = "ab".repeat(33), "64 hex digits"),
    ];
    for (change, words) in bad {
        let mut o = order();
        change(&mut o);
        let err = check_order(&o).unwrap_err();
        assert!(err.to_string().contains(words), "{o:?}: {err}");
    }
    // The edges that pass.
    for change in [
        |o: &mut UpgradeOrder| o.version = "1".repeat(64),
        |o: &mut UpgradeOrder| o.size = MAX_BINARY,
        |o: &mut UpgradeOrder| o.size = 1,
        |o: &mut UpgradeOrder| o.sha256 = "AB".repeat(32),
    ] {
        let mut o = order();
        change(&mut o);
        assert_eq!(check_order(&o), Ok(()), "{o:?}");
    }
}

#[test]
fn an_order_for_an_older_version_is_refused() {
    for (order, running) in [
        ("1.2.2", "1.2.3"),
        ("0.9.0", "1.0.0"),
        ("1.3.0-rc.1", "1.3.0"),
    ] {
        let err = check_not_older(order, running, false).unwrap_err();
        assert!(err.to_string().contains("downgrades are refused"), "{err}");
        assert_eq!(
            check_not_older(order, running, true),
            Ok(Direction::AllowedDowngrade)
        );
    }
    for (order, running) in [("1.2.3", "1.2.3"), ("1.2.4", "1.2.3"), ("2.0.0", "1.9.9")] {
        assert_eq!(
            check_not_older(order, running, false),
            Ok(Direction::Forward)
        );
    }
    assert!(matches!(
        check_not_older("not a version", "1.2.3", true),
        Err(OrderError::OrderVersion { .. })
    ));
    assert!(matches!(
        check_not_older("1.2.3", "nope", true),
        Err(OrderError::RunningVersion { .. })
    ));
}

#[test]
fn a_release_key_offered_is_taken_only_when_it_is_the_one_pinned() {
    let file = PathBuf::from("/state/release.pub");
    assert_eq!(check_offered_key(Some("aa"), "aa", file.clone()), Ok(()));
    let err = check_offered_key(Some("aa"), "bb", file.clone()).unwrap_err();
    assert!(matches!(err, KeyRefusal::OtherPinned { .. }));
    assert!(
        err.to_string().contains("pinned the release key aa"),
        "{err}"
    );
    let err = check_offered_key(None, "bb", file).unwrap_err();
    assert!(matches!(err, KeyRefusal::NonePinned { .. }));
    assert!(err.to_string().contains("pinned no release key"), "{err}");
    assert!(err.to_string().contains("/state/release.pub"), "{err}");
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

fn trial(target: &str, from: &str, now_ms: i64, deadline: Duration) -> Trial {
    Trial::begin(
        target,
        from,
        "/x/dockmesh".into(),
        "/x/dockmesh.previous".into(),
        7,
        vec!["dockmesh".into(), "agent".into()],
        at(now_ms),
        deadline,
    )
}

#[test]
fn a_trial_is_confirmed_or_reverted_and_says_what_to_report() {
    let t = trial("2.0.0", "1.0.0", 1_000, Duration::from_secs(60));
    assert_eq!(t.0.deadline_ms, 61_000);
    let confirmed = UpgradeState::from(t.clone().confirm());
    assert_eq!(confirmed.failure("1.0.0"), None);
    assert_eq!(confirmed.failure("2.0.0"), None);
    assert!(confirmed.cleared_by_new_order());
    let on_trial = UpgradeState::from(t.clone());
    assert_eq!(on_trial.failure("1.0.0"), None);
    assert!(!on_trial.cleared_by_new_order());
    let reverted = UpgradeState::from(t.clone().revert(&RevertReason::Exited {
        target: "2.0.0".into(),
    }));
    assert!(reverted.cleared_by_new_order());
    let f = reverted.failure("1.0.0").unwrap();
    assert_eq!(f.target_version, "2.0.0");
    assert_eq!(
        f.reason,
        "the new binary (2.0.0) exited before it connected to the server"
    );
    // About another version's upgrade: not this binary's to report.
    assert_eq!(reverted.failure("1.5.0"), None);
    // A record reverted without a reason still says something.
    let bare = UpgradeState::Reverted(Reverted {
        swap: t.0,
        reason: None,
    });
    assert_eq!(
        bare.failure("1.0.0").unwrap().reason,
        "the new binary did not take"
    );
}

#[test]
fn at_startup_a_trial_is_watched_unwatched_or_incomplete() {
    let t = trial("2.0.0", "1.0.0", 0, Duration::from_secs(60));
    assert_eq!(
        t.clone().at_startup("2.0.0", at(10_000)),
        Startup::OnTrial {
            trial: t.clone(),
            exit_after: Duration::from_secs(50)
        }
    );
    // Past the deadline but within twice the grace: exit now.
    assert_eq!(
        t.clone().at_startup("2.0.0", at(90_000)),
        Startup::OnTrial {
            trial: t.clone(),
            exit_after: Duration::ZERO
        }
    );
    assert!(matches!(
        t.clone().at_startup("2.0.0", at(90_001)),
        Startup::Unwatched(_)
    ));
    let Startup::Incomplete(r) = t.clone().at_startup("1.0.0", at(1)) else {
        panic!()
    };
    assert_eq!(
        r.reason.as_deref(),
        Some("the upgrade to 2.0.0 did not complete; 1.0.0 runs again")
    );
    let settled = UpgradeState::from(t.confirm());
    assert_eq!(settled.at_startup("2.0.0", at(0)), Startup::Settled);
}

#[test]
fn the_watchdog_reverts_an_exited_or_hung_binary() {
    let t = trial("2.0.0", "1.0.0", 0, Duration::from_secs(60));
    let mut w = Watchdog::default();
    for _ in 0..GONE_CHECKS - 1 {
        match w.observe(&t, false, at(0)) {
            Watch::Wait(next) => w = next,
            other => panic!("{other:?}"),
        }
    }
    // Seen again: the count starts over.
    let Watch::Wait(again) = w.observe(&t, true, at(0)) else {
        panic!()
    };
    assert_eq!(again, Watchdog::default());
    assert_eq!(
        w.observe(&t, false, at(0)),
        Watch::Revert {
            kill: false,
            reason: RevertReason::Exited {
                target: "2.0.0".into()
            }
        }
    );
    assert!(matches!(
        Watchdog::default().observe(&t, true, at(75_000)),
        Watch::Wait(_)
    ));
    assert_eq!(
        Watchdog::default().observe(&t, true, at(75_001)),
        Watch::Revert {
            kill: true,
            reason: RevertReason::Hung {
                target: "2.0.0".into()
            }
        }
    );
}

#[test]
fn upgrade_json_written_before_stays_readable() {
    let old = r#"{
  "stage": "trial",
  "target_version": "0.2.0",
  "from_version": "0.1.0",
  "exe": "/usr/local/bin/dockmesh",
  "previous": "/usr/local/bin/dockmesh.previous",
  "pid": 4242,
  "deadline_ms": 1765000000000,
  "argv": ["dockmesh", "agent", "--state-dir", "/var/lib/dockmesh-agent"],
  "reason": null
}"#;
    let r: Record = serde_json::from_str(old).unwrap();
    let state = UpgradeState::from(r.clone());
    let UpgradeState::Trial(t) = &state else {
        panic!()
    };
    assert_eq!(t.0.pid, 4242);
    assert_eq!(Record::from(state), r);
    let reverted = r#"{"stage":"reverted","target_version":"0.2.0","from_version":"0.1.0",
        "exe":"/b","previous":"/b.previous","pid":1,"deadline_ms":5,"argv":[]}"#;
    let r: Record = serde_json::from_str(reverted).unwrap();
    assert_eq!(r.reason, None);
    assert_eq!(
        serde_json::to_value(Record::from(UpgradeState::from(r))).unwrap()["stage"],
        "reverted"
    );
}

#[test]
fn a_download_resumes_from_what_it_has() {
    let mut d = Download::new("http://s/b", 10, "1.0.0");
    assert_eq!(
        d.next_step(),
        Next::Request {
            wait: Duration::ZERO,
            from: None
        }
    );
    assert_eq!(d.answered(200, "200 OK"), Ok(Answer::WriteAt(0)));
    d.chunk(4).unwrap();
    assert!(!d.ended(None));
    assert_eq!(d.last(), "the answer ended after 4 bytes");
    assert_eq!(d.progress(), (4, 10));
    assert_eq!(
        d.next_step(),
        Next::Request {
            wait: BACKOFF,
            from: Some(4)
        }
    );
    assert_eq!(d.answered(206, "206"), Ok(Answer::WriteAt(4)));
    d.chunk(6).unwrap();
    assert!(d.ended(None));
    assert_eq!(d.next_step(), Next::Done);
}

#[test]
fn a_download_refuses_a_long_answer_a_bad_status_and_gives_up() {
    let mut d = Download::new("http://s/b", 10, "1.0.0");
    d.next_step();
    d.answered(200, "200").unwrap();
    d.chunk(10).unwrap();
    assert!(matches!(
        d.chunk(1),
        Err(DownloadError::TooLong { size: 10, .. })
    ));
    let mut d = Download::new("http://s/b", 10, "1.0.0");
    d.next_step();
    let err = d.answered(404, "404 Not Found").unwrap_err();
    assert_eq!(
        err.to_string(),
        "downloading http://s/b: the server answered 404 Not Found; the agent keeps running 1.0.0"
    );
    // Never reached: the host cannot download.
    let mut d = Download::new("http://s/b", 10, "1.0.0");
    for _ in 0..ATTEMPTS {
        assert!(matches!(d.next_step(), Next::Request { .. }));
        d.unreachable("refused".into());
    }
    assert_eq!(
        d.next_step(),
        Next::GiveUp(DownloadError::Unreachable {
            url: "http://s/b".into(),
            last: "refused".into()
        })
    );
    // Reached, refused to resume, then short each time.
    let mut d = Download::new("http://s/b", 10, "1.0.0");
    d.next_step();
    d.answered(200, "200").unwrap();
    d.chunk(3).unwrap();
    d.ended(Some("reset".into()));
    d.next_step();
    assert_eq!(d.answered(416, "416"), Ok(Answer::Retry));
    assert_eq!(d.progress(), (0, 10));
    let Next::Request { from: None, wait } = d.next_step() else {
        panic!()
    };
    assert_eq!(wait, BACKOFF * 2);
    d.answered(200, "200").unwrap();
    d.chunk(2).unwrap();
    d.ended(None);
    d.next_step();
    d.unreachable("gone".into());
    let Next::GiveUp(err) = d.next_step() else {
        panic!()
    };
    assert_eq!(
        err.to_string(),
        "the download from http://s/b stayed truncated: 2 of 10 bytes after 4 attempts (gone); \
         the agent keeps running 1.0.0"
    );
}

fn arb_state() -> impl Strategy<Value = UpgradeState> {
    (
        0u8..3,
        "[0-9]\\.[0-9]\\.[0-9]",
        "[0-9]\\.[0-9]\\.[0-9]",
        any::<u32>(),
        any::<i64>(),
        proptest::collection::vec("[a-z-]{0,6}", 0..4),
        proptest::option::of("[a-z ]{0,12}"),
    )
        .prop_map(|(stage, target, from, pid, deadline_ms, argv, reason)| {
            let swap = Swap {
                target_version: target,
                from_version: from,
                exe: "/x/dockmesh".into(),
                previous: "/x/dockmesh.previous".into(),
                pid,
                deadline_ms,
                argv,
            };
            match stage {
                0 => UpgradeState::Trial(Trial(swap)),
                1 => UpgradeState::Confirmed(Confirmed(swap)),
                _ => UpgradeState::Reverted(Reverted { swap, reason }),
            }
        })
}

/// The reference downgrade rule: (major, minor, patch) compared as numbers, and a pre-release
/// below the release of the same numbers.
fn older(a: (u64, u64, u64, bool), b: (u64, u64, u64, bool)) -> bool {
    let key = |v: (u64, u64, u64, bool)| (v.0, v.1, v.2, !v.3);
    key(a) < key(b)
}

fn words(v: (u64, u64, u64, bool)) -> String {
    format!("{}.{}.{}{}", v.0, v.1, v.2, if v.3 { "-rc.1" } else { "" })
}

proptest! {
    #[test]
    fn every_state_survives_upgrade_json(state in arb_state()) {
        let json = serde_json::to_string(&Record::from(state.clone())).unwrap();
        let back: Record = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(UpgradeState::from(back), state);
    }

    #[test]
    fn the_downgrade_rule_is_the_order_of_versions(
        a in (0u64..4, 0u64..4, 0u64..4, any::<bool>()),
        b in (0u64..4, 0u64..4, 0u64..4, any::<bool>()),
        allowed in any::<bool>(),
    ) {
        let got = check_not_older(&words(a), &words(b), allowed);
        let want = match (older(a, b), allowed) {
            (false, _) => Ok(Direction::Forward),
            (true, true) => Ok(Direction::AllowedDowngrade),
            (true, false) => Err(()),
        };
        prop_assert_eq!(got.map_err(|_| ()), want);
    }

    #[test]
    fn an_order_passes_exactly_when_each_field_is_well_formed(
        version in "[ -~]{0,70}",
        sha in "[0-9a-gA-G]{62,66}",
        size in prop_oneof![Just(0u64), 1u64..5, Just(MAX_BINARY), Just(MAX_BINARY + 1), any::<u64>()],
        signed in any::<bool>(),
    ) {
        let o = UpgradeOrder {
            version: version.clone(),
            binary: "/b".into(),
            size,
            sha256: sha.clone(),
            signature: signed.then(|| "00".into()),
            allow_downgrade: false,
        };
        let want = !version.is_empty()
            && version.len() <= 64
            && !version.contains(' ')
            && sha.len() == 64
            && !sha.contains(['g', 'G'])
            && (1..=MAX_BINARY).contains(&size)
            && signed;
        prop_assert_eq!(check_order(&o).is_ok(), want);
    }

    #[test]
    fn a_starting_agent_follows_the_deadline(
        start in -1_000_000i64..1_000_000,
        deadline_s in 0u64..600,
        later in -100_000i64..2_000_000,
        same in any::<bool>(),
    ) {
        let t = trial("2.0.0", "1.0.0", start, Duration::from_secs(deadline_s));
        let now = start + later;
        let running = if same { "2.0.0" } else { "1.0.0" };
        let deadline = start + deadline_s as i64 * 1000;
        let got = t.clone().at_startup(running, at(now));
        if !same {
            prop_assert!(matches!(got, Startup::Incomplete(_)), "{:?}", got);
        } else if now - deadline > 30_000 {
            prop_assert_eq!(got, Startup::Unwatched(t));
        } else {
            let left = if deadline > now { (deadline - now) as u64 } else { 0 };
            prop_assert_eq!(got, Startup::OnTrial { trial: t, exit_after: Duration::from_millis(left) });
        }
    }

    #[test]
    fn the_watchdog_reverts_at_the_first_long_absence_or_the_deadline(
        looks in proptest::collection::vec((any::<bool>(), 0i64..200), 0..60),
        deadline_s in 0u64..3,
    ) {
        let t = trial("2.0.0", "1.0.0", 0, Duration::from_secs(deadline_s));
        let limit = deadline_s as i64 * 1000 + 15_000;
        // Reference: time advances by each look's step (×100 ms); the first look after ten
        // absences in a row reverts as exited, else the first look past the limit as hung.
        let mut want = None;
        let mut absent = 0;
        let mut now = 0i64;
        for (i, (alive, step)) in looks.iter().enumerate() {
            now += step * 100;
            absent = if *alive { 0 } else { absent + 1 };
            if absent == 10 {
                want = Some((i, false));
                break;
            }
            if now > limit {
                want = Some((i, true));
                break;
            }
        }
        let mut w = Watchdog::default();
        let mut got = None;
        let mut now = 0i64;
        for (i, (alive, step)) in looks.iter().enumerate() {
            now += step * 100;
            match w.observe(&t, *alive, at(now)) {
                Watch::Wait(next) => w = next,
                Watch::Revert { kill, reason } => {
                    prop_assert_eq!(kill, matches!(reason, RevertReason::Hung { .. }));
                    got = Some((i, kill));
                    break;
                }
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn a_download_completes_exactly_when_the_answers_deliver_the_size(
        size in 1u64..50,
        answers in proptest::collection::vec(
            prop_oneof![
                Just(None),
                (prop_oneof![Just(200u16), Just(206), Just(416)], 0u64..30).prop_map(Some),
            ],
            0..8,
        ),
    ) {
        // Reference: a file of `have` bytes; 200 rewrites it, 206 appends, 416 empties it; an
        // answer over the size fails; four attempts at most.
        let mut have = 0u64;
        let mut want: Result<(), &str> = Err("gave up");
        let mut reached = false;
        for a in answers.iter().take(ATTEMPTS as usize) {
            let Some((status, len)) = a else { continue };
            reached = true;
            let base = match status { 200 => 0, 206 => have, _ => { have = 0; continue } };
            if base + len > size {
                want = Err("too long");
                break;
            }
            have = base + len;
            if have == size {
                want = Ok(());
                break;
            }
        }
        let mut d = Download::new("u", size, "1");
        let mut got: Result<(), &str> = Err("gave up");
        let mut script = answers.iter();
        loop {
            match d.next_step() {
                Next::Done => { got = Ok(()); break; }
                Next::GiveUp(e) => {
                    prop_assert_eq!(matches!(e, DownloadError::Unreachable { .. }), !reached);
                    break;
                }
                Next::Request { .. } => {}
            }
            match script.next() {
                None => { got = Err("gave up"); break; }
                Some(None) => d.unreachable("x".into()),
                Some(Some((status, len))) => match d.answered(*status, "s").unwrap() {
                    Answer::Retry => {}
                    Answer::WriteAt(_) => {
                        if d.chunk(*len).is_err() { got = Err("too long"); break; }
                        if d.ended(None) { got = Ok(()); break; }
                    }
                },
            }
        }
        prop_assert_eq!(got, want);
    }
}
