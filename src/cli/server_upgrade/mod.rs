//! `dockmesh upgrade …`: the version rules from the command line (`check`, `plan`, in
//! `check.rs`); `preflight` (`preflight/`) checks before the server's own upgrade; `apply`
//! (`apply.rs`, each hop in `hop.rs`) performs it, hop by hop, resumable; `verify` (`../verify.rs`) checks a server
//! after it. The decisions are core's `server_upgrade`; these
//! modules parse arguments, run binaries, take backups, move files and print.
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

mod apply;
mod apply_files;
mod binary;
mod check;
mod hop;
mod preflight;

use anyhow::Context;
use clap::Subcommand;
use dockmesh_core::server_upgrade::{Target, parse_releases};
use dockmesh_core::version::Version;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// `dockmesh upgrade …`
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {
    /// Check one upgrade: prints `allowed`, `nothing to do`, or `refused: REASON` (exit 1).
    Check(check::CheckArgs),
    /// Plan a chain of allowed upgrades through known releases, one hop per line: the
    /// recommended one (the latest release of each major before crossing to the next), or the
    /// shortest with --shortest.
    Plan(check::PlanArgs),
    /// The checks before the server's own upgrade: the version rule and plan, a recent
    /// verified backup, free disk, the target binary's schema migrations, agents that would
    /// fall outside the target's protocol window. Exit 1 when a check fails. Changes nothing
    /// (unless --backup, which takes a backup first).
    Preflight(preflight::PreflightArgs),
    /// The server's own upgrade along the recommended plan through a directory of signed
    /// binaries, hop by hop: backup, verify and swap the binary, migrate, check. Resumable
    /// (progress in `<data-dir>/upgrade-run.json`); a failed hop is undone (exit 1).
    Apply(apply::ApplyArgs),
    /// After a server upgrade: every host online, agents on the server's version (or pending a
    /// manual upgrade), stacks healthy, audit chain intact, schema up to date. Exit 1 when
    /// anything is off.
    Verify(super::verify::VerifyArgs),
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
        UpgradeCommand::Check(args) => (args.common.json, check::check(&args)),
        UpgradeCommand::Plan(args) => (args.common.json, check::plan(&args)),
        UpgradeCommand::Preflight(args) => (args.json, preflight::run(&args)),
        UpgradeCommand::Apply(args) => return apply::run(args),
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

/// The upgrade of this binary to `--to` under `--rules`.
fn target(to: &str, rules: &str) -> anyhow::Result<Target> {
    Ok(Target::from_running(super::VERSION, to, rules)?)
}

/// Read a releases file (core's `parse_releases`).
fn read_releases(path: &Path) -> anyhow::Result<Vec<Version>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the releases file {}", path.display()))?;
    parse_releases(&text).with_context(|| format!("releases file {}", path.display()))
}
