//! Version strings and upgrade plans as `upgrade check|plan|apply` read them: a running version,
//! a target, a rules preset (or rules from the input's flags) and a releases file (a JSON array
//! or one version a line), all arbitrary text.
//!
//! Properties: nothing panics; a version that parses prints as a string that parses to the same
//! version; a plan (shortest or recommended) is a chain from `from` to `to` whose every hop the
//! rules allow and lands on a listed release or on `to`, going up (a downgrade is one hop); the
//! recommended chain is never shorter than the shortest; `upgrade preflight`'s plan row agrees
//! with the recommended plan.
//!
//! `cargo +nightly fuzz run -s none -a version_plan`
#![no_main]

use dockmesh_core::preflight::CheckStatus;
use dockmesh_core::server_upgrade::judgement::{Target, parse_releases, plan_check, run_plan};
use dockmesh_core::version::{Check, Plan, Rules, Version};
use libfuzzer_sys::fuzz_target;

fn parses_back(v: &Version) {
    let again = Version::parse(&v.to_string()).expect("a printed version parses");
    assert_eq!(&again, v);
    assert_eq!(again.to_string(), v.to_string());
}

fn check_chain(plan: &Plan, rules: &Rules, releases: &[Version]) {
    let mut at = plan.from.clone();
    for hop in &plan.hops {
        assert_eq!(hop.from, at, "{plan}");
        assert_eq!(rules.check(&hop.from, &hop.to), Check::Allowed, "{plan}");
        assert!(hop.to == plan.to || releases.contains(&hop.to), "{plan}");
        if hop.to < hop.from {
            assert_eq!(plan.hops.len(), 1, "a downgrade is one hop: {plan}");
        }
        at = hop.to.clone();
    }
    assert_eq!(at, plan.to, "{plan}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.splitn(4, '\n');
    let (from, to, preset) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let releases_text = lines.next().unwrap_or_default();

    for s in [from, to] {
        if let Ok(v) = Version::parse(s) {
            parses_back(&v);
        }
    }
    let Ok(releases) = parse_releases(releases_text) else {
        return;
    };
    releases.iter().for_each(parses_back);
    if releases.len() > 64 {
        return;
    }
    let Ok(mut target) = Target::from_running(from, to, preset) else {
        return;
    };
    if flags & 0x80 != 0 {
        // Rules outside the presets.
        target.rules = Rules {
            max_minor_skip: u64::from(flags & 0x3),
            patch_skip: flags & 0x4 != 0,
            max_major_step: u64::from((flags >> 3) & 0x3),
            major_lands_on_minor_zero: flags & 0x20 != 0,
            allow_downgrade: flags & 0x40 != 0,
            allow_prerelease: flags & 0x1 != 0,
        };
    }
    let shortest = target.plan(&releases, true);
    let recommended = target.plan(&releases, false);
    if let Ok(p) = &shortest {
        check_chain(p, &target.rules, &releases);
    }
    if let Ok(p) = &recommended {
        check_chain(p, &target.rules, &releases);
        if let Ok(s) = &shortest {
            assert!(p.hops.len() >= s.hops.len(), "{p} is shorter than {s}");
        }
    }
    let run = run_plan(&target, &releases);
    if let (Ok(hops), Ok(p)) = (&run, &recommended) {
        assert_eq!(hops, &p.hops);
    }
    let (row, hops) = plan_check(&target, Some(&releases));
    match &recommended {
        Ok(p) => {
            assert_eq!(row.status, CheckStatus::Pass);
            assert_eq!(hops, p.hops);
        }
        Err(_) => assert_eq!(row.status, CheckStatus::Fail),
    }
    let _ = plan_check(&target, None);
});
