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

use crate::catalog::{self, Table};
use crate::dump::{self, Cell};
use crate::error::{BundleError, SqlStoreError};
use crate::lock::ServerLock;
use crate::options::OpenOptions;
use crate::schema::{self, Backend, SchemaStatus};
use crate::store::{self, Pool, SqlStore, connect, read_state};
use crate::target::DbTarget;
use dockmesh_core::audit::{AuditEntry, AuditEvent, ChainVerifier};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Component, Path, PathBuf};

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

/// Write a backup bundle of the database at `target` and of `<data_dir>/stacks` and
/// `<data_dir>/ca` to `out`, while the server may be running. The bundle appears at `out`
/// only once complete.
pub async fn backup(
    target: &DbTarget,
    data_dir: Option<&Path>,
    out: &Path,
) -> Result<BackupReport, SqlStoreError> {
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&out_dir).map_err(io_err(
        "creating the bundle's directory",
        &out_dir,
        BACKUP_SAFE,
    ))?;
    let staging = tempfile::Builder::new()
        .prefix(".dockmesh-backup-")
        .tempdir_in(&out_dir)
        .map_err(io_err(
            "creating a staging directory",
            &out_dir,
            BACKUP_SAFE,
        ))?;
    let db_dir = staging.path().join("database");
    fs::create_dir_all(&db_dir).map_err(io_err(
        "creating a staging directory",
        &db_dir,
        BACKUP_SAFE,
    ))?;

    let created_at = Timestamp::now();
    let (schema_version, tables) = export_database(target, staging.path()).await?;

    let mut skipped = Vec::new();
    let mut directories = Vec::new();
    if let Some(dd) = data_dir {
        for d in BUNDLED_DIRS {
            let src = dd.join(d);
            if src.is_dir() {
                copy_tree(&src, &staging.path().join(d), d, &mut skipped)?;
                directories.push(d.to_owned());
            }
        }
    }

    // Hash every staged file (they are private to this backup and no longer change).
    let mut files = Vec::new();
    for rel in walk_files(staging.path())? {
        let (size, sha256) = hash_file(&staging.path().join(&rel)).map_err(io_err(
            "hashing a staged file",
            &staging.path().join(&rel),
            BACKUP_SAFE,
        ))?;
        files.push(ManifestFile {
            path: rel,
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: BUNDLE_FORMAT,
        dockmesh_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        created_at,
        backend: target.backend(),
        tables,
        directories,
        files,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");

    let partial = out_dir.join(format!(
        ".{}.partial",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into())
    ));
    let result = write_tar(&partial, staging.path(), &manifest, &manifest_bytes);
    if let Err(e) = result {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    fs::rename(&partial, out).map_err(io_err(
        "moving the finished bundle into place",
        out,
        BACKUP_SAFE,
    ))?;
    let bytes = fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupReport {
        path: out.to_owned(),
        bytes,
        manifest,
        skipped,
    })
}

fn write_tar(
    partial: &Path,
    staging: &Path,
    manifest: &Manifest,
    manifest_bytes: &[u8],
) -> Result<(), SqlStoreError> {
    let err = |what: &str| io_err(what.to_owned(), partial, BACKUP_SAFE);
    // The bundle holds the CA's private key and token hashes: readable by its owner only.
    let mut open = fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    let file = open.open(partial).map_err(err("creating the bundle"))?;
    let mut enc =
        zstd::Encoder::new(BufWriter::new(file), 3).map_err(err("starting compression"))?;
    enc.include_checksum(true)
        .map_err(err("starting compression"))?;
    let mut tar = tar::Builder::new(enc);
    let mtime = u64::try_from(manifest.created_at.as_second()).unwrap_or(0);
    let header = |path: &str, size: u64, mode: u32, kind: tar::EntryType| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        let _ = path;
        h
    };
    let mut h = header(
        MANIFEST,
        manifest_bytes.len() as u64,
        0o644,
        tar::EntryType::Regular,
    );
    tar.append_data(&mut h, MANIFEST, manifest_bytes)
        .map_err(err("writing manifest.json"))?;
    // Directories first (so that empty ones are restored too), then the files in manifest order.
    for dir in walk_dirs(staging).map_err(err("listing the staged files"))? {
        let mut h = header(&dir, 0, 0o755, tar::EntryType::Directory);
        tar.append_data(&mut h, format!("{dir}/"), io::empty())
            .map_err(err("writing a directory entry"))?;
    }
    for f in &manifest.files {
        let path = staging.join(&f.path);
        let mut src = File::open(&path).map_err(err("reading a staged file"))?;
        let mode = file_mode(&path);
        let mut h = header(&f.path, f.size, mode, tar::EntryType::Regular);
        tar.append_data(&mut h, &f.path, &mut src)
            .map_err(err("writing a file"))?;
    }
    let enc = tar.into_inner().map_err(err("finishing the archive"))?;
    let buf = enc.finish().map_err(err("finishing compression"))?;
    let file = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(err("flushing the bundle"))?;
    file.sync_all().map_err(err("syncing the bundle to disk"))?;
    Ok(())
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0o644)
}

#[cfg(not(unix))]
fn file_mode(_path: &Path) -> u32 {
    0o644
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o777))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Regular files under `root`, as sorted `/`-separated relative paths.
fn walk_files(root: &Path) -> Result<Vec<String>, SqlStoreError> {
    let mut out = Vec::new();
    walk(root, root, &mut out, false).map_err(io_err(
        "listing the staged files",
        root,
        BACKUP_SAFE,
    ))?;
    out.sort();
    Ok(out)
}

fn walk_dirs(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, root, &mut out, true)?;
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>, dirs: bool) -> io::Result<()> {
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
fn copy_tree(
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

const SQLITE_TABLE_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)";
const PG_TABLE_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1)";

/// Export every table into `<staging>/database/`, consistently. Returns the schema version and
/// the rows per table.
async fn export_database(
    target: &DbTarget,
    staging: &Path,
) -> Result<(i64, BTreeMap<String, u64>), SqlStoreError> {
    let db_err = |what: &'static str| {
        move |source| SqlStoreError::Database {
            what: what.to_owned(),
            safe: BACKUP_SAFE,
            source,
        }
    };
    match target {
        DbTarget::Sqlite { path } => {
            if !path.exists() {
                return Err(SqlStoreError::BackupRefused(format!(
                    "there is no database at {}: nothing to back up, no bundle was written. Check \
                     --data-dir or --database-url",
                    path.display()
                )));
            }
            let pool = connect(target, false).await?;
            check_backupable(&pool).await?;
            let snapshot = staging.join("snapshot.sqlite");
            let Pool::Sqlite(p) = &pool else {
                unreachable!("a SQLite target opens a SQLite pool")
            };
            let vacuum = sqlx::query("VACUUM INTO $1")
                .bind(snapshot.to_string_lossy().into_owned())
                .execute(p)
                .await;
            pool.close().await;
            vacuum.map_err(db_err(
                "taking a consistent snapshot of the SQLite database (VACUUM INTO)",
            ))?;
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&snapshot)
                .read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts)
                .await
                .map_err(db_err("opening the snapshot"))?;
            let result = async {
                let (applied, notes) =
                    read_state::<sqlx::Sqlite>(&mut conn, Backend::Sqlite).await?;
                let report = schema::SchemaReport::decide(Backend::Sqlite, &applied, &notes);
                let mut tables = BTreeMap::new();
                for t in catalog::tables_at(report.database_version) {
                    let (path, mut w) = table_writer(staging, t)?;
                    let n = dump::sqlite::export_table(&mut conn, t, &mut w).await?;
                    finish_writer(&path, w)?;
                    tables.insert(t.name.to_owned(), n);
                }
                Ok::<_, SqlStoreError>((report.database_version, tables))
            }
            .await;
            let _ = conn.close().await;
            let _ = fs::remove_file(&snapshot);
            result
        }
        DbTarget::Postgres { .. } => {
            let pool = connect(target, false).await?;
            check_backupable(&pool).await?;
            let Pool::Postgres(p) = &pool else {
                unreachable!("a PostgreSQL target opens a PostgreSQL pool")
            };
            let mut conn = p.acquire().await.map_err(db_err("connecting"))?;
            let result = async {
                let mut tx = conn
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(db_err("starting the snapshot transaction"))?;
                let (applied, notes) =
                    read_state::<sqlx::Postgres>(&mut tx, Backend::Postgres).await?;
                let report = schema::SchemaReport::decide(Backend::Postgres, &applied, &notes);
                let mut tables = BTreeMap::new();
                for t in catalog::tables_at(report.database_version) {
                    let (path, mut w) = table_writer(staging, t)?;
                    let n = dump::postgres::export_table(&mut tx, t, &mut w).await?;
                    finish_writer(&path, w)?;
                    tables.insert(t.name.to_owned(), n);
                }
                tx.commit()
                    .await
                    .map_err(db_err("ending the snapshot transaction"))?;
                Ok::<_, SqlStoreError>((report.database_version, tables))
            }
            .await;
            drop(conn);
            pool.close().await;
            result
        }
    }
}

fn table_writer(staging: &Path, t: &Table) -> Result<(PathBuf, BufWriter<File>), SqlStoreError> {
    let path = staging.join(t.bundle_path());
    let file = File::create(&path).map_err(io_err("writing a table export", &path, BACKUP_SAFE))?;
    Ok((path, BufWriter::new(file)))
}

fn finish_writer(path: &Path, mut w: BufWriter<File>) -> Result<(), SqlStoreError> {
    w.flush()
        .map_err(io_err("writing a table export", path, BACKUP_SAFE))
}

/// Refuse to back up a database this binary cannot read faithfully.
async fn check_backupable(pool: &Pool) -> Result<(), SqlStoreError> {
    let report = store::inspect(pool).await?;
    if let Some(refusal) = report.refusal() {
        pool.close().await;
        return Err(SqlStoreError::Refused(refusal));
    }
    if report.database_version == 0 {
        pool.close().await;
        return Err(SqlStoreError::BackupRefused(
            "the database is empty (no schema): nothing to back up, no bundle was written. Check \
             --data-dir or --database-url"
                .into(),
        ));
    }
    Ok(())
}

/// A bundle read and verified into a staging directory.
struct Verified {
    manifest: Manifest,
    /// Parsed rows per table, in catalog order.
    rows: Vec<(&'static Table, Vec<Vec<Cell>>)>,
    audit_entries: u64,
}

fn unreadable(bundle: &Path, file: Option<&str>, detail: impl std::fmt::Display) -> SqlStoreError {
    SqlStoreError::Bundle(BundleError::Unreadable {
        bundle: bundle.to_owned(),
        file: file.map(str::to_owned),
        detail: detail.to_string(),
    })
}

fn mismatch(bundle: &Path, file: &str, detail: impl std::fmt::Display) -> SqlStoreError {
    SqlStoreError::Bundle(BundleError::Mismatch {
        bundle: bundle.to_owned(),
        file: file.to_owned(),
        detail: detail.to_string(),
    })
}

fn unexpected(bundle: &Path, file: &str, detail: impl std::fmt::Display) -> SqlStoreError {
    SqlStoreError::Bundle(BundleError::Unexpected {
        bundle: bundle.to_owned(),
        file: file.to_owned(),
        detail: detail.to_string(),
    })
}

/// Check an entry path: relative, no `..`, under a known top-level name. Returns it `/`-joined.
fn safe_entry_path(bundle: &Path, raw: &Path, is_dir: bool) -> Result<String, SqlStoreError> {
    let shown = raw.to_string_lossy().into_owned();
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(unexpected(
                    bundle,
                    &shown,
                    "an absolute path or one that climbs out with `..`",
                ));
            }
        }
    }
    let rel = parts.join("/");
    let ok = match parts.first().map(String::as_str) {
        Some(MANIFEST) => parts.len() == 1 && !is_dir,
        Some("database") => {
            is_dir && parts.len() == 1
                || parts.len() == 2
                    && !is_dir
                    && parts[1]
                        .strip_suffix(".jsonl")
                        .is_some_and(|t| catalog::table(t).is_some())
        }
        Some(top) => BUNDLED_DIRS.contains(&top),
        None => false,
    };
    if !ok {
        return Err(unexpected(
            bundle,
            &shown,
            "not a manifest, table export, stacks/ or ca/ entry",
        ));
    }
    Ok(rel)
}

/// Read the whole bundle into `staging`, checking it against its manifest.
fn read_bundle(bundle: &Path, staging: &Path) -> Result<Manifest, SqlStoreError> {
    let file =
        File::open(bundle).map_err(|e| unreadable(bundle, None, format!("cannot open it: {e}")))?;
    let decoder = zstd::Decoder::new(BufReader::new(file))
        .map_err(|e| unreadable(bundle, None, format!("not a zstd stream: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut last: Option<String> = None;
    {
        let entries = archive.entries().map_err(|e| unreadable(bundle, None, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| unreadable(bundle, last.as_deref(), e))?;
            let kind = entry.header().entry_type();
            let raw = entry
                .path()
                .map_err(|e| unreadable(bundle, last.as_deref(), e))?
                .into_owned();
            let is_dir = kind.is_dir();
            if !(is_dir || kind.is_file()) {
                return Err(unexpected(
                    bundle,
                    &raw.to_string_lossy(),
                    format!("an entry of type {kind:?}: only files and directories are allowed"),
                ));
            }
            let rel = safe_entry_path(bundle, &raw, is_dir)?;
            last = Some(rel.clone());
            let dest = staging.join(&rel);
            if is_dir {
                fs::create_dir_all(&dest).map_err(|e| unreadable(bundle, Some(&rel), e))?;
                continue;
            }
            if seen.contains_key(&rel) {
                return Err(unexpected(bundle, &rel, "it appears twice"));
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| unreadable(bundle, Some(&rel), e))?;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let out = File::create(&dest).map_err(|e| unreadable(bundle, Some(&rel), e))?;
            let mut w = HashingWriter {
                inner: BufWriter::new(out),
                hasher: Sha256::new(),
                size: 0,
            };
            io::copy(&mut entry, &mut w).map_err(|e| unreadable(bundle, Some(&rel), e))?;
            w.flush().map_err(|e| unreadable(bundle, Some(&rel), e))?;
            let _ = set_mode(&dest, mode);
            seen.insert(rel, (w.size, hex::encode(w.hasher.finalize())));
        }
    }
    // Read the compressed stream to its very end so that the zstd checksum is checked too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        unreadable(
            bundle,
            None,
            format!(
                "after the last file ({}): {e}",
                last.as_deref().unwrap_or("none")
            ),
        )
    })?;

    let Some(_) = seen.get(MANIFEST) else {
        return Err(unreadable(
            bundle,
            Some(MANIFEST),
            "manifest.json is missing: the bundle is truncated or is not a dockmesh bundle",
        ));
    };
    let manifest_text =
        fs::read(staging.join(MANIFEST)).map_err(|e| unreadable(bundle, Some(MANIFEST), e))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_text)
        .map_err(|e| mismatch(bundle, MANIFEST, format!("is not a valid manifest: {e}")))?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(mismatch(
            bundle,
            MANIFEST,
            format!(
                "declares bundle format {}, this binary reads format {BUNDLE_FORMAT}",
                manifest.format
            ),
        ));
    }
    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            return Err(mismatch(
                bundle,
                MANIFEST,
                format!("lists {} twice", f.path),
            ));
        }
        match seen.get(&f.path) {
            None => {
                return Err(mismatch(
                    bundle,
                    &f.path,
                    "is listed in the manifest but missing from the bundle (truncated?)",
                ));
            }
            Some((size, _)) if *size != f.size => {
                return Err(mismatch(
                    bundle,
                    &f.path,
                    format!("has {size} bytes, the manifest says {}", f.size),
                ));
            }
            Some((_, sha)) if *sha != f.sha256 => {
                return Err(mismatch(
                    bundle,
                    &f.path,
                    format!("has SHA-256 {sha}, the manifest says {}", f.sha256),
                ));
            }
            Some(_) => {}
        }
    }
    for path in seen.keys() {
        if path != MANIFEST && !listed.contains(path.as_str()) {
            return Err(unexpected(bundle, path, "it is not listed in the manifest"));
        }
    }
    Ok(manifest)
}

/// Verify a bundle completely (files, rows, audit chain) into `staging`.
fn verify_bundle(bundle: &Path, staging: &Path) -> Result<Verified, SqlStoreError> {
    let manifest = read_bundle(bundle, staging)?;
    let binary = schema::binary_version(Backend::Sqlite);
    if manifest.schema_version > binary {
        return Err(SqlStoreError::Bundle(BundleError::Newer {
            bundle: bundle.to_owned(),
            bundle_version: manifest.schema_version,
            binary_version: binary,
            made_by: manifest.dockmesh_version.clone(),
        }));
    }
    let known = schema::known_migrations(Backend::Sqlite);
    if !known.iter().any(|k| k.version == manifest.schema_version) {
        return Err(mismatch(
            bundle,
            MANIFEST,
            format!(
                "declares schema version {}, which no migration has",
                manifest.schema_version
            ),
        ));
    }
    let mut rows = Vec::new();
    for t in catalog::tables_at(manifest.schema_version) {
        let path = t.bundle_path();
        let Some(expected) = manifest.tables.get(t.name) else {
            return Err(mismatch(
                bundle,
                MANIFEST,
                format!("does not list table {}", t.name),
            ));
        };
        let f = File::open(staging.join(&path)).map_err(|_| {
            mismatch(
                bundle,
                &path,
                "is missing: every table of the schema must be in the bundle",
            )
        })?;
        let mut parsed = Vec::new();
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| unreadable(bundle, Some(&path), e))?;
            parsed.push(dump::parse_row(t, i as u64 + 1, &line)?);
        }
        if parsed.len() as u64 != *expected {
            return Err(mismatch(
                bundle,
                &path,
                format!("holds {} rows, the manifest says {expected}", parsed.len()),
            ));
        }
        rows.push((t, parsed));
    }
    for name in manifest.tables.keys() {
        if !catalog::tables_at(manifest.schema_version).any(|t| t.name == name) {
            return Err(mismatch(
                bundle,
                MANIFEST,
                format!(
                    "lists table {name}, which schema version {} does not have",
                    manifest.schema_version
                ),
            ));
        }
    }
    let audit_entries = verify_bundle_chain(bundle, &rows)?;
    Ok(Verified {
        manifest,
        rows,
        audit_entries,
    })
}

/// Walk the audit chain held by a bundle (and compare it with the recorded head).
fn verify_bundle_chain(
    bundle: &Path,
    rows: &[(&'static Table, Vec<Vec<Cell>>)],
) -> Result<u64, SqlStoreError> {
    let Some((_, log)) = rows.iter().find(|(t, _)| t.name == "audit_log") else {
        return Ok(0);
    };
    let path = "database/audit_log.jsonl";
    let mut v = ChainVerifier::default();
    let mut last = (0u64, dockmesh_core::audit::GENESIS_HASH.to_owned());
    for (i, r) in log.iter().enumerate() {
        let entry = entry_from_cells(r).ok_or_else(|| {
            mismatch(
                bundle,
                path,
                format!("line {} is not an audit entry", i + 1),
            )
        })?;
        if !v.push(&entry) {
            let b = v
                .finish()
                .first_broken
                .expect("a refused entry is a broken link");
            return Err(mismatch(
                bundle,
                path,
                format!(
                    "holds an audit chain broken at entry {}: {}",
                    b.seq, b.reason
                ),
            ));
        }
        last = (entry.seq, entry.hash);
    }
    let head = rows
        .iter()
        .find(|(t, _)| t.name == "audit_head")
        .and_then(|(_, r)| r.first())
        .and_then(|cells| match (&cells[1], &cells[2]) {
            (Cell::Int(Some(s)), Cell::Text(Some(h))) => Some((*s, h.clone())),
            _ => None,
        });
    if let Some(b) = store::head_mismatch(head, &last) {
        return Err(mismatch(
            bundle,
            "database/audit_head.jsonl",
            format!(
                "does not match the audit chain at entry {}: {}",
                b.seq, b.reason
            ),
        ));
    }
    Ok(v.finish().entries_checked)
}

fn entry_from_cells(c: &[Cell]) -> Option<AuditEntry> {
    match c {
        [
            Cell::Int(Some(seq)),
            Cell::Ts(Some(at)),
            Cell::Text(Some(actor)),
            Cell::Text(Some(action)),
            Cell::Text(Some(target)),
            Cell::Json(detail),
            Cell::Text(Some(prev_hash)),
            Cell::Text(Some(hash)),
        ] => Some(AuditEntry {
            seq: u64::try_from(*seq).ok()?,
            event: AuditEvent {
                at: at.0,
                actor: actor.clone(),
                action: action.clone(),
                target: target.clone(),
                detail: serde_json::from_value(detail.clone()).ok()?,
            },
            prev_hash: prev_hash.clone(),
            hash: hash.clone(),
        }),
        _ => None,
    }
}

/// Rows a database holds, per known table (`None` when it cannot be known).
async fn existing_data(target: &DbTarget) -> Result<Option<BTreeMap<String, i64>>, SqlStoreError> {
    if let DbTarget::Sqlite { path } = target
        && !path.exists()
    {
        return Ok(Some(BTreeMap::new()));
    }
    let pool = match target {
        DbTarget::Sqlite { path } => Pool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(store::sqlite_inspect_options(path))
                .await
                .map_err(|source| SqlStoreError::Connect {
                    url: target.display(),
                    source,
                })?,
        ),
        DbTarget::Postgres { .. } => connect(target, false).await?,
    };
    let result = async {
        let report = store::inspect(&pool).await?;
        let mut counts = BTreeMap::new();
        for t in catalog::TABLES {
            if t.seeded {
                continue;
            }
            let acquire_err = |source| SqlStoreError::Database {
                what: "connecting".into(),
                safe: "Nothing was changed.",
                source,
            };
            let n = match &pool {
                Pool::Sqlite(p) => {
                    let mut c = p.acquire().await.map_err(acquire_err)?;
                    if t.name == "audit_log" {
                        data_audit_rows_sqlite(&mut c, SQLITE_TABLE_EXISTS).await?
                    } else {
                        dump::sqlite::count_rows(&mut c, t.name, SQLITE_TABLE_EXISTS).await?
                    }
                }
                Pool::Postgres(p) => {
                    let mut c = p.acquire().await.map_err(acquire_err)?;
                    if t.name == "audit_log" {
                        data_audit_rows_pg(&mut c, PG_TABLE_EXISTS).await?
                    } else {
                        dump::postgres::count_rows(&mut c, t.name, PG_TABLE_EXISTS).await?
                    }
                }
            };
            if let Some(n) = n
                && n > 0
            {
                counts.insert(t.name.to_owned(), n);
            }
        }
        if matches!(report.status, SchemaStatus::RefusedNewer { .. }) {
            counts.insert(
                format!(
                    "(tables of schema version {}, unknown to this binary)",
                    report.database_version
                ),
                1,
            );
        }
        Ok::<_, SqlStoreError>(Some(counts))
    }
    .await;
    pool.close().await;
    result
}

/// Audit entries that count as data (the schema-migration entries do not).
macro_rules! data_audit_rows {
    ($f:ident, $conn:ty) => {
        async fn $f(
            conn: &mut $conn,
            exists_sql: &'static str,
        ) -> Result<Option<i64>, SqlStoreError> {
            let db = |source| SqlStoreError::Database {
                what: "counting the audit entries".into(),
                safe: "Nothing was changed.",
                source,
            };
            let exists: bool = sqlx::query_scalar(exists_sql)
                .bind("audit_log")
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            if !exists {
                return Ok(None);
            }
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action <> $1")
                .bind(dockmesh_core::audit::SERVER_SCHEMA_MIGRATE)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
            Ok(Some(n))
        }
    };
}
data_audit_rows!(data_audit_rows_sqlite, sqlx::SqliteConnection);
data_audit_rows!(data_audit_rows_pg, sqlx::PgConnection);

fn stamp(now: Timestamp) -> String {
    now.strftime("%Y%m%d%H%M%S").to_string()
}

const RESTORE_SAFE: &str = "Nothing was changed.";

/// Restore a bundle into the database at `target` and, when given, into `data_dir`.
///
/// Everything is verified before anything is changed: a truncated, altered or unsafe bundle,
/// a bundle whose schema is newer than this binary, or (without `force`) a target database
/// that holds data, is refused with nothing changed. With `dry_run` nothing is ever changed.
pub async fn restore(
    bundle: &Path,
    target: &DbTarget,
    data_dir: Option<&Path>,
    options: RestoreOptions,
) -> Result<RestoreReport, SqlStoreError> {
    let staging = match data_dir {
        Some(dd) if !options.dry_run => {
            fs::create_dir_all(dd).map_err(io_err(
                "creating the data directory",
                dd,
                RESTORE_SAFE,
            ))?;
            tempfile::Builder::new()
                .prefix(".dockmesh-restore-")
                .tempdir_in(dd)
        }
        _ => tempfile::Builder::new()
            .prefix("dockmesh-restore-")
            .tempdir(),
    }
    .map_err(io_err(
        "creating a staging directory",
        Path::new("."),
        RESTORE_SAFE,
    ))?;

    let staged = staging.path().to_owned();
    let bundle_owned = bundle.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_bundle(&bundle_owned, &staged))
        .await
        .map_err(|e| {
            SqlStoreError::RestoreRefused(format!(
                "verifying the bundle stopped: {e}. Nothing was changed"
            ))
        })??;

    let existing = existing_data(target).await?;
    let replaced_data = existing.as_ref().is_some_and(|c| !c.is_empty());
    if replaced_data && !options.force {
        let what = existing
            .unwrap_or_default()
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let keep = match target {
            DbTarget::Sqlite { path } => format!(
                "the current file is kept as {}.pre-restore-<time>",
                path.display()
            ),
            DbTarget::Postgres { .. } => {
                "the current tables are kept in the schema dockmesh_pre_restore_<time>".into()
            }
        };
        return Err(SqlStoreError::RestoreRefused(format!(
            "the database {} holds data ({what}); the restore would replace it. Nothing was changed. \
             Pass --force to replace it ({keep})",
            target.display()
        )));
    }

    let mut report = RestoreReport {
        tables: verified
            .rows
            .iter()
            .map(|(t, r)| (t.name.to_owned(), r.len() as u64))
            .collect(),
        manifest: verified.manifest.clone(),
        dry_run: options.dry_run,
        database: target.display(),
        replaced_data,
        kept: Vec::new(),
        directories: match data_dir {
            Some(_) => verified.manifest.directories.clone(),
            None => Vec::new(),
        },
        migrated: None,
        audit_entries: verified.audit_entries,
    };
    if options.dry_run {
        return Ok(report);
    }

    // A running server holds this lock: the restore would replace the database underneath it.
    if let DbTarget::Sqlite { path } = target
        && let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(io_err(
            "creating the database's directory",
            parent,
            RESTORE_SAFE,
        ))?;
    }
    let lock = ServerLock::acquire(target, "dockmesh restore").await?;
    let result = replace(verified, staging.path(), target, data_dir, &mut report).await;
    lock.release().await;
    result?;
    Ok(report)
}

/// Replace the database (and the bundled data-directory folders) with a verified bundle.
async fn replace(
    verified: Verified,
    staging: &Path,
    target: &DbTarget,
    data_dir: Option<&Path>,
    report: &mut RestoreReport,
) -> Result<(), SqlStoreError> {
    let now = stamp(Timestamp::now());
    let version = verified.manifest.schema_version;
    match target {
        DbTarget::Sqlite { path } => {
            let kept = restore_sqlite(path, version, verified.rows, &now).await?;
            report.kept.extend(kept);
        }
        DbTarget::Postgres { .. } => {
            if let Some(k) = restore_postgres(target, version, verified.rows, &now).await? {
                report.kept.push(k);
            }
        }
    }
    // Migrate forward with the ordinary open (guard, log line, audit event).
    let key = OpenOptions::for_target(target, data_dir);
    let (store, opened) = SqlStore::open_with(target, &key).await?;
    if !opened.applied.is_empty() {
        report.migrated = Some((opened.from, opened.to));
    }
    // A bundle carries no anchor (it is bound to the source's key): the restored chain is
    // verified against its head, then anchored with this data directory's key.
    let chain = crate::audit::verify(&store, false).await;
    let chain = match chain {
        Ok(c) if c.first_broken.is_none() => {
            crate::audit::anchor_head(&store, true).await.map(|()| c)
        }
        other => other,
    };
    let chain = chain.map_err(|e| {
        SqlStoreError::RestoreRefused(format!(
            "the restored audit chain could not be checked: {e}. The restored database is in place; \
             the replaced one was kept"
        ))
    })?;
    store.close().await;
    if let Some(b) = chain.first_broken {
        return Err(SqlStoreError::RestoreRefused(format!(
            "the restored audit chain is broken at entry {}: {}. The restored database is in place; \
             the replaced one was kept",
            b.seq, b.reason
        )));
    }
    report.audit_entries = chain.entries_checked;

    if let Some(dd) = data_dir {
        for d in &verified.manifest.directories {
            let dest = dd.join(d);
            if dest.exists() {
                let kept = dd.join(format!("{d}.pre-restore-{now}"));
                fs::rename(&dest, &kept).map_err(io_err(
                    format!("keeping the current {d}/ aside"),
                    &dest,
                    "The database was restored; the data directory's files were not.",
                ))?;
                report
                    .kept
                    .push(format!("the replaced {d}/ as {}", kept.display()));
            }
            fs::rename(staging.join(d), &dest).map_err(io_err(
                format!("moving the restored {d}/ into place"),
                &dest,
                "The database was restored; the previous directory was kept aside.",
            ))?;
        }
    }
    Ok(())
}

/// Rows per table, imported in one transaction on one connection.
macro_rules! import_all {
    ($m:ident, $conn:expr, $rows:expr) => {{
        let mut tx = $conn
            .begin()
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "starting the restore transaction".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
        for (t, rows) in $rows {
            if t.seeded {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", t.name)))
                    .execute(&mut *tx)
                    .await
                    .map_err(|source| SqlStoreError::Database {
                        what: format!("emptying {}", t.name),
                        safe: RESTORE_SAFE,
                        source,
                    })?;
            }
            dump::$m::import_rows(&mut tx, t, rows).await?;
        }
        tx.commit()
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "committing the restore".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
    }};
}

/// Apply the binary's migrations up to `version` on one connection (no audit event: the
/// restored log brings its own history).
async fn migrate_fresh<C: sqlx::migrate::Migrate>(
    backend: Backend,
    conn: &mut C,
    version: i64,
) -> Result<(), SqlStoreError> {
    schema::migrator(backend)
        .run_direct(Some(version), conn, false)
        .await
        .map_err(|source| SqlStoreError::Migrate { from: 0, source })
}

async fn restore_sqlite(
    path: &Path,
    version: i64,
    rows: Vec<(&'static Table, Vec<Vec<Cell>>)>,
    now: &str,
) -> Result<Vec<String>, SqlStoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| crate::SQLITE_FILE_NAME.to_owned());
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent).map_err(io_err(
            "creating the database's directory",
            parent,
            RESTORE_SAFE,
        ))?;
    }
    let tmp = path.with_file_name(format!("{name}.restore-{now}.tmp"));
    let cleanup = |p: &Path| {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let _ = fs::remove_file(format!("{}{suffix}", p.display()));
        }
    };
    cleanup(&tmp);
    let built = async {
        let mut conn = sqlx::SqliteConnection::connect_with(&store::sqlite_options(&tmp, true))
            .await
            .map_err(|source| SqlStoreError::Connect {
                url: format!("sqlite://{}", tmp.display()),
                source,
            })?;
        migrate_fresh(Backend::Sqlite, &mut conn, version).await?;
        import_all!(sqlite, conn, rows);
        // Leave one self-contained file behind (no WAL) before it is moved.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "checkpointing the restored database".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
        conn.close()
            .await
            .map_err(|source| SqlStoreError::Database {
                what: "closing the restored database".into(),
                safe: RESTORE_SAFE,
                source,
            })?;
        Ok::<(), SqlStoreError>(())
    }
    .await;
    if let Err(e) = built {
        cleanup(&tmp);
        return Err(e);
    }
    if path.exists() {
        // Close cleanly once so that the current WAL is folded into the file that is kept.
        if let Ok(mut c) = sqlx::SqliteConnection::connect_with(
            &sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(store::SQLITE_BUSY_TIMEOUT),
        )
        .await
        {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&mut c)
                .await;
            let _ = c.close().await;
        }
    }
    let swapped = swap_in(path, &tmp, &name, now);
    if swapped.is_err() {
        cleanup(&tmp);
    }
    swapped
}

/// Put the built database `tmp` at `path` so that a database file exists at `path` at every
/// moment: the current file is hard-linked (copied where links are not supported) to
/// `<name>.pre-restore-<now>`, its `-wal`/`-shm` are moved beside that copy (a WAL left beside
/// the new file would be replayed into it), the new file is renamed over `path` (one atomic
/// step), and the directory is synced so the swap survives a crash.
fn swap_in(path: &Path, tmp: &Path, name: &str, now: &str) -> Result<Vec<String>, SqlStoreError> {
    let sidecar = |p: &Path, suffix: &str| PathBuf::from(format!("{}{suffix}", p.display()));
    File::open(tmp).and_then(|f| f.sync_all()).map_err(io_err(
        "syncing the restored database",
        tmp,
        "The current database is unchanged; the restored copy was removed.",
    ))?;
    for suffix in ["-wal", "-shm"] {
        let _ = fs::remove_file(sidecar(tmp, suffix));
    }
    let mut kept = Vec::new();
    if path.exists() {
        // Never overwrite an earlier kept database (two restores within one second).
        let keep = (0..)
            .map(|n| match n {
                0 => path.with_file_name(format!("{name}.pre-restore-{now}")),
                n => path.with_file_name(format!("{name}.pre-restore-{now}-{n}")),
            })
            .find(|k| !k.exists() && !sidecar(k, "-wal").exists())
            .expect("some name is free");
        fs::hard_link(path, &keep)
            .or_else(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    Err(e)
                } else {
                    fs::copy(path, &keep).map(|_| ())
                }
            })
            .map_err(io_err(
                "keeping the current database aside",
                path,
                "The current database is unchanged; the restored copy was removed.",
            ))?;
        for suffix in ["-wal", "-shm"] {
            let side = sidecar(path, suffix);
            if side.exists() {
                fs::rename(&side, sidecar(&keep, suffix)).map_err(io_err(
                    "keeping the current database's WAL aside",
                    &side,
                    "The current database is unchanged; the restored copy was removed.",
                ))?;
            }
        }
        kept.push(format!("the replaced database as {}", keep.display()));
    }
    fs::rename(tmp, path).map_err(io_err(
        "moving the restored database into place",
        path,
        "The current database is still in place (a copy was kept aside).",
    ))?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        sync_dir(dir).map_err(io_err(
            "syncing the database's directory",
            dir,
            "The restored database is in place; the replaced one was kept aside.",
        ))?;
    }
    Ok(kept)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

async fn restore_postgres(
    target: &DbTarget,
    version: i64,
    rows: Vec<(&'static Table, Vec<Vec<Cell>>)>,
    now: &str,
) -> Result<Option<String>, SqlStoreError> {
    let DbTarget::Postgres { url } = target else {
        unreachable!("called for PostgreSQL targets")
    };
    let db = |what: &'static str| {
        move |source| SqlStoreError::Database {
            what: what.to_owned(),
            safe: "The restore transaction was rolled back; nothing was changed.",
            source,
        }
    };
    let opts: sqlx::postgres::PgConnectOptions =
        url.parse()
            .map_err(|e: sqlx::Error| SqlStoreError::InvalidUrl {
                url: target.display(),
                reason: e.to_string(),
            })?;
    let mut conn = sqlx::PgConnection::connect_with(&opts)
        .await
        .map_err(|source| SqlStoreError::Connect {
            url: target.display(),
            source,
        })?;
    let mut tx = conn
        .begin()
        .await
        .map_err(db("starting the restore transaction"))?;
    let schema_name: Option<String> = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *tx)
        .await
        .map_err(db("reading the current schema"))?;
    let Some(schema_name) = schema_name else {
        return Err(SqlStoreError::RestoreRefused(
            "the PostgreSQL connection has no current schema (search_path names no existing schema); \
             nothing was changed. Create the schema or fix search_path"
                .into(),
        ));
    };
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = $1")
            .bind(&schema_name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("listing the current tables"))?;
    let mut kept = None;
    if tables > 0 {
        let keep = format!("dockmesh_pre_restore_{now}");
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER SCHEMA {} RENAME TO {}",
            quote(&schema_name),
            quote(&keep)
        )))
        .execute(&mut *tx)
        .await
        .map_err(db(
            "keeping the current schema aside (ALTER SCHEMA … RENAME)",
        ))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            quote(&schema_name)
        )))
        .execute(&mut *tx)
        .await
        .map_err(db("creating a fresh schema"))?;
        kept = Some(format!(
            "the replaced tables in PostgreSQL schema {keep} (drop it with `DROP SCHEMA {keep} CASCADE` once the restore is confirmed)"
        ));
    }
    migrate_fresh(Backend::Postgres, &mut *tx, version).await?;
    {
        let conn: &mut sqlx::PgConnection = &mut tx;
        import_all!(postgres, conn, rows);
    }
    // Identity columns continue after the restored ids.
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('deploys', 'id'), (SELECT COALESCE(max(id), 0) + 1 FROM deploys), false)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db("moving the deploy id sequence past the restored rows"))?;
    tx.commit().await.map_err(db("committing the restore"))?;
    let _ = conn.close().await;
    Ok(kept)
}

impl SqlStore {
    /// Every row of every table, each column in the canonical form a bundle uses, keyed by
    /// table name (rows in key order). For inspection and for comparing two databases, whatever
    /// their backends.
    pub async fn dump_tables(
        &self,
    ) -> Result<BTreeMap<String, Vec<serde_json::Value>>, SqlStoreError> {
        let version = self.schema_report().await?.database_version;
        let mut out = BTreeMap::new();
        for t in catalog::tables_at(version) {
            let mut buf: Vec<u8> = Vec::new();
            match &self.pool {
                Pool::Sqlite(p) => {
                    let mut c = p
                        .acquire()
                        .await
                        .map_err(|source| SqlStoreError::Database {
                            what: "connecting".into(),
                            safe: "Nothing was changed.",
                            source,
                        })?;
                    dump::sqlite::export_table(&mut c, t, &mut buf).await?;
                }
                Pool::Postgres(p) => {
                    let mut c = p
                        .acquire()
                        .await
                        .map_err(|source| SqlStoreError::Database {
                            what: "connecting".into(),
                            safe: "Nothing was changed.",
                            source,
                        })?;
                    dump::postgres::export_table(&mut c, t, &mut buf).await?;
                }
            }
            let rows = buf
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).expect("the exporter writes JSON"))
                .collect();
            out.insert(t.name.to_owned(), rows);
        }
        Ok(out)
    }
}
