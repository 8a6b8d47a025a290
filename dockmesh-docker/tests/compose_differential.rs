//! The oracle: Compose itself. The same compose file is brought up by `docker-compose` (Debian's
//! package, `--compatibility` so that `deploy` applies as it does with Compose v2) under one
//! project name and deployed by dockmesh under another; the containers must match field by
//! field of `docker inspect` (`Config`, `HostConfig`, `Mounts`, networks, labels other than
//! Compose's and dockmesh's bookkeeping). Where the two tools legitimately differ, [`DIFFERENT`]
//! names the field and why.

mod support_compose;

use dockmesh_core::ports::HostRuntime;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::testsupport;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use support_compose::{Cleanup, run};

/// The file both tools run. `@NAME@` is replaced by a name of each run's own (container names
/// are global on an engine).
const FILE: &str = r#"services:
  web:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    container_name: "@NAME@-web"
    hostname: web1
    domainname: example.org
    user: "1000"
    working_dir: /tmp
    environment:
      GREETING: hello
    labels:
      tier: web
    ulimits:
      nproc: 4096
      nofile: {soft: 2048, hard: 4096}
    expose: ["8080", "53/udp"]
    ports: ["127.0.0.1::80"]
    read_only: true
    tmpfs: ["/run", "/scratch:size=16m"]
    security_opt: ["no-new-privileges:true"]
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    shm_size: 32m
    dns: [192.0.2.53]
    dns_search: [example.org]
    dns_opt: ["ndots:2"]
    tty: true
    stdin_open: true
    init: true
    pids_limit: 100
    logging:
      driver: json-file
      options: {max-size: 1m, max-file: "2"}
    sysctls: {net.core.somaxconn: 1024}
    stop_signal: SIGINT
    stop_grace_period: 3s
    extra_hosts: ["db.local:10.1.2.3"]
    group_add: ["1001"]
    cpus: 0.5
    mem_limit: 64m
    mem_reservation: 32m
    devices: ["/dev/null:/dev/mynull:rw"]
    restart: unless-stopped
    volumes:
      - data:/data:nocopy
      - ./conf:/conf:ro
      - ./conf:/conf2:z
    secrets: [db_password, {source: api_key, target: key}]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
      timeout: 5s
      retries: 3
      start_period: 1s
  side:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    network_mode: service:web
    depends_on: [web]
  hosty:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    network_mode: host
  limited:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    networks:
      back:
        aliases: [worker]
    deploy:
      resources:
        limits: {cpus: "0.25", memory: 48m}
        reservations: {memory: 16m}
      restart_policy: {condition: on-failure, max_attempts: 2}
  limited2:
    extends: limited
    environment: [EXTRA=1]
    networks:
      back:
        aliases: [worker2]
  migrate:
    image: dockmesh-test/busybox:1
    command: ["sh", "-c", "sleep 1; echo migrated"]
  app:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    depends_on:
      migrate: {condition: service_completed_successfully}
      web: {condition: service_started}
  debug:
    image: dockmesh-test/busybox:1
    command: ["sleep", "300"]
    profiles: [debug]
volumes:
  data:
networks:
  back:
secrets:
  db_password: {file: ./db_password.txt}
  api_key: {file: ./api_key.txt}
"#;

/// The fields where dockmesh legitimately differs from `docker-compose` 1.29, and why.
const DIFFERENT: &[(&str, &str)] = &[
    (
        "HostConfig.Binds",
        "docker-compose 1 writes named volumes as `Binds`, dockmesh as `Mounts`: compared \
         through the effective `Mounts` of the container instead",
    ),
    (
        "HostConfig.Mounts",
        "as HostConfig.Binds: the effective `Mounts` are compared",
    ),
    (
        "Config.Volumes",
        "docker-compose 1 declares each mount target as an anonymous-volume point as well; the \
         mounts themselves are compared",
    ),
    (
        "Config.Hostname",
        "without `hostname` the engine uses the container id, different per container",
    ),
    (
        "Config.Labels",
        "compared without Compose's `com.docker.compose.*` and dockmesh's `com.dockmesh.*` \
         bookkeeping (see labels())",
    ),
];

/// `docker inspect` of the container of every service of `project`, by service.
fn inspect(project: &str) -> BTreeMap<String, Value> {
    let ids = run(Command::new("docker").args([
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]));
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert!(!ids.is_empty(), "project {project} has no containers");
    let json = run(Command::new("docker").arg("inspect").args(&ids));
    let all: Vec<Value> = serde_json::from_str(&json).unwrap();
    all.into_iter()
        .map(|c| {
            let service = c["Config"]["Labels"]["com.docker.compose.service"]
                .as_str()
                .unwrap()
                .to_owned();
            (service, c)
        })
        .collect()
}

/// `value` as text with what differs by run replaced: project names, stack directories,
/// container ids.
fn normalise(value: &Value, project: &str, dir: &Path, name: &str) -> Value {
    let text = value.to_string();
    let text = text
        .replace(&dir.display().to_string(), "<dir>")
        .replace(name, "<name>")
        .replace(project, "<project>");
    let mut out = String::new();
    let mut rest = text.as_str();
    // `container:<64 hex>` (network_mode service:NAME) and short ids in aliases.
    while let Some(i) = rest.find("container:") {
        out.push_str(&rest[..i + "container:".len()]);
        rest = &rest[i + "container:".len()..];
        let hex = rest.chars().take_while(char::is_ascii_hexdigit).count();
        if hex == 64 {
            out.push_str("<id>");
            rest = &rest[hex..];
        }
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

fn labels(config: &Value) -> BTreeMap<String, Value> {
    config["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !k.starts_with("com.docker.compose.") && !k.starts_with("com.dockmesh.")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The effective mounts, in a stable order, without what names the run.
fn mounts(c: &Value) -> Vec<Value> {
    let mut m: Vec<Value> = c["Mounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            serde_json::json!({
                "Type": m["Type"], "Name": m["Name"], "Source": if m["Type"] == "volume" { Value::Null } else { m["Source"].clone() },
                "Destination": m["Destination"], "RW": m["RW"], "Driver": m["Driver"],
            })
        })
        .collect();
    m.sort_by_key(|v| v["Destination"].to_string());
    m
}

/// The networks joined and their aliases, without the ones the engine derives from the
/// container's id or name.
fn networks(c: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let id = c["Id"].as_str().unwrap_or_default();
    let name = c["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/');
    c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(net, e)| {
                    let aliases = e["Aliases"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|a| a.as_str().map(str::to_owned))
                        .filter(|a| !id.starts_with(a.as_str()) && a != name)
                        .collect();
                    (net.clone(), aliases)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Lists whose order tells the engine nothing (docker-compose 1 keeps `ulimits` in file order,
/// dockmesh sorts them by name).
const ORDERLESS: &[&str] = &["HostConfig.Ulimits", "HostConfig.Tmpfs"];

fn sorted(v: &Value) -> Value {
    match v {
        Value::Array(items) => {
            let mut items = items.clone();
            items.sort_by_key(Value::to_string);
            Value::Array(items)
        }
        other => other.clone(),
    }
}

fn differs_legitimately(field: &str) -> bool {
    DIFFERENT.iter().any(|(f, _)| *f == field)
}

/// Every difference between the two containers of a service, as `field: compose vs dockmesh`.
fn compare(service: &str, compose: &Value, dockmesh: &Value, out: &mut Vec<String>) {
    for section in ["Config", "HostConfig"] {
        let (a, b) = (&compose[section], &dockmesh[section]);
        let keys: BTreeSet<&String> = a
            .as_object()
            .into_iter()
            .chain(b.as_object())
            .flat_map(|m| m.keys())
            .collect();
        for key in keys {
            let field = format!("{section}.{key}");
            if differs_legitimately(&field) {
                continue;
            }
            let (x, y) = if ORDERLESS.contains(&field.as_str()) {
                (&sorted(&a[key.as_str()]), &sorted(&b[key.as_str()]))
            } else {
                (&a[key.as_str()], &b[key.as_str()])
            };
            // An empty value and an absent one tell the engine the same.
            let empty = |v: &Value| match v {
                Value::Null => true,
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::String(s) => s.is_empty(),
                _ => false,
            };
            if x != y && !(empty(x) && empty(y)) {
                out.push(format!("{service}: {field}: compose {x} vs dockmesh {y}"));
            }
        }
    }
    if labels(&compose["Config"]) != labels(&dockmesh["Config"]) {
        out.push(format!(
            "{service}: labels: compose {:?} vs dockmesh {:?}",
            labels(&compose["Config"]),
            labels(&dockmesh["Config"])
        ));
    }
    if mounts(compose) != mounts(dockmesh) {
        out.push(format!(
            "{service}: Mounts: compose {:?} vs dockmesh {:?}",
            mounts(compose),
            mounts(dockmesh)
        ));
    }
    if networks(compose) != networks(dockmesh) {
        out.push(format!(
            "{service}: networks: compose {:?} vs dockmesh {:?}",
            networks(compose),
            networks(dockmesh)
        ));
    }
}

/// The files the stack's bind mounts and secrets use.
fn write_stack_dir(dir: &Path) {
    std::fs::create_dir(dir.join("conf")).unwrap();
    std::fs::write(dir.join("db_password.txt"), "s3cret\n").unwrap();
    std::fs::write(dir.join("api_key.txt"), "k3y\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dockmesh_creates_what_docker_compose_creates() {
    let stacks = tempfile::tempdir().unwrap();
    let test = "dockmesh_creates_what_docker_compose_creates";
    let Some(rt) = testsupport::engine_for_test(test, stacks.path()).await else {
        return;
    };
    let Some(compose_bin) = support_compose::oracle_for_test(test) else {
        return;
    };
    let id = testsupport::unique_name("dmdiff");
    let (p_compose, p_dockmesh) = (format!("{id}-c"), format!("{id}-d"));
    let _cleanup = Cleanup(vec![p_compose.clone(), p_dockmesh.clone()]);

    // docker-compose, in a directory of its own.
    let compose_dir = tempfile::tempdir().unwrap();
    let compose_name = format!("{id}-cn");
    write_stack_dir(compose_dir.path());
    std::fs::write(
        compose_dir.path().join("docker-compose.yml"),
        FILE.replace("@NAME@", &compose_name),
    )
    .unwrap();
    run(Command::new(compose_bin)
        .current_dir(compose_dir.path())
        .args(["--compatibility", "-p", &p_compose, "up", "-d"]));

    // dockmesh.
    let dockmesh_name = format!("{id}-dn");
    let files = StackFiles {
        name: p_dockmesh.clone(),
        compose: FILE.replace("@NAME@", &dockmesh_name),
        env: None,
    };
    rt.write_stack_files(&files).await.unwrap();
    let dockmesh_dir = rt.stack_dir(&p_dockmesh);
    write_stack_dir(&dockmesh_dir);
    rt.deploy(&files).await.unwrap();
    let health = rt.wait_healthy(&p_dockmesh).await.unwrap();
    assert!(
        health.healthy(),
        "a one-shot service that ended with 0 counts as healthy: {health:?}"
    );

    let compose = inspect(&p_compose);
    let dockmesh = inspect(&p_dockmesh);
    let services = |m: &BTreeMap<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        services(&dockmesh),
        services(&compose),
        "the same services (the `debug` profile is not active)"
    );
    let mut differences = Vec::new();
    for (service, c) in &compose {
        let d = &dockmesh[service];
        let c = normalise(c, &p_compose, compose_dir.path(), &compose_name);
        let d = normalise(d, &p_dockmesh, &dockmesh_dir, &dockmesh_name);
        compare(service, &c, &d, &mut differences);
    }
    assert!(
        differences.is_empty(),
        "dockmesh differs from docker-compose:\n{}",
        differences.join("\n")
    );
}
