//! `dockmesh migration ls|show|rollback|purge-source`, and following a migration's progress
//! (bars per volume on a terminal, plain lines otherwise).

use super::client::{Client, ClientError, Conn, block_on, bytes, print_json, print_table, seg};
use clap::Subcommand;
use dockmesh_http::server::api::migrations::MigrationView;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// `dockmesh migration …`
#[derive(Debug, Subcommand)]
pub enum MigrationCommand {
    /// List migrations, newest first.
    Ls {
        /// Only those in progress.
        #[arg(long)]
        active: bool,
        /// Only this stack's.
        #[arg(long)]
        stack: Option<String>,
    },
    /// One migration: state, volumes, error, retention deadline, events.
    Show {
        /// The migration id.
        id: String,
    },
    /// Roll a committed migration back (inside its retention window, before a purge).
    Rollback {
        /// The migration id.
        id: String,
        /// Return at once instead of following the rollback.
        #[arg(long)]
        detach: bool,
    },
    /// Delete the stopped copy a rolled-back migration left on its target (containers,
    /// volumes, files there), so that the stack can move to that host again.
    PurgeTarget {
        /// The migration id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Delete the source a committed migration kept: containers, volumes and files on the
    /// source host. A rollback is impossible afterwards.
    PurgeSource {
        /// The migration id.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Run `dockmesh migration …`.
pub fn run(cmd: MigrationCommand, conn: Conn) -> ExitCode {
    block_on(async move {
        let c = Client::new(&conn)?;
        match cmd {
            MigrationCommand::Ls { active, stack } => {
                let mut path = format!("/api/v1/migrations?active={active}");
                if let Some(s) = stack {
                    path.push_str(&format!("&stack={}", seg(&s)));
                }
                let list: Vec<MigrationView> = c.get(&path).await?;
                if c.json {
                    print_json(&list);
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|m| {
                            vec![
                                m.id.clone(),
                                m.stack.clone(),
                                format!("{} -> {}", m.source, m.target),
                                m.state.clone(),
                                m.requested_at.to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["ID", "STACK", "MOVE", "STATE", "REQUESTED"], &rows);
                }
                Ok(ExitCode::SUCCESS)
            }
            MigrationCommand::Show { id } => {
                let m: MigrationView = c.get(&format!("/api/v1/migrations/{}", seg(&id))).await?;
                if c.json {
                    print_json(&m);
                } else {
                    print_migration(&m);
                }
                Ok(ExitCode::SUCCESS)
            }
            MigrationCommand::Rollback { id, detach } => {
                let m: MigrationView = c
                    .post(&format!("/api/v1/migrations/{}/rollback", seg(&id)), &())
                    .await?;
                let m = if detach { m } else { follow(&c, &m.id).await? };
                if c.json {
                    print_json(&m);
                } else {
                    print_migration(&m);
                }
                Ok(settled_ok(&m, "rolled_back", detach))
            }
            MigrationCommand::PurgeTarget { id, yes } => {
                let m: MigrationView = c.get(&format!("/api/v1/migrations/{}", seg(&id))).await?;
                if !yes {
                    let what = format!(
                        "Delete the stopped copy of stack {} on host {} (its containers, its volumes {} and its files)? Data written there after the migration is lost.",
                        m.stack,
                        m.target,
                        m.volumes
                            .iter()
                            .map(|v| v.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                    if !super::stack::confirm(&what)? {
                        eprintln!("nothing was deleted");
                        return Ok(ExitCode::from(1));
                    }
                }
                let m: MigrationView = super::client::decode(
                    c.send::<()>(
                        Method::DELETE,
                        &format!("/api/v1/migrations/{}/target", seg(&m.id)),
                        None,
                    )
                    .await?,
                )?;
                if c.json {
                    print_json(&m);
                } else {
                    println!("the copy of {} on {} was removed", m.stack, m.target);
                }
                Ok(ExitCode::SUCCESS)
            }
            MigrationCommand::PurgeSource { id, yes } => {
                let m: MigrationView = c.get(&format!("/api/v1/migrations/{}", seg(&id))).await?;
                if !yes {
                    let what = format!(
                        "Delete stack {} on host {} (its containers, its volumes {} and its files)? This cannot be undone, and migration {} can no longer be rolled back.",
                        m.stack,
                        m.source,
                        m.volumes
                            .iter()
                            .map(|v| v.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        m.id
                    );
                    if !super::stack::confirm(&what)? {
                        eprintln!("nothing was deleted");
                        return Ok(ExitCode::from(1));
                    }
                }
                let m: MigrationView = super::client::decode(
                    c.send::<()>(
                        Method::DELETE,
                        &format!(
                            "/api/v1/stacks/{}/migrate/{}/source",
                            seg(&m.stack),
                            seg(&m.id)
                        ),
                        None,
                    )
                    .await?,
                )?;
                let m = follow(&c, &m.id).await?;
                if c.json {
                    print_json(&m);
                } else {
                    print_migration(&m);
                }
                Ok(settled_ok(&m, "purged", false))
            }
        }
    })
}

fn settled_ok(m: &MigrationView, want: &str, detached: bool) -> ExitCode {
    if detached || m.state == want {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Print a migration for people.
pub fn print_migration(m: &MigrationView) {
    println!("migration {}", m.id);
    println!("  stack:      {}", m.stack);
    println!("  move:       {} -> {}", m.source, m.target);
    println!("  state:      {}", m.state);
    if let Some(step) = &m.step {
        println!("  next:       {step}");
    }
    println!("  requested:  {} by {}", m.requested_at, m.requested_by);
    println!("  updated:    {}", m.updated_at);
    for v in &m.volumes {
        println!(
            "  volume {}: {} of {}{}",
            v.name,
            bytes(v.bytes_done),
            v.size_bytes.map(bytes).unwrap_or_else(|| "?".into()),
            if v.verified { ", verified" } else { "" }
        );
    }
    if let Some(e) = &m.error {
        println!("  error:      {} failed: {}", e.step, e.reason);
    }
    if let Some(t) = &m.timeline {
        println!("  timeline:   {}", t.summary);
        for s in &t.steps {
            println!(
                "    {:<14} {:>9} ms{}{}",
                s.step,
                s.duration_ms,
                s.volume
                    .as_deref()
                    .map(|v| format!("  {v}"))
                    .unwrap_or_default(),
                if s.failed { "  failed" } else { "" }
            );
        }
    }
    if let Some(t) = m.retain_until {
        println!(
            "  source kept until {t}{}",
            if m.retention_expired {
                " (window ended; the source is still kept until purged)"
            } else {
                " (rollback possible until then)"
            }
        );
    }
    if let Some(events) = &m.events {
        println!("  events:");
        for e in events {
            println!("    {}  {}", e.at, e.kind);
        }
    }
}

/// Poll a migration until it settles, showing progress; returns its final view.
pub async fn follow(c: &Client, id: &str) -> Result<MigrationView, ClientError> {
    let tty = std::io::stderr().is_terminal() && !c.json;
    let multi = MultiProgress::with_draw_target(if tty {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut last_state = String::new();
    loop {
        let m: MigrationView = c.get(&format!("/api/v1/migrations/{}", seg(id))).await?;
        if m.state != last_state {
            let line = format!(
                "{}{}",
                m.state,
                m.step
                    .as_ref()
                    .map(|s| format!(" (next: {s})"))
                    .unwrap_or_default()
            );
            if tty {
                let _ = multi.println(line);
            } else if !c.json {
                eprintln!("{line}");
            }
            last_state = m.state.clone();
        }
        for v in &m.volumes {
            let bar = bars.entry(v.name.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(v.size_bytes.unwrap_or(0)));
                b.set_style(style.clone());
                b.set_prefix(v.name.clone());
                b
            });
            if let Some(total) = v.size_bytes {
                bar.set_length(total.max(v.bytes_done));
            }
            bar.set_position(v.bytes_done);
            if v.verified && !bar.is_finished() {
                bar.finish();
                if !tty && !c.json {
                    eprintln!("volume {}: {} verified", v.name, bytes(v.bytes_done));
                }
            }
        }
        if m.settled {
            for b in bars.values() {
                b.finish();
            }
            return Ok(m);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
