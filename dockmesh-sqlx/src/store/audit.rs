//! [`AuditLog`]: the hash-chained audit log.

use super::rows::*;
use super::*;

#[async_trait]
impl AuditLog for SqlStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<AuditEntry, StoreError> {
        let mut event = event.clone();
        event.at = truncate_micros(event.at);
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("append to the audit log"))?;
            let entry = append_audit_in!(tx, event, self.audit.key()).await?;
            tx.commit().await.map_err(se("append to the audit log"))?;
            Ok(entry)
        })
    }

    async fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let before = query
            .before_seq
            .map(|b| to_i64(b, "audit cursor"))
            .transpose()?;
        let limit = i64::from(query.effective_limit());
        on!(&self.pool, p => {
            let mut qb = QueryBuilder::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
            if let Some(a) = &query.action {
                qb.push(" AND action = ").push_bind(a.clone());
            }
            if let Some(t) = &query.target {
                qb.push(" AND target = ").push_bind(t.clone());
            }
            if let Some(s) = query.since {
                qb.push(" AND at >= ").push_bind(Ts::new(s));
            }
            if let Some(u) = query.until {
                // `until` is exclusive: an event at 10.0000005 s is stored as 10.000000 s, so
                // compare against the truncated bound rounded up.
                let u_trunc = truncate_micros(u);
                let bound = if u_trunc == u { u } else { u_trunc + SignedDuration::from_micros(1) };
                qb.push(" AND at < ").push_bind(Ts::new(bound));
            }
            if let Some(b) = before {
                qb.push(" AND seq < ").push_bind(b);
            }
            qb.push(" ORDER BY seq DESC LIMIT ").push_bind(limit);
            let rows: Vec<AuditRow> = qb
                .build_query_as()
                .fetch_all(p)
                .await
                .map_err(se("query the audit log"))?;
            rows.into_iter().map(AuditRow::into_entry).collect()
        })
    }

    async fn verify_audit(&self) -> Result<ChainVerification, StoreError> {
        crate::audit::verify(self, true).await
    }
}

impl SqlStore {
    /// Append many events to the audit log in one transaction (bulk import, benchmarks).
    pub async fn append_audit_batch(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEntry>, StoreError> {
        on!(&self.pool, p => {
            let mut tx = p.begin().await.map_err(se("append to the audit log"))?;
            let (mut seq, mut hash): (i64, String) = sqlx::query_as(
                "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(se("read the audit chain head"))?;
            let mut out = Vec::with_capacity(events.len());
            for event in events {
                let mut event = event.clone();
                event.at = truncate_micros(event.at);
                let prev = if seq == 0 { None } else { Some((seq as u64, hash.as_str())) };
                let entry = AuditEntry::chain(prev, event);
                seq = to_i64(entry.seq, "audit sequence number")?;
                hash = entry.hash.clone();
                out.push(entry);
            }
            // Many rows per statement (8 parameters each, well under both backends' limits).
            for chunk in out.chunks(500) {
                let mut qb = QueryBuilder::new(
                    "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) ",
                );
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.seq as i64)
                        .push_bind(Ts::new(e.event.at))
                        .push_bind(e.event.actor.as_str())
                        .push_bind(e.event.action.as_str())
                        .push_bind(e.event.target.as_str())
                        .push_bind(Json(&e.event.detail))
                        .push_bind(e.prev_hash.as_str())
                        .push_bind(e.hash.as_str());
                });
                qb.build()
                    .execute(&mut *tx)
                    .await
                    .map_err(se("append to the audit log"))?;
            }
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(&hash)
                .execute(&mut *tx)
                .await
                .map_err(se("move the audit chain head"))?;
            if let Some(key) = self.audit.key() {
                sqlx::query(ANCHOR_UPSERT)
                    .bind(seq)
                    .bind(crate::audit::anchor_mac(key, seq as u64, &hash))
                    .execute(&mut *tx)
                    .await
                    .map_err(se("move the audit chain anchor"))?;
            }
            tx.commit().await.map_err(se("append to the audit log"))?;
            Ok(out)
        })
    }
}

/// Compare the newest entry of an intact chain with the recorded head.
pub(crate) fn head_mismatch(
    head: Option<(i64, String)>,
    last: &(u64, String),
) -> Option<BrokenLink> {
    let (last_seq, last_hash) = (last.0, last.1.as_str());
    let Some((head_seq, head_hash)) = head else {
        return Some(BrokenLink {
            seq: last_seq + 1,
            reason: "the recorded head of the chain is missing".into(),
        });
    };
    let head_seq = u64::try_from(head_seq).unwrap_or(0);
    if head_seq > last_seq {
        Some(BrokenLink {
            seq: last_seq + 1,
            reason: format!(
                "the chain ends at entry {last_seq} but its recorded head is entry {head_seq}: \
                 the newest entries were removed"
            ),
        })
    } else if head_seq < last_seq {
        Some(BrokenLink {
            seq: head_seq + 1,
            reason: format!(
                "entries after the recorded head {head_seq} were added outside the store"
            ),
        })
    } else if head_hash != last_hash {
        Some(BrokenLink {
            seq: last_seq,
            reason: "the newest entry does not match the recorded head's hash".into(),
        })
    } else {
        None
    }
}
