//! `dockmesh stack check`, run as a user runs it: offline, exit 0 / 1 / 2.

use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .current_dir(dir)
        .args(["stack", "check"])
        .args(args)
        .env_remove("DOCKER_HOST")
        .output()
        .expect("run the dockmesh binary");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

const GOOD: &str = r#"services:
  web:
    image: "nginx:${TAG:-1.27}"
    container_name: shop-web
    ports: ["8080:80"]
    volumes: [data:/data, ./conf:/etc/conf:ro]
    depends_on: [db]
  db:
    image: postgres:16
    ulimits: {nofile: 4096}
  debug:
    image: busybox
    profiles: [debug]
volumes:
  data:
"#;

const BAD: &str = r#"services:
  web:
    image: x
    ipc: host
    cpus: lots
    deploy:
      placement: {constraints: [node.role==manager]}
  api:
    build: .
"#;

fn stack_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("Shop").tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn a_good_file_prints_what_would_be_created() {
    let dir = stack_dir(&[("compose.yaml", GOOD), (".env", "TAG=1.28\n")]);
    let run = check(dir.path(), &["--file", "compose.yaml", "--name", "shop"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    for fragment in [
        "stack shop: ok",
        "web (image nginx:1.28, container shop-web",
        "port 8080->80/tcp",
        "volume shop_data -> /data",
        "shop_default",
        "bind mounts (not moved by a migration",
    ] {
        assert!(run.stdout.contains(fragment), "{fragment}: {}", run.stdout);
    }
    assert!(
        !run.stdout.contains("debug"),
        "inactive profile: {}",
        run.stdout
    );

    let run = check(
        dir.path(),
        &["-f", "compose.yaml", "--profile", "debug", "--json"],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let name = v["project"].as_str().unwrap();
    assert!(
        name.starts_with("shop"),
        "named after the directory: {name}"
    );
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["db", "web", "debug"]);
    assert_eq!(v["bind_mounts"][0]["target"], "/etc/conf");
}

#[test]
fn every_problem_is_named_with_exit_1() {
    let dir = stack_dir(&[("compose.yaml", BAD)]);
    let run = check(dir.path(), &["--file", "compose.yaml"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    for fragment in [
        "4 problems",
        "service `web` uses `ipc`",
        "service `web` `cpus`",
        "`placement`",
        "service `api` uses `build`",
    ] {
        assert!(run.stderr.contains(fragment), "{fragment}: {}", run.stderr);
    }
    let run = check(dir.path(), &["--file", "compose.yaml", "--json"]);
    assert_eq!(run.code, 1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 4, "{v}");
}

#[test]
fn unreadable_input_exits_2() {
    let dir = stack_dir(&[("compose.yaml", GOOD)]);
    let run = check(dir.path(), &["--file", "missing.yaml"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("missing.yaml cannot be read"),
        "{}",
        run.stderr
    );
    let run = check(
        dir.path(),
        &["--file", "compose.yaml", "--env-file", "missing.env"],
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("missing.env"), "{}", run.stderr);
}
