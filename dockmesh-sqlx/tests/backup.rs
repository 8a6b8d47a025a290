//! Backup bundles: online and consistent, verified before anything changes, restorable across
//! backends.

mod common;

use dockmesh_core::audit::{AuditEntry, AuditEvent, AuditQuery, MIGRATION_START, STACK_DEPLOY};
use dockmesh_core::drain::{DrainEntry, DrainPlan, DrainRecord};
use dockmesh_core::migration::{DEFAULT_RETENTION, MigrationEvent, MigrationSpec, StoredMigration};
use dockmesh_core::ports::{
    AgentStore, AuditLog, DeployEntry, DrainStore, LeaseStore, MAX_PAGE, MigrationLog,
    MigrationQuery, PageQuery, RolloutStore, StackStore, TokenStore,
};
use dockmesh_core::records::{DeployRecord, StackRecord, TokenKind, TokenRecord};
use dockmesh_core::release::{ReleaseOutcome, ReleaseRecord};
use dockmesh_core::rollout::{
    AgentRecord, ConnectionState, RolloutMode, RolloutRecord, UpgradeState,
};
use dockmesh_core::{HostId, MigrationId};
use dockmesh_sqlx::{
    BundleError, DbTarget, RestoreOptions, ServerLock, SqlStore, SqlStoreError, backup, restore,
};
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The binary's schema version (its latest migration).
fn latest() -> i64 {
    dockmesh_sqlx::schema::known_migrations(dockmesh_sqlx::Backend::Sqlite)
        .last()
        .unwrap()
        .version
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// Fill every table with a few rows.
async fn populate(store: &SqlStore, stacks: usize) {
    for i in 0..3 {
        store
            .upsert_agent(&AgentRecord {
                id: HostId::new(format!("host-{i}")),
                name: format!("Host {i}"),
                version: "1.2.3".into(),
                commit: (i % 2 == 0).then(|| "abc".into()),
                protocol_version: 1,
                arch: "x86_64".into(),
                docker_version: "28.2.2".into(),
                last_seen: Some(t(i)),
                connection: ConnectionState::Connected,
                upgrade: UpgradeState::InFlight {
                    since: t(3),
                    target_version: "1.3.0".into(),
                },
            })
            .await
            .unwrap();
    }
    store
        .put_token(&TokenRecord {
            hash: "ab".repeat(32),
            kind: TokenKind::Api,
            name: "ci".into(),
            created_at: t(1),
            expires_at: Some(t(100)),
            one_time: true,
            used_at: Some(t(2)),
            scope: dockmesh_core::records::Scope::Operate,
        })
        .await
        .unwrap();
    for i in 0..stacks {
        let name = format!("stack-{i:04}");
        store
            .put_stack(
                &StackRecord {
                    name: name.clone(),
                    compose: format!("services:\n  web:\n    image: app:{i}\n"),
                    env: (i % 2 == 0).then(|| format!("N={i}\n")),
                    host: Some(HostId::new(format!("host-{}", i % 3))),
                    updated_at: t(i as i64),
                },
                Some(&DeployRecord {
                    stack: name,
                    at: t(i as i64),
                    host: HostId::from("host-0"),
                    action: "deploy".into(),
                    actor: "alice".into(),
                }),
            )
            .await
            .unwrap();
    }
    if stacks > 0 {
        let stack = store.get_stack("stack-0000").await.unwrap().unwrap();
        for rev in 1..=2u64 {
            let release = ReleaseRecord {
                stack: stack.name.clone(),
                rev,
                at: t(rev as i64),
                host: HostId::from("host-0"),
                compose: stack.compose.clone(),
                env: (rev == 1).then(|| "TAG=1\n".into()),
                images: [("web".to_owned(), format!("sha256:{rev}"))].into(),
                outcome: if rev == 1 {
                    ReleaseOutcome::Deployed
                } else {
                    ReleaseOutcome::RolledBack
                },
                detail: (rev == 2).then(|| "web: unhealthy".into()),
                from_rev: (rev == 2).then_some(1),
                actor: "alice".into(),
            };
            store.put_release(&release, &stack, None).await.unwrap();
        }
    }
    let spec = MigrationSpec {
        id: MigrationId(uuid::Uuid::from_u128(7)),
        stack: "stack-0000".into(),
        source: HostId::from("host-0"),
        target: HostId::from("host-1"),
        requested_at: t(10),
        requested_by: "alice".into(),
        retention: DEFAULT_RETENTION,
    };
    store.create_migration(&spec, None).await.unwrap();
    let fence = match store
        .claim_lease(
            &dockmesh_core::ports::migration_lease(spec.id),
            "server-a",
            SignedDuration::from_hours(1),
        )
        .await
        .unwrap()
    {
        dockmesh_core::ports::LeaseClaim::Granted(l) => l.fence(),
        other => panic!("{other:?}"),
    };
    store
        .append_migration_event(
            spec.id,
            0,
            &MigrationEvent::SourceStopped { at: t(11) },
            &fence,
            None,
        )
        .await
        .unwrap();
    store
        .append_migration_event(
            spec.id,
            1,
            &MigrationEvent::VolumeVerified {
                at: t(12),
                volume: "v".into(),
                bytes: 1 << 40,
                digest: "cd".repeat(32),
                outside_links: vec![],
            },
            &fence,
            None,
        )
        .await
        .unwrap();
    store
        .put_drain(&DrainRecord {
            id: uuid::Uuid::from_u128(9),
            created_at: t(13),
            plan: DrainPlan {
                host: HostId::from("host-2"),
                entries: vec![DrainEntry {
                    stack: "stack-0001".into(),
                    target: Some(HostId::from("host-1")),
                    reason: "fits".into(),
                }],
            },
            migrations: vec![spec.id],
            state: dockmesh_core::drain::DrainState::Paused {
                at: t(14),
                reason: "stack-0001 failed".into(),
            },
            acknowledged: vec![],
        })
        .await
        .unwrap();
    let mut r = RolloutRecord::default();
    r.policy.mode = RolloutMode::Staged;
    r.state.waves = 3;
    store.put_rollout(&r).await.unwrap();
    store
        .claim_lease("rollout", "server-a", SignedDuration::from_hours(1))
        .await
        .unwrap();
    for i in 0..20 {
        store
            .append_audit(
                &AuditEvent::new(
                    t(20 + i),
                    "alice",
                    if i % 2 == 0 {
                        MIGRATION_START
                    } else {
                        STACK_DEPLOY
                    },
                    format!("stack-{i:04}"),
                )
                .with("i", i.to_string()),
            )
            .await
            .unwrap();
    }
}

/// Everything the `Store` API shows of a database.
#[derive(Debug, PartialEq)]
struct View {
    agents: Vec<AgentRecord>,
    tokens: Vec<TokenRecord>,
    stacks: Vec<StackRecord>,
    deploys: Vec<Vec<DeployEntry>>,
    releases: Vec<Vec<ReleaseRecord>>,
    migrations: Vec<StoredMigration>,
    drains: Vec<DrainRecord>,
    rollout: RolloutRecord,
    audit: Vec<AuditEntry>,
    lease: Option<(String, Timestamp)>,
}

async fn view(store: &SqlStore) -> View {
    let stacks = store.list_stacks().await.unwrap();
    let mut deploys = Vec::new();
    let mut releases = Vec::new();
    for s in &stacks {
        releases.push(store.list_releases(&s.name).await.unwrap());
        deploys.push(
            store
                .deploy_history(&s.name, &PageQuery::default())
                .await
                .unwrap(),
        );
    }
    View {
        agents: store.list_agents().await.unwrap(),
        tokens: store.list_tokens().await.unwrap(),
        stacks,
        deploys,
        releases,
        migrations: store
            .list_migrations(&MigrationQuery {
                limit: MAX_PAGE,
                ..Default::default()
            })
            .await
            .unwrap(),
        drains: store.list_drains().await.unwrap(),
        rollout: store.get_rollout().await.unwrap(),
        audit: store
            .query_audit(&AuditQuery {
                limit: u32::MAX,
                ..Default::default()
            })
            .await
            .unwrap(),
        lease: store.lease("rollout").await.unwrap(),
    }
}

fn write_data_dir(dir: &Path) {
    std::fs::create_dir_all(dir.join("stacks/web")).unwrap();
    std::fs::write(
        dir.join("stacks/web/compose.yaml"),
        "services:\n  web:\n    image: x\n",
    )
    .unwrap();
    std::fs::write(dir.join("stacks/web/.env"), "A=1\n").unwrap();
    std::fs::create_dir_all(dir.join("stacks/empty")).unwrap();
    std::fs::create_dir_all(dir.join("ca")).unwrap();
    std::fs::write(dir.join("ca/ca.pem"), "-----BEGIN CERTIFICATE-----\nxyz\n").unwrap();
    std::fs::write(dir.join("ca/ca.key"), "secret key").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("ca/ca.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
}

fn assert_data_dir_restored(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("stacks/web/compose.yaml")).unwrap(),
        "services:\n  web:\n    image: x\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stacks/web/.env")).unwrap(),
        "A=1\n"
    );
    assert!(
        dir.join("stacks/empty").is_dir(),
        "empty directories come back too"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca/ca.key")).unwrap(),
        "secret key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca/ca.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "the CA key keeps its permissions");
    }
}

/// Back up `from` (with a data directory), restore into `to`, and compare every row.
async fn round_trip(from: DbTarget, to: DbTarget) {
    let src_dir = tempfile::tempdir().unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(&from).await.unwrap();
    populate(&store, 12).await;
    let before_view = view(&store).await;
    let before_dump = store.dump_tables().await.unwrap();
    store.close().await;
    write_data_dir(src_dir.path());

    let bundle = src_dir.path().join("backup.tar.zst");
    let b = backup(&from, Some(src_dir.path()), &bundle).await.unwrap();
    assert_eq!(b.manifest.schema_version, latest());
    assert_eq!(b.manifest.tables["stacks"], 12);
    assert_eq!(b.manifest.directories, vec!["stacks", "ca"]);
    assert!(b.manifest.files.iter().any(|f| f.path == "ca/ca.key"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bundle).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the bundle holds the CA key: owner only");
    }
    // The manifest's hashes are the files' hashes.
    let (files, _) = unpack(&bundle);
    for f in &b.manifest.files {
        assert_eq!(
            hex::encode(Sha256::digest(&files[&f.path])),
            f.sha256,
            "{}",
            f.path
        );
    }

    let r = restore(
        &bundle,
        &to,
        Some(dst_dir.path()),
        RestoreOptions::default(),
    )
    .await
    .unwrap();
    assert!(!r.replaced_data);
    assert_eq!(r.directories, vec!["stacks", "ca"]);
    let store = SqlStore::open(&to).await.unwrap();
    assert_eq!(
        store.dump_tables().await.unwrap(),
        before_dump,
        "every row of every table"
    );
    assert_eq!(
        view(&store).await,
        before_view,
        "everything the Store shows"
    );
    assert_eq!(store.verify_audit().await.unwrap().first_broken, None);
    // The restored database keeps working: the chain and the ids continue.
    let e = store
        .append_audit(&AuditEvent::new(t(99), "bob", STACK_DEPLOY, "x"))
        .await
        .unwrap();
    assert_eq!(e.prev_hash, before_view.audit[0].hash);
    let rec = store.get_stack("stack-0001").await.unwrap().unwrap();
    store
        .put_stack(
            &rec,
            Some(&DeployRecord {
                stack: "stack-0001".into(),
                at: t(99),
                host: HostId::from("host-0"),
                action: "stop".into(),
                actor: "bob".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .deploy_history("stack-0001", &PageQuery::default())
            .await
            .unwrap()
            .len(),
        2
    );
    store.close().await;
    assert_data_dir_restored(dst_dir.path());
}

#[tokio::test]
async fn sqlite_to_sqlite() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    round_trip(common::sqlite_in(a.path()), common::sqlite_in(b.path())).await;
}

#[tokio::test]
async fn sqlite_to_postgres() {
    let Some(db) = common::PgDb::create("sqlite_to_postgres").await else {
        return;
    };
    let a = tempfile::tempdir().unwrap();
    round_trip(common::sqlite_in(a.path()), db.target()).await;
}

#[tokio::test]
async fn postgres_to_sqlite() {
    let Some(db) = common::PgDb::create("postgres_to_sqlite").await else {
        return;
    };
    let b = tempfile::tempdir().unwrap();
    round_trip(db.target(), common::sqlite_in(b.path())).await;
}

#[tokio::test]
async fn postgres_to_postgres() {
    let Some(a) = common::PgDb::create("postgres_to_postgres").await else {
        return;
    };
    let Some(b) = common::PgDb::create("postgres_to_postgres").await else {
        return;
    };
    round_trip(a.target(), b.target()).await;
}

/// Take a backup while writers keep going; the restored database is one consistent instant:
/// a prefix of the audit chain, and every stack an audit entry names is there.
async fn backup_while_writing(from: DbTarget, to: DbTarget) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqlStore::open(&from).await.unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, written) = (store.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("live-{i:06}");
                store
                    .put_stack(
                        &StackRecord {
                            name: name.clone(),
                            compose: "x".into(),
                            env: None,
                            host: None,
                            updated_at: t(i as i64),
                        },
                        None,
                    )
                    .await
                    .unwrap();
                store
                    .append_audit(&AuditEvent::new(t(i as i64), "w", STACK_DEPLOY, name))
                    .await
                    .unwrap();
                i += 1;
                written.store(i, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let at_start = written.load(Ordering::Relaxed);
    let bundle = dir.path().join("live.tar.zst");
    backup(&from, None, &bundle).await.unwrap();
    let mid = written.load(Ordering::Relaxed);
    while written.load(Ordering::Relaxed) < mid + 20 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let source = view(&store).await;
    store.close().await;

    restore(&bundle, &to, None, RestoreOptions::default())
        .await
        .unwrap();
    let restored_store = SqlStore::open(&to).await.unwrap();
    let restored = view(&restored_store).await;
    assert_eq!(
        restored_store.verify_audit().await.unwrap().first_broken,
        None
    );
    restored_store.close().await;

    let live: Vec<&AuditEntry> = restored
        .audit
        .iter()
        .filter(|e| e.event.target.starts_with("live-"))
        .collect();
    assert!(
        live.len() as u64 >= at_start,
        "the backup holds what was written before it started"
    );
    assert!(
        restored.audit.len() < source.audit.len(),
        "writes after the backup are not in it"
    );
    // A prefix of the source chain, entry for entry.
    let mut source_oldest_first = source.audit.clone();
    source_oldest_first.reverse();
    let mut restored_oldest_first = restored.audit.clone();
    restored_oldest_first.reverse();
    assert_eq!(
        &source_oldest_first[..restored_oldest_first.len()],
        &restored_oldest_first[..],
        "the restored chain is a prefix of the source chain"
    );
    // Every row restored equals its source row, and the stack of every audited write is there.
    let by_name: BTreeMap<&str, &StackRecord> =
        source.stacks.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &restored.stacks {
        assert_eq!(by_name[s.name.as_str()], s);
    }
    for e in &live {
        assert!(
            restored.stacks.iter().any(|s| s.name == e.event.target),
            "the stack {} written before its audit entry is in the same snapshot",
            e.event.target
        );
    }
    assert!(
        restored.stacks.len() <= live.len() + 1,
        "at most the one stack whose audit entry was not yet written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backup_while_writing() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    backup_while_writing(common::sqlite_in(a.path()), common::sqlite_in(b.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backup_while_writing() {
    let Some(a) = common::PgDb::create("postgres_backup_while_writing").await else {
        return;
    };
    let b = tempfile::tempdir().unwrap();
    backup_while_writing(a.target(), common::sqlite_in(b.path())).await;
}

/// Entries of a bundle: file contents by path, and directory paths.
fn unpack(bundle: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let f = std::fs::File::open(bundle).unwrap();
    let mut ar = tar::Archive::new(zstd::Decoder::new(f).unwrap());
    let mut files = BTreeMap::new();
    let mut dirs = Vec::new();
    let mut order = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        order.push(p.clone());
        if e.header().entry_type().is_dir() {
            dirs.push(p);
        } else {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            files.insert(p, v);
        }
    }
    assert_eq!(order[0], "manifest.json", "the manifest comes first");
    (files, dirs)
}

/// Write a bundle from entries, optionally recomputing the manifest's hashes (a forger who
/// knows the format), optionally with extra raw entries.
fn pack(out: &Path, files: &BTreeMap<String, Vec<u8>>, dirs: &[String], fix_manifest: bool) {
    let mut files = files.clone();
    if fix_manifest {
        let mut m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        for f in m["files"].as_array_mut().unwrap() {
            let data = &files[f["path"].as_str().unwrap()];
            f["size"] = data.len().into();
            f["sha256"] = hex::encode(Sha256::digest(data)).into();
        }
        files.insert("manifest.json".into(), serde_json::to_vec(&m).unwrap());
    }
    let enc = zstd::Encoder::new(std::fs::File::create(out).unwrap(), 3).unwrap();
    let mut tar = tar::Builder::new(enc);
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, path, data).unwrap();
    };
    add("manifest.json", &files["manifest.json"]);
    for (p, d) in &files {
        if p != "manifest.json" {
            add(p, d);
        }
    }
    for d in dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_mode(0o755);
        tar.append_data(&mut h, format!("{d}/"), std::io::empty())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// A SQLite database with data and a bundle of it.
async fn sample_bundle(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let target = common::sqlite_in(&src);
    let store = SqlStore::open(&target).await.unwrap();
    populate(&store, 5).await;
    store.close().await;
    write_data_dir(&src);
    let bundle = dir.join("b.tar.zst");
    backup(&target, Some(&src), &bundle).await.unwrap();
    bundle
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let e = e.unwrap();
            out.push(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

async fn expect_refused(bundle: &Path) -> SqlStoreError {
    let dst = tempfile::tempdir().unwrap();
    let target = common::sqlite_in(dst.path());
    let err = restore(bundle, &target, Some(dst.path()), RestoreOptions::default())
        .await
        .expect_err("a damaged bundle is refused");
    assert!(
        listing(dst.path()).is_empty(),
        "nothing was written: {:?}",
        listing(dst.path())
    );
    err
}

#[tokio::test]
async fn every_corrupted_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    let content = zstd::stream::decode_all(&bytes[..]).unwrap();
    let positions: Vec<usize> = (0..24).map(|k| k * (n - 1) / 23).collect();
    for pos in positions {
        let mut bad = bytes.clone();
        bad[pos] ^= 0x01;
        // A few bits of a zstd frame do not change what it decodes to (seen: one flip in about
        // 300, checked with `zstd -d`): such a bundle holds exactly the original data, and
        // nothing is damaged to refuse. Every other flip must be refused.
        if zstd::stream::decode_all(&bad[..]).ok().as_ref() == Some(&content) {
            continue;
        }
        let path = dir.path().join(format!("bad-{pos}.tar.zst"));
        std::fs::write(&path, &bad).unwrap();
        let err = expect_refused(&path).await;
        assert!(
            matches!(err, SqlStoreError::Bundle(_)),
            "byte {pos} of {n}: refused as a damaged bundle, got {err}"
        );
    }
}

#[tokio::test]
async fn a_truncated_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let bytes = std::fs::read(&bundle).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join(format!("cut-{cut}.tar.zst"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = expect_refused(&path).await;
        let msg = err.to_string();
        assert!(
            matches!(err, SqlStoreError::Bundle(BundleError::Unreadable { .. })),
            "{msg}"
        );
        assert!(msg.contains("truncated"), "{msg}");
    }
}

#[tokio::test]
async fn a_tampered_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let (mut files, dirs) = unpack(&bundle);
    // Change one byte of one table export, keep the manifest: the file is named.
    let data = files.get_mut("database/stacks.jsonl").unwrap();
    let i = data.iter().position(|b| *b == b'a').unwrap();
    data[i] = b'b';
    let path = dir.path().join("tampered.tar.zst");
    pack(&path, &files, &dirs, false);
    let err = expect_refused(&path).await;
    let msg = err.to_string();
    assert!(
        matches!(err, SqlStoreError::Bundle(BundleError::Mismatch { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("database/stacks.jsonl"),
        "names the file: {msg}"
    );

    // A file that is not in the manifest, and one that is missing.
    let (mut files, dirs) = unpack(&bundle);
    files.insert("stacks/extra.yaml".into(), b"x".to_vec());
    pack(&path, &files, &dirs, false);
    let msg = expect_refused(&path).await.to_string();
    assert!(msg.contains("stacks/extra.yaml"), "{msg}");
    let (mut files, dirs) = unpack(&bundle);
    files.remove("ca/ca.key");
    pack(&path, &files, &dirs, false);
    let msg = expect_refused(&path).await.to_string();
    assert!(msg.contains("ca/ca.key"), "{msg}");

    // A forger who rewrites the manifest too cannot break the audit chain unnoticed.
    let (mut files, dirs) = unpack(&bundle);
    let log = String::from_utf8(files["database/audit_log.jsonl"].clone()).unwrap();
    let forged = log.replacen("\"alice\"", "\"mallory\"", 1);
    assert_ne!(forged, log);
    files.insert("database/audit_log.jsonl".into(), forged.into_bytes());
    pack(&path, &files, &dirs, true);
    let msg = expect_refused(&path).await.to_string();
    assert!(msg.contains("audit chain"), "{msg}");
    // Nor drop the newest audit entry.
    let (mut files, dirs) = unpack(&bundle);
    let log = String::from_utf8(files["database/audit_log.jsonl"].clone()).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    lines.pop();
    files.insert(
        "database/audit_log.jsonl".into(),
        format!("{}\n", lines.join("\n")).into_bytes(),
    );
    let mut m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    m["tables"]["audit_log"] = (lines.len() as u64).into();
    files.insert("manifest.json".into(), serde_json::to_vec(&m).unwrap());
    pack(&path, &files, &dirs, true);
    let msg = expect_refused(&path).await.to_string();
    assert!(msg.contains("audit_head"), "{msg}");
}

#[tokio::test]
async fn hostile_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let (files, dirs) = unpack(&bundle);
    for evil in [
        "../escape",
        "stacks/../../escape",
        "/etc/escape",
        "other/file",
    ] {
        let path = dir.path().join("evil.tar.zst");
        pack(&path, &files, &dirs, false);
        // Append an entry with a raw name (the tar crate refuses to write such names itself).
        let (raw, _) = {
            let f = std::fs::File::open(&path).unwrap();
            let mut d = zstd::Decoder::new(f).unwrap();
            let mut v = Vec::new();
            d.read_to_end(&mut v).unwrap();
            (v, ())
        };
        let end = raw.len() - 1024; // the two zero blocks that end the archive
        let mut out = raw[..end].to_vec();
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..evil.len()].copy_from_slice(evil.as_bytes());
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.push(b'x');
        out.extend(std::iter::repeat_n(0u8, 511 + 1024));
        std::fs::write(&path, zstd::encode_all(&out[..], 3).unwrap()).unwrap();
        let msg = expect_refused(&path).await.to_string();
        assert!(
            msg.contains("never contains") || msg.contains("climbs out"),
            "{evil}: {msg}"
        );
        assert!(!dir.path().join("escape").exists());
    }
}

#[tokio::test]
async fn a_newer_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let (mut files, dirs) = unpack(&bundle);
    let mut m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    m["schema_version"] = 99.into();
    m["dockmesh_version"] = "9.0.0".into();
    files.insert("manifest.json".into(), serde_json::to_vec(&m).unwrap());
    let path = dir.path().join("newer.tar.zst");
    pack(&path, &files, &dirs, true);
    let err = expect_refused(&path).await;
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            SqlStoreError::Bundle(BundleError::Newer {
                bundle_version: 99,
                ..
            })
        ),
        "{msg}"
    );
    assert!(msg.contains("99") && msg.contains("9.0.0"), "{msg}");
}

#[tokio::test]
async fn data_is_replaced_only_when_forced_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let dst = dir.path().join("dst");
    let target = common::sqlite_in(&dst);
    let store = SqlStore::open(&target).await.unwrap();
    store
        .put_stack(
            &StackRecord {
                name: "precious".into(),
                compose: "x".into(),
                env: None,
                host: None,
                updated_at: t(0),
            },
            None,
        )
        .await
        .unwrap();
    store.close().await;
    std::fs::create_dir_all(dst.join("stacks/precious")).unwrap();
    let before = listing(&dst);
    let db_bytes = std::fs::read(dst.join("dockmesh.db")).unwrap();

    // Dry run: verifies and reports, changes nothing.
    let r = restore(
        &bundle,
        &target,
        Some(&dst),
        RestoreOptions {
            dry_run: true,
            force: true,
        },
    )
    .await
    .unwrap();
    assert!(r.dry_run && r.replaced_data);
    assert!(
        r.lines().iter().any(|l| l.contains("nothing was changed")),
        "{:?}",
        r.lines()
    );
    assert_eq!(listing(&dst), before);
    assert_eq!(std::fs::read(dst.join("dockmesh.db")).unwrap(), db_bytes);

    let err = restore(&bundle, &target, Some(&dst), RestoreOptions::default())
        .await
        .expect_err("data is not replaced without --force");
    let msg = err.to_string();
    assert!(
        msg.contains("--force") && msg.contains("stacks: 1"),
        "{msg}"
    );
    assert_eq!(listing(&dst), before, "nothing changed");
    assert_eq!(std::fs::read(dst.join("dockmesh.db")).unwrap(), db_bytes);

    let r = restore(
        &bundle,
        &target,
        Some(&dst),
        RestoreOptions {
            dry_run: false,
            force: true,
        },
    )
    .await
    .unwrap();
    assert!(r.replaced_data);
    let kept: Vec<_> = std::fs::read_dir(&dst)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dockmesh.db.pre-restore-"))
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "the replaced database is kept beside it: {kept:?}"
    );
    assert!(
        r.kept.iter().any(|k| k.contains(&kept[0])),
        "and the report says where: {:?}",
        r.kept
    );
    let old = SqlStore::open(&common::sqlite_in_file(&dst.join(&kept[0])))
        .await
        .unwrap();
    assert!(
        old.get_stack("precious").await.unwrap().is_some(),
        "the kept copy has the old data"
    );
    old.close().await;
    let new = SqlStore::open(&target).await.unwrap();
    assert!(new.get_stack("precious").await.unwrap().is_none());
    assert_eq!(new.list_stacks().await.unwrap().len(), 5);
    new.close().await;
    assert!(
        std::fs::read_dir(&dst).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("stacks.pre-restore-")),
        "the replaced stacks/ is kept"
    );
    assert_data_dir_restored(&dst);
}

#[tokio::test]
async fn postgres_data_is_kept_in_a_schema() {
    let Some(db) = common::PgDb::create("postgres_data_is_kept_in_a_schema").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let target = db.target();
    let store = SqlStore::open(&target).await.unwrap();
    populate(&store, 2).await;
    store.close().await;
    let err = restore(&bundle, &target, None, RestoreOptions::default())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("--force"), "{err}");
    let r = restore(
        &bundle,
        &target,
        None,
        RestoreOptions {
            dry_run: false,
            force: true,
        },
    )
    .await
    .unwrap();
    let kept = r
        .kept
        .iter()
        .find(|k| k.contains("dockmesh_pre_restore_"))
        .expect("reported");
    let schema = kept
        .split_whitespace()
        .find(|w| w.starts_with("dockmesh_pre_restore_"))
        .unwrap()
        .to_owned();
    let store = SqlStore::open(&target).await.unwrap();
    assert_eq!(store.list_stacks().await.unwrap().len(), 5);
    store.close().await;
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {schema}.stacks"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(n, 2, "the replaced tables are kept in {schema}");
    c.close().await.unwrap();
}

#[tokio::test]
async fn an_older_bundle_is_migrated_forward() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("old.db");
    // A database as a dockmesh with schema version 2 left it.
    let migrator = sqlx::migrate::Migrator::new(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/migrations/sqlite"
    )))
    .await
    .unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&src)
        .create_if_missing(true);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    migrator.run_to(2, &mut c).await.unwrap();
    sqlx::query("INSERT INTO stacks (name, compose, env, host, updated_at) VALUES ('old', 'x', NULL, NULL, '2027-01-15T08:00:00.000000Z')")
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let from = common::sqlite_in_file(&src);
    let bundle = dir.path().join("old.tar.zst");
    let b = backup(&from, None, &bundle).await.unwrap();
    assert_eq!(b.manifest.schema_version, 2);
    assert!(!b.manifest.tables.contains_key("audit_log"));

    let dst = tempfile::tempdir().unwrap();
    let target = common::sqlite_in(dst.path());
    let r = restore(&bundle, &target, None, RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(r.migrated, Some((2, latest())));
    let store = SqlStore::open(&target).await.unwrap();
    assert_eq!(
        store.get_stack("old").await.unwrap().unwrap().updated_at,
        t(0)
    );
    let audit = store.query_audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].event.action, "server.schema_migrate");
    store.close().await;
}

/// A database with one stack, at `dst`.
async fn database_with_data(dst: &Path) -> DbTarget {
    let target = common::sqlite_in(dst);
    let store = SqlStore::open(&target).await.unwrap();
    store
        .put_stack(
            &StackRecord {
                name: "precious".into(),
                compose: "x".into(),
                env: None,
                host: None,
                updated_at: t(0),
            },
            None,
        )
        .await
        .unwrap();
    store.close().await;
    target
}

#[tokio::test]
async fn restore_is_refused_while_a_server_holds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let dst = dir.path().join("dst");
    let target = database_with_data(&dst).await;
    let forced = RestoreOptions {
        dry_run: false,
        force: true,
    };

    let lock = ServerLock::acquire(&target, "dockmesh server test-7")
        .await
        .unwrap();
    let before = listing(&dst);
    let db_bytes = std::fs::read(dst.join("dockmesh.db")).unwrap();
    let err = restore(&bundle, &target, Some(&dst), forced)
        .await
        .expect_err("a held database is not restored");
    assert!(matches!(err, SqlStoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("dockmesh server test-7"),
        "names the holder: {msg}"
    );
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(err.hint().unwrap().contains("stop the dockmesh server"));
    assert_eq!(listing(&dst), before, "nothing was added or removed");
    assert!(
        std::fs::read(dst.join("dockmesh.db")).unwrap() == db_bytes,
        "the database is byte for byte the same"
    );
    // A second holder is refused too.
    assert!(matches!(
        ServerLock::acquire(&target, "another server").await,
        Err(SqlStoreError::Locked { .. })
    ));

    lock.release().await;
    let r = restore(&bundle, &target, Some(&dst), forced).await.unwrap();
    assert!(r.replaced_data);
    let store = SqlStore::open(&target).await.unwrap();
    assert!(store.get_stack("precious").await.unwrap().is_none());
    assert!(store.get_stack("stack-0000").await.unwrap().is_some());
    store.close().await;
    // The restore released the lock.
    ServerLock::acquire(&target, "server")
        .await
        .unwrap()
        .release()
        .await;
}

#[tokio::test]
async fn postgres_restore_is_refused_while_a_server_holds_the_database() {
    let Some(db) =
        common::PgDb::create("postgres_restore_is_refused_while_a_server_holds_the_database").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let target = db.target();
    let store = SqlStore::open(&target).await.unwrap();
    populate(&store, 2).await;
    let before = store.dump_tables().await.unwrap();
    store.close().await;
    let forced = RestoreOptions {
        dry_run: false,
        force: true,
    };

    let lock = ServerLock::acquire(&target, "dockmesh server pg-1")
        .await
        .unwrap();
    let err = restore(&bundle, &target, None, forced)
        .await
        .expect_err("a held database is not restored");
    let msg = err.to_string();
    assert!(matches!(err, SqlStoreError::Locked { .. }), "{err:?}");
    assert!(
        msg.contains("dockmesh server pg-1"),
        "names the holder: {msg}"
    );
    assert!(msg.contains("backend pid"), "{msg}");
    assert!(
        !msg.contains("dockmesh_test@"),
        "no password or user in the message: {msg}"
    );
    let store = SqlStore::open(&target).await.unwrap();
    assert_eq!(
        store.dump_tables().await.unwrap(),
        before,
        "nothing changed"
    );
    store.close().await;

    lock.release().await;
    restore(&bundle, &target, None, forced).await.unwrap();
    let store = SqlStore::open(&target).await.unwrap();
    assert!(store.get_stack("stack-0004").await.unwrap().is_some());
    store.close().await;
}

/// While a restore replaces a SQLite database, a database file exists at its path at every
/// moment (another thread looks for it in a tight loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restore_never_leaves_the_path_empty() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sample_bundle(dir.path()).await;
    let dst = dir.path().join("dst");
    let target = database_with_data(&dst).await;
    let path = dst.join("dockmesh.db");
    let stop = Arc::new(AtomicBool::new(false));
    let missing = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, missing, path) = (stop.clone(), missing.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if std::fs::symlink_metadata(&path).is_err() {
                    missing.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for _ in 0..15 {
        restore(
            &bundle,
            &target,
            None,
            RestoreOptions {
                dry_run: false,
                force: true,
            },
        )
        .await
        .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(
        missing.load(Ordering::Relaxed),
        0,
        "the database path was empty during a restore"
    );
    let kept = std::fs::read_dir(&dst)
        .unwrap()
        .filter(|e| {
            let n = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            n.starts_with("dockmesh.db.pre-restore-")
                && !n.ends_with("-wal")
                && !n.ends_with("-shm")
        })
        .count();
    assert!(kept >= 1, "the replaced database is kept");
}

/// `backup` copies, hashes, archives and compresses off the async runtime: on a one-thread
/// runtime, a ticking task keeps running while a large data directory is backed up.
#[test]
fn backup_leaves_the_runtime_free() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let target = common::sqlite_in(&src);
        let store = SqlStore::open(&target).await.unwrap();
        populate(&store, 3).await;
        store.close().await;
        // 24 MiB that do not compress: copying, hashing and zstd take a while.
        std::fs::create_dir_all(src.join("stacks/big")).unwrap();
        let mut data = vec![0u8; 24 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        std::fs::write(src.join("stacks/big/data.bin"), &data).unwrap();

        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let done = done.clone();
            tokio::spawn(async move {
                let mut worst = std::time::Duration::ZERO;
                let mut last = std::time::Instant::now();
                while !done.load(Ordering::Relaxed) {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    let now = std::time::Instant::now();
                    worst = worst.max(now - last);
                    last = now;
                }
                worst
            })
        };
        let started = std::time::Instant::now();
        let b = backup(&target, Some(&src), &dir.path().join("b.tar.zst"))
            .await
            .unwrap();
        let took = started.elapsed();
        done.store(true, Ordering::Relaxed);
        let worst = ticker.await.unwrap();
        assert!(
            b.manifest
                .files
                .iter()
                .any(|f| f.path == "stacks/big/data.bin")
        );
        assert!(
            worst < std::time::Duration::from_millis(250) || worst * 3 < took,
            "the runtime was blocked for {worst:?} of a {took:?} backup"
        );
    });
}
