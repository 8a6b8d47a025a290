//! End to end: the real `dockmesh` binary as a server process with two real Docker engines as
//! hosts (`local` and `b`), driven through its CLI and its HTTP API, with every claim about the
//! data checked by the engines' own tools (`docker run … sha256sum`), outside dockmesh.
//!
//! Needs the main engine and the second one of `scripts/start-second-engine.sh`
//! (`DOCKMESH_TEST_DOCKER_HOST_B`).

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::server::{Server, api_call};
use support::stack::*;
use support::*;

fn containers(host: &str, stack: &str) -> Vec<(String, String)> {
    docker(
        host,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={stack}"),
            "--format",
            "{{.Names}} {{.State}}",
        ],
    )
    .unwrap()
    .lines()
    .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
    .collect()
}

fn volumes(host: &str, stack: &str) -> Vec<String> {
    docker(
        host,
        &["volume", "ls", "-q", "--filter", &format!("name={stack}_")],
    )
    .unwrap()
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn health(host: &str, container: &str) -> String {
    docker(
        host,
        &["inspect", "--format", "{{.State.Health.Status}}", container],
    )
    .unwrap()
    .trim()
    .to_owned()
}

fn running_on(host: &str, stack: &str) -> bool {
    let c = containers(host, stack);
    !c.is_empty() && c.iter().all(|(_, s)| s == "running")
}

/// The target holds nothing of the stack: no container, no volume, no stack files.
fn holds_nothing(host: &str, stack: &str, stack_dir: &Path) {
    assert!(containers(host, stack).is_empty(), "containers left");
    assert!(volumes(host, stack).is_empty(), "volumes left");
    assert!(!stack_dir.exists(), "stack files left at {stack_dir:?}");
}

fn last_migration(server: &Server, stack: &str) -> Value {
    let (status, list) = server.api("GET", &format!("/api/v1/migrations?stack={stack}"), None);
    assert_eq!(status, 200, "{list}");
    list[0].clone()
}

#[test]
fn a_stack_moves_with_its_data_rolls_back_moves_again_and_its_source_is_purged() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &b, &[]);
    let name = unique("e2e");
    let _cleanup = Stack {
        name: name.clone(),
        a: a.clone(),
        b: b.clone(),
    };
    let file = write_compose(dir.path(), &compose(IMAGE, HEALTHY, ""));
    server.cli_ok(&["stack", "deploy", &name, "-f", &file, "--host", "local"]);
    seed(&a, &name, 2048);
    let before = describe(&a, &name);
    assert!(before.0.contains("blob") && before.0.contains("link-to-blob"));

    // Move it.
    let out = server.cli_ok(&["stack", "migrate", &name, "--to", "b", "--yes"]);
    assert!(
        out.contains("port_conflicts") && out.contains("committed"),
        "{out}"
    );
    let m = last_migration(&server, &name);
    let id = m["id"].as_str().unwrap().to_owned();
    assert_eq!(m["state"], "committed");
    assert!(m["retain_until"].is_string());
    assert!(running_on(&b, &name), "runs on the target");
    let web = &containers(&b, &name)[0].0;
    assert_eq!(health(&b, web), "healthy");
    assert_eq!(describe(&b, &name), before, "the data arrived identical");
    // The source is stopped and kept, with its volumes.
    let src = containers(&a, &name);
    assert!(
        !src.is_empty() && src.iter().all(|(_, s)| s != "running"),
        "{src:?}"
    );
    assert_eq!(volumes(&a, &name).len(), 2);
    let (_, stack) = server.api("GET", &format!("/api/v1/stacks/{name}"), None);
    assert_eq!(stack["host"], "b");

    // Roll it back: the source runs again with the data it had.
    let out = server.cli_ok(&["migration", "rollback", &id]);
    assert!(out.contains("rolled_back"), "{out}");
    assert!(running_on(&a, &name));
    assert_eq!(describe(&a, &name), before);
    assert!(!running_on(&b, &name), "the target copy is stopped");
    let (_, stack) = server.api("GET", &format!("/api/v1/stacks/{name}"), None);
    assert_eq!(stack["host"], "local");
    // A second rollback of the same migration is refused.
    let again = server.cli(&["migration", "rollback", &id]);
    assert_eq!(again.status.code(), Some(1));

    // Moving again needs the stopped copy gone from the target; pre-flight says so.
    let refused = server.cli(&["stack", "migrate", &name, "--to", "b", "--yes"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("target_free"));
    server.cli_ok(&["migration", "purge-target", &id, "--yes"]);
    holds_nothing(
        &b,
        &name,
        &server.data_dir.join("hosts/b/stacks").join(&name),
    );
    assert!(
        running_on(&a, &name),
        "purging the target left the source alone"
    );

    server.cli_ok(&["stack", "migrate", &name, "--to", "b", "--yes"]);
    let m2 = last_migration(&server, &name);
    let id2 = m2["id"].as_str().unwrap().to_owned();
    assert_ne!(id, id2);
    assert_eq!(m2["state"], "committed");
    assert_eq!(describe(&b, &name), before);

    // Purge the source: its containers, volumes and files are gone.
    let out = server.cli_ok(&["migration", "purge-source", &id2, "--yes"]);
    assert!(out.contains("purged"), "{out}");
    holds_nothing(
        &a,
        &name,
        &server.data_dir.join("hosts/local/stacks").join(&name),
    );
    assert!(running_on(&b, &name));
    // The first migration can no longer be rolled back.
    assert_eq!(
        server.cli(&["migration", "rollback", &id2]).status.code(),
        Some(1)
    );

    // Everything is in the audit log, and the chain holds.
    let audit = server.cli_ok(&["audit", "ls", "--target", &name, "--limit", "100"]);
    for action in [
        "stack.deploy",
        "migration.start",
        "migration.complete",
        "migration.rollback",
        "migration.purge_target",
        "migration.purge_source",
    ] {
        assert!(audit.contains(action), "{action} missing from\n{audit}");
    }
    assert!(server.cli_ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn a_failure_on_the_target_is_undone_and_the_source_runs_again_with_its_data() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &b, &[]);
    // (1) a healthcheck that fails on the target; (2) an image the target does not have.
    let local_only = |name: &str| {
        let tag = format!("dockmesh-test/{name}:1");
        docker(&a, &["tag", IMAGE, &tag]).unwrap();
        tag
    };
    for case in ["unhealthy", "image"] {
        let name = unique(&format!("e2e{case}"));
        let _cleanup = Stack {
            name: name.clone(),
            a: a.clone(),
            b: b.clone(),
        };
        let text = match case {
            "unhealthy" => compose(IMAGE, HEALTHY_WHERE_BORN, ""),
            _ => compose(&local_only(&name), HEALTHY, ""),
        };
        let file = write_compose(dir.path(), &text);
        server.cli_ok(&["stack", "deploy", &name, "-f", &file, "--host", "local"]);
        seed(&a, &name, 256);
        let before = describe(&a, &name);
        let out = server.cli(&["stack", "migrate", &name, "--to", "b", "--yes"]);
        assert_eq!(out.status.code(), Some(1), "{case}: the migration failed");
        let m = last_migration(&server, &name);
        assert_eq!(m["state"], "failed", "{case}: {m}");
        assert!(m["error"]["reason"].is_string(), "{case}: {m}");
        assert!(running_on(&a, &name), "{case}: the source runs again");
        assert_eq!(describe(&a, &name), before, "{case}: with identical data");
        holds_nothing(
            &b,
            &name,
            &server.data_dir.join("hosts/b/stacks").join(&name),
        );
        let (_, stack) = server.api("GET", &format!("/api/v1/stacks/{name}"), None);
        assert_eq!(stack["host"], "local", "{case}");
    }
}

/// Kill the server (SIGKILL) just before each step of a migration, and once in the middle of
/// a volume's transfer, then start it again: the migration resumes and ends committed (or
/// compensated), never with a stopped source beside a half-done target, never with lost data.
/// Also: SIGTERM during a migration exits 0 at a checkpoint, and the next start finishes it.
#[test]
fn a_server_killed_at_any_step_resumes_the_migration_on_restart() {
    let Some((a, b)) = engines() else { return };
    let points = [
        "RunPreflight",
        "StopSource",
        "BeginVolume",
        "TransferVolume",
        "bytes:1048576",
        "ShipFiles",
        "StartTarget",
        "CheckTargetHealth",
        "Commit",
        "SIGTERM",
    ];
    for point in points {
        eprintln!("=== crash point {point}");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let name = unique("e2ecrash");
        let _cleanup = Stack {
            name: name.clone(),
            a: a.clone(),
            b: b.clone(),
        };
        let file = write_compose(dir.path(), &compose(IMAGE, HEALTHY, ""));
        let extra: Vec<&str> = if point == "SIGTERM" {
            vec![]
        } else {
            vec!["--test-crash-at", point]
        };
        let mut server = Server::start(&data, &b, &extra);
        server.cli_ok(&["stack", "deploy", &name, "-f", &file, "--host", "local"]);
        seed(&a, &name, 4096);
        let before = describe(&a, &name);
        let (status, m) = server.api(
            "POST",
            &format!("/api/v1/stacks/{name}/migrate"),
            Some(r#"{"target_host_id":"b"}"#),
        );
        assert_eq!(status, 202, "{m}");
        let id = m["id"].as_str().unwrap().to_owned();
        if point == "SIGTERM" {
            // Wait until the source is stopped, then ask the server to stop.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (_, m) = server.api("GET", &format!("/api/v1/migrations/{id}"), None);
                if m["state"] != "requested" && m["state"] != "preflight_passed" {
                    break;
                }
                assert!(std::time::Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(20));
            }
            let status = server.terminate();
            assert!(status.success(), "SIGTERM exits 0: {status:?}");
        } else {
            let status = server.wait_exit(Duration::from_secs(120));
            assert!(
                !status.success(),
                "{point}: the server was killed: {status:?}"
            );
        }
        drop(server);
        let server = Server::restart(&data, &b);
        let m = server.wait_settled(&id, Duration::from_secs(180));
        eprintln!("{point}: settled as {}", m["state"]);
        match m["state"].as_str().unwrap() {
            "committed" => {
                assert!(running_on(&b, &name), "{point}: runs on the target");
                assert_eq!(describe(&b, &name), before, "{point}: target data");
                assert!(!running_on(&a, &name), "{point}: the source is stopped");
                assert_eq!(describe(&a, &name), before, "{point}: the source is kept");
            }
            "failed" => {
                assert!(running_on(&a, &name), "{point}: the source runs again");
                assert_eq!(describe(&a, &name), before, "{point}: source data");
                holds_nothing(&b, &name, &data.join("hosts/b/stacks").join(&name));
            }
            other => panic!("{point}: migration settled as {other}: {m}"),
        }
        assert!(server.cli_ok(&["audit", "verify"]).contains("intact"));
    }
}

#[test]
fn preflight_refusals_and_bad_requests_change_nothing() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &b, &[]);
    let name = unique("e2erefuse");
    let _cleanup = Stack {
        name: name.clone(),
        a: a.clone(),
        b: b.clone(),
    };
    let port = 20000 + (std::process::id() % 20000) as u16;
    let ports = format!("    ports:\n      - \"127.0.0.1:{port}:8080\"\n");
    let file = write_compose(dir.path(), &compose(IMAGE, HEALTHY, &ports));
    server.cli_ok(&["stack", "deploy", &name, "-f", &file, "--host", "local"]);
    // The same port taken on the target (another address, the same port number).
    let blocker = format!("{name}-blocker");
    docker(
        &b,
        &[
            "run",
            "-d",
            "--name",
            &blocker,
            "--label",
            &format!("com.docker.compose.project={name}-blocker"),
            "-p",
            &format!("127.0.0.2:{port}:80"),
            IMAGE,
            "sleep",
            "600",
        ],
    )
    .unwrap();
    let body = r#"{"target_host_id":"b"}"#;
    let (status, err) = server.api(
        "POST",
        &format!("/api/v1/stacks/{name}/migrate"),
        Some(body),
    );
    let _ = docker(&b, &["rm", "-f", &blocker]);
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["code"], "preflight_failed");
    let checks = err["details"]["checks"].as_array().unwrap();
    let pc = checks
        .iter()
        .find(|c| c["name"] == "port_conflicts")
        .unwrap();
    assert_eq!(pc["status"], "fail", "{pc}");
    let (_, list) = server.api("GET", &format!("/api/v1/migrations?stack={name}"), None);
    assert_eq!(list, Value::Array(vec![]), "no migration was recorded");
    assert!(running_on(&a, &name));
    assert!(volumes(&b, &name).is_empty());

    // Bad requests.
    let (s, e) = api_call(&server.url, None, "GET", "/api/v1/stacks", None, &[]);
    assert_eq!((s, e["code"].as_str()), (401, Some("unauthorized")));
    let (s, _) = api_call(
        &server.url,
        Some("dmt_nope"),
        "GET",
        "/api/v1/stacks",
        None,
        &[],
    );
    assert_eq!(s, 401);
    let (s, e) = server.api("POST", "/api/v1/stacks", Some(r#"{"name": "x", "#));
    assert_eq!(s, 400, "{e}");
    let (s, e) = server.api("POST", "/api/v1/stacks", Some(r#"{"name": "x"}"#));
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("compose"), "{e}");
    let (s, e) = server.api(
        "POST",
        "/api/v1/stacks",
        Some(r#"{"name": "Bad Name!", "compose": "services: {}"}"#),
    );
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().starts_with("name:"), "{e}");
    let huge = format!(r#"{{"name":"big","compose":"{}"}}"#, "x".repeat(5 << 20));
    let (s, _) = server.api("POST", "/api/v1/stacks", Some(&huge));
    assert_eq!(s, 413);
    let (s, _) = server.api("GET", "/api/v1/migrations/not-a-uuid", None);
    assert_eq!(s, 400);
    let (s, _) = server.api(
        "GET",
        "/api/v1/migrations/01a220cf-baa2-77c6-931d-b6f6acb7a50d",
        None,
    );
    assert_eq!(s, 404);
    let (s, e) = server.api(
        "POST",
        &format!("/api/v1/stacks/{name}/migrate"),
        Some(r#"{"target_host_id":"nowhere"}"#),
    );
    assert_eq!(s, 422, "{e}");

    // A second migration of the same stack while the first runs: 409.
    let (s, m) = server.api(
        "POST",
        &format!("/api/v1/stacks/{name}/migrate"),
        Some(body),
    );
    assert_eq!(s, 202, "{m}");
    let (s, e) = server.api(
        "POST",
        &format!("/api/v1/stacks/{name}/migrate"),
        Some(body),
    );
    assert_eq!(s, 409, "{e}");
    let m = server.wait_settled(m["id"].as_str().unwrap(), Duration::from_secs(120));
    assert_eq!(m["state"], "committed", "{m}");

    // The health, readiness and metrics endpoints.
    let (s, h) = api_call(&server.url, None, "GET", "/api/v1/health", None, &[]);
    assert_eq!(s, 200);
    assert_eq!(
        (h["status"].as_str(), h["db"].as_str()),
        (Some("ok"), Some("ok"))
    );
    let (s, _) = api_call(&server.url, None, "GET", "/metrics", None, &[]);
    assert_eq!(s, 401, "/metrics needs a token on the API listener");
    let (s, metrics) = api_call(
        &server.url,
        Some(&server.token),
        "GET",
        "/metrics",
        None,
        &[],
    );
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("dockmesh_migrations{phase=\"committed\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("status=\"409\""), "{metrics}");
    let (s, doc) = api_call(&server.url, None, "GET", "/api/v1/openapi.json", None, &[]);
    assert_eq!(s, 200);
    assert!(doc["paths"]["/api/v1/stacks/{name}/migrate"]["post"].is_object());
}

/// Drain host `local` of two stacks onto `b`; the server is killed while the first stack
/// moves, and the drain goes on after the restart until both stacks run on `b` with their data.
#[test]
fn a_drain_moves_every_stack_off_a_host_across_a_server_crash() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // `b` is drained onto `local` (the only other host).
    let names = [unique("e2edrain1"), unique("e2edrain2")];
    let _cleanup: Vec<Stack> = names
        .iter()
        .map(|n| Stack {
            name: n.clone(),
            a: a.clone(),
            b: b.clone(),
        })
        .collect();
    let mut server = Server::start(&data, &b, &["--test-crash-at", "CheckTargetHealth"]);
    let file = write_compose(dir.path(), &compose(IMAGE, HEALTHY, ""));
    let mut before = Vec::new();
    for n in &names {
        server.cli_ok(&["stack", "deploy", n, "-f", &file, "--host", "b"]);
        seed(&b, n, 512);
        before.push(describe(&b, n));
    }
    // A Compose project on b that this server does not manage stays where it is.
    let stranger = format!("{}-stranger", names[0]);
    docker(
        &b,
        &[
            "run",
            "-d",
            "--name",
            &stranger,
            "--label",
            &format!("com.docker.compose.project={stranger}"),
            "--network",
            "none",
            IMAGE,
            "sleep",
            "600",
        ],
    )
    .unwrap();
    let out = server.cli_ok(&["host", "drain", "b", "--plan"]);
    assert!(names.iter().all(|n| out.contains(n.as_str())), "{out}");
    assert!(!out.contains(&stranger), "{out}");
    let (status, d) = server.api("POST", "/api/v1/hosts/b/drain", None);
    assert_eq!(status, 202, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let status = server.wait_exit(Duration::from_secs(120));
    assert!(!status.success(), "killed mid-drain");
    drop(server);
    let server = Server::restart(&data, &b);
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let d = loop {
        let (_, d) = server.api("GET", &format!("/api/v1/drains/{id}"), None);
        if d["state"] != "running" {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the drain never ended: {d}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(d["state"], "completed", "{d}");
    for (n, want) in names.iter().zip(&before) {
        assert!(running_on(&a, n), "{n} runs on local");
        assert_eq!(&describe(&a, n), want, "{n}: data identical");
        assert!(
            !running_on(&b, n),
            "{n}: the source on b is stopped and kept"
        );
    }
    let (_, hosts) = server.api("GET", "/api/v1/hosts", None);
    let hb = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == "b")
        .unwrap()
        .clone();
    assert_eq!(
        hb["cordoned"], true,
        "the drained host stays cordoned across restarts"
    );
    server.cli_ok(&["host", "uncordon", "b"]);
}

/// A project started with `docker-compose up` is adopted in place (its containers keep their
/// ids and keep running) and then moves with its data like any other stack.
#[test]
fn a_compose_project_is_adopted_in_place_and_then_moves_with_its_data() {
    let Some((a, b)) = engines() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &b, &[]);
    let name = unique("e2eadopt");
    let _cleanup = Stack {
        name: name.clone(),
        a: a.clone(),
        b: b.clone(),
    };
    let project = dir.path().join(&name);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("compose.yaml"), compose(IMAGE, HEALTHY, "")).unwrap();
    std::fs::write(project.join(".env"), "UNUSED=1\n").unwrap();
    let up = std::process::Command::new("docker-compose")
        .args(["-p", &name, "up", "-d"])
        .current_dir(&project)
        .env("DOCKER_HOST", &a)
        .output()
        .expect("run docker-compose (the .ci/run installs it)");
    assert!(up.status.success(), "docker-compose up: {up:?}");
    let started = |host: &str| {
        docker(
            host,
            &[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={name}"),
                "--format",
                "{{.ID}}",
            ],
        )
        .unwrap()
        .split_whitespace()
        .map(|id| {
            docker(
                host,
                &["inspect", "--format", "{{.Id}} {{.State.StartedAt}}", id],
            )
            .unwrap()
            .trim()
            .to_owned()
        })
        .collect::<Vec<_>>()
    };
    let before_ids = started(&a);
    assert_eq!(before_ids.len(), 1);
    let projects = server.cli_ok(&["host", "ls-projects", "local"]);
    assert!(projects.contains(&name), "{projects}");

    let out = server.cli_ok(&["stack", "adopt", &name, "--host", "local"]);
    assert!(out.contains("adopted"), "{out}");
    assert_eq!(
        started(&a),
        before_ids,
        "no container was restarted or recreated"
    );
    let (_, stack) = server.api("GET", &format!("/api/v1/stacks/{name}"), None);
    assert_eq!(stack["host"], "local");
    assert_eq!(stack["env"], "UNUSED=1\n");
    let again = server.cli(&["stack", "adopt", &name, "--host", "local"]);
    assert_eq!(again.status.code(), Some(1), "adopting twice is refused");
    let missing = server.cli(&["stack", "adopt", "nosuchproject", "--host", "local"]);
    assert_eq!(missing.status.code(), Some(1));

    seed(&a, &name, 256);
    let before = describe(&a, &name);
    server.cli_ok(&["stack", "migrate", &name, "--to", "b", "--yes"]);
    assert_eq!(last_migration(&server, &name)["state"], "committed");
    assert!(running_on(&b, &name));
    assert_eq!(describe(&b, &name), before);
    assert!(
        !running_on(&a, &name),
        "the adopted source is stopped and kept"
    );
}
