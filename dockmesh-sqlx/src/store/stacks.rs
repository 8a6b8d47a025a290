//! [`StackStore`]: stacks, their deploy history and their releases.

use super::rows::*;
use super::*;

#[async_trait]
impl StackStore for SqlStore {
    async fn put_stack(
        &self,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("store a stack"))?;
            sqlx::query(
                "INSERT INTO stacks (name, compose, env, host, updated_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET compose = excluded.compose, env = excluded.env, \
                 host = excluded.host, updated_at = excluded.updated_at",
            )
            .bind(&stack.name)
            .bind(&stack.compose)
            .bind(stack.env.as_deref())
            .bind(stack.host.as_ref().map(|h| h.as_str()))
            .bind(Ts::new(stack.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(se("store a stack"))?;
            if let Some(record) = deploy {
                sqlx::query(
                    "INSERT INTO deploys (stack, at, host, action, actor) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&record.stack)
                .bind(Ts::new(record.at))
                .bind(record.host.as_str())
                .bind(&record.action)
                .bind(&record.actor)
                .execute(&mut *tx)
                .await
                .map_err(se("append to a stack's deploy history"))?;
            }
            tx.commit().await.map_err(se("store a stack"))?;
            Ok(())
        })
    }

    async fn get_stack(&self, name: &str) -> Result<Option<StackRecord>, StoreError> {
        on!(&self.pool, p => {
            let row: Option<StackRow> = sqlx::query_as(
                "SELECT name, compose, env, host, updated_at FROM stacks WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(p)
            .await
            .map_err(se("read a stack"))?;
            Ok(row.map(StackRow::into_record))
        })
    }

    async fn list_stacks(&self) -> Result<Vec<StackRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<StackRow> = sqlx::query_as(
                "SELECT name, compose, env, host, updated_at FROM stacks ORDER BY name",
            )
            .fetch_all(p)
            .await
            .map_err(se("list stacks"))?;
            Ok(rows.into_iter().map(StackRow::into_record).collect())
        })
    }

    async fn delete_stack(&self, name: &str) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("delete a stack"))?;
            sqlx::query("DELETE FROM deploys WHERE stack = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(se("delete a stack's deploy history"))?;
            sqlx::query("DELETE FROM releases WHERE stack = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(se("delete a stack's releases"))?;
            sqlx::query("DELETE FROM stacks WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(se("delete a stack"))?;
            tx.commit().await.map_err(se("delete a stack"))?;
            Ok(())
        })
    }

    async fn deploy_history(
        &self,
        stack: &str,
        page: &PageQuery,
    ) -> Result<Vec<DeployEntry>, StoreError> {
        let before = page
            .before
            .map(|b| to_i64(b, "deploy history cursor"))
            .transpose()?
            .unwrap_or(i64::MAX);
        let limit = i64::from(page_size(page.limit));
        on!(&self.pool, p => {
            let rows: Vec<DeployRow> = sqlx::query_as(
                "SELECT id, stack, at, host, action, actor FROM deploys \
                 WHERE stack = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
            )
            .bind(stack)
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(se("read a stack's deploy history"))?;
            Ok(rows
                .into_iter()
                .map(|r| DeployEntry {
                    seq: r.id as u64,
                    record: DeployRecord {
                        stack: r.stack,
                        at: r.at.0,
                        host: HostId(r.host),
                        action: r.action,
                        actor: r.actor,
                    },
                })
                .collect())
        })
    }

    async fn put_release(
        &self,
        release: &ReleaseRecord,
        stack: &StackRecord,
        deploy: Option<&DeployRecord>,
    ) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("store a release"))?;
            put_release_in!(tx, release, stack, deploy);
            tx.commit().await.map_err(se("store a release"))?;
            Ok(())
        })
    }

    async fn list_releases(&self, stack: &str) -> Result<Vec<ReleaseRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<ReleaseRow> = sqlx::query_as(
                "SELECT stack, rev, at, host, compose, env, images, outcome, detail, from_rev, actor \
                 FROM releases WHERE stack = $1 ORDER BY rev DESC",
            )
            .bind(stack)
            .fetch_all(p)
            .await
            .map_err(se("list a stack's releases"))?;
            rows.into_iter().map(ReleaseRow::into_record).collect()
        })
    }
}
