//! The drain planner: where each stack of a host should go.

use crate::types::{HostId, MigrationId};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One stack of a drain plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEntry {
    /// The stack.
    pub stack: String,
    /// Where it goes, or `None` when no target fits.
    pub target: Option<HostId>,
    /// Why it goes there, or why it cannot move.
    pub reason: String,
}

/// A plan to move every stack off a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainPlan {
    /// The host being drained.
    pub host: HostId,
    /// One entry per stack, in the order they will be moved.
    pub entries: Vec<DrainEntry>,
}

impl DrainPlan {
    /// True when every stack has a target.
    pub fn feasible(&self) -> bool {
        self.entries.iter().all(|e| e.target.is_some())
    }
}

/// A drain as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// The drain's id.
    pub id: uuid::Uuid,
    /// When it was created.
    pub created_at: Timestamp,
    /// The plan.
    pub plan: DrainPlan,
    /// Migrations started for it so far.
    pub migrations: Vec<MigrationId>,
}
