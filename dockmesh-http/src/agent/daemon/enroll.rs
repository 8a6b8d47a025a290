//! Enrolling once: make a key here, send its request with the one-time token, check the CA
//! that comes back against the token's fingerprint, and only then keep anything.

use super::state::{AgentState, default_cert_file, default_key_file, save_state};
use super::{AgentError, AgentOptions};
use crate::agent::error_chain as chain;
use crate::channel::enroll::{self, EnrollRequest, Enrolled, EnrollmentToken};
use dockmesh_core::protocol::Hello;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

pub(super) async fn enroll_once(
    state_dir: &Path,
    options: &AgentOptions,
    name: &str,
    hello: Hello,
) -> Result<AgentState, AgentError> {
    let (Some(server), Some(token)) = (&options.server, &options.token) else {
        return Err(AgentError::NotEnrolled {
            state_dir: state_dir.to_owned(),
        });
    };
    let parsed = EnrollmentToken::parse(token).map_err(AgentError::Token)?;
    let (key_pem, csr_pem) = enroll::new_agent_key().map_err(AgentError::Key)?;
    let req = EnrollRequest {
        token: token.clone(),
        name: name.to_owned(),
        hello: Some(hello),
        csr_pem: Some(csr_pem),
    };
    let base = server.trim_end_matches('/').to_owned();
    let http = enroll_client(&base, &parsed, options.ca_file.as_deref())?;
    let resp = http
        .post(format!("{base}/api/v1/agents/enroll"))
        .json(&req)
        .send()
        .await
        .map_err(|e| AgentError::Unreachable {
            server: base.clone(),
            reason: chain(&e),
        })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["error"].as_str().unwrap_or("no reason given");
        let hint = body["hint"]
            .as_str()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        return Err(AgentError::EnrollmentRefused {
            status: status.to_string(),
            reason: format!("{msg}{hint}"),
        });
    }
    let mut enrolled: Enrolled = serde_json::from_value(body).map_err(AgentError::Answer)?;
    enroll::check_ca(&parsed, &enrolled.ca_pem).map_err(|_| AgentError::NotTheTokensServer {
        server: base.clone(),
    })?;
    if !answer_is_authenticated(&base) && enrolled.release_key_pem.take().is_some() {
        tracing::warn!(
            "the server's release key came over plain HTTP and is not pinned: copy the \
             server's release.pub into {} to take upgrades",
            state_dir.display()
        );
    }
    let state = AgentState {
        agent_id: enrolled.agent_id.clone(),
        host: enrolled.host.clone(),
        agent_endpoint: enrolled.agent_endpoint.clone(),
        server_name: enrolled.server_name.clone(),
        server: base,
        key_file: default_key_file(),
        cert_file: default_cert_file(),
    };
    save_state(state_dir, &state, &key_pem, &enrolled)?;
    tracing::info!(agent = %state.agent_id, host = %state.host, "enrolled");
    Ok(state)
}

/// The HTTP client enrolling with `base`: over HTTPS it trusts only the CA the token names
/// (or the CAs of `ca_file`); plain HTTP only to a loopback address, where nothing crosses
/// the network.
pub(super) fn enroll_client(
    base: &str,
    token: &EnrollmentToken,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, AgentError> {
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
    let builder = if base.starts_with("https://") {
        let config = match ca_file {
            Some(f) => crate::channel::tls::client_config_roots(f),
            None => crate::channel::tls::client_config_pinned(token.ca_fingerprint()),
        }
        .map_err(AgentError::Trust)?;
        builder.tls_backend_preconfigured(config)
    } else if base.starts_with("http://") && loopback_url(base) {
        builder
    } else {
        return Err(AgentError::PlainHttp {
            server: base.to_owned(),
        });
    };
    builder.build().map_err(AgentError::Client)
}

/// Whether a URL names a loopback host (an address or `localhost`).
pub(super) fn loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(crate::channel::tls::is_loopback)
}

/// Whether an answer from `base` is the server's own: over HTTPS (checked against the CA the
/// token names), or from this machine.
pub(super) fn answer_is_authenticated(base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        u.scheme() == "https"
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    })
}
