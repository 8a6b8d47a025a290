//! TLS in the binary: the API listener's certificate (the operator's, or one of the server's
//! own CA), and how the CLI and the agent trust the server.

use anyhow::Context;
use dockmesh_http::channel::pki::Ca;
use dockmesh_http::channel::tls as client_tls;
use dockmesh_http::server::tls;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The TLS settings of the listeners at `addrs` (those that serve HTTPS), or `None` when
/// there are none: the operator's certificate and key when `given`, else a certificate of
/// `ca` for the listeners' addresses, `localhost`, this machine's host name and `names`.
pub fn listener_tls(
    given: Option<(&Path, &Path)>,
    names: &[String],
    ca: &Ca,
    addrs: &[SocketAddr],
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let hint = |e: client_tls::TlsError| anyhow::anyhow!("{e}; {}", e.hint());
    let (chain, key) = match given {
        Some((cert, key)) => {
            let chain = client_tls::load_certs(cert).map_err(hint)?;
            let key = client_tls::load_key(key).map_err(hint)?;
            tracing::info!(cert = %cert.display(), "HTTPS with the operator's certificate");
            (chain, key)
        }
        None => {
            let mut sans: Vec<String> = Vec::new();
            for addr in addrs {
                for n in tls::own_ca_names(*addr, names) {
                    if !sans.contains(&n) {
                        sans.push(n);
                    }
                }
            }
            if let Some(h) = super::server::host_name()
                && !sans.contains(&h)
            {
                sans.push(h);
            }
            let issued = ca
                .issue_server(&sans)
                .context("issuing the API listener's certificate")?;
            tracing::info!(
                ca_fingerprint = %ca.fingerprint(),
                names = ?sans,
                "HTTPS with a certificate of the server's own CA: clients trust it with \
                 --ca-fingerprint {} (or DOCKMESH_CA_FINGERPRINT)",
                ca.fingerprint()
            );
            let chain = vec![issued.cert_der.clone(), ca.cert_der().clone()];
            (chain, issued.key_der())
        }
    };
    Ok(Some(tls::server_config(chain, key).map_err(hint)?))
}

/// How a client trusts the server: by the fingerprint of its CA, by a CA file, or (neither)
/// the system's trust store.
pub fn client_tls(
    fingerprint: Option<&str>,
    ca_file: Option<&Path>,
) -> Result<Option<rustls::ClientConfig>, client_tls::TlsError> {
    match (fingerprint, ca_file) {
        (Some(fp), _) => client_tls::client_config_pinned(fp).map(Some),
        (None, Some(file)) => client_tls::client_config_roots(file).map(Some),
        (None, None) => Ok(None),
    }
}
