//! `dockmesh upgrade verify` against a real server: a host that does not answer fails it, and
//! it passes once the host is back (its socket appears); the schema is read from the server's
//! database, read only.

mod support;

use serde_json::Value;
use support::server::Server;
use support::{IMAGE, docker, required};

const LOCAL: &str = "/var/run/docker.sock";

fn engine() -> bool {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| format!("unix://{LOCAL}"));
    if host != format!("unix://{LOCAL}") || docker(&host, &["image", "inspect", IMAGE]).is_err() {
        let why = format!("no local Docker engine at {LOCAL} with {IMAGE}");
        assert!(!required(), "{why}, and DOCKMESH_REQUIRE_SERVICES=1");
        eprintln!("skipping: {why}");
        return false;
    }
    true
}

#[test]
fn verify_fails_on_a_host_that_does_not_answer_and_passes_when_it_is_back() {
    if !engine() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("c");
    std::fs::create_dir_all(&sock_dir).unwrap();
    let sock = sock_dir.join("docker.sock");
    let host_c = format!("c=unix://{}", sock.display());
    let data = dir.path().join("data");
    let server = Server::launch(&data, &["--host", &host_c]);
    let data_arg = data.to_string_lossy().into_owned();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "upgrade",
            "verify",
            "--data-dir",
            data_arg.as_str(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = server.cli(&args);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    let check = |v: &Value, name: &str| -> (String, String) {
        let c = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {v}"));
        (
            c["status"].as_str().unwrap().to_owned(),
            c["detail"].as_str().unwrap().to_owned(),
        )
    };

    let (code, v) = verify(&["--expect-hosts", "2"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["passed"], false);
    let (status, detail) = check(&v, "hosts_online");
    assert_eq!(status, "fail");
    assert!(detail.contains("offline: c"), "{detail}");
    for name in ["agents_version", "stacks_healthy", "audit_chain", "schema"] {
        assert_eq!(check(&v, name).0, "pass", "{name}: {v}");
    }

    // The host comes back: its socket appears.
    std::os::unix::fs::symlink(LOCAL, &sock).unwrap();
    let (code, v) = verify(&["--expect-hosts", "2"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["passed"], true);
    assert_eq!(
        check(&v, "hosts_online"),
        ("pass".into(), "2 hosts online".into())
    );

    // A wrong host count fails, naming both numbers.
    let (code, v) = verify(&["--expect-hosts", "3"]);
    assert_eq!(code, Some(1));
    assert!(
        check(&v, "hosts_online").1.contains("2 hosts, 3 expected"),
        "{v}"
    );

    // The table names every check.
    let out = server.cli(&["upgrade", "verify", "--data-dir", &data_arg]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "hosts_online",
        "agents_version",
        "stacks_healthy",
        "audit_chain",
        "schema",
    ] {
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn host_ls_stale_lists_agents_not_seen_for_that_long() {
    use dockmesh_core::ports::prelude::*;
    use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let now = jiff::Timestamp::now();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = dockmesh_sqlx::SqlStore::open(&dockmesh_sqlx::DbTarget::sqlite_in(&data))
            .await
            .unwrap();
        for (id, days) in [("gone", Some(40)), ("fresh", Some(1)), ("silent", None)] {
            store
                .upsert_agent(&AgentRecord {
                    id: dockmesh_core::HostId::from(id),
                    name: id.into(),
                    version: "0.1.0".into(),
                    commit: None,
                    protocol_version: 1,
                    arch: "x86_64".into(),
                    docker_version: "28.0.0".into(),
                    last_seen: days.map(|d: i64| {
                        now.checked_sub(jiff::SignedDuration::from_hours(24 * d))
                            .unwrap()
                    }),
                    connection: ConnectionState::Disconnected,
                    upgrade: UpgradeState::Idle,
                })
                .await
                .unwrap();
        }
    });
    let server = Server::launch(
        &data,
        &[
            "--no-local-host",
            "--host",
            "sock=unix:///var/run/docker.sock",
        ],
    );
    let out = server.cli(&["host", "ls", "--stale", "30d", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["silent", "gone"], "never seen first, then the oldest");
    let out = server.cli(&["host", "ls", "--stale", "30"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an age without a unit is refused"
    );

    // Decommissioning the stale host removes its agent; a host reached by socket is not an
    // agent's and is refused with what to do instead.
    let out = server.cli(&["host", "rm", "gone"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed host gone"));
    let out = server.cli(&["host", "ls", "--stale", "30d", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["id"], "silent");
    // The record is gone; the audit keeps who removed which host.
    let (status, audit) = server.api("GET", "/api/v1/audit?action=agent.remove", None);
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["event"]["target"], "gone", "{audit}");
    let out = server.cli(&["host", "rm", "sock"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("reached by socket"), "{err}");
}
