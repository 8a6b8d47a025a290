//! The built-in CA and the reversed HTTP/2 agent channel, in process on loopback.

use dockmesh_core::protocol::{Hello, PROTOCOL_VERSION};
use dockmesh_http::agent::{AgentConnector, ConnectError, agent_router};
use dockmesh_http::channel::pki::{self, Ca, Issued};
use dockmesh_http::channel::wire::Refusal;
use dockmesh_http::channel::{ChannelOptions, ConnectedAgents};
use dockmesh_http::server::{AcceptError, AgentAcceptor, AgentGate, AgentListener};
use rustls_pki_types::ServerName;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn hello(protocol_version: u32) -> Hello {
    Hello {
        version: "0.1.0".into(),
        commit: Some("abc123".into()),
        protocol_version,
        os: "linux".into(),
        arch: "x86_64".into(),
        hostname: "host-a".into(),
        docker_version: "28.0.0".into(),
        upgrade_failure: None,
    }
}

fn options() -> ChannelOptions {
    ChannelOptions {
        handshake_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
    }
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

fn connector(ca: &Ca, cert: &Issued, protocol: u32) -> AgentConnector {
    AgentConnector::new(
        ca.cert_der().clone(),
        vec![cert.cert_der.clone()],
        cert.key_der(),
        protocol,
        options(),
    )
    .unwrap()
}

fn acceptor(ca: &Ca, protocol: u32) -> AgentAcceptor {
    let server_cert = ca.issue_server(&["localhost".into()]).unwrap();
    AgentAcceptor::new(
        ca,
        &server_cert,
        protocol,
        options(),
        ConnectedAgents::default(),
    )
    .unwrap()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

// ---- pki ----

#[test]
fn ca_files_are_private_and_reload_to_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = Ca::load_or_create(&ca_dir).unwrap();
    let mode = |name: &str| {
        std::fs::metadata(ca_dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(mode("ca.crt") & 0o077, 0o044, "the certificate is public");
    let again = Ca::load_or_create(&ca_dir).unwrap();
    assert_eq!(again.cert_der(), ca.cert_der());
    assert_eq!(again.fingerprint(), ca.fingerprint());
    assert_eq!(ca.fingerprint().len(), 64);
    assert!(ca.fingerprint().bytes().all(|b| b.is_ascii_hexdigit()));
    // Certificates issued by the reloaded CA chain to the same root.
    let cert = again.issue_agent("a1").unwrap();
    assert_eq!(pki::agent_id_of(&cert.cert_der).unwrap(), "a1");
    assert_ne!(Ca::ephemeral().unwrap().fingerprint(), ca.fingerprint());
}

#[test]
fn a_half_ca_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load_or_create(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            pki::PkiError::Incomplete {
                missing: "ca.crt",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(dir.path().join("ca.key").exists());
}

#[test]
fn agent_ids_round_trip_and_bad_ones_are_refused() {
    let ca = Ca::ephemeral().unwrap();
    for id in ["a", "agent-7", "host.example_1", &"x".repeat(64)] {
        let cert = ca.issue_agent(id).unwrap();
        assert_eq!(pki::agent_id_of(&cert.cert_der).unwrap(), id);
    }
    for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
        assert!(
            matches!(ca.issue_agent(bad), Err(pki::PkiError::BadAgentId { .. })),
            "{bad:?}"
        );
    }
    let server = ca.issue_server(&["localhost".into()]).unwrap();
    assert!(matches!(
        pki::agent_id_of(&server.cert_der),
        Err(pki::PkiError::NoAgentId)
    ));
    assert!(matches!(
        pki::agent_id_of(&b"not a certificate"[..].into()),
        Err(pki::PkiError::Parse)
    ));
}

// ---- channel ----

#[tokio::test]
async fn the_server_calls_hello_over_the_reversed_channel() {
    let ca = Ca::ephemeral().unwrap();
    let acceptor = acceptor(&ca, PROTOCOL_VERSION);
    let agents = acceptor.agents().clone();
    let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(listener.run());

    let cert = ca.issue_agent("agent-1").unwrap();
    let session = connector(&ca, &cert, PROTOCOL_VERSION)
        .connect(addr, server_name())
        .await
        .unwrap();
    assert_eq!(session.protocol(), PROTOCOL_VERSION);
    let agent = tokio::spawn(session.serve(agent_router(hello(PROTOCOL_VERSION))));

    wait_for("agent-1 to register", || agents.get("agent-1").is_some()).await;
    let conn = agents.get("agent-1").unwrap();
    assert_eq!(conn.protocol(), PROTOCOL_VERSION);
    assert_eq!(conn.hello().await.unwrap(), hello(PROTOCOL_VERSION));
    // Calls are multiplexed on the one connection.
    let (a, b) = tokio::join!(conn.hello(), conn.hello());
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(agents.ids(), vec!["agent-1".to_owned()]);

    // The agent goes away: its connection leaves the registry.
    agent.abort();
    wait_for("agent-1 to be removed", || agents.is_empty()).await;
    assert!(agents.get("agent-1").is_none());
    server.abort();
}

#[tokio::test]
async fn a_newer_connection_replaces_the_old_one() {
    let ca = Ca::ephemeral().unwrap();
    let acceptor = acceptor(&ca, PROTOCOL_VERSION);
    let agents = acceptor.agents().clone();
    let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(listener.run());
    let cert = ca.issue_agent("agent-1").unwrap();
    let connector = connector(&ca, &cert, PROTOCOL_VERSION);

    let mut first_hello = hello(PROTOCOL_VERSION);
    first_hello.hostname = "first".into();
    let first = connector.connect(addr, server_name()).await.unwrap();
    let first = tokio::spawn(first.serve(agent_router(first_hello)));
    wait_for("the first connection", || agents.get("agent-1").is_some()).await;
    let old = agents.get("agent-1").unwrap();

    let second = connector.connect(addr, server_name()).await.unwrap();
    let _second = tokio::spawn(second.serve(agent_router(hello(PROTOCOL_VERSION))));
    wait_for("the second connection", || {
        agents.get("agent-1").is_some() && old.is_closed()
    })
    .await;
    assert_eq!(agents.len(), 1);
    let now = agents.get("agent-1").unwrap();
    assert_eq!(now.hello().await.unwrap().hostname, "host-a");
    // The replaced connection was closed, so the old agent's serve ends.
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the old connection closes")
        .unwrap()
        .ok();
    assert_eq!(agents.len(), 1, "closing the old one leaves the new one");
    server.abort();
}

/// A TCP relay to `upstream` that, once `frozen` is set, swallows everything while keeping
/// both sockets open: a peer that is gone without closing.
async fn freezing_relay(
    upstream: std::net::SocketAddr,
    frozen: Arc<std::sync::atomic::AtomicBool>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(dr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(uw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(ur), Box::new(dw)),
            ] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = match r.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if frozen.load(std::sync::atomic::Ordering::SeqCst) {
                            // Hold both ends open, forward nothing.
                            std::future::pending::<()>().await;
                        }
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_silent_agent_is_dropped_by_the_keep_alive() {
    let ca = Ca::ephemeral().unwrap();
    let acceptor = acceptor(&ca, PROTOCOL_VERSION);
    let agents = acceptor.agents().clone();
    let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
        .await
        .unwrap();
    let upstream = listener.local_addr().unwrap();
    let server = tokio::spawn(listener.run());
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = freezing_relay(upstream, frozen.clone()).await;

    let cert = ca.issue_agent("agent-1").unwrap();
    let session = connector(&ca, &cert, PROTOCOL_VERSION)
        .connect(relay, server_name())
        .await
        .unwrap();
    let agent = tokio::spawn(session.serve(agent_router(hello(PROTOCOL_VERSION))));
    wait_for("agent-1 to register", || agents.get("agent-1").is_some()).await;
    agents.get("agent-1").unwrap().hello().await.unwrap();

    // The network goes silent; no FIN, no RST. PING (1 s + 1 s) notices.
    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    wait_for("the silent agent to be removed", || agents.is_empty()).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The agent's side notices too: its serve ends with an error.
    let out = tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .expect("the agent notices the dead server")
        .unwrap();
    assert!(out.is_err(), "{out:?}");
    server.abort();
}

/// Run one connection of `connect` through `acceptor.accept`: its outcome, and the client's
/// task (the agent, while it serves).
async fn accept_one<F, Fut>(
    acceptor: &AgentAcceptor,
    connect: F,
) -> (Result<(), AcceptError>, tokio::task::JoinHandle<()>)
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let client = tokio::spawn(connect(addr));
    let (stream, _) = tcp.accept().await.unwrap();
    let out = acceptor.accept(stream).await.map(|_| ());
    (out, client)
}

#[tokio::test]
async fn an_agent_without_a_client_certificate_is_refused() {
    let ca = Ca::ephemeral().unwrap();
    let acceptor = acceptor(&ca, PROTOCOL_VERSION);
    let ca_der = ca.cert_der().clone();
    let (out, client) = accept_one(&acceptor, move |addr| async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(pki::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![dockmesh_core::protocol::alpn(PROTOCOL_VERSION)];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name(), tcp)
            .await;
        if let Ok(mut tls) = tls {
            use tokio::io::AsyncReadExt;
            let _ = tls.read(&mut [0u8; 16]).await;
        }
    })
    .await;
    assert!(matches!(out, Err(AcceptError::Tls(_))), "{out:?}");
    assert!(acceptor.agents().is_empty());
    client.abort();
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let ca = Ca::ephemeral().unwrap();
    let other = Ca::ephemeral().unwrap();
    let acceptor = acceptor(&ca, PROTOCOL_VERSION);
    // The agent trusts the server's CA but presents a certificate of another CA.
    let cert = other.issue_agent("intruder").unwrap();
    let connector = AgentConnector::new(
        ca.cert_der().clone(),
        vec![cert.cert_der.clone()],
        cert.key_der(),
        PROTOCOL_VERSION,
        options(),
    )
    .unwrap();
    let (out, client) = accept_one(&acceptor, move |addr| async move {
        if let Ok(session) = connector.connect(addr, server_name()).await {
            let _ = session.serve(agent_router(hello(PROTOCOL_VERSION))).await;
        }
    })
    .await;
    let Err(AcceptError::Tls(e)) = &out else {
        panic!("{out:?}")
    };
    assert!(e.to_string().to_lowercase().contains("issuer"), "{e}");
    assert!(acceptor.agents().is_empty());
    client.abort();
}

#[tokio::test]
async fn the_n_and_n_minus_one_rule_decides_at_the_handshake() {
    let ca = Ca::ephemeral().unwrap();
    let cert = ca.issue_agent("agent-old").unwrap();
    // (server protocol, agent protocol, accepted)
    for (server, agent, accepted) in [(3, 3, true), (3, 2, true), (3, 1, false), (1, 2, false)] {
        let acceptor = acceptor(&ca, server);
        let connector = connector(&ca, &cert, agent);
        let (told_tx, told_rx) = tokio::sync::oneshot::channel();
        let (out, client) = accept_one(&acceptor, move |addr| async move {
            if let Ok(session) = connector.connect(addr, server_name()).await {
                let _ = told_tx.send(session.serve(agent_router(hello(agent))).await);
            }
        })
        .await;
        if !accepted {
            // The agent hears why, not only that the connection closed.
            let told = tokio::time::timeout(Duration::from_secs(5), told_rx)
                .await
                .expect("the refused agent's session ends")
                .unwrap();
            let Err(ConnectError::Refused(refusal)) = told else {
                panic!("{server} {agent}: {told:?}")
            };
            assert_eq!(refusal.kind, "protocol");
            assert!(!refusal.is_transient());
            assert_eq!(
                Some(refusal.reason),
                dockmesh_core::protocol::refusal(server, agent)
            );
        }
        if accepted {
            out.unwrap();
            let conn = acceptor.agents().get("agent-old").unwrap();
            assert_eq!(conn.protocol(), agent);
            assert_eq!(conn.hello().await.unwrap().protocol_version, agent);
        } else {
            let Err(AcceptError::Refused {
                agent_id,
                agent_protocol,
                reason,
            }) = &out
            else {
                panic!("{server} {agent}: {out:?}")
            };
            assert_eq!(agent_id, "agent-old");
            assert_eq!(*agent_protocol, agent);
            assert_eq!(
                Some(reason.clone()),
                dockmesh_core::protocol::refusal(server, agent)
            );
            assert!(acceptor.agents().is_empty());
        }
        client.abort();
    }
}

/// A gate admitting the ids in `admitted`, recording what it is told.
#[derive(Default)]
struct TestGate {
    admitted: std::sync::Mutex<Vec<String>>,
    events: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl AgentGate for TestGate {
    async fn admit(&self, agent_id: &str) -> Result<(), Refusal> {
        if self.admitted.lock().unwrap().iter().any(|a| a == agent_id) {
            Ok(())
        } else {
            Err(Refusal::not_admitted(&format!("{agent_id} was removed")))
        }
    }
    async fn refused_protocol(&self, agent_id: &str, agent_protocol: u32, _reason: &str) {
        let e = format!("refused {agent_id} {agent_protocol}");
        self.events.lock().unwrap().push(e);
    }
    async fn connected(&self, conn: dockmesh_http::channel::AgentConnection) {
        let e = format!("connected {}", conn.agent_id());
        self.events.lock().unwrap().push(e);
    }
    async fn disconnected(&self, agent_id: &str) {
        self.events
            .lock()
            .unwrap()
            .push(format!("disconnected {agent_id}"));
    }
}

#[tokio::test]
async fn the_gate_refuses_a_removed_agent_with_its_reason_and_hears_of_connections() {
    let ca = Ca::ephemeral().unwrap();
    let gate = Arc::new(TestGate::default());
    let acceptor = acceptor(&ca, 2).with_gate(gate.clone());
    let cert = ca.issue_agent("agent-g").unwrap();

    // Not admitted: refused after the handshake, told why, nothing kept.
    let conn = connector(&ca, &cert, 2);
    let (told_tx, told_rx) = tokio::sync::oneshot::channel();
    let (out, _client) = accept_one(&acceptor, move |addr| async move {
        let session = conn.connect(addr, server_name()).await.unwrap();
        let _ = told_tx.send(session.serve(agent_router(hello(2))).await);
    })
    .await;
    let Err(AcceptError::NotAdmitted { agent_id, reason }) = &out else {
        panic!("{out:?}")
    };
    assert_eq!(agent_id, "agent-g");
    assert!(reason.contains("removed"), "{reason}");
    let told = told_rx.await.unwrap();
    let Err(ConnectError::Refused(refusal)) = &told else {
        panic!("{told:?}")
    };
    assert_eq!(refusal.kind, "not_admitted");
    assert!(
        refusal.reason.contains("agent-g was removed"),
        "{refusal:?}"
    );
    assert!(acceptor.agents().is_empty());

    // Admitted: kept, and the gate hears of the connection and of its end.
    gate.admitted.lock().unwrap().push("agent-g".into());
    let conn = connector(&ca, &cert, 2);
    let (out, client) = accept_one(&acceptor, move |addr| async move {
        let session = conn.connect(addr, server_name()).await.unwrap();
        let _ = session.serve(agent_router(hello(2))).await;
    })
    .await;
    out.unwrap();
    wait_for("the gate to hear of the connection", || {
        gate.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "connected agent-g")
    })
    .await;
    client.abort();
    wait_for("the gate to hear the connection ended", || {
        gate.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e == "disconnected agent-g")
    })
    .await;
    assert!(acceptor.agents().is_empty());
}

/// A gate that admits an agent once, and has it removed right after (as `agent rm` landing
/// between admission and registration: its record goes, and the registry it disconnects from
/// does not hold the connection yet).
struct RemovedAfterAdmission {
    agents: ConnectedAgents,
    admitted_once: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl AgentGate for RemovedAfterAdmission {
    async fn admit(&self, agent_id: &str) -> Result<(), Refusal> {
        if self
            .admitted_once
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Refusal::not_admitted(&format!("{agent_id} was removed")));
        }
        // The removal: nothing to disconnect yet.
        assert!(!self.agents.disconnect(agent_id));
        Ok(())
    }
    async fn refused_protocol(&self, _: &str, _: u32, _: &str) {}
    async fn connected(&self, _: dockmesh_http::channel::AgentConnection) {}
    async fn disconnected(&self, _: &str) {}
}

#[tokio::test]
async fn an_agent_removed_between_admission_and_registration_is_closed() {
    let ca = Ca::ephemeral().unwrap();
    let agents = ConnectedAgents::default();
    let server_cert = ca.issue_server(&["localhost".into()]).unwrap();
    let gate = Arc::new(RemovedAfterAdmission {
        agents: agents.clone(),
        admitted_once: Default::default(),
    });
    let acceptor = AgentAcceptor::new(&ca, &server_cert, 2, options(), agents.clone())
        .unwrap()
        .with_gate(gate);
    let cert = ca.issue_agent("agent-r").unwrap();
    let conn = connector(&ca, &cert, 2);
    let (out, client) = accept_one(&acceptor, move |addr| async move {
        let session = conn.connect(addr, server_name()).await.unwrap();
        let _ = session.serve(agent_router(hello(2))).await;
    })
    .await;
    assert!(
        matches!(&out, Err(AcceptError::NotAdmitted { agent_id, .. }) if agent_id == "agent-r"),
        "{out:?}"
    );
    assert!(agents.get("agent-r").is_none(), "not kept");
    assert!(agents.is_empty());
    // The agent's side sees its connection closed.
    tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("the agent's connection is closed")
        .unwrap();
}

#[tokio::test]
async fn the_gate_hears_of_an_agent_refused_for_its_protocol() {
    let ca = Ca::ephemeral().unwrap();
    let gate = Arc::new(TestGate::default());
    gate.admitted.lock().unwrap().push("agent-o".into());
    let acceptor = acceptor(&ca, 3).with_gate(gate.clone());
    let cert = ca.issue_agent("agent-o").unwrap();
    let old = connector(&ca, &cert, 1);
    let (out, _client) = accept_one(&acceptor, move |addr| async move {
        if let Ok(session) = old.connect(addr, server_name()).await {
            let _ = session.serve(agent_router(hello(1))).await;
        }
    })
    .await;
    assert!(matches!(out, Err(AcceptError::Refused { .. })), "{out:?}");
    assert_eq!(*gate.events.lock().unwrap(), ["refused agent-o 1"]);
}

#[tokio::test]
async fn a_client_offering_no_dockmesh_protocol_is_refused() {
    let ca = Ca::ephemeral().unwrap();
    let acceptor = acceptor(&ca, PROTOCOL_VERSION);
    let cert = ca.issue_agent("agent-1").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert.cert_der.clone()], cert.key_der())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let (out, client) = accept_one(&acceptor, move |addr| async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(server_name(), tcp)
            .await;
    })
    .await;
    assert!(matches!(out, Err(AcceptError::NoProtocol)), "{out:?}");
    assert!(acceptor.agents().is_empty());
    client.abort();
}

#[tokio::test]
async fn a_silent_client_times_out() {
    let ca = Ca::ephemeral().unwrap();
    let server_cert = ca.issue_server(&["localhost".into()]).unwrap();
    let mut opts = options();
    opts.handshake_timeout = Duration::from_millis(200);
    let acceptor = AgentAcceptor::new(
        &ca,
        &server_cert,
        PROTOCOL_VERSION,
        opts,
        ConnectedAgents::default(),
    )
    .unwrap();
    let (out, client) = accept_one(&acceptor, |addr| async move {
        let _tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    assert!(matches!(out, Err(AcceptError::Timeout)), "{out:?}");
    client.abort();
}

// ---- enrollment ----

mod enrollment {
    use super::*;
    use dockmesh_core::ports::prelude::*;
    use dockmesh_core::records::TokenKind;
    use dockmesh_core::testing::MemStore;
    use dockmesh_http::channel::enroll::{
        EnrollError, EnrollRequest, EnrollmentToken, enroll, new_enrollment_token,
    };
    use jiff::{SignedDuration, Timestamp};

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    async fn token_for(store: &MemStore, ca: &Ca) -> String {
        let (token, record) = new_enrollment_token(
            "host-a",
            &ca.fingerprint(),
            now(),
            SignedDuration::from_hours(1),
        )
        .unwrap();
        assert_eq!(record.kind, TokenKind::Enrollment);
        assert!(record.one_time);
        assert!(
            !record.hash.contains(&token[4..68]),
            "only the hash is stored"
        );
        store.put_token(&record).await.unwrap();
        token
    }

    fn request(token: &str, csr_pem: Option<String>) -> EnrollRequest {
        EnrollRequest {
            token: token.to_owned(),
            name: "host-a".into(),
            hello: None,
            csr_pem,
        }
    }

    #[test]
    fn tokens_carry_the_ca_fingerprint() {
        let ca = Ca::ephemeral().unwrap();
        let (token, _) =
            new_enrollment_token("x", &ca.fingerprint(), now(), SignedDuration::from_hours(1))
                .unwrap();
        assert!(token.starts_with("dme_"));
        let parsed = EnrollmentToken::parse(&token).unwrap();
        assert_eq!(parsed.ca_fingerprint(), ca.fingerprint());
        assert_eq!(parsed.to_string(), token);
        for bad in [
            "",
            "dme_",
            "dmt_abc",
            &token[..token.len() - 1],
            &token.replace('_', "-"),
        ] {
            assert!(
                matches!(EnrollmentToken::parse(bad), Err(EnrollError::Malformed)),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn an_agent_enrolls_once_with_its_own_key_and_connects() {
        let ca = Ca::ephemeral().unwrap();
        let store = MemStore::new();
        let token = token_for(&store, &ca).await;
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let enrolled = enroll(
            &store,
            &ca,
            &request(&token, Some(csr.clone())),
            &[],
            now(),
            "s:1".into(),
        )
        .await
        .unwrap();
        assert!(enrolled.key_pem.is_none(), "the agent keeps its own key");
        assert_eq!(enrolled.ca_pem, ca.cert_pem());
        use rustls_pki_types::pem::PemObject;
        let cert =
            rustls_pki_types::CertificateDer::from_pem_slice(enrolled.cert_pem.as_bytes()).unwrap();
        assert_eq!(pki::agent_id_of(&cert).unwrap(), enrolled.agent_id);

        // The token is spent.
        let again = enroll(
            &store,
            &ca,
            &request(&token, Some(csr)),
            &[],
            now(),
            "s:1".into(),
        )
        .await;
        assert!(matches!(again, Err(EnrollError::AlreadyUsed)), "{again:?}");

        // The certificate and the agent's key open the channel.
        let acceptor = acceptor(&ca, PROTOCOL_VERSION);
        let key_der = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let connector = AgentConnector::new(
            ca.cert_der().clone(),
            vec![cert],
            key_der,
            PROTOCOL_VERSION,
            options(),
        )
        .unwrap();
        let (out, client) = accept_one(&acceptor, move |addr| async move {
            if let Ok(session) = connector.connect(addr, server_name()).await {
                let _ = session.serve(agent_router(hello(PROTOCOL_VERSION))).await;
            }
        })
        .await;
        out.unwrap();
        let conn = acceptor.agents().get(&enrolled.agent_id).unwrap();
        assert_eq!(conn.hello().await.unwrap(), hello(PROTOCOL_VERSION));
        client.abort();
    }

    #[tokio::test]
    async fn refused_enrollments_spend_nothing() {
        let ca = Ca::ephemeral().unwrap();
        let store = MemStore::new();
        let token = token_for(&store, &ca).await;

        // A bad CSR: refused before the token is spent.
        let out = enroll(
            &store,
            &ca,
            &request(&token, Some("garbage".into())),
            &[],
            now(),
            "s:1".into(),
        )
        .await;
        assert!(matches!(out, Err(EnrollError::Csr(_))), "{out:?}");
        // Another CA's server: refused before the token is spent.
        let other = Ca::ephemeral().unwrap();
        let out = enroll(
            &store,
            &other,
            &request(&token, None),
            &[],
            now(),
            "s:1".into(),
        )
        .await;
        assert!(matches!(out, Err(EnrollError::WrongCa)), "{out:?}");
        // An unknown token of the right CA.
        let (stranger, _) =
            new_enrollment_token("x", &ca.fingerprint(), now(), SignedDuration::from_hours(1))
                .unwrap();
        let out = enroll(
            &store,
            &ca,
            &request(&stranger, None),
            &[],
            now(),
            "s:1".into(),
        )
        .await;
        assert!(matches!(out, Err(EnrollError::Unknown)), "{out:?}");

        // Expired.
        let late = now() + SignedDuration::from_hours(2);
        let out = enroll(&store, &ca, &request(&token, None), &[], late, "s:1".into()).await;
        assert!(matches!(out, Err(EnrollError::Expired)), "{out:?}");

        // A bad host name, or one already taken: refused before the token is spent.
        let mut bad = request(&token, None);
        bad.name = "Not A Name".into();
        let out = enroll(&store, &ca, &bad, &[], now(), "s:1".into()).await;
        assert!(matches!(out, Err(EnrollError::BadName { .. })), "{out:?}");
        let out = enroll(
            &store,
            &ca,
            &request(&token, None),
            &["host-a".into()],
            now(),
            "s:1".into(),
        )
        .await;
        assert!(matches!(out, Err(EnrollError::NameTaken(_))), "{out:?}");
        assert!(
            store.list_agents().await.unwrap().is_empty(),
            "nothing recorded"
        );

        // Still valid within its hour, with a key made by the server.
        let enrolled = enroll(
            &store,
            &ca,
            &request(&token, None),
            &[],
            now(),
            "s:1".into(),
        )
        .await
        .unwrap();
        assert!(enrolled.key_pem.is_some());
        let agents = store.list_agents().await.unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].id.0, enrolled.agent_id);
        assert_eq!(agents[0].name, "host-a");
        assert_eq!(enrolled.host, "host-a");

        // A second agent cannot take the name (the store's agents count as taken).
        let second = token_for(&store, &ca).await;
        let out = enroll(
            &store,
            &ca,
            &request(&second, None),
            &[],
            now(),
            "s:1".into(),
        )
        .await;
        assert!(matches!(out, Err(EnrollError::NameTaken(_))), "{out:?}");
    }

    async fn post(
        state: &dockmesh_http::server::ServerState,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        use tower::ServiceExt;
        let req = axum::http::Request::post("/api/v1/agents/enroll")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let resp = dockmesh_http::server::api::router(state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_enroll_endpoint_needs_no_api_token_and_spends_the_token_once() {
        use dockmesh_core::testing::{FixedClock, SeqIds};
        use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState};
        let store = Arc::new(MemStore::new());
        let state = ServerState::new(
            store.clone(),
            Hosts::new(),
            Arc::new(FixedClock::new(now())),
            Arc::new(SeqIds::default()),
            ServerConfig {
                agent_port: Some(7443),
                ..ServerConfig::default()
            },
        );
        state.set_lifecycle(Lifecycle::Ready);
        let ca = Arc::new(Ca::ephemeral().unwrap());
        let token = token_for(&store, &ca).await;

        let (s, v) = post(
            &state,
            serde_json::json!({"token": token, "name": "edge-1"}),
        )
        .await;
        assert_eq!(s, 503, "{v}");
        assert!(state.set_agent_ca(ca.clone()));
        assert!(!state.set_agent_ca(Arc::new(Ca::ephemeral().unwrap())));

        let (s, v) = post(
            &state,
            serde_json::json!({"token": "dme_nope", "name": "edge-1"}),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        assert!(v["hint"].is_string(), "{v}");

        let (s, v) = post(
            &state,
            serde_json::json!({"token": token, "name": "edge-1"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let agent_id = v["agent_id"].as_str().unwrap();
        assert!(v["key_pem"].as_str().unwrap().contains("PRIVATE KEY"));
        assert_eq!(v["ca_pem"], ca.cert_pem());
        use rustls_pki_types::pem::PemObject;
        let cert = rustls_pki_types::CertificateDer::from_pem_slice(
            v["cert_pem"].as_str().unwrap().as_bytes(),
        )
        .unwrap();
        assert_eq!(pki::agent_id_of(&cert).unwrap(), agent_id);
        assert_eq!(v["host"], "edge-1");
        assert_eq!(v["agent_endpoint"], "localhost:7443");
        assert_eq!(v["server_name"], pki::SERVER_NAME);
        // The agent is recorded and its host is served (unreachable until it connects).
        let agents = store.list_agents().await.unwrap();
        assert_eq!(agents.len(), 1);
        assert_eq!(agents[0].id.0, agent_id);
        let host = state
            .hosts()
            .get(&"edge-1".into())
            .expect("the agent's host");
        let err = host.snapshot().await.unwrap_err();
        assert_eq!(
            err.kind,
            dockmesh_core::ports::RuntimeErrorKind::Unreachable
        );

        let (s, v) = post(
            &state,
            serde_json::json!({"token": token, "name": "edge-1"}),
        )
        .await;
        assert_eq!(s, 401, "{v}");
        assert!(v["error"].as_str().unwrap().contains("already used"), "{v}");

        let doc = dockmesh_http::server::api::openapi();
        let doc = serde_json::to_value(&doc).unwrap();
        assert!(doc["paths"]["/api/v1/agents/enroll"]["post"].is_object());
    }
}
