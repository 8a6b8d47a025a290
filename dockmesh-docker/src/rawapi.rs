//! Plain JSON `GET`s to the Engine API, for answers whose shape depends on the API version.
//!
//! bollard's models follow the newest API. Some answers changed shape since the versions real
//! engines speak: `/system/df` on API ≤ 1.51 lists `Volumes` (with `UsageData`) at the top level,
//! which the newer model has no field for. Those few reads go through here and are read as
//! `serde_json::Value`, on the API version negotiated with the engine.

use crate::Endpoint;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::time::Duration;

/// `GET /v{api_version}{path}` and parse the answer as JSON.
pub(crate) async fn get_json(
    endpoint: &Endpoint,
    api_version: &str,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, RuntimeError> {
    let what = format!("GET {path} on the Docker engine at {endpoint}");
    let unreachable = |e: &dyn std::fmt::Display| {
        RuntimeError::new(
            RuntimeErrorKind::Unreachable,
            format!("{what}: the engine cannot be reached ({e}); check that dockerd is running"),
        )
    };
    let fut = async {
        let uri = format!("/v{api_version}{path}");
        let request = hyper::Request::get(uri.as_str())
            .header(hyper::header::HOST, "docker")
            .body(String::new())
            .map_err(|e| RuntimeError::new(RuntimeErrorKind::Engine, format!("{what}: {e}")))?;
        let response = match endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(stream, request).await.map_err(|e| unreachable(&e))?
            }
            Endpoint::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(stream, request).await.map_err(|e| unreachable(&e))?
            }
            Endpoint::TcpTls { addr, certs } => {
                let stream = crate::tls::connect(addr, certs)
                    .await
                    .map_err(|e| unreachable(&e))?;
                send(stream, request).await.map_err(|e| unreachable(&e))?
            }
        };
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.map_err(|e| unreachable(&e))?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        if !status.is_success() {
            return Err(RuntimeError::new(
                if status.as_u16() == 404 {
                    RuntimeErrorKind::NotFound
                } else {
                    RuntimeErrorKind::Engine
                },
                format!(
                    "{what}: HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                ),
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!("{what}: the answer is not JSON: {e}"),
            )
            .with_source(e)
        })
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| unreachable(&format!("no answer within {}s", timeout.as_secs())))?
}

async fn send<S>(
    stream: S,
    request: hyper::Request<String>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "engine connection closed with an error");
        }
    });
    let response = sender.send_request(request).await;
    if response.is_err() {
        driver.abort();
    }
    response
}
