//! TLS to an engine that verifies its clients (`dockerd --tlsverify`), for the few requests
//! this crate sends itself ([`crate::rawapi`]); bollard's own connection is made from the same
//! files ([`crate::TlsFiles`]).

use crate::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;

/// A client configuration that trusts only `certs.ca` and proves itself with `certs.cert`.
pub(crate) fn client_config(certs: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let read_certs = |path: &std::path::Path| {
        CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("{} is not a PEM certificate: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&certs.ca)? {
        roots
            .add(ca)
            .map_err(|e| format!("{} cannot be trusted: {e}", certs.ca.display()))?;
    }
    let chain = read_certs(&certs.cert)?;
    let key = PrivateKeyDer::from_pem_file(&certs.key)
        .map_err(|e| format!("{} is not a PEM private key: {e}", certs.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            format!(
                "{} and {} do not make a client certificate: {e}",
                certs.cert.display(),
                certs.key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// Open a TLS connection to `addr` (`host:port`), verifying the engine by `certs.ca`.
pub(crate) async fn connect(
    addr: &str,
    certs: &TlsFiles,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = client_config(certs)?;
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host} is not a name a certificate can carry: {e}"))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with the engine failed: {e}"))
}
