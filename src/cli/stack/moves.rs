//! `dockmesh stack migrate|adopt`: moving a stack to another host (pre-flight, confirmation,
//! following the migration) and adopting one that runs unmanaged.

use super::read;
use crate::cli::client::{Client, ClientError, print_json, print_table, seg};
use crate::cli::migration::{follow, print_migration};
use dockmesh_http::server::api::migrations::MigrationView;
use dockmesh_http::server::api::stacks::AdoptView;
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

/// Print a pre-flight report as a table; returns whether it passed.
fn print_report(report: &Value) -> bool {
    let checks = report
        .get("checks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut passed = true;
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            if s("status") == "fail" {
                passed = false;
            }
            vec![s("name"), s("status").to_uppercase(), s("detail")]
        })
        .collect();
    print_table(&["CHECK", "RESULT", "DETAIL"], &rows);
    passed
}

/// Ask a yes/no question on the terminal; refused without one (pass --yes).
pub fn confirm(question: &str) -> Result<bool, ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Transport(
            "not asking for confirmation without a terminal: pass --yes".into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| ClientError::Transport(format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

pub(super) async fn migrate(
    c: &Client,
    name: &str,
    to: &str,
    yes: bool,
    detach: bool,
) -> Result<ExitCode, ClientError> {
    let body = json!({"target_host_id": to});
    let report: Value = c
        .post(
            &format!("/api/v1/stacks/{}/migrate/preflight", seg(name)),
            &body,
        )
        .await?;
    let passed = if c.json {
        report.get("checks").is_some_and(|cs| {
            cs.as_array()
                .is_some_and(|a| a.iter().all(|c| c.get("status") != Some(&json!("fail"))))
        })
    } else {
        println!("pre-flight of moving {name} to {to}:");
        print_report(&report)
    };
    if !passed {
        if c.json {
            print_json(&report);
        }
        eprintln!("error: pre-flight refused the move; nothing changed");
        return Ok(ExitCode::from(1));
    }
    if !yes
        && !confirm(&format!(
            "Stop {name} and move it with its volumes to {to}?"
        ))?
    {
        eprintln!("not migrated; nothing changed");
        return Ok(ExitCode::from(1));
    }
    let started: MigrationView = match c
        .post(&format!("/api/v1/stacks/{}/migrate", seg(name)), &body)
        .await
    {
        Ok(m) => m,
        Err(ClientError::Api {
            details: Some(report),
            error,
            ..
        }) => {
            if !c.json {
                print_report(&report);
            }
            eprintln!("error: {error}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e),
    };
    if !c.json {
        println!("migration {} started", started.id);
    }
    if detach {
        if c.json {
            print_json(&started);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(c, &started.id).await?;
    if c.json {
        print_json(&done);
    } else {
        print_migration(&done);
    }
    Ok(if done.state == "committed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) async fn adopt(
    c: &Client,
    name: &str,
    host: &str,
    file: Option<&std::path::Path>,
    env_file: Option<&std::path::Path>,
) -> Result<ExitCode, ClientError> {
    let body = json!({
        "compose": file.map(read).transpose()?,
        "env": env_file.map(read).transpose()?,
    });
    let v: AdoptView = c
        .post(
            &format!("/api/v1/hosts/{}/projects/{}/adopt", seg(host), seg(name)),
            &body,
        )
        .await?;
    if c.json {
        print_json(&v);
    } else {
        println!(
            "stack {name} adopted on {host}: {} container(s) kept as they run",
            v.containers.len()
        );
        if !v.renamed_on_next_deploy.is_empty() {
            println!(
                "the next deploy recreates these services' containers under dockmesh's names: {}",
                v.renamed_on_next_deploy.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
