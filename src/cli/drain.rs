//! `dockmesh drain ls|show|pause|resume|abort` (a drain starts with `dockmesh host drain`).

use super::client::{Client, ClientError, Conn, block_on, print_json, print_table, seg};
use clap::Subcommand;
use dockmesh_http::server::api::drains::DrainView;
use std::process::ExitCode;
use std::time::Duration;

/// `dockmesh drain …`
#[derive(Debug, Subcommand)]
pub enum DrainCommand {
    /// List drains, newest first.
    Ls,
    /// One drain, with each stack's status.
    Show {
        /// The drain id.
        id: String,
    },
    /// Pause a drain after the stack moving now.
    Pause {
        /// The drain id.
        id: String,
    },
    /// Resume a paused drain (stacks that failed are tried again).
    Resume {
        /// The drain id.
        id: String,
    },
    /// Abort a drain for good (stacks moved so far stay where they are).
    Abort {
        /// The drain id.
        id: String,
    },
}

/// Run `dockmesh drain …`.
pub fn run(cmd: DrainCommand, conn: Conn) -> ExitCode {
    block_on(async move {
        let c = Client::new(&conn)?;
        let d: DrainView = match cmd {
            DrainCommand::Ls => {
                let list: Vec<DrainView> = c.get("/api/v1/drains").await?;
                if c.json {
                    print_json(&list);
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|d| {
                            vec![
                                d.id.clone(),
                                d.host.clone(),
                                d.state.clone(),
                                d.created_at.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "HOST", "STATE", "CREATED"], &rows);
                }
                return Ok(ExitCode::SUCCESS);
            }
            DrainCommand::Show { id } => c.get(&format!("/api/v1/drains/{}", seg(&id))).await?,
            DrainCommand::Pause { id } => act(&c, &id, "pause").await?,
            DrainCommand::Resume { id } => act(&c, &id, "resume").await?,
            DrainCommand::Abort { id } => act(&c, &id, "abort").await?,
        };
        if c.json {
            print_json(&d);
        } else {
            print_drain(&d);
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn act(c: &Client, id: &str, verb: &str) -> Result<DrainView, ClientError> {
    c.post(&format!("/api/v1/drains/{}/{verb}", seg(id)), &())
        .await
}

/// Print a drain for people.
pub fn print_drain(d: &DrainView) {
    println!("drain {} of host {}: {}", d.id, d.host, d.state);
    if let Some(r) = &d.reason {
        println!("  {r}");
    }
    let rows: Vec<Vec<String>> = d
        .entries
        .iter()
        .map(|e| {
            vec![
                e.stack.clone(),
                e.target.clone().unwrap_or_else(|| "-".into()),
                e.status.clone(),
                e.migration.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["STACK", "TARGET", "STATUS", "MIGRATION"], &rows);
}

/// Poll a drain until it is no longer running, printing each stack's status changes.
pub async fn follow(c: &Client, id: &str) -> Result<DrainView, ClientError> {
    let mut seen: Vec<(String, String)> = Vec::new();
    loop {
        let d: DrainView = c.get(&format!("/api/v1/drains/{}", seg(id))).await?;
        for e in &d.entries {
            let now = (e.stack.clone(), e.status.clone());
            if !seen.contains(&now) {
                if !c.json {
                    eprintln!("{}: {}", e.stack, e.status);
                }
                seen.retain(|(s, _)| s != &e.stack);
                seen.push(now);
            }
        }
        if d.state != "running" {
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
