//! `dockmesh upgrade check FROM TO` and `dockmesh upgrade plan FROM TO --releases FILE`: the
//! version rules and the plan through known releases, printed.

use super::{Outcome, read_releases};
use anyhow::Context;
use clap::Args;
use dockmesh_core::server_upgrade::Target;
use dockmesh_core::version::{self, Check, PlanError, Rules, Version};
use serde_json::{Value, json};
use std::path::PathBuf;

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
    pub(super) json: bool,
}

/// `dockmesh upgrade check FROM TO`
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// Known releases, for advice (one version per line, `#` comments, or a JSON array).
    #[arg(long, value_name = "FILE")]
    releases: Option<PathBuf>,
}

/// `dockmesh upgrade plan FROM TO --releases FILE`
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub(super) common: CommonArgs,
    /// Known releases: one version per line (blank lines and `#` comments ignored), or a JSON
    /// array of version strings.
    #[arg(long, value_name = "FILE")]
    releases: PathBuf,
    /// The minimal chain instead of the recommended one.
    #[arg(long)]
    shortest: bool,
}

fn parse_common(args: &CommonArgs) -> anyhow::Result<Target> {
    let from = Version::parse(&args.from).context("FROM")?;
    let to = Version::parse(&args.to).context("TO")?;
    let rules = Rules::preset(&args.rules)?;
    Ok(Target {
        from,
        to,
        rules,
        rules_name: args.rules.trim().to_ascii_lowercase(),
    })
}

/// `from`, `to` and `rules`, the fields every object starts with.
fn base(t: &Target) -> Value {
    json!({
        "from": t.from,
        "to": t.to,
        "rules": t.rules_name,
    })
}

pub(super) fn check(args: &CheckArgs) -> anyhow::Result<Outcome> {
    let t = parse_common(&args.common)?;
    let releases = match &args.releases {
        Some(path) => read_releases(path)?,
        None => Vec::new(),
    };
    let base = base(&t);
    Ok(match t.rules.check(&t.from, &t.to) {
        Check::Allowed => {
            let advice = version::advice(&t.from, &t.to, &releases);
            let mut lines = vec![format!(
                "allowed: {} → {} ({} rules)",
                t.from, t.to, t.rules_name
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
            lines: vec![format!("nothing to do: {} is already {}", t.from, t.to)],
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

pub(super) fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
    let t = parse_common(&args.common)?;
    let releases = read_releases(&args.releases)?;
    let base = base(&t);
    Ok(match t.plan(&releases, args.shortest) {
        Ok(plan) if plan.is_empty() => Outcome {
            lines: vec![format!("nothing to do: {} is already {}", t.from, t.to)],
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
