//! `dockmesh host ls|cordon|uncordon|drain`.

use super::client::{Client, ClientError, Conn, block_on, bytes, print_json, print_table, seg};
use clap::Subcommand;
use dockmesh_http::api::drains::DrainView;
use dockmesh_http::api::hosts::{CordonView, HostView};
use serde_json::Value;
use std::process::ExitCode;

/// `dockmesh host …`
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts: online, engine, capacity, stacks.
    Ls,
    /// The Compose projects on a host, managed or not (`stack adopt` takes one over).
    LsProjects {
        /// The host id.
        host: String,
    },
    /// Cordon a host: it takes no migrated stacks until uncordoned.
    Cordon {
        /// The host id.
        host: String,
    },
    /// Uncordon a host.
    Uncordon {
        /// The host id.
        host: String,
    },
    /// Move every stack off a host, one at a time (the host is cordoned first): the plan is
    /// shown, confirmed, then followed. `--plan` only shows it.
    Drain {
        /// The host id.
        host: String,
        /// Show where each stack would go; nothing moves.
        #[arg(long)]
        plan: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Start the drain and return without following it.
        #[arg(long)]
        detach: bool,
    },
}

/// Run `dockmesh host …`.
pub fn run(cmd: HostCommand, conn: Conn) -> ExitCode {
    block_on(async move {
        let c = Client::new(&conn)?;
        match cmd {
            HostCommand::Ls => {
                let list: Vec<HostView> = c.get("/api/v1/hosts").await?;
                if c.json {
                    print_json(&list);
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|h| {
                            vec![
                                h.id.clone(),
                                match (h.online, h.cordoned) {
                                    (false, _) => "offline".into(),
                                    (true, true) => "online, cordoned".into(),
                                    (true, false) => "online".into(),
                                },
                                h.docker_version.clone(),
                                format!("{}/{}", bytes(h.memory_used), bytes(h.memory_total)),
                                format!("{}/{}", bytes(h.disk_used), bytes(h.disk_total)),
                                h.stacks.join(","),
                            ]
                        })
                        .collect();
                    print_table(
                        &["HOST", "STATE", "DOCKER", "MEMORY", "DISK", "STACKS"],
                        &rows,
                    );
                    for h in list.iter().filter(|h| !h.online) {
                        if let Some(e) = &h.error {
                            eprintln!("{}: {e}", h.id);
                        }
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            HostCommand::LsProjects { host } => {
                let list: Vec<dockmesh_core::ports::ProjectInfo> = c
                    .get(&format!("/api/v1/hosts/{}/projects", seg(&host)))
                    .await?;
                if c.json {
                    print_json(&list);
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|p| {
                            vec![
                                p.name.clone(),
                                if p.running { "running" } else { "stopped" }.into(),
                                p.services.join(","),
                                p.config_files.join(","),
                            ]
                        })
                        .collect();
                    print_table(&["PROJECT", "STATE", "SERVICES", "FILES"], &rows);
                }
                Ok(ExitCode::SUCCESS)
            }
            HostCommand::Cordon { host } => cordon(&c, &host, "cordon").await,
            HostCommand::Uncordon { host } => cordon(&c, &host, "uncordon").await,
            HostCommand::Drain {
                host,
                plan,
                yes,
                detach,
            } => {
                let p: Value = c
                    .post(&format!("/api/v1/hosts/{}/drain/plan", seg(&host)), &())
                    .await?;
                if c.json && plan {
                    print_json(&p);
                    return Ok(ExitCode::SUCCESS);
                }
                if !c.json {
                    let rows: Vec<Vec<String>> = p
                        .get("entries")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|e| {
                            let s = |k: &str| {
                                e.get(k).and_then(Value::as_str).unwrap_or("-").to_owned()
                            };
                            vec![s("stack"), s("target"), s("reason")]
                        })
                        .collect();
                    print_table(&["STACK", "TARGET", "WHY"], &rows);
                }
                if plan {
                    return Ok(ExitCode::SUCCESS);
                }
                if !yes
                    && !super::stack::confirm(&format!(
                        "Cordon {host} and move these stacks off it, one at a time?"
                    ))?
                {
                    eprintln!("not drained; nothing changed");
                    return Ok(ExitCode::from(1));
                }
                let d: DrainView = c
                    .post(&format!("/api/v1/hosts/{}/drain", seg(&host)), &())
                    .await?;
                if !c.json {
                    println!("drain {} started", d.id);
                }
                let d = if detach {
                    d
                } else {
                    super::drain::follow(&c, &d.id).await?
                };
                if c.json {
                    print_json(&d);
                } else {
                    super::drain::print_drain(&d);
                }
                Ok(if detach || d.state == "completed" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    })
}

async fn cordon(c: &Client, host: &str, verb: &str) -> Result<ExitCode, ClientError> {
    let v: CordonView = c
        .post(&format!("/api/v1/hosts/{}/{verb}", seg(host)), &())
        .await?;
    if c.json {
        print_json(&v);
    } else {
        println!(
            "host {} {}{}",
            v.id,
            if v.cordoned { "cordoned" } else { "uncordoned" },
            if v.changed { "" } else { " (already)" }
        );
    }
    Ok(ExitCode::SUCCESS)
}
