//! The walk of a volume's directory, in the engine's order, each entry checked as a stream's.

use super::super::error::{Refusal, StreamError};
use super::super::manifest::escape_path;
use super::super::policy::{Checked, CheckedKind};
use super::super::reader::Mtime;
use super::CHUNK;
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the walk stopped.
#[derive(Debug)]
pub(super) enum WalkError {
    /// The consumer went away.
    Closed,
    Io(PathBuf, io::Error),
    Refused(StreamError),
}

pub(super) fn at(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
    move |e| WalkError::Io(path.to_path_buf(), e)
}

pub(super) fn changed(path: &Path) -> WalkError {
    WalkError::Io(
        path.to_path_buf(),
        io::Error::other(
            "the file changed size while it was read: stop the containers that write to the \
             volume and retry",
        ),
    )
}

/// What the walk hands each entry to.
pub(super) trait Visit {
    /// One entry, as it will be named in a stream, with the metadata it was made from and its
    /// path on this host.
    fn entry(&mut self, path: &Path, meta: &fs::Metadata, entry: Checked) -> Result<(), WalkError>;
}

/// Depth first, the entries of a directory in byte order of their names, each directory's
/// content right after it: the order of the engine's own walk (Go's `filepath.Walk`), so that
/// the first path of a hard-linked file is the same on both paths.
pub(super) fn walk(root: &Path, out: &mut impl Visit) -> Result<(), WalkError> {
    struct Level {
        dir: PathBuf,
        rel: Vec<u8>,
        names: std::vec::IntoIter<std::ffi::OsString>,
    }
    fn level(dir: PathBuf, rel: Vec<u8>) -> Result<Level, WalkError> {
        let mut names = fs::read_dir(&dir)
            .map_err(at(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(at(&dir))?;
        names.sort();
        Ok(Level {
            dir,
            rel,
            names: names.into_iter(),
        })
    }
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let meta = fs::symlink_metadata(root).map_err(at(root))?;
    emit(out, root, Vec::new(), &meta, &mut links)?;
    let mut stack = vec![level(root.to_path_buf(), Vec::new())?];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            continue;
        };
        let path = top.dir.join(&name);
        let child = if top.rel.is_empty() {
            name.into_vec()
        } else {
            [top.rel.as_slice(), b"/", name.as_bytes()].concat()
        };
        let meta = fs::symlink_metadata(&path).map_err(at(&path))?;
        if emit(out, &path, child.clone(), &meta, &mut links)? && meta.is_dir() {
            stack.push(level(path, child)?);
        }
    }
    Ok(())
}

/// Hand on one entry. `false` when it is skipped (a socket).
pub(super) fn emit(
    out: &mut impl Visit,
    path: &Path,
    rel: Vec<u8>,
    meta: &fs::Metadata,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<bool, WalkError> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        CheckedKind::Dir
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(at(path))?;
        CheckedKind::Symlink {
            target: target.into_os_string().into_vec(),
        }
    } else if ft.is_file() {
        match meta.nlink() > 1 {
            true => match links.entry((meta.dev(), meta.ino())) {
                MapEntry::Occupied(first) => CheckedKind::HardLink {
                    target: first.get().clone(),
                },
                MapEntry::Vacant(slot) => {
                    slot.insert(rel.clone());
                    CheckedKind::File { size: meta.len() }
                }
            },
            false => CheckedKind::File { size: meta.len() },
        }
    } else if ft.is_fifo() {
        CheckedKind::Fifo
    } else if ft.is_socket() {
        return Ok(false);
    } else {
        return Err(WalkError::Refused(StreamError::Refused {
            path: escape_path(&rel),
            offset: 0,
            reason: Refusal::SpecialFile {
                kind: if ft.is_char_device() {
                    "character device"
                } else {
                    "block device"
                },
            },
        }));
    };
    let entry = Checked {
        xattrs: read_xattrs(path)?,
        path: rel,
        kind,
        mode: meta.mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        mtime: Mtime {
            secs: meta.mtime(),
            nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        },
    };
    out.entry(path, meta, entry)?;
    Ok(true)
}

/// The entry's extended attributes that a transfer carries (`user.*`, `security.capability`).
/// Extended attributes: name and value, in the order the file system lists them.
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) fn read_xattrs(path: &Path) -> Result<Xattrs, WalkError> {
    let len = match rustix::fs::llistxattr_query(path) {
        Ok(0) => return Ok(Vec::new()),
        Ok(n) => n,
        // A file system without extended attributes has none to carry.
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(WalkError::Io(path.to_path_buf(), e.into())),
    };
    let mut names = vec![0u8; len];
    let n = rustix::fs::llistxattr(path, &mut names[..])
        .map_err(|e| WalkError::Io(path.to_path_buf(), e.into()))?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !(name == b"security.capability" || name.starts_with(b"user.")) {
            continue;
        }
        let name_os = OsStr::from_bytes(name);
        let size = rustix::fs::lgetxattr_query(path, name_os)
            .map_err(|e| WalkError::Io(path.to_path_buf(), e.into()))?;
        let mut value = vec![0u8; size];
        let n = rustix::fs::lgetxattr(path, name_os, &mut value[..])
            .map_err(|e| WalkError::Io(path.to_path_buf(), e.into()))?;
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

/// Read exactly `size` bytes of the regular file at `path`, each piece of at most `want` bytes
/// by `read` (which says how many it read), then make sure nothing follows. The file is opened
/// never through a link that took its place since it was looked at.
pub(super) fn read_sized(
    path: &Path,
    size: u64,
    mut read: impl FnMut(&mut File, usize) -> Result<usize, WalkError>,
) -> Result<(), WalkError> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(at(path))?;
    let mut left = size;
    while left > 0 {
        let n = read(&mut file, (CHUNK as u64).min(left) as usize)?;
        if n == 0 {
            return Err(changed(path));
        }
        left -= n as u64;
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(at(path))? != 0 {
        return Err(changed(path));
    }
    Ok(())
}
