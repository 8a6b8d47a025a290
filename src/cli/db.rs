//! `dockmesh db status|migrate`: where the database stands against this binary, and applying
//! pending schema migrations.
//!
//! The database is `--database-url URL` (`sqlite://PATH` or `postgres://…`, also from
//! `DOCKMESH_DATABASE_URL`), or else the SQLite file `dockmesh.db` in the data directory
//! (`--data-dir DIR`, else `$DOCKMESH_DATA_DIR`, else `./dockmesh-data`).
//!
//! - `status` prints `backend:`, `database schema version:`, `binary schema version:`,
//!   `status: up to date | pending: A -> B (…) | refused: …`, and the irreversible migrations
//!   between the two versions. It changes nothing (a missing SQLite file is not created).
//!   Exit 0 when the database is usable (up to date or pending), 1 when refused, 2 on error.
//!   `--json` prints the report as one JSON object.
//! - `migrate` runs the schema guard and applies pending migrations (logging
//!   `Database migration from A -> B complete`), then prints the status. Exit 0 on success,
//!   1 when refused, 2 on error.

use anyhow::Context;
use clap::{Args, Subcommand};
use dockmesh_sqlx::{DbTarget, SqlStore, SqlStoreError};
use std::path::PathBuf;
use std::process::ExitCode;

/// Where the data directory and the database are.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// The server's data directory (holds `dockmesh.db`, `stacks/`, `ca/`).
    #[arg(
        long,
        value_name = "DIR",
        env = "DOCKMESH_DATA_DIR",
        default_value = "dockmesh-data"
    )]
    pub data_dir: PathBuf,
    /// The database, when it is not `<data-dir>/dockmesh.db`: `sqlite://PATH` or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(long, value_name = "URL", env = "DOCKMESH_DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Make `dir` private: created 0700, or tightened to 0700 when it is ours; one owned by
/// another user is refused. `what` names it in the error ("the data directory").
pub fn private_dir(dir: &std::path::Path, what: &str) -> anyhow::Result<()> {
    dockmesh_http::channel::private::private_dir(dir).map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|s| format!(": {s}"))
            .unwrap_or_default();
        anyhow::anyhow!("{what} cannot be made private: {e}{cause}; {}", e.hint())
    })
}

impl Location {
    /// The database these options name.
    pub fn target(&self) -> anyhow::Result<DbTarget> {
        match &self.database_url {
            Some(url) => Ok(DbTarget::parse(url)?),
            None => Ok(DbTarget::sqlite_in(&self.data_dir)),
        }
    }
}

/// `dockmesh db …`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print the database's schema version and the binary's, and whether it is up to date,
    /// pending or refused. Changes nothing.
    Status {
        #[command(flatten)]
        location: Location,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Apply pending schema migrations (the schema guard runs first).
    Migrate {
        #[command(flatten)]
        location: Location,
    },
}

/// A runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Log to stderr (`RUST_LOG` overrides the default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .try_init();
}

/// Print an error and return its exit code: 1 for a refusal, 2 otherwise.
pub fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    if let Some(hint) = e.downcast_ref::<SqlStoreError>().and_then(|e| e.hint()) {
        eprintln!("hint: {hint}");
    }
    match e.downcast_ref::<SqlStoreError>() {
        Some(SqlStoreError::Locked { .. })
        | Some(SqlStoreError::Refused(_))
        | Some(SqlStoreError::RestoreRefused(_))
        | Some(SqlStoreError::BackupRefused(_))
        | Some(SqlStoreError::Bundle(_)) => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

/// Run `dockmesh db …`.
pub fn run(cmd: DbCommand) -> ExitCode {
    init_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match cmd {
        DbCommand::Status { location, json } => match rt.block_on(status(&location)) {
            Ok(report) => {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).expect("a report serializes")
                    );
                } else {
                    for l in report.lines() {
                        println!("{l}");
                    }
                    if let Some(r) = &report.refusal {
                        println!("refused because: {r}");
                    }
                }
                if report.status.is_refused() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => fail(e),
        },
        DbCommand::Migrate { location } => match rt.block_on(migrate(&location)) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}

async fn status(location: &Location) -> anyhow::Result<dockmesh_sqlx::SchemaReport> {
    let target = location.target()?;
    Ok(SqlStore::status(&target).await?)
}

async fn migrate(location: &Location) -> anyhow::Result<Vec<String>> {
    let target = location.target()?;
    let (store, opened) = SqlStore::open_with(
        &target,
        &dockmesh_sqlx::OpenOptions::for_target(&target, Some(&location.data_dir)),
    )
    .await?;
    let report = store.schema_report().await?;
    store.close().await;
    let mut lines = vec![if opened.applied.is_empty() {
        format!(
            "nothing to apply: {} is at schema version {}",
            target.display(),
            opened.to
        )
    } else {
        format!(
            "applied migrations {} to {}: schema version {} -> {}",
            opened
                .applied
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            target.display(),
            opened.from,
            opened.to
        )
    }];
    lines.extend(report.lines());
    Ok(lines)
}
