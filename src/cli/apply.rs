//! `dockmesh upgrade apply`: the server's own upgrade, hop by hop along the plan `upgrade plan`
//! recommends through the signed binaries of a releases directory, resumable.
//!
//! Each hop `FROM → TO` goes through the stages `backed_up` (a verified bundle
//! `<data-dir>/backups/pre-upgrade-TO.tar.zst`, taken by the installed binary), `swapped` (the
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

use super::db::Location;
use super::upgrade::{parse_target, plan_hops};
use anyhow::{Context, anyhow, bail};
use clap::Args;
use dockmesh_core::version::{Hop, Version};
use dockmesh_http::release::{self, META_SUFFIX, ReleaseError, ReleaseMeta, VerifyingKey};
use dockmesh_sqlx::{DbTarget, SchemaReport, SchemaStatus, ServerLock, SqlStoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

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

/// How far a hop got. Each stage is recorded once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started.
    Pending,
    /// The bundle taken before it verifies.
    BackedUp,
    /// The new binary is in place; the previous one kept.
    Swapped,
    /// `db migrate` ran.
    Migrated,
    /// The schema is up to date and the binary says its version.
    Checked,
    /// Finished.
    Done,
    /// Failed and undone (as far as the record's `undone` says); a new run retries it.
    Failed,
}

impl Stage {
    fn word(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::BackedUp => "backed_up",
            Stage::Swapped => "swapped",
            Stage::Migrated => "migrated",
            Stage::Checked => "checked",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
}

/// One hop of a run, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HopRecord {
    /// The version upgraded from.
    pub from: String,
    /// The version upgraded to.
    pub to: String,
    /// How far it got.
    pub stage: Stage,
    /// The bundle taken before it.
    #[serde(default)]
    pub backup: Option<PathBuf>,
    /// Where the binary it replaced is kept.
    #[serde(default)]
    pub previous: Option<PathBuf>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What was undone after it failed.
    #[serde(default)]
    pub undone: Vec<String>,
}

/// `upgrade-run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The version upgraded to.
    pub target: String,
    /// The rules the plan follows.
    pub rules: String,
    /// The installed binary upgraded.
    pub binary: PathBuf,
    /// `running`, `done` or `failed`.
    pub result: String,
    /// The plan, with each hop's progress.
    pub hops: Vec<HopRecord>,
}

impl RunRecord {
    fn finished(&self) -> bool {
        self.result == "done"
    }

    fn where_it_stands(&self) -> String {
        let hops: Vec<String> = self
            .hops
            .iter()
            .map(|h| format!("{} → {} {}", h.from, h.to, h.stage.word()))
            .collect();
        format!("the run to {} ({})", self.target, hops.join(", "))
    }
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
    let p = parse_target(&args.to, &args.rules)?;
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
    if !binary.is_file() {
        bail!(
            "the binary to upgrade {} does not exist or is not a file",
            binary.display()
        );
    }
    let binary = binary
        .canonicalize()
        .with_context(|| format!("the binary to upgrade {}", binary.display()))?;
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
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let catalog = Catalog::read(&args.releases)?;

    let rt = super::db::runtime()?;
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
            let plan = plan_hops(&p, &ctx.catalog.versions(), false).map_err(|e| {
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
            let said = said_version(&binary).map_err(|e| anyhow!("{e}; nothing was changed"))?;
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
                out.say(format!(
                    "upgrade to {} failed at hop {} → {}: {reason}; the installed binary is {} \
                     again; fix the cause and run the same command to retry the hop",
                    run.target, hop.from, hop.to, hop.from
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

fn new_run(to: &Version, rules: &str, binary: &Path, hops: &[Hop]) -> RunRecord {
    RunRecord {
        target: to.to_string(),
        rules: rules.to_owned(),
        binary: binary.to_owned(),
        result: "running".into(),
        hops: hops
            .iter()
            .map(|h| HopRecord {
                from: h.from.to_string(),
                to: h.to.to_string(),
                stage: Stage::Pending,
                backup: None,
                previous: None,
                error: None,
                undone: Vec::new(),
            })
            .collect(),
    }
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
                let said = said_version(&ctx.binary).map_err(|e| Stop::Refused(anyhow!(e)))?;
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
                take_backup(ctx, &bundle).map_err(|e| Stop::Failed(format!("backup: {e}")))?;
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
                let said = run_binary(&ctx.binary, &["db", "migrate"], Some(ctx.location))
                    .map_err(|e| Stop::Failed(format!("migrate: {e}")))?;
                hop.stage = Stage::Migrated;
                let first = said.lines().next().unwrap_or("migrated").trim().to_owned();
                out.say(format!("{name}: migrated: {first}"));
            }
            Stage::Migrated => {
                let detail = check(ctx, &to_v).map_err(|e| Stop::Failed(format!("check: {e}")))?;
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
                match run_binary(&ctx.binary, &args, Some(ctx.location)) {
                    Ok(_) => undone.push(format!(
                        "restored the database (and stacks, CA) from {}",
                        bundle.display()
                    )),
                    Err(e) => undone.push(format!(
                        "restoring {} FAILED: {e}; restore it by hand: `{} restore --force \
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

/// `<binary>.previous-<from>`.
fn previous_path(binary: &Path, from: &str) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(format!(".previous-{from}"));
    PathBuf::from(name)
}

/// A bundle by the installed binary (`backup --out`), then verified by it (`restore --dry-run`).
fn take_backup(ctx: &Ctx<'_>, bundle: &Path) -> Result<(), String> {
    std::fs::create_dir_all(&ctx.backups)
        .map_err(|e| format!("creating {}: {e}", ctx.backups.display()))?;
    let path = bundle.to_str().ok_or("the backups path is not UTF-8")?;
    run_binary(&ctx.binary, &["backup", "--out", path], Some(ctx.location))?;
    run_binary(
        &ctx.binary,
        &["restore", "--dry-run", "--force", "--from", path],
        Some(ctx.location),
    )
    .map_err(|e| format!("{} does not verify: {e}", bundle.display()))?;
    Ok(())
}

/// `db status --json` up to date and `version --json` naming `to`.
fn check(ctx: &Ctx<'_>, to: &Version) -> Result<String, String> {
    let said = run_binary(&ctx.binary, &["db", "status", "--json"], Some(ctx.location))?;
    let report: SchemaReport = serde_json::from_str(&said)
        .map_err(|e| format!("`db status --json` printed no schema report ({e})"))?;
    if report.status != SchemaStatus::UpToDate {
        return Err(format!(
            "the schema is not up to date after the migration: {}",
            report
                .refusal
                .clone()
                .unwrap_or_else(|| format!("{:?}", report.status))
        ));
    }
    let said = run_binary(&ctx.binary, &["version", "--json"], None)?;
    let info: Value = serde_json::from_str(&said)
        .map_err(|e| format!("`version --json` printed no JSON object ({e})"))?;
    let version = info["version"].as_str().map(Version::parse);
    match version {
        Some(Ok(v)) if &v == to => Ok(format!(
            "schema up to date (version {}), `version --json` says {v}",
            report.database_version
        )),
        _ => Err(format!(
            "`version --json` says {}, not version {to}",
            info["version"]
        )),
    }
}

/// Run `binary args…` (with the database options when `location` is given); its stdout, or
/// why it failed.
fn run_binary(binary: &Path, args: &[&str], location: Option<&Location>) -> Result<String, String> {
    let mut cmd = Command::new(binary);
    cmd.args(args);
    if let Some(location) = location {
        cmd.arg("--data-dir").arg(&location.data_dir);
        match &location.database_url {
            Some(url) => {
                cmd.args(["--database-url", url]);
            }
            None => {
                cmd.env_remove("DOCKMESH_DATABASE_URL");
            }
        }
    }
    let words = format!("`{} {}`", binary.display(), args.join(" "));
    let o = cmd
        .output()
        .map_err(|e| format!("{words} could not be run: {e}"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        let last = err
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned();
        Err(format!("{words} exited with {}: {last}", o.status))
    }
}

/// The version a binary says to `--version` (`dockmesh X`).
fn said_version(binary: &Path) -> Result<Version, String> {
    let said = run_binary(binary, &["--version"], None)?;
    let line = said.lines().next().unwrap_or_default().trim().to_owned();
    line.strip_prefix("dockmesh ")
        .and_then(|v| Version::parse(v).ok())
        .ok_or_else(|| {
            format!(
                "{} says `{line}` to --version, not `dockmesh VERSION`",
                binary.display()
            )
        })
}

/// Put the release `new` in place of `binary`, keeping `binary` as `previous`: the release is
/// copied beside `binary` (fsync, 0755), that copy's size and SHA-256 checked against `meta` and
/// its `--version` against `to`, the installed binary copied to `previous`, then the copy renamed
/// over `binary`. Done already (a run interrupted after the rename) when `binary` is the release
/// and `previous` is there. Returns what the release said (for the step line).
fn swap(
    binary: &Path,
    new: &Path,
    previous: &Path,
    meta: &ReleaseMeta,
    to: &Version,
) -> anyhow::Result<String> {
    let (_, current) = release::digest_file(binary)?;
    if current == meta.sha256.to_ascii_lowercase() && previous.is_file() {
        return Ok(", already in place".into());
    }
    let staged = temp_beside(binary, &format!("new-{to}"))?;
    let result = (|| {
        copy_synced(new, &staged).context("release: staging it beside the binary")?;
        let (size, sha256) = release::digest_file(&staged)?;
        if size != meta.size || sha256 != meta.sha256.to_ascii_lowercase() {
            bail!(
                "release: the copy {} is {size} bytes with SHA-256 {sha256}, the release says \
                 {} bytes, {}",
                staged.display(),
                meta.size,
                meta.sha256
            );
        }
        let said = said_version(&staged).map_err(|e| anyhow!("release: {e}"))?;
        if &said != to {
            bail!(
                "release: {} says `dockmesh {said}`, not `dockmesh {to}`",
                new.display()
            );
        }
        let kept = temp_beside(previous, "tmp")?;
        copy_synced(binary, &kept)
            .and_then(|()| std::fs::rename(&kept, previous))
            .and_then(|()| sync_dir(previous))
            .with_context(|| format!("swap: keeping the binary as {}", previous.display()))?;
        std::fs::rename(&staged, binary)
            .with_context(|| format!("swap: renaming the release over {}", binary.display()))?;
        // The rename is done: from here on the hop counts as swapped (an undo puts `previous`
        // back), so a failed directory fsync is not reported as a failed swap.
        let _ = sync_dir(binary);
        Ok(format!(", says dockmesh {said}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

/// `.<name>.<what>-<pid>` beside `path`.
fn temp_beside(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{what}-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Copy `src` to `dst`, make it 0755 and fsync it.
fn copy_synced(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::copy(src, dst)?;
    let f = std::fs::File::open(dst)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    }
    f.sync_all()
}

/// fsync the directory holding `path`, so a rename in it survives a crash.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

fn load_run(path: &Path) -> anyhow::Result<Option<RunRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "{} is not an upgrade run record; move it aside to start a new run",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("reading {}", path.display()))),
    }
}

/// Write the run record atomically (temp file, fsync, rename, fsync the directory).
fn save_run(path: &Path, run: &RunRecord) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(
            &mut f,
            &serde_json::to_vec_pretty(run).expect("a run record serializes"),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    };
    write().with_context(|| format!("recording the upgrade's progress in {}", path.display()))
}

/// The releases of a directory for this machine's platform, as their metadata says.
struct Catalog {
    dir: PathBuf,
    metas: Vec<ReleaseMeta>,
    /// Metadata files that could not be read.
    unreadable: Vec<String>,
}

impl Catalog {
    fn read(dir: &Path) -> anyhow::Result<Catalog> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the releases directory {}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(META_SUFFIX))
            })
            .collect();
        paths.sort();
        let mut catalog = Catalog {
            dir: dir.to_owned(),
            metas: Vec::new(),
            unreadable: Vec::new(),
        };
        for path in paths {
            let meta = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ReleaseMeta>(&b).map_err(|e| e.to_string()));
            match meta {
                Ok(m) if m.os == std::env::consts::OS && m.arch == std::env::consts::ARCH => {
                    catalog.metas.push(m)
                }
                Ok(_) => {}
                Err(e) => catalog.unreadable.push(format!("{}: {e}", path.display())),
            }
        }
        Ok(catalog)
    }

    fn versions(&self) -> Vec<Version> {
        self.metas
            .iter()
            .filter_map(|m| Version::parse(&m.version).ok())
            .collect()
    }

    /// The versions found, for messages.
    fn listing(&self) -> String {
        let mut s = if self.metas.is_empty() {
            format!(
                "none for {}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            )
        } else {
            self.metas
                .iter()
                .map(|m| m.version.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.unreadable.is_empty() {
            s.push_str(&format!("; unreadable: {}", self.unreadable.join("; ")));
        }
        s
    }

    /// The release of `version`: its signature verifies with `key`, and the binary beside its
    /// metadata has the signed size and SHA-256.
    fn verify(
        &self,
        version: &Version,
        key: &VerifyingKey,
    ) -> Result<(ReleaseMeta, PathBuf), String> {
        let meta = self
            .metas
            .iter()
            .find(|m| Version::parse(&m.version).ok().as_ref() == Some(version))
            .ok_or_else(|| {
                format!(
                    "no release {version} for {}/{} in {} (found: {})",
                    std::env::consts::OS,
                    std::env::consts::ARCH,
                    self.dir.display(),
                    self.listing()
                )
            })?;
        let plain = !meta.file.is_empty()
            && !meta.file.contains(['/', '\\'])
            && meta.file != "."
            && meta.file != "..";
        if !plain {
            return Err(format!(
                "the release {version} in {} names the file {:?}, not a file beside it",
                self.dir.display(),
                meta.file
            ));
        }
        let refused = |e: ReleaseError| format!("the release {version} is refused: {e}");
        meta.verify(key).map_err(refused)?;
        let path = self.dir.join(&meta.file);
        let (size, sha256) = release::digest_file(&path).map_err(refused)?;
        if size != meta.size {
            return Err(refused(ReleaseError::Size {
                what: path.display().to_string(),
                got: size,
                expected: meta.size,
            }));
        }
        if sha256 != meta.sha256.to_ascii_lowercase() {
            return Err(refused(ReleaseError::Checksum {
                what: path.display().to_string(),
                got: sha256,
                expected: meta.sha256.clone(),
            }));
        }
        Ok((meta.clone(), path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_ordered_and_named_as_recorded() {
        assert!(Stage::Pending < Stage::BackedUp);
        assert!(Stage::BackedUp < Stage::Swapped);
        assert!(Stage::Swapped < Stage::Migrated);
        assert!(Stage::Migrated < Stage::Checked);
        assert!(Stage::Checked < Stage::Done);
        for s in [
            Stage::Pending,
            Stage::BackedUp,
            Stage::Swapped,
            Stage::Migrated,
            Stage::Checked,
            Stage::Done,
            Stage::Failed,
        ] {
            assert_eq!(json!(s), json!(s.word()));
        }
    }

    #[test]
    fn the_previous_binary_sits_beside_it() {
        assert_eq!(
            previous_path(Path::new("/usr/local/bin/dockmesh"), "0.1.0"),
            Path::new("/usr/local/bin/dockmesh.previous-0.1.0")
        );
    }

    #[test]
    fn a_run_record_round_trips_and_names_where_it_stands() {
        let hops = [Hop {
            from: Version::parse("0.1.0").unwrap(),
            to: Version::parse("0.2.0").unwrap(),
        }];
        let mut run = new_run(
            &Version::parse("0.2.0").unwrap(),
            "dtr",
            Path::new("/b"),
            &hops,
        );
        run.hops[0].stage = Stage::Swapped;
        let back: RunRecord = serde_json::from_value(json!(run)).unwrap();
        assert_eq!(back.hops[0].stage, Stage::Swapped);
        assert!(!back.finished());
        assert_eq!(
            back.where_it_stands(),
            "the run to 0.2.0 (0.1.0 → 0.2.0 swapped)"
        );
    }
}
