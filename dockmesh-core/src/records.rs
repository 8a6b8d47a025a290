//! Records the [`crate::ports::Store`] keeps that belong to no state machine.

use crate::types::HostId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Lets a new agent enroll and receive its certificate.
    Enrollment,
    /// Authenticates calls to the REST API.
    Api,
}

/// A token, stored only as the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Hex SHA-256 of the secret. The secret itself is never stored.
    pub hash: String,
    /// What it is for.
    pub kind: TokenKind,
    /// A display name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it stops being valid.
    pub expires_at: Option<Timestamp>,
    /// Whether it can be used only once.
    pub one_time: bool,
    /// When it was used, for one-time tokens.
    pub used_at: Option<Timestamp>,
}

/// The outcome of presenting a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TokenUse {
    /// Valid; a one-time token is now spent.
    Accepted {
        /// The token record, as it is after this use.
        token: TokenRecord,
    },
    /// No token has this hash.
    Unknown,
    /// The token expired.
    Expired,
    /// The one-time token was already used.
    AlreadyUsed,
}

/// A Compose stack the server manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRecord {
    /// The stack name.
    pub name: String,
    /// `compose.yaml`.
    pub compose: String,
    /// `.env`, if any.
    pub env: Option<String>,
    /// The host it is deployed on, if deployed.
    pub host: Option<HostId>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// One entry of a stack's deploy history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRecord {
    /// The stack.
    pub stack: String,
    /// When.
    pub at: Timestamp,
    /// On which host.
    pub host: HostId,
    /// What happened (`deploy`, `stop`, `migrate-in`, `rollback`, …).
    pub action: String,
    /// Who did it.
    pub actor: String,
}

/// A cordoned host: never a migration target until the cordon is lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CordonRecord {
    /// The host.
    pub host: HostId,
    /// When it was cordoned.
    pub at: Timestamp,
    /// Who cordoned it.
    pub by: String,
}
