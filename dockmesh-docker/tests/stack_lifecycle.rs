//! A two-service stack on the real engine: deploy, health, idempotent redeploy, a changed
//! service recreated alone, stop/start, status, the host snapshot, `docker compose ps`, and
//! removal with and without volumes.

use dockmesh_core::ports::{HostRuntime, RuntimeErrorKind};
use dockmesh_core::snapshot::PortKey;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::testsupport::{self, TEST_IMAGE};
use dockmesh_docker::{DockerRuntime, labels};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn container_id(rt: &DockerRuntime, name: &str) -> String {
    rt.docker()
        .inspect_container(name, None)
        .await
        .unwrap_or_else(|e| panic!("container {name}: {e}"))
        .id
        .unwrap()
}

async fn http_get(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the published port");
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `docker compose` (v2) or `docker-compose` (v1), when one is installed.
fn compose_tool() -> Option<Vec<&'static str>> {
    let works = |cmd: &[&str]| {
        std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    [vec!["docker", "compose"], vec!["docker-compose"]]
        .into_iter()
        .find(|c| works(c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_service_stack_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test("two_service_stack_lifecycle", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-life");
    let port = testsupport::free_port();
    let files = testsupport::two_service_stack(&name, port, "hello");
    let web = labels::container_name(&name, "web");
    let worker = labels::container_name(&name, "worker");

    rt.write_stack_files(&files).await.unwrap();
    let first = rt.deploy(&files).await.expect("first deploy");
    assert_eq!(
        first.created,
        ["web", "worker"],
        "dependencies first: {first:?}"
    );
    assert!(first.recreated.is_empty() && first.unchanged.is_empty());

    let health = rt.wait_healthy(&name).await.unwrap();
    assert!(health.healthy(), "{health:?}");
    let services: Vec<&str> = health.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, ["web", "worker"]);
    assert_eq!(health.services[0].detail, "healthy");
    assert!(
        health.services[1].detail.contains("without a healthcheck"),
        "{health:?}"
    );

    let status = rt.stack_status(&name).await.unwrap();
    assert!(status.all_running(), "{status:?}");
    let names: Vec<&str> = status.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [web.as_str(), worker.as_str()]);
    assert_eq!(status.containers[0].health.as_deref(), Some("healthy"));
    assert_eq!(status.containers[1].health, None);
    assert!(
        http_get(port).await.contains("dockmesh test page"),
        "the published port serves the page"
    );

    // Compose's names and labels on everything.
    let objects = testsupport::engine_objects(&rt, &name).await;
    assert_eq!(
        objects.volumes,
        [format!("{name}_content"), format!("{name}_data")]
    );
    assert_eq!(objects.networks, [format!("{name}_default")]);
    let vol = rt
        .docker()
        .inspect_volume(&format!("{name}_data"))
        .await
        .unwrap();
    assert_eq!(vol.labels.get(labels::PROJECT), Some(&name));
    assert_eq!(
        vol.labels.get(labels::VOLUME).map(String::as_str),
        Some("data")
    );
    let inspected = rt.docker().inspect_container(&worker, None).await.unwrap();
    let l = inspected.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(l.get(labels::PROJECT), Some(&name));
    assert_eq!(l.get(labels::SERVICE).map(String::as_str), Some("worker"));
    assert_eq!(
        l.get(labels::CONTAINER_NUMBER).map(String::as_str),
        Some("1")
    );
    assert_eq!(l.get(labels::ONEOFF).map(String::as_str), Some("False"));
    assert_eq!(
        l.get(labels::DEPENDS_ON).map(String::as_str),
        Some("web:service_healthy:false")
    );
    assert!(l.get(labels::CONFIG_HASH).is_some_and(|h| h.len() == 64));
    let compose_hashes = (
        compose_hash(&rt, &web).await,
        compose_hash(&rt, &worker).await,
    );
    for h in [&compose_hashes.0, &compose_hashes.1] {
        assert!(
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
            "Compose's config-hash label: {h:?}"
        );
    }
    assert_ne!(compose_hashes.0, compose_hashes.1);

    // The real compose tool sees the stack.
    match compose_tool() {
        Some(tool) => {
            let compose_file = rt.stack_dir(&name).join("compose.yaml");
            let out = std::process::Command::new(tool[0])
                .args(&tool[1..])
                .args(["-p", name.as_str(), "-f"])
                .arg(&compose_file)
                .arg("ps")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{tool:?} ps failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains(&web) && stdout.contains(&worker),
                "{tool:?} ps shows the stack:\n{stdout}"
            );
        }
        None => eprintln!("no docker compose tool installed: the `compose ps` check is skipped"),
    }

    // A second deploy of the same files changes nothing.
    let ids = (
        container_id(&rt, &web).await,
        container_id(&rt, &worker).await,
    );
    let again = rt.deploy(&files).await.unwrap();
    assert_eq!(again.unchanged, ["web", "worker"], "{again:?}");
    assert!(again.created.is_empty() && again.recreated.is_empty());
    assert_eq!(
        (
            container_id(&rt, &web).await,
            container_id(&rt, &worker).await
        ),
        ids
    );
    assert_eq!(
        (
            compose_hash(&rt, &web).await,
            compose_hash(&rt, &worker).await
        ),
        compose_hashes,
        "Compose's config-hash is stable across identical deploys"
    );

    // Changing one service recreates only it.
    let changed = testsupport::two_service_stack(&name, port, "bonjour");
    rt.write_stack_files(&changed).await.unwrap();
    let report = rt.deploy(&changed).await.unwrap();
    assert_eq!(report.recreated, ["worker"], "{report:?}");
    assert_eq!(report.unchanged, ["web"], "{report:?}");
    assert_eq!(container_id(&rt, &web).await, ids.0, "web is untouched");
    assert_ne!(
        container_id(&rt, &worker).await,
        ids.1,
        "worker is a new container"
    );
    let env = rt
        .docker()
        .inspect_container(&worker, None)
        .await
        .unwrap()
        .config
        .unwrap()
        .env
        .unwrap();
    assert!(env.contains(&"GREETING=bonjour".to_owned()), "{env:?}");
    assert_eq!(compose_hash(&rt, &web).await, compose_hashes.0);
    assert_ne!(
        compose_hash(&rt, &worker).await,
        compose_hashes.1,
        "Compose's config-hash follows the service's change"
    );
    let objects = testsupport::engine_objects(&rt, &name).await;
    assert_eq!(
        objects.containers.len(),
        2,
        "the replaced container is gone: {objects:?}"
    );
    assert!(rt.wait_healthy(&name).await.unwrap().healthy());

    // The snapshot.
    let snap = rt.snapshot().await.unwrap();
    assert!(snap.online);
    assert!(
        snap.memory_total > 0 && snap.memory_used > 0 && snap.memory_used <= snap.memory_total,
        "{snap:?}"
    );
    assert!(
        snap.disk_total > 0 && snap.disk_free() > 0,
        "local engine: df of the data root"
    );
    assert!(!snap.arch.is_empty() && !snap.docker_version.is_empty());
    assert_eq!(snap.docker_api_version, rt.api_version());
    assert!(snap.ports_in_use.contains(&PortKey::tcp(port)));
    assert!(snap.images.contains(TEST_IMAGE));
    assert!(snap.volumes.contains(&format!("{name}_data")));
    let st = &snap.stacks[&name];
    assert_eq!(st.services, ["web", "worker"]);
    assert_eq!(st.images.len(), 1);
    assert_eq!(st.images[0].reference, TEST_IMAGE);
    assert!(st.images[0].bytes > 0);
    assert_eq!(st.published_ports, [PortKey::tcp(port)]);
    let vols: Vec<&str> = st.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vols, [format!("{name}_content"), format!("{name}_data")]);
    assert!(
        st.volumes.iter().all(|v| v.bytes.is_some()),
        "sizes from /system/df: {:?}",
        st.volumes
    );
    assert_eq!(st.volumes[1].labels.get(labels::PROJECT), Some(&name));
    assert!(st.bind_mounts.is_empty());
    assert!(st.memory_used.is_some_and(|m| m > 0), "{st:?}");
    assert!(st.running);

    // Stop and start.
    rt.stop_stack(&name).await.unwrap();
    rt.stop_stack(&name).await.expect("stop is idempotent");
    let stopped = rt.stack_status(&name).await.unwrap();
    assert!(!stopped.any_running(), "{stopped:?}");
    assert_eq!(stopped.containers.len(), 2, "stopped containers are kept");
    let snap = rt.snapshot().await.unwrap();
    let st = &snap.stacks[&name];
    assert!(!st.running);
    assert_eq!(
        st.published_ports,
        [PortKey::tcp(port)],
        "a stopped stack still reports its ports"
    );
    assert_eq!(st.memory_used, Some(0));
    rt.start_stack(&name).await.unwrap();
    rt.start_stack(&name).await.expect("start is idempotent");
    assert!(rt.stack_status(&name).await.unwrap().all_running());
    assert!(rt.wait_healthy(&name).await.unwrap().healthy());

    // Remove, keeping volumes, then with them.
    rt.remove_stack(&name, false).await.unwrap();
    assert!(rt.stack_status(&name).await.unwrap().containers.is_empty());
    let objects = testsupport::engine_objects(&rt, &name).await;
    assert!(
        objects.containers.is_empty() && objects.networks.is_empty(),
        "{objects:?}"
    );
    assert_eq!(objects.volumes.len(), 2, "volumes are kept unless asked");
    let err = rt.stop_stack(&name).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::NotFound, "{err}");
    rt.remove_stack(&name, true).await.unwrap();
    rt.remove_stack(&name, true)
        .await
        .expect("remove is idempotent");
    let objects = testsupport::engine_objects(&rt, &name).await;
    assert!(objects.volumes.is_empty(), "{objects:?}");
    rt.remove_stack_files(&name).await.unwrap();
    assert_eq!(rt.read_stack_files(&name).await.unwrap(), None);
}

/// The `com.docker.compose.config-hash` label of a container.
async fn compose_hash(rt: &dockmesh_docker::DockerRuntime, container: &str) -> String {
    rt.docker()
        .inspect_container(container, None)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap()
        .remove(labels::COMPOSE_CONFIG_HASH)
        .expect("the config-hash label")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_another_services_network_stops_starts_and_is_removed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let test = "a_service_on_another_services_network_stops_starts_and_is_removed_in_order";
    let Some(rt) = testsupport::engine_for_test(test, dir.path()).await else {
        return;
    };
    let name = testsupport::unique_name("dm-netmode");
    let files = StackFiles {
        name: name.clone(),
        compose: "services:\n  side:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '300']\n    network_mode: service:web\n    stop_grace_period: 1s\n  web:\n    image: dockmesh-test/busybox:1\n    command: [sleep, '300']\n    stop_grace_period: 1s\n".into(),
        env: None,
    };
    rt.write_stack_files(&files).await.unwrap();
    let report = rt.deploy(&files).await.unwrap();
    assert_eq!(report.created, ["web", "side"], "{report:?}");
    rt.stop_stack(&name).await.unwrap();
    rt.start_stack(&name).await.unwrap();
    let side = rt
        .docker()
        .inspect_container(&labels::container_name(&name, "side"), None)
        .await
        .unwrap();
    assert!(side.state.unwrap().running.unwrap());
    // Redeploying a changed `web` replaces `side` too: it used the old container's network.
    let changed = StackFiles {
        compose: files.compose.replace(
            "command: [sleep, '300']\n    stop_grace_period: 1s\n",
            "command: [sleep, '301']\n    stop_grace_period: 1s\n",
        ),
        ..files.clone()
    };
    rt.write_stack_files(&changed).await.unwrap();
    let report = rt.deploy(&changed).await.unwrap();
    assert_eq!(report.recreated, ["web", "side"], "{report:?}");
    rt.remove_stack(&name, true).await.unwrap();
    assert!(
        testsupport::engine_objects(&rt, &name)
            .await
            .containers
            .is_empty()
    );
}
