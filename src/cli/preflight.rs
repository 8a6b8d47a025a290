//! `dockmesh upgrade preflight`: the facts before the server's own upgrade, gathered read only
//! (the database through `SqlStore::status` / `open_for_reading`, bundles through the restore's
//! dry run, the new binary through its own `--version`, `version --json` and `db status --json`,
//! free space through `df`). The verdicts that need no I/O (version rule, plan, the table, the
//! exit code) are in `upgrade.rs`.
//!
//! Input that cannot be used (a bad version, rules name, age, database URL, an unreadable
//! releases file, a target binary that is not there or cannot be run) is an error: exit 2,
//! nothing checked or changed. Nothing is written unless `--backup` is given, which takes one
//! bundle into the backups directory first, as `dockmesh backup` does, and once it verifies
//! records it in the audit log (`server.backup`).

use super::upgrade::{
    Outcome, PreflightArgs, age_words, parse_age, parse_target, plan_check, preflight_outcome,
    read_releases, row, version_rule_check,
};
use anyhow::{Context, bail};
use dockmesh_core::ports::prelude::*;
use dockmesh_core::preflight::{CheckResult, CheckStatus};
use dockmesh_core::protocol::{self, PROTOCOL_VERSION};
use dockmesh_core::version::Version;
use dockmesh_sqlx::{DbTarget, RestoreOptions, SchemaReport, SchemaStatus, SqlStore};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// Run the checks: `Err` for input that cannot be used (exit 2).
pub(super) fn run(args: &PreflightArgs) -> anyhow::Result<Outcome> {
    let p = parse_target(&args.to, &args.rules)?;
    let max_age = parse_age(&args.max_backup_age)?;
    let releases = args.releases.as_deref().map(read_releases).transpose()?;
    let target = args.location.target()?;
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
    let binary = args.binary.as_deref().map(probe_binary).transpose()?;
    if args.backup {
        super::db::init_logging();
    }

    let mut checks = vec![version_rule_check(&p)];
    let (plan_row, hops) = plan_check(&p, releases.as_deref());
    checks.push(plan_row);
    let rt = super::db::runtime()?;
    let (backup_row, bundle_bytes) = rt.block_on(backup_check(
        &target,
        &data_dir,
        &backups,
        max_age,
        args.backup,
    ));
    checks.push(backup_row);
    checks.push(rt.block_on(disk_check(&target, &data_dir, &backups, bundle_bytes)));
    checks.push(match &binary {
        Some(b) => schema_check(b, &p.to, &args.location),
        None => row(
            "schema",
            CheckStatus::Warn,
            "the target binary was not given: its schema migrations were not checked \
             (pass --binary NEW_BINARY)",
        ),
    });
    checks.push(rt.block_on(agents_check(&target, binary.as_ref())));
    Ok(preflight_outcome(&p, &checks, &hops))
}

/// What the new binary says of itself.
struct TargetBinary {
    path: PathBuf,
    /// `--version`'s first line, or why it could not be had.
    version_line: Result<String, String>,
    /// `version --json`, or why it could not be had.
    info: Result<serde_json::Value, String>,
}

/// Run the new binary's `--version` and `version --json`. A binary that is not there or cannot
/// be started is bad input.
fn probe_binary(path: &Path) -> anyhow::Result<TargetBinary> {
    if !path.is_file() {
        bail!(
            "the target binary {} does not exist or is not a file",
            path.display()
        );
    }
    let path = path
        .canonicalize()
        .with_context(|| format!("the target binary {}", path.display()))?;
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .with_context(|| format!("the target binary {} cannot be run", path.display()))?;
    let version_line = if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned())
    } else {
        Err(format!("`--version` exited with {}", out.status))
    };
    let info = match Command::new(&path).args(["version", "--json"]).output() {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout)
            .map_err(|e| format!("`version --json` printed no JSON object ({e})")),
        Ok(o) => Err(format!(
            "`version --json` exited with {}: {}",
            o.status,
            last_line(&o.stderr)
        )),
        Err(e) => Err(format!("`version --json` could not be run: {e}")),
    };
    Ok(TargetBinary {
        path,
        version_line,
        info,
    })
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn backup_hint(backups: &Path) -> String {
    format!(
        "take one: `dockmesh backup --out {}/dockmesh-<date>.tar.zst` (same --data-dir or \
         --database-url), or pass --backup",
        backups.display()
    )
}

/// `backup`: the newest bundle in `backups` verifies (the restore's dry run: every size and
/// SHA-256, the rows, the audit chain) and is younger than `max_age`. With `take`, one is
/// written there first. Also returns the bundle's size, for the disk estimate.
async fn backup_check(
    target: &DbTarget,
    data_dir: &Path,
    backups: &Path,
    max_age: Duration,
    take: bool,
) -> (CheckResult, Option<u64>) {
    let name = "backup";
    let fail = |detail: String| (row(name, CheckStatus::Fail, detail), None);
    let taken = if take {
        let out = backups.join(format!(
            "dockmesh-preflight-{}.tar.zst",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        ));
        match dockmesh_sqlx::backup(target, Some(data_dir), &out).await {
            Ok(report) => Some(report),
            Err(e) => {
                let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
                return fail(format!(
                    "--backup: writing {} failed: {e}{hint}",
                    out.display()
                ));
            }
        }
    } else {
        None
    };
    // With --backup, the bundle just taken is the one checked (and then recorded).
    let newest = match &taken {
        Some(t) => Ok(Some(t.path.clone())),
        None => newest_bundle(backups),
    };
    let newest = match newest {
        Ok(Some(b)) => b,
        Ok(None) => {
            return fail(format!(
                "no backup bundle (*.tar.zst) in {}; {}",
                backups.display(),
                backup_hint(backups)
            ));
        }
        Err(e) => {
            return fail(format!(
                "the backups directory {} cannot be read ({e}); {}",
                backups.display(),
                backup_hint(backups)
            ));
        }
    };
    let options = RestoreOptions {
        dry_run: true,
        force: true,
    };
    let report = match dockmesh_sqlx::restore(&newest, target, None, options).await {
        Ok(r) => r,
        Err(e) => {
            return fail(format!(
                "the newest bundle {} does not verify: {e}; {}",
                newest.display(),
                backup_hint(backups)
            ));
        }
    };
    // A bundle taken here, written and verified, goes into the audit log (`server.backup`).
    let mut recorded = String::new();
    let mut status = CheckStatus::Pass;
    if let Some(taken) = &taken {
        match super::backup::record(target, data_dir, taken, super::backup::BY_PREFLIGHT).await {
            Ok(r @ super::backup::Recorded::Entry(_)) => recorded = format!("; {}", r.line()),
            Ok(r @ super::backup::Recorded::NotRecorded(_)) => {
                status = CheckStatus::Warn;
                recorded = format!("; {}", r.line());
            }
            Err(e) => {
                return fail(format!(
                    "--backup: {e:#}; {}",
                    super::backup::not_recorded_hint(&taken.path)
                ));
            }
        }
    }
    let size = std::fs::metadata(&newest).map(|m| m.len()).ok();
    let m = &report.manifest;
    let age = Duration::from_secs(
        jiff::Timestamp::now()
            .duration_since(m.created_at)
            .as_secs()
            .max(0) as u64,
    );
    if age > max_age {
        return (
            row(
                name,
                CheckStatus::Fail,
                format!(
                    "the newest bundle {} is {} old, more than --max-backup-age {}; {}",
                    newest.display(),
                    age_words(age),
                    age_words(max_age),
                    backup_hint(backups)
                ),
            ),
            size,
        );
    }
    (
        row(
            name,
            status,
            format!(
                "{} verified ({} files, audit chain of {} entries; dockmesh {}, schema version {}), {} old{recorded}",
                newest.display(),
                m.files.len() + 1,
                report.audit_entries,
                m.dockmesh_version,
                m.schema_version,
                age_words(age)
            ),
        ),
        size,
    )
}

/// The most recently modified `*.tar.zst` file in `dir` (`None` when there is none or the
/// directory does not exist).
fn newest_bundle(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let is_bundle = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".tar.zst"));
        let meta = entry.metadata()?;
        if !is_bundle || !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, path));
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// `disk`: the free space where the backups go against the size of the database plus the
/// stack files (the next bundle and the upgrade's own backup need about that).
async fn disk_check(
    target: &DbTarget,
    data_dir: &Path,
    backups: &Path,
    bundle_bytes: Option<u64>,
) -> CheckResult {
    let name = "disk";
    let bytes = super::client::bytes;
    let (db_bytes, db_source) = match SqlStore::open_for_reading(target).await {
        Ok(store) => {
            let n = store.database_bytes().await;
            store.close().await;
            match n {
                Ok(n) => (n, "database"),
                Err(_) => (bundle_bytes.unwrap_or(0), "last bundle"),
            }
        }
        Err(_) => match target {
            DbTarget::Sqlite { path } => (
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                "database file",
            ),
            DbTarget::Postgres { .. } => (bundle_bytes.unwrap_or(0), "last bundle"),
        },
    };
    let stacks = dir_bytes(&data_dir.join("stacks"));
    let need = db_bytes + stacks;
    let at = existing_ancestor(backups);
    let avail = match free_bytes(&at) {
        Ok(n) => n,
        Err(e) => {
            return row(
                name,
                CheckStatus::Warn,
                format!(
                    "the free space in {} could not be read ({e}); needs {}",
                    at.display(),
                    bytes(need)
                ),
            );
        }
    };
    let detail = format!(
        "{} free in {}; needs {} ({db_source} {} + stacks {})",
        bytes(avail),
        at.display(),
        bytes(need),
        bytes(db_bytes),
        bytes(stacks)
    );
    if avail < need {
        row(name, CheckStatus::Fail, format!("{detail}: not enough"))
    } else {
        row(name, CheckStatus::Pass, detail)
    }
}

/// The path itself when it exists, else its nearest existing parent (`.` at the end).
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Bytes of the regular files under `dir` (symbolic links not followed).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// `df --output=avail -B1 DIR`.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .map_err(|e| format!("df could not be run: {e}"))?;
    if !out.status.success() {
        return Err(format!("df: {}", last_line(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("df printed {:?}", text.trim()))
}

/// `schema`: the new binary says it is `--to`, and its `db status` over the same database tells
/// the migrations it brings (or its refusal).
fn schema_check(
    binary: &TargetBinary,
    to: &Version,
    location: &super::db::Location,
) -> CheckResult {
    let name = "schema";
    let mut cmd = Command::new(&binary.path);
    cmd.args(["db", "status", "--json", "--data-dir"])
        .arg(&location.data_dir);
    match &location.database_url {
        Some(url) => {
            cmd.args(["--database-url", url]);
        }
        None => {
            cmd.env_remove("DOCKMESH_DATABASE_URL");
        }
    }
    let status = match cmd.output() {
        Err(e) => Err(format!("`db status` could not be run: {e}")),
        Ok(o) => match serde_json::from_slice::<SchemaReport>(&o.stdout) {
            Ok(r) => Ok(r),
            Err(_) => Err(format!(
                "`db status --json` exited with {}: {}",
                o.status,
                last_line(&o.stderr)
            )),
        },
    };
    let version_ok = match &binary.version_line {
        Ok(line) => {
            let said = line.strip_prefix("dockmesh ").map(Version::parse);
            match said {
                Some(Ok(v)) if &v == to => Ok(()),
                _ => Err(format!(
                    "{} --version says `{line}`, not `dockmesh {to}`",
                    binary.path.display()
                )),
            }
        }
        Err(e) => Err(format!("{}: {e}", binary.path.display())),
    };
    let (status, detail) = match status {
        Err(e) => (CheckStatus::Fail, e),
        Ok(r) => schema_verdict(&r),
    };
    match version_ok {
        Ok(()) => row(name, status, detail),
        Err(e) => row(name, CheckStatus::Fail, format!("{e}; {detail}")),
    }
}

/// What a target binary's `db status` report means for the upgrade.
fn schema_verdict(r: &SchemaReport) -> (CheckStatus, String) {
    match &r.status {
        SchemaStatus::UpToDate => (
            CheckStatus::Pass,
            format!(
                "no pending migrations: the database is at schema version {}, as the target",
                r.database_version
            ),
        ),
        SchemaStatus::Pending { versions } => {
            let list = |v: &[i64]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut detail = format!(
                "the target brings {} migration(s): {} (schema version {} -> {})",
                versions.len(),
                list(versions),
                r.database_version,
                r.binary_version
            );
            let irreversible: Vec<String> = r
                .irreversible_between
                .iter()
                .filter(|m| versions.contains(&m.version))
                .map(|m| format!("{} {} ({})", m.version, m.description, m.note))
                .collect();
            if irreversible.is_empty() {
                detail.push_str("; all reversible");
                (CheckStatus::Pass, detail)
            } else {
                detail.push_str(&format!(
                    "; irreversible: {} (going back needs the backup restored)",
                    irreversible.join("; ")
                ));
                (CheckStatus::Warn, detail)
            }
        }
        other => (
            CheckStatus::Fail,
            format!(
                "the target refuses the database: {}",
                r.refusal.clone().unwrap_or_else(|| format!("{other:?}"))
            ),
        ),
    }
}

/// `agents`: every stored agent whose protocol the target would not accept (core's rule:
/// N and N−1) is listed; they will need a manual upgrade.
async fn agents_check(target: &DbTarget, binary: Option<&TargetBinary>) -> CheckResult {
    let name = "agents";
    let (proto, whose) = match binary.map(|b| &b.info) {
        None => (PROTOCOL_VERSION, "this binary's protocol".to_owned()),
        Some(Ok(info)) => match info.get("protocol").and_then(|p| p.as_u64()) {
            Some(p) => (
                u32::try_from(p).unwrap_or(u32::MAX),
                "the target's protocol".to_owned(),
            ),
            None => (
                PROTOCOL_VERSION,
                "this binary's protocol (the target's `version --json` names none)".to_owned(),
            ),
        },
        Some(Err(e)) => (
            PROTOCOL_VERSION,
            format!("this binary's protocol (the target's: {e})"),
        ),
    };
    let agents = async {
        let store = SqlStore::open_for_reading(target).await?;
        let agents = store.list_agents().await;
        store.close().await;
        Ok::<_, anyhow::Error>(agents?)
    }
    .await;
    let agents = match agents {
        Ok(a) => a,
        Err(e) => {
            return row(
                name,
                CheckStatus::Warn,
                format!("the agents could not be read: {e:#}"),
            );
        }
    };
    let out: Vec<String> = agents
        .iter()
        .filter(|a| !protocol::check(proto, a.protocol_version).accepted())
        .map(|a| {
            format!(
                "{} ({}, version {}, protocol {})",
                a.name,
                a.id.as_str(),
                a.version,
                a.protocol_version
            )
        })
        .collect();
    if out.is_empty() {
        row(
            name,
            CheckStatus::Pass,
            format!(
                "{} agent(s), all accepted by protocol {proto} ({whose})",
                agents.len()
            ),
        )
    } else {
        row(
            name,
            CheckStatus::Warn,
            format!(
                "{} of {} agent(s) would fall outside protocol {proto}'s window ({whose}): {}; \
                 they will need a manual upgrade",
                out.len(),
                agents.len(),
                out.join(", ")
            ),
        )
    }
}
