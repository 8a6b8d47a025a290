//! The core `HostRuntime` conformance suite, run against the real Docker engine.

use dockmesh_core::testing::{RuntimeFixture, host_runtime_conformance};
use dockmesh_docker::testsupport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_runtime_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) = testsupport::engine_for_test("the_docker_runtime_conforms", dir.path()).await
    else {
        return;
    };
    let name = testsupport::unique_name("dm-conf");
    let port = testsupport::free_port();
    let fx = RuntimeFixture {
        stack: testsupport::two_service_stack(&name, port, "hello"),
        changed: testsupport::two_service_stack(&name, port, "changed"),
        volume: format!("{name}_data"),
        scratch_volume: format!("{name}-scratch"),
    };
    host_runtime_conformance(&rt, &fx).await;
    let left = testsupport::engine_objects(&rt, &name).await;
    assert!(
        left.containers.is_empty() && left.volumes.is_empty() && left.networks.is_empty(),
        "the suite leaves nothing behind: {left:?}"
    );
}
