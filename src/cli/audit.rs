//! `dockmesh audit ls|verify`.

use super::client::{Client, Conn, block_on, print_json, print_table, seg};
use clap::Subcommand;
use dockmesh_http::server::api::audit::{AuditPage, VerifyView};
use std::process::ExitCode;

/// `dockmesh audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit entries, newest first.
    Ls {
        /// Only this action (`migration.start`, `stack.deploy`, …).
        #[arg(long)]
        action: Option<String>,
        /// Only this target (a stack name, …).
        #[arg(long)]
        target: Option<String>,
        /// Only entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Entries below this sequence number (the cursor the previous page printed).
        #[arg(long)]
        before: Option<u64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Walk the hash chain: exit 0 when every link holds, 1 at the first broken one.
    Verify,
}

/// Run `dockmesh audit …`.
pub fn run(cmd: AuditCommand, conn: Conn) -> ExitCode {
    block_on(async move {
        let c = Client::new(&conn)?;
        match cmd {
            AuditCommand::Ls {
                action,
                target,
                since,
                until,
                before,
                limit,
            } => {
                let mut q = vec![format!("limit={limit}")];
                for (k, v) in [
                    ("action", action),
                    ("target", target),
                    ("since", since),
                    ("until", until),
                ] {
                    if let Some(v) = v {
                        q.push(format!("{k}={}", seg(&v)));
                    }
                }
                if let Some(b) = before {
                    q.push(format!("before={b}"));
                }
                let page: AuditPage = c.get(&format!("/api/v1/audit?{}", q.join("&"))).await?;
                if c.json {
                    print_json(&page);
                } else {
                    let rows: Vec<Vec<String>> = page
                        .entries
                        .iter()
                        .map(|e| {
                            vec![
                                e.seq.to_string(),
                                e.event.at.to_string(),
                                e.event.actor.clone(),
                                e.event.action.clone(),
                                e.event.target.clone(),
                                e.event
                                    .detail
                                    .iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(" "),
                            ]
                        })
                        .collect();
                    print_table(&["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL"], &rows);
                    if let Some(b) = page.next_before {
                        eprintln!("more: --before {b}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
            AuditCommand::Verify => {
                let v: VerifyView = c.get("/api/v1/audit/verify").await?;
                if c.json {
                    print_json(&v);
                } else if v.ok {
                    println!(
                        "audit chain intact: {} entries checked",
                        v.verification.entries_checked
                    );
                } else {
                    println!(
                        "audit chain BROKEN after {} entries: {:?}",
                        v.verification.entries_checked, v.verification.first_broken
                    );
                }
                Ok(if v.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
        }
    })
}
