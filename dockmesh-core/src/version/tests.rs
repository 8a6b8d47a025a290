use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, VecDeque};

fn v(s: &str) -> Version {
    Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn vs(list: &str) -> Vec<Version> {
    list.split_whitespace().map(v).collect()
}

/// Named rule sets for the data-driven tests: the presets and a few custom ones.
fn rules_named(name: &str) -> Rules {
    match name {
        "skip1" => Rules {
            max_minor_skip: 1,
            ..Rules::dtr()
        },
        "no-patch-skip" => Rules {
            patch_skip: false,
            ..Rules::dtr()
        },
        "major2" => Rules {
            max_major_step: 2,
            ..Rules::dtr()
        },
        "major2-any-minor" => Rules {
            max_major_step: 2,
            major_lands_on_minor_zero: false,
            ..Rules::dtr()
        },
        "downgrades" => Rules {
            allow_downgrade: true,
            ..Rules::dtr()
        },
        "pre" => Rules {
            allow_prerelease: true,
            ..Rules::dtr()
        },
        preset => Rules::preset(preset).unwrap(),
    }
}

// ---------------------------------------------------------------- parsing

/// `input` parses to `expected` (its canonical display), or fails with `expected` as message.
fn check_parse(input: &str, expected: &str) {
    let got = match Version::parse(input) {
        Ok(v) => v.to_string(),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expected, "parsing {input:?}");
}

#[test]
fn parses_leniently() {
    check_parse("1.2.3", "1.2.3");
    check_parse("v1.2.3", "1.2.3");
    check_parse("V1.2.3", "1.2.3");
    check_parse("  1.2.3\n", "1.2.3");
    check_parse("1.2", "1.2.0");
    check_parse("v1.2", "1.2.0");
    check_parse("1.2-rc.1", "1.2.0-rc.1");
    check_parse("1.2+b7", "1.2.0+b7");
    check_parse("2.0.0-rc.1", "2.0.0-rc.1");
    check_parse("2.0.0-rc.1+build.5", "2.0.0-rc.1+build.5");
    check_parse("1.2.3+sha.abc", "1.2.3+sha.abc");
}

#[test]
fn refuses_non_versions_naming_the_input() {
    check_parse(
        "",
        r#"error: invalid version "": it is empty; expected MAJOR.MINOR[.PATCH], e.g. 1.2.3"#,
    );
    check_parse(
        "v",
        r#"error: invalid version "v": it is empty; expected MAJOR.MINOR[.PATCH], e.g. 1.2.3"#,
    );
    check_parse(
        "1",
        r#"error: invalid version "1": a major number alone does not name a release; write at least MAJOR.MINOR, e.g. 1.0"#,
    );
    for bad in [
        "abc", "1.2.3.4", "1.x", "1..2", "1.2.3-", "01.2.3", "1.2.-3", "latest",
    ] {
        let err = Version::parse(bad).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid version {bad:?}: ")),
            "{bad}: {err}"
        );
        assert!(err.contains("expected MAJOR.MINOR[.PATCH]"), "{bad}: {err}");
    }
}

#[test]
fn compares_by_precedence_ignoring_build_metadata() {
    assert_eq!(v("1.2.3+a"), v("1.2.3+b"));
    assert!(v("1.2.3-rc.1") < v("1.2.3"));
    assert!(v("1.2.3-alpha") < v("1.2.3-beta"));
    assert!(v("1.2.3") < v("1.2.10"));
    assert!(v("1.10") > v("1.9.9"));
    let set: std::collections::HashSet<Version> = [v("1.2.3+a"), v("1.2.3+b")].into();
    assert_eq!(set.len(), 1);
}

#[test]
fn serde_round_trips_through_the_lenient_parser() {
    assert_eq!(serde_json::to_string(&v("v1.2")).unwrap(), r#""1.2.0""#);
    let back: Version = serde_json::from_str(r#""v2.1""#).unwrap();
    assert_eq!(back, Version::new(2, 1, 0));
    let err = serde_json::from_str::<Version>(r#""nope""#).unwrap_err();
    assert!(
        err.to_string().contains(r#"invalid version "nope""#),
        "{err}"
    );
}

#[test]
fn presets_by_name() {
    assert_eq!(Rules::preset("dtr"), Ok(Rules::dtr()));
    assert_eq!("K8S".parse::<Rules>(), Ok(Rules::k8s()));
    assert_eq!(Rules::default(), Rules::dtr());
    assert_eq!(
        Rules::preset("debian").unwrap_err().to_string(),
        r#"unknown upgrade rules "debian": the presets are dtr (the default) and k8s"#
    );
    for name in Rules::PRESETS {
        assert!(Rules::preset(name).is_ok());
    }
}

// ---------------------------------------------------------------- check

/// `input` is `RULES: FROM -> TO`; `expected` is the [`Check`]'s display.
fn check(input: &str, expected: &str) {
    let (rules, hop) = input.split_once(": ").expect("RULES: FROM -> TO");
    let (from, to) = hop.split_once(" -> ").expect("FROM -> TO");
    let got = rules_named(rules).check(&v(from), &v(to)).to_string();
    assert_eq!(got, expected, "{input}");
}

#[test]
fn dtr_patches_may_be_skipped() {
    check("dtr: 2.3.0 -> 2.3.1", "allowed");
    check("dtr: 2.3.0 -> 2.3.2", "allowed");
    check("dtr: 2.3.0 -> 2.3.9", "allowed");
    check("dtr: 2.0.0-rc.1 -> 2.0.0", "allowed");
}

#[test]
fn dtr_minors_may_not_be_skipped() {
    check("dtr: 2.3.1 -> 2.4.0", "allowed");
    check("dtr: 2.3.1 -> 2.4.7", "allowed");
    check("dtr: 2.3.9 -> 2.4.0", "allowed");
    check(
        "dtr: 2.3.1 -> 2.5.0",
        "refused: 2.3.1 → 2.5.0 skips minor 2.4; upgrade to a 2.4.x release first",
    );
    check(
        "dtr: 2.3.1 -> 2.7.2",
        "refused: 2.3.1 → 2.7.2 skips minors 2.4 to 2.6; upgrade to a 2.4.x release first",
    );
}

#[test]
fn dtr_majors_go_one_at_a_time_onto_minor_zero() {
    check("dtr: 1.4.2 -> 2.0.0", "allowed");
    check("dtr: 1.0.0 -> 2.0.5", "allowed");
    check(
        "dtr: 1.4.2 -> 2.1.0",
        "refused: 1.4.2 → 2.1.0 lands on 2.1, but a major upgrade must land on the new \
         major's first minor; upgrade to a 2.0.x release first",
    );
    check(
        "dtr: 1.4.2 -> 3.0.0",
        "refused: 1.4.2 → 3.0.0 skips major 2; majors go one at a time; upgrade to a 2.0.x \
         release first",
    );
    check(
        "dtr: 1.4.2 -> 4.0.0",
        "refused: 1.4.2 → 4.0.0 skips majors 2 to 3; majors go one at a time; upgrade to a \
         2.0.x release first",
    );
}

#[test]
fn dtr_refuses_every_downgrade() {
    for (from, to) in [("2.3.2", "2.3.1"), ("2.4.0", "2.3.9"), ("3.0.0", "2.9.9")] {
        check(
            &format!("dtr: {from} -> {to}"),
            &format!(
                "refused: {from} → {to} is a downgrade, and these rules refuse every downgrade \
                 (data written by {from} may not be readable by {to}); stay on {from}, or \
                 restore the backup taken before upgrading to {from}"
            ),
        );
    }
    check(
        "dtr: 2.0.0 -> 2.0.0-rc.1",
        "refused: 2.0.0 → 2.0.0-rc.1 is a downgrade, and these rules refuse every downgrade \
         (data written by 2.0.0 may not be readable by 2.0.0-rc.1); stay on 2.0.0, or restore \
         the backup taken before upgrading to 2.0.0",
    );
}

#[test]
fn same_version_is_nothing_to_do() {
    check("dtr: 1.2.3 -> 1.2.3", "nothing to do");
    check("dtr: v1.2 -> 1.2.0", "nothing to do");
    check("dtr: 1.2.3+a -> 1.2.3+b", "nothing to do");
    check("k8s: 1.2.3 -> 1.2.3", "nothing to do");
    check("dtr: 2.0.0-rc.1 -> 2.0.0-rc.1", "nothing to do");
}

#[test]
fn prerelease_targets_need_permission() {
    check(
        "dtr: 1.4.2 -> 2.0.0-rc.1",
        "refused: 1.4.2 → 2.0.0-rc.1 targets a pre-release, and these rules refuse \
         pre-release targets unless allowed explicitly; wait for the 2.0.0 release",
    );
    check("pre: 1.4.2 -> 2.0.0-rc.1", "allowed");
    check("pre: 2.0.0-rc.1 -> 2.0.0-rc.2", "allowed");
    check(
        "pre: 1.4.2 -> 1.6.0-rc.1",
        "refused: 1.4.2 → 1.6.0-rc.1 skips minor 1.5; upgrade to a 1.5.x release first",
    );
}

#[test]
fn k8s_skips_patches_not_minors_and_defines_no_major_upgrade() {
    check("k8s: 1.28.0 -> 1.28.4", "allowed");
    check("k8s: 1.28.3 -> 1.29.0", "allowed");
    check(
        "k8s: 1.28.3 -> 1.30.0",
        "refused: 1.28.3 → 1.30.0 skips minor 1.29; upgrade to a 1.29.x release first",
    );
    check(
        "k8s: 1.28.3 -> 1.27.9",
        "refused: 1.28.3 → 1.27.9 is a downgrade, and these rules refuse every downgrade \
         (data written by 1.28.3 may not be readable by 1.27.9); stay on 1.28.3, or restore \
         the backup taken before upgrading to 1.28.3",
    );
    check(
        "k8s: 1.33.1 -> 2.0.0",
        "refused: 1.33.1 → 2.0.0 crosses a major version, and these rules define no major \
         upgrade; follow the upgrade notes of 2.0.0, or use custom rules that allow it",
    );
}

#[test]
fn custom_rules() {
    check("skip1: 2.3.1 -> 2.5.0", "allowed");
    check(
        "skip1: 2.3.1 -> 2.6.0",
        "refused: 2.3.1 → 2.6.0 skips minors 2.4 to 2.5, more than the 1 allowed; upgrade \
         to a 2.5.x release first",
    );
    check("no-patch-skip: 1.2.0 -> 1.2.1", "allowed");
    check("no-patch-skip: 1.2.1-rc.1 -> 1.2.2", "allowed");
    check("no-patch-skip: 1.2.9 -> 1.3.4", "allowed");
    check(
        "no-patch-skip: 1.2.0 -> 1.2.2",
        "refused: 1.2.0 → 1.2.2 skips patch 1.2.1, and these rules allow one patch at a \
         time; upgrade to 1.2.1 first",
    );
    check(
        "no-patch-skip: 1.2.0 -> 1.2.5",
        "refused: 1.2.0 → 1.2.5 skips patches 1.2.1 to 1.2.4, and these rules allow one \
         patch at a time; upgrade to 1.2.1 first",
    );
    check("major2: 1.4.2 -> 3.0.0", "allowed");
    check(
        "major2: 1.4.2 -> 4.0.0",
        "refused: 1.4.2 → 4.0.0 crosses 3 majors, more than the 2 allowed at a time; \
         upgrade to a 3.0.x release first",
    );
    check("major2-any-minor: 1.4.2 -> 3.5.0", "allowed");
    check(
        "major2-any-minor: 1.4.2 -> 4.0.0",
        "refused: 1.4.2 → 4.0.0 crosses 3 majors, more than the 2 allowed at a time; \
         upgrade to a 3.x release first",
    );
    check("downgrades: 2.4.0 -> 1.0.0", "allowed");
    check(
        "downgrades: 2.4.0 -> 2.3.0-rc.1",
        "refused: 2.4.0 → 2.3.0-rc.1 targets a pre-release, and these rules refuse \
         pre-release targets unless allowed explicitly; wait for the 2.3.0 release",
    );
}

#[test]
fn refusals_say_what_is_needed_and_which_rule() {
    let needs = |rules: &str, from: &str, to: &str| {
        let Check::Refused(r) = rules_named(rules).check(&v(from), &v(to)) else {
            panic!("{from} -> {to} should be refused")
        };
        (r.rule_id(), r.needs().map(|n| n.to_string()))
    };
    assert_eq!(
        needs("dtr", "2.3.1", "2.5.0"),
        ("skips_minor", Some("a 2.4.x release".into()))
    );
    assert_eq!(
        needs("dtr", "1.0.0", "3.0.0"),
        ("skips_major", Some("a 2.0.x release".into()))
    );
    assert_eq!(
        needs("dtr", "1.0.0", "2.2.0"),
        ("major_not_on_minor_zero", Some("a 2.0.x release".into()))
    );
    assert_eq!(
        needs("no-patch-skip", "1.0.0", "1.0.3"),
        ("skips_patch", Some("1.0.1".into()))
    );
    assert_eq!(needs("dtr", "1.0.1", "1.0.0"), ("downgrade", None));
    assert_eq!(needs("dtr", "1.0.0", "1.0.1-rc.1"), ("pre_release", None));
    assert_eq!(needs("k8s", "1.0.0", "2.0.0"), ("no_major_upgrade", None));
}

// ---------------------------------------------------------------- plan

/// `input` is `RULES: FROM -> TO via RELEASE…`; `expected` is the plan's display followed by one
/// `advice: …` line per advice, or `error: …`.
fn check_plan(input: &str, expected: &str) {
    let (rules, rest) = input.split_once(": ").expect("RULES: FROM -> TO via …");
    let (hop, releases) = rest.split_once(" via").unwrap_or((rest, ""));
    let (from, to) = hop.split_once(" -> ").expect("FROM -> TO");
    let got = match rules_named(rules).plan(&v(from), &v(to), &vs(releases)) {
        Ok(plan) => std::iter::once(plan.to_string())
            .chain(plan.advice.iter().map(|a| format!("advice: {a}")))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expected, "{input}");
}

#[test]
fn plans_through_the_latest_patch_of_each_minor() {
    check_plan(
        "dtr: 2.3.1 -> 2.5.0 via 2.4.0 2.4.3 2.4.1 2.5.0",
        "2.3.1 → 2.4.3 → 2.5.0",
    );
    check_plan(
        "dtr: 1.0.0 -> 1.3.0 via 1.1.0 1.1.5 1.2.0 1.2.7 1.3.0 1.4.0",
        "1.0.0 → 1.1.5 → 1.2.7 → 1.3.0",
    );
    // The target need not be listed; releases above it are ignored.
    check_plan(
        "dtr: 1.0.0 -> 1.2.2 via 1.1.0 1.2.9",
        "1.0.0 → 1.1.0 → 1.2.2",
    );
    // A direct hop beats a longer chain through patches.
    check_plan("dtr: 1.0.0 -> 1.0.9 via 1.0.1 1.0.2", "1.0.0 → 1.0.9");
    check_plan(
        "skip1: 1.0.0 -> 1.4.0 via 1.1.0 1.2.0 1.2.3 1.3.0",
        "1.0.0 → 1.2.3 → 1.4.0",
    );
    check_plan(
        "no-patch-skip: 1.0.0 -> 1.1.0 via 1.0.1 1.0.2 1.0.3",
        "1.0.0 → 1.1.0",
    );
    check_plan(
        "no-patch-skip: 1.0.0 -> 1.0.3 via 1.0.1 1.0.2 1.0.3",
        "1.0.0 → 1.0.1 → 1.0.2 → 1.0.3",
    );
}

#[test]
fn plans_across_majors_with_advice() {
    check_plan(
        "dtr: 1.4.2 -> 2.2.0 via 1.5.0 1.5.3 2.0.0 2.0.1 2.1.0 2.2.0",
        "1.4.2 → 2.0.1 → 2.1.0 → 2.2.0\n\
         advice: 1.4.2 is not the latest release of major 1 (1.5.3 is); upgrading to 1.5.3 \
         before crossing to 2.x is recommended",
    );
    check_plan(
        "dtr: 1.5.3 -> 3.0.0 via 1.5.3 2.0.0 2.0.4 2.1.0 3.0.0",
        "1.5.3 → 2.0.4 → 3.0.0\n\
         advice: 2.0.4 is not the latest release of major 2 (2.1.0 is); upgrading to 2.1.0 \
         before crossing to 3.x is recommended",
    );
    check_plan("dtr: 1.5.3 -> 2.0.0 via 1.5.0 1.5.3 2.0.0", "1.5.3 → 2.0.0");
}

#[test]
fn plan_edge_cases() {
    check_plan("dtr: 1.2.3 -> 1.2.3 via 1.2.3 1.3.0", "1.2.3");
    check_plan(
        "dtr: 1.3.0 -> 1.2.0 via 1.2.0",
        "error: 1.3.0 → 1.2.0 is a downgrade, and these rules refuse every downgrade (data \
         written by 1.3.0 may not be readable by 1.2.0); stay on 1.3.0, or restore the backup \
         taken before upgrading to 1.3.0",
    );
    check_plan("downgrades: 1.3.0 -> 1.0.0", "1.3.0 → 1.0.0");
    check_plan(
        "dtr: 1.0.0 -> 1.1.0-rc.1 via 1.1.0-rc.1",
        "error: 1.0.0 → 1.1.0-rc.1 targets a pre-release, and these rules refuse pre-release \
         targets unless allowed explicitly; wait for the 1.1.0 release",
    );
    // Pre-releases in the list are not stepping stones unless allowed.
    check_plan(
        "dtr: 1.0.0 -> 1.2.0 via 1.1.0-rc.1",
        "error: no upgrade path from 1.0.0 to 1.2.0 through the given releases: a 1.1.x \
         release is missing from the list (1.0.0 → 1.2.0 skips minor 1.1; upgrade to a 1.1.x \
         release first)",
    );
    check_plan(
        "pre: 1.0.0 -> 1.2.0 via 1.1.0-rc.1",
        "1.0.0 → 1.1.0-rc.1 → 1.2.0",
    );
    // Build metadata does not make a different release.
    check_plan(
        "dtr: 1.0.0+a -> 1.1.0 via 1.0.0+b 1.1.0+c",
        "1.0.0+a → 1.1.0",
    );
}

#[test]
fn plan_names_the_missing_release_or_the_blocking_rule() {
    check_plan(
        "dtr: 2.3.1 -> 2.6.0 via 2.4.0 2.4.2",
        "error: no upgrade path from 2.3.1 to 2.6.0 through the given releases: it can reach \
         2.4.2, but a 2.5.x release is missing from the list (2.4.2 → 2.6.0 skips minor 2.5; \
         upgrade to a 2.5.x release first)",
    );
    check_plan(
        "dtr: 1.2.0 -> 3.0.0 via 1.3.0",
        "error: no upgrade path from 1.2.0 to 3.0.0 through the given releases: it can reach \
         1.3.0, but a 2.0.x release is missing from the list (1.3.0 → 3.0.0 skips major 2; \
         majors go one at a time; upgrade to a 2.0.x release first)",
    );
    check_plan(
        "k8s: 1.28.0 -> 2.0.0 via 1.29.0 1.29.3",
        "error: no upgrade path from 1.28.0 to 2.0.0 through the given releases: it can \
         reach 1.29.3, but 1.29.3 → 2.0.0 crosses a major version, and these rules define no \
         major upgrade; follow the upgrade notes of 2.0.0, or use custom rules that allow it",
    );
    let err = Rules::dtr()
        .plan(&v("2.3.1"), &v("2.6.0"), &vs("2.4.0 2.4.2"))
        .unwrap_err();
    let PlanError::NoPath(no_path) = err else {
        panic!("{err}")
    };
    assert_eq!(no_path.reached, v("2.4.2"));
    assert_eq!(no_path.missing, Some(Needed::Minor { major: 2, minor: 5 }));
}

#[test]
fn plan_serializes_for_machines() {
    let plan = Rules::dtr()
        .plan(&v("1.0.0"), &v("2.0.0"), &vs("1.1.0 2.0.0"))
        .unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "from": "1.0.0",
            "to": "2.0.0",
            "hops": [{"from": "1.0.0", "to": "2.0.0"}],
            "advice": [{"kind": "not_latest_of_major", "from": "1.0.0", "latest": "1.1.0"}],
        })
    );
}

#[test]
fn advice_only_when_crossing_a_major() {
    let releases = vs("1.4.0 1.5.3 1.6.0-rc.1 2.0.0 2.1.0");
    assert!(advice(&v("1.4.0"), &v("1.5.3"), &releases).is_empty());
    assert!(advice(&v("1.5.3"), &v("2.0.0"), &releases).is_empty());
    assert!(advice(&v("1.6.0"), &v("2.0.0"), &releases).is_empty());
    assert_eq!(
        advice(&v("1.4.0"), &v("2.0.0"), &releases),
        vec![Advice::NotLatestOfMajor {
            from: v("1.4.0"),
            latest: v("1.5.3")
        }]
    );
}

// ---------------------------------------------------------------- properties

fn arb_version() -> impl Strategy<Value = Version> {
    (
        0u64..4,
        0u64..5,
        0u64..4,
        prop::option::weighted(0.15, 1u64..3),
    )
        .prop_map(|(major, minor, patch, pre)| match pre {
            None => Version::new(major, minor, patch),
            Some(n) => v(&format!("{major}.{minor}.{patch}-rc.{n}")),
        })
}

fn arb_rules() -> impl Strategy<Value = Rules> {
    (
        0u64..3,
        any::<bool>(),
        0u64..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                max_minor_skip,
                patch_skip,
                max_major_step,
                lands,
                allow_downgrade,
                allow_prerelease,
            )| {
                Rules {
                    max_minor_skip,
                    patch_skip,
                    max_major_step,
                    major_lands_on_minor_zero: lands,
                    allow_downgrade,
                    allow_prerelease,
                }
            },
        )
}

/// Fewest upward allowed hops from `from` to `to` over `releases ∪ {from, to}` by plain BFS.
fn reference_len(
    rules: &Rules,
    from: &Version,
    to: &Version,
    releases: &[Version],
) -> Option<usize> {
    let nodes: Vec<Version> = releases
        .iter()
        .chain([from, to])
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut seen = BTreeSet::from([from.clone()]);
    let mut queue = VecDeque::from([(from.clone(), 0)]);
    while let Some((cur, d)) = queue.pop_front() {
        if cur == *to {
            return Some(d);
        }
        for next in &nodes {
            if next > &cur && rules.check(&cur, next) == Check::Allowed && seen.insert(next.clone())
            {
                queue.push_back((next.clone(), d + 1));
            }
        }
    }
    None
}

fn concrete(needed: &Needed) -> Version {
    match needed {
        Needed::Minor { major, minor } => Version::new(*major, *minor, 0),
        Needed::Major { major } => Version::new(*major, 0, 0),
        Needed::Exact(v) => v.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn display_parses_back(version in arb_version()) {
        prop_assert_eq!(Version::parse(&version.to_string()).unwrap(), version.clone());
        prop_assert_eq!(Version::parse(&format!("v{version}")).unwrap(), version);
    }

    #[test]
    fn check_is_consistent(rules in arb_rules(), from in arb_version(), to in arb_version()) {
        let c = rules.check(&from, &to);
        prop_assert_eq!(c == Check::NothingToDo, from == to);
        if let Check::Refused(r) = &c {
            prop_assert_eq!(r.is_downgrade(), to < from && !rules.allow_downgrade);
            if let Some(needed) = r.needs() {
                // The release named as needed lies between the two and can be upgraded to.
                let step = concrete(&needed);
                prop_assert!(from < step && step < to, "{} not between {} and {}", step, from, to);
                prop_assert_eq!(rules.check(&from, &step), Check::Allowed);
            }
        }
        if c == Check::Allowed && to.is_prerelease() {
            prop_assert!(rules.allow_prerelease);
        }
        if c == Check::Allowed && to < from {
            prop_assert!(rules.allow_downgrade);
        }
    }

    #[test]
    fn plans_are_allowed_upward_and_shortest(
        rules in arb_rules(),
        from in arb_version(),
        to in arb_version(),
        releases in prop::collection::vec(arb_version(), 0..24),
    ) {
        prop_assume!(to > from);
        let reference = reference_len(&rules, &from, &to, &releases);
        match rules.plan(&from, &to, &releases) {
            Ok(plan) => {
                prop_assert_eq!(Some(plan.hops.len()), reference, "plan {}", plan);
                prop_assert_eq!(&plan.hops[0].from, &from);
                prop_assert_eq!(&plan.hops.last().unwrap().to, &to);
                for (i, hop) in plan.hops.iter().enumerate() {
                    prop_assert_eq!(rules.check(&hop.from, &hop.to), Check::Allowed, "{}", hop);
                    prop_assert!(hop.to > hop.from, "plan goes down: {}", hop);
                    if i + 1 < plan.hops.len() {
                        prop_assert_eq!(&plan.hops[i + 1].from, &hop.to);
                        prop_assert!(releases.contains(&hop.to));
                        // No later patch of the same minor would have done as well.
                        let left = plan.hops.len() - i - 1;
                        for r in &releases {
                            let better = r.major() == hop.to.major()
                                && r.minor() == hop.to.minor()
                                && *r > hop.to
                                && *r < to
                                && rules.check(&hop.from, r) == Check::Allowed
                                && reference_len(&rules, r, &to, &releases) == Some(left);
                            prop_assert!(!better, "{} would be a later patch than {}", r, hop.to);
                        }
                    }
                }
            }
            Err(PlanError::NoPath(no_path)) => {
                let NoPath { reached, blocked, missing, .. } = *no_path;
                prop_assert_eq!(reference, None);
                prop_assert!(reference_len(&rules, &from, &reached, &releases).is_some());
                prop_assert_eq!(rules.check(&reached, &to), Check::Refused(blocked));
                if let Some(needed) = missing {
                    // Adding the missing release lets the chain go further.
                    let mut more = releases.clone();
                    more.push(concrete(&needed));
                    match rules.plan(&from, &to, &more) {
                        Ok(_) => {}
                        Err(PlanError::NoPath(further)) => {
                            prop_assert!(further.reached > reached, "{} not past {}", further.reached, reached);
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    }
                }
            }
            Err(PlanError::Refused(r)) => {
                prop_assert_eq!(reference, None);
                prop_assert!(to.is_prerelease() && !rules.allow_prerelease, "{}", r);
            }
        }
    }

    #[test]
    fn plans_to_the_same_or_lower_version(
        rules in arb_rules(),
        from in arb_version(),
        to in arb_version(),
        releases in prop::collection::vec(arb_version(), 0..8),
    ) {
        prop_assume!(to <= from);
        match (rules.plan(&from, &to, &releases), rules.check(&from, &to)) {
            (Ok(plan), Check::NothingToDo) => prop_assert!(plan.is_empty()),
            (Ok(plan), Check::Allowed) => prop_assert_eq!(plan.hops.len(), 1),
            (Err(PlanError::Refused(r)), Check::Refused(c)) => prop_assert_eq!(r, c),
            (plan, check) => prop_assert!(false, "{:?} vs {:?}", plan, check),
        }
    }
}

// ---------------------------------------------------------------- recommended plan

fn check_recommended(input: &str, expected: &str) {
    let (rules, rest) = input.split_once(": ").expect("RULES: FROM -> TO via …");
    let (hop, releases) = rest.split_once(" via").unwrap_or((rest, ""));
    let (from, to) = hop.split_once(" -> ").expect("FROM -> TO");
    let got = match rules_named(rules).recommended(&v(from), &v(to), &vs(releases)) {
        Ok(plan) => std::iter::once(plan.to_string())
            .chain(plan.advice.iter().map(|a| format!("advice: {a}")))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expected, "{input}");
}

#[test]
fn the_recommended_plan_reaches_the_latest_of_each_major_before_crossing() {
    check_recommended(
        "dtr: 1.4.2 -> 2.2.0 via 1.5.0 1.5.3 2.0.0 2.0.1 2.1.0 2.2.0",
        "1.4.2 → 1.5.3 → 2.0.1 → 2.1.0 → 2.2.0",
    );
    check_recommended(
        "dtr: 1.5.3 -> 3.0.0 via 1.5.3 2.0.0 2.0.4 2.1.0 3.0.0",
        "1.5.3 → 2.0.4 → 2.1.0 → 3.0.0",
    );
    check_recommended("dtr: 1.5.3 -> 2.0.0 via 1.5.0 1.5.3 2.0.0", "1.5.3 → 2.0.0");
    check_recommended(
        "dtr: 2.3.1 -> 2.5.0 via 2.4.0 2.4.3 2.5.0",
        "2.3.1 → 2.4.3 → 2.5.0",
    );
    check_recommended("dtr: 1.0.0 -> 1.0.0", "1.0.0");
    check_recommended("dtr: 1.0.0 -> 2.0.0 via 1.1.0-rc.1", "1.0.0 → 2.0.0");
    check_recommended(
        "dtr: 1.0.0 -> 3.0.0 via 2.1.0",
        "error: no upgrade path from 1.0.0 to 3.0.0 through the given releases: a 2.0.x release \
         is missing from the list (1.0.0 → 3.0.0 skips major 2; majors go one at a time; \
         upgrade to a 2.0.x release first)",
    );
}

proptest! {
    /// A recommended plan is a chain of allowed upward hops from `from` to `to`, never shorter
    /// than the shortest, and it crosses a major only from the latest known release of that
    /// major (so it carries no advice).
    #[test]
    fn recommended_plans_are_valid_and_cross_from_the_latest(
        rules in arb_rules(),
        from in arb_version(),
        to in arb_version(),
        releases in prop::collection::vec(arb_version(), 0..10),
    ) {
        prop_assume!(from < to && !from.is_prerelease() && !to.is_prerelease());
        if let Ok(plan) = rules.recommended(&from, &to, &releases) {
            prop_assert_eq!(&plan.from, &from);
            let mut cur = from.clone();
            for hop in &plan.hops {
                prop_assert_eq!(&hop.from, &cur);
                prop_assert!(hop.to > hop.from);
                prop_assert_eq!(rules.check(&hop.from, &hop.to), Check::Allowed);
                if hop.to.major() > hop.from.major() {
                    let later = releases.iter().any(|r| {
                        r.major() == hop.from.major() && !r.is_prerelease() && *r > hop.from
                    });
                    prop_assert!(!later, "{} crosses from {} with a later release of its major", hop, hop.from);
                }
                cur = hop.to.clone();
            }
            prop_assert_eq!(&cur, &to);
            prop_assert!(plan.advice.is_empty(), "{:?}", plan.advice);
            let shortest = reference_len(&rules, &from, &to, &releases);
            prop_assert!(shortest.is_some_and(|s| plan.hops.len() >= s));
        }
    }
}

#[test]
fn hops_print_as_arrows_and_an_empty_plan_is_nothing_to_do() {
    let plan = rules_named("dtr")
        .recommended(&v("1.4.2"), &v("1.5.3"), &vs("1.5.0 1.5.3"))
        .unwrap();
    assert!(!plan.is_empty());
    assert_eq!(plan.hops[0].to_string(), "1.4.2 → 1.5.3");
    let none = rules_named("dtr")
        .recommended(&v("1.4.2"), &v("1.4.2"), &[])
        .unwrap();
    assert!(none.is_empty());
}
