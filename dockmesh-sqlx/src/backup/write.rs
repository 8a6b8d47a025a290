//! Writing a bundle: the consistent database export, the data-directory copy, the manifest
//! and the `.tar.zst`.

use super::*;
use crate::catalog::{self, Table};
use crate::dump;
use crate::error::SqlStoreError;
use crate::schema::{self, Backend};
use crate::store::{self, Pool, SqlStore, connect, read_state};
use crate::target::DbTarget;
use jiff::Timestamp;
use sqlx::Connection;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Write a backup bundle of the database at `target` and of `<data_dir>/stacks` and
/// `<data_dir>/ca` to `out`, while the server may be running. The bundle appears at `out`
/// only once complete.
pub async fn backup(
    target: &DbTarget,
    data_dir: Option<&Path>,
    out: &Path,
) -> Result<BackupReport, SqlStoreError> {
    // File, tar and zstd work runs on blocking threads; only the database export is async.
    let staging = blocking({
        let out = out.to_owned();
        move || prepare(&out)
    })
    .await?;
    let created_at = Timestamp::now();
    let (schema_version, tables) = match export_database(target, staging.path()).await {
        Ok(exported) => exported,
        Err(e) => {
            let _ = blocking(move || {
                drop(staging);
                Ok(())
            })
            .await;
            return Err(e);
        }
    };
    let backend = target.backend();
    let data_dir = data_dir.map(Path::to_owned);
    let out = out.to_owned();
    blocking(move || {
        let exported = Exported {
            created_at,
            backend,
            schema_version,
            tables,
        };
        finish(&staging, data_dir.as_deref(), &out, exported)
    })
    .await
}

/// Run `f` on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SqlStoreError> + Send + 'static,
) -> Result<T, SqlStoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        SqlStoreError::BackupRefused(format!(
            "the backup stopped: {e}. No bundle was written; the database was not changed"
        ))
    })?
}

/// The bundle's directory and a private staging directory in it, with `database/`.
fn prepare(out: &Path) -> Result<tempfile::TempDir, SqlStoreError> {
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

    Ok(staging)
}

/// What the database export produced.
struct Exported {
    created_at: Timestamp,
    backend: Backend,
    schema_version: i64,
    tables: BTreeMap<String, u64>,
}

/// Copy the data directory, hash every staged file, write the manifest and the `.tar.zst`,
/// and move the bundle into place.
fn finish(
    staging: &tempfile::TempDir,
    data_dir: Option<&Path>,
    out: &Path,
    exported: Exported,
) -> Result<BackupReport, SqlStoreError> {
    let Exported {
        created_at,
        backend,
        schema_version,
        tables,
    } = exported;
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
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
        backend,
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

pub(super) fn write_tar(
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

/// A table export file, written by a blocking task from the chunks an export sends.
pub(super) struct TableFile {
    path: PathBuf,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

/// Start writing `t`'s export file; the returned sink feeds it.
pub(super) fn table_file(staging: &Path, t: &Table) -> (TableFile, dump::TableSink) {
    let path = staging.join(t.bundle_path());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let task = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = BufWriter::new(File::create(&path)?);
            while let Some(chunk) = rx.blocking_recv() {
                w.write_all(&chunk)?;
            }
            w.flush()
        })
    };
    (TableFile { path, task }, dump::TableSink::channel(tx))
}

impl TableFile {
    /// Wait for the file to be written (the sink must be dropped first).
    pub(super) async fn finish(self) -> Result<(), SqlStoreError> {
        let err = io_err("writing a table export", &self.path, BACKUP_SAFE);
        match self.task.await {
            Ok(r) => r.map_err(err),
            Err(e) => Err(err(io::Error::other(e.to_string()))),
        }
    }
}

/// Export one table through a [`TableFile`]; the file is complete when this returns `Ok`.
macro_rules! export_to_file {
    ($m:ident, $conn:expr, $staging:expr, $t:expr) => {{
        let (file, mut sink) = table_file($staging, $t);
        let exported = dump::$m::export_table($conn, $t, &mut sink).await;
        drop(sink);
        let written = file.finish().await;
        let n = exported?;
        written?;
        n
    }};
}

/// Export every table into `<staging>/database/`, consistently. Returns the schema version and
/// the rows per table.
pub(super) async fn export_database(
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
                    let n = export_to_file!(sqlite, &mut conn, staging, t);
                    tables.insert(t.name.to_owned(), n);
                }
                Ok::<_, SqlStoreError>((report.database_version, tables))
            }
            .await;
            let _ = conn.close().await;
            let _ = tokio::fs::remove_file(&snapshot).await;
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
                    let n = export_to_file!(postgres, &mut tx, staging, t);
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

/// Refuse to back up a database this binary cannot read faithfully.
pub(super) async fn check_backupable(pool: &Pool) -> Result<(), SqlStoreError> {
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
            let mut sink = dump::TableSink::memory();
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
                    dump::sqlite::export_table(&mut c, t, &mut sink).await?;
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
                    dump::postgres::export_table(&mut c, t, &mut sink).await?;
                }
            }
            let buf = sink.into_bytes();
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
