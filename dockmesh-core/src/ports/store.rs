//! The persistent state of a dockmesh server: the focused store traits ([`AgentStore`],
//! [`TokenStore`], [`StackStore`], [`MigrationLog`], [`DrainStore`], [`RolloutStore`],
//! [`AuditLog`], [`LeaseStore`], [`StackUpgradeLog`]), [`Store`] that is all of them, and the
//! types their methods take.

use crate::audit::{AuditEntry, AuditEvent, AuditQuery, ChainVerification};
use crate::drain::DrainRecord;
use crate::migration::{MigrationEvent, MigrationSpec, StoredMigration};
use crate::records::{CordonRecord, DeployRecord, StackRecord, TokenRecord, TokenUse};
use crate::release::ReleaseRecord;
use crate::rollout::{AgentRecord, RolloutRecord};
use crate::stack_upgrade::{Settled, StackUpgradeRun};
use crate::types::{AgentId, HostId, MigrationId};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// An error of a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The write conflicts with what is stored (an active migration for the stack, a stale
    /// event sequence number, a duplicate id). Nothing was written.
    #[error("conflict: {what}")]
    Conflict {
        /// What conflicts.
        what: String,
    },
    /// Stored data could not be read back (corrupt or written by an incompatible version).
    #[error("stored data is unreadable: {what}")]
    Corrupt {
        /// What could not be read.
        what: String,
    },
    /// The writer's lease was taken over by another holder (its fencing token is stale).
    /// Nothing was written; the new holder drives from here.
    #[error(
        "lease {lease} is now held with token {current}, not {token}: another driver took over"
    )]
    Fenced {
        /// The lease.
        lease: String,
        /// The token the writer presented.
        token: u64,
        /// The lease's current token (0 when nobody holds it any more).
        current: u64,
    },
    /// The backend failed.
    #[error("store backend error: {message}")]
    Backend {
        /// What failed.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// A backend error from any error value.
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// The agents (hosts) enrolled with the server.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Insert or replace an agent record.
    async fn upsert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// One agent.
    async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError>;
    /// Every agent, ordered by id.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;
    /// Remove an agent. Removing an unknown agent is not an error.
    async fn delete_agent(&self, id: &AgentId) -> Result<(), StoreError>;
}

/// API and enrollment tokens, stored by hash.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Store a new token (by hash). A duplicate hash is a conflict.
    async fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// One token record, by hash.
    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Present a token: checks expiry and, atomically, spends a one-time token.
    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<TokenUse, StoreError>;
    /// Every token record, ordered by creation time.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Remove a token. Removing an unknown token is not an error.
    async fn delete_token(&self, hash: &str) -> Result<(), StoreError>;
}

/// Stacks, their deploy history and their releases.
#[async_trait]
pub trait StackStore: Send + Sync {
    /// Insert or replace a stack and, in the same transaction, append `deploy` to its deploy
    /// history: both are written or neither.
    async fn put_stack(
        &self,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError>;
    /// One stack.
    async fn get_stack(&self, name: &str) -> Result<Option<StackRecord>, StoreError>;
    /// Every stack, ordered by name.
    async fn list_stacks(&self) -> Result<Vec<StackRecord>, StoreError>;
    /// Remove a stack, its deploy history and its releases. Removing an unknown stack is not an error.
    async fn delete_stack(&self, name: &str) -> Result<(), StoreError>;
    /// One page of a stack's deploy history, newest first.
    async fn deploy_history(
        &self,
        stack: &str,
        page: &PageQuery,
    ) -> Result<Vec<DeployEntry>, StoreError>;

    /// Record a release of a stack and, in the same transaction, the stack as it is now and
    /// its deploy history entry: all are written or none. The release's `rev` must be one more
    /// than the stack's newest release (1 for its first): anything else is a
    /// [`StoreError::Conflict`] and nothing is written.
    async fn put_release(
        &self,
        release: &ReleaseRecord,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError>;
    /// Every release of a stack, newest first. [`StackStore::delete_stack`] removes them too.
    async fn list_releases(&self, stack: &str) -> Result<Vec<ReleaseRecord>, StoreError>;
}

/// The migrations and their event logs.
#[async_trait]
pub trait MigrationLog: Send + Sync {
    /// Record a new migration and, in the same transaction, its audit entry. A conflict when
    /// the stack already has an active migration or the id exists; nothing is written then.
    async fn create_migration(
        &self,
        spec: &MigrationSpec,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError>;
    /// Append one event to a migration's log and, in the same transaction, its audit entry.
    ///
    /// `seq` is the number of events already in the log: when it differs (another writer got
    /// there first) this is a [`StoreError::Conflict`]. `fence` proves the writer holds the
    /// migration's lease: when the lease's token is not `fence.token` (another driver took the
    /// lease over) this is [`StoreError::Fenced`]. Either way nothing is written.
    /// [`MigrationEvent::activity`] says whether the event ends or resumes the migration's
    /// activity; resuming it while another migration of the stack is active is a conflict.
    async fn append_migration_event(
        &self,
        id: MigrationId,
        seq: u64,
        event: &MigrationEvent,
        fence: &Fence,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError>;
    /// One migration with its whole event log.
    async fn load_migration(&self, id: MigrationId) -> Result<Option<StoredMigration>, StoreError>;
    /// One page of migrations, newest first (by request time, then id).
    async fn list_migrations(
        &self,
        query: &MigrationQuery,
    ) -> Result<Vec<StoredMigration>, StoreError>;
}

/// Host drains and cordons.
#[async_trait]
pub trait DrainStore: Send + Sync {
    /// Insert or replace a drain.
    async fn put_drain(&self, drain: &DrainRecord) -> Result<(), StoreError>;
    /// One drain.
    async fn get_drain(&self, id: uuid::Uuid) -> Result<Option<DrainRecord>, StoreError>;
    /// Every drain, newest first.
    async fn list_drains(&self) -> Result<Vec<DrainRecord>, StoreError>;

    /// Cordon a host (replacing an earlier cordon of it).
    async fn put_cordon(&self, cordon: &CordonRecord) -> Result<(), StoreError>;
    /// Lift a host's cordon; lifting a missing one is not an error.
    async fn delete_cordon(&self, host: &HostId) -> Result<(), StoreError>;
    /// Every cordon, by host id.
    async fn list_cordons(&self) -> Result<Vec<CordonRecord>, StoreError>;
}

/// The agent upgrade policy and its evaluator state.
#[async_trait]
pub trait RolloutStore: Send + Sync {
    /// The agent upgrade policy and evaluator state (the defaults when never set).
    async fn get_rollout(&self) -> Result<RolloutRecord, StoreError>;
    /// Replace the policy and evaluator state.
    async fn put_rollout(&self, record: &RolloutRecord) -> Result<(), StoreError>;
}

/// The hash-chained audit log.
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Append an event to the hash-chained audit log; returns the stored entry.
    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditEntry, StoreError>;
    /// Query the audit log, newest first.
    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// Walk the whole chain and report the first broken link.
    async fn verify_audit(&self) -> Result<ChainVerification, StoreError>;
}

/// Leases with fencing tokens: who drives a migration, a drain or a stack change.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Take or renew the lease `name` for `owner` for `ttl`, measured on the store's own clock
    /// (the database's, not the caller's). Granted when the lease is free, already held by
    /// `owner`, or held by another owner and expired. Each new holder gets a fencing token
    /// greater than every earlier holder's; a renewal by the same holder keeps its token.
    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: SignedDuration,
    ) -> Result<LeaseClaim, StoreError>;
    /// Give a lease up (it expires now; its token is kept so the next holder's is greater).
    /// Only its holder can release it; anything else is a no-op.
    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError>;
}

/// The stack upgrades that are running: each stored before the host changes and at each
/// stage, so a restarted server finishes it ([`crate::stack_upgrade`]).
#[async_trait]
pub trait StackUpgradeLog: Send + Sync {
    /// Store a new run. A [`StoreError::Conflict`] when its stack has an unfinished run;
    /// nothing is written then.
    async fn begin_stack_upgrade(&self, run: &StackUpgradeRun) -> Result<(), StoreError>;
    /// Replace the stored run of `run.stack` (its new stage). [`StoreError::NotFound`] when the
    /// stack has no unfinished run, or when it is another revision's.
    async fn save_stack_upgrade(&self, run: &StackUpgradeRun) -> Result<(), StoreError>;
    /// Every unfinished run, by stack name.
    async fn unfinished_stack_upgrades(&self) -> Result<Vec<StackUpgradeRun>, StoreError>;
    /// Forget the run of `stack` without recording a release: it changed nothing (its backup
    /// failed and was undone). A no-op when there is none.
    async fn drop_stack_upgrade(&self, stack: &str) -> Result<(), StoreError>;
    /// End the run of `settled.release.stack`: forget it, store the release, the stack's
    /// record and its deploy entry ([`StackStore::put_release`]'s rules) and append the audit
    /// event, in one transaction: all are written or none. [`StoreError::NotFound`] when the
    /// stack has no unfinished run of that revision.
    async fn settle_stack_upgrade(&self, settled: &Settled) -> Result<AuditEntry, StoreError>;
}

/// The persistent state of a dockmesh server: every focused store trait at once, for whoever
/// needs all of them (`Arc<dyn Store>`). Implemented for every type that implements them all;
/// a caller that needs less asks for less (`&dyn MigrationLog`, `&dyn LeaseStore`).
pub trait Store:
    AgentStore
    + TokenStore
    + StackStore
    + MigrationLog
    + DrainStore
    + RolloutStore
    + AuditLog
    + LeaseStore
    + StackUpgradeLog
{
}

impl<T> Store for T where
    T: AgentStore
        + TokenStore
        + StackStore
        + MigrationLog
        + DrainStore
        + RolloutStore
        + AuditLog
        + LeaseStore
        + StackUpgradeLog
        + ?Sized
{
}

/// The largest page any list of the store returns.
pub const MAX_PAGE: u32 = 1000;
/// The page size when a query does not say.
pub const DEFAULT_PAGE: u32 = 100;

/// The size of a page: 0 means [`DEFAULT_PAGE`], and no page is larger than [`MAX_PAGE`].
pub fn page_size(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// A page of a list ordered newest first: at most `limit` items, older than `before`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageQuery {
    /// Only items older than this cursor (the `seq` of the last item of the previous page).
    pub before: Option<u64>,
    /// At most this many (see [`page_size`]).
    pub limit: u32,
}

/// One entry of a stack's deploy history with its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployEntry {
    /// Grows with every entry; the cursor for [`PageQuery::before`].
    pub seq: u64,
    /// The entry.
    pub record: DeployRecord,
}

/// Which migrations to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationQuery {
    /// Only the active ones (not settled: in flight, rolling back or purging).
    pub active_only: bool,
    /// Only this stack's.
    pub stack: Option<String>,
    /// Only migrations listed after this one (the last of the previous page).
    pub after: Option<MigrationId>,
    /// At most this many (see [`page_size`]).
    pub limit: u32,
}

/// A lease as held: by whom, with which fencing token, until when (store's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's name (`migration:<id>`, `drain:<id>`, `stack:<name>`, …).
    pub name: String,
    /// Its holder.
    pub owner: String,
    /// The fencing token: greater for every new holder.
    pub token: u64,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
}

impl Lease {
    /// The fence a writer under this lease presents to the store.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.name.clone(),
            token: self.token,
        }
    }
}

/// The outcome of [`LeaseStore::claim_lease`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LeaseClaim {
    /// The caller holds the lease.
    Granted(Lease),
    /// Someone else holds it.
    Held {
        /// The holder.
        owner: String,
        /// Until when.
        until: Timestamp,
    },
}

/// What a writer presents to prove it holds a lease: the store refuses a write whose token is
/// not the lease's current one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The lease.
    pub lease: String,
    /// The token the writer got when it claimed the lease.
    pub token: u64,
}

/// The lease that guards the driving of one migration.
pub fn migration_lease(id: MigrationId) -> String {
    format!("migration:{id}")
}

/// The lease that guards the driving of one drain.
pub fn drain_lease(id: uuid::Uuid) -> String {
    format!("drain:{id}")
}

/// The lease held while a migration of a stack is created or a rollback of it is asked for, so
/// that the check of the stack's other migrations and the write are one step.
pub fn stack_lease(stack: &str) -> String {
    format!("stack:{stack}")
}
