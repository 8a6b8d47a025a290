//! The file-system fast path: a volume's data read and written in its directory on this host
//! instead of through the engine's archive endpoints.
//!
//! It runs only where the engine keeps the volume on this machine's file system and this
//! process may do everything the engine does there: a volume of the `local` driver without
//! options (a `local` volume with `type`/`device` options is a mount that exists only while a
//! container uses it), an engine reached through a Unix socket, and a process running as root.
//! Anything else goes through the archive endpoints.
//!
//! The path changes where the bytes come from and go to, nothing else: an export walks the
//! directory and writes every entry as the engine's archive reader would name it
//! ([`Layout::Carrier`]), and that stream passes through the same [`TarTransform`] (checker,
//! canonical writer, manifest) as the engine's. An import takes the stream the import's
//! transform has checked and re-written, checks it once more, and creates each entry under the
//! volume's directory, never through a symbolic link (every parent is a directory created by
//! this import, every file is created new with `O_NOFOLLOW`). While it writes, a thread of its
//! own syncs the file system every 32 MiB, so that the disk writes the volume as it comes and
//! the final sync has little left, and another reads back each regular file as soon as it is
//! finished. Once the import is synced, the same walk as the export's makes the manifest of
//! what the directory holds, each file's hash taken from that read when the file is still as
//! it was read (inode, size, modification and change times), else read again ([`readback`]);
//! the caller compares it with the source's, as on the archive path.
//!
//! What it keeps that the archive path loses: modification times to the nanosecond (files,
//! directories, links, FIFOs), extended attributes in the `user.*` namespace (the checker's
//! rule: `user.*` and `security.capability`; other namespaces are not read), and the holes of
//! sparse files (every aligned 4 KiB block of zeros is left unwritten, so a hole stays a hole;
//! a block of zeros that was written out on the source becomes a hole too, with the same
//! content). What it cannot keep either: access and change times. Unix sockets are skipped as
//! the engine skips them; device nodes are refused by name as on the archive path. The volume
//! must not change while it is read (its containers are stopped first, as on the archive
//! path): a file whose size changes while it is read fails the export, and no file is opened
//! through a symbolic link that took its place.
//!
//! [`TarTransform`]: super::TarTransform

mod export;
mod import;
mod readback;
#[cfg(test)]
mod tests;
mod walk;

pub(crate) use export::read_tree;
use export::walk_failure;
pub(crate) use import::{Written, write_tree};
pub(crate) use readback::ReadBackCounts;

use bollard::Docker;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Bytes per chunk handed on by the walk.
const CHUNK: usize = 256 * 1024;
/// The block size of hole detection on import.
const HOLE: usize = 4096;
/// Bytes of content an import writes between two syncs started in the background.
const SYNC_EVERY: u64 = 32 << 20;

/// Where the data of `volume` lives on this host, when the fast path may take it: a `local`
/// volume without options whose mount point is a directory here.
pub(crate) async fn local_root(docker: &Docker, volume: &str) -> Option<PathBuf> {
    let v = docker.inspect_volume(volume).await.ok()?;
    if !eligible(&v.driver, &v.options, &v.mountpoint) {
        return None;
    }
    let root = PathBuf::from(v.mountpoint);
    let meta = fs::symlink_metadata(&root).ok()?;
    meta.is_dir().then_some(root)
}

/// Whether a volume of this driver and these options, mounted there, keeps its data in that
/// directory for good: the `local` driver without options (with `type`/`device`/`o` it is a
/// mount made only while a container uses the volume).
fn eligible(driver: &str, options: &HashMap<String, String>, mountpoint: &str) -> bool {
    driver == "local" && options.is_empty() && !mountpoint.is_empty()
}

/// Whether the directory is empty (a volume the engine has just created).
pub(crate) fn is_empty_dir(root: &Path) -> bool {
    fs::read_dir(root).is_ok_and(|mut d| d.next().is_none())
}

/// The manifest of what the directory `root` holds after [`write_tree`] wrote it, with the
/// hashes it read back while it wrote where they still hold (see [`readback`]).
pub(crate) async fn read_manifest(
    root: PathBuf,
    volume: &str,
    written: Written,
) -> Result<(VolumeManifest, ReadBackCounts), RuntimeError> {
    let walked =
        tokio::task::spawn_blocking(move || readback::tree_manifest(&root, &written.hashed))
            .await
            .map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!("reading volume {volume} back: the walking thread failed: {e}"),
                )
            })?;
    walked.map_err(|e| walk_failure(volume, e))
}
