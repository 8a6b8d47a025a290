//! `dockmesh upgrade apply`: the server's own upgrade, hop by hop along the plan `upgrade plan`
//! recommends through the signed binaries of a releases directory, resumable.
//!
//! Each hop `FROM → TO` goes through the stages `backed_up` (a verified bundle
//! `<data-dir>/backups/pre-upgrade-TO.tar.zst`, taken by the installed binary, which records it
//! in the audit log as `server.backup` by `dockmesh upgrade apply`), `swapped` (the
//! release's size, SHA-256 and signature checked, its `--version` is `dockmesh TO`; the installed
//! binary kept as `<binary>.previous-FROM` and the new one renamed over it), `migrated` (`<binary>
//! db migrate`), `checked` (`db status --json` up to date, `version --json` is TO) and `done`.
//! Every stage is recorded in `<data-dir>/upgrade-run.json` (temp file + rename) before the next
//! one starts, so the same command run again after an interruption continues from there; a hop
//! `done` is skipped. A different `--to` while a run is unfinished is refused.
//!
//! A hop that fails puts the previous binary back and, once the binary was swapped, restores the
//! bundle taken before it (with the previous binary's `restore --force`), records `failed` with
//! the reason and exits 1; running the command again retries that hop. Input that cannot be used
//! (a bad version, no plan, a release missing or refused, an unreadable key, a server holding the
//! database) is refused before anything changes: exit 2.
//!
//! Every database operation runs through the binary installed at that moment (backup and restore
//! by the hop's FROM binary, migration and checks by its TO binary): each knows its own schema.

use super::super::backup::{BACKUP_BY_ENV, BY_UPGRADE_APPLY};
use super::super::db::{self, Location};
use super::apply_files::{
    Catalog, RunRecord, Stage, load_run, new_run, previous_path, save_run, swap, sync_dir,
};
use super::binary::{self, said_version};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use dockmesh_core::version::Version;
use dockmesh_http::channel::agent_binaries::{self as release, VerifyingKey};
use dockmesh_sqlx::{DbTarget, SchemaReport, SchemaStatus, ServerLock, SqlStoreError};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The file, in the data directory, that records a run's progress.
pub const RUN_FILE: &str = "upgrade-run.json";

/// `dockmesh upgrade apply --to VERSION --releases DIR --release-key PUB`
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The version to upgrade the server to (from this binary's version).
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// The directory of signed server binaries (`FILE` beside `FILE.release.json`, as `dockmesh
    /// release sign` writes them); the releases known are the versions found there.
    #[arg(long, value_name = "DIR")]
    pub releases: PathBuf,
    /// The public release key the binaries must be signed with.
    #[arg(long = "release-key", value_name = "PUB")]
    pub release_key: PathBuf,
    /// The installed server binary to upgrade (by default this executable).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// The database and the data directory (which holds `upgrade-run.json` and `backups/`).
    #[command(flatten)]
    pub location: Location,
    /// The rule preset: `dtr` or `k8s` (as for `upgrade check`).
    #[arg(long, default_value = "dtr", value_name = "dtr|k8s")]
    pub rules: String,
    /// Print one JSON object at the end instead of a line per step.
    #[arg(long)]
    pub json: bool,
}

/// Lines printed as they happen (unless `--json`), kept for the JSON object.
struct Out {
    json: bool,
    steps: Vec<String>,
}

impl Out {
    fn say(&mut self, line: String) {
        if !self.json {
            println!("{line}");
        }
        self.steps.push(line);
    }
}

/// Why a hop stopped: refused before its stage changed anything (exit 2), or failed (undone,
/// exit 1).
enum Stop {
    Refused(anyhow::Error),
    Failed(String),
}

/// Run `dockmesh upgrade apply`.
pub fn run(args: ApplyArgs) -> ExitCode {
    let mut out = Out {
        json: args.json,
        steps: Vec::new(),
    };
    match apply(&args, &mut out) {
        Ok((code, object)) => {
            if args.json {
                println!("{object}");
            }
            ExitCode::from(code)
        }
        Err(err) => {
            let message = format!("{err:#}");
            eprintln!("error: {message}");
            if args.json {
                println!(
                    "{}",
                    json!({ "result": "error", "error": message, "steps": out.steps })
                );
            }
            ExitCode::from(2)
        }
    }
}

/// Everything one run needs.
struct Ctx<'a> {
    binary: PathBuf,
    location: &'a Location,
    catalog: Catalog,
    key: VerifyingKey,
    run_path: PathBuf,
    backups: PathBuf,
}

fn apply(args: &ApplyArgs, out: &mut Out) -> anyhow::Result<(u8, Value)> {
    let p = super::target(&args.to, &args.rules)?;
    let pem = std::fs::read_to_string(&args.release_key).with_context(|| {
        format!(
            "cannot read the release key {}; nothing was changed",
            args.release_key.display()
        )
    })?;
    let key = release::parse_public(&pem, &args.release_key.display().to_string())?;
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this executable (give --binary)")?,
    };
    let binary = binary::existing(&binary, "the binary to upgrade")?;
    let target = args.location.target()?;
    let data_dir = args.location.data_dir.clone();
    if let DbTarget::Sqlite { path } = &target
        && !path.is_file()
    {
        bail!(
            "no database at {}: nothing to upgrade (give the server's --data-dir or \
             --database-url)",
            path.display()
        );
    }
    db::private_dir(&data_dir, "the data directory")?;
    let catalog = Catalog::read(&args.releases)?;

    let rt = db::runtime()?;
    let lock = match rt.block_on(ServerLock::acquire(&target, "dockmesh upgrade apply")) {
        Ok(lock) => lock,
        Err(e @ SqlStoreError::Locked { .. }) => bail!(
            "{e}: stop the server first (the upgrade replaces its binary and migrates its \
             database), then run the same command again"
        ),
        Err(e) => return Err(e.into()),
    };

    let ctx = Ctx {
        binary: binary.clone(),
        location: &args.location,
        catalog,
        key,
        run_path: data_dir.join(RUN_FILE),
        backups: data_dir.join("backups"),
    };
    let existing = load_run(&ctx.run_path)?;
    let mut run = match existing {
        Some(run) if !run.finished() => {
            let recorded = Version::parse(&run.target)
                .with_context(|| format!("{}: the target", ctx.run_path.display()))?;
            if recorded != p.to {
                bail!(
                    "{} is unfinished ({}): finish it by running `dockmesh upgrade apply --to {}` \
                     again, or move it aside; nothing was changed",
                    run.where_it_stands(),
                    ctx.run_path.display(),
                    run.target
                );
            }
            if run.binary != binary {
                bail!(
                    "{} upgrades {}, not {}: give --binary {}; nothing was changed",
                    run.where_it_stands(),
                    run.binary.display(),
                    binary.display(),
                    run.binary.display()
                );
            }
            out.say(format!(
                "resuming {} from {}",
                run.where_it_stands(),
                ctx.run_path.display()
            ));
            run
        }
        Some(run) if Version::parse(&run.target).ok().as_ref() == Some(&p.to) => {
            out.say(format!(
                "nothing to do: {} is done ({})",
                run.where_it_stands(),
                ctx.run_path.display()
            ));
            return Ok((0, summary_json("nothing_to_do", &run, &ctx, out)));
        }
        _ => {
            if p.to < p.from {
                bail!(
                    "{} is older than this binary's {}: `upgrade apply` only upgrades; to go \
                     back, restore a backup taken before the upgrade with the older binary \
                     (`restore --force --from BUNDLE`); nothing was changed",
                    p.to,
                    p.from
                );
            }
            let plan = p.plan(&ctx.catalog.versions(), false).map_err(|e| {
                anyhow!(
                    "no plan from {} to {} through the releases in {} ({}): {e}; nothing was \
                     changed",
                    p.from,
                    p.to,
                    ctx.catalog.dir.display(),
                    ctx.catalog.listing()
                )
            })?;
            if plan.is_empty() {
                out.say(format!("nothing to do: {} is already {}", p.from, p.to));
                return Ok((
                    0,
                    json!({ "result": "nothing_to_do", "from": p.from, "to": p.to, "hops": [],
                            "steps": out.steps }),
                ));
            }
            let said = said_version(&binary).map_err(|e| anyhow!("{e:#}; nothing was changed"))?;
            if said != p.from {
                bail!(
                    "{} says `dockmesh {said}`, but the plan starts from {} (this binary's \
                     version): give the installed server binary with --binary; nothing was \
                     changed",
                    binary.display(),
                    p.from
                );
            }
            new_run(&p.to, &p.rules_name, &binary, &plan.hops)
        }
    };

    // Every release still to be installed is checked before anything changes.
    for hop in run.hops.iter().filter(|h| h.stage != Stage::Done) {
        let to = Version::parse(&hop.to).context("a hop of the recorded run")?;
        ctx.catalog
            .verify(&to, &ctx.key)
            .map_err(|e| anyhow!("{e}; nothing was changed"))?;
    }
    let plan_words: Vec<String> = run
        .hops
        .iter()
        .map(|h| format!("{} → {}", h.from, h.to))
        .collect();
    out.say(format!(
        "plan: {} hop(s): {} ({} rules); progress in {}",
        run.hops.len(),
        plan_words.join(", "),
        run.rules,
        ctx.run_path.display()
    ));
    run.result = "running".into();
    save_run(&ctx.run_path, &run)?;

    let mut lock = Some(lock);
    for i in 0..run.hops.len() {
        if run.hops[i].stage == Stage::Done {
            out.say(format!(
                "hop {} → {}: already done, skipped",
                run.hops[i].from, run.hops[i].to
            ));
            continue;
        }
        match run_hop(&ctx, &mut run, i, out) {
            Ok(()) => {}
            Err(Stop::Refused(e)) => return Err(e),
            Err(Stop::Failed(reason)) => {
                if let Some(l) = lock.take() {
                    rt.block_on(l.release());
                }
                undo(&ctx, &mut run, i, &reason, out);
                let hop = &run.hops[i];
                let state = if hop.undone.iter().any(|u| u.contains("FAILED")) {
                    "undoing it did not complete (see above): finish it by hand before running \
                     the same command again"
                        .to_owned()
                } else {
                    format!(
                        "the installed binary is {} again; fix the cause and run the same command \
                         to retry the hop",
                        hop.from
                    )
                };
                out.say(format!(
                    "upgrade to {} failed at hop {} → {}: {reason}; {state}",
                    run.target, hop.from, hop.to
                ));
                return Ok((1, summary_json("failed", &run, &ctx, out)));
            }
        }
    }
    run.result = "done".into();
    save_run(&ctx.run_path, &run)?;
    if let Some(l) = lock.take() {
        rt.block_on(l.release());
    }
    out.say(format!(
        "upgraded to {}: {} hop(s) ({}); previous binaries kept beside {}, backups in {}",
        run.target,
        run.hops.len(),
        plan_words.join(", "),
        ctx.binary.display(),
        ctx.backups.display()
    ));
    Ok((0, summary_json("done", &run, &ctx, out)))
}

fn summary_json(result: &str, run: &RunRecord, ctx: &Ctx<'_>, out: &Out) -> Value {
    json!({
        "result": result,
        "from": run.hops.first().map(|h| h.from.clone()),
        "to": run.target,
        "binary": ctx.binary,
        "run_file": ctx.run_path,
        "hops": run.hops,
        "steps": out.steps,
    })
}

/// Take hop `i` from its recorded stage to `done`, recording each stage.
fn run_hop(ctx: &Ctx<'_>, run: &mut RunRecord, i: usize, out: &mut Out) -> Result<(), Stop> {
    let (from, to) = (run.hops[i].from.clone(), run.hops[i].to.clone());
    let name = format!("hop {from} → {to}");
    let to_v = Version::parse(&to).map_err(|e| Stop::Refused(e.into()))?;
    let from_v = Version::parse(&from).map_err(|e| Stop::Refused(e.into()))?;
    match run.hops[i].stage {
        Stage::Pending | Stage::Failed => {}
        stage => out.say(format!("{name}: resuming after {}", stage.word())),
    }
    loop {
        let hop = &mut run.hops[i];
        match hop.stage {
            Stage::Pending | Stage::Failed => {
                // The installed binary must be the hop's FROM: anything else is not this hop
                // to start (a failed undo, or a binary replaced by hand).
                let said = said_version(&ctx.binary).map_err(Stop::Refused)?;
                if said != from_v {
                    return Err(Stop::Refused(anyhow!(
                        "{name}: {} says `dockmesh {said}`, not `dockmesh {from}`; put the \
                         {from} binary back (see {}) and run the command again",
                        ctx.binary.display(),
                        ctx.run_path.display()
                    )));
                }
                hop.error = None;
                hop.undone.clear();
                hop.previous = None;
                let bundle = ctx.backups.join(format!("pre-upgrade-{to}.tar.zst"));
                take_backup(ctx, &bundle).map_err(|e| Stop::Failed(format!("backup: {e:#}")))?;
                hop.backup = Some(bundle.clone());
                hop.stage = Stage::BackedUp;
                out.say(format!("{name}: backup {} verified", bundle.display()));
            }
            Stage::BackedUp => {
                let (meta, path) = ctx
                    .catalog
                    .verify(&to_v, &ctx.key)
                    .map_err(|e| Stop::Failed(format!("release: {e}")))?;
                let previous = previous_path(&ctx.binary, &from);
                let said = swap(&ctx.binary, &path, &previous, &meta, &to_v)
                    .map_err(|e| Stop::Failed(format!("{e:#}")))?;
                out.say(format!(
                    "{name}: release {} verified ({} bytes, sha256 {}, signed by {}{said})",
                    path.display(),
                    meta.size,
                    &meta.sha256[..16.min(meta.sha256.len())],
                    release::fingerprint(&ctx.key)
                ));
                hop.previous = Some(previous.clone());
                hop.stage = Stage::Swapped;
                out.say(format!(
                    "{name}: swapped {} (previous kept as {})",
                    ctx.binary.display(),
                    previous.display()
                ));
            }
            Stage::Swapped => {
                let said = binary::run(&ctx.binary, &["db", "migrate"], Some(ctx.location))
                    .map_err(|e| Stop::Failed(format!("migrate: {e:#}")))?;
                hop.stage = Stage::Migrated;
                let first = said.lines().next().unwrap_or("migrated").trim().to_owned();
                out.say(format!("{name}: migrated: {first}"));
            }
            Stage::Migrated => {
                let detail =
                    check(ctx, &to_v).map_err(|e| Stop::Failed(format!("check: {e:#}")))?;
                hop.stage = Stage::Checked;
                out.say(format!("{name}: checked: {detail}"));
            }
            Stage::Checked => {
                hop.stage = Stage::Done;
                save_run(&ctx.run_path, run).map_err(Stop::Refused)?;
                out.say(format!("{name}: done"));
                return Ok(());
            }
            Stage::Done => return Ok(()),
        }
        save_run(&ctx.run_path, run).map_err(Stop::Refused)?;
    }
}

/// After hop `i` failed: put the previous binary back and, once the binary was swapped,
/// restore the bundle taken before the hop; record `failed`.
fn undo(ctx: &Ctx<'_>, run: &mut RunRecord, i: usize, reason: &str, out: &mut Out) {
    let hop = &mut run.hops[i];
    let name = format!("hop {} → {}", hop.from, hop.to);
    out.say(format!(
        "{name}: FAILED after {}: {reason}",
        hop.stage.word()
    ));
    let mut undone = Vec::new();
    if hop.stage >= Stage::Swapped {
        match &hop.previous {
            Some(previous) if previous.is_file() => {
                match std::fs::rename(previous, &ctx.binary).and_then(|()| sync_dir(&ctx.binary)) {
                    Ok(()) => undone.push(format!(
                        "put the previous binary back: {} → {}",
                        previous.display(),
                        ctx.binary.display()
                    )),
                    Err(e) => undone.push(format!(
                        "putting the previous binary {} back FAILED: {e}",
                        previous.display()
                    )),
                }
            }
            _ => undone.push(format!(
                "the previous binary was not found ({}): {} was left as it is",
                hop.previous
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "not recorded".into()),
                ctx.binary.display()
            )),
        }
        match &hop.backup {
            Some(bundle) => {
                let args = [
                    "restore",
                    "--force",
                    "--from",
                    bundle.to_str().unwrap_or_default(),
                ];
                match binary::run(&ctx.binary, &args, Some(ctx.location)) {
                    Ok(_) => undone.push(format!(
                        "restored the database (and stacks, CA) from {}",
                        bundle.display()
                    )),
                    Err(e) => undone.push(format!(
                        "restoring {} FAILED: {e:#}; restore it by hand: `{} restore --force \
                         --from {}`",
                        bundle.display(),
                        ctx.binary.display(),
                        bundle.display()
                    )),
                }
            }
            None => undone.push("no backup was recorded: the database was left as it is".into()),
        }
    } else {
        undone.push(
            "nothing was swapped or migrated: the binary and the database are as before".into(),
        );
    }
    for line in &undone {
        out.say(format!("{name}: {line}"));
    }
    hop.error = Some(reason.to_owned());
    hop.undone = undone;
    hop.stage = Stage::Failed;
    run.result = "failed".into();
    if let Err(e) = save_run(&ctx.run_path, run) {
        out.say(format!("recording the failure FAILED: {e:#}"));
    }
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
