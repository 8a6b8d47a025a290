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
//!
//! Core's `server_upgrade` decides: whether a recorded run is continued (`resume`), the plan of a
//! new one (`run_plan`), each hop's next step and what to undo (`HopState`, driven in `hop.rs`).

use super::super::db::{self, Location};
use super::apply_files::{Catalog, load_run, save_run};
use super::binary::{self, said_version};
use super::hop::{self, Stop};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use dockmesh_core::server_upgrade::{
    HopState, Resume, RunPlanError, RunRecord, RunResult, Stage, Target, resume, run_plan,
};
use dockmesh_core::version::Version;
use dockmesh_http::channel::agent_binaries::{self as release, VerifyingKey};
use dockmesh_sqlx::{DbTarget, ServerLock, SqlStoreError};
use serde_json::{Value, json};
use std::path::PathBuf;
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
pub(super) struct Out {
    json: bool,
    steps: Vec<String>,
}

impl Out {
    pub(super) fn say(&mut self, line: String) {
        if !self.json {
            println!("{line}");
        }
        self.steps.push(line);
    }
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
pub(super) struct Ctx<'a> {
    pub(super) binary: PathBuf,
    pub(super) location: &'a Location,
    pub(super) catalog: Catalog,
    pub(super) key: VerifyingKey,
    pub(super) run_path: PathBuf,
    pub(super) backups: PathBuf,
}

fn apply(args: &ApplyArgs, out: &mut Out) -> anyhow::Result<(u8, Value)> {
    let t = super::target(&args.to, &args.rules)?;
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
        binary,
        location: &args.location,
        catalog,
        key,
        run_path: data_dir.join(RUN_FILE),
        backups: data_dir.join("backups"),
    };
    let mut run = match begin(&ctx, &t, out)? {
        Begin::Run(run) => run,
        Begin::Finished(outcome) => return Ok(outcome),
    };

    // Every release still to be installed is checked before anything changes.
    for hop in run.hops.iter().filter(|h| h.stage != Stage::Done) {
        HopState::from_record(hop)?;
        let to = Version::parse(&hop.to).context("a hop of the recorded run")?;
        ctx.catalog
            .verify(&to, &ctx.key)
            .map_err(|e| anyhow!("{e:#}; nothing was changed"))?;
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
    run.result = RunResult::Running;
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
        match hop::run_hop(&ctx, &mut run, i, out) {
            Ok(()) => {}
            Err(Stop::Refused(e)) => return Err(e),
            Err(Stop::Failed(failure)) => {
                // The undo's restore takes the database's lock itself.
                if let Some(l) = lock.take() {
                    rt.block_on(l.release());
                }
                let reason = failure.reason.clone();
                hop::undo(&ctx, &mut run, i, *failure, out);
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
    run.result = RunResult::Done;
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

/// What a run starts from: a run to drive, or nothing to do.
enum Begin {
    Run(RunRecord),
    Finished((u8, Value)),
}

/// The recorded run continued, or a new one planned (core's `resume` and `run_plan`).
fn begin(ctx: &Ctx<'_>, t: &Target, out: &mut Out) -> anyhow::Result<Begin> {
    let existing = load_run(&ctx.run_path)?;
    match resume(existing, &t.to, &ctx.binary, &ctx.run_path)? {
        Resume::Continue(run) => {
            out.say(format!(
                "resuming {} from {}",
                run.where_it_stands(),
                ctx.run_path.display()
            ));
            return Ok(Begin::Run(run));
        }
        Resume::NothingToDo(run) => {
            out.say(format!(
                "nothing to do: {} is done ({})",
                run.where_it_stands(),
                ctx.run_path.display()
            ));
            let object = summary_json("nothing_to_do", &run, ctx, out);
            return Ok(Begin::Finished((0, object)));
        }
        Resume::Fresh => {}
    }
    let hops = run_plan(t, &ctx.catalog.versions()).map_err(|e| match e {
        RunPlanError::NoPlan(e) => anyhow!(
            "no plan from {} to {} through the releases in {} ({}): {e}; nothing was changed",
            t.from,
            t.to,
            ctx.catalog.dir.display(),
            ctx.catalog.listing()
        ),
        other => other.into(),
    })?;
    if hops.is_empty() {
        out.say(format!("nothing to do: {} is already {}", t.from, t.to));
        let object = json!({ "result": "nothing_to_do", "from": t.from, "to": t.to, "hops": [],
                             "steps": out.steps });
        return Ok(Begin::Finished((0, object)));
    }
    let said = said_version(&ctx.binary).map_err(|e| anyhow!("{e:#}; nothing was changed"))?;
    if said != t.from {
        bail!(
            "{} says `dockmesh {said}`, but the plan starts from {} (this binary's version): \
             give the installed server binary with --binary; nothing was changed",
            ctx.binary.display(),
            t.from
        );
    }
    Ok(Begin::Run(RunRecord::new(
        &t.to,
        &t.rules_name,
        &ctx.binary,
        &hops,
    )))
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
