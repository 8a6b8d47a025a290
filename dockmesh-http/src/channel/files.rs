//! The files both ends keep: one atomic write ([`write_atomic`]), one binary swap
//! ([`StagedBinary`], [`swap_binary`]) and one version probe ([`probe_version`]).
//!
//! - A write goes to a new temporary file beside its target (same directory, so the rename is
//!   atomic), is fsynced, renamed over the target, and the directory is fsynced: after a crash
//!   the target holds the old bytes or the new ones, never a mix. [`FileMode::Private`] creates
//!   it `0600` from the start (secrets are never readable by others, not even for a moment).
//! - A swap copies the new binary beside the installed one (`0755`, fsynced), where it can be
//!   checked ([`StagedBinary::path`]); [`StagedBinary::install`] keeps the installed binary as a
//!   given `previous` path (replaced atomically), renames the copy over the installed binary and
//!   fsyncs the directory. A running process keeps running its old binary (the inode stays).
//! - A probe runs `BINARY --version` with a timeout and reads `dockmesh VERSION` from its first
//!   line.

use dockmesh_core::version::Version;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A file that could not be written, kept or swapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// An operation on a path failed.
    #[error("{what} {path} failed")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl FilesError {
    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FilesError {
        let path = path.to_owned();
        move |source| FilesError::Io { what, path, source }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            FilesError::Io { .. } => {
                "check that the directory exists, is writable by this user and its disk is not \
                 full; the file it names was left as it was"
            }
        }
    }
}

/// Who may read a file written by [`write_atomic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileMode {
    /// `0666` less the process's umask (usually `0644`).
    #[default]
    Shared,
    /// `0600`: keys, certificates, tokens, state.
    Private,
}

impl FileMode {
    fn bits(self) -> u32 {
        match self {
            FileMode::Shared => 0o666,
            FileMode::Private => 0o600,
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Make a new temporary file beside `path` (`.<name>.<random>.tmp`, created with `mode`) with
/// `make`, given the builder and the directory.
fn beside<R>(
    path: &Path,
    mode: u32,
    make: impl FnOnce(&tempfile::Builder, &Path) -> std::io::Result<R>,
) -> std::io::Result<R> {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix)
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(mode));
    make(&b, dir_of(path))
}

/// fsync the directory `dir`, so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<(), FilesError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FilesError::io("syncing the directory", dir))
}

/// How often, and how long apart, [`spawn_fresh`] tries a binary that is busy.
const BUSY_TRIES: u32 = 20;
const BUSY_WAIT: Duration = Duration::from_millis(25);

/// Spawn `cmd` whose binary was just written. While another thread of this process forks, the
/// child briefly holds every file descriptor open at that moment, a write descriptor of the
/// new binary included, and running it fails with `ETXTBSY` until that child has exec'd: such
/// a failure is tried again, a bounded number of times.
pub fn spawn_fresh(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 1;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < BUSY_TRIES => {
                tries += 1;
                std::thread::sleep(BUSY_WAIT);
            }
            other => return other,
        }
    }
}

/// Write `bytes` to `path` atomically: a new file beside it (created with `mode`), fsynced,
/// renamed over `path`, and the directory fsynced. On failure `path` is as it was and the
/// temporary file is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> Result<(), FilesError> {
    let mut tmp = beside(path, mode.bits(), |b, dir| b.tempfile_in(dir))
        .map_err(FilesError::io("creating a temporary file for", path))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(FilesError::io("writing", path))?;
    tmp.persist(path)
        .map_err(|e| FilesError::io("renaming the new file over", path)(e.error))?;
    sync_dir(dir_of(path))
}

/// A new binary copied beside the installed one, ready to be checked and installed. Dropped
/// without [`install`](StagedBinary::install), the copy is removed.
#[derive(Debug)]
pub struct StagedBinary {
    copy: tempfile::TempPath,
    installed: PathBuf,
}

impl StagedBinary {
    /// Copy `new` beside `installed` (`0755`, fsynced).
    pub fn beside(installed: &Path, new: &Path) -> Result<StagedBinary, FilesError> {
        let mut copy = beside(installed, 0o755, |b, dir| b.tempfile_in(dir))
            .map_err(FilesError::io("staging a new binary beside", installed))?;
        let mut src = std::fs::File::open(new).map_err(FilesError::io("opening", new))?;
        std::io::copy(&mut src, copy.as_file_mut())
            .and_then(|_| copy.as_file().sync_all())
            .map_err(FilesError::io("copying the new binary beside", installed))?;
        // `tempfile` creates the file with the mode less the umask: make it executable as asked.
        copy.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(FilesError::io(
                "making executable the copy beside",
                installed,
            ))?;
        Ok(StagedBinary {
            copy: copy.into_temp_path(),
            installed: installed.to_owned(),
        })
    }

    /// Where the copy is, to check it before it is installed.
    pub fn path(&self) -> &Path {
        &self.copy
    }

    /// Keep the installed binary as `previous` (a hard link, or a copy when that cannot be;
    /// put in place by rename), then rename the copy over the installed binary and fsync the
    /// directories. Once this returns `Ok` the new binary is installed; on `Err` the installed
    /// binary is unchanged (`previous` may already hold it). A failed fsync of the directory
    /// after the rename is logged, not returned: the swap has happened (it may not survive a
    /// power cut), and a caller told otherwise would believe the old binary is still in place.
    pub fn install(self, previous: &Path) -> Result<(), FilesError> {
        keep(&self.installed, previous)?;
        let installed = self.installed;
        self.copy
            .persist(&installed)
            .map_err(|e| FilesError::io("renaming the new binary over", &installed)(e.error))?;
        if let Err(e) = sync_dir(dir_of(&installed)) {
            tracing::warn!(binary = %installed.display(), error = %e, "the new binary is installed, but its directory could not be synced");
        }
        Ok(())
    }
}

/// Put a copy of `installed` at `previous`, atomically.
fn keep(installed: &Path, previous: &Path) -> Result<(), FilesError> {
    let linked = beside(previous, 0o755, |b, dir| {
        b.make_in(dir, |p| std::fs::hard_link(installed, p))
    });
    let kept = match linked {
        Ok(link) => link.into_temp_path(),
        Err(_) => {
            let mut copy = beside(previous, 0o755, |b, dir| b.tempfile_in(dir))
                .map_err(FilesError::io("keeping the installed binary as", previous))?;
            let mut src =
                std::fs::File::open(installed).map_err(FilesError::io("opening", installed))?;
            std::io::copy(&mut src, copy.as_file_mut())
                .and_then(|_| copy.as_file().sync_all())
                .and_then(|()| {
                    copy.as_file()
                        .set_permissions(std::fs::Permissions::from_mode(0o755))
                })
                .map_err(FilesError::io("keeping the installed binary as", previous))?;
            copy.into_temp_path()
        }
    };
    kept.persist(previous)
        .map_err(|e| FilesError::io("keeping the installed binary as", previous)(e.error))?;
    sync_dir(dir_of(previous))
}

/// Put the binary `new` in place of `installed`, keeping `installed` as `previous`: the same as
/// [`StagedBinary::beside`] then [`StagedBinary::install`], with nothing checked between.
pub fn swap_binary(installed: &Path, new: &Path, previous: &Path) -> Result<(), FilesError> {
    StagedBinary::beside(installed, new)?.install(previous)
}

/// What a binary says to `--version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryVersion {
    /// The first line it printed, trimmed (`dockmesh 1.2.3`).
    pub line: String,
    /// The version in it.
    pub version: Version,
}

/// Why a binary's version could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// It could not be started.
    #[error("{} cannot be run", binary.display())]
    Run {
        /// The binary.
        binary: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited with a failure.
    #[error("`{} --version` exited with {status}: {stderr}", binary.display())]
    Exit {
        /// The binary.
        binary: PathBuf,
        /// How it exited.
        status: ExitStatus,
        /// The last line it wrote to stderr.
        stderr: String,
    },
    /// It did not exit in time (it was killed).
    #[error("`{} --version` did not answer within {} s", binary.display(), after.as_secs_f64())]
    Timeout {
        /// The binary.
        binary: PathBuf,
        /// The time it had.
        after: Duration,
    },
    /// Its first line is not `dockmesh VERSION`.
    #[error("{} says `{line}` to --version, not `dockmesh VERSION`", binary.display())]
    NotAVersion {
        /// The binary.
        binary: PathBuf,
        /// What it said.
        line: String,
    },
}

impl ProbeError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ProbeError::Run { .. } => {
                "check that the file is an executable for this machine and its permissions"
            }
            ProbeError::Exit { .. }
            | ProbeError::Timeout { .. }
            | ProbeError::NotAVersion { .. } => {
                "check that the file is a dockmesh binary for this machine"
            }
        }
    }
}

/// How often a running probe is looked at.
const PROBE_POLL: Duration = Duration::from_millis(10);

/// Run `binary --version` (killed after `timeout`) and read `dockmesh VERSION` from the first
/// line of what it prints. Blocking: from async code, call it in `spawn_blocking`.
pub fn probe_version(binary: &Path, timeout: Duration) -> Result<BinaryVersion, ProbeError> {
    let mut child = spawn_fresh(
        Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .map_err(|source| ProbeError::Run {
        binary: binary.to_owned(),
        source,
    })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(PROBE_POLL),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Run {
                    binary: binary.to_owned(),
                    source,
                });
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Timeout {
                    binary: binary.to_owned(),
                    after: timeout,
                });
            }
        }
    };
    // A child of the binary could keep the pipes open: what arrives by the deadline is used.
    let left = deadline.saturating_duration_since(Instant::now()) + PROBE_POLL;
    let out = stdout.recv_timeout(left).unwrap_or_default();
    if !status.success() {
        let err = stderr.recv_timeout(PROBE_POLL).unwrap_or_default();
        return Err(ProbeError::Exit {
            binary: binary.to_owned(),
            status,
            stderr: last_line(&err),
        });
    }
    let line = String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    match line
        .strip_prefix("dockmesh ")
        .and_then(|v| Version::parse(v.trim()).ok())
    {
        Some(version) => Ok(BinaryVersion { line, version }),
        None => Err(ProbeError::NotAVersion {
            binary: binary.to_owned(),
            line,
        }),
    }
}

/// Read `pipe` to its end on a thread; the bytes arrive on the returned channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            // Bounded: a version is one short line.
            let _ = (&mut pipe).take(1 << 16).read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests;
