//! Store benchmarks on SQLite and (when `DOCKMESH_TEST_POSTGRES_URL` is set) PostgreSQL.
//!
//! ```sh
//! eval "$(scripts/start-postgres.sh | tail -n 1)"   # optional: adds the PostgreSQL rows
//! cargo bench -p dockmesh-sqlx --bench store
//! ```
//!
//! - `open_up_to_date`: open a database whose schema is current (guard, no migration).
//! - `postgres_connect_baseline`: open and close one PostgreSQL connection, the floor under the
//!   PostgreSQL open.
//! - `apply_all_migrations`: open an empty database (guard, every migration, audit event).
//! - `append_audit_100k`: append 100,000 audit entries in transactions of 1,000.
//! - `append_audit_single`: append 1,000 audit entries, one transaction each (per-entry cost).
//! - `verify_audit_100k`: walk a chain of 100,000 entries.
//! - `backup_100k_audit_1k_stacks` / `restore_100k_audit_1k_stacks`: a database with 100,000
//!   audit entries and 1,000 stacks (each with a deploy record).

use dockmesh_core::HostId;
use dockmesh_core::audit::{AuditEvent, MIGRATION_START};
use dockmesh_core::ports::{AuditLog, StackStore};
use dockmesh_core::records::{DeployRecord, StackRecord};
use dockmesh_sqlx::{DbTarget, RestoreOptions, SqlStore};
use jiff::Timestamp;
use sqlx::Connection;
use std::path::PathBuf;
use std::sync::OnceLock;

fn main() {
    divan::main();
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn postgres_admin() -> Option<String> {
    std::env::var("DOCKMESH_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

fn backends() -> Vec<&'static str> {
    if postgres_admin().is_some() {
        vec!["sqlite", "postgres"]
    } else {
        eprintln!("PostgreSQL benchmarks skipped: DOCKMESH_TEST_POSTGRES_URL is not set");
        vec!["sqlite"]
    }
}

/// A fresh, empty database; removed when dropped.
struct Fresh {
    target: DbTarget,
    _dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
}

impl Fresh {
    fn new(backend: &str) -> Fresh {
        match backend {
            "sqlite" => {
                let dir = tempfile::tempdir().unwrap();
                Fresh {
                    target: DbTarget::sqlite_in(dir.path()),
                    _dir: Some(dir),
                    pg_name: None,
                }
            }
            _ => {
                let admin = postgres_admin().expect("postgres configured");
                let name = format!("dockmesh_bench_{}", uuid::Uuid::now_v7().simple());
                rt().block_on(async {
                    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&mut c)
                        .await
                        .unwrap();
                    c.close().await.unwrap();
                });
                let cut = admin.rfind('/').unwrap();
                let url = format!("{}/{}", &admin[..cut], name);
                Fresh {
                    target: DbTarget::parse(&url).unwrap(),
                    _dir: None,
                    pg_name: Some(name),
                }
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let (Some(name), Some(admin)) = (&self.pg_name, postgres_admin()) {
            let name = name.clone();
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(async move {
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut c)
                            .await;
                        }
                    })
            })
            .join();
        }
    }
}

fn events(n: usize, offset: usize) -> Vec<AuditEvent> {
    (0..n)
        .map(|i| {
            let i = i + offset;
            AuditEvent::new(
                Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
                "bench",
                MIGRATION_START,
                format!("stack-{}", i % 1000),
            )
            .with("i", i.to_string())
        })
        .collect()
}

async fn fill_audit(store: &SqlStore, n: usize) {
    for chunk in 0..n / 1000 {
        store
            .append_audit_batch(&events(1000, chunk * 1000))
            .await
            .unwrap();
    }
}

async fn fill_stacks(store: &SqlStore, n: usize) {
    for i in 0..n {
        let name = format!("stack-{i:04}");
        let deploy = DeployRecord {
            stack: name.clone(),
            at: Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
            host: HostId::from("host-0"),
            action: "deploy".into(),
            actor: "bench".into(),
        };
        store
            .put_stack(
                &StackRecord {
                    name: name.clone(),
                    compose: format!(
                        "services:\n  web:\n    image: app:{i}\n    ports: [\"80{i:02}:80\"]\n"
                    ),
                    env: Some(format!("N={i}\n")),
                    host: Some(HostId::new(format!("host-{}", i % 10))),
                    updated_at: Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
                },
                Some(&deploy),
            )
            .await
            .unwrap();
    }
}

#[divan::bench(args = backends(), sample_count = 20)]
fn open_up_to_date(bencher: divan::Bencher, backend: &str) {
    let db = Fresh::new(backend);
    rt().block_on(async { SqlStore::open(&db.target).await.unwrap().close().await });
    bencher.bench_local(|| {
        rt().block_on(async {
            let store = SqlStore::open(&db.target).await.unwrap();
            divan::black_box(&store);
            store
        })
    });
}

/// The floor under `open_up_to_date` on PostgreSQL: establishing one connection (TCP, TLS,
/// SCRAM authentication, a server backend) and closing it.
#[divan::bench(sample_count = 20)]
fn postgres_connect_baseline(bencher: divan::Bencher) {
    let Some(admin) = postgres_admin() else {
        eprintln!("postgres_connect_baseline skipped: DOCKMESH_TEST_POSTGRES_URL is not set");
        return;
    };
    bencher.bench_local(|| {
        rt().block_on(async {
            let c = sqlx::PgConnection::connect(&admin).await.unwrap();
            c.close().await.unwrap();
        })
    });
}

#[divan::bench(args = backends(), sample_count = 10)]
fn apply_all_migrations(bencher: divan::Bencher, backend: &str) {
    bencher
        .with_inputs(|| Fresh::new(backend))
        .bench_local_refs(|db| {
            rt().block_on(async {
                let (store, report) = SqlStore::open_reporting(&db.target).await.unwrap();
                assert_eq!(report.applied.len(), 3);
                store.close().await;
            })
        });
}

#[divan::bench(args = backends(), sample_count = 3)]
fn append_audit_100k(bencher: divan::Bencher, backend: &str) {
    bencher
        .with_inputs(|| {
            let db = Fresh::new(backend);
            let store = rt().block_on(SqlStore::open(&db.target)).unwrap();
            (db, store)
        })
        .bench_local_refs(|(_, store)| rt().block_on(fill_audit(store, 100_000)));
}

#[divan::bench(args = backends(), sample_count = 3)]
fn append_audit_single_1k(bencher: divan::Bencher, backend: &str) {
    bencher
        .with_inputs(|| {
            let db = Fresh::new(backend);
            let store = rt().block_on(SqlStore::open(&db.target)).unwrap();
            (db, store)
        })
        .bench_local_refs(|(_, store)| {
            rt().block_on(async {
                for e in events(1000, 0) {
                    store.append_audit(&e).await.unwrap();
                }
            })
        });
}

#[divan::bench(args = backends(), sample_count = 5)]
fn verify_audit_100k(bencher: divan::Bencher, backend: &str) {
    let db = Fresh::new(backend);
    let store = rt().block_on(SqlStore::open(&db.target)).unwrap();
    rt().block_on(fill_audit(&store, 100_000));
    bencher.bench_local(|| {
        let v = rt().block_on(store.verify_audit()).unwrap();
        assert_eq!(v.first_broken, None);
        assert_eq!(v.entries_checked, 100_001);
    });
}

/// A database with 100,000 audit entries and 1,000 stacks, and a bundle of it.
struct Big {
    db: Fresh,
    bundle: PathBuf,
    _dir: tempfile::TempDir,
}

fn big(backend: &str) -> Big {
    let db = Fresh::new(backend);
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let store = SqlStore::open(&db.target).await.unwrap();
        fill_audit(&store, 100_000).await;
        fill_stacks(&store, 1000).await;
        store.close().await;
    });
    let bundle = dir.path().join("big.tar.zst");
    rt().block_on(dockmesh_sqlx::backup(&db.target, None, &bundle))
        .unwrap();
    Big {
        db,
        bundle,
        _dir: dir,
    }
}

#[divan::bench(args = backends(), sample_count = 3)]
fn backup_100k_audit_1k_stacks(bencher: divan::Bencher, backend: &str) {
    let b = big(backend);
    let out = b._dir.path().join("again.tar.zst");
    bencher.bench_local(|| {
        let r = rt()
            .block_on(dockmesh_sqlx::backup(&b.db.target, None, &out))
            .unwrap();
        assert_eq!(r.manifest.tables["audit_log"], 100_001);
    });
    eprintln!(
        "bundle of 100,000 audit entries and 1,000 stacks ({backend}): {} bytes",
        std::fs::metadata(&b.bundle).unwrap().len()
    );
}

#[divan::bench(args = backends(), sample_count = 3)]
fn restore_100k_audit_1k_stacks(bencher: divan::Bencher, backend: &str) {
    let b = big(backend);
    bencher
        .with_inputs(|| Fresh::new(backend))
        .bench_local_refs(|fresh| {
            let r = rt()
                .block_on(dockmesh_sqlx::restore(
                    &b.bundle,
                    &fresh.target,
                    None,
                    RestoreOptions::default(),
                ))
                .unwrap();
            assert_eq!(r.tables["stacks"], 1000);
        });
}
