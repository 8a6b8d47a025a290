//! [`AgentStore`]: the agents enrolled with the server.

use super::rows::*;
use super::*;

#[async_trait]
impl AgentStore for SqlStore {
    async fn upsert_agent(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query(
                "INSERT INTO agents (id, name, version, commit_sha, protocol_version, arch, docker_version, \
                 last_seen, connection, upgrade) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, version = excluded.version, \
                 commit_sha = excluded.commit_sha, protocol_version = excluded.protocol_version, \
                 arch = excluded.arch, docker_version = excluded.docker_version, \
                 last_seen = excluded.last_seen, connection = excluded.connection, upgrade = excluded.upgrade",
            )
            .bind(agent.id.as_str())
            .bind(&agent.name)
            .bind(&agent.version)
            .bind(agent.commit.as_deref())
            .bind(i64::from(agent.protocol_version))
            .bind(&agent.arch)
            .bind(&agent.docker_version)
            .bind(agent.last_seen.map(Ts::new))
            .bind(connection_text(agent.connection))
            .bind(Json(&agent.upgrade))
            .execute(p)
            .await
            .map_err(se("store an agent"))?;
            Ok(())
        })
    }

    async fn get_agent(&self, id: &AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let sql = const_format(AGENT_COLUMNS, " WHERE id = $1");
        on!(&self.pool, p => {
            let row: Option<AgentRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.as_str())
                .fetch_optional(p)
                .await
                .map_err(se("read an agent"))?;
            row.map(AgentRow::into_record).transpose()
        })
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let sql = const_format(AGENT_COLUMNS, " ORDER BY id");
        on!(&self.pool, p => {
            let rows: Vec<AgentRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .map_err(se("list agents"))?;
            rows.into_iter().map(AgentRow::into_record).collect()
        })
    }

    async fn delete_agent(&self, id: &AgentId) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            sqlx::query("DELETE FROM agents WHERE id = $1")
                .bind(id.as_str())
                .execute(p)
                .await
                .map_err(se("delete an agent"))?;
            Ok(())
        })
    }
}
