//! `dockmesh upgrade preflight` and `dockmesh version --json`, run as a user runs them, on a
//! temporary data directory with a SQLite database (no Docker needed), and once against
//! PostgreSQL (`DOCKMESH_TEST_POSTGRES_URL`).

#[path = "support/backups.rs"]
mod backups;
use backups::backup_entries;
use dockmesh_core::ports::prelude::*;
use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
use dockmesh_core::version::Version;
use dockmesh_sqlx::{DbTarget, SqlStore};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dockmesh");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn dockmesh(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("DOCKMESH_DATA_DIR")
        .env_remove("DOCKMESH_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the dockmesh binary");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A data directory with a database, made as an operator makes the first token.
struct Data {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Data {
    fn new() -> Data {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let run = dockmesh(&["token", "create", "--data-dir", s(&path)]);
        assert_eq!(run.code, 0, "token create: {}", run.stderr);
        assert!(path.join("dockmesh.db").is_file());
        Data { _dir: dir, path }
    }

    fn backups(&self) -> PathBuf {
        self.path.join("backups")
    }

    fn backup(&self, name: &str) -> PathBuf {
        let out = self.backups().join(name);
        let run = dockmesh(&["backup", "--out", s(&out), "--data-dir", s(&self.path)]);
        assert_eq!(run.code, 0, "backup: {}", run.stderr);
        out
    }

    /// `upgrade preflight --data-dir D` with `extra` arguments.
    fn preflight(&self, extra: &[&str]) -> Run {
        let mut args = vec!["upgrade", "preflight", "--data-dir", s(&self.path)];
        args.extend_from_slice(extra);
        dockmesh(&args)
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// This binary's `version --json`.
fn info() -> Value {
    let run = dockmesh(&["version", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn own_version() -> Version {
    Version::parse(info()["version"].as_str().unwrap()).unwrap()
}

/// The next patch release of this binary: an upgrade the dtr rules allow.
fn next_patch() -> String {
    let v = own_version();
    format!("{}.{}.{}", v.major(), v.minor(), v.patch() + 1)
}

/// A release two minors ahead: the dtr rules refuse it (a minor may not be skipped).
fn two_minors_ahead() -> String {
    let v = own_version();
    format!("{}.{}.0", v.major(), v.minor() + 2)
}

/// The table's row of a check: its status and detail.
fn table_row(run: &Run, name: &str) -> (String, String) {
    let line = run
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row in:\n{}", run.stdout));
    let mut parts = line.split_whitespace();
    parts.next();
    let status = parts.next().unwrap().to_owned();
    let detail = parts.collect::<Vec<_>>().join(" ");
    (status, detail)
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// The schema check passed: the target brings no migration.
fn assert_no_pending_migrations(report: &Value) {
    let schema = check(report, "schema");
    assert_eq!(schema["status"], "pass", "{schema}");
    assert!(
        schema["detail"]
            .as_str()
            .unwrap()
            .starts_with("no pending migrations"),
        "{schema}"
    );
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

const CHECKS: [&str; 6] = ["version_rule", "plan", "backup", "disk", "schema", "agents"];

#[test]
fn version_json_names_the_version_protocol_and_schema() {
    let v = info();
    assert_eq!(
        v["protocol"],
        u64::from(dockmesh_core::protocol::PROTOCOL_VERSION)
    );
    let latest = dockmesh_sqlx::binary_version(dockmesh_sqlx::Backend::Sqlite);
    assert_eq!(v["schema"], latest);
    let plain = dockmesh(&["version"]);
    assert_eq!(
        plain.stdout.trim(),
        format!("dockmesh {}", v["version"].as_str().unwrap())
    );
}

#[test]
fn without_a_backup_the_backup_check_fails_with_the_way_to_take_one() {
    let data = Data::new();
    let run = data.preflight(&["--to", &next_patch()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let (status, detail) = table_row(&run, "backup");
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("no backup bundle"), "{detail}");
    assert!(detail.contains("dockmesh backup --out"), "{detail}");
    assert!(detail.contains("--backup"), "{detail}");
    assert_eq!(table_row(&run, "version_rule").0, "pass");
    let (status, detail) = table_row(&run, "plan");
    assert_eq!(status, "warn");
    assert!(detail.starts_with("no releases file: only the direct hop was checked"));
    let (status, detail) = table_row(&run, "schema");
    assert_eq!(status, "warn");
    assert!(
        detail.starts_with("the target binary was not given"),
        "{detail}"
    );
    assert_eq!(
        run.stdout.lines().last().unwrap(),
        "preflight failed: 1 check(s) failed: backup"
    );
    assert!(!data.backups().exists(), "nothing was written");
}

#[test]
fn a_fresh_verified_backup_passes() {
    let data = Data::new();
    let bundle = data.backup("b.tar.zst");
    let run = data.preflight(&["--to", &next_patch()]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let (status, detail) = table_row(&run, "backup");
    assert_eq!(status, "pass", "{detail}");
    assert!(
        detail.contains(s(&bundle)) && detail.contains("verified"),
        "{detail}"
    );
    let (status, detail) = table_row(&run, "disk");
    assert_eq!(status, "pass", "{detail}");
    assert!(detail.contains("free in"), "{detail}");
    let (status, detail) = table_row(&run, "agents");
    assert_eq!(status, "pass", "{detail}");
    assert!(detail.starts_with("0 agent(s)"), "{detail}");
    assert!(
        run.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("preflight passed: "),
        "{}",
        run.stdout
    );
}

#[test]
fn a_corrupt_newest_bundle_or_an_old_one_fails() {
    let data = Data::new();
    data.backup("a.tar.zst");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newest = data.backup("b.tar.zst");
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let run = data.preflight(&["--to", &next_patch()]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let (status, detail) = table_row(&run, "backup");
    assert_eq!(status, "fail");
    assert!(
        detail.contains("does not verify") && detail.contains("b.tar.zst"),
        "{detail}"
    );

    std::fs::remove_file(&newest).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let run = data.preflight(&["--to", &next_patch(), "--max-backup-age", "1s"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let (status, detail) = table_row(&run, "backup");
    assert_eq!(status, "fail");
    assert!(
        detail.contains("a.tar.zst") && detail.contains("old"),
        "{detail}"
    );
    assert!(detail.contains("more than --max-backup-age 1s"), "{detail}");
}

#[test]
fn with_backup_one_is_taken_then_checked() {
    let data = Data::new();
    let run = data.preflight(&["--to", &next_patch(), "--backup"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let bundles: Vec<_> = std::fs::read_dir(data.backups())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    assert!(bundles[0].ends_with(".tar.zst"));
    let (status, detail) = table_row(&run, "backup");
    assert_eq!(status, "pass");
    assert!(detail.contains(&bundles[0]), "{detail}");
    assert!(
        detail.contains("recorded in the audit log: server.backup"),
        "{detail}"
    );
    // Its audit entry names the bundle, its size and who took it; the chain still verifies.
    let (entries, verified) = backup_entries(&data.path);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let d = &entries[0].event.detail;
    let bundle = data.backups().join(&bundles[0]).canonicalize().unwrap();
    assert_eq!(d["path"], s(&bundle));
    assert_eq!(
        d["bytes"],
        std::fs::metadata(&bundle).unwrap().len().to_string()
    );
    assert_eq!(d["by"], "dockmesh upgrade preflight --backup");
    assert_eq!(verified.first_broken, None, "{verified:?}");
    let restore = dockmesh(&[
        "restore",
        "--dry-run",
        "--force",
        "--from",
        s(&data.backups().join(&bundles[0])),
        "--data-dir",
        s(&data.path),
    ]);
    assert_eq!(restore.code, 0, "the bundle restores: {}", restore.stderr);
}

#[test]
fn bad_input_exits_2_naming_it_and_changes_nothing() {
    let data = Data::new();
    let before = std::fs::read(data.path.join("dockmesh.db")).unwrap();
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--to", "one.two"], &["--to", "one.two"]),
        (
            &["--to", &next_patch(), "--max-backup-age", "24"],
            &["--max-backup-age", "no unit"],
        ),
        (
            &["--to", &next_patch(), "--rules", "semver"],
            &["--rules", "semver"],
        ),
        (
            &[
                "--to",
                &next_patch(),
                "--releases",
                "/nonexistent/releases.txt",
            ],
            &["releases file", "/nonexistent/releases.txt"],
        ),
        (
            &[
                "--to",
                &next_patch(),
                "--binary",
                "/nonexistent/dockmesh-new",
                "--backup",
            ],
            &["target binary", "/nonexistent/dockmesh-new"],
        ),
    ];
    for (args, words) in cases {
        let run = data.preflight(args);
        assert_eq!(run.code, 2, "{args:?}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
        for w in words {
            assert!(run.stderr.contains(w), "{args:?}: {w} in {}", run.stderr);
        }
        let mut json_args = args.to_vec();
        json_args.push("--json");
        let run = data.preflight(&json_args);
        assert_eq!(run.code, 2);
        assert_eq!(json(&run)["result"], "error", "{args:?}");
    }
    assert!(
        !data.backups().exists(),
        "--backup took nothing on bad input"
    );
    assert_eq!(
        std::fs::read(data.path.join("dockmesh.db")).unwrap(),
        before,
        "the database is unchanged"
    );
}

#[test]
fn skipping_a_minor_fails_the_version_rule_and_a_releases_file_plans_around_it() {
    let data = Data::new();
    data.backup("b.tar.zst");
    let to = two_minors_ahead();
    let run = data.preflight(&["--to", &to]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let (status, detail) = table_row(&run, "version_rule");
    assert_eq!(status, "fail");
    assert!(detail.starts_with("refused:"), "{detail}");
    assert_eq!(table_row(&run, "plan").0, "fail");

    let v = own_version();
    let mid = format!("{}.{}.3", v.major(), v.minor() + 1);
    let dir = tempfile::tempdir().unwrap();
    let releases = dir.path().join("releases.txt");
    std::fs::write(&releases, format!("{v}\n{mid}\n{to}\n")).unwrap();
    let run = data.preflight(&["--to", &to, "--releases", s(&releases), "--json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let report = json(&run);
    assert_eq!(report["result"], "fail");
    assert_eq!(check(&report, "version_rule")["status"], "fail");
    let plan = check(&report, "plan");
    assert_eq!(plan["status"], "pass", "{plan}");
    assert_eq!(
        report["plan"],
        serde_json::json!([{"from": v.to_string(), "to": mid}, {"from": mid, "to": to}])
    );
}

#[test]
fn the_same_binary_as_target_has_no_pending_migrations_and_must_say_the_version() {
    let data = Data::new();
    data.backup("b.tar.zst");
    let own = own_version().to_string();
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let (db_before, files_before) = (
        std::fs::read(data.path.join("dockmesh.db")).unwrap(),
        listing(&data.path),
    );
    let run = data.preflight(&["--to", &own, "--binary", BIN, "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        std::fs::read(data.path.join("dockmesh.db")).unwrap(),
        db_before,
        "read only: the database is unchanged"
    );
    assert_eq!(
        listing(&data.path),
        files_before,
        "no file added or removed"
    );
    let report = json(&run);
    assert_eq!(report["result"], "pass");
    assert_eq!(report["from"], own.as_str());
    assert_eq!(report["to"], own.as_str());
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHECKS);
    for c in report["checks"].as_array().unwrap() {
        assert!(
            ["pass", "warn", "fail"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        assert!(!c["detail"].as_str().unwrap().is_empty(), "{c}");
    }
    assert_no_pending_migrations(&report);
    let agents = check(&report, "agents");
    assert!(
        agents["detail"]
            .as_str()
            .unwrap()
            .contains("the target's protocol"),
        "{agents}"
    );
    assert_eq!(check(&report, "version_rule")["status"], "warn");

    // The same binary does not say it is the next patch release.
    let run = data.preflight(&["--to", &next_patch(), "--binary", BIN]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let (status, detail) = table_row(&run, "schema");
    assert_eq!(status, "fail");
    assert!(
        detail.contains(&format!(
            "says `dockmesh {own}`, not `dockmesh {}`",
            next_patch()
        )),
        "{detail}"
    );
}

#[test]
fn a_target_binary_whose_schema_is_older_than_the_database_is_refused() {
    // A database migrated one version further than this binary knows: the target's
    // `db status` refuses it (newer than the binary), so the schema check fails.
    let data = Data::new();
    data.backup("b.tar.zst");
    let own = own_version().to_string();
    let db = data.path.join("dockmesh.db");
    let next = dockmesh_sqlx::binary_version(dockmesh_sqlx::Backend::Sqlite) + 1;
    rt().block_on(async {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            db.display()
        ))
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, 'from the future', TRUE, x'00', 0)",
        )
        .bind(next)
        .execute(&mut conn)
        .await
        .unwrap();
    });
    let run = data.preflight(&["--to", &own, "--binary", BIN]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let (status, detail) = table_row(&run, "schema");
    assert_eq!(status, "fail");
    assert!(
        detail.contains("the target refuses the database"),
        "{detail}"
    );
    assert!(detail.contains(&next.to_string()), "{detail}");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn agents_outside_the_targets_protocol_window_are_listed_as_a_warning() {
    let data = Data::new();
    data.backup("b.tar.zst");
    let proto = dockmesh_core::protocol::PROTOCOL_VERSION;
    rt().block_on(async {
        let store = SqlStore::open(&DbTarget::sqlite_in(&data.path))
            .await
            .unwrap();
        for (id, p) in [("current", proto), ("ahead", proto + 2)] {
            store
                .upsert_agent(&AgentRecord {
                    id: dockmesh_core::HostId::from(id),
                    name: format!("host-{id}"),
                    version: "9.9.9".into(),
                    commit: None,
                    protocol_version: p,
                    arch: "x86_64".into(),
                    docker_version: "28.0.0".into(),
                    last_seen: None,
                    connection: ConnectionState::Disconnected,
                    upgrade: UpgradeState::Idle,
                })
                .await
                .unwrap();
        }
        store.close().await;
    });
    let run = data.preflight(&["--to", &next_patch()]);
    assert_eq!(run.code, 0, "a warning does not fail: {}", run.stdout);
    let (status, detail) = table_row(&run, "agents");
    assert_eq!(status, "warn");
    assert!(detail.starts_with("1 of 2 agent(s)"), "{detail}");
    assert!(
        detail.contains("host-ahead") && !detail.contains("host-current"),
        "{detail}"
    );
    assert!(
        detail.contains("they will need a manual upgrade"),
        "{detail}"
    );
}

/// `upgrade preflight` against a PostgreSQL database (`--database-url`): the schema read from
/// the database by the target binary, the backups taken and checked through it, and the
/// database left as it was (no migration, nothing else written) but for the `server.backup`
/// audit entry of the bundle `--backup` takes.
#[test]
fn against_postgresql_the_checks_read_the_database_and_change_nothing() {
    let Ok(admin) = std::env::var("DOCKMESH_TEST_POSTGRES_URL") else {
        if std::env::var("DOCKMESH_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("DOCKMESH_TEST_POSTGRES_URL is not set but DOCKMESH_REQUIRE_SERVICES=1");
        }
        eprintln!("skipped: DOCKMESH_TEST_POSTGRES_URL is not set");
        return;
    };
    use sqlx::Connection;
    let name = format!("dockmesh_preflight_{}", std::process::id());
    let url = {
        let cut = admin.rfind('/').unwrap();
        format!("{}/{}", &admin[..cut], name)
    };
    let admin_sql = |sql: String| {
        let admin = admin.clone();
        rt().block_on(async move {
            let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        })
    };
    admin_sql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    admin_sql(format!("CREATE DATABASE {name}"));
    // What the database holds, in the numbers a write would change.
    let counts = || -> (i64, i64, i64) {
        let url = url.clone();
        rt().block_on(async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut n = Vec::new();
            for table in ["_sqlx_migrations", "audit_log", "tokens"] {
                let (count,): (i64,) =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                        .fetch_one(&mut c)
                        .await
                        .unwrap();
                n.push(count);
            }
            c.close().await.unwrap();
            (n[0], n[1], n[2])
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dockmesh(&[
        "token",
        "create",
        "--database-url",
        &url,
        "--data-dir",
        s(&data),
    ]);
    assert_eq!(run.code, 0, "token create: {}", run.stderr);
    let own = own_version().to_string();
    let preflight = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "preflight",
            "--database-url",
            url.as_str(),
            "--data-dir",
            s(&data),
            "--to",
            own.as_str(),
            "--binary",
            BIN,
            "--json",
        ];
        args.extend_from_slice(extra);
        dockmesh(&args)
    };

    // No backup yet: the backup check fails, and says how to take one; nothing written.
    let before = counts();
    let run = preflight(&[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(check(&report, "backup")["status"], "fail", "{report}");
    assert_no_pending_migrations(&report);
    assert_eq!(counts(), before, "a failing preflight writes nothing");

    // With --backup: one is taken from PostgreSQL, verified, and every check passes or warns.
    let run = preflight(&["--backup"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report = json(&run);
    assert_eq!(report["result"], "pass", "{report}");
    assert_eq!(check(&report, "backup")["status"], "pass", "{report}");
    let bundles: Vec<_> = std::fs::read_dir(data.join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    assert_eq!(bundles.len(), 1, "{bundles:?}");
    let (migrations, audit, tokens) = counts();
    assert_eq!(
        (migrations, tokens),
        (before.0, before.2),
        "the schema and the tokens are as they were"
    );
    assert_eq!(audit, before.1 + 1, "one entry: the bundle's server.backup");

    // The bundle restores into SQLite: it holds the PostgreSQL database's token.
    let lite = dir.path().join("lite");
    let run = dockmesh(&["restore", "--from", s(&bundles[0]), "--data-dir", s(&lite)]);
    assert_eq!(run.code, 0, "restore: {}", run.stderr);
    let run = dockmesh(&["token", "ls", "--json", "--data-dir", s(&lite)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let tokens: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");

    admin_sql(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}
