//! A SQLite database and its keys are private: the directory made for them is 0700, the
//! database file (and with it SQLite's `-wal` and `-shm`, which take the database's mode) 0600,
//! whatever the umask. Files of ours found more open are tightened when opened.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Create `dir` and missing parents 0700 (an existing directory is left as it is).
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Create `path` empty and 0600 unless it exists (SQLite takes an empty file as a new
/// database, and gives its `-wal` and `-shm` the database file's mode).
pub(crate) fn create_file(path: &Path) -> io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Make `path` 0600 when it exists, is ours and is open to others.
fn tighten(path: &Path) -> io::Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_file()
        && meta.uid() == rustix::process::geteuid().as_raw()
        && meta.mode() & 0o077 != 0
    {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Tighten a SQLite database and its `-wal` and `-shm` files to 0600.
pub(crate) fn tighten_sqlite(db: &Path) -> Result<(), (PathBuf, io::Error)> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        tighten(&path).map_err(|e| (path, e))?;
    }
    Ok(())
}
