//! The audit chain's integrity: verifying it in one snapshot, and its keyed anchor.
//!
//! # What the chain proves, and what it cannot
//!
//! Every entry carries the SHA-256 of its content and of the entry before it
//! ([`dockmesh_core::audit::AuditEntry::chain`]); `audit_head` holds the newest entry's sequence
//! number and hash, moved in the same transaction as each append. Triggers refuse `UPDATE`,
//! `DELETE` and (PostgreSQL) `TRUNCATE` of `audit_log`. `verify_audit` walks the chain and
//! compares its end with the head, in one snapshot, so:
//!
//! - an edited or removed entry in the middle is found (its successor's link breaks);
//! - removing the newest entries is found while the head still names them.
//!
//! Someone who can write to the database can drop the triggers, cut the tail **and move the
//! head back**: the chain and the head then agree. The **anchor** catches that: `audit_anchor`
//! holds HMAC-SHA256 over the head's (sequence number, hash) with a 32-byte key kept in a file
//! *outside the database* (`<data-dir>/audit.key`, mode 0600, created on first open), rewritten
//! in the same transaction as each append. Without the key, a rewound head cannot be given a
//! matching anchor, and `verify_audit` reports the break.
//!
//! What it cannot do:
//!
//! - Someone holding **both** the database and the key file can rewrite history and re-anchor
//!   it. Keep the key readable by the server's user only, and off backups of the database.
//! - Someone with database access can put back an anchor **they copied earlier** together with
//!   the head of that time: the log then ends at that earlier point and verifies. Only a copy of
//!   the anchor kept elsewhere (a witness) detects such a rollback.
//! - A **deleted key file** makes the anchor unverifiable. The store does not create a new key
//!   over an existing anchor: `verify_audit` reports the chain as unverified, naming the file.
//! - Appends by a store opened **without a key** (see [`crate::OpenOptions`]) do not move the
//!   anchor; a store with the key then reports the entries after the anchor as unanchored.
//! - A database that already has entries but no anchor, met with an existing key file, is
//!   reported as unanchored (the anchor may have been removed). A key is created, and the head
//!   anchored as it is, only when the key file does not exist yet and the database has no
//!   anchor (first open, upgrade from schema version 3): that first anchor is trusted as found.

use crate::error::SqlStoreError;
use crate::store::{AUDIT_COLUMNS, AuditRow, Pool, SqlStore, head_mismatch, on, se};
use dockmesh_core::audit::{BrokenLink, ChainVerification, ChainVerifier, GENESIS_HASH};
use dockmesh_core::ports::StoreError;
use futures_util::TryStreamExt;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name of the audit anchor key inside a data directory.
pub const AUDIT_KEY_FILE_NAME: &str = "audit.key";

/// The schema version that creates `audit_anchor`.
pub(crate) const ANCHOR_SCHEMA_VERSION: i64 = 4;

/// Domain separation of the anchor MAC.
const ANCHOR_CONTEXT: &[u8] = b"dockmesh audit anchor v1\0";

/// The anchor key of an open store.
#[derive(Clone)]
pub(crate) enum AuditKey {
    /// No key configured: the anchor is neither moved nor checked.
    Off,
    /// The key, read from `path`.
    Loaded { key: Arc<[u8; 32]>, path: PathBuf },
    /// The database has an anchor but the key file is gone: the anchor cannot be checked.
    Missing { path: PathBuf },
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditKey::Off => f.write_str("Off"),
            AuditKey::Loaded { path, .. } => f.debug_struct("Loaded").field("path", path).finish(),
            AuditKey::Missing { path } => f.debug_struct("Missing").field("path", path).finish(),
        }
    }
}

impl AuditKey {
    pub(crate) fn key(&self) -> Option<&[u8; 32]> {
        match self {
            AuditKey::Loaded { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// HMAC-SHA256 over (`seq`, `hash`), hex.
pub(crate) fn anchor_mac(key: &[u8; 32], seq: u64, hash: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(ANCHOR_CONTEXT);
    mac.update(&seq.to_be_bytes());
    mac.update(hash.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn verify_mac(key: &[u8; 32], seq: u64, hash: &str, mac_hex: &str) -> bool {
    let Ok(tag) = hex::decode(mac_hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(ANCHOR_CONTEXT);
    mac.update(&seq.to_be_bytes());
    mac.update(hash.as_bytes());
    mac.verify_slice(&tag).is_ok()
}

fn key_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> SqlStoreError {
    let what = what.to_owned();
    let path = path.to_owned();
    move |source| SqlStoreError::Io {
        what,
        path,
        safe: "The database was opened and migrated; nothing else was changed.",
        source,
    }
}

/// The SHA-256 of audit keys that were published (committed to a public source tree), so
/// anyone can forge an anchor made with them: a store refuses to open with one.
pub const PUBLISHED_AUDIT_KEYS: &[&str] =
    &["579d984d91438695fa742effff099525d4707da750b322498628a5f691c49cdd"];

/// Whether `key` is one of [`PUBLISHED_AUDIT_KEYS`].
pub fn is_published_audit_key(key: &[u8]) -> bool {
    let hash = hex::encode(<Sha256 as sha2::Digest>::digest(key));
    PUBLISHED_AUDIT_KEYS.contains(&hash.as_str())
}

/// Read the key file, `None` when it does not exist. A key that was published is refused.
pub(crate) fn read_key(path: &Path) -> Result<Option<[u8; 32]>, SqlStoreError> {
    match std::fs::read(path) {
        Ok(bytes) if is_published_audit_key(&bytes) => Err(SqlStoreError::AuditKey {
            path: path.to_owned(),
            problem: "it is a key that was published, so anyone can forge the audit chain's                       anchor with it"
                .into(),
        }),
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
            .map(Some)
            .map_err(|_| SqlStoreError::AuditKey {
                path: path.to_owned(),
                problem: format!("it holds {} bytes, not 32", bytes.len()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(key_err("reading the audit key", path)(e)),
    }
}

/// Create a new random key file (mode 0600), or read the one another opener just created.
fn create_key(path: &Path) -> Result<[u8; 32], SqlStoreError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| {
        key_err("creating the audit key", path)(std::io::Error::other(e.to_string()))
    })?;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        crate::private::create_dir(dir)
            .map_err(key_err("creating the audit key's directory", dir))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(&key)
                .and_then(|()| f.sync_all())
                .map_err(key_err("writing the audit key", path))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_key(path)?.ok_or_else(|| key_err("reading the audit key", path)(e))
        }
        Err(e) => Err(key_err("creating the audit key", path)(e)),
    }
}

/// The anchor row, if any.
async fn read_anchor(pool: &Pool) -> Result<Option<(i64, String)>, StoreError> {
    on!(pool, p => {
        sqlx::query_as("SELECT seq, mac FROM audit_anchor WHERE id = 1")
            .fetch_optional(p)
            .await
            .map_err(se("read the audit anchor"))
    })
}

/// Set up the key of a store just opened (and migrated): load it, or create it and anchor the
/// head when the database has no anchor yet, or note it missing.
pub(crate) async fn setup_key(
    store: &mut SqlStore,
    path: Option<PathBuf>,
) -> Result<(), SqlStoreError> {
    let Some(path) = path else {
        store.audit = AuditKey::Off;
        return Ok(());
    };
    if let Some(key) = read_key(&path)? {
        store.audit = AuditKey::Loaded {
            key: Arc::new(key),
            path,
        };
        return Ok(());
    }
    let db_err = |e: StoreError| SqlStoreError::Database {
        what: "reading the audit anchor".into(),
        safe: "The database was opened and migrated; nothing else was changed.",
        source: sqlx::Error::Protocol(e.to_string()),
    };
    if read_anchor(&store.pool).await.map_err(db_err)?.is_some() {
        tracing::warn!(
            "the audit key {} is missing: the audit chain's anchor cannot be checked",
            path.display()
        );
        store.audit = AuditKey::Missing { path };
        return Ok(());
    }
    let key = create_key(&path)?;
    store.audit = AuditKey::Loaded {
        key: Arc::new(key),
        path,
    };
    anchor_head(store, false).await.map_err(db_err)
}

/// Anchor the current head with the store's key: only where there is no anchor yet, or (for a
/// restore, after the chain was verified) replacing any anchor.
pub(crate) async fn anchor_head(store: &SqlStore, replace: bool) -> Result<(), StoreError> {
    let Some(key) = store.audit.key() else {
        return Ok(());
    };
    on!(&store.pool, p => {
        let mut tx = p.begin().await.map_err(se("anchor the audit chain"))?;
        // Touch the head first so that no append runs between reading it and anchoring it.
        let (seq, hash): (i64, String) =
            sqlx::query_as("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *tx)
                .await
                .map_err(se("read the audit chain head"))?;
        let mac = anchor_mac(key, u64::try_from(seq).unwrap_or(0), &hash);
        let sql = if replace {
            "INSERT INTO audit_anchor (id, seq, mac) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac"
        } else {
            "INSERT INTO audit_anchor (id, seq, mac) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(seq)
            .bind(mac)
            .execute(&mut *tx)
            .await
            .map_err(se("anchor the audit chain"))?;
        tx.commit().await.map_err(se("anchor the audit chain"))?;
        Ok(())
    })
}

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

/// Walk the chain, compare its end with the recorded head and (when the store has a key, and
/// `check_anchor`) the head with its anchor, all in one snapshot.
pub(crate) async fn verify(
    store: &SqlStore,
    check_anchor: bool,
) -> Result<ChainVerification, StoreError> {
    let begin = begin_snapshot(&store.pool);
    let audit = if check_anchor {
        store.audit.clone()
    } else {
        AuditKey::Off
    };
    on!(&store.pool, p => {
        let mut tx = p.begin_with(begin).await.map_err(se("verify the audit log"))?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(se("read the audit chain head"))?;
        let anchor: Option<(i64, String)> = match audit {
            AuditKey::Off => None,
            _ => sqlx::query_as("SELECT seq, mac FROM audit_anchor WHERE id = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(se("read the audit anchor"))?,
        };
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
            result.first_broken = head_mismatch(head, &last)
                .or_else(|| anchor_mismatch(&audit, anchor, &last));
        }
        Ok(result)
    })
}

/// Compare the head of an intact chain (`last`, equal to the recorded head) with its anchor.
fn anchor_mismatch(
    audit: &AuditKey,
    anchor: Option<(i64, String)>,
    last: &(u64, String),
) -> Option<BrokenLink> {
    let (last_seq, last_hash) = (last.0, last.1.as_str());
    let key = match audit {
        AuditKey::Off => return None,
        AuditKey::Missing { path } => {
            return Some(BrokenLink {
                seq: last_seq,
                reason: format!(
                    "the chain's anchor cannot be checked: the audit key file {} is missing, so \
                     a chain cut at its tail with its head moved back would go unnoticed; put the \
                     key file back from a copy",
                    path.display()
                ),
            });
        }
        AuditKey::Loaded { key, .. } => key,
    };
    let Some((anchor_seq, mac)) = anchor else {
        return (last_seq > 0).then(|| BrokenLink {
            seq: last_seq,
            reason: "the chain has no anchor: it was removed, or the database was never opened \
                     with this audit key"
                .into(),
        });
    };
    let anchor_seq = u64::try_from(anchor_seq).unwrap_or(0);
    if anchor_seq > last_seq {
        Some(BrokenLink {
            seq: last_seq + 1,
            reason: format!(
                "the chain ends at entry {last_seq} but its anchor is at entry {anchor_seq}: the \
                 newest entries were removed and the head moved back"
            ),
        })
    } else if anchor_seq < last_seq {
        Some(BrokenLink {
            seq: anchor_seq + 1,
            reason: format!(
                "entries after {anchor_seq} are not anchored: they were appended without the \
                 audit key, or the anchor was put back from an earlier copy"
            ),
        })
    } else if !verify_mac(key, last_seq, last_hash, &mac) {
        Some(BrokenLink {
            seq: last_seq,
            reason: "the chain's anchor does not match its head: the head was rewritten, or the \
                     audit key file was replaced"
                .into(),
        })
    } else {
        None
    }
}
