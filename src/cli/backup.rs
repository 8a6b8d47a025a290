//! `dockmesh backup` and `dockmesh restore`: verified bundles of the database, `stacks/` and
//! the CA material (see `dockmesh_sqlx::backup` for the format).
//!
//! - `backup --out FILE` writes the bundle while the server may be running, verifies it (the
//!   restore's dry run), records it in the audit log (`server.backup`, see [`record`]) and
//!   prints what it holds. Exit 0; 1 when refused (no database to back up, or one this binary
//!   refuses); 2 on other errors, among them an audit entry that could not be appended (the
//!   bundle is then complete, verified and kept).
//! - `restore --from FILE [--dry-run] [--force]` verifies every checksum before touching
//!   anything, refuses a bundle newer than this binary and (without `--force`) a database that
//!   holds data, keeps what it replaces (`<file>.pre-restore-<time>`, a PostgreSQL schema
//!   `dockmesh_pre_restore_<time>`, `<dir>.pre-restore-<time>`), and prints what it did.
//!   `--dry-run` verifies and reports only. Exit 0, 1 when refused, 2 on error.
//!
//! Stop the server before restoring: the restore replaces the database underneath it.

use crate::cli::db::{Location, fail, init_logging, runtime};
use anyhow::Context;
use clap::Args;
use dockmesh_core::audit::{AuditEvent, SERVER_BACKUP};
use dockmesh_core::ports::prelude::*;
use dockmesh_sqlx::{
    BackupReport, DbTarget, Manifest, OpenOptions, RestoreOptions, RestoreReport, SchemaStatus,
    SqlStore, SqlStoreError,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `by` of the audit entry of a bundle `dockmesh backup` took on its own.
pub const BY_BACKUP: &str = "dockmesh backup";
/// `by` of the audit entry of a bundle `dockmesh upgrade apply` took before a hop.
pub const BY_UPGRADE_APPLY: &str = "dockmesh upgrade apply";
/// `by` of the audit entry of a bundle `dockmesh upgrade preflight --backup` took.
pub const BY_PREFLIGHT: &str = "dockmesh upgrade preflight --backup";
/// How `upgrade apply` tells the `backup` it runs (through the installed binary) who asks: an
/// environment variable, which a binary that does not know it ignores (a flag would be refused).
pub const BACKUP_BY_ENV: &str = "DOCKMESH_BACKUP_BY";

/// `dockmesh backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The bundle to write (`.tar.zst`).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    location: Location,
    /// Who takes the bundle, as its audit entry names it.
    #[arg(long, hide = true, env = BACKUP_BY_ENV, default_value = BY_BACKUP)]
    by: String,
}

/// `dockmesh restore`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The bundle to restore.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// Verify the bundle and report what would be done; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace a database that holds data (what is replaced is kept, not deleted).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    location: Location,
}

/// Run `dockmesh backup`.
pub fn run_backup(args: BackupArgs) -> ExitCode {
    init_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let taken = rt.block_on(async {
        let target = args.location.target()?;
        let report =
            dockmesh_sqlx::backup(&target, Some(&args.location.data_dir), &args.out).await?;
        Ok::<_, anyhow::Error>((target, report))
    });
    let (target, report) = match taken {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    for l in report.lines() {
        println!("{l}");
    }
    match rt.block_on(verify(&report.path, &target)) {
        Ok(v) => println!(
            "verified: {} files, every size and SHA-256 matches the manifest; audit chain of {} \
             entries intact",
            v.manifest.files.len() + 1,
            v.audit_entries
        ),
        Err(e) => {
            return fail(e.context(format!(
                "the bundle {} was written but does not verify, so it was not recorded in the \
                 audit log; do not rely on it",
                report.path.display()
            )));
        }
    }
    let recorded = rt.block_on(record(&target, &args.location.data_dir, &report, &args.by));
    match recorded {
        Ok(r) => {
            println!("{}", r.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = e.downcast_ref::<SqlStoreError>().and_then(|e| e.hint()) {
                eprintln!("hint: {hint}");
            }
            eprintln!("hint: {}", not_recorded_hint(&report.path));
            ExitCode::from(2)
        }
    }
}

/// What to do when a bundle was written and verified but its audit entry could not be appended.
pub fn not_recorded_hint(bundle: &Path) -> String {
    format!(
        "the bundle {} is complete and verified, and can be restored; only its audit entry is \
         missing, so the dashboard does not show it as the last backup. Once the cause is \
         fixed, take another backup to have one recorded",
        bundle.display()
    )
}

/// Verify a bundle just written: the restore's dry run (every size and SHA-256 against the
/// manifest, every row, the audit chain), which changes nothing.
pub async fn verify(bundle: &Path, target: &DbTarget) -> anyhow::Result<RestoreReport> {
    let options = RestoreOptions {
        dry_run: true,
        force: true,
    };
    Ok(dockmesh_sqlx::restore(bundle, target, None, options).await?)
}

/// What [`record`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The bundle's `server.backup` entry was appended with this sequence number.
    Entry(u64),
    /// It was not appended, for this reason (the database is not at this binary's schema).
    NotRecorded(String),
}

impl Recorded {
    /// One line for a command's output.
    pub fn line(&self) -> String {
        match self {
            Recorded::Entry(seq) => format!("recorded in the audit log: {SERVER_BACKUP} #{seq}"),
            Recorded::NotRecorded(why) => format!("not recorded in the audit log: {why}"),
        }
    }
}

/// Record a bundle that was written and verified in the audit log of the database it was
/// taken from: one `server.backup` event (details `path` (absolute), `bytes`,
/// `schema_version`, `backend`, `dockmesh_version`, `by`), appended through the store with the
/// audit anchor key of the data directory, so the chain and its anchor move as with every
/// other append. The store is opened only when the database is at this binary's schema (so
/// the open migrates nothing); otherwise nothing is written and [`Recorded::NotRecorded`]
/// says why. An error leaves the bundle as it is: complete, verified and usable.
pub async fn record(
    target: &DbTarget,
    data_dir: &Path,
    bundle: &BackupReport,
    by: &str,
) -> anyhow::Result<Recorded> {
    let what = || format!("recording the backup in the audit log ({SERVER_BACKUP}) failed");
    let status = SqlStore::status(target).await.with_context(what)?;
    if status.status != SchemaStatus::UpToDate {
        return Ok(Recorded::NotRecorded(match status.refusal() {
            Some(refusal) => format!("the database is refused by this binary: {refusal}"),
            None => format!(
                "the database is at schema version {} and this binary at {}; a backup is \
                 recorded only in a database of this binary's schema (`dockmesh db migrate` \
                 brings it there)",
                status.database_version, status.binary_version
            ),
        }));
    }
    let (store, _) = SqlStore::open_with(target, &OpenOptions::for_target(target, Some(data_dir)))
        .await
        .with_context(what)?;
    let appended = store.append_audit(&backup_event(bundle, by)).await;
    store.close().await;
    let entry = appended.map_err(anyhow::Error::new).with_context(what)?;
    Ok(Recorded::Entry(entry.seq))
}

/// The `server.backup` event of a bundle.
fn backup_event(bundle: &BackupReport, by: &str) -> AuditEvent {
    let path = std::fs::canonicalize(&bundle.path).unwrap_or_else(|_| bundle.path.clone());
    let m: &Manifest = &bundle.manifest;
    AuditEvent::new(jiff::Timestamp::now(), "system", SERVER_BACKUP, "database")
        .with("path", path.display().to_string())
        .with("bytes", bundle.bytes.to_string())
        .with("schema_version", m.schema_version.to_string())
        .with("backend", m.backend.to_string())
        .with("dockmesh_version", crate::cli::VERSION)
        .with("by", by)
}

/// Run `dockmesh restore`.
pub fn run_restore(args: RestoreArgs) -> ExitCode {
    init_logging();
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let target = args.location.target()?;
            let options = RestoreOptions {
                dry_run: args.dry_run,
                force: args.force,
            };
            Ok(
                dockmesh_sqlx::restore(&args.from, &target, Some(&args.location.data_dir), options)
                    .await?,
            )
        })
    });
    match result {
        Ok(report) => {
            for l in report.lines() {
                println!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
