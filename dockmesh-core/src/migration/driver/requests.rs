//! Operators' requests: start a migration, ask for its rollback or the purge of its source.

use super::{DriveError, Driver, MigrationRequest, ProgressEvent};
use crate::audit::{self, AuditEvent};
use crate::migration::event::MigrationSpec;
use crate::migration::machine::{Migration, Phase};
use crate::ports::{MAX_PAGE, MigrationQuery, StoreError, migration_lease, stack_lease};
use crate::types::MigrationId;

impl Driver {
    /// Record a new migration of a stack (one active migration per stack) with its audit entry
    /// and return its id. Nothing on any host changes until it is driven.
    pub async fn start(&self, req: MigrationRequest) -> Result<MigrationId, DriveError> {
        let stack_guard = self.claim(&stack_lease(&req.stack)).await?;
        let res = self.start_locked(&req).await;
        self.release(&stack_guard).await;
        res
    }

    async fn start_locked(&self, req: &MigrationRequest) -> Result<MigrationId, DriveError> {
        let stack_err = |reason: String| DriveError::Stack {
            stack: req.stack.clone(),
            reason,
        };
        let record = self
            .store
            .get_stack(&req.stack)
            .await
            .map_err(Self::store_err(&req.stack))?
            .ok_or_else(|| stack_err("the stack is not known".into()))?;
        let source = record
            .host
            .clone()
            .ok_or_else(|| stack_err("the stack is not deployed on any host".into()))?;
        if source == req.target {
            return Err(stack_err(format!("the stack already runs on {source}")));
        }
        let now = self.clock.now();
        let spec = MigrationSpec {
            id: MigrationId(self.ids.new_id()),
            stack: req.stack.clone(),
            source,
            target: req.target.clone(),
            requested_at: now,
            requested_by: req.by.clone(),
            retention: req.retention,
        };
        let audit = AuditEvent::new(now, &req.by, audit::MIGRATION_START, &req.stack)
            .with("migration", spec.id.to_string())
            .with("source", spec.source.to_string())
            .with("target", spec.target.to_string());
        match self.store.create_migration(&spec, Some(&audit)).await {
            Ok(()) => {
                let phase = Migration::new(spec.clone()).phase();
                self.emit(ProgressEvent::Recorded { id: spec.id, phase });
                Ok(spec.id)
            }
            // Another migration of the stack is active: say which, as the store does.
            Err(StoreError::Conflict { what }) => Err(stack_err(what)),
            Err(e) => Err(Self::store_err(spec.id)(e)),
        }
    }

    /// Ask for the rollback of a committed migration and drive it. Refused (nothing changes)
    /// outside the window, after a purge, or while a later migration of the same stack moved
    /// the stack on or is moving it.
    pub async fn rollback(&self, id: MigrationId, by: &str) -> Result<Migration, DriveError> {
        self.request_rollback(id, by).await?;
        self.run(id).await
    }

    /// Record an operator's rollback request without driving it (refused, with nothing
    /// written, outside the window, after a purge, or when a later migration moved the stack
    /// on); [`Driver::run`] carries it out. Holds the stack's lease while it decides.
    pub async fn request_rollback(&self, id: MigrationId, by: &str) -> Result<(), DriveError> {
        let m = self.load(id).await?;
        if m.phase() == Phase::RollingBack {
            return Ok(());
        }
        let stack_guard = self.claim(&stack_lease(&m.spec().stack)).await?;
        let res = self.request_rollback_locked(id, by).await;
        self.release(&stack_guard).await;
        res
    }

    async fn request_rollback_locked(&self, id: MigrationId, by: &str) -> Result<(), DriveError> {
        let lease = self.claim(&migration_lease(id)).await?;
        let res = async {
            let mut m = self.load(id).await?;
            if m.phase() == Phase::RollingBack {
                return Ok(());
            }
            let later = self.later_migrations(&m).await?;
            let e = m.request_rollback(self.clock.now(), by, &later)?;
            self.record(&mut m, e, &lease.fence()).await
        }
        .await;
        self.release(&lease).await;
        res
    }

    /// The migrations of `m`'s stack asked for after `m`, with where each stands.
    pub(super) async fn later_migrations(
        &self,
        m: &Migration,
    ) -> Result<Vec<(MigrationId, Phase)>, DriveError> {
        let spec = m.spec();
        let mut later = Vec::new();
        let mut query = MigrationQuery {
            stack: Some(spec.stack.clone()),
            limit: MAX_PAGE,
            ..Default::default()
        };
        'pages: loop {
            let page = self
                .store
                .list_migrations(&query)
                .await
                .map_err(Self::store_err(spec.id))?;
            let Some(last) = page.last() else { break };
            query.after = Some(last.spec.id);
            for s in page {
                // Newest first: everything after `m` in the list is older.
                if s.spec.id == spec.id {
                    break 'pages;
                }
                let phase = Migration::replay(s.spec.clone(), &s.events)?.phase();
                later.push((s.spec.id, phase));
            }
        }
        Ok(later)
    }

    /// Ask for the purge of a committed migration's source and drive it.
    pub async fn purge_source(&self, id: MigrationId, by: &str) -> Result<Migration, DriveError> {
        self.request_purge(id, by).await?;
        self.run(id).await
    }

    /// Record an operator's purge request (refused outside a committed migration) without
    /// driving it; [`Driver::run`] carries it out.
    pub async fn request_purge(&self, id: MigrationId, by: &str) -> Result<(), DriveError> {
        let lease = self.claim(&migration_lease(id)).await?;
        let res = async {
            let mut m = self.load(id).await?;
            if m.phase() != Phase::Purging {
                let e = m.request_purge(self.clock.now(), by)?;
                self.record(&mut m, e, &lease.fence()).await?;
            }
            Ok::<_, DriveError>(())
        }
        .await;
        self.release(&lease).await;
        res
    }
}
