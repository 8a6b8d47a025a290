//! The migration supervisor: one background task per migration being driven, each a loop over
//! the core [`Driver`] that retries with backoff (1 s doubling to a ceiling) while a step waits
//! on an unreachable host, resumes every unsettled migration at start-up, stops at a checkpoint
//! on shutdown, and keeps per-volume byte progress for the API and its rate history for the
//! dashboard ([`crate::server::rates`]).
//!
//! Nothing here is the source of truth: the store is. A task that dies with the process is
//! replaced by [`Supervisor::resume_all`] on the next start.

use crate::server::hosts::Hosts;
use crate::server::metrics::Metrics;
use crate::server::rates::{RateHistory, Rates};
use crate::server::state::ServerConfig;
use dockmesh_core::MigrationId;
use dockmesh_core::migration::{DriveError, Driver, Phase, ProgressEvent, StoredMigration};
use dockmesh_core::ports::{Clock, IdGen, MAX_PAGE, MigrationQuery, Store, StoreError};
use dockmesh_core::system::TokioTimer;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The name the server holds leases under. One server runs per database (the binary holds the
/// server lock), so a restarted server takes its own leases back at once.
pub const SERVER_LEASE_OWNER: &str = "dockmesh-server";

/// Bytes of one volume seen so far by a running transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeProgress {
    /// Bytes so far.
    pub bytes: u64,
    /// The expected total, when known.
    pub total: Option<u64>,
    /// Bytes sent to the target again after a transfer was cut: what the target had not taken
    /// in when an attempt went on from its resume point, or everything when it started over.
    pub resent: u64,
    /// The byte the last resumed attempt went on from.
    pub resumed_from: Option<u64>,
}

type ProgressMap = Mutex<HashMap<MigrationId, BTreeMap<String, VolumeProgress>>>;

/// Drives migrations in the background.
pub struct Supervisor {
    driver: Arc<Driver>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
    stop_tx: watch::Sender<bool>,
    tasks: Mutex<HashMap<MigrationId, JoinHandle<()>>>,
    progress: Arc<ProgressMap>,
    rates: Arc<Rates>,
    reminded: Mutex<BTreeSet<MigrationId>>,
    max_retry_delay: Duration,
}

impl Supervisor {
    /// A supervisor whose driver works over these ports.
    pub fn new(
        store: Arc<dyn Store>,
        hosts: Arc<Hosts>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
        metrics: Arc<Metrics>,
        config: &ServerConfig,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let progress: Arc<ProgressMap> = Arc::default();
        let sink = progress.clone();
        let rates: Arc<Rates> = Arc::default();
        let rate_sink = rates.clone();
        let rate_clock = clock.clone();
        let crash = config.crash_at.clone().map(CrashPoint::parse);
        let on_progress = Arc::new(move |e: ProgressEvent| {
            if let Some(c) = &crash {
                c.check(&e);
            }
            match e {
                ProgressEvent::VolumeBytes {
                    id,
                    volume,
                    bytes,
                    total,
                } => {
                    rate_sink.record(id, volume.clone(), rate_clock.now(), bytes);
                    let mut map = sink.lock().expect("progress poisoned");
                    let v = map.entry(id).or_default().entry(volume).or_default();
                    // A retried transfer starts again from zero: count only what is new.
                    if bytes > v.bytes {
                        metrics.add_bytes_moved(bytes - v.bytes);
                    } else if bytes < v.bytes {
                        // Started over: everything sent before is sent again.
                        v.resent += v.bytes;
                    }
                    v.bytes = bytes;
                    v.total = total;
                }
                ProgressEvent::VolumeResumed { id, volume, offset } => {
                    rate_sink.resumed(id, volume.clone(), rate_clock.now(), offset);
                    let mut map = sink.lock().expect("progress poisoned");
                    let v = map.entry(id).or_default().entry(volume).or_default();
                    v.resent += v.bytes.saturating_sub(offset);
                    v.bytes = offset;
                    v.resumed_from = Some(offset);
                }
                ProgressEvent::Recorded { id, phase } => {
                    metrics.migration_phase(id, &crate::server::api::health::wire_name(phase));
                }
                _ => {}
            }
        });
        let driver = Driver::new(store.clone(), hosts, clock.clone(), ids)
            .with_owner(SERVER_LEASE_OWNER)
            .with_lease_ttl(config.lease_ttl)
            .with_timer(Arc::new(TokioTimer))
            .with_stop(stop.clone())
            .with_progress(on_progress);
        let (stop_tx, _) = watch::channel(false);
        Supervisor {
            driver: Arc::new(driver),
            store,
            clock,
            stop,
            stop_tx,
            tasks: Mutex::default(),
            progress,
            rates,
            reminded: Mutex::default(),
            max_retry_delay: config.max_retry_delay,
        }
    }

    /// The driver (for requests the API records before the supervisor drives them).
    pub fn driver(&self) -> &Arc<Driver> {
        &self.driver
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Per-volume progress of a migration's transfers in this process.
    pub fn progress(&self, id: MigrationId) -> BTreeMap<String, VolumeProgress> {
        self.progress
            .lock()
            .expect("progress poisoned")
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// The transfer rate history of each volume of `id` seen by this process.
    pub fn rates(&self, id: MigrationId) -> BTreeMap<String, RateHistory> {
        self.rates.of(id)
    }

    /// Whether a task drives `id` now.
    pub fn is_driving(&self, id: MigrationId) -> bool {
        self.tasks
            .lock()
            .expect("tasks poisoned")
            .get(&id)
            .is_some_and(|t| !t.is_finished())
    }

    /// Drive `id` in the background until it settles; returns `false` when a task already
    /// drives it or shutdown has begun.
    pub fn drive(self: &Arc<Self>, id: MigrationId) -> bool {
        if self.stopping() {
            return false;
        }
        let mut tasks = self.tasks.lock().expect("tasks poisoned");
        if tasks.get(&id).is_some_and(|t| !t.is_finished()) {
            return false;
        }
        let me = self.clone();
        tasks.insert(id, tokio::spawn(async move { me.drive_loop(id).await }));
        true
    }

    async fn drive_loop(&self, id: MigrationId) {
        let mut delay = Duration::from_secs(1);
        let mut stop_rx = self.stop_tx.subscribe();
        loop {
            match self.driver.run(id).await {
                Ok(m) => {
                    tracing::info!(migration = %id, stack = %m.spec().stack, phase = ?m.phase(), "migration settled");
                    if m.phase() != Phase::Committed {
                        // Keep progress of committed migrations for the record; drop the rest.
                        self.progress.lock().expect("progress poisoned").remove(&id);
                    }
                    return;
                }
                Err(DriveError::Stopped { .. }) => {
                    tracing::info!(migration = %id, "migration stopped at a checkpoint for shutdown; it resumes on the next start");
                    return;
                }
                Err(
                    e @ (DriveError::Fenced { .. }
                    | DriveError::NotFound(_)
                    | DriveError::Corrupt(_)
                    | DriveError::Refused(_)),
                ) => {
                    tracing::error!(migration = %id, error = %e, "migration driver gave up");
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        migration = %id,
                        error = %e,
                        cause = %source_chain(&e),
                        hint = e.hint().unwrap_or(""),
                        retry_in = ?delay,
                        "migration waits; retrying"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_rx.wait_for(|s| *s) => return,
            }
            delay = (delay * 2).min(self.max_retry_delay);
        }
    }

    /// Drive every migration the store has in progress (rollbacks and purges included).
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut n = 0;
        for m in all_migrations(self.store.as_ref(), true).await? {
            tracing::info!(migration = %m.spec.id, stack = %m.spec.stack, "resuming migration");
            if self.drive(m.spec.id) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Log, once per migration and process, that a committed migration's window has passed
    /// and its source is still kept. Sources are never deleted automatically.
    pub async fn remind_retention(&self) -> Result<Vec<MigrationId>, StoreError> {
        let now = self.clock.now();
        let mut due = Vec::new();
        for s in all_migrations(self.store.as_ref(), false).await? {
            let Ok(m) = dockmesh_core::migration::Migration::replay(s.spec, &s.events) else {
                continue;
            };
            if m.phase() == Phase::Committed
                && m.retain_until().is_some_and(|t| t <= now)
                && self
                    .reminded
                    .lock()
                    .expect("reminded poisoned")
                    .insert(m.spec().id)
            {
                tracing::warn!(
                    migration = %m.spec().id,
                    stack = %m.spec().stack,
                    source = %m.spec().source,
                    "the rollback window of this migration has ended; its source is still kept on the source host: purge it with `dockmesh migration purge-source {}` when you no longer need it",
                    m.spec().id
                );
                due.push(m.spec().id);
            }
        }
        Ok(due)
    }

    /// Begin shutdown: no new task starts, running steps finish and are recorded, retry
    /// waits end. Waits up to `grace` for the tasks; returns how many were still running.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.send(true);
        let handles: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .expect("tasks poisoned")
            .drain()
            .map(|(_, h)| h)
            .collect();
        let deadline = tokio::time::Instant::now() + grace;
        let mut left = 0;
        for mut h in handles {
            if tokio::time::timeout_at(deadline, &mut h).await.is_err() {
                h.abort();
                left += 1;
            }
        }
        left
    }
}

/// Where a crash test kills the server.
enum CrashPoint {
    Before(String),
    AfterBytes(u64),
}

impl CrashPoint {
    fn parse(s: String) -> Self {
        match s.strip_prefix("bytes:").and_then(|n| n.parse().ok()) {
            Some(n) => CrashPoint::AfterBytes(n),
            None => CrashPoint::Before(s),
        }
    }

    fn check(&self, e: &ProgressEvent) {
        let hit = match (self, e) {
            (CrashPoint::Before(name), ProgressEvent::Command { what, .. }) => {
                what.starts_with(name.as_str())
            }
            (CrashPoint::AfterBytes(n), ProgressEvent::VolumeBytes { bytes, .. }) => bytes >= n,
            _ => false,
        };
        if hit {
            tracing::error!("crash point reached: killing this process");
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
            std::process::abort();
        }
    }
}

/// Every stored migration (or every active one), through all pages, newest first.
pub async fn all_migrations(
    store: &dyn Store,
    active_only: bool,
) -> Result<Vec<StoredMigration>, StoreError> {
    let mut query = MigrationQuery {
        active_only,
        limit: MAX_PAGE,
        ..Default::default()
    };
    let mut out = Vec::new();
    loop {
        let page = store.list_migrations(&query).await?;
        let Some(last) = page.last() else { break };
        query.after = Some(last.spec.id);
        out.extend(page);
    }
    Ok(out)
}

/// The error's causes, joined, for logs.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out.join(": ")
}
