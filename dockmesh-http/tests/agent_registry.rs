//! The server's agent registry as the gate of the agent listener: it admits only recorded
//! agents, records an agent refused for its protocol as needing a manual upgrade, and keeps
//! each record current with what the agent says and whether it is connected.

use dockmesh_core::ports::prelude::*;
use dockmesh_core::protocol::Hello;
use dockmesh_core::rollout::{ConnectionState, UpgradeState};
use dockmesh_core::testing::{FixedClock, MemStore, SeqIds};
use dockmesh_core::types::AgentId;
use dockmesh_http::agent::{AgentConnector, ConnectError, agent_router};
use dockmesh_http::channel::ChannelOptions;
use dockmesh_http::channel::enroll::{EnrollRequest, enroll, new_enrollment_token};
use dockmesh_http::channel::pki::{self, Ca, SERVER_NAME};
use dockmesh_http::server::agents::AgentRegistry;
use dockmesh_http::server::{AgentAcceptor, AgentListener};
use dockmesh_http::server::{Hosts, ServerConfig, ServerState};
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
    let (key_pem, csr_pem) = dockmesh_http::channel::enroll::new_agent_key().unwrap();
    let req = EnrollRequest {
        token: token.clone(),
        name: "edge".into(),
        hello: None,
        csr_pem: Some(csr_pem),
    };
    let enrolled = enroll(store.as_ref(), &ca, &req, &[], now(), "x:1".into())
        .await
        .unwrap();
    dockmesh_http::channel::enroll::check_ca(
        &dockmesh_http::channel::enroll::EnrollmentToken::parse(&token).unwrap(),
        &enrolled.ca_pem,
    )
    .unwrap();
    let other = Ca::ephemeral().unwrap();
    assert!(
        dockmesh_http::channel::enroll::check_ca(
            &dockmesh_http::channel::enroll::EnrollmentToken::parse(&token).unwrap(),
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

/// An agent's key and certificate in memory.
struct MemCreds {
    id: String,
    ca_pem: String,
    pending: std::sync::Mutex<Option<String>>,
    installed: std::sync::Mutex<Vec<(String, String)>>,
}

impl dockmesh_http::agent::renew::AgentCredentials for MemCreds {
    fn agent_id(&self) -> &str {
        &self.id
    }
    fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }
    fn new_request(&self) -> Result<String, String> {
        let (key, csr) =
            dockmesh_http::channel::pki::new_key_and_csr().map_err(|e| e.to_string())?;
        *self.pending.lock().unwrap() = Some(key);
        Ok(csr)
    }
    fn pending_key(&self) -> Option<String> {
        self.pending.lock().unwrap().clone()
    }
    fn install(&self, cert_pem: &str) -> Result<(), String> {
        let key = self
            .pending
            .lock()
            .unwrap()
            .take()
            .ok_or("nothing pending")?;
        self.installed
            .lock()
            .unwrap()
            .push((key, cert_pem.to_owned()));
        Ok(())
    }
}

#[tokio::test]
async fn a_certificate_near_its_end_is_renewed_over_the_channel_with_a_new_key() {
    use dockmesh_http::agent::renew::renewal_routes;
    use dockmesh_http::server::renew::RENEW_BEFORE;
    let store = Arc::new(MemStore::new());
    let state = ServerState::new(
        store.clone(),
        Hosts::new(),
        Arc::new(FixedClock::new(Timestamp::now())),
        Arc::new(SeqIds::default()),
        ServerConfig::default(),
    );
    let ca = Arc::new(Ca::ephemeral().unwrap());
    assert!(state.set_agent_ca(ca.clone()));
    let id = "agent-renew";
    store
        .upsert_agent(&dockmesh_core::rollout::AgentRecord {
            id: AgentId::from(id),
            name: "edge".into(),
            version: String::new(),
            commit: None,
            protocol_version: 1,
            arch: String::new(),
            docker_version: String::new(),
            last_seen: None,
            connection: ConnectionState::Disconnected,
            upgrade: UpgradeState::Idle,
        })
        .await
        .unwrap();
    let acceptor = AgentAcceptor::new(
        &ca,
        &ca.issue_server(&[]).unwrap(),
        1,
        options(),
        state.connected_agents().clone(),
    )
    .unwrap()
    .with_gate(Arc::new(AgentRegistry::new(state.clone())));
    let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let _l = tokio::spawn(listener.run());

    // A certificate that ends in a day.
    let (key_pem, csr_pem) = dockmesh_http::channel::pki::new_key_and_csr().unwrap();
    let short = ca
        .issue_agent_for_csr_valid_for(id, &csr_pem, Duration::from_secs(24 * 3600))
        .unwrap();
    let creds = Arc::new(MemCreds {
        id: id.into(),
        ca_pem: ca.cert_pem().to_owned(),
        pending: Default::default(),
        installed: Default::default(),
    });
    let connect = |key: &str, cert: &str| {
        AgentConnector::new(
            ca.cert_der().clone(),
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            1,
            options(),
        )
        .unwrap()
    };
    let router = || {
        agent_router(Hello {
            protocol_version: 1,
            ..Hello::default()
        })
        .merge(renewal_routes(creds.clone()))
    };
    let session = connect(&key_pem, &short)
        .connect(addr, ServerName::try_from(SERVER_NAME).unwrap())
        .await
        .unwrap();
    let serving = tokio::spawn(session.serve(router()));
    eventually("the renewal", || async {
        !creds.installed.lock().unwrap().is_empty()
    })
    .await;
    let (new_key, new_cert) = creds.installed.lock().unwrap()[0].clone();
    assert_ne!(new_key, key_pem, "a new key");
    let der = CertificateDer::from_pem_slice(new_cert.as_bytes()).unwrap();
    assert_eq!(pki::agent_id_of(&der).unwrap(), id);
    let ends = pki::not_after(&der).unwrap();
    let now = Timestamp::now().as_second();
    assert!(
        ends - now > RENEW_BEFORE.as_secs() as i64,
        "the new certificate is not due again at once"
    );
    serving.abort();

    // The new key and certificate open the channel.
    let session = connect(&new_key, &new_cert)
        .connect(addr, ServerName::try_from(SERVER_NAME).unwrap())
        .await
        .unwrap();
    let _serving = tokio::spawn(session.serve(router()));
    eventually("the new connection", || async {
        state.connected_agents().get(id).is_some()
    })
    .await;
    assert_eq!(
        creds.installed.lock().unwrap().len(),
        1,
        "a fresh certificate is not renewed again"
    );
}

#[tokio::test]
async fn an_agent_installs_only_a_certificate_for_itself_its_pending_key_and_its_ca() {
    use dockmesh_http::agent::renew::{AgentCredentials, renewal_routes};
    use dockmesh_http::channel::wire::Renewed;
    use tower::ServiceExt;
    let ca = Ca::ephemeral().unwrap();
    let creds = Arc::new(MemCreds {
        id: "agent-me".into(),
        ca_pem: ca.cert_pem().to_owned(),
        pending: Default::default(),
        installed: Default::default(),
    });
    let app = renewal_routes(creds.clone());
    let put = |r: Renewed| {
        let app = app.clone();
        async move {
            let req = axum::http::Request::put("/v1/certificate")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(serde_json::to_vec(&r).unwrap()))
                .unwrap();
            app.oneshot(req).await.unwrap().status().as_u16()
        }
    };
    let csr = creds.new_request().unwrap();
    let (_, other_csr) = pki::new_key_and_csr().unwrap();
    let other_ca = Ca::ephemeral().unwrap();
    let cases = [
        // Another agent's id.
        (
            ca.issue_agent_for_csr("agent-other", &csr).unwrap(),
            ca.cert_pem(),
        ),
        // Another key.
        (
            ca.issue_agent_for_csr("agent-me", &other_csr).unwrap(),
            ca.cert_pem(),
        ),
        // Another CA.
        (
            other_ca.issue_agent_for_csr("agent-me", &csr).unwrap(),
            other_ca.cert_pem(),
        ),
    ];
    for (cert_pem, ca_pem) in cases {
        let status = put(Renewed {
            cert_pem,
            ca_pem: ca_pem.to_owned(),
        })
        .await;
        assert_eq!(status, 422);
    }
    assert!(
        creds.installed.lock().unwrap().is_empty(),
        "nothing installed"
    );
    let good = ca.issue_agent_for_csr("agent-me", &csr).unwrap();
    let status = put(Renewed {
        cert_pem: good,
        ca_pem: ca.cert_pem().to_owned(),
    })
    .await;
    assert_eq!(status, 204);
    assert_eq!(creds.installed.lock().unwrap().len(), 1);
}

/// An enrollment token lives at most `MAX_ENROLLMENT_TTL`: zero, negative, too long and
/// overflowing lifetimes are refused by name, never turned into "never expires".
#[test]
fn enrollment_token_lifetimes_are_bounded() {
    use dockmesh_http::channel::enroll::{MAX_ENROLLMENT_TTL, NewTokenError};
    let fp = Ca::ephemeral().unwrap().fingerprint();
    let make = |ttl| new_enrollment_token("t", &fp, now(), ttl);

    let (_, ok) = make(SignedDuration::from_hours(2)).unwrap();
    assert_eq!(ok.expires_at, Some(now() + SignedDuration::from_hours(2)));
    let (_, longest) = make(MAX_ENROLLMENT_TTL).unwrap();
    assert_eq!(longest.expires_at, Some(now() + MAX_ENROLLMENT_TTL));
    assert_eq!(MAX_ENROLLMENT_TTL, SignedDuration::from_hours(30 * 24));

    for bad in [SignedDuration::ZERO, SignedDuration::from_secs(-1)] {
        let e = make(bad).unwrap_err();
        assert!(
            matches!(e, NewTokenError::NotPositive { .. }),
            "{bad:?}: {e:?}"
        );
        assert!(e.to_string().contains("positive"), "{e}");
    }
    // 1000000000h does not overflow jiff's duration but does overflow a timestamp; i64::MAX
    // seconds overflows both.
    for bad in [
        MAX_ENROLLMENT_TTL + SignedDuration::from_secs(1),
        SignedDuration::from_hours(1_000_000_000),
        SignedDuration::MAX,
    ] {
        let e = make(bad).unwrap_err();
        assert!(matches!(e, NewTokenError::TooLong { .. }), "{bad:?}: {e:?}");
        assert!(e.to_string().contains("720h"), "{e}");
        assert!(!e.hint().is_empty());
    }
}
