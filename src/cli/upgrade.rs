//! `dockmesh upgrade check|plan`: the version rules from the command line; `preflight` (the
//! facts gathered in `preflight.rs`, judged and printed here) checks before the server's own
//! upgrade; `apply` (in `apply.rs`) performs it, hop by hop, resumable; `verify` (in
//! `verify.rs`) checks a server after it.
//!
//! Output, one fact per line (or one JSON object with `--json`):
//! - `check`: `allowed: FROM → TO (RULES rules)` then one `advice: …` line per advice (exit 0);
//!   `nothing to do: FROM is already TO` (exit 0); `refused: REASON` (exit 1).
//! - `plan`: one hop per line, `FROM → TO` (the recommended chain, or the shortest with
//!   `--shortest`), then one `advice: …` line per advice (exit 0);
//!   `nothing to do: …` (exit 0); `no plan: REASON` (exit 1).
//! - `preflight`: a table `CHECK STATUS DETAIL` (`version_rule`, `plan`, `backup`, `disk`,
//!   `schema`, `agents`), then `preflight passed: …` (exit 0) or
//!   `preflight failed: N check(s) failed` (exit 1); with `--json` one object
//!   `{"result": "pass"|"fail", "from", "to", "checks": [{"name", "status", "detail"}], "plan"}`.
//! - A bad version, rules name or releases file: `error: …` on stderr (exit 2; with `--json`, also
//!   `{"result": "error", "error": …}` on stdout).
//!
//! A releases file holds one version per line (blank lines and `#` comments ignored) or a JSON
//! array of version strings.

use super::db::Location;
use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use dockmesh_core::preflight::{CheckResult, CheckStatus};
use dockmesh_core::version::{self, Check, Hop, Plan, PlanError, Rules, Version};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `dockmesh upgrade …`
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Check one upgrade: prints `allowed`, `nothing to do`, or `refused: REASON` (exit 1).
    Check(CheckArgs),
    /// Plan a chain of allowed upgrades through known releases, one hop per line: the
    /// recommended one (the latest release of each major before crossing to the next), or the
    /// shortest with --shortest.
    Plan(PlanArgs),
    /// The checks before the server's own upgrade: the version rule and plan, a recent
    /// verified backup, free disk, the target binary's schema migrations, agents that would
    /// fall outside the target's protocol window. Exit 1 when a check fails. Changes nothing
    /// (unless --backup, which takes a backup first).
    Preflight(PreflightArgs),
    /// The server's own upgrade along the recommended plan through a directory of signed
    /// binaries, hop by hop: backup, verify and swap the binary, migrate, check. Resumable
    /// (progress in `<data-dir>/upgrade-run.json`); a failed hop is undone (exit 1).
    Apply(super::apply::ApplyArgs),
    /// After a server upgrade: every host online, agents on the server's version (or pending a
    /// manual upgrade), stacks healthy, audit chain intact, schema up to date. Exit 1 when
    /// anything is off.
    Verify(super::verify::VerifyArgs),
}

/// Options both subcommands take.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The version upgraded from (`1.2.3`, `v1.2.3`, `1.2`).
    from: String,
    /// The version to upgrade to.
    to: String,
    /// The rule preset: `dtr` (patches may be skipped, minors not, majors one at a time onto
    /// X.0) or `k8s` (patches may be skipped, minors not, no major upgrades).
    #[arg(long, default_value = "dtr", value_name = "dtr|k8s")]
    rules: String,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    json: bool,
}

/// `dockmesh upgrade check FROM TO`
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Known releases, for advice (one version per line, `#` comments, or a JSON array).
    #[arg(long, value_name = "FILE")]
    releases: Option<PathBuf>,
}

/// `dockmesh upgrade plan FROM TO --releases FILE`
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Known releases: one version per line (blank lines and `#` comments ignored), or a JSON
    /// array of version strings.
    #[arg(long, value_name = "FILE")]
    releases: PathBuf,
    /// The minimal chain instead of the recommended one.
    #[arg(long)]
    shortest: bool,
}

/// `dockmesh upgrade preflight --to VERSION …`
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The version the server is to be upgraded to (from this binary's version).
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// Known releases, to plan the hops (one version per line, `#` comments, or a JSON array).
    /// Without it only the direct hop is checked.
    #[arg(long, value_name = "FILE")]
    pub releases: Option<PathBuf>,
    /// The new binary: its `--version` must be VERSION; its `db status` tells the schema
    /// migrations it brings (read only) and its `version --json` its agent protocol.
    #[arg(long, value_name = "NEW_BINARY")]
    pub binary: Option<PathBuf>,
    /// Where the backup bundles (`*.tar.zst`) are (by default `<data-dir>/backups`).
    #[arg(long, value_name = "DIR")]
    pub backups: Option<PathBuf>,
    /// The newest verified bundle must be younger than this (`90m`, `24h`, `2d`, `1h30m`).
    #[arg(long, value_name = "AGE", default_value = "24h")]
    pub max_backup_age: String,
    /// Take a backup into the backups directory first (as `dockmesh backup` does).
    #[arg(long)]
    pub backup: bool,
    /// The database (read only) and the data directory.
    #[command(flatten)]
    pub location: Location,
    /// The rule preset: `dtr` or `k8s` (as for `upgrade check`).
    #[arg(long, default_value = "dtr", value_name = "dtr|k8s")]
    pub rules: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What a subcommand decided: the lines to print (or the JSON object) and the exit code.
pub(super) struct Outcome {
    pub(super) lines: Vec<String>,
    pub(super) json: Value,
    pub(super) code: u8,
}

/// Run an upgrade subcommand.
pub fn run(cmd: UpgradeCommand) -> ExitCode {
    let (json, outcome) = match cmd {
        UpgradeCommand::Check(args) => (args.common.json, check(&args)),
        UpgradeCommand::Plan(args) => (args.common.json, plan(&args)),
        UpgradeCommand::Preflight(args) => (args.json, super::preflight::run(&args)),
        UpgradeCommand::Apply(args) => return super::apply::run(args),
        UpgradeCommand::Verify(args) => return super::verify::run(args),
    };
    match outcome {
        Ok(outcome) => {
            if json {
                println!("{}", outcome.json);
            } else {
                for line in &outcome.lines {
                    println!("{line}");
                }
            }
            ExitCode::from(outcome.code)
        }
        Err(err) => {
            let message = format!("{err:#}");
            eprintln!("error: {message}");
            if json {
                println!("{}", json!({ "result": "error", "error": message }));
            }
            ExitCode::from(2)
        }
    }
}

pub(super) struct Parsed {
    pub(super) from: Version,
    pub(super) to: Version,
    pub(super) rules: Rules,
    pub(super) rules_name: String,
}

fn parse_common(args: &CommonArgs) -> anyhow::Result<Parsed> {
    let from = Version::parse(&args.from).context("FROM")?;
    let to = Version::parse(&args.to).context("TO")?;
    let rules = Rules::preset(&args.rules)?;
    Ok(Parsed {
        from,
        to,
        rules,
        rules_name: args.rules.trim().to_ascii_lowercase(),
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<Outcome> {
    let p = parse_common(&args.common)?;
    let releases = match &args.releases {
        Some(path) => read_releases(path)?,
        None => Vec::new(),
    };
    let base = json!({
        "from": p.from,
        "to": p.to,
        "rules": p.rules_name,
    });
    Ok(match p.rules.check(&p.from, &p.to) {
        Check::Allowed => {
            let advice = version::advice(&p.from, &p.to, &releases);
            let mut lines = vec![format!(
                "allowed: {} → {} ({} rules)",
                p.from, p.to, p.rules_name
            )];
            lines.extend(advice.iter().map(|a| format!("advice: {a}")));
            Outcome {
                lines,
                json: with(
                    base,
                    json!({ "result": "allowed", "advice": advice_json(&advice) }),
                ),
                code: 0,
            }
        }
        Check::NothingToDo => Outcome {
            lines: vec![format!("nothing to do: {} is already {}", p.from, p.to)],
            json: with(base, json!({ "result": "nothing_to_do", "advice": [] })),
            code: 0,
        },
        Check::Refused(refusal) => Outcome {
            lines: vec![format!("refused: {refusal}")],
            json: with(
                base,
                json!({
                    "result": "refused",
                    "rule": refusal.rule_id(),
                    "reason": refusal.to_string(),
                    "needs": refusal.needs().map(|n| n.to_string()),
                }),
            ),
            code: 1,
        },
    })
}

fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
    let p = parse_common(&args.common)?;
    let releases = read_releases(&args.releases)?;
    let base = json!({
        "from": p.from,
        "to": p.to,
        "rules": p.rules_name,
    });
    let planned = plan_hops(&p, &releases, args.shortest);
    Ok(match planned {
        Ok(plan) if plan.is_empty() => Outcome {
            lines: vec![format!("nothing to do: {} is already {}", p.from, p.to)],
            json: with(
                base,
                json!({ "result": "nothing_to_do", "hops": [], "advice": [] }),
            ),
            code: 0,
        },
        Ok(plan) => {
            let mut lines: Vec<String> = plan.hops.iter().map(ToString::to_string).collect();
            lines.extend(plan.advice.iter().map(|a| format!("advice: {a}")));
            Outcome {
                lines,
                json: with(
                    base,
                    json!({
                        "result": "planned",
                        "hops": plan.hops,
                        "advice": advice_json(&plan.advice),
                    }),
                ),
                code: 0,
            }
        }
        Err(err) => {
            let mut extra = json!({ "result": "no_plan", "reason": err.to_string() });
            match &err {
                PlanError::Refused(r) => extra["rule"] = json!(r.rule_id()),
                PlanError::NoPath(no_path) => {
                    extra["rule"] = json!(no_path.blocked.rule_id());
                    extra["reached"] = json!(no_path.reached);
                    extra["missing"] = json!(no_path.missing.as_ref().map(ToString::to_string));
                }
                _ => {}
            }
            Outcome {
                lines: vec![format!("no plan: {err}")],
                json: with(base, extra),
                code: 1,
            }
        }
    })
}

/// The chain `upgrade plan` prints: the recommended one, or the shortest.
pub(super) fn plan_hops(
    p: &Parsed,
    releases: &[Version],
    shortest: bool,
) -> Result<Plan, PlanError> {
    if shortest {
        p.rules.plan(&p.from, &p.to, releases)
    } else {
        p.rules.recommended(&p.from, &p.to, releases)
    }
}

/// One row of the preflight table.
pub(super) fn row(name: &str, status: CheckStatus, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        status,
        detail: detail.into(),
    }
}

/// `--max-backup-age`: one or more `<number><unit>` with the units `s`, `m`, `h`, `d`, `w`
/// (`90m`, `24h`, `1h30m`, `2d`).
pub(super) fn parse_age(text: &str) -> anyhow::Result<std::time::Duration> {
    let bad = |why: &str| {
        anyhow!("invalid --max-backup-age {text:?}: {why}; write it like 24h, 90m, 2d or 1h30m")
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad(&format!("unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(bad(&format!("no number before {c:?}")));
        }
        let n: u64 = digits.parse().map_err(|_| bad("the number is too large"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("it is too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad(&format!("no unit after {digits}")));
    }
    if total == 0 {
        return Err(bad("it is zero"));
    }
    Ok(std::time::Duration::from_secs(total))
}

/// A duration in words, coarse: `3d 2h`, `5h 12m`, `42m`, `17s`.
pub(super) fn age_words(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins}m")
    } else if mins > 0 {
        format!("{mins}m")
    } else {
        format!("{s}s")
    }
}

/// `version_rule`: the direct upgrade from this binary's version, as `upgrade check` judges it.
pub(super) fn version_rule_check(p: &Parsed) -> CheckResult {
    let name = "version_rule";
    match p.rules.check(&p.from, &p.to) {
        Check::Allowed => row(
            name,
            CheckStatus::Pass,
            format!("allowed: {} → {} ({} rules)", p.from, p.to, p.rules_name),
        ),
        Check::NothingToDo => row(
            name,
            CheckStatus::Warn,
            format!("nothing to do: {} is already {}", p.from, p.to),
        ),
        Check::Refused(refusal) => row(name, CheckStatus::Fail, format!("refused: {refusal}")),
    }
}

/// `plan`: the recommended chain through the known releases (as `upgrade plan` computes it),
/// or, without releases, the direct hop only.
pub(super) fn plan_check(p: &Parsed, releases: Option<&[Version]>) -> (CheckResult, Vec<Hop>) {
    let name = "plan";
    let Some(releases) = releases else {
        return match p.rules.check(&p.from, &p.to) {
            Check::Allowed => (
                row(
                    name,
                    CheckStatus::Warn,
                    format!(
                        "no releases file: only the direct hop was checked ({} → {})",
                        p.from, p.to
                    ),
                ),
                vec![Hop {
                    from: p.from.clone(),
                    to: p.to.clone(),
                }],
            ),
            Check::NothingToDo => (
                row(
                    name,
                    CheckStatus::Warn,
                    "no releases file: only the direct hop was checked (nothing to do)",
                ),
                Vec::new(),
            ),
            Check::Refused(_) => (
                row(
                    name,
                    CheckStatus::Fail,
                    "no releases file: only the direct hop was checked, and it is refused; \
                     pass --releases FILE to plan through the releases in between",
                ),
                Vec::new(),
            ),
        };
    };
    match plan_hops(p, releases, false) {
        Ok(plan) if plan.is_empty() => (
            row(
                name,
                CheckStatus::Pass,
                format!("nothing to do: {} is already {}", p.from, p.to),
            ),
            Vec::new(),
        ),
        Ok(plan) => {
            let mut detail = format!(
                "{} hop(s): {}",
                plan.hops.len(),
                plan.hops
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for a in &plan.advice {
                detail.push_str(&format!("; advice: {a}"));
            }
            (row(name, CheckStatus::Pass, detail), plan.hops)
        }
        Err(err) => (
            row(name, CheckStatus::Fail, format!("no plan: {err}")),
            Vec::new(),
        ),
    }
}

/// The exit code of a preflight: 1 when any check failed, else 0.
pub(super) fn preflight_code(checks: &[CheckResult]) -> u8 {
    if checks.iter().any(|c| c.status == CheckStatus::Fail) {
        1
    } else {
        0
    }
}

fn status_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "pass",
        CheckStatus::Warn => "warn",
        CheckStatus::Fail => "fail",
    }
}

/// The table, the summary line and the JSON object of a preflight.
pub(super) fn preflight_outcome(p: &Parsed, checks: &[CheckResult], plan: &[Hop]) -> Outcome {
    let code = preflight_code(checks);
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                status_word(c.status).to_owned(),
                c.detail.clone(),
            ]
        })
        .collect();
    let mut lines = super::client::table_lines(&["CHECK", "STATUS", "DETAIL"], &rows);
    let names = |status: CheckStatus| {
        checks
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
    };
    let failed = names(CheckStatus::Fail);
    let warned = names(CheckStatus::Warn);
    lines.push(if failed.is_empty() {
        let mut s = format!(
            "preflight passed: {} → {} ({} rules)",
            p.from, p.to, p.rules_name
        );
        if !warned.is_empty() {
            s.push_str(&format!(
                ", {} warning(s): {}",
                warned.len(),
                warned.join(", ")
            ));
        }
        s
    } else {
        format!(
            "preflight failed: {} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        )
    });
    Outcome {
        lines,
        json: json!({
            "result": if code == 0 { "pass" } else { "fail" },
            "from": p.from,
            "to": p.to,
            "rules": p.rules_name,
            "checks": checks,
            "plan": plan,
        }),
        code,
    }
}

/// Parse `--to` (and `--rules`) against this binary's version.
pub(super) fn parse_target(to: &str, rules: &str) -> anyhow::Result<Parsed> {
    let from = Version::parse(super::VERSION)
        .with_context(|| format!("this binary's version {:?}", super::VERSION))?;
    let to = Version::parse(to).context("--to")?;
    let rules_parsed = Rules::preset(rules).context("--rules")?;
    Ok(Parsed {
        from,
        to,
        rules: rules_parsed,
        rules_name: rules.trim().to_ascii_lowercase(),
    })
}

/// Advice as objects with their words (`message`) beside the data.
fn advice_json(advice: &[version::Advice]) -> Value {
    advice
        .iter()
        .map(|a| with(json!(a), json!({ "message": a.to_string() })))
        .collect()
}

/// `base` with `extra`'s fields added.
fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

/// Read a releases file: a JSON array of version strings, or one version per line with blank
/// lines and `#` comments ignored.
pub(super) fn read_releases(path: &Path) -> anyhow::Result<Vec<Version>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the releases file {}", path.display()))?;
    parse_releases(&text).with_context(|| format!("releases file {}", path.display()))
}

fn parse_releases(text: &str) -> anyhow::Result<Vec<Version>> {
    if text.trim_start().starts_with('[') {
        let entries: Vec<String> = serde_json::from_str(text).map_err(|e| {
            anyhow!("not a JSON array of version strings ({e}); write [\"1.2.3\", \"1.3.0\"]")
        })?;
        return entries
            .iter()
            .enumerate()
            .map(|(i, s)| Version::parse(s).with_context(|| format!("entry {}", i + 1)))
            .collect();
    }
    let mut releases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        releases.push(Version::parse(line).with_context(|| format!("line {}", i + 1))?);
    }
    Ok(releases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_files() {
        let got = parse_releases("# known\n1.2.3\n\n v1.3 # latest\n").unwrap();
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["1.2.3", "1.3.0"]
        );
        let got = parse_releases(r#"["1.2.3", "v2.0"]"#).unwrap();
        assert_eq!(got.len(), 2);
        let err = format!("{:#}", parse_releases("1.2.3\nlatest\n").unwrap_err());
        assert!(
            err.starts_with("line 2: invalid version \"latest\""),
            "{err}"
        );
        let err = format!("{:#}", parse_releases(r#"["1.2.3", 7]"#).unwrap_err());
        assert!(err.contains("not a JSON array of version strings"), "{err}");
        let err = format!("{:#}", parse_releases(r#"["1.2.3", "x"]"#).unwrap_err());
        assert!(err.starts_with("entry 2: invalid version \"x\""), "{err}");
    }

    fn parsed(from: &str, to: &str, rules: &str) -> Parsed {
        Parsed {
            from: Version::parse(from).unwrap(),
            to: Version::parse(to).unwrap(),
            rules: Rules::preset(rules).unwrap(),
            rules_name: rules.into(),
        }
    }

    fn versions(list: &[&str]) -> Vec<Version> {
        list.iter().map(|v| Version::parse(v).unwrap()).collect()
    }

    #[test]
    fn max_backup_ages() {
        let check = |text: &str, secs: u64| {
            assert_eq!(
                parse_age(text).unwrap(),
                std::time::Duration::from_secs(secs),
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
        refused("99999999999999999999h", "too large");
        refused("999999999999999w", "too large");
    }

    #[test]
    fn ages_in_words() {
        let w = |s: u64| age_words(std::time::Duration::from_secs(s));
        assert_eq!(w(17), "17s");
        assert_eq!(w(42 * 60 + 5), "42m");
        assert_eq!(w(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(w(3 * 86_400 + 2 * 3600 + 59), "3d 2h");
    }

    #[test]
    fn the_exit_code_is_1_only_when_a_check_fails() {
        use CheckStatus::*;
        let checks = |s: &[CheckStatus]| -> Vec<CheckResult> {
            s.iter()
                .enumerate()
                .map(|(i, st)| row(&format!("c{i}"), *st, ""))
                .collect()
        };
        assert_eq!(preflight_code(&[]), 0);
        assert_eq!(preflight_code(&checks(&[Pass, Pass])), 0);
        assert_eq!(preflight_code(&checks(&[Warn, Pass, Warn])), 0);
        assert_eq!(preflight_code(&checks(&[Pass, Fail])), 1);
        assert_eq!(preflight_code(&checks(&[Fail, Warn, Fail])), 1);
    }

    #[test]
    fn the_version_rule_is_upgrade_checks() {
        let c = version_rule_check(&parsed("0.1.0", "0.2.0", "dtr"));
        assert_eq!(
            (c.name.as_str(), c.status),
            ("version_rule", CheckStatus::Pass)
        );
        assert_eq!(c.detail, "allowed: 0.1.0 → 0.2.0 (dtr rules)");
        let c = version_rule_check(&parsed("0.1.0", "0.3.0", "dtr"));
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(
            c.detail.starts_with("refused: ") && c.detail.contains("0.2"),
            "{}",
            c.detail
        );
        let c = version_rule_check(&parsed("1.4.0", "2.0.0", "k8s"));
        assert_eq!(c.status, CheckStatus::Fail, "{}", c.detail);
        let c = version_rule_check(&parsed("0.1.0", "0.1.0", "dtr"));
        assert_eq!(c.status, CheckStatus::Warn);
        assert_eq!(c.detail, "nothing to do: 0.1.0 is already 0.1.0");
    }

    #[test]
    fn the_plan_is_upgrade_plans_or_the_direct_hop() {
        let p = parsed("0.1.0", "0.3.0", "dtr");
        let releases = versions(&["0.1.0", "0.2.0", "0.2.4", "0.3.0"]);
        let (c, hops) = plan_check(&p, Some(&releases));
        assert_eq!(
            (c.name.as_str(), c.status),
            ("plan", CheckStatus::Pass),
            "{}",
            c.detail
        );
        assert_eq!(hops, plan_hops(&p, &releases, false).unwrap().hops);
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

        let (c, hops) = plan_check(&p, Some(&versions(&["0.1.0", "0.3.0"])));
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.starts_with("no plan: "), "{}", c.detail);
        assert!(hops.is_empty());

        let (c, hops) = plan_check(&p, None);
        assert_eq!(c.status, CheckStatus::Fail);
        assert!(c.detail.contains("--releases FILE"), "{}", c.detail);
        assert!(hops.is_empty());

        let (c, hops) = plan_check(&parsed("0.1.0", "0.2.0", "dtr"), None);
        assert_eq!(c.status, CheckStatus::Warn);
        assert!(
            c.detail
                .starts_with("no releases file: only the direct hop was checked"),
            "{}",
            c.detail
        );
        assert_eq!(hops.len(), 1);
    }

    #[test]
    fn the_table_and_json_of_a_preflight() {
        let p = parsed("0.1.0", "0.2.0", "dtr");
        let plan = vec![Hop {
            from: p.from.clone(),
            to: p.to.clone(),
        }];
        let checks = vec![
            row("version_rule", CheckStatus::Pass, "allowed"),
            row("backup", CheckStatus::Warn, "old-ish"),
            row("disk", CheckStatus::Pass, "plenty"),
        ];
        let out = preflight_outcome(&p, &checks, &plan);
        assert_eq!(out.code, 0);
        assert_eq!(
            out.lines,
            [
                "CHECK         STATUS  DETAIL",
                "version_rule  pass    allowed",
                "backup        warn    old-ish",
                "disk          pass    plenty",
                "preflight passed: 0.1.0 → 0.2.0 (dtr rules), 1 warning(s): backup",
            ]
        );
        assert_eq!(
            out.json,
            json!({
                "result": "pass",
                "from": "0.1.0",
                "to": "0.2.0",
                "rules": "dtr",
                "checks": [
                    {"name": "version_rule", "status": "pass", "detail": "allowed"},
                    {"name": "backup", "status": "warn", "detail": "old-ish"},
                    {"name": "disk", "status": "pass", "detail": "plenty"},
                ],
                "plan": [{"from": "0.1.0", "to": "0.2.0"}],
            })
        );

        let checks = vec![
            row("version_rule", CheckStatus::Fail, "refused: no"),
            row("backup", CheckStatus::Fail, "none"),
            row("disk", CheckStatus::Pass, "plenty"),
        ];
        let out = preflight_outcome(&p, &checks, &[]);
        assert_eq!(out.code, 1);
        assert_eq!(out.lines[1], "version_rule  fail    refused: no");
        assert_eq!(
            out.lines.last().unwrap(),
            "preflight failed: 2 check(s) failed: version_rule, backup"
        );
        assert_eq!(out.json["result"], "fail");
        assert_eq!(out.json["plan"], json!([]));
        assert_eq!(out.json["checks"][1]["status"], "fail");

        let out = preflight_outcome(&p, &checks[2..], &plan);
        assert_eq!(
            out.lines.last().unwrap(),
            "preflight passed: 0.1.0 → 0.2.0 (dtr rules)"
        );
    }
}
