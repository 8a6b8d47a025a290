//! What every handler shares: the store, the hosts, the clock, the supervisor, the lifecycle.

use crate::server::hosts::Hosts;
use crate::server::metrics::Metrics;
use crate::server::supervisor::Supervisor;
use dockmesh_core::ports::{Clock, IdGen, Store};
use jiff::SignedDuration;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The version the server reports.
    pub version: String,
    /// How long a migrated stack's source is kept for rollback (72 h by default).
    pub retention: SignedDuration,
    /// How long a driver's lease lasts unless renewed.
    pub lease_ttl: SignedDuration,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// The longest wait between two attempts at a migration that waits on a host.
    pub max_retry_delay: Duration,
    /// How often the retention reminder runs.
    pub reminder_interval: Duration,
    /// How long shutdown waits for running steps to reach a checkpoint.
    pub shutdown_grace: Duration,
    /// The port of the agent listener, when it runs.
    pub agent_port: Option<u16>,
    /// Where agents dial the agent listener (`host:port`), told to each agent at enrollment;
    /// without it, the host the agent reached the API at and [`ServerConfig::agent_port`].
    pub agent_endpoint: Option<String>,
    /// Compress volume streams to and from agents with zstd.
    pub agent_compression: bool,
    /// For crash tests: kill this process (SIGKILL) just before a migration command whose
    /// name starts with this (`StopSource`, `TransferVolume`, …), or once a transfer has
    /// moved `bytes:N` bytes. Never set in production.
    pub crash_at: Option<String>,
    /// The signed agent binaries this server sends agents to upgrade them (and the release
    /// key agents trust from enrollment on); without them agent upgrades are off.
    pub agent_binaries: Option<crate::channel::agent_binaries::AgentBinaries>,
    /// Each host's policy on what compose content may ask of it (none by default).
    pub host_policies: crate::server::host_policy::HostPolicies,
    /// How the hosts' snapshots are cached for the views that list them.
    pub snapshots: crate::server::snapshots::SnapshotSettings,
    /// Failed API tokens an address may present per minute before it is answered 429.
    pub failed_tokens_per_minute: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            retention: dockmesh_core::migration::DEFAULT_RETENTION,
            lease_ttl: dockmesh_core::migration::DEFAULT_LEASE_TTL,
            // Compose files are small; 4 MiB leaves room for large ones with an `.env`.
            body_limit: 4 << 20,
            request_timeout: Duration::from_secs(60),
            max_retry_delay: Duration::from_secs(60),
            reminder_interval: Duration::from_secs(3600),
            shutdown_grace: Duration::from_secs(120),
            agent_port: None,
            agent_endpoint: None,
            agent_compression: true,
            crash_at: None,
            agent_binaries: None,
            host_policies: Default::default(),
            snapshots: Default::default(),
            failed_tokens_per_minute: crate::server::limit::BEARER_FAILURES_PER_MINUTE,
        }
    }
}

/// Where the server is in its life; readiness follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    /// Starting: not ready yet.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutting down: new work is refused, running steps finish.
    Draining = 2,
}

struct Inner {
    store: Arc<dyn Store>,
    hosts: Arc<Hosts>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGen>,
    supervisor: Arc<Supervisor>,
    drains: crate::server::drains::Drains,
    metrics: Arc<Metrics>,
    config: ServerConfig,
    lifecycle: AtomicU8,
    stack_locks: Arc<LockMap>,
    limits: crate::server::limit::AuthLimits,
    agent_ca: std::sync::OnceLock<Arc<crate::channel::pki::Ca>>,
    connected: crate::channel::ConnectedAgents,
    agent_records: tokio::sync::Mutex<()>,
    rollout_wake: tokio::sync::Notify,
    events: crate::server::events::HostEvents,
    snapshots: crate::server::snapshots::SnapshotCache,
}

type LockMap = std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// Removes, when dropped, every lock entry nobody holds or waits for (the map's own reference
/// is the only one left), so that the map holds only the names in use.
struct LockTicket(Arc<LockMap>);

impl Drop for LockTicket {
    fn drop(&mut self) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
    }
}

/// A held stack lock ([`ServerState::lock_stack`]); released when dropped.
pub struct StackGuard {
    // Dropped in this order: the lock is released, then the unused entries go.
    _guard: tokio::sync::OwnedMutexGuard<()>,
    _ticket: LockTicket,
}

impl std::fmt::Debug for StackGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackGuard").finish_non_exhaustive()
    }
}

/// The state shared by every handler and background task (cheap to clone).
#[derive(Clone)]
pub struct ServerState(Arc<Inner>);

impl ServerState {
    /// A server over these ports; it starts in [`Lifecycle::Starting`].
    pub fn new(
        store: Arc<dyn Store>,
        hosts: Hosts,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGen>,
        config: ServerConfig,
    ) -> Self {
        let hosts = Arc::new(hosts);
        let limits =
            crate::server::limit::AuthLimits::new(clock.clone(), config.failed_tokens_per_minute);
        let metrics = Arc::new(Metrics::default());
        let supervisor = Arc::new(Supervisor::new(
            store.clone(),
            hosts.clone(),
            clock.clone(),
            ids.clone(),
            metrics.clone(),
            &config,
        ));
        let events = crate::server::events::HostEvents::default();
        let snapshots = crate::server::snapshots::SnapshotCache::new(
            hosts.clone(),
            clock.clone(),
            events.clone(),
            config.snapshots,
        );
        ServerState(Arc::new(Inner {
            store,
            hosts,
            clock,
            ids,
            supervisor,
            drains: Default::default(),
            metrics,
            config,
            lifecycle: AtomicU8::new(Lifecycle::Starting as u8),
            stack_locks: Default::default(),
            limits,
            agent_ca: Default::default(),
            connected: Default::default(),
            agent_records: Default::default(),
            rollout_wake: Default::default(),
            events,
            snapshots,
        }))
    }

    /// The recent events of each host.
    pub fn host_events(&self) -> &crate::server::events::HostEvents {
        &self.0.events
    }

    /// The last snapshot of each host, for the views that list hosts.
    pub fn snapshots(&self) -> &crate::server::snapshots::SnapshotCache {
        &self.0.snapshots
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.0.store
    }
    /// The hosts.
    pub fn hosts(&self) -> &Arc<Hosts> {
        &self.0.hosts
    }
    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.0.clock
    }
    /// The id generator.
    pub fn ids(&self) -> &Arc<dyn IdGen> {
        &self.0.ids
    }
    /// The migration supervisor.
    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.0.supervisor
    }
    /// The running drains.
    pub fn drains(&self) -> &crate::server::drains::Drains {
        &self.0.drains
    }
    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }
    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }
    /// The agent CA, when agent enrollment is enabled.
    pub fn agent_ca(&self) -> Option<&Arc<crate::channel::pki::Ca>> {
        self.0.agent_ca.get()
    }
    /// The agents connected now (the agent listener keeps them here).
    pub fn connected_agents(&self) -> &crate::channel::ConnectedAgents {
        &self.0.connected
    }
    /// Held while an agent record is read and written back, so the registry (connection,
    /// version) and the rollout (upgrade state) never overwrite each other's change.
    pub fn agent_records(&self) -> &tokio::sync::Mutex<()> {
        &self.0.agent_records
    }
    /// Ask the rollout evaluator to run now (a policy changed, an agent came back).
    pub fn wake_rollout(&self) {
        self.0.rollout_wake.notify_one();
    }
    /// Resolves when [`Self::wake_rollout`] was called.
    pub async fn rollout_woken(&self) {
        self.0.rollout_wake.notified().await;
    }
    /// Enable agent enrollment with `ca`; `false` (and no change) when a CA is already set.
    pub fn set_agent_ca(&self, ca: Arc<crate::channel::pki::Ca>) -> bool {
        self.0.agent_ca.set(ca).is_ok()
    }

    /// Serialise the API's changes to one stack (register, deploy, remove, migrate, rollback)
    /// within this server; one server runs per database, so this is all the exclusion needed.
    /// A name's entry lives only while someone holds or waits for its lock.
    pub async fn lock_stack(&self, name: &str) -> StackGuard {
        let lock = self
            .0
            .stack_locks
            .lock()
            .expect("stack locks poisoned")
            .entry(name.to_owned())
            .or_default()
            .clone();
        let ticket = LockTicket(self.0.stack_locks.clone());
        StackGuard {
            _guard: lock.lock_owned().await,
            _ticket: ticket,
        }
    }

    /// How many names have a lock entry now (held or waited for).
    pub fn stack_locks_held(&self) -> usize {
        self.0
            .stack_locks
            .lock()
            .expect("stack locks poisoned")
            .len()
    }

    /// The per-address limits on failed tokens, logins and enrollments.
    pub fn auth_limits(&self) -> &crate::server::limit::AuthLimits {
        &self.0.limits
    }

    /// Where the server is in its life.
    pub fn lifecycle(&self) -> Lifecycle {
        match self.0.lifecycle.load(Ordering::SeqCst) {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Ready,
            _ => Lifecycle::Draining,
        }
    }

    /// Move to `next` (draining is final).
    pub fn set_lifecycle(&self, next: Lifecycle) {
        if self.lifecycle() != Lifecycle::Draining {
            self.0.lifecycle.store(next as u8, Ordering::SeqCst);
        }
    }
}
