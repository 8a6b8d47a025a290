//! An import's stream kept on the agent's disk as it comes in, so that the import survives a
//! restart of the agent (agent side).
//!
//! Each import gets a directory under the spool directory (named by its volume, hex-encoded).
//! Every request that feeds the import adds a *segment*: a file `seg-N` holding the request's
//! body as it came over the wire (zstd-compressed when it came so: nothing is coded again) and
//! the byte of the plain stream it starts at. `import.json` holds the import's
//! [`VolumeTarget`] and its segments with the bytes of each that are durable. A thread of its
//! own appends; another `fdatasync`s every [`SpoolOptions::sync_every`] bytes and then
//! replaces `import.json` (written, synced, renamed, directory synced), so the record never
//! names a byte that is not on disk, and the import never waits for the disk beyond the
//! writer's bounded queue.
//!
//! After a restart, `recovered` reads every record back and rebuilds the longest prefix of
//! the plain stream the segments hold: each segment up to where the next one starts, the last
//! as far as its durable bytes decode (a zstd frame cut short gives the blocks it holds
//! whole). The import is started again from that prefix (checked and written again by the
//! runtime, from the disk, not the network), and waits for the rest from the byte it ends at.
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
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Chunks queued between an import and its spool's writer.
const QUEUE: usize = 32;

/// Where spools live and how often they are made durable.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The directory holding one sub-directory per import.
    pub dir: PathBuf,
    /// Bytes appended between two syncs (with the writer's queue, what a restart may have to
    /// take in again).
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
    /// the reserve. The stream is counted uncompressed, as its content plus an eighth (tar
    /// headers and padding) plus 16 MiB. A volume of unknown size is never spooled.
    pub fn room_for(&self, expected: Option<u64>, free: u64) -> bool {
        let Some(content) = expected else {
            return false;
        };
        let stream = content.saturating_add(content / 8).saturating_add(16 << 20);
        stream.saturating_add(content).saturating_add(self.reserve) <= free
    }
}

/// How a segment's bytes are coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolCoding {
    /// The plain tar stream.
    Plain,
    /// zstd, as it came over the wire.
    Zstd,
}

/// One request's body, kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    /// The byte of the plain stream it starts at.
    start: u64,
    coding: SpoolCoding,
    /// Bytes of its file on disk.
    durable: u64,
}

/// What `import.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    target: VolumeTarget,
    segments: Vec<Segment>,
}

/// A new (or emptied) file only this user can read: the spool holds a volume's data.
fn create_private(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// A directory (and missing parents) only this user can enter.
fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

fn segment_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("seg-{index}"))
}

/// A spool being written.
pub(crate) struct Spool {
    volume: String,
    dir: PathBuf,
    /// The only strong sender: the writer ends once it is dropped and the queue is drained.
    queue: Option<mpsc::Sender<Msg>>,
    writer: Option<tokio::task::JoinHandle<()>>,
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
    let mut f = create_private(&tmp)?;
    f.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join("import.json"))?;
    File::open(dir)?.sync_all()
}

fn no_spool_warning(volume: &str, why: &dyn std::fmt::Display) {
    tracing::warn!(
        %volume,
        "the import's stream is not kept on disk ({why}): a restart of this agent will have \
         the volume sent again whole"
    );
}

enum Msg {
    /// What follows is a request's body from the plain stream's byte `start` on.
    Segment {
        start: u64,
        coding: SpoolCoding,
    },
    Data(Bytes),
    /// Make what was appended durable now (the stream paused).
    Sync,
}

impl Spool {
    /// Start the spool of an import into `target`, replacing any spool of the same volume.
    /// `None` (and the reason logged) when there is no room for it or it cannot be created.
    pub(crate) async fn start(options: &SpoolOptions, target: &VolumeTarget) -> Option<Spool> {
        let (opts, target) = (options.clone(), target.clone());
        let volume = target.name.clone();
        let made = tokio::task::spawn_blocking(move || -> io::Result<Option<(PathBuf, Record)>> {
            create_private_dir(&opts.dir)?;
            let free = free_bytes(&opts.dir)?;
            if !opts.room_for(target.expected_bytes, free) {
                let why = match target.expected_bytes {
                    None => "the volume's size is unknown".to_owned(),
                    Some(size) => format!(
                        "{} has {free} bytes free, too few for a volume of {size} bytes and its stream",
                        opts.dir.display()
                    ),
                };
                no_spool_warning(&target.name, &why);
                return Ok(None);
            }
            let dir = dir_of(&opts, &target.name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            create_private_dir(&dir)?;
            let record = Record {
                target,
                segments: Vec::new(),
            };
            write_record(&dir, &record)?;
            Ok(Some((dir, record)))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|r| r);
        match made {
            Ok(Some((dir, record))) => Some(Spool::run(options, volume, dir, record)),
            Ok(None) => None,
            Err(e) => {
                no_spool_warning(&volume, &e);
                None
            }
        }
    }

    /// Write the spool in `dir`, which holds `record`, from a thread of its own.
    fn run(options: &SpoolOptions, volume: String, dir: PathBuf, record: Record) -> Spool {
        let (queue, rx) = mpsc::channel(QUEUE);
        let writer = {
            let (dir, volume) = (dir.clone(), volume.clone());
            let sync_every = options.sync_every.max(1);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = write_loop(rx, &dir, record, sync_every) {
                    tracing::warn!(
                        %volume,
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

    /// What comes next is a request's body (coded as `coding`) from the plain stream's byte
    /// `start` on.
    pub(crate) async fn begin(&self, start: u64, coding: SpoolCoding) {
        self.send(Msg::Segment { start, coding }).await;
    }

    /// Keep `chunk`, the next bytes of the body (waiting while the writer's queue is full).
    pub(crate) async fn append(&self, chunk: &Bytes) {
        self.send(Msg::Data(chunk.clone())).await;
    }

    /// Make what was appended durable without waiting for more.
    pub(crate) async fn sync(&self) {
        self.send(Msg::Sync).await;
    }

    async fn send(&self, msg: Msg) {
        if let Some(queue) = self.0.as_ref().and_then(mpsc::WeakSender::upgrade) {
            let _ = queue.send(msg).await;
        }
    }

    /// `body`, each chunk kept in the spool as it passes.
    pub(crate) fn tee(&self, body: ByteStream) -> ByteStream {
        if self.0.is_none() {
            return body;
        }
        let feed = self.clone();
        body.then(move |item| {
            let feed = feed.clone();
            async move {
                if let Ok(chunk) = &item {
                    feed.append(chunk).await;
                }
                item
            }
        })
        .boxed()
    }
}

/// What the syncer is asked.
enum Req {
    /// A new segment, its file open.
    Open(Segment, Arc<File>),
    /// The segment of that index holds this many bytes written.
    Durable(usize, u64),
}

/// Append what comes to the current segment's file; a thread of its own syncs and names the
/// bytes synced in the record, so writing never waits for the disk.
fn write_loop(
    mut rx: mpsc::Receiver<Msg>,
    dir: &Path,
    record: Record,
    sync_every: u64,
) -> io::Result<()> {
    let mut index = record.segments.len();
    std::thread::scope(|scope| {
        let (sync, requests) = std::sync::mpsc::channel::<Req>();
        scope.spawn(move || {
            if let Err(e) = sync_loop(requests, dir, record) {
                tracing::warn!(
                    spool = %dir.display(),
                    error = %e,
                    "syncing the import's stream kept on disk failed; a restart of this agent \
                     will resume it from the last byte synced"
                );
            }
        });
        // The current segment: its index, file, bytes written and bytes asked to be synced.
        let mut current: Option<(usize, Arc<File>, u64, u64)> = None;
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Segment { start, coding } => {
                    if let Some((i, _, written, asked)) = current.take()
                        && written > asked
                    {
                        let _ = sync.send(Req::Durable(i, written));
                    }
                    let file = Arc::new(create_private(&segment_path(dir, index))?);
                    let segment = Segment {
                        start,
                        coding,
                        durable: 0,
                    };
                    let _ = sync.send(Req::Open(segment, file.clone()));
                    current = Some((index, file, 0, 0));
                    index += 1;
                }
                Msg::Data(chunk) => {
                    let Some((i, file, written, asked)) = current.as_mut() else {
                        return Err(io::Error::other("bytes came before their segment"));
                    };
                    file.as_ref().write_all(&chunk)?;
                    *written += chunk.len() as u64;
                    if *written - *asked >= sync_every {
                        *asked = *written;
                        let _ = sync.send(Req::Durable(*i, *written));
                    }
                }
                Msg::Sync => {
                    if let Some((i, _, written, asked)) = current.as_mut()
                        && *written > *asked
                    {
                        *asked = *written;
                        let _ = sync.send(Req::Durable(*i, *written));
                    }
                }
            }
        }
        // The import ended: the spool is about to be removed, nothing more to keep.
        Ok(())
    })
}

/// Carry out the writer's requests in order: a segment opened is named in the record; bytes
/// written are synced, then named.
fn sync_loop(
    requests: std::sync::mpsc::Receiver<Req>,
    dir: &Path,
    mut record: Record,
) -> io::Result<()> {
    let mut files: Vec<Arc<File>> = Vec::new();
    let first = record.segments.len();
    while let Ok(req) = requests.recv() {
        match req {
            Req::Open(segment, file) => {
                File::open(dir)?.sync_all()?;
                record.segments.push(segment);
                files.push(file);
            }
            Req::Durable(index, upto) => {
                files[index - first].sync_data()?;
                record.segments[index].durable = upto;
            }
        }
        write_record(dir, &record)?;
    }
    Ok(())
}

/// An import found in the spool directory after a restart.
pub(crate) struct Recovered {
    /// What it imports into.
    pub(crate) target: VolumeTarget,
    /// The bytes of its plain stream the spool gives back.
    pub(crate) durable: u64,
    /// Those bytes.
    pub(crate) prefix: ByteStream,
    /// The spool, going on after them.
    pub(crate) spool: Spool,
}

/// The first `n` bytes of `stream`.
fn limit(stream: ByteStream, n: u64) -> ByteStream {
    futures_util::stream::unfold((stream, n), |(mut stream, left)| async move {
        if left == 0 {
            return None;
        }
        match stream.next().await? {
            Ok(mut chunk) => {
                if chunk.len() as u64 > left {
                    chunk.truncate(left as usize);
                }
                let left = left - chunk.len() as u64;
                Some((Ok(chunk), (stream, left)))
            }
            Err(e) => Some((Err(e), (stream, 0))),
        }
    })
    .boxed()
}

fn read_error(e: io::Error) -> RuntimeError {
    RuntimeError::new(
        RuntimeErrorKind::Engine,
        format!("reading the import's stream kept on disk failed: {e}"),
    )
}

/// The plain bytes the durable part of segment `index` holds.
async fn segment_plain(
    dir: PathBuf,
    index: usize,
    segment: Segment,
) -> Result<ByteStream, RuntimeError> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(segment_path(&dir, index))
        .await
        .map_err(read_error)?;
    let raw = tokio_util::io::ReaderStream::with_capacity(file.take(segment.durable), 1 << 20)
        .map_err(read_error)
        .boxed();
    match segment.coding {
        SpoolCoding::Plain => Ok(raw),
        SpoolCoding::Zstd => crate::channel::compress::decode_prefix(raw),
    }
}

/// How many plain bytes the durable part of a segment holds.
async fn plain_len(dir: &Path, index: usize, segment: &Segment) -> Result<u64, RuntimeError> {
    if segment.coding == SpoolCoding::Plain {
        return Ok(segment.durable);
    }
    let mut plain = segment_plain(dir.to_owned(), index, segment.clone()).await?;
    let mut n = 0;
    while let Some(chunk) = plain.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

/// The record in `dir`, its segments cut to what their files hold and to the ones that chain
/// without a gap from byte 0, and the plain bytes they give back (0: nothing usable).
async fn read_spool(dir: &Path) -> Result<(Record, u64), String> {
    let raw = tokio::fs::read(dir.join("import.json"))
        .await
        .map_err(|e| e.to_string())?;
    let mut record: Record = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    let named = dir.file_name().is_some_and(|n| {
        n.as_encoded_bytes() == hex::encode(record.target.name.as_bytes()).as_bytes()
    });
    if !named {
        return Err(format!(
            "it is named for another volume than {}",
            record.target.name
        ));
    }
    let mut end = 0u64;
    let mut kept = 0;
    for index in 0..record.segments.len() {
        let held = match tokio::fs::metadata(segment_path(dir, index)).await {
            Ok(m) => m.len(),
            Err(_) => 0,
        };
        let durable = record.segments[index].durable.min(held);
        record.segments[index].durable = durable;
        let segment = record.segments[index].clone();
        if segment.start > end {
            // A gap before it: neither it nor what follows can be used.
            break;
        }
        let reach = segment.start
            + plain_len(dir, index, &segment)
                .await
                .map_err(|e| e.message)?;
        kept = index + 1;
        match record.segments.get(index + 1) {
            // The next segment takes over from its start.
            Some(next) if next.start >= segment.start && next.start <= reach => end = next.start,
            _ => {
                end = reach;
                break;
            }
        }
    }
    record.segments.truncate(kept);
    Ok((record, end))
}

/// What a spool directory gives back: the import's target, how many bytes of its plain
/// stream the segments hold without a gap from byte 0, and those bytes.
pub struct ReadBack {
    /// The import the spool was kept for.
    pub target: VolumeTarget,
    /// The bytes of the plain stream it gives back (0: nothing usable).
    pub bytes: u64,
    /// Those bytes: each segment up to where the next one starts, the last up to
    /// [`ReadBack::bytes`].
    pub prefix: ByteStream,
}

/// Read the spool in `dir` as the agent does after a restart, without changing it: its record,
/// its segments cut to what their files hold and chained from byte 0, and the prefix of the
/// plain stream they give back. An `Err` says why the spool cannot be used (a record that is
/// not one, a directory named for another volume, a segment that cannot be read).
///
/// Everything in the directory is read as untrusted: the prefix yields exactly
/// [`ReadBack::bytes`] bytes or an error, whatever the files hold.
pub async fn read_back(dir: &Path) -> Result<ReadBack, String> {
    let (record, bytes, prefix) = read_back_record(dir).await?;
    Ok(ReadBack {
        target: record.target,
        bytes,
        prefix,
    })
}

async fn read_back_record(dir: &Path) -> Result<(Record, u64, ByteStream), String> {
    let (record, end) = read_spool(dir).await?;
    // The prefix: each segment up to where the next one starts, the last up to `end`.
    let mut parts = Vec::new();
    for (index, segment) in record.segments.iter().enumerate() {
        let until = record.segments.get(index + 1).map_or(end, |n| n.start);
        let plain = segment_plain(dir.to_owned(), index, segment.clone());
        let len = until - segment.start;
        parts.push(
            futures_util::stream::once(plain)
                .map(move |p| match p {
                    Ok(p) => limit(p, len),
                    Err(e) => futures_util::stream::iter([Err(e)]).boxed(),
                })
                .flatten()
                .boxed(),
        );
    }
    let prefix = futures_util::stream::iter(parts).flatten().boxed();
    Ok((record, end, prefix))
}

/// The imports whose streams were kept in `options.dir` before this process started. A spool
/// that cannot be read, or gives nothing back, is removed (and logged).
pub(crate) async fn recovered(options: &SpoolOptions) -> Vec<Recovered> {
    let mut out = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(&options.dir).await else {
        return out;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let dir = entry.path();
        let (record, end, prefix) = match read_back_record(&dir).await {
            Ok((record, end, prefix)) if end > 0 => (record, end, prefix),
            Ok(_) => {
                tracing::info!(spool = %dir.display(), "an import's spool gives nothing back; removed");
                let _ = tokio::fs::remove_dir_all(&dir).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(spool = %dir.display(), error = %e, "an import's spool cannot be read; removed");
                let _ = tokio::fs::remove_dir_all(&dir).await;
                continue;
            }
        };
        let rewritten = {
            let (dir, record) = (dir.clone(), record.clone());
            tokio::task::spawn_blocking(move || write_record(&dir, &record)).await
        };
        if !matches!(rewritten, Ok(Ok(()))) {
            tracing::warn!(spool = %dir.display(), "an import's spool cannot be written; removed");
            let _ = tokio::fs::remove_dir_all(&dir).await;
            continue;
        }
        let target = record.target.clone();
        let spool = Spool::run(options, target.name.clone(), dir, record);
        out.push(Recovered {
            target,
            durable: end,
            prefix,
            spool,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

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
        assert!(
            !options.room_for(None, u64::MAX),
            "a size unknown is never spooled"
        );
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

    /// A spool directory for `name` written by hand: `record` as its `import.json`, and each
    /// of `segments` as `seg-N`.
    fn spool_dir(root: &Path, name: &str, record: &str, segments: &[&[u8]]) -> PathBuf {
        let dir = root.join(hex::encode(name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("import.json"), record).unwrap();
        for (i, bytes) in segments.iter().enumerate() {
            std::fs::write(segment_path(&dir, i), bytes).unwrap();
        }
        dir
    }

    /// A record for `name` with segments of (start, coding, durable).
    fn record(name: &str, segments: &[(u64, &str, u64)]) -> String {
        let segments: Vec<String> = segments
            .iter()
            .map(|(start, coding, durable)| {
                format!(r#"{{"start":{start},"coding":"{coding}","durable":{durable}}}"#)
            })
            .collect();
        format!(
            r#"{{"target":{{"name":"{name}","labels":{{}},"expected_bytes":40}},"segments":[{}]}}"#,
            segments.join(",")
        )
    }

    async fn read_all(mut s: ByteStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    }

    fn zstd_of(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 1).unwrap()
    }

    #[tokio::test]
    async fn what_a_spool_gives_back_is_its_segments_chained_without_a_gap() {
        let root = tempfile::tempdir().unwrap();
        let options = SpoolOptions::new(root.path());
        let text: Vec<u8> = (0..400_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let z = zstd_of(&text);
        let mut want: Vec<(&str, Vec<u8>)> = vec![
            // Says 20, its file holds 15: 15.
            ("cut", b"0123456789abcde".to_vec()),
            // The second segment takes over at 6, where a resume went on from, the third at 10.
            ("chain", b"0123456789abcdefgh".to_vec()),
            // The second starts at 8, past the 5 bytes the first holds: only the first counts.
            ("gap", b"01234".to_vec()),
        ];
        spool_dir(
            root.path(),
            "cut",
            &record("cut", &[(0, "plain", 20)]),
            &[b"0123456789abcde"],
        );
        spool_dir(
            root.path(),
            "chain",
            &record(
                "chain",
                &[(0, "plain", 10), (6, "plain", 10), (10, "plain", 8)],
            ),
            &[b"0123456789", b"6789abcdef", b"abcdefgh"],
        );
        let gap = spool_dir(
            root.path(),
            "gap",
            &record("gap", &[(0, "plain", 5), (8, "plain", 3)]),
            &[b"01234", b"89a"],
        );
        // Coded, cut in the middle of its frame: the blocks it holds whole, then a plain
        // segment from a resume at 1000.
        spool_dir(
            root.path(),
            "coded",
            &record(
                "coded",
                &[(0, "zstd", z.len() as u64 / 2), (1000, "plain", 4)],
            ),
            &[&z, b"WXYZ"],
        );
        let mut coded = text[..1000].to_vec();
        coded.extend_from_slice(b"WXYZ");
        want.push(("coded", coded));
        // Coded and last: as far as its blocks decode (not its compressed length).
        let cut = z.len() as u64 * 2 / 3;
        spool_dir(
            root.path(),
            "zipped",
            &record("zipped", &[(0, "zstd", cut)]),
            &[&z],
        );
        // A byte at a time, so that the bytes decoded before the cut are all counted.
        let mut decoder = zstd::stream::Decoder::new(&z[..cut as usize]).unwrap();
        let mut decoded = 0;
        while let Ok(1) = decoder.read(&mut [0u8; 1]) {
            decoded += 1;
        }
        assert!(decoded > 0 && decoded < text.len());
        want.push(("zipped", text[..decoded].to_vec()));
        // Nothing durable, not JSON, named for another volume: removed.
        let empty = spool_dir(
            root.path(),
            "empty",
            &record("empty", &[(0, "plain", 0)]),
            &[b"0123"],
        );
        let none = spool_dir(root.path(), "none", &record("none", &[]), &[]);
        let garbled = spool_dir(root.path(), "garbled", "{not json", &[]);
        // Its first segment does not start at the stream's first byte.
        let late = spool_dir(
            root.path(),
            "late",
            &record("late", &[(4, "plain", 4)]),
            &[b"4567"],
        );
        let other = spool_dir(
            root.path(),
            "other",
            &record("cut", &[(0, "plain", 4)]),
            &[b"0123"],
        );
        let mut found = recovered(&options).await;
        found.sort_by(|a, b| a.target.name.cmp(&b.target.name));
        want.sort();
        assert_eq!(
            found
                .iter()
                .map(|r| r.target.name.as_str())
                .collect::<Vec<_>>(),
            want.iter().map(|(n, _)| *n).collect::<Vec<_>>()
        );
        for (r, (name, bytes)) in found.into_iter().zip(want) {
            assert_eq!(r.durable, bytes.len() as u64, "{name}");
            assert_eq!(r.target.expected_bytes, Some(40));
            assert_eq!(read_all(r.prefix).await, bytes, "{name}");
            r.spool.remove().await;
        }
        assert!(!gap.exists(), "removed once its import ended");
        for gone in [empty, none, garbled, other, late] {
            assert!(!gone.exists(), "{} is left", gone.display());
        }
    }

    /// The record of the spool of `v` under `root`.
    #[tokio::test]
    async fn read_back_reads_a_spool_without_changing_it() {
        let root = tempfile::tempdir().unwrap();
        let text = record("chain", &[(0, "plain", 10), (6, "plain", 10)]);
        let dir = spool_dir(root.path(), "chain", &text, &[b"0123456789", b"6789abcdef"]);
        let back = read_back(&dir).await.unwrap();
        assert_eq!(back.target.name, "chain");
        assert_eq!(back.bytes, 16);
        assert_eq!(read_all(back.prefix).await, b"0123456789abcdef");
        assert_eq!(
            std::fs::read_to_string(dir.join("import.json")).unwrap(),
            text,
            "the record is left as it was"
        );
        let garbled = spool_dir(root.path(), "garbled", "{not json", &[]);
        let e = read_back(&garbled)
            .await
            .err()
            .expect("a record that is not JSON");
        assert!(e.contains("key must be a string"), "{e}");
        assert!(garbled.join("import.json").exists(), "nothing is removed");
    }

    fn record_of(root: &Path) -> Record {
        let raw = std::fs::read(root.join(hex::encode("v")).join("import.json")).unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("{what}");
    }

    #[tokio::test]
    async fn bytes_kept_are_synced_before_the_record_names_them_and_a_resume_adds_a_segment() {
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
        let durable = |i: usize| record_of(root.path()).segments.get(i).map(|s| s.durable);
        let feed = spool.feed();
        feed.begin(0, SpoolCoding::Plain).await;
        feed.append(&Bytes::from_static(b"01234")).await;
        feed.append(&Bytes::from_static(b"56789")).await;
        wait_for("10 never named", || durable(0) == Some(10)).await;
        // Under `sync_every`: written, not yet named.
        feed.append(&Bytes::from_static(b"abc")).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(durable(0), Some(10));
        // A resume from byte 12 (the import took 12 of the 13 kept): a segment of its own, and
        // the one before it synced whole first.
        feed.begin(12, SpoolCoding::Plain).await;
        wait_for("13 never named", || durable(0) == Some(13)).await;
        feed.tee(futures_util::stream::iter([Ok(Bytes::from_static(b"cdef"))]).boxed())
            .collect::<Vec<_>>()
            .await;
        feed.sync().await;
        wait_for("the second segment never named", || durable(1) == Some(4)).await;
        assert_eq!(record_of(root.path()).segments[1].start, 12);
        // The process goes away without removing it; the next one finds it.
        drop(spool);
        let found = recovered(&options).await;
        assert_eq!(found.len(), 1);
        let r = found.into_iter().next().unwrap();
        assert_eq!(r.durable, 16);
        assert_eq!(read_all(r.prefix).await, b"0123456789abcdef");
        // The recovered spool goes on with a third segment, synced and named as the others.
        let feed = r.spool.feed();
        feed.begin(16, SpoolCoding::Plain).await;
        feed.append(&Bytes::from_static(b"ghij")).await;
        feed.sync().await;
        wait_for("the third segment never named", || durable(2) == Some(4)).await;
        assert_eq!(record_of(root.path()).segments[2].start, 16);
        r.spool.remove().await;
        assert!(!root.path().join(hex::encode("v")).exists());
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

    /// A spool holds a volume's data: its directories are 0700 and its files 0600, whatever
    /// the umask.
    #[tokio::test]
    async fn a_spool_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let options = SpoolOptions {
            sync_every: 1,
            reserve: 0,
            ..SpoolOptions::new(root.path().join("imports"))
        };
        let target = VolumeTarget {
            name: "v".into(),
            labels: Default::default(),
            expected_bytes: Some(40),
        };
        let spool = Spool::start(&options, &target).await.expect("room for it");
        let feed = spool.feed();
        feed.begin(0, SpoolCoding::Plain).await;
        feed.append(&Bytes::from_static(b"secret")).await;
        feed.sync().await;
        let dir = options.dir.join(hex::encode("v"));
        wait_for("the segment never named", || {
            record_of(&options.dir)
                .segments
                .first()
                .is_some_and(|s| s.durable == 6)
        })
        .await;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&options.dir), 0o700, "the spool directory");
        assert_eq!(mode(&dir), 0o700, "the import's directory");
        assert_eq!(mode(&dir.join("import.json")), 0o600, "the record");
        assert_eq!(mode(&segment_path(&dir, 0)), 0o600, "the segment");
        spool.remove().await;
    }
}
