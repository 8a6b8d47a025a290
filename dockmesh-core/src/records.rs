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

/// What an API token may do. Ordered: `Admin` ⊇ `Operate` ⊇ `Read`, so a token may make a
/// request when `token.scope >= required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Reads only (`GET`, `HEAD`).
    Read,
    /// Reads, and runs what moves or steers existing workloads: migrate, roll a migration
    /// back, purge, drain, cordon, upgrade agents under the policy.
    Operate,
    /// Everything: new compose content (create, deploy, adopt, upgrade, roll a stack back),
    /// stack removal, agent removal, the upgrade policy.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Operate, Scope::Admin];

    /// Its name: `read`, `operate` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token of this scope may make a request that needs `required`.
    pub fn allows(self, required: Scope) -> bool {
        self >= required
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope name that is not `read`, `operate` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a token scope (read, operate or admin)")]
pub struct UnknownScope(pub String);

impl std::str::FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

/// The scope a token record without one has: tokens made before scopes existed keep the
/// power they had.
fn scope_before_scopes() -> Scope {
    Scope::Admin
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
    /// What an API token may do (an enrollment token's is `Read` and unused).
    #[serde(default = "scope_before_scopes")]
    pub scope: Scope,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_ordered_and_named() {
        use Scope::*;
        // Each scope allows exactly the ones at or below it.
        let table = [
            (Read, [true, false, false]),
            (Operate, [true, true, false]),
            (Admin, [true, true, true]),
        ];
        for (have, allowed) in table {
            for (need, want) in Scope::ALL.into_iter().zip(allowed) {
                assert_eq!(have.allows(need), want, "{have} for {need}");
            }
        }
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            "root".parse::<Scope>().unwrap_err().to_string(),
            "\"root\" is not a token scope (read, operate or admin)"
        );
    }

    #[test]
    fn a_token_record_without_a_scope_is_admin() {
        let json = serde_json::json!({
            "hash": "h", "kind": "api", "name": "ci", "created_at": "2026-01-01T00:00:00Z",
            "expires_at": null, "one_time": false, "used_at": null,
        });
        let t: TokenRecord = serde_json::from_value(json).unwrap();
        assert_eq!(t.scope, Scope::Admin);
    }
}
