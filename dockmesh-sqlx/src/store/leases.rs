//! [`LeaseStore`]: leases with fencing tokens, on the database's clock.

use super::*;

#[async_trait]
impl LeaseStore for SqlStore {
    async fn claim_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: SignedDuration,
    ) -> Result<LeaseClaim, StoreError> {
        let ttl = ttl.max(SignedDuration::ZERO);
        let now_sql = self.now_sql();
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("claim a lease"))?;
            // Lock the lease's fence row first (the row lock on PostgreSQL, the write lock on
            // SQLite): concurrent claimants of one lease queue up here.
            let (token,): (i64,) = sqlx::query_as(
                "INSERT INTO lease_fences (name, token) VALUES ($1, 0) \
                 ON CONFLICT (name) DO UPDATE SET token = lease_fences.token RETURNING token",
            )
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(se("claim a lease"))?;
            // The database's clock decides expiry, never the caller's.
            let (now,): (Ts,) = sqlx::query_as(now_sql)
                .fetch_one(&mut *tx)
                .await
                .map_err(se("read the database's clock"))?;
            let current: Option<(String, Ts)> =
                sqlx::query_as("SELECT owner, held_until FROM leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(se("read a lease"))?;
            let token = match &current {
                // A renewal keeps the token (a lease from before fencing gets its first one).
                Some((o, _)) if o == owner => token.max(1),
                Some((o, until)) if until.0 > now.0 => {
                    return Ok(LeaseClaim::Held {
                        owner: o.clone(),
                        until: until.0,
                    });
                }
                // Free or expired: a new holder, a greater token.
                _ => token + 1,
            };
            let expires_at = Ts::new(now.0.saturating_add(ttl).unwrap_or(now.0));
            sqlx::query(
                "INSERT INTO leases (name, owner, held_until) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, \
                 held_until = excluded.held_until",
            )
            .bind(name)
            .bind(owner)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            .map_err(se("claim a lease"))?;
            sqlx::query("UPDATE lease_fences SET token = $2 WHERE name = $1")
                .bind(name)
                .bind(token)
                .execute(&mut *tx)
                .await
                .map_err(se("claim a lease"))?;
            tx.commit().await.map_err(se("claim a lease"))?;
            Ok(LeaseClaim::Granted(Lease {
                name: name.to_owned(),
                owner: owner.to_owned(),
                token: token as u64,
                expires_at: expires_at.0,
            }))
        })
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        // The fence row stays, with its token, so that the next holder's token is greater.
        let now_sql = self.now_sql();
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("release a lease"))?;
            let (now,): (Ts,) = sqlx::query_as(now_sql)
                .fetch_one(&mut *tx)
                .await
                .map_err(se("read the database's clock"))?;
            sqlx::query(
                "UPDATE leases SET held_until = $3 WHERE name = $1 AND owner = $2 AND held_until > $3",
            )
            .bind(name)
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(se("release a lease"))?;
            tx.commit().await.map_err(se("release a lease"))?;
            Ok(())
        })
    }
}

impl SqlStore {
    /// The query that reads the database's clock, as a [`Ts`].
    fn now_sql(&self) -> &'static str {
        match self.pool.backend() {
            Backend::Postgres => "SELECT now()",
            // `%f` is seconds with milliseconds; padded to the fixed width `Ts` stores.
            Backend::Sqlite => "SELECT strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')",
        }
    }

    /// The lease `name`: its holder and until when, if anyone holds it.
    pub async fn lease(&self, name: &str) -> Result<Option<(String, Timestamp)>, StoreError> {
        on!(&self.pool, p => {
            let row: Option<(String, Ts)> =
                sqlx::query_as("SELECT owner, held_until FROM leases WHERE name = $1")
                    .bind(name)
                    .fetch_optional(p)
                    .await
                    .map_err(se("read a lease"))?;
            Ok(row.map(|(o, t)| (o, t.0)))
        })
    }
}
