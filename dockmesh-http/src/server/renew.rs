//! Renewing an agent's certificate before it expires, over the channel, with a new key.
//!
//! The server starts it (the agent needs no route to the server's API): when a connected
//! agent's certificate ends within [`RENEW_BEFORE`], the server asks the agent for a request
//! for a new key (`POST /v1/certificate/request`), certifies that key for the same agent id,
//! and hands the certificate over (`PUT /v1/certificate`). The agent keeps the new key pending
//! until then and installs key and certificate together (`AgentCredentials::install`); it
//! checks first that the certificate names it, certifies its pending key and comes from its
//! CA. The new certificate serves from the agent's next connection; the current one goes on.
//!
//! This is the server's half ([`renew`]); the agent's is `crate::agent::renew`, the bodies
//! both ends exchange are in [`crate::channel::wire`].

use crate::channel::connection::{AgentConnection, CallError};
use crate::channel::pki::{self, Ca};
use crate::channel::wire::{RenewalRequest, Renewed};
use axum::body::Body;
use axum::http::StatusCode;
use std::time::Duration;

/// Renew a certificate that ends within this (30 days, of a year's validity).
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a long-lived connection's certificate is looked at again.
pub const RENEW_CHECK: Duration = Duration::from_secs(12 * 3600);

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
