//! Verifying the audit chain: the walk over `audit_log` and its comparison with the recorded
//! head, read in one snapshot.

use crate::store::{AUDIT_COLUMNS, AuditRow, Pool, SqlStore, head_mismatch, on, se};
use dockmesh_core::audit::{ChainVerification, ChainVerifier, GENESIS_HASH};
use dockmesh_core::ports::StoreError;
use futures_util::TryStreamExt;

/// The statement that opens a verification transaction. PostgreSQL's default `READ COMMITTED`
/// takes a new snapshot per statement, so an append committing between reading the head and
/// scanning the rows would look like entries added outside the store: the whole walk runs in
/// one `REPEATABLE READ READ ONLY` snapshot. A SQLite read transaction is one snapshot already.
fn begin_snapshot(pool: &Pool) -> &'static str {
    match pool {
        Pool::Sqlite(_) => "BEGIN",
        Pool::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    }
}

/// Walk the chain and compare its end with the recorded head, in one snapshot.
pub(crate) async fn verify(store: &SqlStore) -> Result<ChainVerification, StoreError> {
    let begin = begin_snapshot(&store.pool);
    on!(&store.pool, p => {
        let mut tx = p.begin_with(begin).await.map_err(se("verify the audit log"))?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(se("read the audit chain head"))?;
        let mut verifier = ChainVerifier::default();
        let mut last: (u64, String) = (0, GENESIS_HASH.to_owned());
        let mut broken = false;
        {
            let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq");
            let mut rows = sqlx::query_as::<_, AuditRow>(sqlx::AssertSqlSafe(sql)).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(se("read the audit log"))? {
                let entry = row.into_entry()?;
                if !verifier.push(&entry) {
                    broken = true;
                    break;
                }
                last = (entry.seq, entry.hash);
            }
        }
        tx.commit().await.map_err(se("verify the audit log"))?;
        let mut result = verifier.finish();
        if !broken {
            result.first_broken = head_mismatch(head, &last);
        }
        Ok(result)
    })
}
