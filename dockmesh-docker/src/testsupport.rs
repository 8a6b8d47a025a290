//! Helpers for tests that run against a real Docker engine (this crate's, and those of crates
//! that embed it).
//!
//! A test asks [`engine_for_test`] for a runtime. Without an engine it gets `None` and a line on
//! stderr saying why the test is skipped — except when `DOCKMESH_REQUIRE_SERVICES=1`, where a
//! missing engine (or test image) is a failure: CI must never pass by skipping.
//!
//! There is no registry here, so tests use the local image [`TEST_IMAGE`] (busybox-static from
//! Debian, imported by `scripts/build-test-image.sh`, which is run when the image is missing).

use crate::{DockerConfig, DockerRuntime, labels};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptions, ListVolumesOptions,
};
use dockmesh_core::types::{HostId, StackFiles};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The image every engine test uses.
pub const TEST_IMAGE: &str = "dockmesh-test/busybox:1";

/// The environment variable that turns a missing service into a test failure.
pub const REQUIRE_SERVICES_ENV: &str = "DOCKMESH_REQUIRE_SERVICES";

/// True when `DOCKMESH_REQUIRE_SERVICES=1`.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|v| v == "1")
}

fn skip_or_fail(test: &str, why: &str) {
    if services_required() {
        panic!("{test}: {why}, and {REQUIRE_SERVICES_ENV}=1 requires the Docker engine");
    }
    eprintln!("SKIPPED {test}: {why} (set {REQUIRE_SERVICES_ENV}=1 to make this a failure)");
}

/// The path of the shared test-image script in this workspace.
pub fn build_script() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/build-test-image.sh"
    )
}

/// Make sure [`TEST_IMAGE`] exists on the engine, building it with the shared script if not.
pub async fn ensure_test_image(rt: &DockerRuntime) -> Result<(), String> {
    if rt.docker().inspect_image(TEST_IMAGE).await.is_ok() {
        return Ok(());
    }
    let out = tokio::process::Command::new("bash")
        .arg(build_script())
        .env("DOCKER_HOST", rt.endpoint().to_string())
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", build_script()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            build_script(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    rt.docker()
        .inspect_image(TEST_IMAGE)
        .await
        .map(|_| ())
        .map_err(|e| format!("{TEST_IMAGE} is still missing after building it: {e}"))
}

/// A runtime on the engine (`DOCKER_HOST` or the default socket) with the test image present,
/// keeping stack files under `stacks_dir`; `None` (after saying why) when there is none.
pub async fn engine_for_test(test: &str, stacks_dir: &Path) -> Option<DockerRuntime> {
    let config = DockerConfig::new(stacks_dir).with_stable_grace(std::time::Duration::from_secs(2));
    let rt = match DockerRuntime::connect(HostId::new("test-host"), config).await {
        Ok(rt) => rt,
        Err(e) => {
            skip_or_fail(test, &format!("no Docker engine: {e}"));
            return None;
        }
    };
    if let Err(e) = ensure_test_image(&rt).await {
        skip_or_fail(test, &format!("the test image is missing: {e}"));
        return None;
    }
    Some(rt)
}

/// A stack name no other test (or earlier run) uses: `<prefix>-<pid>-<n>-<time>`.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() % 1_000_000_000)
        .unwrap_or_default();
    format!("{prefix}-{}-{n}-{t}", std::process::id())
}

/// A TCP port free on this machine right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port")
}

/// The compose file of the standard two-service test stack: `web` (busybox httpd on `WEB_PORT`
/// with a healthcheck through wget) and `worker` (a loop that polls `web`, started once `web` is
/// healthy), with the named volumes `content` and `data`. `GREETING` (default `hello`) goes into
/// the worker's environment, so changing it changes only the worker.
pub const TWO_SERVICE_COMPOSE: &str = r#"services:
  web:
    image: dockmesh-test/busybox:1
    command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
    ports:
      - "${WEB_PORT:?WEB_PORT is needed}:8080"
    volumes:
      - content:/var/www/data
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 20
    stop_grace_period: 1s
  worker:
    image: dockmesh-test/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do wget -q -O- http://web:8080/ >/dev/null 2>&1; sleep 1; done"]
    environment:
      GREETING: ${GREETING:-hello}
    volumes:
      - data:/data
    depends_on:
      web:
        condition: service_healthy
    stop_grace_period: 1s
volumes:
  content:
  data:
"#;

/// The two-service test stack, publishing `port`, with `GREETING=greeting`.
pub fn two_service_stack(name: &str, port: u16, greeting: &str) -> StackFiles {
    StackFiles {
        name: name.to_owned(),
        compose: TWO_SERVICE_COMPOSE.to_owned(),
        env: Some(format!("WEB_PORT={port}\nGREETING={greeting}\n")),
    }
}

/// The names of the engine's containers, volumes and networks that mention `needle` in their
/// name or their Compose project label: what a test compares before and after an operation
/// (other tests may be using the same engine at the same time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineObjects {
    /// Container names and states (`name=state`).
    pub containers: Vec<String>,
    /// Volume names.
    pub volumes: Vec<String>,
    /// Network names.
    pub networks: Vec<String>,
}

/// What the engine holds that relates to `needle` (see [`EngineObjects`]).
pub async fn engine_objects(rt: &DockerRuntime, needle: &str) -> EngineObjects {
    let docker = rt.docker();
    let mut containers: Vec<String> = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
        .await
        .expect("list containers")
        .iter()
        .filter(|c| {
            labels::summary_name(c).contains(needle)
                || labels::summary_label(c, labels::PROJECT) == Some(needle)
        })
        .map(|c| {
            format!(
                "{}={}",
                labels::summary_name(c),
                c.state.map(|s| s.to_string()).unwrap_or_default()
            )
        })
        .collect();
    containers.sort();
    let mut volumes: Vec<String> = docker
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .expect("list volumes")
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter(|v| {
            v.name.contains(needle)
                || v.labels.get(labels::PROJECT).map(String::as_str) == Some(needle)
        })
        .map(|v| v.name)
        .collect();
    volumes.sort();
    let mut networks: Vec<String> = docker
        .list_networks(None::<ListNetworksOptions>)
        .await
        .expect("list networks")
        .into_iter()
        .filter_map(|n| n.name)
        .filter(|n| n.contains(needle))
        .collect();
    networks.sort();
    EngineObjects {
        containers,
        volumes,
        networks,
    }
}
