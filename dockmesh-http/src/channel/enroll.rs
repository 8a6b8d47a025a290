//! Agent enrollment: one-time enrollment tokens that carry the CA's fingerprint, and the
//! exchange of a token for an agent's client certificate.
//!
//! A token reads `dme_<secret>_<fingerprint>` (both 64 hex digits): the store keeps only the
//! SHA-256 of the whole token ([`hash_token`]), as a one-time
//! [`TokenKind::Enrollment`] token with an expiry. The fingerprint is the SHA-256 of the CA's
//! certificate: an agent checks the server it enrolls with against it before trusting it.
//!
//! [`enroll`] checks the token names this server's CA, certifies the agent's key (from its CSR,
//! or a key made here when it sends none), and only then spends the token and records the
//! agent (its [`AgentRecord`], under a new random id that its certificate names); a refused
//! request writes nothing. The agent's record is what admits it at the handshake: removing it
//! revokes the agent. The agent's side: [`new_agent_key`] makes its key and request, and
//! [`check_ca`] checks the CA the server returns against the token before anything trusts it.

use crate::channel::pki::{Ca, PkiError};
use dockmesh_core::ports::{Store, StoreError};
use dockmesh_core::protocol::Hello;
use dockmesh_core::records::{TokenKind, TokenRecord, TokenUse};
use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
use dockmesh_core::types::AgentId;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The hex SHA-256 of a token's secret: what the store keeps (of enrollment and API tokens).
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The prefix of every enrollment token, so a leaked one is recognisable.
pub const ENROLL_TOKEN_PREFIX: &str = "dme_";

/// An enrollment token, parsed: its secret and the fingerprint of the CA it belongs to.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    secret: String,
    ca_fingerprint: String,
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{ENROLL_TOKEN_PREFIX}{}_{}",
            self.secret, self.ca_fingerprint
        )
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl EnrollmentToken {
    /// Read a token (`dme_<secret>_<fingerprint>`).
    pub fn parse(s: &str) -> Result<EnrollmentToken, EnrollError> {
        let (secret, fp) = s
            .trim()
            .strip_prefix(ENROLL_TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .ok_or(EnrollError::Malformed)?;
        if !is_hex64(secret) || !is_hex64(fp) {
            return Err(EnrollError::Malformed);
        }
        Ok(EnrollmentToken {
            secret: secret.to_owned(),
            ca_fingerprint: fp.to_owned(),
        })
    }

    /// The fingerprint of the CA the token belongs to (lowercase hex SHA-256).
    pub fn ca_fingerprint(&self) -> &str {
        &self.ca_fingerprint
    }
}

/// The longest an enrollment token may stay valid: 30 days.
pub const MAX_ENROLLMENT_TTL: SignedDuration = SignedDuration::from_hours(30 * 24);

/// Why no enrollment token was made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NewTokenError {
    /// The lifetime is zero or negative.
    #[error("an enrollment token's lifetime must be positive, not {ttl:#}")]
    NotPositive {
        /// The lifetime asked for.
        ttl: SignedDuration,
    },
    /// The lifetime is longer than [`MAX_ENROLLMENT_TTL`] (or so long no date can hold it).
    #[error(
        "an enrollment token's lifetime of {ttl:#} is longer than the longest allowed, {max:#}"
    )]
    TooLong {
        /// The lifetime asked for.
        ttl: SignedDuration,
        /// The longest allowed.
        max: SignedDuration,
    },
    /// No randomness for the token.
    #[error("no randomness available for the token")]
    Random(#[source] getrandom::Error),
}

impl NewTokenError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            NewTokenError::NotPositive { .. } | NewTokenError::TooLong { .. } => {
                "give --ttl a lifetime between 1s and 30d, e.g. 1h; make a new token when it runs out"
            }
            NewTokenError::Random(_) => "the system's random source failed: try again",
        }
    }
}

/// Check an enrollment token's lifetime: positive and at most [`MAX_ENROLLMENT_TTL`].
pub fn check_enrollment_ttl(ttl: SignedDuration) -> Result<(), NewTokenError> {
    if ttl.is_negative() || ttl.is_zero() {
        return Err(NewTokenError::NotPositive { ttl });
    }
    if ttl > MAX_ENROLLMENT_TTL {
        return Err(NewTokenError::TooLong {
            ttl,
            max: MAX_ENROLLMENT_TTL,
        });
    }
    Ok(())
}

/// A new one-time enrollment token for `ca_fingerprint`, valid for `ttl` from `now`: the
/// token (shown once) and the record to store. `ttl` must be positive and at most
/// [`MAX_ENROLLMENT_TTL`]; every token made here expires.
pub fn new_enrollment_token(
    name: &str,
    ca_fingerprint: &str,
    now: Timestamp,
    ttl: SignedDuration,
) -> Result<(String, TokenRecord), NewTokenError> {
    check_enrollment_ttl(ttl)?;
    let expires_at = now.checked_add(ttl).map_err(|_| NewTokenError::TooLong {
        ttl,
        max: MAX_ENROLLMENT_TTL,
    })?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(NewTokenError::Random)?;
    let token = EnrollmentToken {
        secret: hex::encode(bytes),
        ca_fingerprint: ca_fingerprint.to_ascii_lowercase(),
    }
    .to_string();
    let record = TokenRecord {
        hash: hash_token(&token),
        kind: TokenKind::Enrollment,
        name: name.to_owned(),
        created_at: now,
        expires_at: Some(expires_at),
        one_time: true,
        used_at: None,
        scope: dockmesh_core::records::Scope::Read,
    };
    Ok((token, record))
}

/// What an agent sends to enroll.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// The enrollment token (`dme_<64 hex>_<64 hex>`).
    #[cfg_attr(
        feature = "server",
        schema(pattern = r"^dme_[0-9a-f]{64}_[0-9a-f]{64}$")
    )]
    pub token: String,
    /// The name of the agent's host on this server (a stack-name-like id, unique among hosts).
    #[cfg_attr(feature = "server", schema(pattern = r"^[a-z0-9][a-z0-9_-]{0,62}$"))]
    pub name: String,
    /// What the agent says about itself.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(value_type = Option<HelloSchema>))]
    pub hello: Option<Hello>,
    /// A PKCS#10 certificate signing request (PEM) for the agent's own key; without one the
    /// server makes the key and returns it.
    #[serde(default)]
    pub csr_pem: Option<String>,
}

/// The shape of [`Hello`] in the API's document (the type is the core's, which knows nothing
/// of OpenAPI); a test keeps the two alike.
#[cfg(feature = "server")]
#[derive(utoipa::ToSchema)]
#[schema(as = Hello)]
#[allow(dead_code)]
pub(crate) struct HelloSchema {
    /// The agent's version (`0.1.0`).
    version: String,
    /// The build commit, when known.
    #[schema(required = false)]
    commit: Option<String>,
    /// The protocol it speaks.
    protocol_version: u32,
    /// Operating system (`linux`).
    #[schema(required = false)]
    os: String,
    /// CPU architecture (`x86_64`).
    #[schema(required = false)]
    arch: String,
    /// The host's name.
    #[schema(required = false)]
    hostname: String,
    /// The Docker engine's version.
    #[schema(required = false)]
    docker_version: String,
    /// The last upgrade this agent was sent failed, and why.
    #[schema(required = false)]
    upgrade_failure: Option<UpgradeFailureSchema>,
}

/// The shape of [`dockmesh_core::protocol::UpgradeFailure`] in the API's document.
#[cfg(feature = "server")]
#[derive(utoipa::ToSchema)]
#[schema(as = UpgradeFailure)]
#[allow(dead_code)]
pub(crate) struct UpgradeFailureSchema {
    /// The version the agent was sent.
    target_version: String,
    /// What went wrong (the new binary exited, or did not connect before the deadline).
    reason: String,
}

/// What an enrolled agent receives.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Enrolled {
    /// The id the server gave the agent (in its certificate's SAN URI).
    pub agent_id: String,
    /// The agent's client certificate (PEM).
    pub cert_pem: String,
    /// The agent's private key (PKCS#8 PEM), when the request carried no CSR.
    #[serde(default)]
    pub key_pem: Option<String>,
    /// The CA's certificate (PEM): the agent's trust root for the agent listener.
    pub ca_pem: String,
    /// The agent's host name on the server.
    pub host: String,
    /// Where the agent listener is (`host:port`).
    pub agent_endpoint: String,
    /// The name the agent listener's certificate carries (checked by the agent in place of
    /// the address it dials).
    pub server_name: String,
    /// The server's release public key (PEM), when it has one: the agent pins it now, and
    /// trusts only upgrades signed with it. An agent enrolled with a server that had none
    /// pins a key only when its operator puts one in its state directory.
    #[serde(default)]
    pub release_key_pem: Option<String>,
}

impl fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrolled")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrollError {
    /// The token is not `dme_<64 hex>_<64 hex>`.
    #[error("the enrollment token is malformed")]
    Malformed,
    /// The token belongs to another CA (another server, or a CA that was replaced).
    #[error("the enrollment token belongs to another server's CA")]
    WrongCa,
    /// No such token (never made, deleted, or an API token).
    #[error("the enrollment token is not known")]
    Unknown,
    /// The token expired.
    #[error("the enrollment token has expired")]
    Expired,
    /// The token was already used.
    #[error("the enrollment token was already used")]
    AlreadyUsed,
    /// The CSR is unusable.
    #[error("the certificate request cannot be used")]
    Csr(#[source] PkiError),
    /// Issuing the certificate failed.
    #[error("issuing the agent's certificate failed")]
    Pki(#[source] PkiError),
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] StoreError),
    /// The agent's host name is not a valid name.
    #[error("the host name {name:?} is invalid: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Another host already has that name.
    #[error("a host named {0:?} already exists on this server")]
    NameTaken(String),
    /// No randomness for the agent id.
    #[error("no randomness available")]
    Random(#[source] getrandom::Error),
}

impl EnrollError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            EnrollError::Malformed | EnrollError::Unknown => {
                "copy the whole token printed by `dockmesh agent token create`"
            }
            EnrollError::WrongCa => {
                "this token was made by another server: make one on the server you enroll with"
            }
            EnrollError::Expired | EnrollError::AlreadyUsed => {
                "make a new token with `dockmesh agent token create`"
            }
            EnrollError::Csr(_) => "send a PEM PKCS#10 request signed by the agent's key",
            EnrollError::BadName { .. } => {
                "give the agent a name of lowercase letters, digits, `-` and `_` with --name"
            }
            EnrollError::NameTaken(_) => {
                "give the agent another name with --name, or remove the old host first"
            }
            EnrollError::Pki(_) | EnrollError::Store(_) | EnrollError::Random(_) => {
                "nothing was enrolled and the token was not spent unless it says so; retry"
            }
        }
    }
}

/// A new random agent id (`agent-` and 16 hex digits).
fn new_agent_id() -> Result<String, EnrollError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(EnrollError::Random)?;
    Ok(format!("agent-{}", hex::encode(bytes)))
}

/// The longest host name an agent may take (a Compose project name's limit).
pub const MAX_NAME_LEN: usize = 63;

/// Check a host name for an agent: [`MAX_NAME_LEN`] bytes at most, lowercase letters, digits,
/// `-` and `_`. A long name is named by its first bytes only.
pub fn validate_name(name: &str) -> Result<(), EnrollError> {
    if name.len() > MAX_NAME_LEN {
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        return Err(EnrollError::BadName {
            name: format!("{shown}…"),
            reason: format!(
                "it is {} bytes long; a host name has at most {MAX_NAME_LEN}",
                name.len()
            ),
        });
    }
    dockmesh_core::types::validate_stack_name(name).map_err(|reason| EnrollError::BadName {
        name: name.to_owned(),
        reason,
    })
}

/// Check an enrollment request without changing anything: the token names `ca`, is a known,
/// unspent, unexpired enrollment token, and the name is valid. The API runs this before it
/// takes any lock or holds anything for the request; [`enroll`] runs it again.
pub async fn check_request(
    store: &dyn Store,
    ca: &Ca,
    req: &EnrollRequest,
    now: Timestamp,
) -> Result<(), EnrollError> {
    let token = EnrollmentToken::parse(&req.token)?;
    if token.ca_fingerprint != ca.fingerprint() {
        return Err(EnrollError::WrongCa);
    }
    // The token's state first (read only; spending it in `enroll` is what counts), so that a
    // spent or expired token is named as such rather than as a name conflict of its own agent.
    let hash = hash_token(&token.to_string());
    match store.get_token(&hash).await?.as_ref() {
        None => return Err(EnrollError::Unknown),
        Some(t) if t.kind != TokenKind::Enrollment => return Err(EnrollError::Unknown),
        Some(t) if t.used_at.is_some() => return Err(EnrollError::AlreadyUsed),
        Some(t) if t.expires_at.is_some_and(|e| e <= now) => return Err(EnrollError::Expired),
        Some(_) => {}
    }
    validate_name(&req.name)
}

/// Exchange an enrollment token for a client certificate of `ca`, and record the agent. The
/// token must name `ca`'s fingerprint and the name must be free (`taken` says which host
/// names are in use besides the store's agents); the certificate is made before the token is
/// spent, so a refused request (bad token, bad name or bad CSR) writes nothing.
pub async fn enroll(
    store: &dyn Store,
    ca: &Ca,
    req: &EnrollRequest,
    taken: &[String],
    now: Timestamp,
    agent_endpoint: String,
) -> Result<Enrolled, EnrollError> {
    check_request(store, ca, req, now).await?;
    let hash = hash_token(&EnrollmentToken::parse(&req.token)?.to_string());
    let agents = store.list_agents().await?;
    if taken.contains(&req.name) || agents.iter().any(|a| a.name == req.name) {
        return Err(EnrollError::NameTaken(req.name.clone()));
    }
    let agent_id = new_agent_id()?;
    let (cert_pem, key_pem) = match &req.csr_pem {
        Some(csr) => (
            ca.issue_agent_for_csr(&agent_id, csr)
                .map_err(EnrollError::Csr)?,
            None,
        ),
        None => {
            let issued = ca.issue_agent(&agent_id).map_err(EnrollError::Pki)?;
            (issued.cert_pem, Some(issued.key_pem))
        }
    };
    match store.use_token(&hash, now).await? {
        TokenUse::Accepted { token } if token.kind == TokenKind::Enrollment => {}
        TokenUse::Accepted { .. } | TokenUse::Unknown => return Err(EnrollError::Unknown),
        TokenUse::Expired => return Err(EnrollError::Expired),
        TokenUse::AlreadyUsed => return Err(EnrollError::AlreadyUsed),
    }
    let hello = req.hello.clone().unwrap_or_default();
    store
        .upsert_agent(&AgentRecord {
            id: AgentId::from(agent_id.as_str()),
            name: req.name.clone(),
            version: hello.version,
            commit: hello.commit,
            protocol_version: hello.protocol_version,
            arch: hello.arch,
            docker_version: hello.docker_version,
            last_seen: Some(now),
            connection: ConnectionState::Disconnected,
            upgrade: UpgradeState::Idle,
        })
        .await?;
    Ok(Enrolled {
        agent_id,
        cert_pem,
        key_pem,
        ca_pem: ca.cert_pem().to_owned(),
        host: req.name.clone(),
        agent_endpoint,
        server_name: crate::channel::pki::SERVER_NAME.to_owned(),
        release_key_pem: None,
    })
}

/// A new key for an agent and a certificate request for it (PEM): `(key, request)`. The key
/// never leaves the agent.
pub fn new_agent_key() -> Result<(String, String), PkiError> {
    crate::channel::pki::new_key_and_csr()
}

/// Check the CA certificate a server returned (PEM) against the token the agent enrolled
/// with: the agent trusts it only when its fingerprint is the token's.
pub fn check_ca(token: &EnrollmentToken, ca_pem: &str) -> Result<(), EnrollError> {
    let der = crate::channel::pki::der_of_pem(ca_pem).map_err(EnrollError::Pki)?;
    if crate::channel::pki::fingerprint_of(&der) == token.ca_fingerprint {
        Ok(())
    } else {
        Err(EnrollError::WrongCa)
    }
}
