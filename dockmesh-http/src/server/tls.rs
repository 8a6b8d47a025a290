//! HTTPS for the API listener (the API, the dashboard and enrollment). The clients' side
//! (trusting a server by its CA's fingerprint or by a CA file) is [`crate::channel::tls`].
//!
//! What the listener speaks is decided by [`decide`]: HTTPS with the operator's certificate
//! when one is given, plain HTTP when the address is loopback ([`is_loopback`]) or the
//! operator says `--insecure-http` by name (a TLS-terminating proxy in front), and otherwise
//! HTTPS with a certificate of the server's own CA ([`crate::channel::pki::Ca::issue_server`]).
//!
//! [`serve_app`] serves a router either way. Over TLS it accepts TCP, runs the rustls
//! handshake in a task of its own per connection within [`HANDSHAKE_TIMEOUT`], then hyper
//! (HTTP/1.1) over the TLS stream, in the accept loop the agent listener
//! runs too (`accept_each`). Both ways each request carries the peer's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo); over TLS its
//! `X-Forwarded-Proto` is set to `https` (the server is its own TLS terminator), so
//! dashboard cookies are `Secure` ([`crate::server::web::session`]).

use crate::channel::pki;
use crate::channel::tls::{TlsError, is_loopback};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
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
}
