//! The audit event model, the action names users see, and the hash chain rule.
//!
//! Each stored entry carries the hash of the previous entry and its own hash, a SHA-256 over a
//! canonical encoding of (sequence number, previous hash, event). Changing, removing or
//! reordering any stored entry breaks the chain at that entry, which [`verify_chain`] reports.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The agent upgrade policy was changed.
pub const AGENT_UPGRADE_POLICY: &str = "agent.upgrade_policy";
/// An operator asked for an immediate rollout evaluation ("run now").
pub const AGENT_UPGRADE_RUN: &str = "agent.upgrade_run";
/// An agent upgrade failed: the agent refused the binary (size, checksum, signature), could
/// not download it, or went back to its previous binary.
pub const AGENT_UPGRADE_FAILED: &str = "agent.upgrade_failed";
/// A deploy action; with detail `action=agent-upgrade` it records an upgrade dispatched to an agent.
pub const STACK_DEPLOY: &str = "stack.deploy";
/// A stack migration was started.
pub const MIGRATION_START: &str = "migration.start";
/// A stack migration was committed.
pub const MIGRATION_COMPLETE: &str = "migration.complete";
/// A stack migration failed (and was compensated).
pub const MIGRATION_FAIL: &str = "migration.fail";
/// A committed migration was rolled back.
pub const MIGRATION_ROLLBACK: &str = "migration.rollback";
/// The retained source of a committed migration was purged.
pub const MIGRATION_PURGE_SOURCE: &str = "migration.purge_source";
/// The server applied schema migrations to its database.
pub const SERVER_SCHEMA_MIGRATE: &str = "server.schema_migrate";
/// A backup bundle of the server's database was written and verified (details: `path`,
/// `bytes`, `schema_version`, `backend`, `dockmesh_version`, `by`: the command that took it).
pub const SERVER_BACKUP: &str = "server.backup";

/// The hash that precedes the first entry of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Something that happened, worth recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened (microsecond precision, so that every store keeps it exactly).
    pub at: Timestamp,
    /// Who did it (`system`, a user or token name, an agent id).
    pub actor: String,
    /// What was done: one of the action names of this module.
    pub action: String,
    /// What it was done to (an agent id, a stack name, a migration id).
    pub target: String,
    /// Details as key/value pairs.
    pub detail: BTreeMap<String, String>,
}

impl AuditEvent {
    /// A new event; `at` is truncated to whole microseconds.
    pub fn new(
        at: Timestamp,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        let micros = at.as_microsecond();
        AuditEvent {
            at: Timestamp::from_microsecond(micros).expect("a valid timestamp stays valid"),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: BTreeMap::new(),
        }
    }

    /// Add one detail.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.detail.insert(key.into(), value.into());
        self
    }
}

/// An event as stored: numbered and chained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
    /// Hash of the previous entry ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// This entry's hash.
    pub hash: String,
}

impl AuditEntry {
    /// Chain `event` after an entry whose sequence number and hash are given (`None` for the first).
    pub fn chain(prev: Option<(u64, &str)>, event: AuditEvent) -> AuditEntry {
        let (seq, prev_hash) = match prev {
            Some((s, h)) => (s + 1, h.to_owned()),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let hash = entry_hash(seq, &prev_hash, &event);
        AuditEntry {
            seq,
            event,
            prev_hash,
            hash,
        }
    }
}

/// SHA-256 over the canonical encoding of an entry: each field length-prefixed, in a fixed order,
/// the timestamp as microseconds, details in key order.
pub fn entry_hash(seq: u64, prev_hash: &str, event: &AuditEvent) -> String {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    h.update(b"dockmesh-audit-v1");
    h.update(seq.to_be_bytes());
    field(&mut h, prev_hash.as_bytes());
    h.update(event.at.as_microsecond().to_be_bytes());
    field(&mut h, event.actor.as_bytes());
    field(&mut h, event.action.as_bytes());
    field(&mut h, event.target.as_bytes());
    h.update((event.detail.len() as u64).to_be_bytes());
    for (k, v) in &event.detail {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A filter over the audit log. Results are newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only this action.
    pub action: Option<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Only entries with a sequence number below this one (the cursor for the next page).
    pub before_seq: Option<u64>,
    /// At most this many entries (0 means the default of 100; never more than
    /// [`crate::ports::MAX_PAGE`]).
    pub limit: u32,
}

impl AuditQuery {
    /// The page size this query asks for.
    pub fn effective_limit(&self) -> u32 {
        crate::ports::page_size(self.limit)
    }

    /// Whether `entry` passes this filter (the cursor included, the limit not).
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.action
            .as_ref()
            .is_none_or(|a| *a == entry.event.action)
            && self
                .target
                .as_ref()
                .is_none_or(|t| *t == entry.event.target)
            && self.since.is_none_or(|s| entry.event.at >= s)
            && self.until.is_none_or(|u| entry.event.at < u)
            && self.before_seq.is_none_or(|b| entry.seq < b)
    }
}

/// The first link of a chain that does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    /// Sequence number of the entry where the chain breaks.
    pub seq: u64,
    /// What is wrong there.
    pub reason: String,
}

/// The result of walking a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainVerification {
    /// Entries checked before the walk ended.
    pub entries_checked: u64,
    /// The first broken link, if any.
    pub first_broken: Option<BrokenLink>,
}

/// Incremental chain verifier: feed entries in sequence order, oldest first.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: u64,
    prev_hash: String,
    checked: u64,
    broken: Option<BrokenLink>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            checked: 0,
            broken: None,
        }
    }
}

impl ChainVerifier {
    /// Check the next entry. Returns `false` once the chain is broken (later entries are ignored).
    pub fn push(&mut self, entry: &AuditEntry) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let reason = if entry.seq != self.expected_seq {
            Some(format!(
                "expected entry {} but found entry {} (an entry was removed or reordered)",
                self.expected_seq, entry.seq
            ))
        } else if entry.prev_hash != self.prev_hash {
            Some("its previous-hash does not match the entry before it".to_owned())
        } else if entry_hash(entry.seq, &entry.prev_hash, &entry.event) != entry.hash {
            Some("its content does not match its hash (the entry was altered)".to_owned())
        } else {
            None
        };
        self.checked += 1;
        if let Some(reason) = reason {
            self.broken = Some(BrokenLink {
                seq: entry.seq,
                reason,
            });
            return false;
        }
        self.expected_seq += 1;
        self.prev_hash = entry.hash.clone();
        true
    }

    /// The verdict so far.
    pub fn finish(self) -> ChainVerification {
        ChainVerification {
            entries_checked: self.checked,
            first_broken: self.broken,
        }
    }
}

/// Walk a whole chain, oldest first.
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> ChainVerification {
    let mut v = ChainVerifier::default();
    for e in entries {
        if !v.push(e) {
            break;
        }
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ev(i: i64) -> AuditEvent {
        AuditEvent::new(
            Timestamp::from_second(1_700_000_000 + i).unwrap(),
            "system",
            MIGRATION_START,
            format!("stack-{i}"),
        )
        .with("n", i.to_string())
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            out.push(AuditEntry::chain(prev, ev(i)));
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let v = verify_chain(&c);
        assert_eq!(v.entries_checked, 5);
        assert_eq!(v.first_broken, None);
    }

    #[test]
    fn timestamps_are_microsecond_precise() {
        let t = Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap();
        let e = AuditEvent::new(t, "a", "b", "c");
        assert_eq!(e.at.as_nanosecond(), 1_700_000_000_123_456_000);
    }

    proptest! {
        #[test]
        fn any_alteration_is_found_at_its_entry(n in 2i64..20, at in 0usize..20, what in 0u8..4) {
            let mut c = chain(n);
            // Removing the newest entry cannot be seen from the chain alone (the store keeps
            // the head), so removals pick an entry that has a successor.
            let at = if what == 2 { at % (c.len() - 1) } else { at % c.len() };
            match what {
                0 => { c[at].event.target.push('x'); }
                1 => { c[at].event.detail.insert("extra".into(), "1".into()); }
                2 => { c.remove(at); }
                _ => { c[at].event.at += jiff::SignedDuration::from_secs(1); }
            }
            let v = verify_chain(&c);
            let broken = v.first_broken.expect("alteration must be detected");
            let expected = if what == 2 { at as u64 + 2 } else { at as u64 + 1 };
            prop_assert_eq!(broken.seq, expected);
        }
    }
}
