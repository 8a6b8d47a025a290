//! The built-in certificate authority of the agent channel.
//!
//! What works: [`Ca::load_or_create`] makes a CA (rcgen, ECDSA P-256) in a directory the first
//! time (`ca.key` with mode 0600, `ca.crt`) and loads the same one afterwards; the CA's
//! SHA-256 [fingerprint](Ca::fingerprint) (of its DER certificate) is what an enrollment token
//! will carry. The CA issues the agent listener's server certificate
//! ([`Ca::issue_server`]) and one client certificate per agent ([`Ca::issue_agent`]: the agent
//! id in a SAN URI `dockmesh-agent://<id>`, client-auth extended key usage);
//! [`agent_id_of`] reads the id back out of a presented certificate (x509-parser).
//!
//! [`Ca::issue_agent_for_csr`] certifies an agent's own key from a PKCS#10 request.
//!
//! Revocation is by the agent registry (an agent without a record is refused at the
//! handshake); renewal before expiry is `channel::renew`. Every
//! TLS configuration of the crate takes its crypto provider from [`provider`], the one
//! aws-lc-rs provider.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The scheme of the SAN URI naming an agent: `dockmesh-agent://<id>`.
pub const AGENT_URI_SCHEME: &str = "dockmesh-agent://";

/// The DNS name every agent listener certificate carries, and the name an agent checks it
/// against whatever address it dials: the CA is private to one server and pinned by its
/// fingerprint at enrollment, so the name adds no trust of its own.
pub const SERVER_NAME: &str = "dockmesh-server";

/// How long the CA's certificate is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server or agent certificate is valid (agents' are renewed before they end).
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Tolerated clock skew between the server and its agents.
const BACKDATE: Duration = Duration::from_secs(3600);

/// The crypto provider of every TLS configuration in this crate (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// What went wrong in the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file of the CA could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Only one of `ca.key` and `ca.crt` exists.
    #[error("the CA in {dir} is incomplete: {missing} is missing")]
    Incomplete {
        /// The CA's directory.
        dir: PathBuf,
        /// The missing file's name.
        missing: &'static str,
    },
    /// A key or certificate could not be made or read.
    #[error("certificate operation failed")]
    Cert(#[from] rcgen::Error),
    /// An agent id outside `[A-Za-z0-9._-]{1,64}`.
    #[error("{id:?} is not a valid agent id")]
    BadAgentId {
        /// The id given.
        id: String,
    },
    /// A presented certificate is not DER X.509.
    #[error("the certificate cannot be parsed")]
    Parse,
    /// A presented certificate names no agent (no `dockmesh-agent://` SAN URI), or several.
    #[error("the certificate names no single agent")]
    NoAgentId,
}

impl PkiError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            PkiError::Io { .. } => "check the data directory's permissions and free space",
            PkiError::Incomplete { .. } => {
                "restore the missing file from a backup; a new CA would orphan every enrolled agent"
            }
            PkiError::Cert(_) | PkiError::Parse => {
                "the file may be damaged; restore it from a backup"
            }
            PkiError::BadAgentId { .. } => {
                "use letters, digits, '.', '_' or '-', at most 64 characters"
            }
            PkiError::NoAgentId => "enroll the agent to get a certificate of this server's CA",
        }
    }
}

/// A certificate the CA issued, with its private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    key_der: Vec<u8>,
}

impl Issued {
    /// The private key for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("fingerprint", &fingerprint_of(&self.cert_der))
            .finish_non_exhaustive()
    }
}

/// The built-in CA: its certificate and the issuer holding its key.
pub struct Ca {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Write `contents` to `path` through a temporary file (created with `mode`) and a rename.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex.
pub fn fingerprint_of(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

fn check_agent_id(id: &str) -> Result<(), PkiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadAgentId { id: id.to_owned() })
    }
}

impl Ca {
    /// The CA in `dir` (`ca.key`, `ca.crt`), made there first if neither file exists. The
    /// directory is created (mode 0700) if needed; the key file gets mode 0600.
    pub fn load_or_create(dir: &Path) -> Result<Ca, PkiError> {
        let key_path = dir.join("ca.key");
        let crt_path = dir.join("ca.crt");
        match (key_path.exists(), crt_path.exists()) {
            (true, true) => {
                let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
                let cert_pem = std::fs::read_to_string(&crt_path).map_err(io_err(&crt_path))?;
                Ca::from_pem(&key_pem, &cert_pem)
            }
            (false, false) => {
                std::os::unix::fs::DirBuilderExt::mode(
                    std::fs::DirBuilder::new().recursive(true),
                    0o700,
                )
                .create(dir)
                .map_err(io_err(dir))?;
                let (key_pem, cert_pem) = Ca::generate()?;
                write_file(&key_path, key_pem.as_bytes(), 0o600)?;
                write_file(&crt_path, cert_pem.as_bytes(), 0o644)?;
                Ca::from_pem(&key_pem, &cert_pem)
            }
            (true, false) => Err(PkiError::Incomplete {
                dir: dir.to_owned(),
                missing: "ca.crt",
            }),
            (false, true) => Err(PkiError::Incomplete {
                dir: dir.to_owned(),
                missing: "ca.key",
            }),
        }
    }

    /// A new CA kept in memory only (tests, and a server without a data directory).
    pub fn ephemeral() -> Result<Ca, PkiError> {
        let (key_pem, cert_pem) = Ca::generate()?;
        Ca::from_pem(&key_pem, &cert_pem)
    }

    fn generate() -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "dockmesh");
        // A name of its own, so an agent of another dockmesh CA is refused as of an unknown
        // issuer rather than for a bad signature under a look-alike name.
        let tag = hex::encode(&Sha256::digest(key.public_key_raw())[..6]);
        dn.push(DnType::CommonName, format!("dockmesh agent CA {tag}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok((key.serialize_pem(), cert.pem()))
    }

    fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = der_of_pem(cert_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(Ca {
            cert_der,
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA's certificate, DER (the trust root of both ends).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The SHA-256 fingerprint of the CA's certificate, lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.cert_der)
    }

    /// A server certificate for the agent listener, valid for these DNS names or IP addresses.
    /// [`SERVER_NAME`] is always among them.
    pub fn issue_server(&self, sans: &[String]) -> Result<Issued, PkiError> {
        let mut names = vec![SERVER_NAME.to_owned()];
        names.extend(sans.iter().filter(|n| *n != SERVER_NAME).cloned());
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "dockmesh server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, LEAF_VALIDITY);
        self.sign(params)
    }

    /// A client certificate for agent `agent_id` (SAN URI `dockmesh-agent://<id>`,
    /// client-auth usage), with a new key.
    pub fn issue_agent(&self, agent_id: &str) -> Result<Issued, PkiError> {
        self.sign(agent_params(agent_id)?)
    }

    /// A client certificate for agent `agent_id` for the key of a PKCS#10 request (PEM), whose
    /// signature is checked. Only its key is used: the names and usages are the CA's choice.
    pub fn issue_agent_for_csr(&self, agent_id: &str, csr_pem: &str) -> Result<String, PkiError> {
        self.issue_agent_for_csr_valid_for(agent_id, csr_pem, LEAF_VALIDITY)
    }

    /// [`Ca::issue_agent_for_csr`] valid for `lifetime` (a year by default; a short one is for
    /// renewal tests).
    pub fn issue_agent_for_csr_valid_for(
        &self,
        agent_id: &str,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<String, PkiError> {
        let mut params = agent_params(agent_id)?;
        validity(&mut params, lifetime);
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    fn sign(&self, params: CertificateParams) -> Result<Issued, PkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

/// A new agent key and a PKCS#10 request for it, both PEM: `(key, request)`.
pub fn new_key_and_csr() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

fn agent_params(agent_id: &str) -> Result<CertificateParams, PkiError> {
    check_agent_id(agent_id)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("dockmesh agent {agent_id}"));
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::URI(
        format!("{AGENT_URI_SCHEME}{agent_id}").try_into()?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, LEAF_VALIDITY);
    Ok(params)
}

/// The DER of a PEM certificate.
pub fn der_of_pem(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| PkiError::Parse)
}

/// When a certificate stops being valid (seconds since the Unix epoch).
pub fn not_after(cert: &CertificateDer<'_>) -> Result<i64, PkiError> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| PkiError::Parse)?;
    Ok(x509.validity().not_after.timestamp())
}

/// The public key a certificate certifies (its DER SubjectPublicKeyInfo).
pub fn public_key_of(cert: &CertificateDer<'_>) -> Result<Vec<u8>, PkiError> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| PkiError::Parse)?;
    Ok(x509.public_key().raw.to_vec())
}

/// The public key (DER SubjectPublicKeyInfo) of a PKCS#8 private key (PEM).
pub fn public_key_of_key(key_pem: &str) -> Result<Vec<u8>, PkiError> {
    use rcgen::PublicKeyData;
    Ok(KeyPair::from_pem(key_pem)?.subject_public_key_info())
}

/// The agent id a certificate names in its `dockmesh-agent://` SAN URI. It does not verify the
/// certificate: call it on a certificate the TLS handshake verified.
pub fn agent_id_of(cert: &CertificateDer<'_>) -> Result<String, PkiError> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| PkiError::Parse)?;
    let san = x509
        .subject_alternative_name()
        .map_err(|_| PkiError::Parse)?
        .ok_or(PkiError::NoAgentId)?;
    let mut ids = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(AGENT_URI_SCHEME),
            _ => None,
        });
    match (ids.next(), ids.next()) {
        (Some(id), None) => {
            check_agent_id(id).map_err(|_| PkiError::NoAgentId)?;
            Ok(id.to_owned())
        }
        _ => Err(PkiError::NoAgentId),
    }
}
