//! The `backup` and `disk` checks: the newest bundle verifies and is young enough (with
//! `--backup`, one taken first), and there is room for the next one.

use super::super::super::{backup as bundles, client};
use super::super::binary::last_line;
use anyhow::{Context, anyhow, bail};
use dockmesh_core::preflight::{CheckResult, CheckStatus};
use dockmesh_core::server_upgrade::{age_words, backup_age, row};
use dockmesh_sqlx::{DbTarget, RestoreOptions, SqlStore};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

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
pub(super) async fn backup_check(
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
        match bundles::record(target, data_dir, taken, bundles::BY_PREFLIGHT).await {
            Ok(r @ bundles::Recorded::Entry(_)) => recorded = format!("; {}", r.line()),
            Ok(r @ bundles::Recorded::NotRecorded(_)) => {
                status = CheckStatus::Warn;
                recorded = format!("; {}", r.line());
            }
            Err(e) => {
                return fail(format!(
                    "--backup: {e:#}; {}",
                    bundles::not_recorded_hint(&taken.path)
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
    if backup_age(age, max_age) == CheckStatus::Fail {
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
pub(super) async fn disk_check(
    target: &DbTarget,
    data_dir: &Path,
    backups: &Path,
    bundle_bytes: Option<u64>,
) -> CheckResult {
    let name = "disk";
    let bytes = client::bytes;
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
                    "the free space in {} could not be read ({e:#}); needs {}",
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
fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .context("df could not be run")?;
    if !out.status.success() {
        bail!("df: {}", last_line(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| anyhow!("df printed {:?}", text.trim()))
}
