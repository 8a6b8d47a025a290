//! The server's end of the channel: the agent listener and the handshake. Each admitted agent
//! becomes an [`AgentConnection`] kept in [`ConnectedAgents`] (`crate::channel::connection`).

use crate::channel::connection::{AgentConnection, ConnectedAgents, OnEnd};
use crate::channel::pki::{self, Ca, Issued, PkiError};
use crate::channel::{ChannelOptions, wire};
use axum::body::Body;
use dockmesh_core::protocol;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::server::{Acceptor, WebPkiClientVerifier};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

/// Why an agent's connection was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The TLS handshake did not complete in time.
    #[error("the TLS handshake did not complete in time")]
    Timeout,
    /// The TLS handshake failed (no client certificate, one from another CA, not TLS 1.3, …).
    #[error("the TLS handshake failed")]
    Tls(#[source] std::io::Error),
    /// The client offered no `dockmesh/N` ALPN id.
    #[error("the client offered no dockmesh protocol")]
    NoProtocol,
    /// The verified certificate names no agent.
    #[error("the client certificate names no agent")]
    Identity(#[source] PkiError),
    /// The agent speaks a protocol this server does not accept.
    #[error("agent {agent_id} refused: {reason}")]
    Refused {
        /// The agent, as its certificate names it.
        agent_id: String,
        /// The protocol it speaks.
        agent_protocol: u32,
        /// Core's reason, for the operator.
        reason: String,
    },
    /// The agent is authenticated but the server does not admit it (removed, never recorded).
    #[error("agent {agent_id} refused: {reason}")]
    NotAdmitted {
        /// The agent, as its certificate names it.
        agent_id: String,
        /// Why, for the operator and the agent.
        reason: String,
    },
    /// The HTTP/2 handshake over the TLS stream failed.
    #[error("the HTTP/2 handshake with agent {agent_id} failed")]
    Http2 {
        /// The agent.
        agent_id: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

/// What the server decides about an authenticated agent, and what it is told of its
/// connections. Without a gate every agent the CA certified is admitted.
#[async_trait::async_trait]
pub trait AgentGate: Send + Sync + 'static {
    /// Whether `agent_id` may connect; `Err` refuses it, and the agent is told why.
    async fn admit(&self, agent_id: &str) -> Result<(), wire::Refusal>;
    /// `agent_id` was refused for its protocol version (it needs a manual upgrade).
    async fn refused_protocol(&self, agent_id: &str, agent_protocol: u32, reason: &str);
    /// A connection of the agent is kept (it replaced any earlier one).
    async fn connected(&self, conn: AgentConnection);
    /// The agent's live connection ended and no newer one replaced it.
    async fn disconnected(&self, agent_id: &str);
}

/// How long the server waits to tell a refused agent why before closing its connection.
const REFUSAL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The server's side of the handshake: TLS settings, the protocol it speaks, the registry.
pub struct AgentAcceptor {
    base: rustls::ServerConfig,
    protocol: u32,
    options: ChannelOptions,
    agents: ConnectedAgents,
    gate: Option<Arc<dyn AgentGate>>,
}

impl std::fmt::Debug for AgentAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentAcceptor")
            .field("protocol", &self.protocol)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl AgentAcceptor {
    /// An acceptor presenting `server_cert` (issued by `ca`), trusting only agents certified
    /// by `ca`, speaking `protocol` (so accepting `protocol` and `protocol − 1`).
    pub fn new(
        ca: &Ca,
        server_cert: &Issued,
        protocol: u32,
        options: ChannelOptions,
        agents: ConnectedAgents,
    ) -> Result<AgentAcceptor, rustls::Error> {
        let provider = pki::provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let base = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.cert_der.clone(), ca.cert_der().clone()],
                server_cert.key_der(),
            )?;
        Ok(AgentAcceptor {
            base,
            protocol,
            options,
            agents,
            gate: None,
        })
    }

    /// Ask `gate` whether each authenticated agent may connect, and tell it of connections.
    pub fn with_gate(mut self, gate: Arc<dyn AgentGate>) -> AgentAcceptor {
        self.gate = Some(gate);
        self
    }

    /// The registry connections are kept in.
    pub fn agents(&self) -> &ConnectedAgents {
        &self.agents
    }

    /// Take one TCP connection through the handshakes and keep it in the registry.
    pub async fn accept(&self, tcp: TcpStream) -> Result<AgentConnection, AcceptError> {
        let (tls, agent_id, agent_protocol, cert_not_after) =
            tokio::time::timeout(self.options.handshake_timeout, self.tls_handshake(tcp))
                .await
                .map_err(|_| AcceptError::Timeout)??;
        if let Some(reason) = protocol::refusal(self.protocol, agent_protocol) {
            if let Some(gate) = &self.gate {
                gate.refused_protocol(&agent_id, agent_protocol, &reason)
                    .await;
            }
            tell_refusal(tls, wire::Refusal::protocol(&reason)).await;
            return Err(AcceptError::Refused {
                agent_id,
                agent_protocol,
                reason,
            });
        }
        if let Some(gate) = &self.gate
            && let Err(refusal) = gate.admit(&agent_id).await
        {
            let reason = refusal.reason.clone();
            tell_refusal(tls, refusal).await;
            return Err(AcceptError::NotAdmitted { agent_id, reason });
        }
        let (send, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_frame_size(wire::MAX_FRAME)
            .initial_stream_window_size(wire::STREAM_WINDOW)
            .initial_connection_window_size(wire::CONNECTION_WINDOW)
            .keep_alive_interval(self.options.keep_alive_interval)
            .keep_alive_timeout(self.options.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .handshake::<_, Body>(TokioIo::new(tls))
            .await
            .map_err(|source| AcceptError::Http2 {
                agent_id: agent_id.clone(),
                source,
            })?;
        let conn = AgentConnection {
            agent_id,
            protocol: agent_protocol,
            cert_not_after,
            send,
        };
        let on_end = self.gate.clone().map(|gate| {
            let id = conn.agent_id.clone();
            Box::new(move || -> futures_util::future::BoxFuture<'static, ()> {
                Box::pin(async move { gate.disconnected(&id).await })
            }) as OnEnd
        });
        let generation = self.agents.insert(conn.clone(), driver, on_end);
        // An agent removed after it was admitted and before its connection was registered
        // found nothing to close: asked again now that it is registered, a removal before this
        // point is seen here and one after it finds the connection to close.
        if let Some(gate) = &self.gate
            && let Err(refusal) = gate.admit(&conn.agent_id).await
        {
            self.agents
                .disconnect_generation(&conn.agent_id, generation);
            return Err(AcceptError::NotAdmitted {
                agent_id: conn.agent_id,
                reason: refusal.reason,
            });
        }
        if let Some(gate) = self.gate.clone() {
            let conn = conn.clone();
            tokio::spawn(async move { gate.connected(conn).await });
        }
        Ok(conn)
    }

    /// TLS: pick the agent's protocol from its ALPN offer (the newest it offers that we
    /// accept, else the newest it offers, to be refused once it is authenticated), complete
    /// the handshake, read the agent id.
    async fn tls_handshake(
        &self,
        tcp: TcpStream,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<TcpStream>,
            String,
            u32,
            Option<i64>,
        ),
        AcceptError,
    > {
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp)
            .await
            .map_err(AcceptError::Tls)?;
        let offered: Vec<u32> = start
            .client_hello()
            .alpn()
            .map(|ids| ids.filter_map(protocol::parse_alpn).collect())
            .unwrap_or_default();
        let accepted = offered
            .iter()
            .copied()
            .filter(|v| protocol::check(self.protocol, *v).accepted())
            .max();
        let chosen = accepted
            .or_else(|| offered.iter().copied().max())
            .ok_or(AcceptError::NoProtocol)?;
        let mut config = self.base.clone();
        config.alpn_protocols = vec![protocol::alpn(chosen)];
        let tls = start
            .into_stream(Arc::new(config))
            .await
            .map_err(AcceptError::Tls)?;
        let (_, session) = tls.get_ref();
        let cert = session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or(AcceptError::Identity(PkiError::NoAgentId))?;
        let agent_id = pki::agent_id_of(cert).map_err(AcceptError::Identity)?;
        let not_after = pki::not_after(cert).ok();
        let negotiated = session
            .alpn_protocol()
            .and_then(protocol::parse_alpn)
            .ok_or(AcceptError::NoProtocol)?;
        Ok((tls, agent_id, negotiated, not_after))
    }
}

/// Tell a refused agent why over HTTP/2 (`POST /v1/refused`), waiting at most
/// [`REFUSAL_WAIT`], then close the connection. An agent that does not listen learns only
/// that the connection closed.
async fn tell_refusal(tls: tokio_rustls::server::TlsStream<TcpStream>, refusal: wire::Refusal) {
    let tell = async move {
        let (mut send, driver) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, Body>(TokioIo::new(tls))
            .await
            .ok()?;
        let driver = tokio::spawn(driver);
        let req = hyper::Request::post(format!("http://agent{}", wire::REFUSED_PATH))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::to_vec(&refusal).expect("a refusal serialises"),
            ))
            .expect("a POST with a path is a valid request");
        send.ready().await.ok()?;
        let answered = send.send_request(req).await.ok();
        driver.abort();
        answered
    };
    let _ = tokio::time::timeout(REFUSAL_WAIT, tell).await;
}

/// The agent listener: accepts TCP connections and runs each through the
/// [`AgentAcceptor`] in its own task.
#[derive(Debug)]
pub struct AgentListener {
    tcp: TcpListener,
    acceptor: Arc<AgentAcceptor>,
}

impl AgentListener {
    /// Listen on `addr`.
    pub async fn bind(addr: SocketAddr, acceptor: AgentAcceptor) -> std::io::Result<AgentListener> {
        Ok(AgentListener {
            tcp: TcpListener::bind(addr).await?,
            acceptor: Arc::new(acceptor),
        })
    }

    /// Accept on a listener already bound (so its port is known before the acceptor is made).
    pub fn new(tcp: TcpListener, acceptor: AgentAcceptor) -> AgentListener {
        AgentListener {
            tcp,
            acceptor: Arc::new(acceptor),
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accept agents until the task is dropped; refusals are logged.
    pub async fn run(self) {
        let acceptor = self.acceptor;
        crate::server::tls::accept_each(
            &self.tcp,
            std::future::pending(),
            "an agent",
            |tcp, peer| {
                let acceptor = acceptor.clone();
                async move {
                    match acceptor.accept(tcp).await {
                        Ok(conn) => tracing::info!(
                            agent = conn.agent_id(),
                            protocol = conn.protocol(),
                            %peer,
                            "agent connected"
                        ),
                        Err(e) => tracing::warn!(%peer, error = %e, "agent connection refused"),
                    }
                }
            },
        )
        .await;
    }
}
