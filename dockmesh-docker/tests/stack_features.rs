//! The Compose features dockmesh supports reach the engine as Compose would set them: bind
//! mounts relative to the stack directory, env_file, networks with aliases, memory limit, user,
//! working directory, restart policy, labels, entrypoint, stop grace period; services removed
//! from the file are removed from the engine; unknown stacks and endpoints give clear errors.

use bollard::models::RestartPolicyNameEnum;
use dockmesh_core::HostId;
use dockmesh_core::ports::{HostRuntime, RuntimeErrorKind};
use dockmesh_core::snapshot::BindMount;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::{DockerConfig, DockerRuntime, Endpoint, labels, testsupport};

const FEATURES: &str = r#"services:
  api:
    image: dockmesh-test/busybox:1
    command: ["httpd", "-f", "-p", "9000", "-h", "/srv/site"]
    user: "1000"
    working_dir: /srv/site
    mem_limit: 64m
    restart: on-failure:3
    labels:
      tier: api
    env_file: api.env
    environment:
      - MODE=${MODE:-prod}
    volumes:
      - ./site:/srv/site:ro
    networks:
      back:
        aliases: [backend]
    healthcheck:
      test: wget -q -O- http://127.0.0.1:9000/
      interval: 1s
      retries: 20
    stop_grace_period: 2s
  probe:
    image: dockmesh-test/busybox:1
    entrypoint: ["/bin/sh", "-c"]
    command: ["trap 'exit 0' TERM; while :; do sleep 1; done"]
    networks: [back]
    depends_on: [api]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://backend:9000/"]
      interval: 1s
      retries: 20
    stop_grace_period: 1s
networks:
  back:
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_features_reach_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) =
        testsupport::engine_for_test("compose_features_reach_the_engine", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-feat");
    let files = StackFiles {
        name: name.clone(),
        compose: FEATURES.into(),
        env: Some("MODE=test\n".into()),
    };
    rt.write_stack_files(&files).await.unwrap();
    let stack_dir = rt.stack_dir(&name);
    std::fs::create_dir(stack_dir.join("site")).unwrap();
    std::fs::write(stack_dir.join("site/index.html"), "from the bind mount\n").unwrap();
    std::fs::write(
        stack_dir.join("api.env"),
        "FROM_FILE=yes\nMODE=overridden\n",
    )
    .unwrap();

    let report = rt.deploy(&files).await.unwrap();
    assert_eq!(report.created, ["api", "probe"]);
    let health = rt.wait_healthy(&name).await.unwrap();
    assert!(
        health.healthy(),
        "the probe reaches api by its alias: {health:?}"
    );

    let api = rt
        .docker()
        .inspect_container(&labels::container_name(&name, "api"), None)
        .await
        .unwrap();
    let config = api.config.as_ref().unwrap();
    let host = api.host_config.as_ref().unwrap();
    assert_eq!(config.user.as_deref(), Some("1000"));
    assert_eq!(config.working_dir.as_deref(), Some("/srv/site"));
    assert_eq!(config.stop_timeout, Some(2));
    assert_eq!(
        config
            .labels
            .as_ref()
            .unwrap()
            .get("tier")
            .map(String::as_str),
        Some("api")
    );
    let env = config.env.clone().unwrap();
    assert!(env.contains(&"FROM_FILE=yes".to_owned()), "{env:?}");
    assert!(
        env.contains(&"MODE=test".to_owned()),
        "environment overrides env_file: {env:?}"
    );
    assert_eq!(host.memory, Some(64 << 20));
    let restart = host.restart_policy.as_ref().unwrap();
    assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
    assert_eq!(restart.maximum_retry_count, Some(3));
    let mounts = api.mounts.clone().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        mounts[0].source.as_deref(),
        Some(stack_dir.join("site").to_str().unwrap())
    );
    assert_eq!(mounts[0].rw, Some(false));
    let nets = api
        .network_settings
        .as_ref()
        .unwrap()
        .networks
        .as_ref()
        .unwrap();
    let back = &nets[&format!("{name}_back")];
    assert!(
        back.aliases
            .as_ref()
            .unwrap()
            .contains(&"backend".to_owned())
    );
    assert_eq!(
        nets.len(),
        1,
        "only the declared network: {:?}",
        nets.keys()
    );
    let probe = rt
        .docker()
        .inspect_container(&labels::container_name(&name, "probe"), None)
        .await
        .unwrap();
    assert_eq!(probe.config.unwrap().entrypoint.unwrap(), ["/bin/sh", "-c"]);

    let objects = testsupport::engine_objects(&rt, &name).await;
    assert_eq!(
        objects.networks,
        [format!("{name}_back")],
        "the unused default network is not created"
    );

    let snap = rt.snapshot().await.unwrap();
    assert_eq!(
        snap.stacks[&name].bind_mounts,
        [BindMount {
            service: "api".into(),
            source: stack_dir.join("site").display().to_string(),
            target: "/srv/site".into(),
            read_only: true,
        }]
    );
    let names = [
        labels::container_name(&name, "api"),
        labels::container_name(&name, "probe"),
    ];
    assert_eq!(snap.stacks[&name].container_names, names);
    assert!(names.iter().all(|n| snap.container_names.contains(n)));

    // A service removed from the file is removed from the engine.
    let without_probe = StackFiles {
        compose: FEATURES[..FEATURES.find("  probe:").unwrap()].to_owned() + "networks:\n  back:\n",
        ..files.clone()
    };
    let report = rt.deploy(&without_probe).await.unwrap();
    assert_eq!(report.unchanged, ["api"], "{report:?}");
    let status = rt.stack_status(&name).await.unwrap();
    let services: Vec<&str> = status
        .containers
        .iter()
        .map(|c| c.service.as_str())
        .collect();
    assert_eq!(services, ["api"]);

    rt.remove_stack(&name, true).await.unwrap();
    let left = testsupport::engine_objects(&rt, &name).await;
    assert!(
        left.containers.is_empty() && left.networks.is_empty() && left.volumes.is_empty(),
        "{left:?}"
    );
    rt.remove_stack_files(&name).await.unwrap();
    assert!(
        stack_dir.join("site/index.html").exists(),
        "data beside the stack files is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stack_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test("an_unknown_stack_is_not_found", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-none");
    assert!(rt.stack_status(&name).await.unwrap().containers.is_empty());
    for err in [
        rt.stop_stack(&name).await.unwrap_err(),
        rt.start_stack(&name).await.unwrap_err(),
        rt.wait_healthy(&name).await.unwrap_err(),
    ] {
        assert_eq!(err.kind, RuntimeErrorKind::NotFound, "{err}");
        assert!(
            err.message.contains(&name) && err.message.contains("deploy it first"),
            "{err}"
        );
    }
    rt.remove_stack(&name, true)
        .await
        .expect("removing an unknown stack is not an error");
    let bad = rt.stack_status("../etc").await.unwrap_err();
    assert_eq!(bad.kind, RuntimeErrorKind::InvalidStack, "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_explicit_or_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let Some(default) =
        testsupport::engine_for_test("endpoints_are_explicit_or_unreachable", dir.path()).await
    else {
        return;
    };
    let explicit = DockerRuntime::connect(
        HostId::new("explicit"),
        DockerConfig::new(dir.path()).with_endpoint(default.endpoint().clone()),
    )
    .await
    .expect("the same engine through an explicit endpoint");
    assert_eq!(explicit.api_version(), default.api_version());
    let snap = explicit.snapshot().await.unwrap();
    assert!(snap.online);
    assert_eq!(snap.host, HostId::new("explicit"));
    assert_eq!(
        snap.docker_api_version,
        explicit.api_version(),
        "the version negotiated with this engine"
    );

    let missing = dir.path().join("no-engine.sock");
    let err = DockerRuntime::connect(
        HostId::new("gone"),
        DockerConfig::new(dir.path()).with_endpoint(Endpoint::Unix(missing.clone())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
    assert!(err.message.contains(missing.to_str().unwrap()), "{err}");
    let err = DockerRuntime::connect(
        HostId::new("gone"),
        DockerConfig::new(dir.path()).with_endpoint(Endpoint::Tcp(format!(
            "127.0.0.1:{}",
            testsupport::free_port()
        ))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_with_restart_true_follows_its_replaced_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let test = "a_dependent_with_restart_true_follows_its_replaced_dependency";
    let Some(rt) = testsupport::engine_for_test(test, dir.path()).await else {
        return;
    };
    let name = testsupport::unique_name("dm-restart");
    let file = |version: &str| StackFiles {
        name: name.clone(),
        compose: format!(
            "services:\n  db:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '300']\n    environment: {{VERSION: '{version}'}}\n  web:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '300']\n    depends_on:\n      db: {{condition: service_started, restart: true}}\n  worker:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '300']\n    depends_on: [db]\n"
        ),
        env: None,
    };
    rt.write_stack_files(&file("1")).await.unwrap();
    rt.deploy(&file("1")).await.unwrap();
    rt.write_stack_files(&file("2")).await.unwrap();
    let report = rt.deploy(&file("2")).await.unwrap();
    assert_eq!(report.recreated, ["db", "web"], "{report:?}");
    assert_eq!(report.unchanged, ["worker"], "{report:?}");
    rt.remove_stack(&name, true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_env_and_files_reach_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let test = "secrets_from_env_and_files_reach_the_container";
    let Some(rt) = testsupport::engine_for_test(test, dir.path()).await else {
        return;
    };
    let name = testsupport::unique_name("dm-secret");
    let files = StackFiles {
        name: name.clone(),
        compose: "services:\n  app:\n    image: dockmesh-test/busybox:1\n    command: [sh, -c, 'cat /run/secrets/token /run/secrets/file_secret /etc/motd; sleep 300']\n    secrets: [token, file_secret]\n    configs: [{source: motd, target: /etc/motd}]\nsecrets:\n  token: {environment: TOKEN}\n  file_secret: {file: ./secret.txt}\nconfigs:\n  motd: {content: \"hello\\n\"}\n".into(),
        env: Some("TOKEN=from-env\n".into()),
    };
    rt.write_stack_files(&files).await.unwrap();
    std::fs::write(rt.stack_dir(&name).join("secret.txt"), "from-file\n").unwrap();
    rt.deploy(&files).await.unwrap();
    let container = labels::container_name(&name, "app");
    let mut logs = String::new();
    for _ in 0..50 {
        let out = std::process::Command::new("docker")
            .args(["logs", &container])
            .output()
            .unwrap();
        logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if logs.contains("hello") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(logs, "from-envfrom-file\nhello\n", "{logs:?}");
    rt.remove_stack(&name, true).await.unwrap();
}
