//! Identifiers and small value types shared by every module.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The id of a host: its name on the server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostId(pub String);

/// An agent's id (the id its certificate names; its host has a name of its own, the record's `name`).
pub type AgentId = HostId;

impl HostId {
    /// Build a host id from anything string-like.
    pub fn new(id: impl Into<String>) -> Self {
        HostId(id.into())
    }
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for HostId {
    fn from(s: &str) -> Self {
        HostId(s.to_owned())
    }
}

/// The id of a stack migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MigrationId(pub uuid::Uuid);

impl fmt::Display for MigrationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The files that define a Compose stack: `compose.yaml` and an optional `.env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackFiles {
    /// The stack (Compose project) name.
    pub name: String,
    /// The content of `compose.yaml`.
    pub compose: String,
    /// The content of `.env`, if the stack has one.
    #[serde(default)]
    pub env: Option<String>,
}

/// Check a stack name: Compose project names are lowercase letters, digits, `-` and `_`,
/// starting with a letter or digit, at most 63 characters.
pub fn validate_stack_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if name.is_empty() || name.len() > 63 || !ok_first || !ok_rest {
        return Err(format!(
            "invalid stack name {name:?}: use 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names() {
        for good in ["web", "a1", "my-app_2", "0abc"] {
            assert!(validate_stack_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Web", "-x", "_x", "a b", "a/b", &"x".repeat(64)] {
            let err = validate_stack_name(bad).unwrap_err();
            assert!(err.contains("invalid stack name"), "{bad}: {err}");
        }
    }
}
