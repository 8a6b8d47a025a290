//! Command-line interface: one module per command group.

pub mod agent;
mod agent_daemon;
pub mod audit;
pub mod backup;
pub mod check;
pub mod client;
pub mod db;
pub mod drain;
pub mod engine;
pub mod host;
pub mod host_policy;
pub mod migration;
pub mod policy;
pub mod release;
pub mod server;
pub mod server_upgrade;
pub mod stack;
pub mod tls;
pub mod token;
pub mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// This build's version: `DOCKMESH_BUILD_VERSION` when set at build time, else the crate's.
pub const VERSION: &str = match option_env!("DOCKMESH_BUILD_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// Move and upgrade Docker Compose workloads across a fleet of hosts without losing data.
#[derive(Debug, Parser)]
#[command(name = "dockmesh", version = VERSION, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print `dockmesh <version>` (with --json: the version, the agent protocol and the
    /// newest schema version this binary knows).
    Version {
        /// Print `{"version", "protocol", "schema"}`.
        #[arg(long)]
        json: bool,
    },
    /// Version rules (check, plan), the checks before and after the server's own upgrade
    /// (preflight, verify), and the upgrade itself (apply).
    #[command(subcommand)]
    Upgrade(server_upgrade::UpgradeCommand),
    /// The database: schema status, apply pending migrations.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Write a verified backup bundle of the database, stacks and CA material.
    Backup(backup::BackupArgs),
    /// Restore a backup bundle (verified before anything is changed).
    Restore(backup::RestoreArgs),
    /// Run the server: the REST API over the store and the hosts, driving migrations.
    Server(server::ServerArgs),
    /// API tokens, made on the store directly (how the first token is made).
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Hosts: list, cordon, uncordon, drain.
    Host {
        #[command(subcommand)]
        cmd: host::HostCommand,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Stacks: list, deploy, status, remove, migrate to another host.
    Stack {
        #[command(subcommand)]
        cmd: stack::StackCommand,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Migrations: list, show, roll back, purge the retained source.
    Migration {
        #[command(subcommand)]
        cmd: migration::MigrationCommand,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Drains: list, show, pause, resume, abort (start one with `host drain`).
    Drain {
        #[command(subcommand)]
        cmd: drain::DrainCommand,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// The audit log: list, verify the chain.
    Audit {
        #[command(subcommand)]
        cmd: audit::AuditCommand,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Run the agent on a host (`--server URL --token T` the first time), or manage agents:
    /// enrollment tokens, list, remove.
    Agent(agent::AgentArgs),
    /// The agent upgrade policy: show, set, run now, resume after a halt.
    AgentPolicy {
        #[command(subcommand)]
        cmd: policy::PolicyCommand,
        #[command(flatten)]
        conn: client::Conn,
    },
    /// Release keys and signed agent binaries.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
}

/// `dockmesh version --json`: `{"version", "protocol", "schema"}`, what another binary's
/// `upgrade preflight` reads of this one.
pub fn version_json() -> serde_json::Value {
    use dockmesh_sqlx::{Backend, binary_version};
    serde_json::json!({
        "version": VERSION,
        "protocol": dockmesh_core::protocol::PROTOCOL_VERSION,
        "schema": binary_version(Backend::Sqlite).max(binary_version(Backend::Postgres)),
    })
}

/// Run a parsed command line; the exit code says whether it succeeded.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Version { json } => {
            if json {
                println!("{}", version_json());
            } else {
                println!("dockmesh {VERSION}");
            }
            ExitCode::SUCCESS
        }
        Command::Upgrade(cmd) => server_upgrade::run(cmd),
        Command::Db(cmd) => db::run(cmd),
        Command::Backup(args) => backup::run_backup(args),
        Command::Restore(args) => backup::run_restore(args),
        Command::Server(args) => server::run(args),
        Command::Token(cmd) => token::run(cmd),
        Command::Host { cmd, conn } => host::run(cmd, conn),
        Command::Stack { cmd, conn } => stack::run(cmd, conn),
        Command::Migration { cmd, conn } => migration::run(cmd, conn),
        Command::Audit { cmd, conn } => audit::run(cmd, conn),
        Command::Drain { cmd, conn } => drain::run(cmd, conn),
        Command::Agent(args) => agent::run(args),
        Command::AgentPolicy { cmd, conn } => policy::run(cmd, conn),
        Command::Release(cmd) => release::run(cmd),
    }
}
