//! The audit log: filtered, cursor-paginated listing, and verification of the hash chain.

use super::OpError;
use crate::server::state::ServerState;
use dockmesh_core::audit::{AuditEntry, AuditQuery, ChainVerification};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Filters of the audit listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct AuditParams {
    /// Only this action (`migration.start`, `stack.deploy`, …).
    pub action: Option<String>,
    /// Only this target (a stack name, an agent id, …).
    pub target: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Only entries before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// The cursor: entries with a sequence number below this (`next_before` of the last page).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub before: Option<u64>,
    /// At most this many (default 100; 0 means the default; above 1000 is refused).
    #[serde(default)]
    #[param(maximum = 1000)]
    pub limit: u32,
}

/// A page of audit entries, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// The entries.
    #[schema(value_type = Vec<Object>)]
    pub entries: Vec<AuditEntry>,
    /// The cursor of the next page (`before=`), when there may be one.
    pub next_before: Option<u64>,
}

fn time(field: &str, v: &Option<String>) -> Result<Option<Timestamp>, OpError> {
    v.as_deref()
        .map(|s| {
            s.parse::<Timestamp>().map_err(|e| {
                OpError::bad_request(format!("{field}: {s:?} is not an RFC 3339 time ({e})"))
            })
        })
        .transpose()
}

/// Audit entries, newest first, filtered by action, target and time.
pub async fn list(state: &ServerState, p: &AuditParams) -> Result<AuditPage, OpError> {
    super::check_limit(p.limit)?;
    if let Some(b) = p.before
        && i64::try_from(b).is_err()
    {
        return Err(OpError::bad_request(format!(
            "before: {b} is not a sequence number (at most {})",
            i64::MAX
        )));
    }
    let query = AuditQuery {
        action: p.action.clone(),
        target: p.target.clone(),
        since: time("since", &p.since)?,
        until: time("until", &p.until)?,
        before_seq: p.before,
        limit: p.limit,
    };
    let limit = query.effective_limit() as usize;
    let entries = state.store().query_audit(&query).await?;
    let next_before = if entries.len() >= limit {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(AuditPage {
        entries,
        next_before,
    })
}

/// The newest audit entry of `action`, when there is one.
pub async fn newest(state: &ServerState, action: &str) -> Result<Option<AuditEntry>, OpError> {
    let page = list(
        state,
        &AuditParams {
            action: Some(action.to_owned()),
            limit: 1,
            ..Default::default()
        },
    )
    .await?;
    Ok(page.entries.into_iter().next())
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    /// True when every link holds.
    pub ok: bool,
    /// The walk's result.
    #[schema(value_type = Object)]
    pub verification: ChainVerification,
}

/// Walk the audit chain and say whether every link holds (and where the first break is).
pub async fn verify(state: &ServerState) -> Result<VerifyView, OpError> {
    let v = state.store().verify_audit().await?;
    Ok(VerifyView {
        ok: v.first_broken.is_none(),
        verification: v,
    })
}
