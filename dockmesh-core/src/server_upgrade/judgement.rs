//! The judgement before and at the start of a server upgrade: the target, the version rule
//! and the plan as preflight rows, the verdict of a preflight, the plan of a new run, and the
//! small languages of the command line (`--max-backup-age`, a releases file).

use crate::preflight::{CheckResult, CheckStatus};
use crate::version::{
    Check, Hop, ParseVersionError, Plan, PlanError, Rules, UnknownPreset, Version,
};
use std::time::Duration;

/// An upgrade to judge: from, to, and the rules.
#[derive(Debug, Clone)]
pub struct Target {
    /// The version upgraded from.
    pub from: Version,
    /// The version to upgrade to.
    pub to: Version,
    /// The rules.
    pub rules: Rules,
    /// The rules' preset name, as given (trimmed, lower case).
    pub rules_name: String,
}

/// A target that cannot be judged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The running binary's own version does not parse.
    #[error("this binary's version {0:?}")]
    Running(String, #[source] ParseVersionError),
    /// `--to` does not parse.
    #[error("--to")]
    To(#[source] ParseVersionError),
    /// `--rules` names no preset.
    #[error("--rules")]
    Rules(#[source] UnknownPreset),
}

impl Target {
    /// The upgrade of the binary `running` to `to` under the preset `rules`.
    pub fn from_running(running: &str, to: &str, rules: &str) -> Result<Target, TargetError> {
        let from =
            Version::parse(running).map_err(|e| TargetError::Running(running.to_owned(), e))?;
        let to = Version::parse(to).map_err(TargetError::To)?;
        let rules_parsed = Rules::preset(rules).map_err(TargetError::Rules)?;
        Ok(Target {
            from,
            to,
            rules: rules_parsed,
            rules_name: rules.trim().to_ascii_lowercase(),
        })
    }

    /// The chain `upgrade plan` prints: the recommended one, or the shortest.
    pub fn plan(&self, releases: &[Version], shortest: bool) -> Result<Plan, PlanError> {
        if shortest {
            self.rules.plan(&self.from, &self.to, releases)
        } else {
            self.rules.recommended(&self.from, &self.to, releases)
        }
    }
}

/// Why a new run has no plan. Nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunPlanError {
    /// The target is older than the running binary.
    #[error(
        "{to} is older than this binary's {from}: `upgrade apply` only upgrades; to go back, \
         restore a backup taken before the upgrade with the older binary (`restore --force \
         --from BUNDLE`); nothing was changed"
    )]
    Downgrade {
        /// The running version.
        from: Version,
        /// The target.
        to: Version,
    },
    /// The releases offer no allowed path.
    #[error("{0}")]
    NoPlan(PlanError),
}

/// The plan of a new run through `releases` (the recommended chain; empty: nothing to do).
pub fn run_plan(target: &Target, releases: &[Version]) -> Result<Vec<Hop>, RunPlanError> {
    if target.to < target.from {
        return Err(RunPlanError::Downgrade {
            from: target.from.clone(),
            to: target.to.clone(),
        });
    }
    target
        .plan(releases, false)
        .map(|p| p.hops)
        .map_err(RunPlanError::NoPlan)
}

/// One row of a preflight.
pub fn row(name: &str, status: CheckStatus, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        status,
        detail: detail.into(),
    }
}

/// `version_rule`: the direct upgrade, as `upgrade check` judges it.
pub fn version_rule_check(t: &Target) -> CheckResult {
    let name = "version_rule";
    match t.rules.check(&t.from, &t.to) {
        Check::Allowed => row(
            name,
            CheckStatus::Pass,
            format!("allowed: {} → {} ({} rules)", t.from, t.to, t.rules_name),
        ),
        Check::NothingToDo => row(
            name,
            CheckStatus::Warn,
            format!("nothing to do: {} is already {}", t.from, t.to),
        ),
        Check::Refused(refusal) => row(name, CheckStatus::Fail, format!("refused: {refusal}")),
    }
}

/// `plan`: the recommended chain through the known releases (as `upgrade plan` computes it),
/// or, without releases, the direct hop only.
pub fn plan_check(t: &Target, releases: Option<&[Version]>) -> (CheckResult, Vec<Hop>) {
    let name = "plan";
    let Some(releases) = releases else {
        return match t.rules.check(&t.from, &t.to) {
            Check::Allowed => (
                row(
                    name,
                    CheckStatus::Warn,
                    format!(
                        "no releases file: only the direct hop was checked ({} → {})",
                        t.from, t.to
                    ),
                ),
                vec![Hop {
                    from: t.from.clone(),
                    to: t.to.clone(),
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
    match t.plan(releases, false) {
        Ok(plan) if plan.is_empty() => (
            row(
                name,
                CheckStatus::Pass,
                format!("nothing to do: {} is already {}", t.from, t.to),
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

/// A preflight passes unless a check failed.
pub fn passed(checks: &[CheckResult]) -> bool {
    !checks.iter().any(|c| c.status == CheckStatus::Fail)
}

/// The backup's age against `--max-backup-age`: `Fail` past it.
pub fn backup_age(age: Duration, max: Duration) -> CheckStatus {
    if age > max {
        CheckStatus::Fail
    } else {
        CheckStatus::Pass
    }
}

/// An age that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --max-backup-age {text:?}: {why}; write it like 24h, 90m, 2d or 1h30m")]
#[non_exhaustive]
pub struct AgeError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// `--max-backup-age`: one or more `<number><unit>` with the units `s`, `m`, `h`, `d`, `w`
/// (`90m`, `24h`, `1h30m`, `2d`).
pub fn parse_age(text: &str) -> Result<Duration, AgeError> {
    let bad = |why: String| AgeError {
        text: text.to_owned(),
        why,
    };
    let t = text.trim();
    if t.is_empty() {
        return Err(bad("it is empty".into()));
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
            _ => return Err(bad(format!("unknown unit {c:?}"))),
        };
        if digits.is_empty() {
            return Err(bad(format!("no number before {c:?}")));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| bad("the number is too large".into()))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| bad("it is too large".into()))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad(format!("no unit after {digits}")));
    }
    if total == 0 {
        return Err(bad("it is zero".into()));
    }
    Ok(Duration::from_secs(total))
}

/// A duration in words, coarse: `3d 2h`, `5h 12m`, `42m`, `17s`.
pub fn age_words(d: Duration) -> String {
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

/// A releases file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleasesError {
    /// It starts like JSON and is not an array of strings.
    #[error("not a JSON array of version strings ({0}); write [\"1.2.3\", \"1.3.0\"]")]
    NotAnArray(String),
    /// An entry of the array is not a version.
    #[error("entry {0}")]
    Entry(usize, #[source] ParseVersionError),
    /// A line is not a version.
    #[error("line {0}")]
    Line(usize, #[source] ParseVersionError),
}

/// A releases file: a JSON array of version strings, or one version per line with blank lines
/// and `#` comments ignored.
pub fn parse_releases(text: &str) -> Result<Vec<Version>, ReleasesError> {
    if text.trim_start().starts_with('[') {
        let entries: Vec<String> =
            serde_json::from_str(text).map_err(|e| ReleasesError::NotAnArray(e.to_string()))?;
        return entries
            .iter()
            .enumerate()
            .map(|(i, s)| Version::parse(s).map_err(|e| ReleasesError::Entry(i + 1, e)))
            .collect();
    }
    let mut releases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        releases.push(Version::parse(line).map_err(|e| ReleasesError::Line(i + 1, e))?);
    }
    Ok(releases)
}
