//! An import's stream kept on the agent's disk as it is taken in, so that the import survives a
//! restart of the agent (agent side).
//!
//! Each import gets a directory under the spool directory (named by its volume, hex-encoded):
//! `stream`, the bytes of its stream handed to the import, in order, and `import.json`, the
//! import's [`VolumeTarget`] and how many bytes of `stream` are durable. A thread of its own
//! appends to `stream` and, every [`SpoolOptions::sync_every`] bytes, `fdatasync`s it and then
//! replaces `import.json` (written, synced, renamed, directory synced): the durable count never
//! names a byte that is not on disk. The import never waits for the disk beyond the writer's
//! bounded queue.
//!
//! After a restart, [`recovered`] reads every record back: the import is started again from
//! the durable prefix of its stream (the runtime checks and writes it again, from the disk, not
//! the network), and waits for the rest from the byte the prefix ends at. What a record says
//! is trusted only as far as `stream` really holds it.
//!
//! A spool is only started when the disk has room for it and for the volume
//! ([`SpoolOptions::room_for`]); otherwise the import runs without one (a restart then sends the
//! volume whole) and the log says so. A spool whose writer fails stops growing: what it holds
//! stays valid, the resume point is just earlier. An import that ends, however it ends, removes
//! its spool.

use bytes::Bytes;
use dockmesh_core::ports::{ByteStream, RuntimeError, RuntimeErrorKind, VolumeTarget};
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Chunks queued between an import and its spool's writer.
const QUEUE: usize = 32;

/// Where spools live and how often they are made durable.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The directory holding one sub-directory per import.
    pub dir: PathBuf,
    /// Bytes appended between two syncs (the granularity of a resume after a restart).
    pub sync_every: u64,
    /// Free space that must stay on the spool's file system besides the spool and the volume.
    pub reserve: u64,
}

impl SpoolOptions {
    /// Spools in `dir`, synced every 8 MiB, keeping 256 MiB free.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolOptions {
        SpoolOptions {
            dir: dir.into(),
            sync_every: 8 << 20,
            reserve: 256 << 20,
        }
    }

    /// Whether `free` bytes on the spool's file system hold the spool of a volume of
    /// `expected` content bytes, the volume itself (it may live on the same file system) and
    /// the reserve. The stream is counted as its content plus an eighth (tar headers and
    /// padding) plus 16 MiB. A volume of unknown size is never spooled.
    pub fn room_for(&self, expected: Option<u64>, free: u64) -> bool {
        let Some(content) = expected else {
            return false;
        };
        let stream = content
            .saturating_add(content / 8)
            .saturating_add(16 << 20);
        stream
            .saturating_add(content)
            .saturating_add(self.reserve)
            <= free
    }
}

/// What `import.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    target: VolumeTarget,
    /// Bytes at the start of `stream` that are on disk.
    durable: u64,
}

/// A spool being written: the import hands it each chunk it takes in.
pub(crate) struct Spool {
    volume: String,
    dir: PathBuf,
    /// The only strong sender: the writer ends once it is dropped and the queue is drained.
    queue: Option<mpsc::Sender<Msg>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    durable: Arc<AtomicU64>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("volume", &self.volume)
            .field("durable", &self.durable.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

fn dir_of(options: &SpoolOptions, volume: &str) -> PathBuf {
    options.dir.join(hex::encode(volume.as_bytes()))
}

fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Write `record` as `dir/import.json`: a new file, synced, renamed over the old one, the
/// directory synced.
fn write_record(dir: &Path, record: &Record) -> io::Result<()> {
    let tmp = dir.join("import.json.new");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("import.json"))?;
    File::open(dir)?.sync_all()
}

enum Msg {
    /// Bytes of the stream from byte `at` on.
    Data { at: u64, chunk: Bytes },
    /// Make what was appended durable now (the stream paused).
    Sync,
}

impl Spool {
    /// Start the spool of an import into `target` from its stream's first byte, replacing any
    /// spool of the same volume. `None` (and the reason logged) when there is no room for it or
    /// it cannot be created.
    pub(crate) async fn start(options: &SpoolOptions, target: &VolumeTarget) -> Option<Spool> {
        let (opts, target) = (options.clone(), target.clone());
        let volume = target.name.clone();
        let made = tokio::task::spawn_blocking(move || -> io::Result<Option<(PathBuf, File)>> {
            std::fs::create_dir_all(&opts.dir)?;
            let free = free_bytes(&opts.dir)?;
            if !opts.room_for(target.expected_bytes, free) {
                tracing::warn!(
                    volume = %target.name,
                    size = ?target.expected_bytes,
                    free,
                    spool = %opts.dir.display(),
                    "no room to keep the import's stream on disk, or the volume's size is \
                     unknown: a restart of this agent will have the volume sent again whole"
                );
                return Ok(None);
            }
            let dir = dir_of(&opts, &target.name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            let file = File::create(dir.join("stream"))?;
            write_record(&dir, &Record { target, durable: 0 })?;
            Ok(Some((dir, file)))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        match made {
            Ok(Some((dir, file))) => Some(Spool::run(options, volume, dir, file, 0)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    %volume,
                    error = %e,
                    "the import's stream cannot be kept on disk: a restart of this agent will \
                     have the volume sent again whole"
                );
                None
            }
        }
    }

    /// Append to `file` (holding `durable` bytes) from a thread of its own.
    fn run(options: &SpoolOptions, volume: String, dir: PathBuf, file: File, durable: u64) -> Spool {
        let (queue, rx) = mpsc::channel(QUEUE);
        let shared = Arc::new(AtomicU64::new(durable));
        let writer = {
            let (dir, volume, shared) = (dir.clone(), volume.clone(), shared.clone());
            let sync_every = options.sync_every.max(1);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = write_loop(rx, file, &dir, &shared, sync_every) {
                    tracing::warn!(
                        %volume,
                        durable = shared.load(Ordering::SeqCst),
                        error = %e,
                        "keeping the import's stream on disk failed; a restart of this agent \
                         will resume it from the last byte kept"
                    );
                }
            })
        };
        Spool {
            volume,
            dir,
            queue: Some(queue),
            writer: Some(writer),
            durable: shared,
        }
    }

    /// A handle that appends to this spool.
    pub(crate) fn feed(&self) -> SpoolFeed {
        SpoolFeed(self.queue.as_ref().map(mpsc::Sender::downgrade))
    }

    /// Stop writing, and remove the spool from disk (its import ended).
    pub(crate) async fn remove(mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        let dir = self.dir.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(volume = %self.volume, error = %e, "removing the import's spool failed");
        }
    }
}

/// Appends to a spool. A spool whose writer stopped takes nothing more.
#[derive(Clone)]
pub(crate) struct SpoolFeed(Option<mpsc::WeakSender<Msg>>);

impl SpoolFeed {
    /// No spool.
    pub(crate) fn none() -> SpoolFeed {
        SpoolFeed(None)
    }

    /// Keep `chunk`, the stream's bytes from byte `at` on (waiting while the writer's queue is
    /// full). Bytes kept already may come again (an import taken over from a request that was
    /// still reading); a gap stops the spool where it is.
    pub(crate) async fn append(&mut self, at: u64, chunk: &Bytes) {
        self.send(Msg::Data {
            at,
            chunk: chunk.clone(),
        })
        .await;
    }

    /// Make what was appended durable without waiting for more.
    pub(crate) async fn sync(&mut self) {
        self.send(Msg::Sync).await;
    }

    async fn send(&mut self, msg: Msg) {
        let queue = self.0.as_ref().and_then(mpsc::WeakSender::upgrade);
        match queue {
            Some(queue) if queue.send(msg).await.is_ok() => {}
            _ => self.0 = None,
        }
    }
}

/// Append what comes to `file`; a thread of its own syncs it and names the bytes synced in
/// the record, so writing never waits for the disk.
fn write_loop(
    mut rx: mpsc::Receiver<Msg>,
    file: File,
    dir: &Path,
    durable: &AtomicU64,
    sync_every: u64,
) -> io::Result<()> {
    let record: Record = serde_json::from_slice(&std::fs::read(dir.join("import.json"))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // The stream's bytes in `file` with no gap, from its start.
    let mut written = durable.load(Ordering::SeqCst);
    // The most the syncer has been asked to name.
    let mut asked = written;
    let file = &file;
    std::thread::scope(|scope| {
        let (sync, requests) = std::sync::mpsc::channel::<u64>();
        scope.spawn(move || {
            if let Err(e) = sync_loop(requests, file, dir, durable, record) {
                tracing::warn!(
                    spool = %dir.display(),
                    durable = durable.load(Ordering::SeqCst),
                    error = %e,
                    "syncing the import's stream kept on disk failed; a restart of this agent \
                     will resume it from the last byte synced"
                );
            }
        });
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Data { at, chunk } => {
                    if at > written {
                        return Err(io::Error::other(format!(
                            "the stream's bytes from {at} came while it holds {written}"
                        )));
                    }
                    file.write_all_at(&chunk, at)?;
                    written = written.max(at + chunk.len() as u64);
                    if written - asked >= sync_every {
                        asked = written;
                        let _ = sync.send(written);
                    }
                }
                Msg::Sync if written > asked => {
                    asked = written;
                    let _ = sync.send(written);
                }
                Msg::Sync => {}
            }
        }
        // The import ended: the spool is about to be removed, nothing more to keep.
        Ok(())
    })
}

/// Sync `file` and name the bytes it holds in the record, for each request (the latest of
/// those waiting): the bytes below a request were written before it was made.
fn sync_loop(
    requests: std::sync::mpsc::Receiver<u64>,
    file: &File,
    dir: &Path,
    durable: &AtomicU64,
    mut record: Record,
) -> io::Result<()> {
    while let Ok(mut upto) = requests.recv() {
        while let Ok(later) = requests.try_recv() {
            upto = later;
        }
        file.sync_data()?;
        record.durable = upto;
        write_record(dir, &record)?;
        durable.store(upto, Ordering::SeqCst);
    }
    Ok(())
}

/// An import found in the spool directory after a restart.
pub(crate) struct Recovered {
    /// What it imports into.
    pub(crate) target: VolumeTarget,
    /// The bytes of its stream on disk.
    pub(crate) durable: u64,
    /// Those bytes, read back.
    pub(crate) prefix: ByteStream,
    /// The spool, going on after them.
    pub(crate) spool: Spool,
}

/// What is in one spool's directory, `durable` cut to what `stream` holds; `None` when nothing
/// of it is usable.
fn read_spool(dir: &Path) -> io::Result<Option<(Record, File)>> {
    let record: Record = match serde_json::from_slice(&std::fs::read(dir.join("import.json"))?) {
        Ok(r) => r,
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let named = dir
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes() == hex::encode(record.target.name.as_bytes()).as_bytes());
    if !named {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is named for another volume than {}", record.target.name),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("stream"))?;
    let durable = record.durable.min(file.metadata()?.len());
    if durable == 0 {
        return Ok(None);
    }
    // Bytes past the durable ones were never confirmed: they go, and are taken in again.
    file.set_len(durable)?;
    let record = Record { durable, ..record };
    write_record(dir, &record)?;
    Ok(Some((record, file)))
}

/// The imports whose streams were kept in `options.dir` before this process started. A spool
/// that cannot be read, or holds nothing, is removed (and logged).
pub(crate) async fn recovered(options: &SpoolOptions) -> Vec<Recovered> {
    let dir = options.dir.clone();
    let found = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return found;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match read_spool(&path) {
                Ok(Some((record, file))) => found.push((path, record, file)),
                Ok(None) => {
                    tracing::info!(spool = %path.display(), "an import's spool holds nothing durable; removed");
                    let _ = std::fs::remove_dir_all(&path);
                }
                Err(e) => {
                    tracing::warn!(spool = %path.display(), error = %e, "an import's spool cannot be read; removed");
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
        found
    })
    .await
    .unwrap_or_default();
    let mut out = Vec::new();
    for (path, record, file) in found {
        let prefix = match tokio::fs::File::open(path.join("stream")).await {
            Ok(f) => prefix_stream(f, record.durable),
            Err(e) => {
                tracing::warn!(spool = %path.display(), error = %e, "an import's spool cannot be read; removed");
                let _ = tokio::fs::remove_dir_all(&path).await;
                continue;
            }
        };
        let spool = Spool::run(
            options,
            record.target.name.clone(),
            path,
            file,
            record.durable,
        );
        out.push(Recovered {
            target: record.target,
            durable: record.durable,
            prefix,
            spool,
        });
    }
    out
}

/// The first `len` bytes of `file` as a stream; a read that fails is an engine error (the
/// import fails with it rather than waiting).
fn prefix_stream(file: tokio::fs::File, len: u64) -> ByteStream {
    use tokio::io::AsyncReadExt;
    tokio_util::io::ReaderStream::with_capacity(file.take(len), 1 << 20)
        .map_err(|e| {
            RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!("reading the import's stream kept on disk failed: {e}"),
            )
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn room_is_the_stream_the_volume_and_the_reserve() {
        let options = SpoolOptions {
            reserve: 100,
            ..SpoolOptions::new("/nowhere")
        };
        // 800 bytes: a stream of 800 + 100 + 16 MiB, the volume's 800, the reserve's 100.
        let need = 800 + 100 + (16 << 20) + 800 + 100;
        assert!(options.room_for(Some(800), need));
        assert!(!options.room_for(Some(800), need - 1));
        assert!(!options.room_for(None, u64::MAX), "a size unknown is never spooled");
        assert!(!options.room_for(Some(u64::MAX), u64::MAX - 1));
    }

    proptest! {
        #[test]
        fn more_room_never_refuses_what_less_took(
            size in 0u64..1 << 44,
            free in 0u64..1 << 46,
            more in 0u64..1 << 40,
        ) {
            let options = SpoolOptions::new("/nowhere");
            if options.room_for(Some(size), free) {
                prop_assert!(options.room_for(Some(size), free + more));
                // Room for a volume is room for any smaller one.
                prop_assert!(options.room_for(Some(size / 2), free));
                prop_assert!(free >= size * 2);
            }
        }
    }

    fn spool_dir(root: &Path, name: &str, record: &str, stream: &[u8]) -> PathBuf {
        let dir = root.join(hex::encode(name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("import.json"), record).unwrap();
        std::fs::write(dir.join("stream"), stream).unwrap();
        dir
    }

    fn record(name: &str, durable: u64) -> String {
        format!(r#"{{"target":{{"name":"{name}","labels":{{}},"expected_bytes":40}},"durable":{durable}}}"#)
    }

    async fn read_all(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_record_is_trusted_only_as_far_as_its_stream_holds() {
        let root = tempfile::tempdir().unwrap();
        let options = SpoolOptions::new(root.path());
        // Says 20, holds 15: 15. Says 10, holds 15: 10, and the rest is cut off the file.
        let short = spool_dir(root.path(), "short", &record("short", 20), b"0123456789abcde");
        let long = spool_dir(root.path(), "long", &record("long", 10), b"0123456789abcde");
        // Nothing durable, not JSON, named for another volume: removed.
        let empty = spool_dir(root.path(), "empty", &record("empty", 0), b"0123");
        let garbled = spool_dir(root.path(), "garbled", "{not json", b"0123");
        let other = spool_dir(root.path(), "other", &record("short", 4), b"0123");
        let mut found = recovered(&options).await;
        found.sort_by(|a, b| a.target.name.cmp(&b.target.name));
        let seen: Vec<(String, u64)> = found
            .iter()
            .map(|r| (r.target.name.clone(), r.durable))
            .collect();
        assert_eq!(seen, [("long".to_owned(), 10), ("short".to_owned(), 15)]);
        assert_eq!(found[0].target.expected_bytes, Some(40));
        for r in found.drain(..) {
            let want: &[u8] = if r.target.name == "long" {
                b"0123456789"
            } else {
                b"0123456789abcde"
            };
            assert_eq!(read_all(r.prefix).await, want);
            r.spool.remove().await;
        }
        assert!(!short.exists() && !long.exists(), "removed once their import ended");
        for gone in [empty, garbled, other] {
            assert!(!gone.exists(), "{} is left", gone.display());
        }
    }

    #[tokio::test]
    async fn bytes_kept_are_synced_before_the_record_names_them_and_a_gap_stops_the_spool() {
        let root = tempfile::tempdir().unwrap();
        let options = SpoolOptions {
            sync_every: 10,
            reserve: 0,
            ..SpoolOptions::new(root.path())
        };
        let target = VolumeTarget {
            name: "v".into(),
            labels: Default::default(),
            expected_bytes: Some(40),
        };
        let spool = Spool::start(&options, &target).await.expect("room for it");
        let dir = root.path().join(hex::encode("v"));
        let durable = || -> u64 {
            let r: Record =
                serde_json::from_slice(&std::fs::read(dir.join("import.json")).unwrap()).unwrap();
            r.durable
        };
        let wait_for = |n: u64| async move {
            for _ in 0..500 {
                if durable() == n {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("the record never said {n}: {}", durable());
        };
        let mut feed = spool.feed();
        feed.append(0, &Bytes::from_static(b"01234")).await;
        feed.append(5, &Bytes::from_static(b"56789")).await;
        wait_for(10).await;
        // Under `sync_every`: written, not yet named.
        feed.append(10, &Bytes::from_static(b"abc")).await;
        // A chunk kept again at its place changes nothing; a sync names what is there.
        feed.append(5, &Bytes::from_static(b"56789")).await;
        feed.sync().await;
        wait_for(13).await;
        // A gap: the spool stops at what it holds.
        feed.append(20, &Bytes::from_static(b"zzz")).await;
        feed.append(13, &Bytes::from_static(b"defghij")).await;
        feed.sync().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(durable(), 13);
        assert_eq!(std::fs::read(dir.join("stream")).unwrap(), b"0123456789abc");
        spool.remove().await;
        assert!(!dir.exists());
    }

    #[tokio::test]
    async fn no_spool_without_room() {
        let root = tempfile::tempdir().unwrap();
        let options = SpoolOptions::new(root.path());
        let mut target = VolumeTarget {
            name: "v".into(),
            labels: Default::default(),
            expected_bytes: None,
        };
        assert!(Spool::start(&options, &target).await.is_none());
        target.expected_bytes = Some(u64::MAX / 4);
        assert!(Spool::start(&options, &target).await.is_none());
        assert!(!root.path().join(hex::encode("v")).exists());
    }
}
