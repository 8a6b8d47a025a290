//! `dockmesh agent-policy show|set|run|resume`: the agent upgrade policy.

use super::client::{Client, ClientError, Conn, print_json};
use clap::Subcommand;
use serde_json::Value;
use std::process::ExitCode;

/// `dockmesh agent-policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy, the rollout's state, where the agents stand and the binaries served.
    Show,
    /// Change the policy; what is not given stays as it is.
    Set {
        /// `manual` (only per-agent upgrades), `auto` (every drifted agent) or `staged`
        /// (waves).
        #[arg(long, value_parser = ["manual", "auto", "staged"])]
        mode: Option<String>,
        /// Staged: percent of the drifted agents per wave (1–100).
        #[arg(long)]
        percent: Option<u8>,
        /// Staged: minimum time between waves (`5m`, `1h`).
        #[arg(long, value_name = "DURATION")]
        gap: Option<String>,
        /// Staged: agents upgraded alone as the first wave.
        #[arg(long)]
        canaries: Option<u32>,
        /// Staged: halt the rollout after this many failures (0: never).
        #[arg(long, value_name = "N")]
        halt_after: Option<u32>,
        /// How often the evaluator runs (`60s`).
        #[arg(long, value_name = "DURATION")]
        interval: Option<String>,
        /// An upgrade not reported within this time failed (`5m`).
        #[arg(long, value_name = "DURATION")]
        timeout: Option<String>,
    },
    /// Evaluate the rollout now (the staged gap and a halt still hold).
    Run,
    /// Resume a rollout halted by failures.
    Resume,
}

const PATH: &str = "/api/v1/agents/upgrade-policy";

/// Run `dockmesh agent-policy …`.
pub fn run(cmd: PolicyCommand, conn: Conn) -> ExitCode {
    let rt = match super::db::runtime() {
        Ok(rt) => rt,
        Err(e) => return super::db::fail(e),
    };
    let client = match Client::new(&conn) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let out = rt.block_on(async {
        match cmd {
            PolicyCommand::Show => show(&client).await,
            PolicyCommand::Set {
                mode,
                percent,
                gap,
                canaries,
                halt_after,
                interval,
                timeout,
            } => {
                let mut policy = client.get::<Value>(PATH).await?["policy"].clone();
                let mut put = |path: &[&str], v: Value| {
                    let mut at = &mut policy;
                    for k in &path[..path.len() - 1] {
                        at = &mut at[*k];
                    }
                    at[path[path.len() - 1]] = v;
                };
                if let Some(m) = mode {
                    put(&["mode"], m.into());
                }
                if let Some(p) = percent {
                    put(&["staged", "percent"], p.into());
                }
                if let Some(g) = gap {
                    put(&["staged", "min_gap"], g.into());
                }
                if let Some(c) = canaries {
                    put(&["staged", "canaries"], c.into());
                }
                if let Some(h) = halt_after {
                    put(&["staged", "halt_after_failures"], h.into());
                }
                if let Some(i) = interval {
                    put(&["interval"], i.into());
                }
                if let Some(t) = timeout {
                    put(&["upgrade_timeout"], t.into());
                }
                let v = client
                    .send(reqwest::Method::PUT, PATH, Some(&policy))
                    .await?;
                print_either(&client, &v);
                Ok(())
            }
            PolicyCommand::Run => {
                let v = client
                    .send::<()>(reqwest::Method::POST, &format!("{PATH}/run"), None)
                    .await?;
                if client.json {
                    print_json(&v);
                } else {
                    let sent = v["dispatched"].as_array().map_or(0, Vec::len);
                    println!(
                        "evaluated: {} ({sent} agent(s) sent the upgrade, {} drifted)",
                        v["automatic"]["decision"].as_str().unwrap_or("?"),
                        v["drifted"]
                    );
                    for a in v["dispatched"].as_array().into_iter().flatten() {
                        println!("  sent: {}", a.as_str().unwrap_or(""));
                    }
                    for a in v["no_binary"].as_array().into_iter().flatten() {
                        println!(
                            "  no binary for its platform (pending manual): {}",
                            a.as_str().unwrap_or("")
                        );
                    }
                }
                Ok(())
            }
            PolicyCommand::Resume => {
                let v = client
                    .send::<()>(reqwest::Method::POST, &format!("{PATH}/resume"), None)
                    .await?;
                print_either(&client, &v);
                Ok(())
            }
        }
    });
    match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

async fn show(c: &Client) -> Result<(), ClientError> {
    let v: Value = c.get(PATH).await?;
    print_either(c, &v);
    Ok(())
}

/// The policy view as JSON with `--json`, else as lines.
fn print_either(c: &Client, v: &Value) {
    if c.json {
        print_json(v);
    } else {
        print_view(v);
    }
}

fn print_view(v: &Value) {
    let p = &v["policy"];
    println!("mode:            {}", p["mode"].as_str().unwrap_or("?"));
    if p["mode"] == "staged" {
        let st = &p["staged"];
        println!(
            "waves:           {}% of the drifted agents, at least {} apart, {} canary(ies), halt after {} failure(s)",
            st["percent"],
            st["min_gap"].as_str().unwrap_or("?"),
            st["canaries"],
            st["halt_after_failures"]
        );
    }
    println!(
        "evaluated every: {}; an upgrade fails after {}",
        p["interval"].as_str().unwrap_or("?"),
        p["upgrade_timeout"].as_str().unwrap_or("?")
    );
    let state = &v["state"];
    println!(
        "rollout:         to {} ; {} wave(s), {} failure(s){}",
        v["server_version"].as_str().unwrap_or("?"),
        state["waves"],
        state["failures"],
        match state["halted"]["reason"].as_str() {
            Some(r) => format!("; HALTED: {r} (resume with `dockmesh agent-policy resume`)"),
            None => String::new(),
        }
    );
    let c = &v["counters"];
    println!(
        "agents:          {} ({} connected): {} up to date, {} drifted, {} requested, {} upgrading, {} failed, {} pending manual",
        c["agents"],
        c["connected"],
        c["up_to_date"],
        c["drifted"],
        c["requested"],
        c["in_flight"],
        c["failed"],
        c["pending_manual"]
    );
    if v["upgrades_enabled"] == true {
        println!(
            "release key:     {}",
            v["release_key"].as_str().unwrap_or("?")
        );
        for b in v["binaries"].as_array().into_iter().flatten() {
            println!(
                "binary:          {} (dockmesh {} for {}/{}, {} bytes)",
                b["file"].as_str().unwrap_or(""),
                b["version"].as_str().unwrap_or(""),
                b["os"].as_str().unwrap_or(""),
                b["arch"].as_str().unwrap_or(""),
                b["size"]
            );
        }
        for r in v["refused_binaries"].as_array().into_iter().flatten() {
            println!("not served:      {}", r.as_str().unwrap_or(""));
        }
    } else {
        println!(
            "upgrades:        off (start the server with --release-key and put binaries signed \
             with `dockmesh release sign` in --agent-binaries)"
        );
    }
}
