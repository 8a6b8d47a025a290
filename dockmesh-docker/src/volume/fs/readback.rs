//! Reading an import back: each regular file as soon as the import has finished it, on a
//! thread of its own while the import goes on, then the manifest of the whole directory once
//! the import is synced.
//!
//! The manifest comes from a walk of the directory, the export's own walk (so entries, their
//! order and hard links are found the same way), each entry handed to the same
//! [`ManifestBuilder`] as a stream's. A regular file's hash is the one read right after the
//! import finished the file when the file is still in the state it was read in: same device and
//! inode, size, modification and change times (writing to a file, changing its owner, mode or
//! attributes, and linking to it all move its change time). Any other file is read again.

use super::super::manifest::ManifestBuilder;
use super::super::policy::{Checked, CheckedKind};
use super::CHUNK;
use super::walk::{Visit, WalkError, at, walk};
use dockmesh_core::manifest::VolumeManifest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Files waiting to be read back; when the thread is this far behind, the next files are left
/// to the final walk rather than slowing the import down.
const QUEUE: usize = 64;

/// A file's state: device, inode, size, modification and change times (to the nanosecond).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// The files read back while an import went on: the state each was in when it was read, and
/// the SHA-256 of what it held then.
#[derive(Default, Debug)]
pub(crate) struct Hashed {
    pub(super) files: HashMap<(u64, u64), (Stamp, [u8; 32])>,
}

impl Hashed {
    /// The hash read earlier of the file `meta` describes, if it is still in that state.
    fn of(&self, meta: &fs::Metadata) -> Option<[u8; 32]> {
        let now = Stamp::of(meta);
        self.files
            .get(&(now.dev, now.ino))
            .filter(|(then, _)| *then == now)
            .map(|(_, digest)| *digest)
    }
}

/// The thread that reads back each file the import finishes.
pub(super) struct Hasher {
    files: Option<SyncSender<File>>,
    thread: Option<JoinHandle<Hashed>>,
    stop: Arc<AtomicBool>,
}

impl Hasher {
    pub(super) fn new() -> io::Result<Self> {
        let (files, queue) = sync_channel::<File>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("volume-read-back".into())
            .spawn(move || {
                let mut hashed = Hashed::default();
                let mut buf = vec![0u8; CHUNK];
                while let Ok(file) = queue.recv() {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    // A file that cannot be read here is read again by the final walk, which
                    // names what fails.
                    if let Ok(Some((stamp, digest))) = hash_file(&file, &mut buf) {
                        hashed.files.insert((stamp.dev, stamp.ino), (stamp, digest));
                    }
                }
                hashed
            })?;
        Ok(Hasher {
            files: Some(files),
            thread: Some(thread),
            stop,
        })
    }

    /// Hand over a file the import has finished (content, length, owner, mode, attributes and
    /// time all set), open for reading.
    pub(super) fn give(&self, file: File) {
        if let Some(files) = &self.files {
            // Full: left to the final walk. Gone: the thread ended, the same.
            let _ = files.try_send(file);
        }
    }

    /// Wait until every file handed over is read back.
    pub(super) fn finish(mut self) -> Hashed {
        drop(self.files.take());
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        // An import that failed: the thread drops what is queued and ends; nobody waits.
        self.stop.store(true, Ordering::Relaxed);
        drop(self.files.take());
    }
}

/// The file's content hash and the state it was in, unless the file changed while it was read.
fn hash_file(file: &File, buf: &mut [u8]) -> io::Result<Option<(Stamp, [u8; 32])>> {
    let before = Stamp::of(&file.metadata()?);
    let mut hash = Sha256::new();
    let mut at = 0u64;
    loop {
        let n = file.read_at(buf, at)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        at += n as u64;
    }
    let after = Stamp::of(&file.metadata()?);
    Ok((before == after && at == before.size).then(|| (before, hash.finalize().into())))
}

/// How the final walk came by the files' hashes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadBackCounts {
    /// Regular files whose hash was read while the import went on.
    pub(crate) during_import: u64,
    /// Regular files read by the final walk.
    pub(crate) at_the_end: u64,
}

struct ManifestWalk<'a> {
    builder: ManifestBuilder,
    hashed: &'a Hashed,
    buf: Vec<u8>,
    counts: ReadBackCounts,
}

impl Visit for ManifestWalk<'_> {
    fn entry(&mut self, path: &Path, meta: &fs::Metadata, entry: Checked) -> Result<(), WalkError> {
        self.builder.entry(&entry);
        if let CheckedKind::File { size } = entry.kind {
            match self.hashed.of(meta) {
                Some(digest) => {
                    self.builder.entry_hashed(&digest);
                    self.counts.during_import += 1;
                }
                None => {
                    let (buf, builder) = (&mut self.buf, &mut self.builder);
                    super::walk::read_sized(path, size, |file, want| {
                        let n = file.read(&mut buf[..want]).map_err(at(path))?;
                        builder.data(&buf[..n]);
                        Ok(n)
                    })?;
                    self.builder.entry_end();
                    self.counts.at_the_end += 1;
                }
            }
        }
        Ok(())
    }
}

/// The manifest of what the directory `root` holds, with the hashes `hashed` read earlier where
/// they still hold.
pub(super) fn tree_manifest(
    root: &Path,
    hashed: &Hashed,
) -> Result<(VolumeManifest, ReadBackCounts), WalkError> {
    let mut walker = ManifestWalk {
        builder: ManifestBuilder::default(),
        hashed,
        buf: vec![0u8; CHUNK],
        counts: ReadBackCounts::default(),
    };
    walk(root, &mut walker)?;
    Ok((walker.builder.finish(), walker.counts))
}
