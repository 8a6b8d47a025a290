//! The API listener over HTTPS, on a real socket: a client that pins the server's CA by its
//! fingerprint (or trusts a CA file) gets through, plain HTTP and a wrong fingerprint do not;
//! handlers see the peer's address; cookies are `Secure`; an agent enrolls over HTTPS with
//! the fingerprint its token carries.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use dockmesh_core::ports::prelude::*;
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{MemStore, SeqIds};
use dockmesh_http::channel::enroll::{EnrollRequest, new_enrollment_token};
use dockmesh_http::channel::pki::{Ca, Issued};
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, tls};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

fn server_cert(ca: &Ca) -> Issued {
    ca.issue_server(&tls::own_ca_names("127.0.0.1:0".parse().unwrap(), &[]))
        .unwrap()
}

/// Serve `app` over TLS with a certificate of `ca` on 127.0.0.1; its address.
async fn start(ca: &Ca, app: Router) -> SocketAddr {
    let cert = server_cert(ca);
    let config = tls::server_config(
        vec![cert.cert_der.clone(), ca.cert_der().clone()],
        cert.key_der(),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tls::serve_app(
        listener,
        Some(config),
        app,
        std::future::pending(),
    ));
    addr
}

fn client(config: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

fn pinned(ca: &Ca) -> reqwest::Client {
    client(dockmesh_http::channel::tls::client_config_pinned(&ca.fingerprint()).unwrap())
}

fn echo() -> Router {
    Router::new().route(
        "/",
        axum::routing::get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap| async move {
                format!(
                    "{} {}",
                    peer.ip(),
                    headers
                        .get("x-forwarded-proto")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                )
            },
        ),
    )
}

#[tokio::test]
async fn https_with_the_pinned_ca_gets_through_plain_http_and_a_wrong_fingerprint_do_not() {
    let ca = Ca::ephemeral().unwrap();
    let addr = start(&ca, echo()).await;
    let https = format!("https://{addr}/");

    let resp = pinned(&ca).get(&https).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    // HTTP/1.1, so browsers send the Host header the dashboard's same-origin check reads.
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), "127.0.0.1 https");
    // A client's own X-Forwarded-Proto does not change what the server saw.
    let resp = pinned(&ca)
        .get(&https)
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "127.0.0.1 https");
    // Any name reaches the server its pinned CA certified.
    let by_name = format!("https://localhost:{}/", addr.port());
    assert_eq!(
        pinned(&ca).get(&by_name).send().await.unwrap().status(),
        200
    );

    // Another CA's fingerprint: refused at the handshake.
    let other = Ca::ephemeral().unwrap();
    let err = pinned(&other).get(&https).send().await.unwrap_err();
    assert!(format!("{err:?}").contains(&other.fingerprint()), "{err:?}");

    // Plain HTTP to the HTTPS listener gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let out = plain.get(format!("http://{addr}/")).send().await;
    assert!(out.is_err(), "{out:?}");

    // A client that trusts nothing in particular does not trust the server's own CA.
    let out = reqwest::Client::builder()
        .tls_backend_preconfigured(
            rustls::ClientConfig::builder_with_provider(dockmesh_http::channel::pki::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
        .build()
        .unwrap()
        .get(&https)
        .send()
        .await;
    assert!(out.is_err(), "{out:?}");
}

#[tokio::test]
async fn a_ca_file_is_trusted_with_the_names_its_certificate_carries() {
    let ca = Ca::ephemeral().unwrap();
    let addr = start(&ca, echo()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.crt");
    std::fs::write(&file, ca.cert_pem()).unwrap();
    let c = client(dockmesh_http::channel::tls::client_config_roots(&file).unwrap());
    assert_eq!(
        c.get(format!("https://127.0.0.1:{}/", addr.port()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Another CA in the file: refused.
    let other = Ca::ephemeral().unwrap();
    std::fs::write(&file, other.cert_pem()).unwrap();
    let c = client(dockmesh_http::channel::tls::client_config_roots(&file).unwrap());
    assert!(
        c.get(format!("https://127.0.0.1:{}/", addr.port()))
            .send()
            .await
            .is_err()
    );
    // A file without a certificate is named.
    std::fs::write(&file, "nothing").unwrap();
    let e = dockmesh_http::channel::tls::client_config_roots(&file).unwrap_err();
    assert!(e.to_string().contains("ca.crt"), "{e}");
}

/// A ready server over an in-memory store with an agent CA and an API token.
async fn server_state(ca: &Arc<Ca>) -> (ServerState, String) {
    let store = Arc::new(MemStore::new());
    let (token, record) =
        dockmesh_http::server::auth::new_api_token("ops", jiff::Timestamp::now()).unwrap();
    store.put_token(&record).await.unwrap();
    let state = ServerState::new(
        store,
        Hosts::new(),
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
        ServerConfig {
            agent_port: Some(7443),
            ..ServerConfig::default()
        },
    );
    assert!(state.set_agent_ca(ca.clone()));
    state.set_lifecycle(Lifecycle::Ready);
    (state, token)
}

#[tokio::test]
async fn over_https_dashboard_cookies_are_secure_and_metrics_need_a_token() {
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let (state, token) = server_state(&ca).await;
    let addr = start(&ca, dockmesh_http::server::api::router(state)).await;
    let c = pinned(&ca);
    let resp = c.get(format!("https://{addr}/login")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(!cookies.is_empty());
    for c in &cookies {
        assert!(c.contains("Secure"), "{c}");
    }
    // A login from the dashboard's own page over HTTPS (its Origin is this server) opens a
    // session whose cookie is Secure.
    let login_cookie = cookies
        .iter()
        .find(|c| c.starts_with("dockmesh_login_csrf="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let form = resp.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = form.find(marker).unwrap() + marker.len();
    let csrf = &form[start..start + form[start..].find('"').unwrap()];
    let no_redirect = reqwest::Client::builder()
        .tls_backend_preconfigured(
            dockmesh_http::channel::tls::client_config_pinned(&ca.fingerprint()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirect
        .post(format!("https://{addr}/login"))
        .header("origin", format!("https://{addr}"))
        .header("cookie", login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("csrf", csrf)
                .append_pair("token", &token)
                .finish(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "{:?}", resp.text().await);
    let session = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("dockmesh_session="))
        .unwrap();
    assert!(session.contains("Secure"), "{session}");

    let url = format!("https://{addr}/metrics");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 401);
    let resp = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("dockmesh_database_up 1")
    );
}

#[tokio::test]
async fn an_agent_enrolls_over_https_trusting_the_fingerprint_its_token_carries() {
    let ca = Arc::new(Ca::ephemeral().unwrap());
    let (state, _) = server_state(&ca).await;
    let store = state.store().clone();
    let addr = start(&ca, dockmesh_http::server::api::router(state)).await;
    let token_for = |fp: String| {
        let store = store.clone();
        async move {
            let (token, record) = new_enrollment_token(
                "edge",
                &fp,
                jiff::Timestamp::now(),
                jiff::SignedDuration::from_hours(1),
            )
            .unwrap();
            store.put_token(&record).await.unwrap();
            token
        }
    };
    let enroll = |token: String| {
        let parsed = dockmesh_http::channel::enroll::EnrollmentToken::parse(&token).unwrap();
        let c = client(
            dockmesh_http::channel::tls::client_config_pinned(parsed.ca_fingerprint()).unwrap(),
        );
        let req = EnrollRequest {
            token,
            name: "edge-1".into(),
            hello: None,
            csr_pem: None,
        };
        async move {
            c.post(format!("https://{addr}/api/v1/agents/enroll"))
                .json(&req)
                .send()
                .await
        }
    };
    // A token of another CA: the agent does not trust this server, and sends nothing.
    let other = Ca::ephemeral().unwrap();
    let foreign = token_for(other.fingerprint()).await;
    assert!(enroll(foreign).await.is_err());
    assert!(store.list_agents().await.unwrap().is_empty());

    let token = token_for(ca.fingerprint()).await;
    let resp = enroll(token.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    // The agent is told to dial the host it reached the API at (the request's Host).
    assert_eq!(v["agent_endpoint"], "127.0.0.1:7443", "{v}");
    let parsed = dockmesh_http::channel::enroll::EnrollmentToken::parse(&token).unwrap();
    dockmesh_http::channel::enroll::check_ca(&parsed, v["ca_pem"].as_str().unwrap()).unwrap();
    assert_eq!(store.list_agents().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_pinned_ca_may_certify_the_server_through_an_intermediate() {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_params = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.to_owned());
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p
    };
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca_params("root"), root_key);
    let mid_key = KeyPair::generate().unwrap();
    let mid = ca_params("intermediate")
        .signed_by(&mid_key, &root_issuer)
        .unwrap();
    let mid_issuer = Issuer::new(ca_params("intermediate"), mid_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &mid_issuer).unwrap();
    let config = tls::server_config(
        vec![leaf.der().clone(), mid.der().clone(), root.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tls::serve_app(
        listener,
        Some(config),
        echo(),
        std::future::pending(),
    ));
    let pinned = |fp: &str| client(dockmesh_http::channel::tls::client_config_pinned(fp).unwrap());
    let url = format!("https://{addr}/");
    let root_fp = dockmesh_http::channel::pki::fingerprint_of(root.der());
    assert_eq!(
        pinned(&root_fp).get(&url).send().await.unwrap().status(),
        200
    );
    let mid_fp = dockmesh_http::channel::pki::fingerprint_of(mid.der());
    assert_eq!(
        pinned(&mid_fp).get(&url).send().await.unwrap().status(),
        200
    );
    // The leaf is no CA: pinning it trusts nothing.
    let leaf_fp = dockmesh_http::channel::pki::fingerprint_of(leaf.der());
    assert!(pinned(&leaf_fp).get(&url).send().await.is_err());
}

#[tokio::test]
async fn plain_http_handlers_see_the_peer_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tls::serve_app(
        listener,
        None,
        echo(),
        std::future::pending(),
    ));
    let resp = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "127.0.0.1 -");
}
