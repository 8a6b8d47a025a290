//! The target binary's facts: what it says it is (`--version`, `version --json`), the schema
//! migrations it brings (`db status --json`, read only) and the agents its protocol accepts.

use super::super::super::db::Location;
use super::super::binary::{self, last_line};
use anyhow::anyhow;
use dockmesh_core::ports::prelude::*;
use dockmesh_core::preflight::{CheckResult, CheckStatus};
use dockmesh_core::protocol::{self, PROTOCOL_VERSION};
use dockmesh_core::server_upgrade::row;
use dockmesh_core::version::Version;
use dockmesh_http::channel::files::{BinaryVersion, ProbeError};
use dockmesh_sqlx::{DbTarget, SchemaReport, SchemaStatus, SqlStore};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the new binary says of itself.
pub(super) struct TargetBinary {
    path: PathBuf,
    /// What it says to `--version`, or why it could not be had.
    said: Result<BinaryVersion, ProbeError>,
    /// `version --json`, or why it could not be had.
    info: anyhow::Result<serde_json::Value>,
}

/// Run the new binary's `--version` and `version --json`. A binary that is not there or cannot
/// be started is bad input.
pub(super) fn probe(path: &Path) -> anyhow::Result<TargetBinary> {
    let path = binary::existing(path, "the target binary")?;
    let said = match binary::probe(&path) {
        Err(e @ ProbeError::Run { .. }) => {
            return Err(anyhow::Error::new(e).context("the target binary"));
        }
        said => said,
    };
    let info = match Command::new(&path).args(["version", "--json"]).output() {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout)
            .map_err(|e| anyhow!("`version --json` printed no JSON object ({e})")),
        Ok(o) => Err(anyhow!(
            "`version --json` exited with {}: {}",
            o.status,
            last_line(&o.stderr)
        )),
        Err(e) => Err(anyhow!("`version --json` could not be run: {e}")),
    };
    Ok(TargetBinary { path, said, info })
}

/// `schema`: the new binary says it is `--to`, and its `db status` over the same database tells
/// the migrations it brings (or its refusal).
pub(super) fn schema_check(
    binary: &TargetBinary,
    to: &Version,
    location: &Location,
) -> CheckResult {
    let name = "schema";
    let mut cmd = binary::command(&binary.path, &["db", "status", "--json"], Some(location));
    let (status, detail) = match cmd.output() {
        Err(e) => (
            CheckStatus::Fail,
            format!("`db status` could not be run: {e}"),
        ),
        Ok(o) => match serde_json::from_slice::<SchemaReport>(&o.stdout) {
            Ok(r) => schema_verdict(&r),
            Err(_) => (
                CheckStatus::Fail,
                format!(
                    "`db status --json` exited with {}: {}",
                    o.status,
                    last_line(&o.stderr)
                ),
            ),
        },
    };
    let says = |line: &str| {
        format!(
            "{} --version says `{line}`, not `dockmesh {to}`",
            binary.path.display()
        )
    };
    let wrong_version = match &binary.said {
        Ok(said) if &said.version == to => None,
        Ok(said) => Some(says(&said.line)),
        Err(ProbeError::NotAVersion { line, .. }) => Some(says(line)),
        Err(e) => Some(format!("{e}")),
    };
    match wrong_version {
        None => row(name, status, detail),
        Some(e) => row(name, CheckStatus::Fail, format!("{e}; {detail}")),
    }
}

/// What a target binary's `db status` report means for the upgrade.
fn schema_verdict(r: &SchemaReport) -> (CheckStatus, String) {
    match &r.status {
        SchemaStatus::UpToDate => (
            CheckStatus::Pass,
            format!(
                "no pending migrations: the database is at schema version {}, as the target",
                r.database_version
            ),
        ),
        SchemaStatus::Pending { versions } => {
            let list = |v: &[i64]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut detail = format!(
                "the target brings {} migration(s): {} (schema version {} -> {})",
                versions.len(),
                list(versions),
                r.database_version,
                r.binary_version
            );
            let irreversible: Vec<String> = r
                .irreversible_between
                .iter()
                .filter(|m| versions.contains(&m.version))
                .map(|m| format!("{} {} ({})", m.version, m.description, m.note))
                .collect();
            if irreversible.is_empty() {
                detail.push_str("; all reversible");
                (CheckStatus::Pass, detail)
            } else {
                detail.push_str(&format!(
                    "; irreversible: {} (going back needs the backup restored)",
                    irreversible.join("; ")
                ));
                (CheckStatus::Warn, detail)
            }
        }
        other => (
            CheckStatus::Fail,
            format!(
                "the target refuses the database: {}",
                r.refusal.clone().unwrap_or_else(|| format!("{other:?}"))
            ),
        ),
    }
}

/// `agents`: every stored agent whose protocol the target would not accept (core's rule:
/// N and N−1) is listed; they will need a manual upgrade.
pub(super) async fn agents_check(target: &DbTarget, binary: Option<&TargetBinary>) -> CheckResult {
    let name = "agents";
    let (proto, whose) = match binary.map(|b| &b.info) {
        None => (PROTOCOL_VERSION, "this binary's protocol".to_owned()),
        Some(Ok(info)) => match info.get("protocol").and_then(|p| p.as_u64()) {
            Some(p) => (
                u32::try_from(p).unwrap_or(u32::MAX),
                "the target's protocol".to_owned(),
            ),
            None => (
                PROTOCOL_VERSION,
                "this binary's protocol (the target's `version --json` names none)".to_owned(),
            ),
        },
        Some(Err(e)) => (
            PROTOCOL_VERSION,
            format!("this binary's protocol (the target's: {e:#})"),
        ),
    };
    let agents = async {
        let store = SqlStore::open_for_reading(target).await?;
        let agents = store.list_agents().await;
        store.close().await;
        Ok::<_, anyhow::Error>(agents?)
    }
    .await;
    let agents = match agents {
        Ok(a) => a,
        Err(e) => {
            return row(
                name,
                CheckStatus::Warn,
                format!("the agents could not be read: {e:#}"),
            );
        }
    };
    let out: Vec<String> = agents
        .iter()
        .filter(|a| !protocol::check(proto, a.protocol_version).accepted())
        .map(|a| {
            format!(
                "{} ({}, version {}, protocol {})",
                a.name,
                a.id.as_str(),
                a.version,
                a.protocol_version
            )
        })
        .collect();
    if out.is_empty() {
        row(
            name,
            CheckStatus::Pass,
            format!(
                "{} agent(s), all accepted by protocol {proto} ({whose})",
                agents.len()
            ),
        )
    } else {
        row(
            name,
            CheckStatus::Warn,
            format!(
                "{} of {} agent(s) would fall outside protocol {proto}'s window ({whose}): {}; \
                 they will need a manual upgrade",
                out.len(),
                agents.len(),
                out.join(", ")
            ),
        )
    }
}
