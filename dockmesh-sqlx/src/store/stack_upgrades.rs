//! [`StackUpgradeLog`]: the stack upgrades that are running, one row per stack.

use super::rows::*;
use super::*;
use dockmesh_core::ports::StackUpgradeLog;
use dockmesh_core::stack_upgrade::{Settled, StackUpgradeRun};

fn unreadable(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt {
        what: format!("a stored stack upgrade: {e}"),
    }
}

#[async_trait]
impl StackUpgradeLog for SqlStore {
    async fn begin_stack_upgrade(&self, run: &StackUpgradeRun) -> Result<(), StoreError> {
        let rev = to_i64(run.rev, "release revision")?;
        on!(&self.pool, p => {
            let inserted = sqlx::query(
                "INSERT INTO stack_upgrades (stack, rev, run) VALUES ($1, $2, $3) \
                 ON CONFLICT (stack) DO NOTHING",
            )
            .bind(&run.stack)
            .bind(rev)
            .bind(Json(run))
            .execute(p)
            .await
            .map_err(se("store a stack upgrade"))?
            .rows_affected();
            if inserted == 0 {
                return Err(StoreError::Conflict {
                    what: format!("stack {} has an unfinished upgrade", run.stack),
                });
            }
            Ok(())
        })
    }

    async fn save_stack_upgrade(&self, run: &StackUpgradeRun) -> Result<(), StoreError> {
        let rev = to_i64(run.rev, "release revision")?;
        on!(&self.pool, p => {
            let updated = sqlx::query("UPDATE stack_upgrades SET run = $3 WHERE stack = $1 AND rev = $2")
                .bind(&run.stack)
                .bind(rev)
                .bind(Json(run))
                .execute(p)
                .await
                .map_err(se("store a stack upgrade"))?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::NotFound {
                    what: format!("upgrade of stack {} to release {}", run.stack, run.rev),
                });
            }
            Ok(())
        })
    }

    async fn unfinished_stack_upgrades(&self) -> Result<Vec<StackUpgradeRun>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<(Json<StackUpgradeRun>,)> =
                sqlx::query_as("SELECT run FROM stack_upgrades ORDER BY stack")
                    .fetch_all(p)
                    .await
                    .map_err(|e| match e {
                        e @ sqlx::Error::ColumnDecode { .. } => unreadable(e),
                        e => se("list the stack upgrades")(e),
                    })?;
            Ok(rows.into_iter().map(|(run,)| run.0).collect())
        })
    }

    async fn drop_stack_upgrade(&self, stack: &str) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query("DELETE FROM stack_upgrades WHERE stack = $1")
                .bind(stack)
                .execute(p)
                .await
                .map_err(se("forget a stack upgrade"))?;
            Ok(())
        })
    }

    async fn settle_stack_upgrade(&self, settled: &Settled) -> Result<AuditEntry, StoreError> {
        let rev = to_i64(settled.release.rev, "release revision")?;
        let mut event = settled.audit.clone();
        event.at = truncate_micros(event.at);
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("settle a stack upgrade"))?;
            let ended = sqlx::query("DELETE FROM stack_upgrades WHERE stack = $1 AND rev = $2")
                .bind(&settled.release.stack)
                .bind(rev)
                .execute(&mut *tx)
                .await
                .map_err(se("settle a stack upgrade"))?
                .rows_affected();
            if ended == 0 {
                return Err(StoreError::NotFound {
                    what: format!(
                        "upgrade of stack {} to release {}",
                        settled.release.stack, settled.release.rev
                    ),
                });
            }
            put_release_in!(tx, &settled.release, &settled.stack, Some(&settled.deploy));
            let entry = append_audit_in!(tx, event, self.audit.key()).await?;
            tx.commit().await.map_err(se("settle a stack upgrade"))?;
            Ok(entry)
        })
    }
}
