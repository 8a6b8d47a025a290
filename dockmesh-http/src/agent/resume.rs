//! Volume imports that outlive their stream (agent side).
//!
//! An import runs in its own task and is fed from the request body through a bounded channel,
//! so a body that breaks off (the connection to the server dropped) leaves the import waiting
//! rather than failed. It waits up to [`RESUME_WAIT`] for a later request that carries the rest
//! of its stream and names the byte it goes on from ([`Imports::resume`]); the byte is exact:
//! only bytes handed to the import count as taken in. A fresh import of the same volume drops
//! a waiting one.
//!
//! With a spool ([`Imports::with_spool`]), each import's stream is also kept on disk as it is
//! taken in ([`super::spool`]), so an import survives a restart of the agent:
//! [`Imports::recover`] starts it again from what its spool holds (read from the disk, checked
//! and written again by the runtime) and has it wait at the byte that ends. Without one, or
//! without room for one, a restarted agent forgets its imports and the volume is sent whole.

use super::spool::{self, Spool, SpoolCoding, SpoolFeed, SpoolOptions};
use crate::channel::compress;
use bytes::Bytes;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    ByteStream, HostRuntime, ImportRequest, RuntimeError, RuntimeErrorKind, VolumeTarget,
    no_progress,
};
use futures_util::StreamExt;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// How long an import whose stream broke off waits for the rest (as long as the driver keeps
/// retrying a cut transfer).
pub const RESUME_WAIT: Duration = Duration::from_secs(600);

/// Chunks in flight between the request body and the import.
const FEED_DEPTH: usize = 8;

type Outcome = Option<Result<VolumeManifest, (RuntimeErrorKind, String)>>;

struct Job {
    generation: u64,
    volume: String,
    /// Bytes of the stream handed to the import.
    taken: AtomicU64,
    /// Where an import recovered after a restart waits once its spool is read back into it
    /// (0 for the others).
    recovered_to: u64,
    /// The import's stream on disk, if kept.
    spool: Mutex<Option<Spool>>,
    /// Appends to it.
    spool_feed: SpoolFeed,
    /// Feeds the import; `None` once its stream has ended (or it was given up).
    feed: Mutex<Option<mpsc::Sender<Result<Bytes, RuntimeError>>>>,
    /// Stops the task reading the current request body into the import.
    pump: Mutex<Option<AbortHandle>>,
    /// Held by that task while it runs (so a resume can wait until it has stopped).
    pumping: Arc<tokio::sync::Mutex<()>>,
    result: watch::Receiver<Outcome>,
}

/// How reading one request body into an import ended.
enum Pumped {
    /// The body ended: the import's stream is complete.
    Ended,
    /// The import stopped taking data (it ended or failed).
    Refused,
    /// The body broke off: the import waits for the rest.
    Broken(RuntimeError),
    /// A spool read back into a recovered import ended: the import waits for the rest.
    Replayed,
}

/// Where the bytes an import is fed come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A request body: kept in the spool, and its end ends the stream.
    Request,
    /// The import's own spool, read back after a restart: it is on disk already, and the
    /// import waits for the rest once it is read.
    Spool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request's body feeding an import.
pub struct Incoming {
    /// The body as it came.
    pub body: ByteStream,
    /// Whether it is zstd-coded: it is decoded for the import, and kept coded in the spool.
    pub zstd: bool,
    /// Counts the plain bytes handed on to the import, when given.
    pub counter: Option<Arc<AtomicU64>>,
}

impl Incoming {
    /// A plain body, not counted.
    pub fn plain(body: ByteStream) -> Incoming {
        Incoming {
            body,
            zstd: false,
            counter: None,
        }
    }
}

impl From<ByteStream> for Incoming {
    fn from(body: ByteStream) -> Incoming {
        Incoming::plain(body)
    }
}

/// The imports of one agent, by volume.
pub struct Imports {
    runtime: Arc<dyn HostRuntime>,
    spool: Option<SpoolOptions>,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    next: AtomicU64,
    wait: Duration,
}

impl Imports {
    /// Imports into `runtime`, a broken-off one waiting [`RESUME_WAIT`].
    pub fn new(runtime: Arc<dyn HostRuntime>) -> Arc<Imports> {
        Imports::with_wait(runtime, RESUME_WAIT)
    }

    /// Imports into `runtime`, a broken-off one waiting `wait`.
    pub fn with_wait(runtime: Arc<dyn HostRuntime>, wait: Duration) -> Arc<Imports> {
        Arc::new(Imports {
            runtime,
            spool: None,
            jobs: Mutex::default(),
            next: AtomicU64::new(1),
            wait,
        })
    }

    /// Imports into `runtime` that keep their streams on disk as `spool` says, so they survive
    /// a restart ([`Imports::recover`]).
    pub fn with_spool(
        runtime: Arc<dyn HostRuntime>,
        wait: Duration,
        spool: SpoolOptions,
    ) -> Arc<Imports> {
        Arc::new(Imports {
            runtime,
            spool: Some(spool),
            jobs: Mutex::default(),
            next: AtomicU64::new(1),
            wait,
        })
    }

    /// Start again every import whose stream the spool kept before a restart: each is fed
    /// what its spool holds, then waits at the byte that ends for [`Imports::resume`], as a
    /// broken-off import does. Returns the volumes and those bytes.
    pub async fn recover(self: &Arc<Self>) -> Vec<(String, u64)> {
        let Some(options) = &self.spool else {
            return Vec::new();
        };
        let mut recovered = Vec::new();
        for found in spool::recovered(options).await {
            let volume = found.target.name.clone();
            tracing::info!(
                %volume,
                at = found.durable,
                "an import cut off by a restart goes on: its stream kept on disk is read back \
                 into it, and it waits at byte {} for the rest",
                found.durable
            );
            let job = self.launch(found.target, Some(found.spool), found.durable);
            // Held from here, so a resume waits until the spool is read back.
            let running = job.pumping.clone().lock_owned().await;
            let imports = self.clone();
            let prefix = found.prefix;
            tokio::spawn(async move {
                let _ = imports
                    .feed_locked(&job, Incoming::plain(prefix), Source::Spool, running)
                    .await;
            });
            recovered.push((volume, found.durable));
        }
        recovered
    }

    /// Where the import of `volume` waits: the bytes of its stream it took in (for an import
    /// recovered after a restart and still reading its spool, the byte that spool ends at).
    /// `None` when no import of it is under way.
    pub fn waiting_at(&self, volume: &str) -> Option<u64> {
        let job = lock(&self.jobs).get(volume).cloned()?;
        let open = lock(&job.feed).is_some();
        open.then(|| job.taken.load(Ordering::SeqCst).max(job.recovered_to))
    }

    /// Import `data` into `target` (dropping an import of the same volume that waits), and
    /// return the import's manifest. When `data` breaks off, the error is returned and the
    /// import waits for [`Imports::resume`].
    pub async fn start(
        self: &Arc<Self>,
        target: VolumeTarget,
        data: impl Into<Incoming>,
    ) -> Result<VolumeManifest, RuntimeError> {
        let data = data.into();
        let old = lock(&self.jobs).remove(&target.name);
        if let Some(old) = old {
            self.give_up(&old, "a new import of the volume replaced it")
                .await;
        }
        let spool = match &self.spool {
            Some(options) => Spool::start(options, &target).await,
            None => None,
        };
        let job = self.launch(target, spool, 0);
        self.feed(&job, data, Source::Request).await
    }

    /// Register an import into `target` and start it in a task of its own, fed through the
    /// job's channel; once it ends it is forgotten and its spool removed.
    fn launch(self: &Arc<Self>, target: VolumeTarget, spool: Option<Spool>, at: u64) -> Arc<Job> {
        let (tx, mut rx) = mpsc::channel::<Result<Bytes, RuntimeError>>(FEED_DEPTH);
        let (done, result) = watch::channel(None);
        let job = Arc::new(Job {
            generation: self.next.fetch_add(1, Ordering::Relaxed),
            volume: target.name.clone(),
            taken: AtomicU64::new(0),
            recovered_to: at,
            spool_feed: spool.as_ref().map_or_else(SpoolFeed::none, Spool::feed),
            spool: Mutex::new(spool),
            feed: Mutex::new(Some(tx)),
            pump: Mutex::new(None),
            pumping: Arc::default(),
            result,
        });
        lock(&self.jobs).insert(target.name.clone(), job.clone());
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        let (imports, finished) = (self.clone(), job.clone());
        tokio::spawn(async move {
            let outcome = imports
                .runtime
                .import_volume(&ImportRequest::new(target), stream, no_progress())
                .await;
            imports.forget(&finished);
            let spool = lock(&finished.spool).take();
            if let Some(spool) = spool {
                spool.remove().await;
            }
            let _ = done.send(Some(outcome.map_err(|e| (e.kind, e.message))));
        });
        job
    }

    /// Give up the import of `volume` under way or waiting, if any (the volume is about to be
    /// removed: a waiting import would keep it in use). Returns whether there was one.
    pub async fn cancel(&self, volume: &str) -> bool {
        let job = lock(&self.jobs).remove(volume);
        match job {
            Some(job) => {
                self.give_up(&job, "its volume is being removed").await;
                true
            }
            None => false,
        }
    }

    /// Go on with the import of `volume` that waits at `offset`, `data` being its stream
    /// from that byte on. Refused ([`RuntimeErrorKind::Integrity`]) when no import of the
    /// volume waits, or it waits at another byte; nothing changes then.
    pub async fn resume(
        self: &Arc<Self>,
        volume: &str,
        offset: u64,
        data: impl Into<Incoming>,
    ) -> Result<VolumeManifest, RuntimeError> {
        let data = data.into();
        let refused = |why: String| {
            RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!("the import of volume {volume} cannot go on from byte {offset}: {why}"),
            )
        };
        let job = lock(&self.jobs)
            .get(volume)
            .cloned()
            .ok_or_else(|| refused("no import of it waits on this host".into()))?;
        // A body still being read belongs to a connection the server gave up on.
        stop_pump(&job).await;
        if lock(&job.feed).is_none() {
            return Err(refused("its stream already ended".into()));
        }
        let taken = job.taken.load(Ordering::SeqCst);
        if taken != offset {
            return Err(refused(format!("it took in {taken} bytes")));
        }
        self.feed(&job, data, Source::Request).await
    }

    /// Read `data` into `job`'s import; its result, or the error that broke `data` off.
    async fn feed(
        self: &Arc<Self>,
        job: &Arc<Job>,
        data: Incoming,
        source: Source,
    ) -> Result<VolumeManifest, RuntimeError> {
        let running = job.pumping.clone().lock_owned().await;
        self.feed_locked(job, data, source, running).await
    }

    /// [`Imports::feed`], `running` being `job`'s pumping lock.
    async fn feed_locked(
        self: &Arc<Self>,
        job: &Arc<Job>,
        data: Incoming,
        source: Source,
        running: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<VolumeManifest, RuntimeError> {
        let Some(tx) = lock(&job.feed).clone() else {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!("the import of volume {} has ended", job.volume),
            ));
        };
        let pumping = job.clone();
        let spool = job.spool_feed.clone();
        let Incoming {
            body,
            zstd,
            counter,
        } = data;
        // A request's body is kept as it came (coded or not), from the byte it goes on from.
        let body = match source {
            Source::Request => {
                let coding = if zstd {
                    SpoolCoding::Zstd
                } else {
                    SpoolCoding::Plain
                };
                spool.begin(job.taken.load(Ordering::SeqCst), coding).await;
                spool.tee(body)
            }
            Source::Spool => body,
        };
        let body = if zstd { compress::decode(body)? } else { body };
        let mut data = match counter {
            Some(counter) => body
                .inspect_ok(move |chunk| {
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                })
                .boxed(),
            None => body,
        };
        let pump = tokio::spawn(async move {
            let _running = running;
            while let Some(item) = data.next().await {
                match item {
                    Ok(chunk) => {
                        let n = chunk.len() as u64;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return Pumped::Refused;
                        }
                        pumping.taken.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(e) if e.kind == RuntimeErrorKind::Unreachable => {
                        spool.sync().await;
                        return Pumped::Broken(e);
                    }
                    Err(e) => {
                        // Bad data (a coding error): the import fails with it.
                        tracing::warn!(volume = %pumping.volume, error = %e, "the import's stream is refused");
                        lock(&pumping.feed).take();
                        let _ = tx.send(Err(e)).await;
                        return Pumped::Refused;
                    }
                }
            }
            if source == Source::Spool {
                return Pumped::Replayed;
            }
            lock(&pumping.feed).take();
            Pumped::Ended
        });
        // Reading the spool back is not tied to a connection: nothing but its end stops it.
        if source == Source::Request {
            *lock(&job.pump) = Some(pump.abort_handle());
        }
        let pumped = pump.await.unwrap_or_else(|_| {
            Pumped::Broken(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                "a resumed request took the import over",
            ))
        });
        match pumped {
            Pumped::Broken(e) => {
                tracing::info!(
                    volume = %job.volume,
                    at = job.taken.load(Ordering::SeqCst),
                    error = %e,
                    "the import's stream broke off; it waits to be resumed"
                );
                self.wait_for_resume(job.clone());
                Err(e)
            }
            Pumped::Replayed => {
                tracing::info!(
                    volume = %job.volume,
                    at = job.taken.load(Ordering::SeqCst),
                    "the import's stream kept on disk is read back; it waits to be resumed"
                );
                self.wait_for_resume(job.clone());
                Err(RuntimeError::new(
                    RuntimeErrorKind::Unreachable,
                    format!(
                        "the import of volume {} waits for the rest of its stream",
                        job.volume
                    ),
                ))
            }
            Pumped::Ended | Pumped::Refused => {
                let mut result = job.result.clone();
                let outcome = result
                    .wait_for(Option::is_some)
                    .await
                    .map(|o| o.clone())
                    .ok()
                    .flatten()
                    .map(|r| r.map_err(|(kind, message)| RuntimeError::new(kind, message)));
                outcome.unwrap_or_else(|| {
                    Err(RuntimeError::new(
                        RuntimeErrorKind::Engine,
                        format!("the import of volume {} ended without a result", job.volume),
                    ))
                })
            }
        }
    }

    /// The connection the requests came over is gone: every import still being fed by one
    /// waits to be resumed (its body may never say it broke off).
    pub fn connection_closed(self: &Arc<Self>) {
        let jobs: Vec<Arc<Job>> = lock(&self.jobs).values().cloned().collect();
        for job in jobs {
            let pump = lock(&job.pump).take();
            if let Some(pump) = pump {
                pump.abort();
                let spool = job.spool_feed.clone();
                tokio::spawn(async move { spool.sync().await });
                if lock(&job.feed).is_some() {
                    tracing::info!(
                        volume = %job.volume,
                        at = job.taken.load(Ordering::SeqCst),
                        "the connection feeding an import closed; it waits to be resumed"
                    );
                    self.wait_for_resume(job);
                }
            }
        }
    }

    /// Give the import up unless a request resumes it within the wait.
    fn wait_for_resume(self: &Arc<Self>, job: Arc<Job>) {
        let imports = self.clone();
        let wait = self.wait;
        tokio::spawn(async move {
            let taken = job.taken.load(Ordering::SeqCst);
            tokio::time::sleep(wait).await;
            let current = lock(&imports.jobs)
                .get(&job.volume)
                .is_some_and(|j| j.generation == job.generation);
            let idle = job.pumping.try_lock().is_ok() && job.taken.load(Ordering::SeqCst) == taken;
            if current && idle && lock(&job.feed).is_some() {
                imports
                    .give_up(
                        &job,
                        &format!("its stream broke off and was not resumed within {wait:?}"),
                    )
                    .await;
            }
        });
    }

    /// End `job`'s import with an error naming `why`, and wait for it to stop.
    async fn give_up(&self, job: &Arc<Job>, why: &str) {
        stop_pump(job).await;
        let tx = lock(&job.feed).take();
        if let Some(tx) = tx {
            let _ = tx
                .send(Err(RuntimeError::new(
                    RuntimeErrorKind::Unreachable,
                    format!("the import of volume {} was given up: {why}", job.volume),
                )))
                .await;
        }
        let mut result = job.result.clone();
        let _ = result.wait_for(Option::is_some).await;
        self.forget(job);
    }

    fn forget(&self, job: &Arc<Job>) {
        let mut jobs = lock(&self.jobs);
        if jobs
            .get(&job.volume)
            .is_some_and(|j| j.generation == job.generation)
        {
            jobs.remove(&job.volume);
        }
    }
}

/// Stop the task reading a request body into `job`'s import, and wait until it has stopped (so
/// that what it took in is final).
async fn stop_pump(job: &Job) {
    let pump = lock(&job.pump).take();
    if let Some(pump) = pump {
        pump.abort();
    }
    drop(job.pumping.lock().await);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::testing::FakeHost;

    const DATA: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

    fn target() -> VolumeTarget {
        VolumeTarget {
            name: "v".into(),
            labels: Default::default(),
            expected_bytes: None,
        }
    }

    /// `DATA[from..]` in chunks of 5, broken off with an unreachable error after `upto`.
    fn stream(from: usize, upto: Option<usize>) -> ByteStream {
        let end = upto.unwrap_or(DATA.len());
        let mut items: Vec<Result<Bytes, RuntimeError>> = DATA[from..end]
            .chunks(5)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if upto.is_some() {
            items.push(Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                "the connection dropped",
            )));
        }
        futures_util::stream::iter(items).boxed()
    }

    /// Wait (up to 5 s) until `done` holds, failing with `what` otherwise.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Start an import whose body gives 10 bytes and then neither ends nor breaks (its
    /// connection is gone without a word), once it has taken them in; the request's task.
    async fn start_stalled(
        imports: &Arc<Imports>,
    ) -> tokio::task::JoinHandle<Result<VolumeManifest, RuntimeError>> {
        start_stalled_of(imports, target()).await
    }

    async fn start_stalled_of(
        imports: &Arc<Imports>,
        target: VolumeTarget,
    ) -> tokio::task::JoinHandle<Result<VolumeManifest, RuntimeError>> {
        let stalled = stream(0, None)
            .take(2)
            .chain(futures_util::stream::pending())
            .boxed();
        let started = {
            let imports = imports.clone();
            tokio::spawn(async move { imports.start(target, stalled).await })
        };
        until("not fed", || imports.waiting_at("v") == Some(10)).await;
        started
    }

    #[tokio::test]
    async fn a_broken_off_import_goes_on_from_the_exact_byte_and_only_from_there() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::new(host.clone());
        let err = imports
            .start(target(), stream(0, Some(12)))
            .await
            .unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable);
        assert_eq!(imports.waiting_at("v"), Some(12));
        assert_eq!(imports.waiting_at("other"), None);
        // Another byte, or another volume: refused, and it still waits at 12.
        for (volume, offset) in [("v", 10), ("v", 15), ("other", 12)] {
            let err = imports
                .resume(volume, offset, stream(offset as usize, None))
                .await
                .unwrap_err();
            assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
            assert!(err.message.contains(&format!("byte {offset}")), "{err}");
        }
        assert_eq!(imports.waiting_at("v"), Some(12));
        // Broken off again, further on.
        let err = imports
            .resume("v", 12, stream(12, Some(27)))
            .await
            .unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable);
        assert_eq!(imports.waiting_at("v"), Some(27));
        let manifest = imports.resume("v", 27, stream(27, None)).await.unwrap();
        assert_eq!(manifest.content_bytes(), DATA.len() as u64);
        assert_eq!(host.volume("v").as_deref(), Some(DATA));
        assert_eq!(imports.waiting_at("v"), None, "nothing waits once it ended");
        assert!(
            lock(&imports.jobs).is_empty(),
            "an ended import is forgotten"
        );
    }

    #[tokio::test]
    async fn a_fresh_import_drops_the_waiting_one() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::new(host.clone());
        imports
            .start(target(), stream(0, Some(10)))
            .await
            .unwrap_err();
        assert_eq!(imports.waiting_at("v"), Some(10));
        imports.start(target(), stream(0, None)).await.unwrap();
        assert_eq!(host.volume("v").as_deref(), Some(DATA));
        assert_eq!(imports.waiting_at("v"), None);
        let err = imports.resume("v", 10, stream(10, None)).await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Integrity);
    }

    #[tokio::test]
    async fn an_import_not_resumed_in_time_is_given_up() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::with_wait(host.clone(), Duration::from_millis(50));
        imports
            .start(target(), stream(0, Some(10)))
            .await
            .unwrap_err();
        assert_eq!(imports.waiting_at("v"), Some(10));
        until("still waiting", || imports.waiting_at("v").is_none()).await;
        assert_eq!(host.volume("v"), None, "nothing was stored");
        let err = imports.resume("v", 10, stream(10, None)).await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Integrity);
    }

    #[tokio::test]
    async fn a_closed_connection_leaves_a_stalled_import_waiting() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::new(host.clone());
        let started = start_stalled(&imports).await;
        started.abort();
        imports.connection_closed();
        let manifest = imports.resume("v", 10, stream(10, None)).await.unwrap();
        assert_eq!(manifest.content_bytes(), DATA.len() as u64);
        assert_eq!(host.volume("v").as_deref(), Some(DATA));
    }

    #[tokio::test]
    async fn removing_the_volume_gives_up_the_import_that_waits() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::new(host.clone());
        imports
            .start(target(), stream(0, Some(10)))
            .await
            .unwrap_err();
        assert!(imports.cancel("v").await);
        assert_eq!(imports.waiting_at("v"), None);
        assert!(!imports.cancel("v").await, "nothing left to give up");
        let err = imports.resume("v", 10, stream(10, None)).await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Integrity);
        assert_eq!(host.volume("v"), None);
    }

    #[tokio::test]
    async fn bad_data_fails_the_import_rather_than_waiting() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::new(host.clone());
        let bad = stream(0, None)
            .take(2)
            .chain(futures_util::stream::iter(vec![Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                "the compressed volume stream ended in the middle of its frame",
            ))]))
            .boxed();
        let err = imports.start(target(), bad).await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
        assert!(err.message.contains("middle of its frame"), "{err}");
        assert_eq!(imports.waiting_at("v"), None, "nothing waits");
        assert_eq!(host.volume("v"), None);
    }

    #[tokio::test]
    async fn a_stalled_import_whose_connection_closed_is_given_up_after_the_wait() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::with_wait(host.clone(), Duration::from_millis(50));
        let started = start_stalled(&imports).await;
        imports.connection_closed();
        // The request saw its body taken over; the import waited, then was given up.
        let ended = tokio::time::timeout(Duration::from_secs(5), started).await;
        assert!(ended.expect("the request never ended").unwrap().is_err());
        until("never given up", || imports.waiting_at("v").is_none()).await;
        assert_eq!(host.volume("v"), None);
    }

    #[tokio::test]
    async fn a_resumed_import_still_taking_data_is_not_given_up_by_the_earlier_wait() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::with_wait(host.clone(), Duration::from_millis(60));
        imports
            .start(target(), stream(0, Some(10)))
            .await
            .unwrap_err();
        // The rest comes slowly, its first piece only after the wait started at the cut.
        let mut first = true;
        let slow = stream(10, None)
            .then(move |c| {
                let pause = if std::mem::take(&mut first) { 150 } else { 40 };
                async move {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    c
                }
            })
            .boxed();
        let manifest = imports.resume("v", 10, slow).await.unwrap();
        assert_eq!(manifest.content_bytes(), DATA.len() as u64);
        assert_eq!(host.volume("v").as_deref(), Some(DATA));
    }

    #[tokio::test]
    async fn a_resume_takes_the_import_over_from_a_request_still_reading() {
        let host = Arc::new(FakeHost::new("h"));
        let imports = Imports::new(host.clone());
        let first = start_stalled(&imports).await;
        // No word that its connection closed: the resume stops the old reader itself.
        let resumed = tokio::time::timeout(
            Duration::from_secs(5),
            imports.resume("v", 10, stream(10, None)),
        )
        .await;
        let manifest = resumed.expect("the resume never ended").unwrap();
        assert_eq!(manifest.content_bytes(), DATA.len() as u64);
        let ended = tokio::time::timeout(Duration::from_secs(5), first).await;
        let err = ended
            .expect("the first request never ended")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
    }

    fn spooled(host: Arc<FakeHost>, root: &std::path::Path) -> Arc<Imports> {
        let options = SpoolOptions {
            sync_every: 1,
            reserve: 0,
            ..SpoolOptions::new(root)
        };
        Imports::with_spool(host, RESUME_WAIT, options)
    }

    fn sized() -> VolumeTarget {
        VolumeTarget {
            expected_bytes: Some(DATA.len() as u64),
            ..target()
        }
    }

    /// The bytes of the plain stream the spool of `v` names durable (its segments are
    /// plain here).
    fn durable(root: &std::path::Path) -> Option<u64> {
        let record = std::fs::read(root.join(hex::encode("v")).join("import.json")).ok()?;
        let record: serde_json::Value = serde_json::from_slice(&record).ok()?;
        let last = record["segments"].as_array()?.last()?.clone();
        Some(last["start"].as_u64()? + last["durable"].as_u64()?)
    }

    #[tokio::test]
    async fn a_spooled_import_goes_on_after_a_restart_from_the_bytes_kept() {
        let root = tempfile::tempdir().unwrap();
        let imports = spooled(Arc::new(FakeHost::new("h")), root.path());
        // Taken over once from a request still reading (its chunk kept again at its place),
        // then broken off at 22.
        let first = start_stalled_of(&imports, sized()).await;
        let err = imports
            .resume("v", 10, stream(10, Some(22)))
            .await
            .unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable);
        assert!(first.await.unwrap().is_err());
        until("not kept", || durable(root.path()) == Some(22)).await;
        // The agent restarts: the old process's import is gone with it.
        drop(imports);
        let host = Arc::new(FakeHost::new("h"));
        let again = spooled(host.clone(), root.path());
        assert_eq!(again.recover().await, [("v".to_owned(), 22)]);
        assert_eq!(
            again.waiting_at("v"),
            Some(22),
            "told before the spool is read back"
        );
        let err = again.resume("v", 20, stream(20, None)).await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
        assert!(err.message.contains("it took in 22 bytes"), "{err}");
        let manifest = again.resume("v", 22, stream(22, None)).await.unwrap();
        assert_eq!(manifest.content_bytes(), DATA.len() as u64);
        assert_eq!(host.volume("v").as_deref(), Some(DATA));
        until("the spool is left", || {
            !root.path().join(hex::encode("v")).exists()
        })
        .await;
        // Nothing left to recover.
        let third = spooled(Arc::new(FakeHost::new("h")), root.path());
        assert!(third.recover().await.is_empty());
    }

    #[tokio::test]
    async fn a_recovered_import_not_resumed_is_given_up_and_its_spool_removed() {
        let root = tempfile::tempdir().unwrap();
        let imports = spooled(Arc::new(FakeHost::new("h")), root.path());
        imports
            .start(sized(), stream(0, Some(15)))
            .await
            .unwrap_err();
        until("not kept", || durable(root.path()) == Some(15)).await;
        drop(imports);
        let host = Arc::new(FakeHost::new("h"));
        let options = SpoolOptions {
            sync_every: 1,
            reserve: 0,
            ..SpoolOptions::new(root.path())
        };
        let again = Imports::with_spool(host.clone(), Duration::from_millis(50), options);
        assert_eq!(again.recover().await, [("v".to_owned(), 15)]);
        until("still waiting", || again.waiting_at("v").is_none()).await;
        assert_eq!(host.volume("v"), None, "nothing was stored");
        until("the spool is left", || {
            !root.path().join(hex::encode("v")).exists()
        })
        .await;
    }

    #[tokio::test]
    async fn an_import_that_ends_removes_its_spool_and_one_without_room_has_none() {
        let root = tempfile::tempdir().unwrap();
        let host = Arc::new(FakeHost::new("h"));
        let imports = spooled(host.clone(), root.path());
        imports.start(sized(), stream(0, None)).await.unwrap();
        assert_eq!(host.volume("v").as_deref(), Some(DATA));
        assert!(!root.path().join(hex::encode("v")).exists());
        // No size told: no spool, and a restart has nothing to go on with.
        imports
            .start(target(), stream(0, Some(10)))
            .await
            .unwrap_err();
        assert_eq!(
            imports.waiting_at("v"),
            Some(10),
            "it still waits in memory"
        );
        assert!(!root.path().join(hex::encode("v")).exists());
        let again = spooled(host, root.path());
        assert!(again.recover().await.is_empty());
    }
}
