//! Running a server binary: the installed one (`db migrate`, `backup`, `restore`, `db status`)
//! or a new one, with the database options of the command line.

use super::super::db::Location;
use anyhow::{Context, bail};
use dockmesh_core::version::Version;
use dockmesh_http::channel::files::{self, BinaryVersion, ProbeError};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `path`, made absolute: `what` (`the target binary`) must be a file that exists.
pub(super) fn existing(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    if !path.is_file() {
        bail!("{what} {} does not exist or is not a file", path.display());
    }
    path.canonicalize()
        .with_context(|| format!("{what} {}", path.display()))
}

/// `binary args…`, with the database options when `location` is given.
pub(super) fn command(binary: &Path, args: &[&str], location: Option<&Location>) -> Command {
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
    cmd
}

/// Run `binary args…` (with the database options when `location` is given): its stdout, or
/// why it failed.
pub(super) fn run(
    binary: &Path,
    args: &[&str],
    location: Option<&Location>,
) -> anyhow::Result<String> {
    run_command(command(binary, args, location), binary, args)
}

/// Run `cmd` (`binary args…`): its stdout, or why it failed.
pub(super) fn run_command(
    mut cmd: Command,
    binary: &Path,
    args: &[&str],
) -> anyhow::Result<String> {
    let words = format!("`{} {}`", binary.display(), args.join(" "));
    let o = cmd
        .output()
        .with_context(|| format!("{words} could not be run"))?;
    if !o.status.success() {
        bail!("{words} exited with {}: {}", o.status, last_line(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// How long a binary has to answer `--version`.
const VERSION_CHECK: Duration = Duration::from_secs(10);

/// What a binary says to `--version` (`dockmesh X`).
pub(super) fn probe(binary: &Path) -> Result<BinaryVersion, ProbeError> {
    files::probe_version(binary, VERSION_CHECK)
}

/// The version a binary says to `--version`.
pub(super) fn said_version(binary: &Path) -> anyhow::Result<Version> {
    Ok(probe(binary)?.version)
}

/// The last line of a command's output that is not blank.
pub(super) fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}
