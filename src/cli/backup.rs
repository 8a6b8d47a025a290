//! `dockmesh backup` and `dockmesh restore`: verified bundles of the database, `stacks/` and
//! the CA material (see `dockmesh_sqlx::backup` for the format).
//!
//! - `backup --out FILE` writes the bundle while the server may be running and prints what it
//!   holds. Exit 0; 1 when refused (no database to back up, or one this binary refuses); 2 on
//!   other errors.
//! - `restore --from FILE [--dry-run] [--force]` verifies every checksum before touching
//!   anything, refuses a bundle newer than this binary and (without `--force`) a database that
//!   holds data, keeps what it replaces (`<file>.pre-restore-<time>`, a PostgreSQL schema
//!   `dockmesh_pre_restore_<time>`, `<dir>.pre-restore-<time>`), and prints what it did.
//!   `--dry-run` verifies and reports only. Exit 0, 1 when refused, 2 on error.
//!
//! Stop the server before restoring: the restore replaces the database underneath it.

use crate::cli::db::{Location, fail, init_logging, runtime};
use clap::Args;
use dockmesh_sqlx::RestoreOptions;
use std::path::PathBuf;
use std::process::ExitCode;

/// `dockmesh backup`
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The bundle to write (`.tar.zst`).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    location: Location,
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
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let target = args.location.target()?;
            Ok(dockmesh_sqlx::backup(&target, Some(&args.location.data_dir), &args.out).await?)
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
