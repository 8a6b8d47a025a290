//! [`MigrationLog`]: migrations and their event logs.

use super::rows::*;
use super::*;

#[async_trait]
impl MigrationLog for SqlStore {
    async fn create_migration(
        &self,
        spec: &MigrationSpec,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let audit = audit.map(|a| {
            let mut a = a.clone();
            a.at = truncate_micros(a.at);
            a
        });
        let result = on!(&self.pool, p => {
            async {
                let mut tx = p.begin().await.map_err(se("record a migration"))?;
                sqlx::query(
                    "INSERT INTO migrations (id, stack, source, target, requested_at, requested_by, \
                     retention, active, event_count) VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, 0)",
                )
                .bind(spec.id.0)
                .bind(&spec.stack)
                .bind(spec.source.as_str())
                .bind(spec.target.as_str())
                .bind(Ts::new(spec.requested_at))
                .bind(&spec.requested_by)
                .bind(spec.retention.to_string())
                .execute(&mut *tx)
                .await
                .map_err(se("record a migration"))?;
                if let Some(a) = audit {
                    append_audit_in!(tx, a, self.audit.key()).await?;
                }
                tx.commit().await.map_err(se("record a migration"))
            }
            .await
        });
        match result {
            Err(StoreError::Conflict { .. }) => {
                // Name what conflicts: the id, or the stack's active migration.
                let (exists, active) = on!(&self.pool, p => {
                    let exists: Option<uuid::Uuid> =
                        sqlx::query_scalar("SELECT id FROM migrations WHERE id = $1")
                            .bind(spec.id.0)
                            .fetch_optional(p)
                            .await
                            .map_err(se("read a migration"))?;
                    let active: Option<uuid::Uuid> = sqlx::query_scalar(
                        "SELECT id FROM migrations WHERE stack = $1 AND active = TRUE",
                    )
                    .bind(&spec.stack)
                    .fetch_optional(p)
                    .await
                    .map_err(se("read a migration"))?;
                    (exists, active)
                });
                let what = if exists.is_some() {
                    format!("migration {} already exists; nothing was written", spec.id)
                } else if let Some(other) = active {
                    format!(
                        "stack {} already has an active migration ({other}); nothing was written: \
                         wait for it to finish or fail",
                        spec.stack
                    )
                } else {
                    format!(
                        "migration {} of stack {} conflicts with a concurrent write; nothing was written",
                        spec.id, spec.stack
                    )
                };
                Err(StoreError::Conflict { what })
            }
            other => other,
        }
    }

    async fn append_migration_event(
        &self,
        id: MigrationId,
        seq: u64,
        event: &MigrationEvent,
        fence: &Fence,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        let seq_i = to_i64(seq, "event sequence number")?;
        let audit = audit.map(|a| {
            let mut a = a.clone();
            a.at = truncate_micros(a.at);
            a
        });
        // The lease row is locked against a concurrent takeover until this commits (SQLite:
        // the first write below already holds the database's write lock).
        let fence_sql = match self.pool.backend() {
            Backend::Sqlite => "SELECT token FROM lease_fences WHERE name = $1",
            Backend::Postgres => "SELECT token FROM lease_fences WHERE name = $1 FOR SHARE",
        };
        let result = on!(&self.pool, p => {
            async {
                let mut tx = p.begin().await.map_err(se("append a migration event"))?;
                // The optimistic check and the lock in one statement: it changes the row only
                // when the log has exactly `seq` events.
                let moved = sqlx::query(
                    "UPDATE migrations SET event_count = event_count + 1, \
                     active = COALESCE($3, active) WHERE id = $1 AND event_count = $2",
                )
                .bind(id.0)
                .bind(seq_i)
                .bind(event.activity())
                .execute(&mut *tx)
                .await
                .map_err(se("append a migration event"))?
                .rows_affected();
                let current: Option<i64> = sqlx::query_scalar(fence_sql)
                    .bind(&fence.lease)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(se("check the migration's lease"))?;
                let current = current.unwrap_or(0) as u64;
                if current != fence.token {
                    return Err(StoreError::Fenced {
                        lease: fence.lease.clone(),
                        token: fence.token,
                        current,
                    });
                }
                if moved != 1 {
                    let count: Option<i64> =
                        sqlx::query_scalar("SELECT event_count FROM migrations WHERE id = $1")
                            .bind(id.0)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(se("read a migration"))?;
                    return Err(match count {
                        None => StoreError::NotFound {
                            what: format!("migration {id}"),
                        },
                        Some(n) => StoreError::Conflict {
                            what: format!(
                                "migration {id} has {n} events, not {seq}: another writer appended \
                                 first; nothing was written, reload the migration"
                            ),
                        },
                    });
                }
                sqlx::query(
                    "INSERT INTO migration_events (migration_id, seq, kind, at, body) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(id.0)
                .bind(seq_i)
                .bind(event.kind())
                .bind(Ts::new(event.at()))
                .bind(Json(event))
                .execute(&mut *tx)
                .await
                .map_err(se("append a migration event"))?;
                if let Some(a) = audit {
                    append_audit_in!(tx, a, self.audit.key()).await?;
                }
                tx.commit().await.map_err(se("append a migration event"))
            }
            .await
        });
        match result {
            // Only resuming activity can hit the one-active-per-stack index: name the other.
            Err(StoreError::Conflict { what }) if event.activity() == Some(true) => {
                let other = self.active_migration_of(id).await?;
                Err(StoreError::Conflict {
                    what: match other {
                        Some(o) => format!(
                            "the stack of migration {id} already has an active migration ({o}); \
                             nothing was written"
                        ),
                        None => what,
                    },
                })
            }
            other => other,
        }
    }

    async fn load_migration(&self, id: MigrationId) -> Result<Option<StoredMigration>, StoreError> {
        let sql = const_format(MIGRATION_COLUMNS, " WHERE id = $1");
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("read a migration"))?;
            let row: Option<MigrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(se("read a migration"))?;
            let Some(row) = row else { return Ok(None) };
            let events: Vec<EventRow> = sqlx::query_as(
                "SELECT body FROM migration_events WHERE migration_id = $1 ORDER BY seq",
            )
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(se("read a migration's events"))?;
            tx.commit().await.map_err(se("read a migration"))?;
            Ok(Some(StoredMigration {
                spec: row.into_spec()?,
                events: events.into_iter().map(|e| e.body.0).collect(),
            }))
        })
    }

    async fn list_migrations(
        &self,
        query: &MigrationQuery,
    ) -> Result<Vec<StoredMigration>, StoreError> {
        // One statement shape whatever the filters: NULL parameters switch a filter off. The
        // cursor is the (requested_at, id) of the last migration of the previous page.
        let sql = const_format(
            MIGRATION_COLUMNS,
            " WHERE ($1 = FALSE OR active = TRUE) AND ($2 IS NULL OR stack = $2) \
             AND ($3 IS NULL OR requested_at < $3 OR (requested_at = $3 AND id < $4)) \
             ORDER BY requested_at DESC, id DESC LIMIT $5",
        );
        let limit = i64::from(page_size(query.limit));
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("list migrations"))?;
            let cursor: Option<(Ts, uuid::Uuid)> = match query.after {
                None => None,
                Some(after) => Some(
                    sqlx::query_as("SELECT requested_at, id FROM migrations WHERE id = $1")
                        .bind(after.0)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(se("list migrations"))?
                        .ok_or_else(|| StoreError::NotFound {
                            what: format!("migration {after} (the cursor)"),
                        })?,
                ),
            };
            let rows: Vec<MigrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(query.active_only)
                .bind(query.stack.as_deref())
                .bind(cursor.map(|c| c.0))
                .bind(cursor.map(|c| c.1))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await
                .map_err(se("list migrations"))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let events: Vec<EventRow> = sqlx::query_as(
                    "SELECT body FROM migration_events WHERE migration_id = $1 ORDER BY seq",
                )
                .bind(r.id)
                .fetch_all(&mut *tx)
                .await
                .map_err(se("list migration events"))?;
                out.push(StoredMigration {
                    spec: r.into_spec()?,
                    events: events.into_iter().map(|e| e.body.0).collect(),
                });
            }
            tx.commit().await.map_err(se("list migrations"))?;
            Ok(out)
        })
    }
}

impl SqlStore {
    /// The active migration of the stack of migration `id`, other than `id` itself.
    async fn active_migration_of(&self, id: MigrationId) -> Result<Option<uuid::Uuid>, StoreError> {
        on!(&self.pool, p => {
            sqlx::query_scalar(
                "SELECT o.id FROM migrations o JOIN migrations m ON m.stack = o.stack \
                 WHERE m.id = $1 AND o.id <> $1 AND o.active = TRUE",
            )
            .bind(id.0)
            .fetch_optional(p)
            .await
            .map_err(se("read a migration"))
        })
    }
}
