//! `dockmesh upgrade check|plan`.

use clap::Subcommand;
use std::process::ExitCode;

/// `dockmesh upgrade …`
#[derive(Debug, Subcommand)]
pub enum UpgradeCommand {}

/// Run an upgrade subcommand.
pub fn run(cmd: UpgradeCommand) -> ExitCode {
    match cmd {}
}
