//! [`RolloutStore`]: the agent upgrade policy and its evaluator state.

use super::*;

#[async_trait]
impl RolloutStore for SqlStore {
    async fn get_rollout(&self) -> Result<RolloutRecord, StoreError> {
        on!(&self.pool, p => {
            let row: Option<(Json<RolloutPolicy>, Json<RolloutState>)> =
                sqlx::query_as("SELECT policy, state FROM rollout WHERE id = 1")
                    .fetch_optional(p)
                    .await
                    .map_err(se("read the rollout policy"))?;
            Ok(row
                .map(|(policy, state)| RolloutRecord {
                    policy: policy.0,
                    state: state.0,
                })
                .unwrap_or_default())
        })
    }

    async fn put_rollout(&self, record: &RolloutRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO rollout (id, policy, state) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO UPDATE SET policy = excluded.policy, state = excluded.state",
            )
            .bind(Json(&record.policy))
            .bind(Json(&record.state))
            .execute(p)
            .await
            .map_err(se("store the rollout policy"))?;
            Ok(())
        })
    }
}
