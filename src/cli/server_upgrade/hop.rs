//! One hop of `upgrade apply`, driven by core's `HopState`: the machine says what is next
//! (backup, swap, migrate, check, finish), this module does it with the installed binary and
//! the files, records the new state before the next step, and on a failure carries out the
//! undo the machine names.

use super::super::backup::{BACKUP_BY_ENV, BY_UPGRADE_APPLY};
use super::apply::{Ctx, Out};
use super::apply_files::{save_run, swap};
use super::binary::{self, said_version};
use anyhow::{Context, anyhow, bail};
use dockmesh_core::server_upgrade::{
    Failing, HopCommand, HopState, Paths, RunRecord, RunResult, Stage, Undo,
};
use dockmesh_core::version::Version;
use dockmesh_http::channel::agent_binaries as release;
use dockmesh_http::channel::files;
use dockmesh_sqlx::{SchemaReport, SchemaStatus};
use serde_json::Value;
use std::path::Path;

/// Why a hop stopped: refused before its stage changed anything (exit 2), or failed (to be
/// undone, exit 1).
pub(super) enum Stop {
    Refused(anyhow::Error),
    Failed(Box<Failure>),
}

/// A hop that failed: why, and what to undo.
pub(super) struct Failure {
    pub(super) reason: String,
    failing: Failing,
    undo: Undo,
}

/// Why a step stopped.
enum StepError {
    /// Nothing was changed and the hop is not this one to take: refused.
    Refused(anyhow::Error),
    /// The step failed: the hop is undone.
    Failed(String),
}

/// Take hop `i` from its recorded stage to `done`, recording each stage before the next.
pub(super) fn run_hop(
    ctx: &Ctx<'_>,
    run: &mut RunRecord,
    i: usize,
    out: &mut Out,
) -> Result<(), Stop> {
    let mut state = HopState::from_record(&run.hops[i]).map_err(|e| Stop::Refused(e.into()))?;
    let ends = state.ends().clone();
    let name = format!("hop {} → {}", ends.from, ends.to);
    let from = Version::parse(&ends.from).map_err(|e| Stop::Refused(e.into()))?;
    let to = Version::parse(&ends.to).map_err(|e| Stop::Refused(e.into()))?;
    match state.stage() {
        Stage::Pending | Stage::Failed => {}
        stage => out.say(format!("{name}: resuming after {}", stage.word())),
    }
    let paths = Paths {
        binary: &ctx.binary,
        backups: &ctx.backups,
    };
    while let Some(command) = state.next(paths) {
        match step(ctx, &name, (&from, &to), &command, out) {
            Ok(()) => {}
            Err(StepError::Refused(e)) => return Err(Stop::Refused(e)),
            Err(StepError::Failed(reason)) => {
                let (failing, undo) = state
                    .fail(reason.clone())
                    .map_err(|e| Stop::Refused(e.into()))?;
                return Err(Stop::Failed(Box::new(Failure {
                    reason,
                    failing,
                    undo,
                })));
            }
        }
        let finished = command == HopCommand::Finish;
        state = state
            .succeeded(command)
            .map_err(|e| Stop::Refused(e.into()))?;
        run.hops[i] = state.record();
        save_run(&ctx.run_path, run).map_err(Stop::Refused)?;
        if finished {
            out.say(format!("{name}: done"));
        }
    }
    Ok(())
}

/// Carry out `command` of the hop `name` (`FROM → TO`).
fn step(
    ctx: &Ctx<'_>,
    name: &str,
    (from, to): (&Version, &Version),
    command: &HopCommand,
    out: &mut Out,
) -> Result<(), StepError> {
    let failed = |what: &str, e: anyhow::Error| StepError::Failed(format!("{what}{e:#}"));
    match command {
        HopCommand::Backup { bundle, .. } => {
            // The installed binary must be the hop's FROM: anything else is not this hop to
            // start (a failed undo, or a binary replaced by hand).
            let said = said_version(&ctx.binary).map_err(StepError::Refused)?;
            if &said != from {
                return Err(StepError::Refused(anyhow!(
                    "{name}: {} says `dockmesh {said}`, not `dockmesh {from}`; put the {from} \
                     binary back (see {}) and run the command again",
                    ctx.binary.display(),
                    ctx.run_path.display()
                )));
            }
            take_backup(ctx, bundle).map_err(|e| failed("backup: ", e))?;
            out.say(format!("{name}: backup {} verified", bundle.display()));
        }
        HopCommand::Swap { previous, .. } => {
            let (meta, path) = ctx
                .catalog
                .verify(to, &ctx.key)
                .map_err(|e| failed("release: ", e))?;
            let said = swap(&ctx.binary, &path, previous, &meta, to).map_err(|e| failed("", e))?;
            out.say(format!(
                "{name}: release {} verified ({} bytes, sha256 {}, signed by {}{said})",
                path.display(),
                meta.size,
                &meta.sha256[..16.min(meta.sha256.len())],
                release::fingerprint(&ctx.key)
            ));
            out.say(format!(
                "{name}: swapped {} (previous kept as {})",
                ctx.binary.display(),
                previous.display()
            ));
        }
        HopCommand::Migrate => {
            let said = binary::run(&ctx.binary, &["db", "migrate"], Some(ctx.location))
                .map_err(|e| failed("migrate: ", e))?;
            let first = said.lines().next().unwrap_or("migrated").trim().to_owned();
            out.say(format!("{name}: migrated: {first}"));
        }
        HopCommand::Check { .. } => {
            let detail = check(ctx, to).map_err(|e| failed("check: ", e))?;
            out.say(format!("{name}: checked: {detail}"));
        }
        HopCommand::Finish => {}
    }
    Ok(())
}

/// After hop `i` failed: carry out the undo (put the previous binary back and restore the
/// bundle taken before the hop, or nothing before the swap); record `failed`.
pub(super) fn undo(ctx: &Ctx<'_>, run: &mut RunRecord, i: usize, failure: Failure, out: &mut Out) {
    let Failure {
        reason,
        failing,
        undo,
    } = failure;
    let name = format!("hop {} → {}", run.hops[i].from, run.hops[i].to);
    out.say(format!(
        "{name}: FAILED after {}: {reason}",
        failing.after().word()
    ));
    let mut undone = Vec::new();
    match undo {
        Undo::Restore { previous, backup } => {
            if previous.is_file() {
                match put_back(&previous, &ctx.binary) {
                    Ok(()) => undone.push(format!(
                        "put the previous binary back: {} → {}",
                        previous.display(),
                        ctx.binary.display()
                    )),
                    Err(e) => undone.push(format!(
                        "putting the previous binary {} back FAILED: {e:#}",
                        previous.display()
                    )),
                }
            } else {
                undone.push(format!(
                    "the previous binary was not found ({}): {} was left as it is",
                    previous.display(),
                    ctx.binary.display()
                ));
            }
            let from = backup.to_str().unwrap_or_default();
            match binary::run(
                &ctx.binary,
                &["restore", "--force", "--from", from],
                Some(ctx.location),
            ) {
                Ok(_) => undone.push(format!(
                    "restored the database (and stacks, CA) from {}",
                    backup.display()
                )),
                Err(e) => undone.push(format!(
                    "restoring {} FAILED: {e:#}; restore it by hand: `{} restore --force \
                     --from {}`",
                    backup.display(),
                    ctx.binary.display(),
                    backup.display()
                )),
            }
        }
        Undo::Nothing => undone.push(
            "nothing was swapped or migrated: the binary and the database are as before".into(),
        ),
    }
    for line in &undone {
        out.say(format!("{name}: {line}"));
    }
    run.hops[i] = failing.undone(undone).record();
    run.result = RunResult::Failed;
    if let Err(e) = save_run(&ctx.run_path, run) {
        out.say(format!("recording the failure FAILED: {e:#}"));
    }
}

/// Rename `previous` over `binary` and fsync the directory.
fn put_back(previous: &Path, binary: &Path) -> anyhow::Result<()> {
    std::fs::rename(previous, binary)?;
    files::sync_dir(binary.parent().unwrap_or(Path::new("/")))?;
    Ok(())
}

/// A bundle by the installed binary (`backup --out`), then verified by it (`restore --dry-run`).
fn take_backup(ctx: &Ctx<'_>, bundle: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(&ctx.backups)
        .with_context(|| format!("creating {}", ctx.backups.display()))?;
    let path = bundle.to_str().context("the backups path is not UTF-8")?;
    // The bundle's `server.backup` audit entry names this command as the one that took it.
    let args = ["backup", "--out", path];
    let mut backup = binary::command(&ctx.binary, &args, Some(ctx.location));
    backup.env(BACKUP_BY_ENV, BY_UPGRADE_APPLY);
    binary::run_command(backup, &ctx.binary, &args)?;
    binary::run(
        &ctx.binary,
        &["restore", "--dry-run", "--force", "--from", path],
        Some(ctx.location),
    )
    .with_context(|| format!("{} does not verify", bundle.display()))?;
    Ok(())
}

/// `db status --json` up to date and `version --json` naming `to`.
fn check(ctx: &Ctx<'_>, to: &Version) -> anyhow::Result<String> {
    let said = binary::run(&ctx.binary, &["db", "status", "--json"], Some(ctx.location))?;
    let report: SchemaReport = serde_json::from_str(&said)
        .map_err(|e| anyhow!("`db status --json` printed no schema report ({e})"))?;
    if report.status != SchemaStatus::UpToDate {
        bail!(
            "the schema is not up to date after the migration: {}",
            report
                .refusal
                .clone()
                .unwrap_or_else(|| format!("{:?}", report.status))
        );
    }
    let said = binary::run(&ctx.binary, &["version", "--json"], None)?;
    let info: Value = serde_json::from_str(&said)
        .map_err(|e| anyhow!("`version --json` printed no JSON object ({e})"))?;
    match info["version"].as_str().map(Version::parse) {
        Some(Ok(v)) if &v == to => Ok(format!(
            "schema up to date (version {}), `version --json` says {v}",
            report.database_version
        )),
        _ => bail!(
            "`version --json` says {}, not version {to}",
            info["version"]
        ),
    }
}
