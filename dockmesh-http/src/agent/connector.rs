//! The agent's end of the channel: dial the server with the agent's certificate, then serve
//! the agent API over the TLS stream as the HTTP/2 server.

use crate::channel::ChannelOptions;
use crate::channel::pki;
use crate::channel::wire::{self, REFUSED_PATH, Refusal};
use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use dockmesh_core::protocol::{self, Hello};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why the agent could not connect or lost its connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TLS settings are unusable (a bad key or CA certificate).
    #[error("the agent's TLS settings are unusable")]
    Config(#[source] rustls::Error),
    /// Connecting or the TLS handshake failed.
    #[error("connecting to the server failed")]
    Io(#[source] std::io::Error),
    /// The handshake did not complete in time.
    #[error("the TLS handshake did not complete in time")]
    Timeout,
    /// The server selected no protocol of ours.
    #[error("the server selected no dockmesh protocol")]
    NoProtocol,
    /// The server refused the agent and said why (the agent should not retry as it is).
    #[error("the server refused this agent: {}", .0.reason)]
    Refused(crate::channel::wire::Refusal),
    /// Serving the agent API over the connection failed.
    #[error("the connection to the server failed")]
    Http2(#[source] hyper::Error),
}

/// The agent's TLS client: its certificate, the CA it trusts, the protocol it offers.
#[derive(Clone)]
pub struct AgentConnector {
    config: Arc<rustls::ClientConfig>,
    options: ChannelOptions,
}

impl std::fmt::Debug for AgentConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConnector")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

impl AgentConnector {
    /// An agent of `protocol` presenting `cert_chain`/`key`, trusting only `ca`.
    pub fn new(
        ca: CertificateDer<'static>,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        protocol: u32,
        options: ChannelOptions,
    ) -> Result<AgentConnector, ConnectError> {
        let mut roots = RootCertStore::empty();
        roots.add(ca).map_err(ConnectError::Config)?;
        let mut config = rustls::ClientConfig::builder_with_provider(pki::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ConnectError::Config)?
            .with_root_certificates(roots)
            .with_client_auth_cert(cert_chain, key)
            .map_err(ConnectError::Config)?;
        config.alpn_protocols = vec![protocol::alpn(protocol)];
        Ok(AgentConnector {
            config: Arc::new(config),
            options,
        })
    }

    /// Dial the server at `addr`, checking its certificate names `server_name`.
    pub async fn connect(
        &self,
        addr: impl ToSocketAddrs,
        server_name: ServerName<'static>,
    ) -> Result<AgentSession, ConnectError> {
        let connect = async {
            let tcp = TcpStream::connect(addr).await.map_err(ConnectError::Io)?;
            tcp.set_nodelay(true).map_err(ConnectError::Io)?;
            TlsConnector::from(self.config.clone())
                .connect(server_name, tcp)
                .await
                .map_err(ConnectError::Io)
        };
        let tls = tokio::time::timeout(self.options.handshake_timeout, connect)
            .await
            .map_err(|_| ConnectError::Timeout)??;
        let protocol = tls
            .get_ref()
            .1
            .alpn_protocol()
            .and_then(protocol::parse_alpn)
            .ok_or(ConnectError::NoProtocol)?;
        Ok(AgentSession {
            tls,
            protocol,
            options: self.options.clone(),
        })
    }
}

/// A connection to the server, before the agent API is served on it.
///
/// With TLS 1.3 the server verifies the agent's certificate after the agent's side of the
/// handshake is done: a refused agent learns it when [`AgentSession::serve`] fails.
#[derive(Debug)]
pub struct AgentSession {
    tls: TlsStream<TcpStream>,
    protocol: u32,
    options: ChannelOptions,
}

impl AgentSession {
    /// The protocol version negotiated.
    pub fn protocol(&self) -> u32 {
        self.protocol
    }

    /// Serve `router` as the HTTP/2 server until the connection closes. When the server
    /// refuses the agent it says why first (`POST /v1/refused`): that ends in
    /// [`ConnectError::Refused`].
    pub async fn serve(self, router: Router) -> Result<(), ConnectError> {
        let told: Arc<Mutex<Option<Refusal>>> = Arc::default();
        let slot = told.clone();
        let router = router.route(
            REFUSED_PATH,
            post(move |Json(refusal): Json<Refusal>| {
                let slot = slot.clone();
                async move {
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(refusal);
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_frame_size(wire::MAX_FRAME)
            .initial_stream_window_size(wire::STREAM_WINDOW)
            .initial_connection_window_size(wire::CONNECTION_WINDOW)
            .keep_alive_interval(self.options.keep_alive_interval)
            .keep_alive_timeout(self.options.keep_alive_timeout)
            .serve_connection(TokioIo::new(self.tls), TowerToHyperService::new(router))
            .await;
        if let Some(refusal) = told.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(ConnectError::Refused(refusal));
        }
        served.map_err(ConnectError::Http2)
    }
}

/// The agent API of this slice: `GET /v1/hello` answers `hello`.
pub fn agent_router(hello: Hello) -> Router {
    let hello = Arc::new(hello);
    Router::new().route(
        "/v1/hello",
        get(move || {
            let hello = hello.clone();
            async move { axum::Json((*hello).clone()) }
        }),
    )
}
