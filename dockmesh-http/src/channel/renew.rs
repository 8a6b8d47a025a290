//! Renewing an agent's certificate before it expires, over the channel, with a new key.
//!
//! The server starts it (the agent needs no route to the server's API): when a connected
//! agent's certificate ends within [`RENEW_BEFORE`], the server asks the agent for a request
//! for a new key (`POST /v1/certificate/request`), certifies that key for the same agent id,
//! and hands the certificate over (`PUT /v1/certificate`). The agent keeps the new key pending
//! until then and installs key and certificate together ([`AgentCredentials::install`]); it
//! checks first that the certificate names it, certifies its pending key and comes from its
//! CA. The new certificate serves from the agent's next connection; the current one goes on.

use super::server::{AgentConnection, CallError};
use crate::pki::{self, Ca};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Renew a certificate that ends within this (30 days, of a year's validity).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a long-lived connection's certificate is looked at again.
pub const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);

/// The agent's answer to `POST /v1/certificate/request`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewalRequest {
    /// A PKCS#10 request (PEM) for the agent's new, pending key.
    pub csr_pem: String,
}

/// The body of `PUT /v1/certificate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Renewed {
    /// The new certificate (PEM) for the pending key.
    pub cert_pem: String,
    /// The CA's certificate (PEM).
    pub ca_pem: String,
}

/// Where an agent keeps its key and certificate.
pub trait AgentCredentials: Send + Sync + 'static {
    /// The agent's id.
    fn agent_id(&self) -> &str;
    /// The CA it trusts (PEM).
    fn ca_pem(&self) -> String;
    /// Make a new key, keep it pending, and return a request for it (PEM).
    fn new_request(&self) -> Result<String, String>;
    /// The pending key (PEM), if any.
    fn pending_key(&self) -> Option<String>;
    /// Replace the key and certificate by the pending key and `cert_pem`, together.
    fn install(&self, cert_pem: &str) -> Result<(), String>;
}

type Creds = Arc<dyn AgentCredentials>;

/// The agent's renewal routes, to merge into its API router.
pub fn renewal_routes(creds: Creds) -> Router {
    Router::new()
        .route("/v1/certificate/request", post(make_request))
        .route("/v1/certificate", put(install))
        .with_state(creds)
}

async fn make_request(
    State(c): State<Creds>,
) -> Result<Json<RenewalRequest>, (StatusCode, String)> {
    c.new_request()
        .map(|csr_pem| Json(RenewalRequest { csr_pem }))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// Check `r` against the agent's id, pending key and CA.
fn check(c: &dyn AgentCredentials, r: &Renewed) -> Result<(), String> {
    if r.ca_pem.trim() != c.ca_pem().trim() {
        return Err("the certificate comes with another CA than the agent trusts".into());
    }
    let cert = pki::der_of_pem(&r.cert_pem).map_err(|e| format!("the certificate: {e}"))?;
    let id = pki::agent_id_of(&cert).map_err(|e| format!("the certificate: {e}"))?;
    if id != c.agent_id() {
        return Err(format!("the certificate names agent {id}, not this agent"));
    }
    let pending = c
        .pending_key()
        .ok_or("no new key is pending: ask for a request first")?;
    let key = pki::public_key_of_key(&pending).map_err(|e| format!("the pending key: {e}"))?;
    if pki::public_key_of(&cert).map_err(|e| format!("the certificate: {e}"))? != key {
        return Err("the certificate is not for the pending key".into());
    }
    Ok(())
}

async fn install(
    State(c): State<Creds>,
    Json(r): Json<Renewed>,
) -> Result<StatusCode, (StatusCode, String)> {
    check(c.as_ref(), &r).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
    c.install(&r.cert_pem)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!("certificate renewed; it serves from the next connection");
    Ok(StatusCode::NO_CONTENT)
}

/// Why a renewal failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// The call failed.
    #[error("calling the agent failed")]
    Call(#[from] CallError),
    /// The agent's request could not be certified.
    #[error("the agent's request could not be certified")]
    Pki(#[from] pki::PkiError),
    /// The agent refused the certificate.
    #[error("the agent refused its new certificate ({status}): {reason}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// The agent's reason.
        reason: String,
    },
}

/// Renew the certificate of `conn`'s agent with `ca`; the new certificate's end (seconds since
/// the Unix epoch).
pub async fn renew(conn: &AgentConnection, ca: &Ca) -> Result<i64, RenewError> {
    let req = hyper::Request::post("http://agent/v1/certificate/request")
        .body(Body::empty())
        .expect("a POST with a path is a valid request");
    let resp = conn.request(req).await?;
    let status = resp.status();
    let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
        .await
        .map_err(CallError::Body)?;
    if !status.is_success() {
        return Err(RenewError::Refused {
            status,
            reason: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    let request: RenewalRequest = serde_json::from_slice(&bytes).map_err(CallError::Json)?;
    let cert_pem = ca.issue_agent_for_csr(conn.agent_id(), &request.csr_pem)?;
    let ends = pki::not_after(&pki::der_of_pem(&cert_pem)?)?;
    let body = serde_json::to_vec(&Renewed {
        cert_pem,
        ca_pem: ca.cert_pem().to_owned(),
    })
    .expect("a renewal serialises");
    let req = hyper::Request::put("http://agent/v1/certificate")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a PUT with a path is a valid request");
    let resp = conn.request(req).await?;
    let status = resp.status();
    if !status.is_success() {
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 1 << 20)
            .await
            .unwrap_or_default();
        return Err(RenewError::Refused {
            status,
            reason: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(ends)
}
