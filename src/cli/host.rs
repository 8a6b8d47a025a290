//! `dockmesh host ls|ls-projects|events|cordon|uncordon|rm|drain`.

use super::client::{Client, ClientError, Conn, block_on, bytes, print_json, print_table, seg};
use clap::Subcommand;
use dockmesh_core::verify::{Seen, stale};
use dockmesh_http::server::api::drains::DrainView;
use dockmesh_http::server::api::hosts::{CordonView, HostEventsView, HostView};
use serde_json::Value;
use std::process::ExitCode;

/// `dockmesh host …`
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List hosts: online, engine, capacity, stacks.
    Ls {
        /// Instead, list the agents (and their hosts) not seen for this long, or never
        /// (`30d`, `12h`, `90m`, `45s`).
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        stale: Option<jiff::SignedDuration>,
    },
    /// The Compose projects on a host, managed or not (`stack adopt` takes one over).
    LsProjects {
        /// The host id.
        host: String,
    },
    /// What happened lately to the containers of a host's stacks (starts, exits and their
    /// codes, kills, out-of-memory kills, health changes), as the host reported it.
    Events {
        /// The host id.
        host: String,
        /// At most this many of the newest events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
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
    /// Decommission a host that runs an agent: its agent record is removed, so its certificate
    /// is refused from now on (the engine and anything still on it are left alone). Refused
    /// while the host runs stacks or a migration needs it; a host reached by socket is removed
    /// from the server's command line instead.
    Rm {
        /// The host id (or its agent's id).
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
            HostCommand::Ls { stale: Some(age) } => {
                let agents: Vec<dockmesh_http::server::api::agents::AgentView> =
                    c.get("/api/v1/agents").await?;
                let seen: Vec<Seen> = agents
                    .into_iter()
                    .map(|a| Seen {
                        id: a.id,
                        host: a.host,
                        last_seen: a.last_seen,
                    })
                    .collect();
                let list = stale(jiff::Timestamp::now(), age, &seen);
                if c.json {
                    print_json(&list);
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|s| {
                            vec![
                                s.host.clone(),
                                s.id.clone(),
                                s.last_seen
                                    .map(|t| t.to_string())
                                    .unwrap_or_else(|| "never".into()),
                            ]
                        })
                        .collect();
                    print_table(&["HOST", "AGENT", "LAST SEEN"], &rows);
                    eprintln!(
                        "hosts the server reaches directly keep no last-seen time: `dockmesh host ls` shows whether they answer now"
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            HostCommand::Ls { stale: None } => {
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
            HostCommand::Events { host, limit } => {
                let v: HostEventsView = c
                    .get(&format!(
                        "/api/v1/hosts/{}/events?limit={limit}",
                        seg(&host)
                    ))
                    .await?;
                if c.json {
                    print_json(&v);
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v
                    .events
                    .iter()
                    .map(|e| {
                        vec![
                            e.at.to_string(),
                            e.stack.clone(),
                            e.service.clone().unwrap_or_default(),
                            e.container.clone(),
                            match e.exit_code {
                                Some(code) => format!("{} (exit {code})", e.action),
                                None => e.action.clone(),
                            },
                        ]
                    })
                    .collect();
                print_table(&["AT", "STACK", "SERVICE", "CONTAINER", "EVENT"], &rows);
                if !v.following {
                    eprintln!(
                        "the server does not follow the events of host {} now{}",
                        v.host,
                        v.note.map(|n| format!(": {n}")).unwrap_or_default()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            HostCommand::Rm { host } => {
                let agents: Vec<dockmesh_http::server::api::agents::AgentView> =
                    c.get("/api/v1/agents").await?;
                if !agents.iter().any(|a| a.host == host || a.id == host) {
                    let hosts: Vec<HostView> = c.get("/api/v1/hosts").await?;
                    if hosts.iter().any(|h| h.id == host) {
                        eprintln!(
                            "error: host {host} is reached by socket, not by an agent: it is one \
                             of the server's --host options (or its local host); restart the \
                             server without it to remove it"
                        );
                    } else {
                        eprintln!("error: no host {host} (`dockmesh host ls` lists them)");
                    }
                    return Ok(ExitCode::from(1));
                }
                let v = c
                    .send::<()>(
                        reqwest::Method::DELETE,
                        &format!("/api/v1/agents/{}", seg(&host)),
                        None,
                    )
                    .await?;
                if c.json {
                    print_json(&v);
                } else {
                    println!(
                        "removed host {} (agent {}): its agent's certificate is refused from \
                         now on; stop `dockmesh agent` on that machine",
                        v["host"].as_str().unwrap_or(""),
                        v["id"].as_str().unwrap_or("")
                    );
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

/// `30d`, `12h`, `90m`, `45s`: a whole number and a unit.
fn parse_age(text: &str) -> Result<jiff::SignedDuration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write it like 30d, 12h, 90m or 45s"))?;
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use d, h, m or s"
            ));
        }
    };
    n.checked_mul(secs)
        .map(jiff::SignedDuration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        assert_eq!(super::parse_age("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(super::parse_age("12h").unwrap().as_secs(), 12 * 3_600);
        assert_eq!(super::parse_age("90m").unwrap().as_secs(), 90 * 60);
        assert_eq!(super::parse_age("45s").unwrap().as_secs(), 45);
        assert!(super::parse_age("30").unwrap_err().contains("no unit"));
        assert!(super::parse_age("3w").unwrap_err().contains("unknown unit"));
        assert!(super::parse_age("d").is_err());
    }
}
