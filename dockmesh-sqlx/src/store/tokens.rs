//! [`TokenStore`]: API and enrollment tokens, by hash.

use super::rows::*;
use super::*;

#[async_trait]
impl TokenStore for SqlStore {
    async fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            // The token and its scope are one write: a token is never seen without its scope.
            let mut tx = p.begin().await.map_err(se("store a token"))?;
            sqlx::query(
                "INSERT INTO tokens (hash, kind, name, created_at, expires_at, one_time, used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&token.hash)
            .bind(kind_text(token.kind))
            .bind(&token.name)
            .bind(Ts::new(token.created_at))
            .bind(token.expires_at.map(Ts::new))
            .bind(token.one_time)
            .bind(token.used_at.map(Ts::new))
            .execute(&mut *tx)
            .await
            .map_err(|e| match store_err("store a token", e) {
                StoreError::Conflict { .. } => StoreError::Conflict {
                    what: "a token with this hash already exists; nothing was stored".into(),
                },
                other => other,
            })?;
            sqlx::query(
                "INSERT INTO token_scopes (hash, scope) VALUES ($1, $2) \
                 ON CONFLICT (hash) DO UPDATE SET scope = excluded.scope",
            )
            .bind(&token.hash)
            .bind(token.scope.as_str())
            .execute(&mut *tx)
            .await
            .map_err(se("store a token's scope"))?;
            tx.commit().await.map_err(se("store a token"))?;
            Ok(())
        })
    }

    async fn get_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let sql = const_format(TOKEN_COLUMNS, " WHERE hash = $1");
        on!(&self.pool, p => {
            let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(hash)
                .fetch_optional(p)
                .await
                .map_err(se("read a token"))?;
            row.map(TokenRow::into_record).transpose()
        })
    }

    async fn use_token(&self, hash: &str, now: Timestamp) -> Result<TokenUse, StoreError> {
        let now = Ts::new(now);
        let sql = const_format(TOKEN_COLUMNS, " WHERE hash = $1");
        on!(&self.pool, p => {
            // Spending a one-time token is one conditional UPDATE: of two concurrent uses, one
            // changes the row and the other sees it used.
            let spent = sqlx::query(
                "UPDATE tokens SET used_at = $2 WHERE hash = $1 AND one_time = TRUE \
                 AND used_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(hash)
            .bind(now)
            .execute(p)
            .await
            .map_err(se("use a token"))?
            .rows_affected()
                == 1;
            let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(hash)
                .fetch_optional(p)
                .await
                .map_err(se("read a token"))?;
            let Some(row) = row else {
                return Ok(TokenUse::Unknown);
            };
            let token = row.into_record()?;
            if spent {
                return Ok(TokenUse::Accepted { token });
            }
            if token.expires_at.is_some_and(|e| e <= now.0) {
                return Ok(TokenUse::Expired);
            }
            if token.one_time {
                return Ok(TokenUse::AlreadyUsed);
            }
            Ok(TokenUse::Accepted { token })
        })
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let sql = const_format(TOKEN_COLUMNS, " ORDER BY created_at, hash");
        on!(&self.pool, p => {
            let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await
                .map_err(se("list tokens"))?;
            rows.into_iter().map(TokenRow::into_record).collect()
        })
    }

    async fn delete_token(&self, hash: &str) -> Result<(), StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("delete a token"))?;
            for sql in [
                "DELETE FROM token_scopes WHERE hash = $1",
                "DELETE FROM tokens WHERE hash = $1",
            ] {
                sqlx::query(sql)
                    .bind(hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(se("delete a token"))?;
            }
            tx.commit().await.map_err(se("delete a token"))?;
            Ok(())
        })
    }
}
