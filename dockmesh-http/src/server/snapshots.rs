//! The last snapshot of each host, for the views that list hosts (`GET /api/v1/hosts`, the
//! hosts page): kept in memory with the time it was observed (the server's clock), refreshed
//! in the background every [`SnapshotSettings::refresh`] and after the host's events, so that
//! a request reads memory instead of asking the engine.
//!
//! A read that finds no snapshot yet, one older than [`SnapshotSettings::max_age`], or one
//! taken before the host's latest event ([`crate::server::events::HostEvents::recorded`]) asks the
//! engine; concurrent such reads share one call per host (single-flight). Every call to a
//! host, cached or fresh, holds one of the host's [`SnapshotSettings::calls_per_host`]
//! permits and ends after [`SnapshotSettings::timeout`] (waiting for a permit included): a
//! slow or dead engine makes its own host unreachable and slows no other host.
//!
//! Decisions (a drain's plan; a migration's pre-flight asks the engine in the driver) never
//! read the cache: they call [`SnapshotCache::fresh`], which asks the engine every time.

use crate::server::events::HostEvents;
use crate::server::hosts::Hosts;
use dockmesh_core::HostId;
use dockmesh_core::ports::Clock;
use dockmesh_core::snapshot::HostSnapshot;
use jiff::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How the snapshot cache refreshes and bounds its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// How often every host's snapshot is refreshed in the background (10 s by default).
    pub refresh: Duration,
    /// A read finding a snapshot older than this asks the engine itself (30 s by default).
    pub max_age: Duration,
    /// How long a host may take to answer before it counts as unreachable (5 s by default).
    pub timeout: Duration,
    /// At most this many snapshot calls run at once on one host (2 by default).
    pub calls_per_host: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            refresh: Duration::from_secs(10),
            max_age: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            calls_per_host: 2,
        }
    }
}

/// What the server last saw of a host.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The host's snapshot: the last one it answered, or an offline one when the last call
    /// failed.
    pub snapshot: HostSnapshot,
    /// Why the last call failed (the host is offline or unreachable), when it did.
    pub error: Option<String>,
    /// When the host last answered (the server's clock), `None` when it never did.
    pub observed_at: Option<Timestamp>,
}

/// The outcome of one call, with what it takes to judge its freshness.
#[derive(Clone)]
struct Attempt {
    observed: Observed,
    /// When the call ended (the server's clock).
    at: Timestamp,
    /// The host's event count when the call began.
    events: u64,
}

/// Samples of a host's use kept for its history: at one sample per half refresh interval
/// at most, an hour at the default 10 s.
pub const HISTORY: usize = 360;

/// One sample of a host's use, from a snapshot it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSample {
    /// When the host answered (the server's clock).
    pub at: Timestamp,
    /// Used memory in bytes.
    pub memory_used: u64,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Used disk in bytes.
    pub disk_used: u64,
    /// Disk size in bytes.
    pub disk_total: u64,
    /// Running containers, when the host says.
    pub containers_running: Option<u64>,
}

struct Entry {
    last: Mutex<Option<Attempt>>,
    /// The host's use over time, oldest first, at most [`HISTORY`] samples.
    history: Mutex<std::collections::VecDeque<HostSample>>,
    /// Held while a call of the cache runs: the single flight.
    flight: tokio::sync::Mutex<()>,
    /// Bounds every call to the host (cached and fresh).
    permits: Semaphore,
}

/// The last snapshot of every host, shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct SnapshotCache {
    hosts: Arc<Hosts>,
    clock: Arc<dyn Clock>,
    events: HostEvents,
    settings: SnapshotSettings,
    entries: Arc<Mutex<HashMap<HostId, Arc<Entry>>>>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SnapshotCache {
    /// An empty cache over `hosts`, made stale by `events`.
    pub fn new(
        hosts: Arc<Hosts>,
        clock: Arc<dyn Clock>,
        events: HostEvents,
        settings: SnapshotSettings,
    ) -> Self {
        SnapshotCache {
            hosts,
            clock,
            events,
            settings,
            entries: Default::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> SnapshotSettings {
        self.settings
    }

    fn entry(&self, id: &HostId) -> Arc<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    last: Mutex::new(None),
                    history: Mutex::default(),
                    flight: tokio::sync::Mutex::new(()),
                    permits: Semaphore::new(self.settings.calls_per_host.max(1)),
                })
            })
            .clone()
    }

    /// Whether `a` may still be served: younger than the max age and taken after the host's
    /// latest event.
    fn usable(&self, id: &HostId, a: &Attempt) -> bool {
        let age = self.clock.now().duration_since(a.at);
        age.unsigned_abs() <= self.settings.max_age
            && !age.is_negative()
            && a.events == self.events.recorded(id)
    }

    /// Every host, from memory where the last snapshot may still be served, asking the
    /// others (concurrently, each bounded by the timeout), in the order of [`Hosts::ids`].
    pub async fn all(&self) -> Vec<Observed> {
        let ids = self.hosts.ids();
        futures_util::future::join_all(ids.iter().map(|id| self.get(id))).await
    }

    /// Every host's snapshot asked of the host now (for a decision, never served stale).
    pub async fn all_fresh(&self) -> Vec<Observed> {
        let ids = self.hosts.ids();
        futures_util::future::join_all(ids.iter().map(|id| self.fresh(id))).await
    }

    /// `id`'s last snapshot when it may still be served, else one asked of the host (one
    /// call shared by every concurrent reader).
    pub async fn get(&self, id: &HostId) -> Observed {
        let entry = self.entry(id);
        if let Some(a) = self.servable(id, &entry) {
            return a;
        }
        let _flight = entry.flight.lock().await;
        // Another reader's call may have ended while this one waited for the flight.
        if let Some(a) = self.servable(id, &entry) {
            return a;
        }
        self.call(id, &entry).await
    }

    fn servable(&self, id: &HostId, entry: &Entry) -> Option<Observed> {
        let last = entry.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|a| self.usable(id, a))
            .map(|a| a.observed.clone())
    }

    /// Ask `id` for its snapshot now, whatever the cache holds (for decisions: a drain's
    /// plan). The answer also refreshes the cache.
    pub async fn fresh(&self, id: &HostId) -> Observed {
        let entry = self.entry(id);
        self.call(id, &entry).await
    }

    /// Refresh every host in the background: every [`SnapshotSettings::refresh`], and a host
    /// whose events made its snapshot stale as soon as they arrive. Runs until aborted.
    pub async fn refresh_forever(self) {
        let mut tick = tokio::time::interval(self.settings.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let ids = self.hosts.ids();
                    self.forget_others(&ids);
                    futures_util::future::join_all(ids.iter().map(|id| self.fresh(id))).await;
                }
                _ = self.events.changed() => {
                    // `get` asks only the hosts whose snapshot is stale.
                    self.all().await;
                }
            }
        }
    }

    /// Drop the entries of hosts no longer known.
    fn forget_others(&self, ids: &[HostId]) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| ids.contains(id));
    }

    /// `id`'s use over time (memory, disk, running containers), oldest first: a bounded
    /// history sampled from the snapshots this cache took since the server started.
    pub fn history(&self, id: &HostId) -> Vec<HostSample> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(id).map_or_else(Vec::new, |e| {
            let h = e.history.lock().unwrap_or_else(|p| p.into_inner());
            h.iter().copied().collect()
        })
    }

    /// Keep a sample of `s` in the entry's history, unless one was kept less than half a
    /// refresh interval ago (reads after events ask more often than the refresh).
    fn sample(&self, entry: &Entry, now: Timestamp, s: &HostSnapshot) {
        let mut h = entry.history.lock().unwrap_or_else(|p| p.into_inner());
        let min_gap = self.settings.refresh / 2;
        if h.back().is_some_and(|last| {
            let gap = now.duration_since(last.at);
            !gap.is_negative() && gap.unsigned_abs() < min_gap
        }) {
            return;
        }
        if h.len() >= HISTORY {
            h.pop_front();
        }
        h.push_back(HostSample {
            at: now,
            memory_used: s.memory_used,
            memory_total: s.memory_total,
            disk_used: s.disk_used,
            disk_total: s.disk_total,
            containers_running: s.containers_running,
        });
    }

    /// One bounded call to the host, its outcome kept.
    async fn call(&self, id: &HostId, entry: &Entry) -> Observed {
        let events = self.events.recorded(id);
        let timeout = self.settings.timeout;
        let answer = match self.hosts.get(id) {
            None => Err("unknown host".to_owned()),
            Some(host) => tokio::time::timeout(timeout, async {
                let _permit = entry.permits.acquire().await;
                host.snapshot().await
            })
            .await
            .map_err(|_| format!("unreachable: no answer within {timeout:?}"))
            .and_then(|r| r.map_err(|e| e.to_string())),
        };
        let now = self.clock.now();
        let mut last = entry.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(s) = &answer {
            self.sample(entry, now, s);
        }
        let observed = match answer {
            Ok(snapshot) => Observed {
                snapshot,
                error: None,
                observed_at: Some(now),
            },
            Err(error) => Observed {
                snapshot: HostSnapshot::offline(id.clone(), now),
                error: Some(error),
                observed_at: last.as_ref().and_then(|a| a.observed.observed_at),
            },
        };
        *last = Some(Attempt {
            observed: observed.clone(),
            at: now,
            events,
        });
        observed
    }
}
