//! `dockmesh agent`: run the agent on a host (enroll once, then keep an outbound mTLS
//! connection to the server and serve the agent API over it), and the commands about agents:
//! `agent token create` (on the store directly), `agent ls`, `agent rm`.

use super::client::{Client, ClientError, Conn, print_json, print_table};
use super::db::{Location, fail};
use anyhow::Context;
use clap::{Args, Subcommand};
use dockmesh_core::ports::prelude::*;
use dockmesh_http::agent::self_upgrade;
use dockmesh_http::channel::enroll::{self};
use dockmesh_http::channel::pki;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

use super::agent_daemon::{RunArgs, run_agent};

/// `dockmesh agent [--server URL --token T] …` or `dockmesh agent COMMAND`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    cmd: Option<AgentCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Enrollment tokens, made on the store directly.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the enrolled agents: host, version, connected, upgrade state.
    Ls {
        #[command(flatten)]
        conn: Conn,
    },
    /// Remove an agent (by id or host name): its certificate is refused from now on and its
    /// host leaves the server. Refused while stacks run on it, a migration through it is in
    /// flight, or it keeps a migrated stack's source for a rollback.
    Rm {
        /// The agent's id or host name.
        agent: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Upgrade one agent (by id or host name) to the server's version now, in any policy
    /// mode, even while the rollout is halted.
    Upgrade {
        /// The agent's id or host name.
        agent: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Watch an upgrade of this agent (started by the agent itself before it swaps its binary).
    #[command(hide = true)]
    Watchdog {
        /// The agent's state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a one-time enrollment token (it carries the fingerprint of the server's CA) and
    /// print it: `dockmesh agent --server URL --token TOKEN` on the new host uses it.
    Create {
        #[command(flatten)]
        location: Location,
        /// How long the token stays valid (`30m`, `1h`, `2d`).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "agent")]
        name: String,
        /// Print `{"token": …, "expires_at": …}`.
        #[arg(long)]
        json: bool,
    },
}

/// Run `dockmesh agent …`.
pub fn run(args: AgentArgs) -> ExitCode {
    match args.cmd {
        Some(AgentCommand::Token(TokenCommand::Create {
            location,
            ttl,
            name,
            json,
        })) => {
            super::db::init_logging();
            let rt = match super::db::runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(token_create(&location, &ttl, &name, json)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Some(AgentCommand::Ls { conn }) => client_run(&conn, |c| Box::pin(list(c))),
        Some(AgentCommand::Rm { agent, conn }) => {
            client_run(&conn, move |c| Box::pin(remove(c, agent)))
        }
        Some(AgentCommand::Upgrade { agent, conn }) => {
            client_run(&conn, move |c| Box::pin(upgrade(c, agent)))
        }
        Some(AgentCommand::Watchdog { state_dir }) => {
            match self_upgrade::watchdog(&state_dir, |m| eprintln!("dockmesh agent watchdog: {m}"))
            {
                self_upgrade::WatchdogEnd::Settled => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        None => run_agent(args.run),
    }
}

type ClientFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ClientError>> + 'a>>;

fn client_run(conn: &Conn, f: impl for<'a> FnOnce(&'a Client) -> ClientFuture<'a>) -> ExitCode {
    let rt = match super::db::runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let client = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    match rt.block_on(f(&client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// A lifetime like `30m`, `1h` or `2d` (a day is 24 hours).
fn parse_ttl(ttl: &str) -> anyhow::Result<jiff::SignedDuration> {
    ttl.parse::<jiff::SignedDuration>()
        .or_else(|e| {
            ttl.parse::<jiff::Span>()
                .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
                .map_err(|_| e)
        })
        .map_err(|e| anyhow::anyhow!("--ttl {ttl:?}: not a duration like 30m, 1h or 2d: {e}"))
}

async fn token_create(
    location: &Location,
    ttl: &str,
    name: &str,
    json: bool,
) -> anyhow::Result<()> {
    let ttl = parse_ttl(ttl)?;
    // Refused before anything is opened or created.
    enroll::check_enrollment_ttl(ttl).map_err(|e| anyhow::anyhow!("--ttl: {e} ({})", e.hint()))?;
    super::db::private_dir(&location.data_dir, "the data directory")?;
    let ca_dir = location.data_dir.join("ca");
    let ca = pki::Ca::load_or_create(&ca_dir)
        .with_context(|| format!("loading or making the agent CA in {}", ca_dir.display()))?;
    let target = location.target()?;
    let (store, _) = dockmesh_sqlx::SqlStore::open_with(
        &target,
        &dockmesh_sqlx::OpenOptions::in_data_dir(&location.data_dir),
    )
    .await?;
    let now = jiff::Timestamp::now();
    let (token, record) = enroll::new_enrollment_token(name, &ca.fingerprint(), now, ttl)
        .map_err(|e| anyhow::anyhow!("{e} ({})", e.hint()))?;
    store.put_token(&record).await?;
    store.close().await;
    if json {
        println!(
            "{}",
            serde_json::json!({"token": token, "expires_at": record.expires_at})
        );
    } else {
        println!("{token}");
        eprintln!(
            "Enrollment token made; it works once, until {}. On the new host run: \
             dockmesh agent --server https://<this server>:8080 --token <token>",
            record
                .expires_at
                .map(|t| t.to_string())
                .unwrap_or_else(|| "never".into())
        );
    }
    Ok(())
}

async fn list(c: &Client) -> Result<(), ClientError> {
    let agents: Vec<Value> = c.get("/api/v1/agents").await?;
    if c.json {
        print_json(&agents);
        return Ok(());
    }
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let upgrade = match a["status"].as_str().unwrap_or("") {
                "upgrading" => format!(
                    "upgrading to {}",
                    a["upgrade"]["target_version"].as_str().unwrap_or("?")
                ),
                "failed" => format!("failed: {}", a["upgrade"]["reason"].as_str().unwrap_or("")),
                other => other.replace('_', " "),
            };
            vec![
                s(a, "host"),
                s(a, "id"),
                if a["connected"].as_bool() == Some(true) {
                    "connected".into()
                } else {
                    "offline".into()
                },
                s(a, "version"),
                a["protocol_version"].to_string(),
                upgrade,
                s(a, "last_seen"),
            ]
        })
        .collect();
    print_table(
        &[
            "HOST",
            "AGENT",
            "STATE",
            "VERSION",
            "PROTOCOL",
            "UPGRADE",
            "LAST SEEN",
        ],
        &rows,
    );
    for a in &agents {
        if a["upgrade"]["state"] == "pending_manual" {
            eprintln!(
                "agent {} on {} needs a manual upgrade: {}\n  steps: {}",
                s(a, "id"),
                s(a, "host"),
                a["upgrade"]["reason"].as_str().unwrap_or(""),
                a["manual_steps"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

async fn remove(c: &Client, agent: String) -> Result<(), ClientError> {
    let path = format!(
        "/api/v1/agents/{}",
        dockmesh_http::channel::wire::segment(&agent)
    );
    let v = c.send::<()>(reqwest::Method::DELETE, &path, None).await?;
    if c.json {
        print_json(&v);
    } else {
        println!(
            "removed agent {} (host {}); its certificate is refused from now on",
            v["id"].as_str().unwrap_or(""),
            v["host"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

async fn upgrade(c: &Client, agent: String) -> Result<(), ClientError> {
    let path = format!(
        "/api/v1/agents/{}/upgrade",
        dockmesh_http::channel::wire::segment(&agent)
    );
    let v = c.send::<()>(reqwest::Method::POST, &path, None).await?;
    if c.json {
        print_json(&v);
        return Ok(());
    }
    let id = v["id"].as_str().unwrap_or("");
    match v["upgrade"]["state"].as_str().unwrap_or("") {
        "in_flight" => println!(
            "agent {id} (host {}) was sent the upgrade to {}; `dockmesh agent ls` shows when it \
             reports the new version",
            v["host"].as_str().unwrap_or(""),
            v["upgrade"]["target_version"].as_str().unwrap_or("")
        ),
        "requested" => {
            println!("agent {id} is not connected: the upgrade is sent when it connects")
        }
        "pending_manual" => println!(
            "agent {id} cannot be upgraded from here: {}",
            v["manual_steps"].as_str().unwrap_or("")
        ),
        other => println!("agent {id}: {other}"),
    }
    Ok(())
}
