//! `dockmesh upgrade check|plan`: the version rules from the command line; `verify` (in
//! `verify.rs`) checks a server after its upgrade. `preflight` and `apply` are not built yet:
//! they say so and exit 2.
//!
//! Output, one fact per line (or one JSON object with `--json`):
//! - `check`: `allowed: FROM → TO (RULES rules)` then one `advice: …` line per advice (exit 0);
//!   `nothing to do: FROM is already TO` (exit 0); `refused: REASON` (exit 1).
//! - `plan`: one hop per line, `FROM → TO` (the recommended chain, or the shortest with
//!   `--shortest`), then one `advice: …` line per advice (exit 0);
//!   `nothing to do: …` (exit 0); `no plan: REASON` (exit 1).
//! - A bad version, rules name or releases file: `error: …` on stderr (exit 2; with `--json`, also
//!   `{"result": "error", "error": …}` on stdout).
//!
//! A releases file holds one version per line (blank lines and `#` comments ignored) or a JSON
//! array of version strings.

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use dockmesh_core::version::{self, Check, PlanError, Rules, Version};
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
    /// Not built yet: the checks before the server's own upgrade (exit 2).
    Preflight(NotBuiltArgs),
    /// Not built yet: the server's own upgrade, hop by hop (exit 2).
    Apply(NotBuiltArgs),
    /// After a server upgrade: every host online, agents on the server's version (or pending a
    /// manual upgrade), stacks healthy, audit chain intact, schema up to date. Exit 1 when
    /// anything is off.
    Verify(super::verify::VerifyArgs),
}

/// The arguments of a command that is not built yet, accepted so that it can say so.
#[derive(Debug, Args)]
pub struct NotBuiltArgs {
    /// Ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
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

/// What a subcommand decided: the lines to print (or the JSON object) and the exit code.
struct Outcome {
    lines: Vec<String>,
    json: Value,
    code: u8,
}

/// Run an upgrade subcommand.
pub fn run(cmd: UpgradeCommand) -> ExitCode {
    let (json, outcome) = match cmd {
        UpgradeCommand::Check(args) => (args.common.json, check(&args)),
        UpgradeCommand::Plan(args) => (args.common.json, plan(&args)),
        UpgradeCommand::Preflight(_) => return not_built("preflight"),
        UpgradeCommand::Apply(_) => return not_built("apply"),
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

fn not_built(what: &str) -> ExitCode {
    eprintln!(
        "error: `dockmesh upgrade {what}` is not built yet; nothing was checked or changed. \
         `dockmesh upgrade check` and `plan` work; upgrade the server by hand: \
         `dockmesh backup`, replace the binary, `dockmesh db migrate`, start it"
    );
    ExitCode::from(2)
}

struct Parsed {
    from: Version,
    to: Version,
    rules: Rules,
    rules_name: String,
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
    let planned = if args.shortest {
        p.rules.plan(&p.from, &p.to, &releases)
    } else {
        p.rules.recommended(&p.from, &p.to, &releases)
    };
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
fn read_releases(path: &Path) -> anyhow::Result<Vec<Version>> {
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
    use super::parse_releases;

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
}
