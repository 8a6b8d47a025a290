//! Command-line interface: one module per command group.

pub mod backup;
pub mod check;
pub mod db;
pub mod upgrade;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Move and upgrade Docker Compose workloads across a fleet of hosts without losing data.
#[derive(Debug, Parser)]
#[command(name = "dockmesh", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print `dockmesh <version>`.
    Version,
    /// Version rules: check an upgrade, plan a multi-hop upgrade.
    #[command(subcommand)]
    Upgrade(upgrade::UpgradeCommand),
    /// The database: schema status, apply pending migrations.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Write a verified backup bundle of the database, stacks and CA material.
    Backup(backup::BackupArgs),
    /// Restore a backup bundle (verified before anything is changed).
    Restore(backup::RestoreArgs),
    /// Stacks: check a compose file offline.
    #[command(subcommand)]
    Stack(check::StackCommand),
    /// Run the server (not built yet: this says so and exits).
    Server,
    /// Run the agent on a host (not built yet: this says so and exits).
    Agent,
}

/// Run a parsed command line; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("dockmesh {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Upgrade(cmd) => upgrade::run(cmd),
        Command::Db(cmd) => db::run(cmd),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Stack(cmd) => check::run(cmd),
        Command::Server | Command::Agent => {
            eprintln!(
                "error: the dockmesh server and agent are not built yet; this version offers \
                 `upgrade check|plan`, `db status|migrate`, `backup` and `restore`, and the \
                 dockmesh-core library (migrations between hosts through its driver)"
            );
            ExitCode::from(2)
        }
    }
}
