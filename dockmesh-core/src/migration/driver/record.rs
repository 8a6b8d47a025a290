//! Persisting outcomes: each event with its audit entry in one write, and the stack record
//! kept pointing at the host the stack runs on.

use super::{DriveError, Driver, ProgressEvent};
use crate::audit::{self, AuditEvent};
use crate::migration::event::MigrationEvent;
use crate::migration::machine::{Migration, Phase};
use crate::ports::Fence;
use crate::records::DeployRecord;

impl Driver {
    /// Check that `event` applies to `m`, then persist it with its audit entry in one write,
    /// then apply it. A refused event writes nothing.
    pub(in crate::migration) async fn record(
        &self,
        m: &mut Migration,
        event: MigrationEvent,
        fence: &Fence,
    ) -> Result<(), DriveError> {
        let id = m.spec().id;
        let mut next = m.clone();
        next.apply(&event)?;
        let audit = audit_of(&next, &event);
        self.store
            .append_migration_event(id, m.event_count(), &event, fence, audit.as_ref())
            .await
            .map_err(Self::store_err(id))?;
        *m = next;
        self.emit(ProgressEvent::Recorded {
            id,
            phase: m.phase(),
        });
        if matches!(
            event,
            MigrationEvent::Committed { .. } | MigrationEvent::RolledBack { .. }
        ) {
            self.reconcile_stack_record(m).await?;
        }
        Ok(())
    }

    /// Keep the stack record pointing at the host the stack runs on (idempotent); the record
    /// and its deploy history entry are written together.
    pub(super) async fn reconcile_stack_record(&self, m: &Migration) -> Result<(), DriveError> {
        let spec = m.spec();
        let (host, action) = match m.phase() {
            Phase::Committed | Phase::Purging | Phase::Purged => (&spec.target, "migrate-in"),
            Phase::RolledBack => (&spec.source, "rollback"),
            _ => return Ok(()),
        };
        // A later migration that moved the stack on owns the record now: an old migration
        // driven again must not point it back at a host the stack left.
        let later = self.later_migrations(m).await?;
        if later
            .iter()
            .any(|(_, p)| !matches!(p, Phase::Failed | Phase::RolledBack))
        {
            return Ok(());
        }
        let err = Self::store_err(spec.id);
        let Some(mut rec) = self.store.get_stack(&spec.stack).await.map_err(err)? else {
            return Ok(());
        };
        if rec.host.as_ref() == Some(host) {
            return Ok(());
        }
        let now = self.clock.now();
        rec.host = Some(host.clone());
        rec.updated_at = now;
        let deploy = DeployRecord {
            stack: spec.stack.clone(),
            at: now,
            host: host.clone(),
            action: action.into(),
            actor: spec.requested_by.clone(),
        };
        self.store
            .put_stack(&rec, Some(&deploy))
            .await
            .map_err(Self::store_err(spec.id))?;
        Ok(())
    }
}

/// The audit entry written with `event`, if it has one; `next` is the migration after it.
fn audit_of(next: &Migration, event: &MigrationEvent) -> Option<AuditEvent> {
    let spec = next.spec();
    let stack = spec.stack.as_str();
    let a = match event {
        MigrationEvent::Committed { at, retain_until } => {
            AuditEvent::new(*at, "system", audit::MIGRATION_COMPLETE, stack)
                .with("retain_until", retain_until.to_string())
        }
        MigrationEvent::Failed { at } => {
            let mut a = AuditEvent::new(*at, "system", audit::MIGRATION_FAIL, stack);
            if let Some(f) = next.failure() {
                a = a
                    .with("step", f.step.to_string())
                    .with("reason", f.reason.clone());
            }
            a
        }
        MigrationEvent::RolledBack { at } => {
            AuditEvent::new(*at, "system", audit::MIGRATION_ROLLBACK, stack)
        }
        MigrationEvent::RollbackRequested { at, by } => {
            AuditEvent::new(*at, by, audit::MIGRATION_ROLLBACK, stack).with("state", "requested")
        }
        MigrationEvent::SourcePurged { at } => {
            AuditEvent::new(*at, "system", audit::MIGRATION_PURGE_SOURCE, stack)
        }
        _ => return None,
    };
    Some(
        a.with("migration", spec.id.to_string())
            .with("source", spec.source.to_string())
            .with("target", spec.target.to_string()),
    )
}
