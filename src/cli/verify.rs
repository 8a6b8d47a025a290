//! `dockmesh upgrade verify`: after a server upgrade, every host online, agents on the
//! server's version (or listed as pending a manual upgrade), stacks healthy, the audit chain
//! intact and the schema up to date. The facts come from the server's API and, for the schema,
//! from the database read-only (`db status`); the verdict is core's `verify::verify`.
//! A table (or `--json`); exit 0 when every check passes, 1 when one fails, 2 on error.

use super::client::{Client, ClientError, Conn, block_on, print_json, print_table, seg};
use super::db::Location;
use clap::Args;
use dockmesh_core::preflight::CheckStatus;
use dockmesh_core::rollout::UpgradeState;
use dockmesh_core::verify::{AgentState, HostState, StackState, VerifyInput, verify};
use dockmesh_http::server::api::agents::AgentView;
use dockmesh_http::server::api::audit::VerifyView;
use dockmesh_http::server::api::health::Health;
use dockmesh_http::server::api::hosts::HostView;
use dockmesh_http::server::api::stacks::{StackView, StatusView};
use dockmesh_sqlx::{SchemaStatus, SqlStore};
use std::process::ExitCode;

/// `dockmesh upgrade verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Fail unless the server has exactly this many hosts.
    #[arg(long, value_name = "N")]
    expect_hosts: Option<usize>,
    /// The database whose schema is checked (read only).
    #[command(flatten)]
    location: Location,
    #[command(flatten)]
    conn: Conn,
}

/// Run `dockmesh upgrade verify`.
pub fn run(args: VerifyArgs) -> ExitCode {
    block_on(async move {
        let c = Client::new(&args.conn)?;
        let input = gather(&c, &args).await?;
        let report = verify(&input);
        if c.json {
            print_json(&serde_json::json!({
                "passed": report.passed(),
                "checks": report.checks,
            }));
        } else {
            let rows: Vec<Vec<String>> = report
                .checks
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        match c.status {
                            CheckStatus::Pass => "pass",
                            CheckStatus::Warn => "warn",
                            CheckStatus::Fail => "FAIL",
                        }
                        .to_owned(),
                        c.detail.clone(),
                    ]
                })
                .collect();
            print_table(&["CHECK", "STATUS", "DETAIL"], &rows);
        }
        Ok(if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

async fn gather(c: &Client, args: &VerifyArgs) -> Result<VerifyInput, ClientError> {
    let health: Health = c.get("/api/v1/health").await?;
    // A verdict is never drawn from a snapshot the server kept: every host is asked now.
    let hosts: Vec<HostView> = c.get("/api/v1/hosts?fresh=true").await?;
    let agents: Vec<AgentView> = c.get("/api/v1/agents").await?;
    let stacks: Vec<StackView> = c.get("/api/v1/stacks").await?;
    let audit: VerifyView = c.get("/api/v1/audit/verify").await?;
    let mut stack_states = Vec::new();
    for s in stacks.iter().filter(|s| s.host.is_some()) {
        let state = match c
            .get::<StatusView>(&format!("/api/v1/stacks/{}/status", seg(&s.name)))
            .await
        {
            Ok(st) => {
                let off: Vec<String> = st
                    .status
                    .containers
                    .iter()
                    .filter(|c| {
                        c.state != "running"
                            || matches!(c.health.as_deref(), Some("unhealthy" | "starting"))
                    })
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            c.name,
                            c.state,
                            c.health
                                .as_deref()
                                .map(|h| format!(", {h}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                StackState {
                    name: s.name.clone(),
                    healthy: st.running && off.is_empty(),
                    detail: if st.status.containers.is_empty() {
                        "no containers".into()
                    } else {
                        off.join(", ")
                    },
                }
            }
            Err(e) => StackState {
                name: s.name.clone(),
                healthy: false,
                detail: e.to_string(),
            },
        };
        stack_states.push(state);
    }
    let schema = match args.location.target() {
        Err(e) => Err(format!("the database cannot be named: {e}")),
        Ok(target) => match SqlStore::status(&target).await {
            Ok(r) if r.status == SchemaStatus::UpToDate => Ok(()),
            Ok(r) => Err(format!(
                "database at schema {}, binary at {}: {:?}",
                r.database_version, r.binary_version, r.status
            )),
            Err(e) => Err(format!("the database cannot be read: {e}")),
        },
    };
    Ok(VerifyInput {
        server_version: health.version,
        expect_hosts: args.expect_hosts,
        hosts: hosts
            .into_iter()
            .map(|h| HostState {
                id: h.id,
                online: h.online,
            })
            .collect(),
        agents: agents
            .into_iter()
            .map(|a| AgentState {
                id: a.id,
                version: a.version,
                pending_manual: match a.upgrade {
                    UpgradeState::PendingManual { reason, .. } => Some(reason),
                    _ => None,
                },
            })
            .collect(),
        stacks: stack_states,
        audit: if audit.ok {
            Ok(())
        } else {
            Err(format!(
                "broken: {}",
                serde_json::to_string(&audit.verification).unwrap_or_default()
            ))
        },
        schema,
    })
}
