//! The server's agent registry as the gate of the agent listener: it admits only recorded
//! agents, records an agent refused for its protocol as needing a manual upgrade, and keeps
//! each record current with what the agent says and whether it is connected.

use dockmesh_core::ports::Store;
use dockmesh_core::protocol::Hello;
use dockmesh_core::rollout::{ConnectionState, UpgradeState};
use dockmesh_core::testing::{FixedClock, MemStore, SeqIds};
use dockmesh_core::types::AgentId;
use dockmesh_http::agents::AgentRegistry;
use dockmesh_http::channel::{
    AgentAcceptor, AgentConnector, AgentListener, ChannelOptions, ConnectError, agent_router,
};
use dockmesh_http::enroll::{EnrollRequest, enroll, new_enrollment_token};
use dockmesh_http::pki::{Ca, SERVER_NAME};
use dockmesh_http::{Hosts, ServerConfig, ServerState};
use jiff::{SignedDuration, Timestamp};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn options() -> ChannelOptions {
    ChannelOptions {
        handshake_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
    }
}

async fn eventually<F: Fn() -> Fut, Fut: Future<Output = bool>>(what: &str, f: F) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_registry_admits_recorded_agents_and_keeps_their_records() {
    let store = Arc::new(MemStore::new());
    let state = ServerState::new(
        store.clone(),
        Hosts::new(),
        Arc::new(FixedClock::new(now())),
        Arc::new(SeqIds::default()),
        ServerConfig::default(),
    );
    let ca = Ca::ephemeral().unwrap();

    // Enroll one agent: its record exists, its host is served.
    let (token, rec) =
        new_enrollment_token("t", &ca.fingerprint(), now(), SignedDuration::from_hours(1)).unwrap();
    store.put_token(&rec).await.unwrap();
    let (key_pem, csr_pem) = dockmesh_http::enroll::new_agent_key().unwrap();
    let req = EnrollRequest {
        token: token.clone(),
        name: "edge".into(),
        hello: None,
        csr_pem: Some(csr_pem),
    };
    let enrolled = enroll(store.as_ref(), &ca, &req, &[], now(), "x:1".into())
        .await
        .unwrap();
    dockmesh_http::enroll::check_ca(
        &dockmesh_http::enroll::EnrollmentToken::parse(&token).unwrap(),
        &enrolled.ca_pem,
    )
    .unwrap();
    let other = Ca::ephemeral().unwrap();
    assert!(
        dockmesh_http::enroll::check_ca(
            &dockmesh_http::enroll::EnrollmentToken::parse(&token).unwrap(),
            other.cert_pem(),
        )
        .is_err(),
        "an agent does not trust a CA that is not the token's"
    );
    let registry = AgentRegistry::new(state.clone());
    assert_eq!(registry.register_stored().await.unwrap(), 1);
    assert!(state.hosts().get(&"edge".into()).is_some());
    let id = AgentId::from(enrolled.agent_id.as_str());

    // A listener of protocol 3, gated by the registry.
    let acceptor = AgentAcceptor::new(
        &ca,
        &ca.issue_server(&[]).unwrap(),
        3,
        options(),
        state.connected_agents().clone(),
    )
    .unwrap()
    .with_gate(Arc::new(registry));
    let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let _l = tokio::spawn(listener.run());
    let cert = CertificateDer::from_pem_slice(enrolled.cert_pem.as_bytes()).unwrap();
    let connector = |protocol: u32| {
        AgentConnector::new(
            ca.cert_der().clone(),
            vec![cert.clone()],
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            protocol,
            options(),
        )
        .unwrap()
    };
    let hello = |protocol_version: u32| Hello {
        version: "9.9.9".into(),
        protocol_version,
        arch: "riscv64".into(),
        docker_version: "29.0.0".into(),
        ..Hello::default()
    };
    let name = || ServerName::try_from(SERVER_NAME).unwrap();

    // Protocol 1 against 3: refused, told why, and recorded as needing a manual upgrade.
    let session = connector(1).connect(addr, name()).await.unwrap();
    let told = session.serve(agent_router(hello(1))).await;
    let Err(ConnectError::Refused(r)) = told else {
        panic!("{told:?}")
    };
    assert_eq!(r.kind, "protocol");
    let rec = store.get_agent(&id).await.unwrap().unwrap();
    assert_eq!(rec.protocol_version, 1);
    let UpgradeState::PendingManual { reason, .. } = &rec.upgrade else {
        panic!("{rec:?}")
    };
    assert!(reason.contains("protocol 1"), "{reason}");

    // Upgraded by hand to protocol 3: admitted, the record follows its hello, and the pending
    // manual upgrade is cleared.
    let session = connector(3).connect(addr, name()).await.unwrap();
    let serving = tokio::spawn(session.serve(agent_router(hello(3))));
    eventually("the record to show the connection", || async {
        let r = store.get_agent(&id).await.unwrap().unwrap();
        r.connection == ConnectionState::Connected && r.version == "9.9.9"
    })
    .await;
    let rec = store.get_agent(&id).await.unwrap().unwrap();
    assert_eq!(rec.protocol_version, 3);
    assert_eq!(rec.arch, "riscv64");
    assert_eq!(rec.docker_version, "29.0.0");
    assert_eq!(rec.upgrade, UpgradeState::Idle);
    assert!(state.connected_agents().get(&enrolled.agent_id).is_some());

    // The agent goes away: recorded as disconnected.
    serving.abort();
    eventually("the record to show the disconnection", || async {
        store.get_agent(&id).await.unwrap().unwrap().connection == ConnectionState::Disconnected
    })
    .await;

    // Removed: refused at the handshake, told it is not enrolled.
    store.delete_agent(&id).await.unwrap();
    let session = connector(3).connect(addr, name()).await.unwrap();
    let told = session.serve(agent_router(hello(3))).await;
    let Err(ConnectError::Refused(r)) = told else {
        panic!("{told:?}")
    };
    assert_eq!(r.kind, "not_admitted");
    assert!(r.reason.contains("not enrolled"), "{}", r.reason);
    assert!(state.connected_agents().is_empty());
}
