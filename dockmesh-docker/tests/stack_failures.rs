//! Each way a deploy can fail gives a clear error and leaves the engine as it was: an
//! unsupported key, a missing image, a missing external volume, a port already in use (also when
//! it makes a changed service's recreation fail), a healthcheck that never passes, and a
//! `platform` the image is not for.

use dockmesh_core::ports::{HostRuntime, RuntimeErrorKind};
use dockmesh_core::types::StackFiles;
use dockmesh_docker::testsupport::{self, EngineObjects};
use dockmesh_docker::{DockerRuntime, labels};

fn stack(name: &str, compose: &str) -> StackFiles {
    StackFiles {
        name: name.to_owned(),
        compose: compose.to_owned(),
        env: None,
    }
}

async fn objects(rt: &DockerRuntime, name: &str) -> EngineObjects {
    testsupport::engine_objects(rt, name).await
}

fn nothing(objects: &EngineObjects) -> bool {
    objects.containers.is_empty() && objects.volumes.is_empty() && objects.networks.is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_key_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test(
        "an_unsupported_key_is_named_and_nothing_is_created",
        dir.path(),
    )
    .await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-key");
    let files = stack(
        &name,
        "services:\n  web:\n    image: dockmesh-test/busybox:1\n    ipc: host\n    volumes: [data:/d]\nvolumes:\n  data:\n",
    );
    let before = objects(&rt, &name).await;
    let err = rt.deploy(&files).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::InvalidStack, "{err}");
    assert!(
        err.message.contains("service `web`") && err.message.contains("`ipc`"),
        "{err}"
    );
    assert!(err.message.contains("Nothing was changed"), "{err}");
    assert_eq!(objects(&rt, &name).await, before);
    assert!(nothing(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test(
        "a_missing_image_is_named_and_nothing_is_created",
        dir.path(),
    )
    .await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-img");
    // The first service's image exists: the check must still happen before anything is created.
    let files = stack(
        &name,
        "services:\n  ok:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '60']\n    volumes: [data:/d]\n  app:\n    image: dockmesh-test/no-such-image:9\nvolumes:\n  data:\n",
    );
    let before = objects(&rt, &name).await;
    let err = rt.deploy(&files).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::NotFound, "{err}");
    assert!(
        err.message.contains("dockmesh-test/no-such-image:9")
            && err.message.contains("service `app`"),
        "{err}"
    );
    assert!(
        err.message.contains("never pulled") && err.message.contains("Nothing was changed"),
        "{err}"
    );
    assert_eq!(objects(&rt, &name).await, before);
    assert!(nothing(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_external_volume_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test("a_missing_external_volume", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-ext");
    let files = stack(
        &name,
        &format!(
            "services:\n  a:\n    image: dockmesh-test/busybox:1\n    volumes: [old:/d]\nvolumes:\n  old:\n    external: true\n    name: {name}-gone\n"
        ),
    );
    let err = rt.deploy(&files).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::NotFound, "{err}");
    assert!(
        err.message.contains(&format!("{name}-gone")) && err.message.contains("external"),
        "{err}"
    );
    assert!(nothing(&objects(&rt, &name).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_conflict_and_the_deploy_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test("a_port_in_use_is_a_conflict", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-port");
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let files = testsupport::two_service_stack(&name, taken, "hello");
    let before = objects(&rt, &name).await;
    let err = rt.deploy(&files).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Conflict, "{err}");
    assert!(
        err.message.contains("service `web`") && err.message.contains(&format!("{taken}/tcp")),
        "{err}"
    );
    assert!(
        err.message.contains("already in use") && err.message.contains("rolled back"),
        "{err}"
    );
    assert_eq!(
        objects(&rt, &name).await,
        before,
        "containers, volumes and network of this deploy are gone"
    );
    assert!(nothing(&before));
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_recreation_puts_the_old_containers_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test(
        "a_failed_recreation_puts_the_old_containers_back",
        dir.path(),
    )
    .await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-back");
    let files = testsupport::two_service_stack(&name, testsupport::free_port(), "hello");
    rt.deploy(&files).await.unwrap();
    assert!(rt.wait_healthy(&name).await.unwrap().healthy());
    let web = labels::container_name(&name, "web");
    let id_before = rt.docker().inspect_container(&web, None).await.unwrap().id;
    let before = objects(&rt, &name).await;

    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let moved = testsupport::two_service_stack(&name, taken, "hello");
    let err = rt.deploy(&moved).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Conflict, "{err}");
    assert!(err.message.contains("rolled back"), "{err}");
    assert_eq!(
        objects(&rt, &name).await,
        before,
        "the old containers are back, running, under their names"
    );
    assert_eq!(
        rt.docker().inspect_container(&web, None).await.unwrap().id,
        id_before
    );
    assert!(rt.wait_healthy(&name).await.unwrap().healthy());
    drop(holder);

    rt.remove_stack(&name, true).await.unwrap();
    assert!(nothing(&objects(&rt, &name).await));
}

const NEVER_HEALTHY: &str = r#"services:
  web:
    image: dockmesh-test/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
    healthcheck:
      test: ["CMD-SHELL", "echo probe refused >&2; exit 7"]
      interval: 1s
      timeout: 1s
      retries: 2
    stop_grace_period: 1s
    volumes: [data:/d]
volumes:
  data:
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthcheck_that_never_passes_is_reported_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) =
        testsupport::engine_for_test("a_healthcheck_that_never_passes", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-sick");
    let before = objects(&rt, &name).await;
    let report = rt.deploy(&stack(&name, NEVER_HEALTHY)).await.unwrap();
    assert_eq!(report.created, ["web"]);
    let started = std::time::Instant::now();
    let health = rt.wait_healthy(&name).await.unwrap();
    assert!(!health.healthy(), "{health:?}");
    let summary = health.failure_summary();
    assert!(summary.starts_with("web: "), "{summary}");
    assert!(
        summary.contains("healthcheck fails")
            && summary.contains("code 7")
            && summary.contains("probe refused"),
        "{summary}"
    );
    // Budget: start_period 0 + 1s × 2 retries + 1s timeout + margin; an unhealthy verdict ends it sooner.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let status = rt.stack_status(&name).await.unwrap();
    assert_eq!(status.containers[0].health.as_deref(), Some("unhealthy"));

    rt.remove_stack(&name, true).await.unwrap();
    assert_eq!(objects(&rt, &name).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_never_becomes_healthy_fails_the_deploy_and_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) =
        testsupport::engine_for_test("a_dependency_that_never_becomes_healthy", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-dep");
    let compose = format!(
        "{NEVER_HEALTHY}  app:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '60']\n    depends_on:\n      web:\n        condition: service_healthy\n"
    )
    .replace("volumes:\n  data:\n  app:", "  app:");
    let compose = format!("{compose}volumes:\n  data:\n");
    let before = objects(&rt, &name).await;
    let err = rt.deploy(&stack(&name, &compose)).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unhealthy, "{err}");
    assert!(
        err.message.contains("`app` waits for `web`") && err.message.contains("probe refused"),
        "{err}"
    );
    assert!(err.message.contains("rolled back"), "{err}");
    assert_eq!(objects(&rt, &name).await, before);
    assert!(nothing(&before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_exits_is_reported_with_its_exit_code_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test("a_service_that_exits", dir.path()).await else {
        return;
    };
    let name = testsupport::unique_name("dm-exit");
    let files = stack(
        &name,
        "services:\n  job:\n    image: dockmesh-test/busybox:1\n    command: [sh, -c, 'echo cannot open config >&2; exit 3']\n  steady:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '60']\n    stop_grace_period: 1s\n",
    );
    rt.deploy(&files).await.unwrap();
    let health = rt.wait_healthy(&name).await.unwrap();
    let job = health.services.iter().find(|s| s.service == "job").unwrap();
    assert!(!job.healthy);
    assert!(
        job.detail.contains("exit code 3") && job.detail.contains("cannot open config"),
        "{job:?}"
    );
    let steady = health
        .services
        .iter()
        .find(|s| s.service == "steady")
        .unwrap();
    assert!(steady.healthy, "{steady:?}");
    rt.remove_stack(&name, true).await.unwrap();
    assert!(nothing(&objects(&rt, &name).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_the_image_is_not_for_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let test = "a_platform_the_image_is_not_for_is_refused_before_anything_is_created";
    let Some(rt) = testsupport::engine_for_test(test, dir.path()).await else {
        return;
    };
    let native = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other = if native == "amd64" { "arm64" } else { "amd64" };
    let name = testsupport::unique_name("dm-platform");
    let compose = |arch: &str| {
        format!(
            "services:\n  web:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '300']\n    platform: linux/{arch}\n    volumes: [data:/d]\nvolumes:\n  data:\n"
        )
    };
    let files = stack(&name, &compose(other));
    rt.write_stack_files(&files).await.unwrap();
    let err = rt.deploy(&files).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::InvalidStack, "{err}");
    assert!(
        err.message
            .contains(&format!("wants platform linux/{other}"))
            && err.message.contains(&format!("is linux/{native}")),
        "{err}"
    );
    assert!(nothing(&objects(&rt, &name).await));

    let files = stack(&name, &compose(native));
    rt.write_stack_files(&files).await.unwrap();
    rt.deploy(&files).await.unwrap();
    rt.remove_stack(&name, true).await.unwrap();
}

/// A compose file cannot make the host read a file outside the stack's directory: not by an
/// absolute `env_file`, not by `..`, not through a symbolic link in the directory (one a
/// container with the directory mounted could have made). Each is refused naming the path,
/// no error quotes the file, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_outside_the_stack_directory_are_refused_and_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test(
        "files_outside_the_stack_directory_are_refused_and_never_quoted",
        dir.path(),
    )
    .await
    else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.env");
    std::fs::write(&secret, "STOLEN=hunter2\n").unwrap();
    let name = testsupport::unique_name("dm-beneath");
    let compose = |env_file: &str| {
        format!("services:\n  web:\n    image: dockmesh-test/busybox:1\n    env_file: {env_file}\n")
    };
    let first = stack(&name, &compose("app.env"));
    rt.write_stack_files(&first).await.unwrap();
    let stack_dir = rt.stack_dir(&name);
    std::os::unix::fs::symlink(&secret, stack_dir.join("link.env")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", stack_dir.join("passwd.env")).unwrap();

    for (env_file, says) in [
        (secret.display().to_string(), "is absolute".to_owned()),
        ("/etc/passwd".to_owned(), "is absolute".to_owned()),
        (
            "../../etc/passwd".to_owned(),
            "leaves the stack directory".to_owned(),
        ),
        (
            "link.env".to_owned(),
            "outside the stack directory".to_owned(),
        ),
        (
            "passwd.env".to_owned(),
            "outside the stack directory".to_owned(),
        ),
    ] {
        let files = stack(&name, &compose(&env_file));
        rt.write_stack_files(&files).await.unwrap();
        let err = rt.deploy(&files).await.unwrap_err();
        assert_eq!(
            err.kind,
            RuntimeErrorKind::InvalidStack,
            "{env_file}: {err}"
        );
        let all = format!("{err} {:?}", err.message);
        assert!(
            all.contains(&says) && all.contains(env_file.trim_start_matches("../")),
            "{env_file}: {all}"
        );
        assert!(!all.contains("hunter2") && !all.contains("root:"), "{all}");
        assert!(
            nothing(&objects(&rt, &name).await),
            "{env_file}: nothing created"
        );
    }
}
