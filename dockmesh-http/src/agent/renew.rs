//! The agent's half of renewing its certificate over the channel: it makes a new key on the
//! server's request (`POST /v1/certificate/request`) and installs key and certificate together
//! ([`AgentCredentials::install`]) once the certificate (`PUT /v1/certificate`) names it,
//! certifies its pending key and comes from its CA. The server's half is
//! `crate::server::renew`.

use crate::channel::pki;
use crate::channel::wire::{RenewalRequest, Renewed};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use std::sync::Arc;

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
