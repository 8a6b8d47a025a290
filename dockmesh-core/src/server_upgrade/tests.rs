use super::*;
use crate::preflight::{CheckResult, CheckStatus};
use crate::version::{Hop, Rules, Version};
use proptest::prelude::*;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn target(from: &str, to: &str, rules: &str) -> Target {
    Target {
        from: v(from),
        to: v(to),
        rules: Rules::preset(rules).unwrap(),
        rules_name: rules.into(),
    }
}

fn versions(list: &[&str]) -> Vec<Version> {
    list.iter().map(|s| v(s)).collect()
}

fn paths() -> Paths<'static> {
    Paths {
        binary: Path::new("/b/dockmesh"),
        backups: Path::new("/d/backups"),
    }
}

fn run(hops: &[(&str, &str)]) -> RunRecord {
    let hops: Vec<Hop> = hops
        .iter()
        .map(|(f, t)| Hop {
            from: v(f),
            to: v(t),
        })
        .collect();
    RunRecord::new(&hops.last().unwrap().to, "dtr", paths().binary, &hops)
}

#[test]
fn stages_are_ordered_and_named_as_recorded() {
    let all = [
        Stage::Pending,
        Stage::BackedUp,
        Stage::Swapped,
        Stage::Migrated,
        Stage::Checked,
        Stage::Done,
        Stage::Failed,
    ];
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    for s in all {
        assert_eq!(json!(s), json!(s.word()));
    }
}

#[test]
fn the_previous_binary_and_the_bundle_sit_where_they_did() {
    assert_eq!(
        previous_path(Path::new("/usr/local/bin/dockmesh"), "0.1.0"),
        Path::new("/usr/local/bin/dockmesh.previous-0.1.0")
    );
    assert_eq!(
        bundle_path(Path::new("/d/backups"), "0.2.0"),
        Path::new("/d/backups/pre-upgrade-0.2.0.tar.zst")
    );
}

#[test]
fn a_run_record_round_trips_and_names_where_it_stands() {
    let mut r = run(&[("0.1.0", "0.2.0")]);
    r.hops[0].stage = Stage::Swapped;
    let back: RunRecord = serde_json::from_value(json!(r)).unwrap();
    assert_eq!(back.hops[0].stage, Stage::Swapped);
    assert!(!back.finished());
    assert_eq!(
        back.where_it_stands(),
        "the run to 0.2.0 (0.1.0 → 0.2.0 swapped)"
    );
}

#[test]
fn upgrade_run_json_written_before_stays_readable() {
    let old = r#"{
  "target": "0.3.0",
  "rules": "dtr",
  "binary": "/usr/local/bin/dockmesh",
  "result": "failed",
  "hops": [
    {"from": "0.1.0", "to": "0.2.0", "stage": "done",
     "backup": "/d/backups/pre-upgrade-0.2.0.tar.zst",
     "previous": "/usr/local/bin/dockmesh.previous-0.1.0", "error": null, "undone": []},
    {"from": "0.2.0", "to": "0.3.0", "stage": "failed",
     "backup": "/d/backups/pre-upgrade-0.3.0.tar.zst",
     "previous": null, "error": "migrate: boom", "undone": ["put back"]},
    {"from": "0.3.0", "to": "0.4.0", "stage": "pending"}
  ]
}"#;
    let r: RunRecord = serde_json::from_str(old).unwrap();
    assert_eq!(r.result, RunResult::Failed);
    let states: Vec<HopState> = r
        .hops
        .iter()
        .map(|h| HopState::from_record(h).unwrap())
        .collect();
    assert!(matches!(states[0], HopState::Done(_)));
    let HopState::Failed(f) = &states[1] else {
        panic!()
    };
    assert_eq!(f.error, "migrate: boom");
    for (s, h) in states.iter().zip(&r.hops) {
        assert_eq!(&s.record(), h);
    }
    assert_eq!(serde_json::to_value(&r).unwrap()["result"], json!("failed"));
}

#[test]
fn a_hop_goes_stage_by_stage_and_says_what_to_undo() {
    let r = run(&[("0.1.0", "0.2.0")]);
    let mut hop = HopState::from_record(&r.hops[0]).unwrap();
    let mut commands = Vec::new();
    while let Some(c) = hop.next(paths()) {
        commands.push(c.clone());
        hop = hop.succeeded(c).unwrap();
    }
    assert_eq!(
        commands,
        [
            HopCommand::Backup {
                expect: "0.1.0".into(),
                bundle: "/d/backups/pre-upgrade-0.2.0.tar.zst".into()
            },
            HopCommand::Swap {
                to: "0.2.0".into(),
                previous: "/b/dockmesh.previous-0.1.0".into()
            },
            HopCommand::Migrate,
            HopCommand::Check { to: "0.2.0".into() },
            HopCommand::Finish,
        ]
    );
    assert_eq!(hop.stage(), Stage::Done);
    assert!(hop.clone().fail("x".into()).is_err());
    // Out of order: refused.
    let pending = HopState::from_record(&r.hops[0]).unwrap();
    let err = pending.clone().succeeded(HopCommand::Migrate).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hop 0.1.0 → 0.2.0: a migration is not allowed after pending"
    );
    // Before the swap nothing is undone; after it, the binary and the database.
    let (failing, undo) = pending.fail("backup: disk full".into()).unwrap();
    assert_eq!(undo, Undo::Nothing);
    assert_eq!(failing.after(), Stage::Pending);
    let failed = failing.undone(vec!["nothing".into()]);
    let rec = failed.record();
    assert_eq!(
        (rec.stage, rec.error.as_deref()),
        (Stage::Failed, Some("backup: disk full"))
    );
    // A failed hop is retried from the backup, its error cleared.
    let Some(HopCommand::Backup { .. }) = failed.next(paths()) else {
        panic!()
    };
    let swapped = failed
        .succeeded(HopCommand::Backup {
            expect: "0.1.0".into(),
            bundle: "/d/b.tar.zst".into(),
        })
        .unwrap()
        .succeeded(HopCommand::Swap {
            to: "0.2.0".into(),
            previous: "/b/p".into(),
        })
        .unwrap();
    let rec = swapped.record();
    assert_eq!((rec.error, rec.undone.len()), (None, 0));
    let (failing, undo) = swapped.fail("migrate: no".into()).unwrap();
    assert_eq!(
        undo,
        Undo::Restore {
            previous: "/b/p".into(),
            backup: "/d/b.tar.zst".into()
        }
    );
    assert_eq!(failing.after(), Stage::Swapped);
    let rec = failing.undone(vec![]).record();
    assert_eq!(rec.previous.as_deref(), Some(Path::new("/b/p")));
}

#[test]
fn a_damaged_hop_is_named() {
    let mut r = run(&[("0.1.0", "0.2.0")]).hops.remove(0);
    r.stage = Stage::Migrated;
    r.backup = Some("/b".into());
    let err = HopState::from_record(&r).unwrap_err();
    assert_eq!(err.missing, "previous binary");
    r.backup = None;
    assert_eq!(HopState::from_record(&r).unwrap_err().missing, "backup");
    r.stage = Stage::BackedUp;
    assert!(err.to_string().contains("recorded migrated"), "{err}");
    assert_eq!(HopState::from_record(&r).unwrap_err().missing, "backup");
}

#[test]
fn a_run_resumes_only_its_own_target_and_binary() {
    let file = Path::new("/d/upgrade-run.json");
    let to = v("0.2.0");
    assert_eq!(resume(None, &to, paths().binary, file), Ok(Resume::Fresh));
    let r = run(&[("0.1.0", "0.2.0")]);
    assert_eq!(
        resume(Some(r.clone()), &to, paths().binary, file),
        Ok(Resume::Continue(r.clone()))
    );
    let err = resume(Some(r.clone()), &v("0.3.0"), paths().binary, file).unwrap_err();
    assert!(err.to_string().contains("apply --to 0.2.0"), "{err}");
    let err = resume(Some(r.clone()), &to, Path::new("/other"), file).unwrap_err();
    assert!(
        err.to_string().contains("give --binary /b/dockmesh"),
        "{err}"
    );
    let mut done = r.clone();
    done.result = RunResult::Done;
    assert_eq!(
        resume(Some(done.clone()), &to, Path::new("/other"), file),
        Ok(Resume::NothingToDo(done.clone()))
    );
    assert_eq!(
        resume(Some(done), &v("0.3.0"), paths().binary, file),
        Ok(Resume::Fresh)
    );
    let mut bad = r;
    bad.target = "x".into();
    assert!(matches!(
        resume(Some(bad), &to, paths().binary, file),
        Err(ResumeError::BadTarget { .. })
    ));
}

#[test]
fn a_new_run_only_upgrades() {
    let releases = versions(&["0.1.0", "0.2.0"]);
    assert!(matches!(
        run_plan(&target("0.2.0", "0.1.0", "dtr"), &releases),
        Err(RunPlanError::Downgrade { .. })
    ));
    assert_eq!(
        run_plan(&target("0.1.0", "0.2.0", "dtr"), &releases)
            .unwrap()
            .len(),
        1
    );
    assert!(
        run_plan(&target("0.1.0", "0.1.0", "dtr"), &releases)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        run_plan(
            &target("0.1.0", "0.3.0", "dtr"),
            &versions(&["0.1.0", "0.3.0"])
        ),
        Err(RunPlanError::NoPlan(_))
    ));
}

#[test]
fn targets_name_what_is_wrong() {
    let t = Target::from_running("0.1.0", " v0.2 ", " DTR ").unwrap();
    assert_eq!(
        (t.to.to_string(), t.rules_name.as_str()),
        ("0.2.0".into(), "dtr")
    );
    assert_eq!(
        Target::from_running("x", "0.2.0", "dtr")
            .unwrap_err()
            .to_string(),
        "this binary's version \"x\""
    );
    assert_eq!(
        Target::from_running("0.1.0", "x", "dtr")
            .unwrap_err()
            .to_string(),
        "--to"
    );
    assert_eq!(
        Target::from_running("0.1.0", "0.2.0", "x")
            .unwrap_err()
            .to_string(),
        "--rules"
    );
}

#[test]
fn releases_files() {
    let got = parse_releases("# known\n1.2.3\n\n v1.3 # latest\n").unwrap();
    assert_eq!(got, versions(&["1.2.3", "1.3.0"]));
    assert_eq!(parse_releases(r#"["1.2.3", "v2.0"]"#).unwrap().len(), 2);
    assert!(matches!(
        parse_releases("1.2.3\nlatest\n"),
        Err(ReleasesError::Line(2, _))
    ));
    // The line or entry, then the version's own words (its source).
    let chain = |e: ReleasesError| {
        let source = std::error::Error::source(&e).map(ToString::to_string);
        format!("{e}: {}", source.unwrap_or_default())
    };
    let err = chain(parse_releases("1.2.3\nlatest\n").unwrap_err());
    assert!(
        err.starts_with("line 2: invalid version \"latest\""),
        "{err}"
    );
    let err = chain(parse_releases(r#"["1.2.3", "x"]"#).unwrap_err());
    assert!(err.starts_with("entry 2: invalid version \"x\""), "{err}");
    let err = parse_releases(r#"["1.2.3", 7]"#).unwrap_err().to_string();
    assert!(err.contains("not a JSON array of version strings"), "{err}");
    assert!(matches!(
        parse_releases(r#"["1.2.3", "x"]"#),
        Err(ReleasesError::Entry(2, _))
    ));
    assert!(matches!(
        parse_releases("  [\"x\"]"),
        Err(ReleasesError::Entry(1, _))
    ));
}

#[test]
fn max_backup_ages() {
    let check = |text: &str, secs: u64| {
        assert_eq!(
            parse_age(text).unwrap(),
            Duration::from_secs(secs),
            "{text}"
        );
    };
    check("24h", 24 * 3600);
    check("90m", 90 * 60);
    check("1h30m", 5400);
    check(" 2d ", 2 * 86_400);
    check("1w", 7 * 86_400);
    check("45s", 45);
    check("1d12h", 36 * 3600);
    let refused = |text: &str, why: &str| {
        let err = parse_age(text).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid --max-backup-age {text:?}")) && err.contains(why),
            "{text}: {err}"
        );
        assert!(err.contains("24h, 90m, 2d or 1h30m"), "{err}");
    };
    refused("", "empty");
    refused("24", "no unit after 24");
    refused("h", "no number before 'h'");
    refused("5x", "unknown unit 'x'");
    refused("1.5h", "unknown unit '.'");
    refused("0h", "zero");
    refused("-1h", "unknown unit '-'");
    refused("99999999999999999999h", "number is too large");
    refused("999999999999999w", "it is too large");
    refused("18446744073709551615s1s", "it is too large");
}

#[test]
fn ages_in_words() {
    let w = |s: u64| age_words(Duration::from_secs(s));
    assert_eq!(w(17), "17s");
    assert_eq!(w(60), "1m");
    assert_eq!(w(42 * 60 + 5), "42m");
    assert_eq!(w(3600), "1h 0m");
    assert_eq!(w(5 * 3600 + 12 * 60), "5h 12m");
    assert_eq!(w(86_400), "1d 0h");
    assert_eq!(w(3 * 86_400 + 2 * 3600 + 59), "3d 2h");
}

#[test]
fn a_backup_older_than_allowed_fails() {
    let s = Duration::from_secs;
    assert_eq!(backup_age(s(10), s(10)), CheckStatus::Pass);
    assert_eq!(backup_age(s(11), s(10)), CheckStatus::Fail);
}

#[test]
fn the_version_rule_is_upgrade_checks() {
    let c = version_rule_check(&target("0.1.0", "0.2.0", "dtr"));
    assert_eq!(
        (c.name.as_str(), c.status),
        ("version_rule", CheckStatus::Pass)
    );
    assert_eq!(c.detail, "allowed: 0.1.0 → 0.2.0 (dtr rules)");
    let c = version_rule_check(&target("0.1.0", "0.3.0", "dtr"));
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(
        c.detail.starts_with("refused: ") && c.detail.contains("0.2"),
        "{}",
        c.detail
    );
    let c = version_rule_check(&target("1.4.0", "2.0.0", "k8s"));
    assert_eq!(c.status, CheckStatus::Fail, "{}", c.detail);
    let c = version_rule_check(&target("0.1.0", "0.1.0", "dtr"));
    assert_eq!(c.status, CheckStatus::Warn);
    assert_eq!(c.detail, "nothing to do: 0.1.0 is already 0.1.0");
}

#[test]
fn the_plan_is_upgrade_plans_or_the_direct_hop() {
    let t = target("0.1.0", "0.3.0", "dtr");
    let releases = versions(&["0.1.0", "0.2.0", "0.2.4", "0.3.0"]);
    let (c, hops) = plan_check(&t, Some(&releases));
    assert_eq!(
        (c.name.as_str(), c.status),
        ("plan", CheckStatus::Pass),
        "{}",
        c.detail
    );
    assert_eq!(hops, t.plan(&releases, false).unwrap().hops);
    assert_eq!(
        hops.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["0.1.0 → 0.2.4", "0.2.4 → 0.3.0"]
    );
    assert!(
        c.detail
            .starts_with("2 hop(s): 0.1.0 → 0.2.4, 0.2.4 → 0.3.0"),
        "{}",
        c.detail
    );
    assert_eq!(t.plan(&releases, true).unwrap().hops.len(), 2);

    let (c, hops) = plan_check(&t, Some(&versions(&["0.1.0", "0.3.0"])));
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.starts_with("no plan: "), "{}", c.detail);
    assert!(hops.is_empty());

    let (c, hops) = plan_check(&target("0.1.0", "0.1.0", "dtr"), Some(&releases));
    assert_eq!(c.status, CheckStatus::Pass);
    assert_eq!(c.detail, "nothing to do: 0.1.0 is already 0.1.0");
    assert!(hops.is_empty());

    let (c, hops) = plan_check(&t, None);
    assert_eq!(c.status, CheckStatus::Fail);
    assert!(c.detail.contains("--releases FILE"), "{}", c.detail);
    assert!(hops.is_empty());

    let (c, hops) = plan_check(&target("0.1.0", "0.1.0", "dtr"), None);
    assert_eq!(c.status, CheckStatus::Warn);
    assert!(c.detail.ends_with("(nothing to do)"), "{}", c.detail);
    assert!(hops.is_empty());

    let (c, hops) = plan_check(&target("0.1.0", "0.2.0", "dtr"), None);
    assert_eq!(c.status, CheckStatus::Warn);
    assert!(
        c.detail
            .starts_with("no releases file: only the direct hop was checked"),
        "{}",
        c.detail
    );
    assert_eq!(hops.len(), 1);
}

fn arb_status() -> impl Strategy<Value = CheckStatus> {
    prop_oneof![
        Just(CheckStatus::Pass),
        Just(CheckStatus::Warn),
        Just(CheckStatus::Fail)
    ]
}

/// The reference hop: the stages in order, and whether a failure there restores.
const ORDER: [Stage; 6] = [
    Stage::Pending,
    Stage::BackedUp,
    Stage::Swapped,
    Stage::Migrated,
    Stage::Checked,
    Stage::Done,
];

proptest! {
    #[test]
    fn a_preflight_passes_unless_a_check_failed(statuses in proptest::collection::vec(arb_status(), 0..6)) {
        let checks: Vec<CheckResult> = statuses.iter().map(|s| row("c", *s, "")).collect();
        let fails = statuses.iter().filter(|s| matches!(s, CheckStatus::Fail)).count();
        prop_assert_eq!(passed(&checks), fails == 0);
    }

    #[test]
    fn an_age_is_the_sum_of_its_parts(parts in proptest::collection::vec((0u64..1000, 0usize..5), 1..4)) {
        let units = [('s', 1u64), ('m', 60), ('h', 3600), ('d', 86_400), ('w', 604_800)];
        let text: String = parts.iter().map(|(n, u)| format!("{n}{}", units[*u].0)).collect();
        let total: u64 = parts.iter().map(|(n, u)| n * units[*u].1).sum();
        let got = parse_age(&text);
        if total == 0 {
            prop_assert!(got.is_err());
        } else {
            prop_assert_eq!(got, Ok(Duration::from_secs(total)));
        }
    }

    /// A hop driven through a script of outcomes, persisted and read back after every step
    /// (as a resumed run does), against the reference: stages in order, a failure restores
    /// exactly once the binary was swapped, and a failed hop starts again from the backup.
    #[test]
    fn a_hop_follows_the_reference(script in proptest::collection::vec(any::<bool>(), 0..20)) {
        let r = run(&[("1.0.0", "1.1.0")]);
        let mut hop = HopState::from_record(&r.hops[0]).unwrap();
        let mut at = 0usize; // index in ORDER; failures go back to 0 with `failed` set
        let mut failed = false;
        for ok in script {
            let Some(command) = hop.next(paths()) else {
                prop_assert_eq!(ORDER[at], Stage::Done);
                break;
            };
            if ok {
                hop = hop.succeeded(command).unwrap();
                at += 1;
                failed = false;
            } else {
                let (failing, undo) = hop.fail("e".into()).unwrap();
                let restores = !failed && (2..=4).contains(&at);
                prop_assert_eq!(matches!(undo, Undo::Restore { .. }), restores);
                hop = failing.undone(vec!["u".into()]);
                at = 0;
                failed = true;
            }
            let want = if failed { Stage::Failed } else { ORDER[at] };
            prop_assert_eq!(hop.stage(), want);
            let rec = hop.record();
            let json = serde_json::to_string(&rec).unwrap();
            let back: HopRecord = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.clone(), rec);
            prop_assert_eq!(HopState::from_record(&back).unwrap(), hop.clone());
        }
    }
}
