//! `dockmesh`: the reference binary (server, agent and CLI).
//!
//! **Architecture Invariant:** this is the only crate that assembles adapters. Adapter crates
//! depend on `dockmesh-core`, never on each other.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}
