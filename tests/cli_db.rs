//! `dockmesh db status|migrate`, `dockmesh backup` and `dockmesh restore`, run as a user runs
//! them.

#[path = "support/backups.rs"]
mod backups;
use backups::backup_entries;
use dockmesh_core::ports::prelude::*;
use dockmesh_core::records::StackRecord;
use dockmesh_sqlx::{DbTarget, SqlStore};
use std::path::Path;
use std::process::{Command, Output};

fn dockmesh(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(args)
        .current_dir(cwd)
        .env_remove("DOCKMESH_DATA_DIR")
        .env_remove("DOCKMESH_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The binary's schema version (its latest migration).
fn latest() -> i64 {
    dockmesh_sqlx::schema::known_migrations(dockmesh_sqlx::Backend::Sqlite)
        .last()
        .unwrap()
        .version
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Put a stack into the database of a data directory (as a running server would).
fn add_stack(data_dir: &Path, name: &str) {
    rt().block_on(async {
        let store = SqlStore::open(&DbTarget::sqlite_in(data_dir))
            .await
            .unwrap();
        store
            .put_stack(
                &StackRecord {
                    name: name.into(),
                    compose: "services: {}\n".into(),
                    env: None,
                    host: None,
                    updated_at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                },
                None,
            )
            .await
            .unwrap();
        store.close().await;
    });
}

fn stacks(data_dir: &Path) -> Vec<String> {
    rt().block_on(async {
        let store = SqlStore::open(&DbTarget::sqlite_in(data_dir))
            .await
            .unwrap();
        let v = store
            .list_stacks()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        store.close().await;
        v
    })
}

#[test]
fn status_then_migrate_then_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let o = dockmesh(&["db", "status", "--data-dir", "data"], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("database schema version: 0"), "{out}");
    let v = latest();
    assert!(
        out.contains(&format!("binary schema version: {v}")),
        "{out}"
    );
    assert!(out.contains(&format!("status: pending: 0 -> {v}")), "{out}");
    assert!(
        out.contains(&format!("irreversible migrations between 0 and {v}")),
        "{out}"
    );
    assert!(
        out.contains("1 core:"),
        "lists the irreversible migration: {out}"
    );
    assert!(!dir.path().join("data").exists(), "status creates nothing");

    let o = dockmesh(&["db", "migrate", "--data-dir", "data"], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        err.contains(&format!(
            "Database migration from 0 -> {} complete",
            latest()
        )),
        "{err}"
    );
    assert!(out.contains("status: up to date"), "{out}");

    let o = dockmesh(&["db", "migrate", "--data-dir", "data"], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success());
    assert!(
        !err.contains("Database migration"),
        "nothing to migrate: {err}"
    );
    assert!(out.contains("nothing to apply"), "{out}");

    let o = dockmesh(&["db", "status", "--json"], dir.path());
    assert!(o.status.success());
    let o = Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(["db", "status", "--json"])
        .current_dir(dir.path())
        .env("DOCKMESH_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["status"]["status"], "up_to_date",
        "$DOCKMESH_DATA_DIR is honoured"
    );
    assert_eq!(v["database_version"], latest());
}

#[test]
fn a_newer_database_is_refused_by_status_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert!(
        dockmesh(&["db", "migrate", "--data-dir", "data"], dir.path())
            .status
            .success()
    );
    rt().block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", data.join("dockmesh.db").display()))
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({}, 'later', TRUE, X'00', 1)",
            latest() + 1
        )))
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    });
    let before = std::fs::read(data.join("dockmesh.db")).unwrap();
    let o = dockmesh(&["db", "status", "--data-dir", "data"], dir.path());
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("status: refused"), "{out}");
    let o = dockmesh(&["db", "migrate", "--data-dir", "data"], dir.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("version {}", latest() + 1)) && err.contains(&latest().to_string()),
        "names both versions: {err}"
    );
    assert!(err.contains("restore"), "says what to do: {err}");
    assert_eq!(
        std::fs::read(data.join("dockmesh.db")).unwrap(),
        before,
        "not modified"
    );
    // The server refuses to start on it, says why, and leaves it as it was.
    let o = dockmesh(
        &[
            "server",
            "--data-dir",
            "data",
            "--listen",
            "127.0.0.1:0",
            "--no-local-host",
            "--host",
            "x=unix:///nonexistent.sock",
        ],
        dir.path(),
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("starting"), "{err}");
    assert!(err.contains(&format!("version {}", latest() + 1)), "{err}");
    assert!(!err.contains("HTTP listening"), "{err}");
    assert_eq!(
        std::fs::read(data.join("dockmesh.db")).unwrap(),
        before,
        "not modified by the server either"
    );
}

#[test]
fn backup_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    add_stack(&src, "shop");
    std::fs::create_dir_all(src.join("stacks/shop")).unwrap();
    std::fs::write(src.join("stacks/shop/compose.yaml"), "services: {}\n").unwrap();
    std::fs::create_dir_all(src.join("ca")).unwrap();
    std::fs::write(src.join("ca/ca.pem"), "cert").unwrap();

    let o = dockmesh(
        &["backup", "--out", "b.tar.zst", "--data-dir", "src"],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("wrote b.tar.zst"), "{out}");
    assert!(out.contains("stacks: 1"), "{out}");
    assert!(out.contains("data directory: stacks, ca"), "{out}");

    // Dry run into a new data directory: reports, creates nothing.
    let o = dockmesh(
        &[
            "restore",
            "--from",
            "b.tar.zst",
            "--data-dir",
            "dst",
            "--dry-run",
        ],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("would restore") && out.contains("nothing was changed"),
        "{out}"
    );
    assert!(!dir.path().join("dst").exists());

    let o = dockmesh(
        &["restore", "--from", "b.tar.zst", "--data-dir", "dst"],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("restored into"), "{out}");
    assert_eq!(stacks(&dir.path().join("dst")), vec!["shop"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("dst/ca/ca.pem")).unwrap(),
        "cert"
    );

    // The restored directory now holds data: a second restore needs --force.
    add_stack(&dir.path().join("dst"), "other");
    let o = dockmesh(
        &["restore", "--from", "b.tar.zst", "--data-dir", "dst"],
        dir.path(),
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(
        stacks(&dir.path().join("dst")),
        vec!["other", "shop"],
        "nothing changed"
    );
    let o = dockmesh(
        &[
            "restore",
            "--from",
            "b.tar.zst",
            "--data-dir",
            "dst",
            "--force",
        ],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("kept: the replaced database as"), "{out}");
    assert_eq!(stacks(&dir.path().join("dst")), vec!["shop"]);

    // One flipped byte: refused, nothing changed.
    let mut bytes = std::fs::read(dir.path().join("b.tar.zst")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(dir.path().join("bad.tar.zst"), &bytes).unwrap();
    let o = dockmesh(
        &["restore", "--from", "bad.tar.zst", "--data-dir", "fresh"],
        dir.path(),
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.tar.zst"), "names the bundle: {err}");
    assert!(
        !dir.path().join("fresh/dockmesh.db").exists(),
        "nothing restored"
    );
}

#[test]
fn a_backup_is_recorded_in_the_audit_log_and_the_chain_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    add_stack(&src, "shop");
    let (before, _) = backup_entries(&src);
    assert!(before.is_empty());

    let o = dockmesh(
        &["backup", "--out", "out/b.tar.zst", "--data-dir", "src"],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("verified: "), "{out}");
    assert!(
        out.contains("recorded in the audit log: server.backup #"),
        "{out}"
    );
    let bundle = dir.path().join("out/b.tar.zst").canonicalize().unwrap();
    let size = std::fs::metadata(&bundle).unwrap().len();

    let (entries, verified) = backup_entries(&src);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0].event;
    assert_eq!(e.target, "database");
    let detail = |k: &str| e.detail.get(k).map(String::as_str).unwrap_or_default();
    assert_eq!(detail("path"), bundle.to_str().unwrap());
    assert_eq!(detail("bytes"), size.to_string());
    assert_eq!(detail("schema_version"), latest().to_string());
    assert_eq!(detail("backend"), "sqlite");
    assert_eq!(detail("by"), "dockmesh backup");
    assert_eq!(verified.first_broken, None, "{verified:?}");
    assert!(verified.entries_checked >= 2, "{verified:?}");

    // A second backup: a second entry, the chain still whole; the bundle's own chain (taken
    // before its entry was appended) verifies on restore.
    let o = dockmesh(
        &["backup", "--out", "out/c.tar.zst", "--data-dir", "src"],
        dir.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let (entries, verified) = backup_entries(&src);
    assert_eq!(entries.len(), 2);
    assert!(entries[0].event.detail["path"].ends_with("c.tar.zst"));
    assert_eq!(verified.first_broken, None, "{verified:?}");
    let o = dockmesh(
        &["restore", "--from", "out/c.tar.zst", "--data-dir", "dst"],
        dir.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let (restored, verified) = backup_entries(&dir.path().join("dst"));
    assert_eq!(
        restored.len(),
        1,
        "the first backup's entry is in the second bundle"
    );
    assert_eq!(verified.first_broken, None, "{verified:?}");
}

#[test]
fn a_backup_whose_audit_entry_cannot_be_appended_says_so_and_keeps_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    add_stack(&src, "shop");
    // An audit key that is not the 32 bytes dockmesh wrote: the store refuses to append.
    std::fs::write(src.join(dockmesh_sqlx::AUDIT_KEY_FILE_NAME), b"short").unwrap();
    let o = dockmesh(
        &["backup", "--out", "b.tar.zst", "--data-dir", "src"],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(out.contains("wrote b.tar.zst"), "{out}");
    assert!(
        err.contains("recording the backup in the audit log (server.backup) failed"),
        "{err}"
    );
    assert!(err.contains("audit key"), "names the cause: {err}");
    assert!(
        err.contains("is complete and verified, and can be restored"),
        "{err}"
    );
    let o = dockmesh(
        &["restore", "--from", "b.tar.zst", "--data-dir", "dst"],
        dir.path(),
    );
    assert!(o.status.success(), "the bundle is valid: {:?}", text(&o));
    assert_eq!(stacks(&dir.path().join("dst")), vec!["shop"]);
}

#[test]
fn backup_of_no_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = dockmesh(
        &["backup", "--out", "b.tar.zst", "--data-dir", "nowhere"],
        dir.path(),
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing to back up"), "{err}");
    assert!(!dir.path().join("b.tar.zst").exists());
    assert!(!dir.path().join("nowhere").exists(), "nothing was created");
}

#[test]
fn postgres_migrate_and_backup_into_sqlite() {
    let Ok(admin) = std::env::var("DOCKMESH_TEST_POSTGRES_URL") else {
        if std::env::var("DOCKMESH_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("DOCKMESH_TEST_POSTGRES_URL is not set but DOCKMESH_REQUIRE_SERVICES=1");
        }
        eprintln!(
            "postgres_migrate_and_backup_into_sqlite: skipped: DOCKMESH_TEST_POSTGRES_URL is not set"
        );
        return;
    };
    use sqlx::Connection;
    let name = format!("dockmesh_cli_{}", std::process::id());
    let url = {
        let cut = admin.rfind('/').unwrap();
        format!("{}/{}", &admin[..cut], name)
    };
    rt().block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let o = dockmesh(&["db", "migrate", "--database-url", &url], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        err.contains(&format!(
            "Database migration from 0 -> {} complete",
            latest()
        )),
        "{err}"
    );
    assert!(out.contains("backend: postgres"), "{out}");
    assert!(
        !out.contains("dockmesh_test:dockmesh_test@"),
        "the password is not printed: {out}"
    );
    let o = dockmesh(
        &["backup", "--out", "pg.tar.zst", "--database-url", &url],
        dir.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = dockmesh(
        &["restore", "--from", "pg.tar.zst", "--data-dir", "lite"],
        dir.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let o = dockmesh(&["db", "status", "--data-dir", "lite"], dir.path());
    assert!(text(&o).0.contains("status: up to date"));
    rt().block_on(async {
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
    });
}

#[test]
fn restore_is_refused_while_a_server_holds_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    add_stack(&src, "shop");
    let o = dockmesh(
        &["backup", "--out", "b.tar.zst", "--data-dir", "src"],
        dir.path(),
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let dst = dir.path().join("dst");
    add_stack(&dst, "live");
    let rt = rt();
    let lock = rt
        .block_on(dockmesh_sqlx::ServerLock::acquire(
            &DbTarget::sqlite_in(&dst),
            "dockmesh server on test-host",
        ))
        .unwrap();
    let db = std::fs::read(dst.join("dockmesh.db")).unwrap();
    let restore = || {
        dockmesh(
            &[
                "restore",
                "--from",
                "b.tar.zst",
                "--data-dir",
                "dst",
                "--force",
            ],
            dir.path(),
        )
    };
    let o = restore();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("dockmesh server on test-host"),
        "names the holder: {err}"
    );
    assert!(err.contains("hint: stop the dockmesh server"), "{err}");
    assert!(
        std::fs::read(dst.join("dockmesh.db")).unwrap() == db,
        "the database is unchanged"
    );
    rt.block_on(lock.release());
    let o = restore();
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(stacks(&dst), vec!["shop"]);
}

/// The server migrates the database when it starts and says so as the upgrade guide shows:
/// `Database migration from A -> B complete`, then serves (the start log names the agent
/// listener as `Agent listener on ADDR (mTLS)`).
#[test]
fn the_server_migrates_at_start_and_says_so() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(["server", "--data-dir", "data", "--no-local-host"])
        .args(["--listen", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("DOCKMESH_DATA_DIR")
        .env_remove("DOCKMESH_DATABASE_URL")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let serving = line.contains("HTTP listening on");
        seen.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    let migrated = format!("Database migration from 0 -> {} complete", latest());
    let at = log
        .find(&migrated)
        .unwrap_or_else(|| panic!("{migrated:?} in:\n{log}"));
    let listener = log
        .find("Agent listener on 127.0.0.1:")
        .unwrap_or_else(|| panic!("the agent listener in:\n{log}"));
    assert!(
        at < listener,
        "the database is migrated before anything listens:\n{log}"
    );
    assert!(log.contains(" (mTLS)"), "{log}");
}
