//! The core `HostRuntime` conformance suite against a real Docker engine reached through the
//! agent channel: a server's `RemoteHost` calling an agent (in this process, over mTLS on
//! loopback) that serves the agent API over a `DockerRuntime`.

use dockmesh_core::ports::{HostReleases, HostRuntime};
use dockmesh_core::protocol::{Hello, PROTOCOL_VERSION};
use dockmesh_core::testing::{RuntimeFixture, host_runtime_conformance};
use dockmesh_docker::testsupport;
use dockmesh_http::agent::{AgentConnector, agent_api};
use dockmesh_http::channel::pki::{Ca, SERVER_NAME};
use dockmesh_http::channel::{ChannelOptions, ConnectedAgents, RemoteHost};
use dockmesh_http::server::{AgentAcceptor, AgentListener};
use rustls_pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_host_behind_an_agent_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let Some(rt) =
        testsupport::engine_for_test("a_docker_host_behind_an_agent_conforms", dir.path()).await
    else {
        return;
    };
    let rt = Arc::new(rt);
    let runtime: Arc<dyn HostRuntime> = rt.clone();

    let ca = Ca::ephemeral().unwrap();
    let agents = ConnectedAgents::default();
    let acceptor = AgentAcceptor::new(
        &ca,
        &ca.issue_server(&[]).unwrap(),
        PROTOCOL_VERSION,
        ChannelOptions::default(),
        agents.clone(),
    )
    .unwrap();
    let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let _listening = tokio::spawn(listener.run());

    let cert = ca.issue_agent("agent-docker").unwrap();
    let connector = AgentConnector::new(
        ca.cert_der().clone(),
        vec![cert.cert_der.clone()],
        cert.key_der(),
        PROTOCOL_VERSION,
        ChannelOptions::default(),
    )
    .unwrap();
    let session = connector
        .connect(addr, ServerName::try_from(SERVER_NAME).unwrap())
        .await
        .unwrap();
    let hello = Hello {
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        ..Hello::default()
    };
    let _agent = tokio::spawn(session.serve(agent_api(hello, runtime.clone())));
    let mut waited = 0;
    while agents.get("agent-docker").is_none() {
        assert!(waited < 200, "the agent did not connect");
        tokio::time::sleep(Duration::from_millis(25)).await;
        waited += 1;
    }

    let remote = RemoteHost::registered(runtime.host_id().clone(), agents, "agent-docker");
    let name = testsupport::unique_name("dm-aconf");
    let port = testsupport::free_port();
    let fx = RuntimeFixture {
        stack: testsupport::two_service_stack(&name, port, "hello"),
        changed: testsupport::two_service_stack(&name, port, "changed"),
        volume: format!("{name}_data"),
        scratch_volume: format!("{name}-scratch"),
    };
    host_runtime_conformance(&remote, &fx).await;

    // Stack upgrades through the agent: a release resolves as on the engine itself, and
    // images are made sure of (a missing one named, nothing pulled without a registry).
    assert_eq!(
        remote.resolve_release(&fx.stack).await.unwrap(),
        rt.resolve_release(&fx.stack).await.unwrap()
    );
    let image = "dockmesh-test/busybox:1".to_owned();
    remote
        .ensure_images(std::slice::from_ref(&image))
        .await
        .unwrap();
    let missing = "dockmesh-test/not-here:0".to_owned();
    let err = remote
        .ensure_images(&[image, missing.clone()])
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        dockmesh_core::ports::RuntimeErrorKind::NotFound,
        "{err:?}"
    );
    assert!(err.message.contains(&missing), "{}", err.message);
    let left = testsupport::engine_objects(&rt, &name).await;
    assert!(
        left.containers.is_empty() && left.volumes.is_empty() && left.networks.is_empty(),
        "the suite leaves nothing behind: {left:?}"
    );
}
