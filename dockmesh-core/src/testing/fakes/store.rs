//! The in-memory [`Store`](crate::ports::Store).

use super::{FixedClock, lock};
use crate::audit::{AuditEntry, AuditEvent, AuditQuery, ChainVerification, verify_chain};
use crate::drain::DrainRecord;
use crate::migration::{MigrationEvent, MigrationSpec, StoredMigration};
use crate::ports::{
    AgentStore, AuditLog, Clock, DeployEntry, DrainStore, Fence, Lease, LeaseClaim, LeaseStore,
    MigrationLog, MigrationQuery, PageQuery, RolloutStore, StackStore, StackUpgradeLog, StoreError,
    TokenStore, page_size,
};
use crate::records::{CordonRecord, DeployRecord, StackRecord, TokenRecord, TokenUse};
use crate::release::ReleaseRecord;
use crate::rollout::{AgentRecord, RolloutRecord};
use crate::stack_upgrade::{Settled, StackUpgradeRun};
use crate::types::{AgentId, HostId, MigrationId};
use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct MemInner {
    agents: BTreeMap<AgentId, AgentRecord>,
    tokens: BTreeMap<String, TokenRecord>,
    stacks: BTreeMap<String, StackRecord>,
    deploys: Vec<DeployEntry>,
    releases: Vec<ReleaseRecord>,
    migrations: BTreeMap<MigrationId, (StoredMigration, bool)>,
    drains: BTreeMap<uuid::Uuid, DrainRecord>,
    cordons: BTreeMap<HostId, CordonRecord>,
    rollout: Option<RolloutRecord>,
    audit: Vec<AuditEntry>,
    leases: HashMap<String, Lease>,
    stack_upgrades: BTreeMap<String, StackUpgradeRun>,
}

/// An in-memory [`Store`](crate::ports::Store). Its leases expire on its own clock, as a database's do on the
/// database's clock.
pub struct MemStore {
    inner: Mutex<MemInner>,
    clock: Arc<dyn Clock>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store whose clock stands still at the Unix epoch (leases never expire unless
    /// their ttl is zero).
    pub fn new() -> Self {
        Self::with_clock(Arc::new(FixedClock::new(Timestamp::UNIX_EPOCH)))
    }

    /// An empty store whose leases expire on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemStore {
            inner: Mutex::new(MemInner::default()),
            clock,
        }
    }

    /// Let another holder take lease `name` over, as if it had claimed it after an expiry (the
    /// token grows). For tests of fencing.
    pub fn steal_lease(&self, name: &str, owner: &str) -> Option<Lease> {
        let mut g = lock(&self.inner);
        let l = g.leases.get_mut(name)?;
        l.owner = owner.to_owned();
        l.token += 1;
        Some(l.clone())
    }
}

fn mem_append_audit(g: &mut MemInner, event: &AuditEvent) -> AuditEntry {
    let prev = g.audit.last().map(|e| (e.seq, e.hash.as_str()));
    let entry = AuditEntry::chain(prev, event.clone());
    g.audit.push(entry.clone());
    entry
}

fn mem_put_release(
    g: &mut MemInner,
    release: &ReleaseRecord,
    stack: &StackRecord,
    deploy: Option<&DeployRecord>,
) -> Result<(), StoreError> {
    let newest = g
        .releases
        .iter()
        .filter(|r| r.stack == release.stack)
        .map(|r| r.rev)
        .max()
        .unwrap_or(0);
    if release.rev != newest + 1 || stack.name != release.stack {
        return Err(StoreError::Conflict {
            what: format!(
                "release {} of stack {}: the next revision is {}",
                release.rev,
                release.stack,
                newest + 1
            ),
        });
    }
    g.releases.push(release.clone());
    g.stacks.insert(stack.name.clone(), stack.clone());
    if let Some(d) = deploy {
        let seq = g.deploys.last().map_or(1, |e| e.seq + 1);
        g.deploys.push(DeployEntry {
            seq,
            record: d.clone(),
        });
    }
    Ok(())
}

#[async_trait]
impl AgentStore for MemStore {
    async fn upsert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        lock(&self.inner)
            .agents
            .insert(agent.id.clone(), agent.clone());
        Ok(())
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        Ok(lock(&self.inner).agents.get(id).cloned())
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        Ok(lock(&self.inner).agents.values().cloned().collect())
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<(), StoreError> {
        lock(&self.inner).agents.remove(id);
        Ok(())
    }
}

#[async_trait]
impl TokenStore for MemStore {
    async fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        if g.tokens.contains_key(&token.hash) {
            return Err(StoreError::Conflict {
                what: "a token with this hash exists".into(),
            });
        }
        g.tokens.insert(token.hash.clone(), token.clone());
        Ok(())
    }

    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(lock(&self.inner).tokens.get(hash).cloned())
    }

    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<TokenUse, StoreError> {
        let mut g = lock(&self.inner);
        let Some(t) = g.tokens.get_mut(hash) else {
            return Ok(TokenUse::Unknown);
        };
        if t.expires_at.is_some_and(|e| e <= now) {
            return Ok(TokenUse::Expired);
        }
        if t.one_time {
            if t.used_at.is_some() {
                return Ok(TokenUse::AlreadyUsed);
            }
            t.used_at = Some(now);
        }
        Ok(TokenUse::Accepted { token: t.clone() })
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut v: Vec<_> = lock(&self.inner).tokens.values().cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.hash).cmp(&(b.created_at, &b.hash)));
        Ok(v)
    }

    async fn delete_token(&self, hash: &str) -> Result<(), StoreError> {
        lock(&self.inner).tokens.remove(hash);
        Ok(())
    }
}

#[async_trait]
impl StackStore for MemStore {
    async fn put_stack(
        &self,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        g.stacks.insert(stack.name.clone(), stack.clone());
        if let Some(d) = deploy {
            let seq = g.deploys.last().map_or(1, |e| e.seq + 1);
            g.deploys.push(DeployEntry {
                seq,
                record: d.clone(),
            });
        }
        Ok(())
    }

    async fn get_stack(&self, name: &str) -> Result<Option<StackRecord>, StoreError> {
        Ok(lock(&self.inner).stacks.get(name).cloned())
    }

    async fn list_stacks(&self) -> Result<Vec<StackRecord>, StoreError> {
        Ok(lock(&self.inner).stacks.values().cloned().collect())
    }

    async fn delete_stack(&self, name: &str) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        g.stacks.remove(name);
        g.deploys.retain(|d| d.record.stack != name);
        g.releases.retain(|r| r.stack != name);
        Ok(())
    }

    async fn deploy_history(
        &self,
        stack: &str,
        page: &PageQuery,
    ) -> Result<Vec<DeployEntry>, StoreError> {
        Ok(lock(&self.inner)
            .deploys
            .iter()
            .rev()
            .filter(|d| d.record.stack == stack && page.before.is_none_or(|b| d.seq < b))
            .take(page_size(page.limit) as usize)
            .cloned()
            .collect())
    }

    async fn put_release(
        &self,
        release: &ReleaseRecord,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError> {
        mem_put_release(&mut lock(&self.inner), release, stack, deploy)
    }

    async fn list_releases(&self, stack: &str) -> Result<Vec<ReleaseRecord>, StoreError> {
        let g = lock(&self.inner);
        let mut v: Vec<ReleaseRecord> = g
            .releases
            .iter()
            .filter(|r| r.stack == stack)
            .cloned()
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.rev));
        Ok(v)
    }
}

#[async_trait]
impl MigrationLog for MemStore {
    async fn create_migration(
        &self,
        spec: &MigrationSpec,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        if g.migrations.contains_key(&spec.id) {
            return Err(StoreError::Conflict {
                what: format!("migration {} exists", spec.id),
            });
        }
        if let Some((m, _)) = g
            .migrations
            .values()
            .find(|(m, active)| *active && m.spec.stack == spec.stack)
        {
            return Err(StoreError::Conflict {
                what: format!(
                    "stack {} already has an active migration ({})",
                    spec.stack, m.spec.id
                ),
            });
        }
        g.migrations.insert(
            spec.id,
            (
                StoredMigration {
                    spec: spec.clone(),
                    events: Vec::new(),
                },
                true,
            ),
        );
        if let Some(a) = audit {
            mem_append_audit(&mut g, a);
        }
        Ok(())
    }

    async fn append_migration_event(
        &self,
        id: MigrationId,
        seq: u64,
        event: &MigrationEvent,
        fence: &Fence,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        let current = g.leases.get(&fence.lease).map_or(0, |l| l.token);
        if current != fence.token {
            return Err(StoreError::Fenced {
                lease: fence.lease.clone(),
                token: fence.token,
                current,
            });
        }
        let Some((m, _)) = g.migrations.get(&id) else {
            return Err(StoreError::NotFound {
                what: format!("migration {id}"),
            });
        };
        if m.events.len() as u64 != seq {
            return Err(StoreError::Conflict {
                what: format!(
                    "migration {id} has {} events, not {seq}: another writer appended first",
                    m.events.len()
                ),
            });
        }
        let stack = m.spec.stack.clone();
        if event.activity() == Some(true)
            && let Some((other, _)) = g
                .migrations
                .values()
                .find(|(o, active)| *active && o.spec.stack == stack && o.spec.id != id)
        {
            return Err(StoreError::Conflict {
                what: format!(
                    "stack {stack} already has an active migration ({})",
                    other.spec.id
                ),
            });
        }
        let (m, active) = g.migrations.get_mut(&id).expect("checked above");
        m.events.push(event.clone());
        if let Some(a) = event.activity() {
            *active = a;
        }
        if let Some(a) = audit {
            mem_append_audit(&mut g, a);
        }
        Ok(())
    }

    async fn load_migration(&self, id: MigrationId) -> Result<Option<StoredMigration>, StoreError> {
        Ok(lock(&self.inner)
            .migrations
            .get(&id)
            .map(|(m, _)| m.clone()))
    }

    async fn list_migrations(
        &self,
        query: &MigrationQuery,
    ) -> Result<Vec<StoredMigration>, StoreError> {
        let g = lock(&self.inner);
        let key = |m: &StoredMigration| std::cmp::Reverse((m.spec.requested_at, m.spec.id));
        let after = query
            .after
            .and_then(|id| g.migrations.get(&id))
            .map(|(m, _)| key(m));
        let mut v: Vec<_> = g
            .migrations
            .values()
            .filter(|(m, a)| {
                (!query.active_only || *a)
                    && query.stack.as_ref().is_none_or(|s| *s == m.spec.stack)
                    && after.as_ref().is_none_or(|k| key(m) > *k)
            })
            .map(|(m, _)| m.clone())
            .collect();
        v.sort_by_key(key);
        v.truncate(page_size(query.limit) as usize);
        Ok(v)
    }
}

#[async_trait]
impl DrainStore for MemStore {
    async fn put_drain(&self, drain: &DrainRecord) -> Result<(), StoreError> {
        lock(&self.inner).drains.insert(drain.id, drain.clone());
        Ok(())
    }

    async fn get_drain(&self, id: uuid::Uuid) -> Result<Option<DrainRecord>, StoreError> {
        Ok(lock(&self.inner).drains.get(&id).cloned())
    }

    async fn list_drains(&self) -> Result<Vec<DrainRecord>, StoreError> {
        let mut v: Vec<_> = lock(&self.inner).drains.values().cloned().collect();
        v.sort_by_key(|d| std::cmp::Reverse((d.created_at, d.id)));
        Ok(v)
    }

    async fn put_cordon(&self, cordon: &CordonRecord) -> Result<(), StoreError> {
        lock(&self.inner)
            .cordons
            .insert(cordon.host.clone(), cordon.clone());
        Ok(())
    }

    async fn delete_cordon(&self, host: &HostId) -> Result<(), StoreError> {
        lock(&self.inner).cordons.remove(host);
        Ok(())
    }

    async fn list_cordons(&self) -> Result<Vec<CordonRecord>, StoreError> {
        Ok(lock(&self.inner).cordons.values().cloned().collect())
    }
}

#[async_trait]
impl RolloutStore for MemStore {
    async fn get_rollout(&self) -> Result<RolloutRecord, StoreError> {
        Ok(lock(&self.inner).rollout.clone().unwrap_or_default())
    }

    async fn put_rollout(&self, record: &RolloutRecord) -> Result<(), StoreError> {
        lock(&self.inner).rollout = Some(record.clone());
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditEntry, StoreError> {
        Ok(mem_append_audit(&mut lock(&self.inner), event))
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let g = lock(&self.inner);
        Ok(g.audit
            .iter()
            .rev()
            .filter(|e| query.matches(e))
            .take(query.effective_limit() as usize)
            .cloned()
            .collect())
    }

    async fn verify_audit(&self) -> Result<ChainVerification, StoreError> {
        Ok(verify_chain(&lock(&self.inner).audit))
    }
}

#[async_trait]
impl LeaseStore for MemStore {
    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: SignedDuration,
    ) -> Result<LeaseClaim, StoreError> {
        let now = self.clock.now();
        let expires_at = now
            .saturating_add(ttl.max(SignedDuration::ZERO))
            .unwrap_or(now);
        let mut g = lock(&self.inner);
        let token = match g.leases.get(name) {
            None => 1,
            Some(l) if l.owner == owner => l.token,
            Some(l) if l.expires_at <= now => l.token + 1,
            Some(l) => {
                return Ok(LeaseClaim::Held {
                    owner: l.owner.clone(),
                    until: l.expires_at,
                });
            }
        };
        let lease = Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            token,
            expires_at,
        };
        g.leases.insert(name.to_owned(), lease.clone());
        Ok(LeaseClaim::Granted(lease))
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut g = lock(&self.inner);
        if let Some(l) = g.leases.get_mut(name)
            && l.owner == owner
        {
            l.expires_at = l.expires_at.min(now);
        }
        Ok(())
    }
}

#[async_trait]
impl StackUpgradeLog for MemStore {
    async fn begin_stack_upgrade(&self, run: &StackUpgradeRun) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        if let Some(other) = g.stack_upgrades.get(&run.stack) {
            return Err(StoreError::Conflict {
                what: format!(
                    "stack {} has an unfinished upgrade to release {}",
                    run.stack, other.rev
                ),
            });
        }
        g.stack_upgrades.insert(run.stack.clone(), run.clone());
        Ok(())
    }

    async fn save_stack_upgrade(&self, run: &StackUpgradeRun) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        match g.stack_upgrades.get_mut(&run.stack) {
            Some(stored) if stored.rev == run.rev => {
                *stored = run.clone();
                Ok(())
            }
            _ => Err(StoreError::NotFound {
                what: format!("upgrade of stack {} to release {}", run.stack, run.rev),
            }),
        }
    }

    async fn unfinished_stack_upgrades(&self) -> Result<Vec<StackUpgradeRun>, StoreError> {
        Ok(lock(&self.inner).stack_upgrades.values().cloned().collect())
    }

    async fn drop_stack_upgrade(&self, stack: &str) -> Result<(), StoreError> {
        lock(&self.inner).stack_upgrades.remove(stack);
        Ok(())
    }

    async fn settle_stack_upgrade(&self, settled: &Settled) -> Result<AuditEntry, StoreError> {
        let mut g = lock(&self.inner);
        let stack = &settled.release.stack;
        if g.stack_upgrades.get(stack).map(|r| r.rev) != Some(settled.release.rev) {
            return Err(StoreError::NotFound {
                what: format!(
                    "upgrade of stack {stack} to release {}",
                    settled.release.rev
                ),
            });
        }
        // Checked before anything is written: the release's rule.
        mem_put_release(
            &mut g,
            &settled.release,
            &settled.stack,
            Some(&settled.deploy),
        )?;
        g.stack_upgrades.remove(stack);
        Ok(mem_append_audit(&mut g, &settled.audit))
    }
}
