//! `dockmesh stack ls|deploy|status|upgrade|history|rollback|rm|migrate`: stacks through the
//! server's API.

use super::client::{Client, ClientError, Conn, block_on, decode, print_json, print_table, seg};
use clap::Subcommand;
mod moves;

use dockmesh_core::release::ReleaseOutcome;
use dockmesh_http::server::api::stacks::{StackDetail, StackView, StatusView};
use dockmesh_http::server::stack_upgrade::{ReleaseView, UpgradeView};
pub use moves::confirm;
use moves::{adopt, migrate};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// `dockmesh stack …`
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Check a compose file offline (no server, no engine): what would be created, or every
    /// problem it has.
    Check(super::check::CheckArgs),
    /// List the stacks the server knows and where each runs.
    Ls,
    /// Adopt a Compose project that already runs on a host (started with `docker compose
    /// up`): its files are read from where its labels record them (or given), checked to
    /// describe what runs, and the stack is managed from then on. No container restarts.
    Adopt {
        /// The project's name.
        name: String,
        /// The host it runs on.
        #[arg(long, value_name = "HOST")]
        host: String,
        /// The compose file to use instead of the one the project records.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        /// The `.env` to use with `--file`.
        #[arg(long, value_name = "FILE", requires = "file")]
        env_file: Option<PathBuf>,
    },
    /// Register a stack's compose file (and `.env`) and deploy it on a host.
    Deploy {
        /// The stack name.
        name: String,
        /// The compose file.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        /// The `.env` file.
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
        /// The host to deploy on.
        #[arg(long, value_name = "HOST")]
        host: String,
    },
    /// The status of a stack's containers on its host.
    Status {
        /// The stack name.
        name: String,
    },
    /// Remove a stack (containers and files; named volumes are kept unless --volumes).
    Rm {
        /// The stack name.
        name: String,
        /// Also delete its named volumes and their data.
        #[arg(long)]
        volumes: bool,
    },
    /// Upgrade a deployed stack to new files: the diff against what runs, then (unless
    /// --dry-run) images checked, volumes copied with --backup, changed services replaced,
    /// health awaited, and the previous release put back by itself when the new one fails.
    Upgrade {
        /// The stack name.
        name: String,
        /// The new compose file.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        /// The new `.env` file.
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
        /// Show the diff only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Copy the stack's named volumes first (the stack stops while they are copied) and
        /// fill them again from the copies if the release is rolled back.
        #[arg(long)]
        backup: bool,
    },
    /// Every release of a stack (compose, env, image ids), newest first.
    History {
        /// The stack name.
        name: String,
    },
    /// Deploy an earlier release of a stack again (default: the one before the running one).
    Rollback {
        /// The stack name.
        name: String,
        /// The revision to go back to (`dockmesh stack history NAME`).
        #[arg(long, value_name = "REV")]
        to: Option<u64>,
        /// Show the diff only; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Copy the stack's named volumes first, as for an upgrade.
        #[arg(long)]
        backup: bool,
    },
    /// Move a stack with its data to another host: pre-flight, confirm, then follow progress.
    Migrate {
        /// The stack name.
        name: String,
        /// The target host.
        #[arg(long, value_name = "HOST")]
        to: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Start the migration and return without following it.
        #[arg(long)]
        detach: bool,
    },
}

/// Run `dockmesh stack …`.
pub fn run(cmd: StackCommand, conn: Conn) -> ExitCode {
    if let StackCommand::Check(args) = cmd {
        return super::check::run_check(args, conn.json);
    }
    block_on(async move {
        let c = Client::new(&conn)?;
        match cmd {
            StackCommand::Check(_) => unreachable!("handled above, offline"),
            StackCommand::Ls => ls(&c).await,
            StackCommand::Adopt {
                name,
                host,
                file,
                env_file,
            } => adopt(&c, &name, &host, file.as_deref(), env_file.as_deref()).await,
            StackCommand::Deploy {
                name,
                file,
                env_file,
                host,
            } => deploy(&c, &name, &file, env_file.as_deref(), &host).await,
            StackCommand::Status { name } => status(&c, &name).await,
            StackCommand::Upgrade {
                name,
                file,
                env_file,
                dry_run,
                backup,
            } => {
                let compose = read(&file)?;
                let env = env_file.as_deref().map(read).transpose()?;
                let body =
                    json!({"compose": compose, "env": env, "dry_run": dry_run, "backup": backup});
                let path = format!("/api/v1/stacks/{}", seg(&name));
                upgrade(&c, Method::PUT, &path, &body).await
            }
            StackCommand::History { name } => history(&c, &name).await,
            StackCommand::Rollback {
                name,
                to,
                dry_run,
                backup,
            } => {
                let body = json!({"to": to, "dry_run": dry_run, "backup": backup});
                let path = format!("/api/v1/stacks/{}/rollback", seg(&name));
                upgrade(&c, Method::POST, &path, &body).await
            }
            StackCommand::Rm { name, volumes } => {
                c.send::<()>(
                    Method::DELETE,
                    &format!("/api/v1/stacks/{}?volumes={volumes}", seg(&name)),
                    None,
                )
                .await?;
                if !c.json {
                    println!("stack {name} removed");
                }
                Ok(ExitCode::SUCCESS)
            }
            StackCommand::Migrate {
                name,
                to,
                yes,
                detach,
            } => migrate(&c, &name, &to, yes, detach).await,
        }
    })
}

async fn ls(c: &Client) -> Result<ExitCode, ClientError> {
    let list: Vec<StackView> = c.get("/api/v1/stacks").await?;
    if c.json {
        print_json(&list);
    } else {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.host.clone().unwrap_or_else(|| "-".into()),
                    s.updated_at.to_string(),
                ]
            })
            .collect();
        print_table(&["NAME", "HOST", "UPDATED"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn read(path: &std::path::Path) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map_err(|e| ClientError::Transport(format!("reading {}: {e}", path.display())))
}

async fn deploy(
    c: &Client,
    name: &str,
    file: &std::path::Path,
    env_file: Option<&std::path::Path>,
    host: &str,
) -> Result<ExitCode, ClientError> {
    let compose = read(file)?;
    let env = env_file.map(read).transpose()?;
    let body = json!({"name": name, "compose": compose, "env": env});
    match c.send(Method::POST, "/api/v1/stacks", Some(&body)).await {
        Ok(_) => {}
        Err(ClientError::Api { status, .. }) if status == reqwest::StatusCode::CONFLICT => {
            // Deployed already: deploying the same files again is fine; new files are not.
            let known: StackDetail = c.get(&format!("/api/v1/stacks/{}", seg(name))).await?;
            if known.compose != compose || known.env != env {
                return Err(ClientError::Transport(format!(
                    "stack {name} is deployed on {} with other files; changing a deployed stack's files is an upgrade: `dockmesh stack upgrade {name} --file FILE`",
                    known.host.unwrap_or_default()
                )));
            }
        }
        Err(e) => return Err(e),
    }
    let st: StatusView = c
        .post(
            &format!("/api/v1/stacks/{}/deploy", seg(name)),
            &json!({"host": host}),
        )
        .await?;
    if c.json {
        print_json(&st);
    } else {
        println!("stack {name} deployed on {}", st.host);
        print_status(&st);
    }
    Ok(ExitCode::SUCCESS)
}

/// How long the CLI waits for an upgrade's answer: health waits, volume copies and a rollback.
const UPGRADE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Run an upgrade or a rollback and print the diff and the outcome. Exit 0 when the release
/// was deployed (or for a dry run), 1 when it was rolled back, 2 when putting the previous
/// release back failed too.
async fn upgrade(
    c: &Client,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<ExitCode, ClientError> {
    let v: UpgradeView = decode(
        c.send_within(method, path, Some(body), Some(UPGRADE_TIMEOUT))
            .await?,
    )?;
    let code = match v.outcome {
        None | Some(ReleaseOutcome::Deployed) => ExitCode::SUCCESS,
        Some(ReleaseOutcome::RolledBack) => ExitCode::from(1),
        Some(_) => ExitCode::from(2),
    };
    if c.json {
        print_json(&v);
        return Ok(code);
    }
    print!("{}", v.diff);
    for (volume, copy) in &v.backups {
        println!("backup: volume {volume} copied to {copy} (verified)");
    }
    match (v.outcome, v.rev) {
        (None, _) => println!("dry run: nothing was changed on {}", v.host),
        (Some(ReleaseOutcome::Deployed), Some(rev)) => {
            println!("stack {} is at release {rev} on {}", v.stack, v.host)
        }
        (Some(outcome), rev) => {
            eprintln!(
                "stack {}: release {} {outcome}: {}",
                v.stack,
                rev.map(|r| r.to_string()).unwrap_or_default(),
                v.detail.as_deref().unwrap_or_default()
            );
            for volume in &v.restored {
                eprintln!("restored: volume {volume} from its backup");
            }
        }
    }
    Ok(code)
}

async fn history(c: &Client, name: &str) -> Result<ExitCode, ClientError> {
    let list: Vec<ReleaseView> = c
        .get(&format!("/api/v1/stacks/{}/releases", seg(name)))
        .await?;
    if c.json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let images: Vec<String> = r
                .images
                .iter()
                .map(|(s, id)| {
                    let id = id.strip_prefix("sha256:").unwrap_or(id);
                    format!("{s}={}", &id[..id.len().min(12)])
                })
                .collect();
            vec![
                format!("{}{}", r.rev, if r.current { " *" } else { "" }),
                r.at.to_string(),
                r.outcome.to_string(),
                r.from_rev
                    .map(|f| format!("rollback to {f}"))
                    .unwrap_or_default(),
                r.actor.clone(),
                images.join(" "),
            ]
        })
        .collect();
    print_table(&["REV", "AT", "OUTCOME", "NOTE", "BY", "IMAGES"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn print_status(st: &StatusView) {
    let rows: Vec<Vec<String>> = st
        .status
        .containers
        .iter()
        .map(|c| {
            vec![
                c.service.clone(),
                c.name.clone(),
                c.state.clone(),
                c.health.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["SERVICE", "CONTAINER", "STATE", "HEALTH"], &rows);
}

async fn status(c: &Client, name: &str) -> Result<ExitCode, ClientError> {
    let st: StatusView = c
        .get(&format!("/api/v1/stacks/{}/status", seg(name)))
        .await?;
    if c.json {
        print_json(&st);
    } else {
        println!("stack {name} on {}", st.host);
        print_status(&st);
    }
    Ok(ExitCode::SUCCESS)
}
