//! Stack release upgrades end to end: the `dockmesh server` binary with the local engine as host
//! `local`, driven by the CLI. Three locally built images serve different content (`v1`, `v2`,
//! and a broken release that clobbers the data before failing its healthcheck).

mod support;

use serde_json::Value;
use support::server::Server;
use support::{IMAGE, docker, required, unique};

const LOCAL: &str = "unix:///var/run/docker.sock";

fn engine() -> Option<String> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| LOCAL.into());
    let image = docker(&host, &["image", "inspect", IMAGE]);
    if let Err(why) = image {
        let why = format!("no Docker engine with {IMAGE} (scripts/build-test-image.sh): {why}");
        assert!(!required(), "{why}, and DOCKMESH_REQUIRE_SERVICES=1");
        eprintln!("skipping: {why}");
        return None;
    }
    Some(host)
}

/// Tag `dockmesh-test/release:<tag>` from the test image with `/release` holding `tag`, and
/// `/broken` too when `broken`.
fn release_image(host: &str, tag: &str, broken: bool) -> String {
    let name = format!("dockmesh-test/release:{tag}");
    let c = unique("mk");
    let script = format!(
        "echo {tag} > /release{}",
        if broken { "; touch /broken" } else { "" }
    );
    docker(
        host,
        &[
            "run",
            "--name",
            &c,
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            &script,
        ],
    )
    .unwrap();
    docker(host, &["commit", &c, &name]).unwrap();
    docker(host, &["rm", "-f", &c]).unwrap();
    name
}

/// `web` serves `/release` of its image and is healthy unless the image is broken (a broken
/// release first overwrites `/data/precious`, as a failed data migration would); `side` never
/// changes.
fn compose(image: &str, env: &str) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /www; cp /release /www/index.html; if [ -f /broken ]; then echo clobbered > /data/precious; fi; httpd -p 8080 -h /www; while true; do sleep 1; done"]
    environment:
      MODE: "{env}"
    volumes:
      - db:/data
    healthcheck:
      test: ["CMD-SHELL", "test ! -f /broken && wget -q -O /dev/null http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 2
  side:
    image: {IMAGE}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumes:
      - db:/shared
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      retries: 2
volumes:
  db:
"#
    )
}

fn id_of(host: &str, container: &str) -> String {
    docker(host, &["inspect", "-f", "{{.Id}}", container])
        .unwrap()
        .trim()
        .to_owned()
}

fn serves(host: &str, stack: &str) -> String {
    docker(
        host,
        &[
            "exec",
            &format!("{stack}-web-1"),
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/",
        ],
    )
    .unwrap()
    .trim()
    .to_owned()
}

fn precious(host: &str, stack: &str) -> String {
    docker(
        host,
        &[
            "exec",
            &format!("{stack}-side-1"),
            "cat",
            "/shared/precious",
        ],
    )
    .unwrap()
    .trim()
    .to_owned()
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

struct Cleanup {
    host: String,
    stack: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(
            &self.host,
            &[
                "rm",
                "-f",
                &format!("{}-web-1", self.stack),
                &format!("{}-side-1", self.stack),
            ],
        );
        let _ = docker(
            &self.host,
            &["network", "rm", &format!("{}_default", self.stack)],
        );
        if let Ok(list) = docker(
            &self.host,
            &[
                "volume",
                "ls",
                "-q",
                "--filter",
                &format!("name={}_db", self.stack),
            ],
        ) {
            for v in list.lines() {
                let _ = docker(&self.host, &["volume", "rm", "-f", v]);
            }
        }
    }
}

#[test]
fn upgrade_diff_backup_rollback_and_history() {
    let Some(host) = engine() else { return };
    let v1 = release_image(&host, "v1", false);
    let v2 = release_image(&host, "v2", false);
    let bad = release_image(&host, "bad", true);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(&dir.path().join("data"), &[]);
    let stack = unique("up");
    let _cleanup = Cleanup {
        host: host.clone(),
        stack: stack.clone(),
    };
    let file = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let f1 = file("v1.yaml", compose(&v1, "one"));
    let f2 = file("v2.yaml", compose(&v2, "two"));
    let fbad = file("bad.yaml", compose(&bad, "two"));

    server.cli_ok(&["stack", "deploy", &stack, "--file", &f1, "--host", "local"]);
    assert_eq!(serves(&host, &stack), "v1");
    docker(
        &host,
        &[
            "exec",
            &format!("{stack}-web-1"),
            "sh",
            "-c",
            "echo kept > /data/precious",
        ],
    )
    .unwrap();
    let web1 = id_of(&host, &format!("{stack}-web-1"));
    let side = id_of(&host, &format!("{stack}-side-1"));

    // The diff, and a dry run that changes nothing.
    let out = server.cli(&[
        "stack",
        "upgrade",
        "--json",
        &stack,
        "--file",
        &f2,
        "--dry-run",
    ]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["rev"], Value::Null);
    assert_eq!(v["diff"]["unchanged"], serde_json::json!(["side"]));
    let changes = &v["diff"]["changed"][0];
    assert_eq!(changes["service"], "web");
    assert_eq!(
        changes["changes"],
        serde_json::json!([
            {"field": "image", "from": v1, "to": v2},
            {"field": "environment", "added": [], "removed": [], "changed": ["MODE"]},
        ])
    );
    let text = server.cli_ok(&["stack", "upgrade", &stack, "--file", &f2, "--dry-run"]);
    assert!(
        text.contains(&format!("~ web: image {v1} → {v2}; environment ~MODE"))
            && text.contains("= side")
            && text.contains("dry run: nothing was changed"),
        "{text}"
    );
    assert_eq!(id_of(&host, &format!("{stack}-web-1")), web1);
    assert_eq!(serves(&host, &stack), "v1");

    // A missing image is named before anything changes.
    let fmissing = file(
        "missing.yaml",
        compose("dockmesh-test/release:nowhere", "two"),
    );
    let out = server.cli(&["stack", "upgrade", &stack, "--file", &fmissing]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dockmesh-test/release:nowhere"), "{err}");
    // Invalid files are refused the same way.
    let finvalid = file(
        "invalid.yaml",
        "services:\n  web:\n    ports: [nope]\n".into(),
    );
    let out = server.cli(&["stack", "upgrade", &stack, "--file", &finvalid]);
    assert_eq!(out.status.code(), Some(1), "a refusal exits 1");
    assert_eq!(id_of(&host, &format!("{stack}-web-1")), web1);

    // The upgrade replaces only the changed service and keeps the volume's data.
    let out = server.cli(&["stack", "upgrade", "--json", &stack, "--file", &f2]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(
        (v["rev"].as_u64(), v["outcome"].as_str()),
        (Some(2), Some("deployed"))
    );
    assert_eq!(serves(&host, &stack), "v2");
    assert_ne!(
        id_of(&host, &format!("{stack}-web-1")),
        web1,
        "web replaced"
    );
    assert_eq!(
        id_of(&host, &format!("{stack}-side-1")),
        side,
        "side untouched"
    );
    assert_eq!(precious(&host, &stack), "kept");

    // A broken release with --backup: rolled back by itself, data restored.
    let out = server.cli(&[
        "stack", "upgrade", "--json", &stack, "--file", &fbad, "--backup",
    ]);
    assert_eq!(out.status.code(), Some(1), "a rolled-back release exits 1");
    let v = json(&out);
    assert_eq!(v["outcome"], "rolled_back");
    assert_eq!(v["rev"], 3);
    let volume = format!("{stack}_db");
    assert_eq!(v["restored"], serde_json::json!([volume]));
    let copy = format!("{volume}-backup-r3");
    assert_eq!(v["backups"][&volume], copy.as_str());
    assert!(
        v["detail"].as_str().unwrap().contains("web"),
        "the reason names the service: {v}"
    );
    assert_eq!(serves(&host, &stack), "v2", "the previous release runs");
    assert_eq!(
        precious(&host, &stack),
        "kept",
        "the broken release's change to the data was undone"
    );
    let labels = docker(
        &host,
        &["volume", "inspect", "-f", "{{json .Labels}}", &copy],
    )
    .unwrap();
    assert!(labels.contains("com.dockmesh.backup.of"), "{labels}");

    // The same broken release without a backup: containers rolled back, data left as the
    // release wrote it (what --backup is for).
    let out = server.cli(&["stack", "upgrade", "--json", &stack, "--file", &fbad]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["restored"], serde_json::json!([]));
    assert_eq!(serves(&host, &stack), "v2");
    assert_eq!(precious(&host, &stack), "clobbered");
    docker(
        &host,
        &[
            "exec",
            &format!("{stack}-web-1"),
            "sh",
            "-c",
            "echo kept > /data/precious",
        ],
    )
    .unwrap();

    // History, then a rollback to the first release.
    let out = server.cli(&["stack", "history", "--json", &stack]);
    let h = json(&out);
    let summary: Vec<(u64, String, bool)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rev"].as_u64().unwrap(),
                r["outcome"].as_str().unwrap().to_owned(),
                r["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (4, "rolled_back".into(), false),
            (3, "rolled_back".into(), false),
            (2, "deployed".into(), true),
            (1, "deployed".into(), false),
        ]
    );
    assert!(
        h[3]["images"]["web"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "image ids are kept: {h}"
    );
    let text = server.cli_ok(&["stack", "history", &stack]);
    assert!(text.contains("2 *"), "{text}");

    let out = server.cli(&["stack", "rollback", "--json", &stack, "--to", "1"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(
        (v["rev"].as_u64(), v["outcome"].as_str()),
        (Some(5), Some("deployed"))
    );
    assert_eq!(serves(&host, &stack), "v1");
    assert_eq!(precious(&host, &stack), "kept");
    let h = json(&server.cli(&["stack", "history", "--json", &stack]));
    assert_eq!(
        (h[0]["rev"].as_u64(), h[0]["from_rev"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(h[0]["current"], true);
    // Without --to: back to the deployed release before the running one (2).
    let v = json(&server.cli(&["stack", "rollback", "--json", &stack]));
    assert_eq!(v["outcome"], "deployed");
    assert_eq!(serves(&host, &stack), "v2");
    let out = server.cli(&["stack", "rollback", &stack, "--to", "99"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no release 99"));

    server.cli_ok(&["stack", "rm", &stack, "--volumes"]);
    let _ = docker(&host, &["volume", "rm", "-f", &copy]);
}

/// Three replicas of `web` serving `/release`, replaced one at a time.
fn replicated(image: &str, order: &str) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /www; cp /release /www/index.html; httpd -p 8080 -h /www; while true; do sleep 1; done"]
    healthcheck:
      test: ["CMD-SHELL", "test ! -f /broken && wget -q -O /dev/null http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 2
    deploy:
      replicas: 3
      update_config:
        order: {order}
        monitor: 1s
        failure_action: rollback
"#
    )
}

/// Each replica's (id, start time).
fn replicas(host: &str, stack: &str) -> Vec<(String, String)> {
    (1..=3)
        .map(|n| {
            let out = docker(
                host,
                &[
                    "inspect",
                    "-f",
                    "{{.Id}} {{.State.StartedAt}}",
                    &format!("{stack}-web-{n}"),
                ],
            )
            .unwrap();
            let (id, at) = out.trim().split_once(' ').unwrap();
            (id.to_owned(), at.to_owned())
        })
        .collect()
}

fn serves_replica(host: &str, stack: &str, n: u32) -> String {
    docker(
        host,
        &[
            "exec",
            &format!("{stack}-web-{n}"),
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/",
        ],
    )
    .unwrap()
    .trim()
    .to_owned()
}

/// Run `f` while sampling, every 100 ms, how many of the stack's containers run and are
/// healthy; the fewest seen, and `f`'s result.
fn sampled<T>(host: &str, stack: &str, f: impl FnOnce() -> T) -> (usize, T) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let stop = Arc::new(AtomicBool::new(false));
    let min = Arc::new(Mutex::new(usize::MAX));
    let sampler = {
        let (stop, min, host, stack) =
            (stop.clone(), min.clone(), host.to_owned(), stack.to_owned());
        std::thread::spawn(move || {
            let filter = format!("label=com.docker.compose.project={stack}");
            while !stop.load(Ordering::SeqCst) {
                if let Ok(out) = docker(
                    &host,
                    &[
                        "ps",
                        "-q",
                        "--filter",
                        &filter,
                        "--filter",
                        "health=healthy",
                    ],
                ) {
                    let n = out.lines().filter(|l| !l.trim().is_empty()).count();
                    let mut m = min.lock().unwrap();
                    *m = (*m).min(n);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    let result = f();
    stop.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let m = *min.lock().unwrap();
    (m, result)
}

fn rolling_case(order: &str) {
    let Some(host) = engine() else { return };
    let v1 = release_image(&host, "v1", false);
    let v2 = release_image(&host, "v2", false);
    let bad = release_image(&host, "bad", true);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::launch(&dir.path().join("data"), &[]);
    let stack = unique("roll");
    let _cleanup = docker_cleanup(&host, &stack);
    let file = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let f1 = file("v1.yaml", replicated(&v1, order));
    let f2 = file("v2.yaml", replicated(&v2, order));
    let fbad = file("bad.yaml", replicated(&bad, order));
    server.cli_ok(&["stack", "deploy", &stack, "--file", &f1, "--host", "local"]);
    let health = server.cli_ok(&["stack", "status", &stack]);
    assert_eq!(
        health.matches(&format!("{stack}-web-")).count(),
        3,
        "{health}"
    );
    for n in 1..=3 {
        assert_eq!(serves_replica(&host, &stack, n), "v1");
    }
    let before = replicas(&host, &stack);
    // Healthy before sampling starts.
    let filter = format!("label=com.docker.compose.project={stack}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while docker(
        &host,
        &[
            "ps",
            "-q",
            "--filter",
            &filter,
            "--filter",
            "health=healthy",
        ],
    )
    .unwrap()
    .lines()
    .count()
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replicas never became healthy"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (min, out) = sampled(&host, &stack, || {
        server.cli(&["stack", "upgrade", &stack, "--file", &f2, "--json"])
    });
    assert!(out.status.success());
    assert_eq!(json(&out)["outcome"], "deployed");
    let floor = if order == "start-first" { 3 } else { 2 };
    assert!(
        min >= floor,
        "{min} replicas healthy at one moment, fewer than {floor}"
    );
    let upgraded = replicas(&host, &stack);
    for n in 0..3 {
        assert_ne!(upgraded[n].0, before[n].0, "replica {} replaced", n + 1);
        assert_eq!(serves_replica(&host, &stack, n as u32 + 1), "v2");
    }

    let (min, out) = sampled(&host, &stack, || {
        server.cli(&["stack", "upgrade", &stack, "--file", &fbad, "--json"])
    });
    assert_eq!(out.status.code(), Some(1), "rolled back");
    let v = json(&out);
    assert_eq!(v["outcome"], "rolled_back");
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("after 1 of 3 replicas"), "{detail}");
    assert!(
        min >= floor,
        "{min} replicas healthy at one moment, fewer than {floor}"
    );
    let after = replicas(&host, &stack);
    assert_eq!(
        after.iter().map(|r| &r.0).collect::<Vec<_>>(),
        upgraded.iter().map(|r| &r.0).collect::<Vec<_>>(),
        "every replica is its old container again"
    );
    assert_eq!(after[1], upgraded[1], "replica 2 never restarted");
    assert_eq!(after[2], upgraded[2], "replica 3 never restarted");
    if order == "start-first" {
        assert_eq!(
            after[0], upgraded[0],
            "start-first: replica 1 never restarted either"
        );
    }
    for n in 1..=3 {
        assert_eq!(serves_replica(&host, &stack, n), "v2");
    }
    server.cli_ok(&["stack", "rm", &stack]);
}

fn docker_cleanup(host: &str, stack: &str) -> impl Drop {
    struct C(String, String);
    impl Drop for C {
        fn drop(&mut self) {
            let filter = format!("label=com.docker.compose.project={}", self.1);
            if let Ok(ids) = docker(&self.0, &["ps", "-aq", "--filter", &filter]) {
                for id in ids.lines() {
                    let _ = docker(&self.0, &["rm", "-f", id]);
                }
            }
            let _ = docker(&self.0, &["network", "rm", &format!("{}_default", self.1)]);
        }
    }
    C(host.to_owned(), stack.to_owned())
}

#[test]
fn rolling_stop_first_keeps_two_of_three_serving_and_rolls_back_after_the_first() {
    rolling_case("stop-first");
}

#[test]
fn rolling_start_first_keeps_all_serving_and_restarts_nothing_on_rollback() {
    rolling_case("start-first");
}
