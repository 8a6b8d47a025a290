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

use super::Limits;
use super::error::{Refusal, StreamError};
use super::manifest::escape_path;
use super::policy::{Checked, CheckedKind, Checker, Layout};
use super::reader::{Event, Mtime, Reader, ZERO_BLOCK, padding};
use super::writer::encode_header;
use bollard::Docker;
use bytes::{Bytes, BytesMut};
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod readback;

pub(crate) use readback::ReadBackCounts;
use readback::{Hashed, Hasher};

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

/// Why the walk stopped.
#[derive(Debug)]
enum WalkError {
    /// The consumer went away.
    Closed,
    Io(PathBuf, io::Error),
    Refused(StreamError),
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> WalkError + '_ {
    move |e| WalkError::Io(path.to_path_buf(), e)
}

/// The volume's directory as a tar stream named in [`Layout::Carrier`], read on a blocking
/// thread and handed on in chunks of about 256 KiB through a small channel (so at most a few
/// MiB are in flight, whatever the volume's size). Dropping the stream stops the walk.
pub(crate) fn read_tree(
    root: PathBuf,
    volume: &str,
) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, RuntimeError>>(8);
    let volume = volume.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut out = Out {
            tx,
            buf: BytesMut::with_capacity(CHUNK * 2),
        };
        let failure = match walk(&root, &mut out).and_then(|()| out.end()) {
            Ok(()) | Err(WalkError::Closed) => return,
            Err(e) => walk_failure(&volume, e),
        };
        let _ = out.tx.blocking_send(Err(failure));
    });
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// What stopped a walk of `volume`'s directory, for its caller.
fn walk_failure(volume: &str, e: WalkError) -> RuntimeError {
    match e {
        WalkError::Io(path, e) => RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!(
                "reading volume {volume} from its directory failed at {}: {e}",
                path.display()
            ),
        )
        .with_source(e),
        WalkError::Refused(e) => super::engine::export_refused(volume, e),
        WalkError::Closed => RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("reading volume {volume} from its directory stopped"),
        ),
    }
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

struct Out {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, RuntimeError>>,
    buf: BytesMut,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), WalkError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// The end-of-archive marker, and what is left in the buffer.
    fn end(&mut self) -> Result<(), WalkError> {
        self.put(&ZERO_BLOCK)?;
        self.put(&ZERO_BLOCK)?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), WalkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| WalkError::Closed)
    }

    /// Read exactly `size` bytes of `file` into the stream, then its padding.
    fn content(&mut self, path: &Path, size: u64) -> Result<(), WalkError> {
        read_sized(path, size, |file, want| {
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let n = file.read(&mut self.buf[start..]).map_err(at(path))?;
            self.buf.truncate(start + n);
            if self.buf.len() >= CHUNK {
                self.flush()?;
            }
            Ok(n)
        })?;
        self.put(&ZERO_BLOCK[..padding(size) as usize])
    }
}

/// Read exactly `size` bytes of the regular file at `path`, each piece of at most `want` bytes
/// by `read` (which says how many it read), then make sure nothing follows. The file is opened
/// never through a link that took its place since it was looked at.
fn read_sized(
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

impl Visit for Out {
    /// The entry's header, then a regular file's content.
    fn entry(&mut self, path: &Path, _: &fs::Metadata, entry: Checked) -> Result<(), WalkError> {
        let mut header = Vec::with_capacity(1024);
        encode_header(&entry, Layout::Carrier, &mut header);
        self.put(&header)?;
        if let CheckedKind::File { size } = entry.kind {
            self.content(path, size)?;
        }
        Ok(())
    }
}

fn changed(path: &Path) -> WalkError {
    WalkError::Io(
        path.to_path_buf(),
        io::Error::other(
            "the file changed size while it was read: stop the containers that write to the \
             volume and retry",
        ),
    )
}

/// What the walk hands each entry to.
trait Visit {
    /// One entry, as it will be named in a stream, with the metadata it was made from and its
    /// path on this host.
    fn entry(&mut self, path: &Path, meta: &fs::Metadata, entry: Checked) -> Result<(), WalkError>;
}

/// Depth first, the entries of a directory in byte order of their names, each directory's
/// content right after it: the order of the engine's own walk (Go's `filepath.Walk`), so that
/// the first path of a hard-linked file is the same on both paths.
fn walk(root: &Path, out: &mut impl Visit) -> Result<(), WalkError> {
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
fn emit(
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
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn read_xattrs(path: &Path) -> Result<Xattrs, WalkError> {
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
    hashed: Hashed,
}

/// A regular file being written and how far.
struct OpenFile {
    file: File,
    entry: Checked,
    size: u64,
    pos: u64,
}

struct TreeWriter {
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
    fn new(root: PathBuf) -> io::Result<Self> {
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

    fn begin(&mut self, entry: Checked) -> io::Result<()> {
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
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
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

    fn end(&mut self) -> io::Result<()> {
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

fn system_time(t: Mtime) -> SystemTime {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::TarTransform;
    use dockmesh_core::manifest::{EntryKind, VolumeManifest};
    use std::os::unix::fs::symlink;

    fn root_user() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// What a transfer between two directories does on the fast path: read `src` through the
    /// export's transform, write the checked stream into `dst`, read `dst` back. The manifest
    /// of the read-back is the same whether it takes the hashes read while writing, reads every
    /// file again, or reads `dst` as a stream through the transform.
    async fn transfer(src: &Path, dst: &Path) -> (VolumeManifest, VolumeManifest) {
        let (exported, imported, _) = transfer_counted(src, dst).await;
        (exported, imported)
    }

    /// Export `src` and write the checked stream into `dst`: the export's manifest and what
    /// the writing did.
    async fn export_and_write(src: &Path, dst: &Path) -> (VolumeManifest, Written) {
        let mut export =
            TarTransform::new(Layout::Carrier, Some(Layout::Transfer), Limits::default())
                .with_manifest();
        let mut import =
            TarTransform::new(Layout::Transfer, Some(Layout::Carrier), Limits::default());
        let mut checked = Vec::new();
        let mut body = read_tree(src.to_path_buf(), "src");
        while let Some(chunk) = body.next().await {
            export.push(chunk.expect("read")).expect("export checks");
            while let Some(b) = export.pop() {
                import.push(b).expect("import checks");
                while let Some(b) = import.pop() {
                    checked.push(Ok(b));
                }
            }
        }
        let exported = export.finish().expect("export ends").unwrap();
        while let Some(b) = export.pop() {
            import.push(b).unwrap();
        }
        import.finish().unwrap();
        while let Some(b) = import.pop() {
            checked.push(Ok(b));
        }
        let written = write_tree(dst.to_path_buf(), stream::iter(checked))
            .await
            .expect("write");
        (exported, written)
    }

    async fn transfer_counted(
        src: &Path,
        dst: &Path,
    ) -> (VolumeManifest, VolumeManifest, ReadBackCounts) {
        let (exported, written) = export_and_write(src, dst).await;
        let mut back = TarTransform::new(Layout::Carrier, None, Limits::default()).with_manifest();
        let mut body = read_tree(dst.to_path_buf(), "dst");
        while let Some(chunk) = body.next().await {
            back.push(chunk.expect("read back"))
                .expect("read back checks");
        }
        let streamed = back.finish().unwrap().unwrap();
        let (all_again, counts) = readback::tree_manifest(dst, &Hashed::default()).unwrap();
        assert_eq!(counts.during_import, 0);
        assert_eq!(all_again, streamed);
        let (imported, counts) = read_manifest(dst.to_path_buf(), "dst", written)
            .await
            .unwrap();
        assert_eq!(imported, streamed);
        (exported, imported, counts)
    }

    fn set_mtime(path: &Path, secs: i64, nanos: u32) {
        let ts = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &rustix::fs::Timestamps {
                last_access: ts,
                last_modification: ts,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tree_moves_exactly_with_holes_times_attributes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("a.txt"), b"hello").unwrap();
        // Larger than one chunk of the walk, and not a multiple of a block.
        let big: Vec<u8> = (0..CHUNK * 2 + 4097).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(src.join("sub/big.bin"), &big).unwrap();
        // A real hole in the middle and at the end.
        let sparse = File::create(src.join("sparse.bin")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        sparse.write_all_at(b"middle", 4 << 20).unwrap();
        drop(sparse);
        // Zeros written out: a hole on the target; a trailing partial block of zeros; zeros
        // that are not block aligned.
        let mut zeros = vec![0u8; 3 * HOLE + 100];
        zeros[HOLE + 10] = 1;
        fs::write(src.join("zeros.bin"), &zeros).unwrap();
        let unaligned: Vec<u8> = [b"x".as_slice(), &[0u8; 2 * HOLE]].concat();
        fs::write(src.join("unaligned.bin"), &unaligned).unwrap();
        fs::write(src.join("empty.bin"), b"").unwrap();
        fs::hard_link(src.join("a.txt"), src.join("sub/again.txt")).unwrap();
        symlink("/etc/passwd", src.join("abs-link")).unwrap();
        symlink("../a.txt", src.join("sub/rel-link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o640),
            0,
        )
        .unwrap();
        rustix::fs::setxattr(
            src.join("a.txt"),
            "user.note",
            b"\x00bin\xff",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        rustix::fs::setxattr(
            src.join("sub"),
            "user.dir",
            b"d",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        // Not carried: another namespace is not read.
        let _ = rustix::fs::setxattr(
            src.join("a.txt"),
            "trusted.secret",
            b"x",
            rustix::fs::XattrFlags::empty(),
        );
        fs::set_permissions(src.join("a.txt"), Permissions::from_mode(0o4755)).unwrap();
        fs::set_permissions(src.join("sub/deeper"), Permissions::from_mode(0o2750)).unwrap();
        fs::set_permissions(&src, Permissions::from_mode(0o1777)).unwrap();
        if root_user() {
            std::os::unix::fs::lchown(src.join("sub/big.bin"), Some(1234), Some(5678)).unwrap();
            std::os::unix::fs::lchown(src.join("abs-link"), Some(42), Some(43)).unwrap();
        }
        for (p, s, n) in [
            ("a.txt", 1_600_000_000, 1),
            ("sub/deeper", 1_500_000_000, 999_999_999),
            ("abs-link", 1_400_000_000, 500),
            ("pipe", 1_300_000_000, 7),
            ("sub", 1_200_000_000, 123_456_789),
            ("", 1_100_000_000, 42),
        ] {
            set_mtime(&src.join(p), s, n);
        }

        let (exported, imported, counts) = transfer_counted(&src, &dst).await;
        assert_eq!(exported.first_difference(&imported), None);
        assert_eq!(exported, imported);
        // Six regular files: five read back while the import went on; `a.txt` too unless the
        // hard link made to it later moved its change time after it was read.
        assert_eq!(counts.during_import + counts.at_the_end, 6, "{counts:?}");
        assert!(counts.during_import >= 5, "{counts:?}");

        let meta = |root: &Path, p: &str| fs::symlink_metadata(root.join(p)).unwrap();
        // Content.
        for p in [
            "a.txt",
            "sub/big.bin",
            "sparse.bin",
            "zeros.bin",
            "unaligned.bin",
            "empty.bin",
        ] {
            assert_eq!(
                fs::read(src.join(p)).unwrap(),
                fs::read(dst.join(p)).unwrap(),
                "{p}"
            );
        }
        // Modes, owners, times to the nanosecond, for every kind.
        for p in [
            "",
            "a.txt",
            "sub",
            "sub/deeper",
            "sub/big.bin",
            "abs-link",
            "pipe",
            "sub/rel-link",
        ] {
            let (a, b) = (meta(&src, p), meta(&dst, p));
            assert_eq!(a.mode(), b.mode(), "{p}: mode and type");
            assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{p}: owner");
            assert_eq!(
                (a.mtime(), a.mtime_nsec()),
                (b.mtime(), b.mtime_nsec()),
                "{p}: mtime"
            );
        }
        assert_eq!(meta(&dst, "").mtime_nsec(), 42);
        assert_eq!(meta(&dst, "sub").mtime_nsec(), 123_456_789);
        assert_eq!(meta(&dst, "a.txt").mode() & 0o7777, 0o4755);
        assert!(meta(&dst, "pipe").file_type().is_fifo());
        assert_eq!(
            fs::read_link(dst.join("abs-link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(meta(&dst, "a.txt").ino(), meta(&dst, "sub/again.txt").ino());
        assert_eq!(meta(&dst, "a.txt").nlink(), 2);
        // Attributes: the user ones, and only those.
        let mut buf = [0u8; 16];
        let n = rustix::fs::getxattr(dst.join("a.txt"), "user.note", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"\x00bin\xff");
        let n = rustix::fs::getxattr(dst.join("sub"), "user.dir", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"d");
        assert!(rustix::fs::getxattr(dst.join("a.txt"), "trusted.secret", &mut buf[..]).is_err());
        let entry = |p: &str| exported.entries.iter().find(|e| e.path == p).unwrap();
        assert_eq!(entry("a.txt").xattrs.len(), 1);
        assert_eq!(
            entry("sub/again.txt").kind,
            EntryKind::HardLink {
                target: "a.txt".into()
            }
        );
        // Holes: the sparse file's stay holes, written zeros become holes, data does not.
        let blocks = |p: &str| meta(&dst, p).blocks() * 512;
        assert_eq!(meta(&dst, "sparse.bin").len(), 8 << 20);
        assert!(blocks("sparse.bin") <= 64 << 10, "{}", blocks("sparse.bin"));
        assert!(
            blocks("zeros.bin") < 3 * HOLE as u64,
            "{}",
            blocks("zeros.bin")
        );
        assert!(blocks("sub/big.bin") >= big.len() as u64 - HOLE as u64);
        // The order is the engine's: a directory's content right after it.
        let paths: Vec<&str> = exported.entries.iter().map(|e| e.path.as_str()).collect();
        let sub = paths.iter().position(|p| *p == "sub").unwrap();
        assert_eq!(paths[sub + 1], "sub/again.txt");
        assert_eq!(paths[0], ".");
    }

    #[test]
    fn zero_blocks_become_holes_wherever_the_pieces_break() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TreeWriter::new(dir.path().to_path_buf()).expect("writer");
        let entry = |path: &[u8], kind| Checked {
            path: path.to_vec(),
            kind,
            mode: 0o640,
            uid: u64::from(rustix::process::geteuid().as_raw()),
            gid: u64::from(rustix::process::getegid().as_raw()),
            mtime: Mtime {
                secs: 1_000_000_000,
                nanos: 5,
            },
            xattrs: Vec::new(),
        };
        w.begin(entry(b"", CheckedKind::Dir)).unwrap();
        let mut content = vec![0u8; 4 * HOLE];
        content[..100].fill(b'a');
        content[3 * HOLE + 7] = b'z';
        w.begin(entry(
            b"f",
            CheckedKind::File {
                size: 4 * HOLE as u64,
            },
        ))
        .unwrap();
        // Pieces that end inside blocks, as a network stream cuts them.
        for piece in [&content[..100], &content[100..103], &content[103..]] {
            w.data(piece).unwrap();
        }
        w.end().unwrap();
        let path = dir.path().join("f");
        assert_eq!(fs::read(&path).unwrap(), content);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
        // The first and the last block hold data; the two between are holes.
        assert!(
            meta.blocks() * 512 <= 2 * HOLE as u64,
            "{} bytes allocated",
            meta.blocks() * 512
        );
    }

    #[test]
    fn times_before_and_after_the_epoch_keep_their_nanoseconds() {
        // A PAX time of -1.5 s is secs -2 (the floor) and 0.5 s.
        let before = system_time(Mtime {
            secs: -2,
            nanos: 500_000_000,
        });
        assert_eq!(
            UNIX_EPOCH.duration_since(before).unwrap(),
            Duration::from_millis(1500)
        );
        let after = system_time(Mtime {
            secs: 1_700_000_000,
            nanos: 7,
        });
        assert_eq!(
            after.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 7)
        );
    }

    #[test]
    fn only_plain_local_volumes_and_empty_directories_qualify() {
        let none = HashMap::new();
        let nfs = HashMap::from([("type".to_owned(), "nfs".to_owned())]);
        assert!(eligible("local", &none, "/var/lib/docker/volumes/v/_data"));
        assert!(!eligible("local", &nfs, "/var/lib/docker/volumes/v/_data"));
        assert!(!eligible(
            "rexray",
            &none,
            "/var/lib/docker/volumes/v/_data"
        ));
        assert!(!eligible("local", &none, ""));
        let dir = tempfile::tempdir().unwrap();
        assert!(is_empty_dir(dir.path()));
        fs::write(dir.path().join("f"), b"").unwrap();
        assert!(!is_empty_dir(dir.path()));
        assert!(!is_empty_dir(&dir.path().join("missing")));
    }

    /// A temporary directory holding two empty ones, `src` and `dst`.
    fn two_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        (dir, src, dst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_changed_after_it_was_read_back_is_read_again() {
        let (_dir, src, dst) = two_dirs();
        for name in ["one", "two", "three"] {
            fs::write(src.join(name), name.repeat(1000)).unwrap();
        }
        set_mtime(&src.join("two"), 1_600_000_000, 5);
        let (exported, written) = export_and_write(&src, &dst).await;
        assert_eq!(written.hashed.files.len(), 3);
        assert_eq!(written.background_syncs, 0, "3 KiB written");
        // The same size and modification time, other content: only the change time says so.
        fs::write(dst.join("two"), "owt".repeat(1000)).unwrap();
        set_mtime(&dst.join("two"), 1_600_000_000, 5);
        let (imported, counts) = read_manifest(dst.clone(), "dst", written).await.unwrap();
        assert_eq!(
            counts,
            ReadBackCounts {
                during_import: 2,
                at_the_end: 1
            }
        );
        let difference = exported.first_difference(&imported).expect("differs");
        assert!(difference.contains("two"), "{difference}");
        let entry = |m: &VolumeManifest, p: &str| m.entries.iter().find(|e| e.path == p).cloned();
        assert_eq!(entry(&exported, "one"), entry(&imported, "one"));
        assert_ne!(
            entry(&exported, "two").unwrap().sha256,
            entry(&imported, "two").unwrap().sha256
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_disk_is_synced_while_a_large_import_goes_on() {
        let (_dir, src, dst) = two_dirs();
        let content: Vec<u8> = (0..SYNC_EVERY as usize + HOLE)
            .map(|i| (i % 253) as u8)
            .collect();
        fs::write(src.join("large"), &content).unwrap();
        let (exported, written) = export_and_write(&src, &dst).await;
        assert!(written.background_syncs >= 1, "{written:?}");
        let (imported, counts) = read_manifest(dst.clone(), "dst", written).await.unwrap();
        assert_eq!(exported, imported);
        assert_eq!(counts.during_import, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_socket_is_skipped_and_a_device_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(src.join("s.sock")).unwrap();
        let dst = dir.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let (exported, _) = transfer(&src, &dst).await;
        assert!(exported.entries.iter().all(|e| e.path != "s.sock"));
        assert!(!dst.join("s.sock").exists());
        if !root_user() {
            return;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            src.join("zz-null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
        let mut body = read_tree(src.clone(), "vol");
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            if let Err(e) = chunk {
                failure = Some(e);
            }
        }
        let e = failure.expect("refused");
        assert_eq!(e.kind, RuntimeErrorKind::Integrity);
        assert!(e.message.contains("\"zz-null\""), "{e}");
        assert!(e.message.contains("character device"), "{e}");
        assert!(e.message.contains("volume vol cannot be exported"), "{e}");
        assert!(e.message.contains("Device nodes are not moved"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_cannot_land_fails_and_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        // The target already holds the file: created new, never overwritten or followed.
        let dst = dir.path().join("dst");
        fs::create_dir(&dst).unwrap();
        symlink("/etc/hostname", dst.join("f")).unwrap();
        let mut export =
            TarTransform::new(Layout::Carrier, Some(Layout::Carrier), Limits::default());
        let mut bytes = Vec::new();
        let mut body = read_tree(src.clone(), "src");
        while let Some(chunk) = body.next().await {
            export.push(chunk.unwrap()).unwrap();
        }
        export.finish().unwrap();
        while let Some(b) = export.pop() {
            bytes.push(Ok(b));
        }
        let err = write_tree(dst.clone(), stream::iter(bytes))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&dst.join("f").display().to_string()),
            "{err}"
        );
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(fs::symlink_metadata(dst.join("f")).unwrap().is_symlink());
    }
}
