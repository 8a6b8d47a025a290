//! HTTPS for the API listener (the API, the dashboard and enrollment), and the clients' side:
//! trusting a server by its CA's fingerprint or by a CA file.
//!
//! What the listener speaks is decided by [`decide`]: HTTPS with the operator's certificate
//! when one is given, plain HTTP when the address is loopback ([`is_loopback`]) or the
//! operator says `--insecure-http` by name (a TLS-terminating proxy in front), and otherwise
//! HTTPS with a certificate of the server's own CA ([`crate::pki::Ca::issue_server`]).
//!
//! [`serve_app`] serves a router either way. Over TLS it accepts TCP, runs the rustls
//! handshake in a task of its own per connection within [`HANDSHAKE_TIMEOUT`], then hyper
//! (HTTP/1.1) over the TLS stream, in the accept loop the agent listener
//! runs too (`accept_each`). Both ways each request carries the peer's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo); over TLS its
//! `X-Forwarded-Proto` is set to `https` (the server is its own TLS terminator), so
//! dashboard cookies are `Secure` ([`crate::web::session`]).
//!
//! A client trusts the server through [`client_config_pinned`] (the server's chain must hold a
//! CA certificate whose SHA-256 is the fingerprint, and the server's certificate must be
//! issued by it for server authentication; the name is not checked: the pinned CA is private
//! to one server, as on the agent channel) or [`client_config_roots`] (CA certificates from a
//! file, names checked as usual).

use crate::pki::{self, fingerprint_of};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client has to complete the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP: a loopback address, or `--insecure-http` behind a TLS-terminating proxy.
    Plain,
    /// HTTPS with the operator's certificate and key (`--tls-cert`, `--tls-key`).
    TlsGiven,
    /// HTTPS with a certificate of the server's own CA.
    TlsOwnCa,
}

impl Transport {
    /// Whether it is HTTPS.
    pub fn is_tls(self) -> bool {
        self != Transport::Plain
    }

    /// The URL scheme clients use.
    pub fn scheme(self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

/// Why the listener's transport cannot be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Only one of the certificate and its key was given.
    #[error("--tls-cert and --tls-key go together: {missing} is missing")]
    Incomplete {
        /// The flag missing.
        missing: &'static str,
    },
    /// Both a certificate and plain HTTP were asked for.
    #[error("--insecure-http cannot be combined with --tls-cert and --tls-key")]
    Contradiction,
}

impl TransportError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            TransportError::Incomplete { .. } => {
                "give both files (PEM), or neither to use a certificate of the server's own CA"
            }
            TransportError::Contradiction => {
                "drop --insecure-http to serve HTTPS, or the certificate to serve plain HTTP behind a proxy"
            }
        }
    }
}

/// Whether an address is loopback (127.0.0.0/8, ::1, or an IPv4-mapped loopback address):
/// only this machine reaches it. The unspecified address (`0.0.0.0`, `::`) is not.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// What a listener on `addr` speaks, given whether a certificate and a key were given and
/// whether plain HTTP was asked for by name: never plain HTTP on an address others reach
/// unless `insecure_http`.
pub fn decide(
    addr: SocketAddr,
    cert: bool,
    key: bool,
    insecure_http: bool,
) -> Result<Transport, TransportError> {
    match (cert, key) {
        (true, false) => Err(TransportError::Incomplete {
            missing: "--tls-key",
        }),
        (false, true) => Err(TransportError::Incomplete {
            missing: "--tls-cert",
        }),
        (true, true) if insecure_http => Err(TransportError::Contradiction),
        (true, true) => Ok(Transport::TlsGiven),
        (false, false) if insecure_http || is_loopback(addr.ip()) => Ok(Transport::Plain),
        (false, false) => Ok(Transport::TlsOwnCa),
    }
}

/// The names a certificate of the server's own CA carries for a listener on `listen`: its
/// address unless unspecified, `localhost`, and the names given (DNS names or IP addresses).
pub fn own_ca_names(listen: SocketAddr, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    if !listen.ip().is_unspecified() {
        out.push(listen.ip().to_string());
    }
    out.push("localhost".to_owned());
    for n in names {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    out
}

/// What went wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path} holds no PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// A fingerprint is not 64 hex digits.
    #[error("{0:?} is not a SHA-256 fingerprint")]
    Fingerprint(String),
    /// rustls refused the configuration (a key that does not match the certificate, …).
    #[error("the TLS configuration is refused")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "check the path and its permissions",
            TlsError::Pem { .. } => "give PEM files: the certificate chain, and its private key",
            TlsError::Fingerprint(_) => {
                "copy the 64 hex digits the server prints at start (ca_fingerprint)"
            }
            TlsError::Config(_) => "check that the key belongs to the certificate",
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "private key",
    })
}

/// The API listener's TLS settings: this chain (the server's certificate first) and key,
/// TLS 1.2 and 1.3, the crate's one crypto provider, and HTTP/1.1 by ALPN: over HTTP/2 a
/// request names its host in `:authority`, not in the `Host` header that the dashboard's
/// same-origin check and enrollment's agent endpoint read.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves, then
/// let open connections finish. Each request carries the peer's `ConnectInfo<SocketAddr>`.
pub async fn serve_app(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let Some(tls) = tls else {
        return axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    accept_each(&listener, shutdown, "a client", |tcp, peer| {
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = tower::ServiceExt::map_request(
                app,
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.headers_mut().insert(
                        "x-forwarded-proto",
                        hyper::header::HeaderValue::from_static("https"),
                    );
                    req
                },
            );
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(svc),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        }
    })
    .await;
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Accept TCP connections on `listener` until `stop` resolves, each run through `each` in a
/// task of its own (the agent listener and the HTTPS API listener both); a failed accept is
/// logged and retried after 100 ms.
pub(crate) async fn accept_each<F, Fut>(
    listener: &TcpListener,
    stop: impl Future<Output = ()>,
    what: &str,
    each: F,
) where
    F: Fn(tokio::net::TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection of {what} failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        tokio::spawn(each(tcp, peer));
    }
}

/// A client configuration trusting only servers whose chain holds the CA certificate of this
/// SHA-256 fingerprint (64 hex digits) and whose certificate that CA issued.
pub fn client_config_pinned(fingerprint: &str) -> Result<rustls::ClientConfig, TlsError> {
    let fp = fingerprint.trim().to_ascii_lowercase().replace(':', "");
    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::Fingerprint(fingerprint.to_owned()));
    }
    let provider = pki::provider();
    Ok(client_config(
        provider.clone(),
        Arc::new(PinnedCa {
            fingerprint: fp,
            provider,
        }),
    ))
}

/// A client configuration trusting the CA certificates of a PEM file (names checked).
pub fn client_config_roots(path: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(TlsError::Config)?;
    }
    let provider = pki::provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(client_config(provider, verifier))
}

fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Trust a server whose chain holds the CA of a fingerprint, and whose certificate it issued.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| fingerprint_of(c) == self.fingerprint)
        else {
            return Err(rustls::Error::General(format!(
                "the server presented no CA certificate of fingerprint {}: it is not the \
                 server it is taken for",
                self.fingerprint
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        // Any other certificates of the chain may link the server's certificate to the CA.
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| fingerprint_of(c) != self.fingerprint)
            .cloned()
            .collect();
        match inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now) {
            Ok(v) => Ok(v),
            // The CA is pinned and private to one server: any address reaching the server
            // it certified is that server.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        addr: &str,
        cert: bool,
        key: bool,
        insecure: bool,
        want: Result<Transport, TransportError>,
    ) {
        assert_eq!(
            decide(addr.parse().unwrap(), cert, key, insecure),
            want,
            "{addr} cert={cert} key={key} insecure={insecure}"
        );
    }

    #[test]
    fn loopback_is_only_this_machine() {
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.0.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.0.0.5",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_listener_others_reach_is_never_plain_unless_asked_by_name() {
        use Transport::*;
        check("127.0.0.1:8080", false, false, false, Ok(Plain));
        check("[::1]:8080", false, false, false, Ok(Plain));
        check("0.0.0.0:8080", false, false, false, Ok(TlsOwnCa));
        check("10.1.2.3:8080", false, false, false, Ok(TlsOwnCa));
        check("[::]:8080", false, false, false, Ok(TlsOwnCa));
        check("0.0.0.0:8080", false, false, true, Ok(Plain));
        check("127.0.0.1:8080", true, true, false, Ok(TlsGiven));
        check("0.0.0.0:8080", true, true, false, Ok(TlsGiven));
        check(
            "0.0.0.0:8080",
            true,
            false,
            false,
            Err(TransportError::Incomplete {
                missing: "--tls-key",
            }),
        );
        check(
            "127.0.0.1:8080",
            false,
            true,
            false,
            Err(TransportError::Incomplete {
                missing: "--tls-cert",
            }),
        );
        check(
            "0.0.0.0:8080",
            true,
            true,
            true,
            Err(TransportError::Contradiction),
        );
    }

    #[test]
    fn own_ca_names_carry_the_address_and_the_names_given() {
        assert_eq!(
            own_ca_names("10.0.0.5:8080".parse().unwrap(), &["dm.example".into()]),
            ["10.0.0.5", "localhost", "dm.example"]
        );
        assert_eq!(
            own_ca_names("0.0.0.0:8080".parse().unwrap(), &["10.0.0.5".into()]),
            ["localhost", "10.0.0.5"]
        );
    }

    #[test]
    fn a_fingerprint_must_be_sha256_hex() {
        assert!(matches!(
            client_config_pinned("abc"),
            Err(TlsError::Fingerprint(_))
        ));
        assert!(client_config_pinned(&"AB".repeat(32)).is_ok());
    }
}
