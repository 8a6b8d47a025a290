//! The `server.backup` entries a data directory's database holds (shared by the backup,
//! preflight and apply tests; included by path, so it carries no other test support).

use dockmesh_core::audit::{AuditEntry, AuditQuery, ChainVerification, SERVER_BACKUP};
use dockmesh_core::ports::AuditLog;
use dockmesh_sqlx::{DbTarget, SqlStore};
use std::path::Path;

/// The `server.backup` entries of the SQLite database in `data_dir`, newest first, and its
/// chain's verification (with the audit anchor key beside the database, as the server opens it).
pub fn backup_entries(data_dir: &Path) -> (Vec<AuditEntry>, ChainVerification) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SqlStore::open(&DbTarget::sqlite_in(data_dir))
            .await
            .unwrap();
        let entries = store
            .query_audit(&AuditQuery {
                action: Some(SERVER_BACKUP.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let verified = store.verify_audit().await.unwrap();
        store.close().await;
        (entries, verified)
    })
}
