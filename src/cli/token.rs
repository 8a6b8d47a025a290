//! `dockmesh token create|ls|revoke`: API tokens, made on the store directly (this is how the
//! first token of a fresh install is made). Only the SHA-256 of a secret is stored; the secret
//! is printed once.

use super::db::{Location, fail, runtime};
use anyhow::Context;
use clap::Subcommand;
use dockmesh_core::ports::prelude::*;
use dockmesh_core::records::{Scope, TokenKind};
use dockmesh_sqlx::{OpenOptions, SqlStore};
use std::process::ExitCode;

/// `dockmesh token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an API token and print its secret (shown only this once).
    Create {
        #[command(flatten)]
        location: Location,
        /// A name to recognise it by (audit entries name the token).
        #[arg(long, default_value = "admin")]
        name: String,
        /// What the token may do: `read` (GET only), `operate` (also migrate, roll back,
        /// purge, drain, cordon, upgrade agents) or `admin` (everything, including deploying
        /// new compose content, which is root on the target host).
        #[arg(long, default_value = "admin", value_parser = parse_scope)]
        scope: Scope,
        /// Print `{"name": …, "scope": …, "token": …}`.
        #[arg(long)]
        json: bool,
    },
    /// List API tokens (names, scopes and creation times; secrets are not stored).
    Ls {
        #[command(flatten)]
        location: Location,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke every API token of this name: requests carrying them are refused from now on.
    Revoke {
        #[command(flatten)]
        location: Location,
        /// The token's name.
        name: String,
    },
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    text.parse()
        .map_err(|e: dockmesh_core::records::UnknownScope| e.to_string())
}

async fn open(location: &Location) -> anyhow::Result<SqlStore> {
    let target = location.target()?;
    super::db::private_dir(&location.data_dir, "the data directory")?;
    let (store, _) =
        SqlStore::open_with(&target, &OpenOptions::in_data_dir(&location.data_dir)).await?;
    Ok(store)
}

/// Run `dockmesh token …`.
pub fn run(cmd: TokenCommand) -> ExitCode {
    super::db::init_logging();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(run_async(cmd)) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

async fn run_async(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            location,
            name,
            scope,
            json,
        } => {
            if name.trim().is_empty() {
                anyhow::bail!("--name: a token needs a name");
            }
            let store = open(&location).await?;
            let (secret, record) = dockmesh_http::server::auth::new_scoped_api_token(
                &name,
                scope,
                jiff::Timestamp::now(),
            )
            .context("drawing random bytes for the token")?;
            store.put_token(&record).await?;
            store.close().await;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "scope": scope, "token": secret})
                );
            } else {
                println!("{secret}");
                eprintln!(
                    "API token {name:?} of scope `{scope}` created; it is shown only now. Use it \
                     as `DOCKMESH_TOKEN={secret}` or `--token`."
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Ls { location, json } => {
            let store = open(&location).await?;
            let tokens: Vec<_> = store
                .list_tokens()
                .await?
                .into_iter()
                .filter(|t| t.kind == TokenKind::Api)
                .collect();
            store.close().await;
            if json {
                let list: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name,
                            "scope": t.scope,
                            "created_at": t.created_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for t in &tokens {
                    println!("{}\t{}\t{}", t.name, t.scope, t.created_at);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { location, name } => {
            let store = open(&location).await?;
            let doomed: Vec<_> = store
                .list_tokens()
                .await?
                .into_iter()
                .filter(|t| t.kind == TokenKind::Api && t.name == name)
                .collect();
            for t in &doomed {
                store.delete_token(&t.hash).await?;
            }
            store.close().await;
            if doomed.is_empty() {
                eprintln!("error: no API token is named {name:?}; nothing was revoked");
                return Ok(ExitCode::from(1));
            }
            println!("revoked {} API token(s) named {name:?}", doomed.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}
