//! The clients' side of TLS: trusting a server by its CA's fingerprint or by a CA file, and
//! the PEM files both ends read.
//!
//! A client trusts the server through [`client_config_pinned`] (the server's chain must hold a
//! CA certificate whose SHA-256 is the fingerprint, and the server's certificate must be
//! issued by it for server authentication; the name is not checked: the pinned CA is private
//! to one server, as on the agent channel) or [`client_config_roots`] (CA certificates from a
//! file, names checked as usual).

use crate::channel::pki::{self, fingerprint_of};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether an address is loopback (127.0.0.0/8, ::1, or an IPv4-mapped loopback address):
/// only this machine reaches it. The unspecified address (`0.0.0.0`, `::`) is not.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// What went wrong setting up TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable certificate or key.
    #[error("{path} holds no PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// A fingerprint is not 64 hex digits.
    #[error("{0:?} is not a SHA-256 fingerprint")]
    Fingerprint(String),
    /// rustls refused the configuration (a key that does not match the certificate, …).
    #[error("the TLS configuration is refused")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            TlsError::Read { .. } => "check the path and its permissions",
            TlsError::Pem { .. } => "give PEM files: the certificate chain, and its private key",
            TlsError::Fingerprint(_) => {
                "copy the 64 hex digits the server prints at start (ca_fingerprint)"
            }
            TlsError::Config(_) => "check that the key belongs to the certificate",
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(&read(path)?).map_err(|_| TlsError::Pem {
        path: path.to_owned(),
        what: "private key",
    })
}

/// A client configuration trusting only servers whose chain holds the CA certificate of this
/// SHA-256 fingerprint (64 hex digits) and whose certificate that CA issued.
pub fn client_config_pinned(fingerprint: &str) -> Result<rustls::ClientConfig, TlsError> {
    let fp = fingerprint.trim().to_ascii_lowercase().replace(':', "");
    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::Fingerprint(fingerprint.to_owned()));
    }
    let provider = pki::provider();
    Ok(client_config(
        provider.clone(),
        Arc::new(PinnedCa {
            fingerprint: fp,
            provider,
        }),
    ))
}

/// A client configuration trusting the CA certificates of a PEM file (names checked).
pub fn client_config_roots(path: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(TlsError::Config)?;
    }
    let provider = pki::provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    Ok(client_config(provider, verifier))
}

fn client_config(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config
}

/// Trust a server whose chain holds the CA of a fingerprint, and whose certificate it issued.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| fingerprint_of(c) == self.fingerprint)
        else {
            return Err(rustls::Error::General(format!(
                "the server presented no CA certificate of fingerprint {}: it is not the \
                 server it is taken for",
                self.fingerprint
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        // Any other certificates of the chain may link the server's certificate to the CA.
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| fingerprint_of(c) != self.fingerprint)
            .cloned()
            .collect();
        match inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now) {
            Ok(v) => Ok(v),
            // The CA is pinned and private to one server: any address reaching the server
            // it certified is that server.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_only_this_machine() {
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "127.255.0.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_loopback(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "10.0.0.5",
            "192.168.1.1",
            "::ffff:10.0.0.1",
            "fe80::1",
        ] {
            assert!(!is_loopback(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_fingerprint_must_be_sha256_hex() {
        assert!(matches!(
            client_config_pinned("abc"),
            Err(TlsError::Fingerprint(_))
        ));
        assert!(client_config_pinned(&"AB".repeat(32)).is_ok());
    }
}
