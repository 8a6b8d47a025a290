//! Command-line interface: one module per command group.

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
}

/// Run a parsed command line; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version => {
            println!("dockmesh {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Upgrade(cmd) => upgrade::run(cmd),
    }
}
