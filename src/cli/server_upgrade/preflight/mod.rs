//! `dockmesh upgrade preflight`: the facts before the server's own upgrade, gathered read only
//! (the database through `SqlStore::status` / `open_for_reading`, bundles through the restore's
//! dry run (`backup.rs`), the new binary through its own `--version`, `version --json` and
//! `db status --json` (`target.rs`), free space through `df`), judged by core's
//! `server_upgrade` and printed as a table here.
//!
//! Input that cannot be used (a bad version, rules name, age, database URL, an unreadable
//! releases file, a target binary that is not there or cannot be run) is an error: exit 2,
//! nothing checked or changed. Nothing is written unless `--backup` is given, which takes one
//! bundle into the backups directory first, as `dockmesh backup` does, and once it verifies
//! records it in the audit log (`server.backup`).

mod backup;
mod target;

use super::super::db::{self, Location};
use super::{Outcome, read_releases};
use anyhow::bail;
use clap::Args;
use dockmesh_core::preflight::{CheckResult, CheckStatus};
use dockmesh_core::server_upgrade::{
    Target, parse_age, passed, plan_check, row, version_rule_check,
};
use dockmesh_core::version::Hop;
use serde_json::json;
use std::path::PathBuf;

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

/// Run the checks: `Err` for input that cannot be used (exit 2).
pub(super) fn run(args: &PreflightArgs) -> anyhow::Result<Outcome> {
    let t = super::target(&args.to, &args.rules)?;
    let max_age = parse_age(&args.max_backup_age)?;
    let releases = args.releases.as_deref().map(read_releases).transpose()?;
    let store = args.location.target()?;
    let data_dir = args.location.data_dir.clone();
    let backups = args
        .backups
        .clone()
        .unwrap_or_else(|| data_dir.join("backups"));
    if backups.exists() && !backups.is_dir() {
        bail!(
            "the backups directory {} is not a directory",
            backups.display()
        );
    }
    let binary = args.binary.as_deref().map(target::probe).transpose()?;
    if args.backup {
        db::init_logging();
    }

    let mut checks = vec![version_rule_check(&t)];
    let (plan_row, hops) = plan_check(&t, releases.as_deref());
    checks.push(plan_row);
    let rt = db::runtime()?;
    let (backup_row, bundle_bytes) = rt.block_on(backup::backup_check(
        &store,
        &data_dir,
        &backups,
        max_age,
        args.backup,
    ));
    checks.push(backup_row);
    checks.push(rt.block_on(backup::disk_check(
        &store,
        &data_dir,
        &backups,
        bundle_bytes,
    )));
    checks.push(match &binary {
        Some(b) => target::schema_check(b, &t.to, &args.location),
        None => row(
            "schema",
            CheckStatus::Warn,
            "the target binary was not given: its schema migrations were not checked \
             (pass --binary NEW_BINARY)",
        ),
    });
    checks.push(rt.block_on(target::agents_check(&store, binary.as_ref())));
    Ok(outcome(&t, &checks, &hops))
}

fn status_word(s: CheckStatus) -> &'static str {
    match s {
        CheckStatus::Pass => "pass",
        CheckStatus::Warn => "warn",
        CheckStatus::Fail => "fail",
    }
}

/// The table, the summary line and the JSON object of a preflight; exit 1 when a check failed.
fn outcome(t: &Target, checks: &[CheckResult], plan: &[Hop]) -> Outcome {
    let ok = passed(checks);
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
    let mut lines = super::super::client::table_lines(&["CHECK", "STATUS", "DETAIL"], &rows);
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
            t.from, t.to, t.rules_name
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
            "result": if ok { "pass" } else { "fail" },
            "from": t.from,
            "to": t.to,
            "rules": t.rules_name,
            "checks": checks,
            "plan": plan,
        }),
        code: if ok { 0 } else { 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::version::{Rules, Version};

    #[test]
    fn the_table_and_json_of_a_preflight() {
        let t = Target {
            from: Version::parse("0.1.0").unwrap(),
            to: Version::parse("0.2.0").unwrap(),
            rules: Rules::preset("dtr").unwrap(),
            rules_name: "dtr".into(),
        };
        let plan = vec![Hop {
            from: t.from.clone(),
            to: t.to.clone(),
        }];
        let checks = vec![
            row("version_rule", CheckStatus::Pass, "allowed"),
            row("backup", CheckStatus::Warn, "old-ish"),
            row("disk", CheckStatus::Pass, "plenty"),
        ];
        let out = outcome(&t, &checks, &plan);
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
        let out = outcome(&t, &checks, &[]);
        assert_eq!(out.code, 1);
        assert_eq!(out.lines[1], "version_rule  fail    refused: no");
        assert_eq!(
            out.lines.last().unwrap(),
            "preflight failed: 2 check(s) failed: version_rule, backup"
        );
        assert_eq!(out.json["result"], "fail");
        assert_eq!(out.json["plan"], json!([]));
        assert_eq!(out.json["checks"][1]["status"], "fail");

        let out = outcome(&t, &checks[2..], &plan);
        assert_eq!(out.code, 0);
        assert_eq!(
            out.lines.last().unwrap(),
            "preflight passed: 0.1.0 → 0.2.0 (dtr rules)"
        );
        let warned = [row("backup", CheckStatus::Warn, "old-ish")];
        assert_eq!(outcome(&t, &warned, &plan).code, 0, "a warning passes");
    }
}
