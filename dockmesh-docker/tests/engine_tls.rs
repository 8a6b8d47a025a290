//! An engine reached by `tcp://` with TLS (`dockerd --tlsverify`): the runtime verifies the
//! engine by the CA of its TLS directory and proves itself with its client certificate, and a
//! runtime with the wrong CA or a certificate the engine does not trust cannot connect.
//!
//! The engine here is the local one behind a TLS endpoint the test runs (a TLS server that
//! requires a client certificate from its CA and passes the bytes to the engine's socket), so
//! the test needs no second daemon.

use dockmesh_core::HostId;
use dockmesh_core::ports::HostRuntime;
use dockmesh_docker::{DEFAULT_SOCKET, DockerConfig, DockerRuntime, Endpoint, testsupport};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Ca = rcgen::CertifiedIssuer<'static, KeyPair>;

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate signed by `ca` for 127.0.0.1 (server) or for a client.
fn leaf(ca: &Ca, server: bool) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    if server {
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    }
    params.extended_key_usages = vec![if server {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    }];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert, key)
}

/// Write a DOCKER_CERT_PATH-style directory: `ca.pem` (the CA the engine is checked against),
/// `cert.pem` and `key.pem` (the client's).
fn cert_dir(root: &Path, name: &str, trusted: &Ca, client_from: &Ca) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    let (cert, key) = leaf(client_from, false);
    std::fs::write(dir.join("ca.pem"), trusted.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    dir
}

/// A TLS endpoint on 127.0.0.1 that requires a client certificate from `ca`, in front of the
/// local engine's socket. Returns its address.
async fn tls_engine(ca: &Ca, socket: PathBuf) -> String {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let (cert, key) = leaf(ca, true);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, socket) = (acceptor.clone(), socket.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut engine) = tokio::net::UnixStream::connect(&socket).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
            });
        }
    });
    addr
}

async fn connect(addr: &str, dir: &Path, stacks: &Path) -> Result<DockerRuntime, String> {
    let endpoint = Endpoint::parse(&format!("tcp://{addr}"))
        .unwrap()
        .with_tls(dir)
        .unwrap();
    DockerRuntime::connect(
        HostId::from("tls"),
        DockerConfig::new(stacks).with_endpoint(endpoint),
    )
    .await
    .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_behind_tls_is_reached_only_with_the_right_certificates() {
    let stacks = tempfile::tempdir().unwrap();
    // The local engine must answer first; without it the test skips (or fails in CI).
    if testsupport::engine_for_test(
        "an_engine_behind_tls_is_reached_only_with_the_right_certificates",
        stacks.path(),
    )
    .await
    .is_none()
    {
        return;
    }
    let socket = match Endpoint::from_env() {
        Some(Ok(Endpoint::Unix(p))) => p,
        _ => PathBuf::from(DEFAULT_SOCKET),
    };
    let engine_ca = ca("engine CA");
    let other_ca = ca("someone else");
    let addr = tls_engine(&engine_ca, socket).await;
    let root = tempfile::tempdir().unwrap();

    let good = cert_dir(root.path(), "good", &engine_ca, &engine_ca);
    let rt = connect(&addr, &good, stacks.path())
        .await
        .expect("connects with TLS");
    let snapshot = rt.snapshot().await.expect("a snapshot over TLS");
    assert!(!snapshot.docker_api_version.is_empty(), "{snapshot:?}");

    // The engine's certificate does not chain to the CA this side trusts.
    let wrong_ca = cert_dir(root.path(), "wrong-ca", &other_ca, &engine_ca);
    let e = connect(&addr, &wrong_ca, stacks.path())
        .await
        .expect_err("an engine not signed by ca.pem is refused");
    assert!(e.contains(&addr), "{e}");

    // This side's certificate is not one the engine trusts.
    let stranger = cert_dir(root.path(), "stranger", &engine_ca, &other_ca);
    let e = connect(&addr, &stranger, stacks.path())
        .await
        .expect_err("a client the engine does not trust gets nothing");
    assert!(e.contains(&addr), "{e}");

    // Plain HTTP to the TLS port gets nothing either.
    let plain = DockerRuntime::connect(
        HostId::from("plain"),
        DockerConfig::new(stacks.path()).with_endpoint(Endpoint::Tcp(addr.clone())),
    )
    .await;
    assert!(plain.is_err());
}
