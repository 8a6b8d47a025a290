//! Backup bundles: write one while the server runs, verify one, restore one into SQLite or
//! PostgreSQL.
//!
//! A bundle is a `.tar.zst` (zstd with its content checksum) holding, in this order:
//!
//! ```text
//! manifest.json               format, dockmesh version, schema version, created at, source
//!                             backend, rows per table, captured directories, and every
//!                             other file with its size and SHA-256
//! database/<table>.jsonl      every row of every table, one JSON object per line, each column in
//!                             a canonical backend-neutral form (see `catalog`)
//! stacks/…                    <data-dir>/stacks, when present
//! ca/…                        <data-dir>/ca (the CA material), when present
//! ```
//!
//! **Consistency while the server runs.** SQLite: `VACUUM INTO` copies the database in one
//! read transaction into a private snapshot file, and the export reads that snapshot.
//! PostgreSQL: the export runs in one `REPEATABLE READ READ ONLY` transaction, so every table is
//! read at the same instant. The data-directory files are copied as they are at that time.
//!
//! **Why a logical export and not the SQLite file.** One format restores into either backend
//! (SQLite → PostgreSQL when a control plane outgrows one machine, and back), there is one
//! restore path that every test exercises, and a bundle does not depend on the SQLite file
//! format or on one backend's migration checksums (`_sqlx_migrations` is not exported: the
//! restore recreates the schema with this binary's migrations up to the bundle's schema version,
//! loads the rows, then migrates forward).
//!
//! **Restore** verifies every file against the manifest (sizes, SHA-256, no missing, extra,
//! duplicate or unsafe entries, the zstd checksum read to the end), parses every row, and walks
//! the bundle's audit chain, all before touching anything. It refuses a bundle whose schema is
//! newer than the binary and a target database that holds data unless forced. SQLite: the new
//! database is built beside the old one and swapped in with a rename; the replaced file is kept
//! as `<file>.pre-restore-<time>`. PostgreSQL: in one transaction the current schema is renamed
//! to `dockmesh_pre_restore_<time>` (kept, with all its tables, until an operator drops it) and
//! the restored tables are created in a fresh schema of the old name. Replaced `stacks/` and
//! `ca/` directories are kept as `<dir>.pre-restore-<time>`.

use crate::error::SqlStoreError;
use crate::schema::Backend;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

mod restore;
mod verify;
mod write;

pub use restore::restore;
pub use write::backup;

/// The bundle format this binary writes and reads.
pub const BUNDLE_FORMAT: u32 = 1;

/// The data-directory folders a bundle captures.
pub const BUNDLED_DIRS: [&str; 2] = ["stacks", "ca"];

const MANIFEST: &str = "manifest.json";

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Its path inside the bundle.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Hex SHA-256 of its content.
    pub sha256: String,
}

/// `manifest.json`: what a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The bundle format ([`BUNDLE_FORMAT`]).
    pub format: u32,
    /// The dockmesh version that wrote it.
    pub dockmesh_version: String,
    /// The schema version of the exported database.
    pub schema_version: i64,
    /// When it was written.
    pub created_at: Timestamp,
    /// The backend it was taken from.
    pub backend: Backend,
    /// Rows exported per table.
    pub tables: BTreeMap<String, u64>,
    /// The data-directory folders it captured (`stacks`, `ca`).
    pub directories: Vec<String>,
    /// Every file except the manifest, with size and SHA-256.
    pub files: Vec<ManifestFile>,
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The bundle.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its manifest.
    pub manifest: Manifest,
    /// Entries of the data directory that were not captured (symbolic links, special files).
    pub skipped: Vec<String>,
}

impl BackupReport {
    /// Human lines, as `dockmesh backup` prints them.
    pub fn lines(&self) -> Vec<String> {
        let m = &self.manifest;
        let rows: u64 = m.tables.values().sum();
        let mut out = vec![
            format!("wrote {} ({} bytes)", self.path.display(), self.bytes),
            format!(
                "database: {} schema version {}, {} rows in {} tables",
                m.backend,
                m.schema_version,
                rows,
                m.tables.len()
            ),
        ];
        for (t, n) in &m.tables {
            out.push(format!("  {t}: {n}"));
        }
        if m.directories.is_empty() {
            out.push("data directory: no stacks/ or ca/ to capture".into());
        } else {
            let files = m
                .files
                .iter()
                .filter(|f| !f.path.starts_with("database/"))
                .count();
            out.push(format!(
                "data directory: {} ({files} files)",
                m.directories.join(", ")
            ));
        }
        for s in &self.skipped {
            out.push(format!("not captured: {s}"));
        }
        out
    }
}

/// How to restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Verify and report, change nothing.
    pub dry_run: bool,
    /// Replace a database that holds data (it is kept, not deleted).
    pub force: bool,
}

/// What a restore did (or, for a dry run, would do).
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The database restored into.
    pub database: String,
    /// Rows per table restored.
    pub tables: BTreeMap<String, u64>,
    /// Whether the target held data (and `--force` was needed).
    pub replaced_data: bool,
    /// Where the replaced database and directories were kept.
    pub kept: Vec<String>,
    /// Data-directory folders restored.
    pub directories: Vec<String>,
    /// Schema versions before and after the post-restore migration, when one ran.
    pub migrated: Option<(i64, i64)>,
    /// Audit entries checked in the restored chain.
    pub audit_entries: u64,
}

impl RestoreReport {
    /// Human lines, as `dockmesh restore` prints them.
    pub fn lines(&self) -> Vec<String> {
        let m = &self.manifest;
        let verb = if self.dry_run {
            "would restore"
        } else {
            "restored"
        };
        let mut out = vec![
            format!(
                "bundle: made by dockmesh {} from {} at {}, schema version {}",
                m.dockmesh_version, m.backend, m.created_at, m.schema_version
            ),
            format!(
                "verified: {} files, every size and SHA-256 matches the manifest; audit chain of {} entries intact",
                m.files.len() + 1,
                self.audit_entries
            ),
            format!(
                "database: {verb} into {} ({} rows in {} tables)",
                self.database,
                self.tables.values().sum::<u64>(),
                self.tables.len()
            ),
        ];
        for (t, n) in &self.tables {
            out.push(format!("  {t}: {n}"));
        }
        if self.replaced_data {
            out.push("the target database held data: replaced because --force was given".into());
        }
        for k in &self.kept {
            out.push(format!("kept: {k}"));
        }
        for d in &self.directories {
            out.push(format!("directory: {verb} {d}/"));
        }
        if let Some((a, b)) = self.migrated {
            out.push(format!("schema: migrated {a} -> {b} after the restore"));
        }
        if self.dry_run {
            out.push("dry run: nothing was changed".into());
        }
        out
    }
}

fn io_err(
    what: impl Into<String>,
    path: &Path,
    safe: &'static str,
) -> impl FnOnce(io::Error) -> SqlStoreError {
    let what = what.into();
    let path = path.to_owned();
    move |source| SqlStoreError::Io {
        what,
        path,
        safe,
        source,
    }
}

const BACKUP_SAFE: &str = "No bundle was written; the database was not changed.";

/// A writer that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut w = HashingWriter {
        inner: io::sink(),
        hasher: Sha256::new(),
        size: 0,
    };
    io::copy(&mut f, &mut w)?;
    Ok((w.size, hex::encode(w.hasher.finalize())))
}

#[cfg(unix)]
pub(super) fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644)
}

#[cfg(not(unix))]
pub(super) fn file_mode(_path: &Path) -> u32 {
    0o644
}

#[cfg(unix)]
pub(super) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777))
}

#[cfg(not(unix))]
pub(super) fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Regular files under `root`, as sorted `/`-separated relative paths.
pub(super) fn walk_files(root: &Path) -> Result<Vec<String>, SqlStoreError> {
    let mut out = Vec::new();
    walk(root, root, &mut out, false).map_err(io_err(
        "listing the staged files",
        root,
        BACKUP_SAFE,
    ))?;
    out.sort();
    Ok(out)
}

pub(super) fn walk_dirs(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, root, &mut out, true)?;
    out.sort();
    Ok(out)
}

pub(super) fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, dirs: bool) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        if ty.is_dir() {
            if dirs {
                out.push(rel);
            }
            walk(root, &path, out, dirs)?;
        } else if ty.is_file() && !dirs {
            out.push(rel);
        }
    }
    Ok(())
}

/// Copy a directory tree (regular files and directories; other entries are skipped and named).
pub(super) fn copy_tree(
    src: &Path,
    dst: &Path,
    rel: &str,
    skipped: &mut Vec<String>,
) -> Result<(), SqlStoreError> {
    fs::create_dir_all(dst).map_err(io_err("staging a directory", dst, BACKUP_SAFE))?;
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(io_err("reading a data directory", src, BACKUP_SAFE))?
        .collect::<Result<_, _>>()
        .map_err(io_err("reading a data directory", src, BACKUP_SAFE))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let ty =
            e.file_type()
                .map_err(io_err("reading a data directory", &e.path(), BACKUP_SAFE))?;
        let child_rel = format!("{rel}/{name}");
        if ty.is_dir() {
            copy_tree(&e.path(), &dst.join(&name), &child_rel, skipped)?;
        } else if ty.is_file() {
            let to = dst.join(&name);
            fs::copy(e.path(), &to).map_err(io_err(
                "copying a data file",
                &e.path(),
                BACKUP_SAFE,
            ))?;
        } else {
            skipped.push(format!("{child_rel} (not a regular file or directory)"));
        }
    }
    Ok(())
}

pub(super) fn stamp(now: Timestamp) -> String {
    now.strftime("%Y%m%d%H%M%S").to_string()
}

pub(super) const RESTORE_SAFE: &str = "Nothing was changed.";
