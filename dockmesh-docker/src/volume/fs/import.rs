//! An import into the directory: each checked entry created under it, never through a link,
//! with syncs in the background and each file read back as soon as it is written.

use super::super::Limits;
use super::super::manifest::escape_path;
use super::super::policy::{Checked, CheckedKind, Checker, Layout};
use super::super::reader::{Event, Mtime, Reader};
use super::readback::{Hashed, Hasher};
use super::{HOLE, SYNC_EVERY};
use bytes::Bytes;
use futures_util::stream::{Stream, StreamExt};
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Write a checked, canonical stream (as an import's transform hands to the engine, named in
/// [`Layout::Carrier`]) into the empty directory `root`. Every entry is checked again on the
/// way. When the stream ends, the directories get their owners, modes and times (last, so that
/// writing their children changes none of it) and the file system is synced: on success every
/// byte is on disk. Each regular file is read back as soon as it is written, on a thread of
/// its own; what it held is in the result, for [`read_manifest`].
pub(crate) async fn write_tree<S>(root: PathBuf, body: S) -> Result<Written, io::Error>
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        let mut tree = TreeWriter::new(root)?;
        while let Some(chunk) = rx.blocking_recv() {
            tree.push(chunk)?;
        }
        tree.finish()
    });
    let mut body = std::pin::pin!(body);
    let mut failed = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| io::Error::other(format!("the writing thread failed: {e}")))?;
    match failed {
        Some(e) => Err(e),
        None => written,
    }
}

/// What [`write_tree`] did.
#[derive(Debug)]
pub(crate) struct Written {
    /// How many syncs ran while the import went on.
    pub(crate) background_syncs: u32,
    /// How long the final sync took.
    pub(crate) synced: Duration,
    /// The files read back while the import went on.
    pub(super) hashed: Hashed,
}

/// A regular file being written and how far.
struct OpenFile {
    file: File,
    entry: Checked,
    size: u64,
    pos: u64,
}

pub(super) struct TreeWriter {
    root: PathBuf,
    reader: Reader,
    checker: Checker,
    file: Option<OpenFile>,
    dirs: Vec<Checked>,
    syncer: Syncer,
    hasher: Hasher,
}

/// Syncs the volume's file system on a thread of its own while the import goes on, every
/// [`SYNC_EVERY`] bytes written (a sync due while one runs waits for it; more are dropped), so
/// that the disk writes the data as it comes instead of all of it in the final sync, which then
/// finds little left to do. The kernel would otherwise start writing back only after 30 s or once a
/// tenth of the memory is dirty: on a machine with memory to spare, after the whole volume.
///
/// The final sync uses the same open directory: a write error is reported to each open file
/// once, so a background sync that saw it keeps it and hands it to [`Syncer::finish`]. Dropped
/// without `finish` (a failed import), the thread ends after the sync it is running, and
/// nobody waits for it.
struct Syncer {
    dir: std::sync::Arc<File>,
    asks: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<u32>>,
    /// Bytes written since the last sync was asked for.
    unsynced: u64,
}

impl Syncer {
    fn new(root: &Path) -> io::Result<Self> {
        let dir = std::sync::Arc::new(File::open(root)?);
        let (asks, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let on_thread = dir.clone();
        let thread = std::thread::Builder::new()
            .name("volume-sync".into())
            .spawn(move || {
                let mut done = 0;
                while asked.recv().is_ok() {
                    rustix::fs::syncfs(&*on_thread)?;
                    done += 1;
                }
                Ok(done)
            })?;
        Ok(Syncer {
            dir,
            asks,
            thread,
            unsynced: 0,
        })
    }

    /// `n` more bytes were written: start a sync when one is due, unless one is waiting to start.
    fn wrote(&mut self, n: u64) {
        self.unsynced += n;
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            // Full: a sync is already asked for. Gone: one failed, and `finish` says so.
            let _ = self.asks.try_send(());
        }
    }

    /// Wait for the background syncs, then sync once more; the first error of any of them.
    /// How many syncs ran in the background, and how long the last one took.
    fn finish(self) -> io::Result<(u32, Duration)> {
        let Syncer {
            dir, asks, thread, ..
        } = self;
        drop(asks);
        let done = thread
            .join()
            .map_err(|_| io::Error::other("the syncing thread panicked"))??;
        let syncing = std::time::Instant::now();
        rustix::fs::syncfs(&*dir)?;
        Ok((done, syncing.elapsed()))
    }
}

impl TreeWriter {
    pub(super) fn new(root: PathBuf) -> io::Result<Self> {
        Ok(TreeWriter {
            syncer: Syncer::new(&root)?,
            root,
            reader: Reader::new(Limits::default()),
            checker: Checker::new(Layout::Carrier, Limits::default()),
            file: None,
            dirs: Vec::new(),
            hasher: Hasher::new()?,
        })
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn push(&mut self, chunk: Bytes) -> io::Result<()> {
        let mut failure = None;
        let mut events = Vec::new();
        let parsed = self.reader.feed(chunk, &mut |event| {
            events.push(event);
            Ok(())
        });
        if let Err(e) = parsed {
            return Err(io::Error::other(e.to_string()));
        }
        for event in events {
            let step = match event {
                Event::Entry(raw) => match self.checker.check(raw) {
                    Ok(entry) => self.begin(entry),
                    Err(e) => Err(io::Error::other(e.to_string())),
                },
                Event::Data(bytes) => self.data(&bytes),
                Event::EntryEnd => self.end(),
            };
            if let Err(e) = step {
                failure = Some(e);
                break;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn begin(&mut self, entry: Checked) -> io::Result<()> {
        let path = self.path(&entry.path);
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        match &entry.kind {
            CheckedKind::Dir => {
                if !entry.path.is_empty() {
                    fs::create_dir(&path).map_err(with_path)?;
                }
                self.dirs.push(entry);
            }
            CheckedKind::File { size } => {
                // Readable too: it is read back once it is written.
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .mode(0o600)
                    .open(&path)
                    .map_err(with_path)?;
                let size = *size;
                self.file = Some(OpenFile {
                    file,
                    entry,
                    size,
                    pos: 0,
                });
            }
            CheckedKind::Symlink { target } => {
                std::os::unix::fs::symlink(OsStr::from_bytes(target), &path).map_err(with_path)?;
                set_meta_path(&path, &entry, false).map_err(with_path)?;
            }
            CheckedKind::HardLink { target } => {
                fs::hard_link(self.path(target), &path).map_err(with_path)?;
            }
            CheckedKind::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| with_path(e.into()))?;
                set_meta_path(&path, &entry, true).map_err(with_path)?;
            }
        }
        Ok(())
    }

    /// Write a piece of the current file's content where it goes, each run of data with one
    /// `pwrite` straight from the piece (no copy); an aligned 4 KiB block of zeros that the
    /// piece holds whole is skipped, so it stays a hole.
    pub(super) fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("content outside a regular file"));
        };
        let start = f.pos;
        let mut run: Option<usize> = None;
        let mut i = 0;
        while i < bytes.len() {
            let n = (HOLE - ((start + i as u64) % HOLE as u64) as usize).min(bytes.len() - i);
            let hole = n == HOLE && bytes[i..i + n].iter().all(|&b| b == 0);
            match (hole, run) {
                (true, Some(from)) => {
                    f.file.write_all_at(&bytes[from..i], start + from as u64)?;
                    run = None;
                }
                (false, None) => run = Some(i),
                _ => {}
            }
            i += n;
        }
        if let Some(from) = run {
            f.file.write_all_at(&bytes[from..], start + from as u64)?;
        }
        f.pos += bytes.len() as u64;
        self.syncer.wrote(bytes.len() as u64);
        Ok(())
    }

    pub(super) fn end(&mut self) -> io::Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        if f.pos != f.size {
            return Err(io::Error::other(format!(
                "{}: {} bytes of content where the header announced {}",
                escape_path(&f.entry.path),
                f.pos,
                f.size
            )));
        }
        // The length covers a hole at the end; owner before mode, so setuid bits stay.
        f.file.set_len(f.size)?;
        std::os::unix::fs::fchown(&f.file, Some(id(f.entry.uid)?), Some(id(f.entry.gid)?))?;
        f.file
            .set_permissions(Permissions::from_mode(f.entry.mode & 0o7777))?;
        for (name, value) in &f.entry.xattrs {
            rustix::fs::fsetxattr(
                &f.file,
                OsStr::from_bytes(name),
                value,
                rustix::fs::XattrFlags::empty(),
            )?;
        }
        f.file
            .set_times(FileTimes::new().set_modified(system_time(f.entry.mtime)))?;
        self.hasher.give(f.file);
        Ok(())
    }

    fn finish(self) -> io::Result<Written> {
        self.reader
            .finish()
            .and_then(|()| self.checker.finish())
            .map_err(|e| io::Error::other(e.to_string()))?;
        if self.file.is_some() {
            return Err(io::Error::other("the stream ended inside a file"));
        }
        for dir in self.dirs.iter().rev() {
            let path = self.path(&dir.path);
            set_meta_path(&path, dir, true)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        }
        let (background_syncs, synced) = self.syncer.finish()?;
        Ok(Written {
            background_syncs,
            synced,
            hashed: self.hasher.finish(),
        })
    }
}

fn id(n: u64) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::other(format!("owner id {n} does not fit this system")))
}

pub(super) fn system_time(t: Mtime) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos));
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + nanos
    }
}

/// Owner, then mode (not for a symbolic link, whose mode means nothing on Linux), extended
/// attributes and modification time, never following a link.
fn set_meta_path(path: &Path, e: &Checked, mode: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(id(e.uid)?), Some(id(e.gid)?))?;
    if mode {
        fs::set_permissions(path, Permissions::from_mode(e.mode & 0o7777))?;
    }
    for (name, value) in &e.xattrs {
        rustix::fs::lsetxattr(
            path,
            OsStr::from_bytes(name),
            value,
            rustix::fs::XattrFlags::empty(),
        )?;
    }
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    };
    let mtime = rustix::fs::Timespec {
        tv_sec: e.mtime.secs,
        tv_nsec: i64::from(e.mtime.nanos),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: now,
            last_modification: mtime,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}
