//! [`DrainStore`]: host drains and cordons.

use super::rows::*;
use super::*;

#[async_trait]
impl DrainStore for SqlStore {
    async fn put_drain(&self, drain: &DrainRecord) -> Result<(), StoreError> {
        let progress = DrainProgress {
            state: drain.state.clone(),
            acknowledged: drain.acknowledged.clone(),
        };
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("store a drain"))?;
            sqlx::query(
                "INSERT INTO drains (id, created_at, plan, migrations) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, \
                 plan = excluded.plan, migrations = excluded.migrations",
            )
            .bind(drain.id)
            .bind(Ts::new(drain.created_at))
            .bind(Json(&drain.plan))
            .bind(Json(&drain.migrations))
            .execute(&mut *tx)
            .await
            .map_err(se("store a drain"))?;
            sqlx::query(
                "INSERT INTO drain_states (id, state) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            )
            .bind(drain.id)
            .bind(Json(&progress))
            .execute(&mut *tx)
            .await
            .map_err(se("store a drain's state"))?;
            tx.commit().await.map_err(se("store a drain"))?;
            Ok(())
        })
    }

    async fn get_drain(&self, id: uuid::Uuid) -> Result<Option<DrainRecord>, StoreError> {
        on!(&self.pool, p => {
            let row: Option<DrainRow> = sqlx::query_as(
                "SELECT d.id, d.created_at, d.plan, d.migrations, s.state \
                 FROM drains d LEFT JOIN drain_states s ON s.id = d.id WHERE d.id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await
            .map_err(se("read a drain"))?;
            Ok(row.map(DrainRow::into_record))
        })
    }

    async fn list_drains(&self) -> Result<Vec<DrainRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<DrainRow> = sqlx::query_as(
                "SELECT d.id, d.created_at, d.plan, d.migrations, s.state \
                 FROM drains d LEFT JOIN drain_states s ON s.id = d.id \
                 ORDER BY d.created_at DESC, d.id DESC",
            )
            .fetch_all(p)
            .await
            .map_err(se("list drains"))?;
            Ok(rows.into_iter().map(DrainRow::into_record).collect())
        })
    }

    async fn put_cordon(&self, cordon: &CordonRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO cordons (host, cordoned_at, cordoned_by) VALUES ($1, $2, $3) \
                 ON CONFLICT (host) DO UPDATE SET cordoned_at = excluded.cordoned_at, \
                 cordoned_by = excluded.cordoned_by",
            )
            .bind(&cordon.host.0)
            .bind(Ts::new(cordon.at))
            .bind(&cordon.by)
            .execute(p)
            .await
            .map_err(se("cordon a host"))?;
            Ok(())
        })
    }

    async fn delete_cordon(&self, host: &HostId) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query("DELETE FROM cordons WHERE host = $1")
                .bind(&host.0)
                .execute(p)
                .await
                .map_err(se("uncordon a host"))?;
            Ok(())
        })
    }

    async fn list_cordons(&self) -> Result<Vec<CordonRecord>, StoreError> {
        on!(&self.pool, p => {
            let rows: Vec<(String, Ts, String)> = sqlx::query_as(
                "SELECT host, cordoned_at, cordoned_by FROM cordons ORDER BY host",
            )
            .fetch_all(p)
            .await
            .map_err(se("list cordons"))?;
            Ok(rows
                .into_iter()
                .map(|(host, at, by)| CordonRecord {
                    host: HostId(host),
                    at: at.0,
                    by,
                })
                .collect())
        })
    }
}
