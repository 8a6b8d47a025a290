//! What the evaluator reads of an agent, borrowed.

use super::{AgentRecord, ConnectionState, UpgradeState};
use crate::types::AgentId;

/// The part of an agent the evaluator reads. Implemented for [`AgentRecord`], for the borrowed
/// [`AgentRef`] and for references to either, so a tick runs over `&[AgentRecord]`,
/// `&[&AgentRecord]` or a slice of projections without copying a string.
pub trait AgentView {
    /// The agent's id.
    fn agent_id(&self) -> &AgentId;
    /// The version string the agent reports.
    fn reported_version(&self) -> &str;
    /// Whether the agent is connected now.
    fn connection(&self) -> ConnectionState;
    /// Where the agent stands in its upgrade.
    fn upgrade_state(&self) -> &UpgradeState;
}

impl AgentView for AgentRecord {
    fn agent_id(&self) -> &AgentId {
        &self.id
    }
    fn reported_version(&self) -> &str {
        &self.version
    }
    fn connection(&self) -> ConnectionState {
        self.connection
    }
    fn upgrade_state(&self) -> &UpgradeState {
        &self.upgrade
    }
}

impl<T: AgentView + ?Sized> AgentView for &T {
    fn agent_id(&self) -> &AgentId {
        (**self).agent_id()
    }
    fn reported_version(&self) -> &str {
        (**self).reported_version()
    }
    fn connection(&self) -> ConnectionState {
        (**self).connection()
    }
    fn upgrade_state(&self) -> &UpgradeState {
        (**self).upgrade_state()
    }
}

/// A borrowed view of an agent, for callers that keep agents in another shape than
/// [`AgentRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentRef<'a> {
    /// The agent's id.
    pub id: &'a AgentId,
    /// The version string the agent reports.
    pub version: &'a str,
    /// Whether the agent is connected now.
    pub connection: ConnectionState,
    /// Where the agent stands in its upgrade.
    pub upgrade: &'a UpgradeState,
}

impl<'a> From<&'a AgentRecord> for AgentRef<'a> {
    fn from(r: &'a AgentRecord) -> Self {
        AgentRef {
            id: &r.id,
            version: &r.version,
            connection: r.connection,
            upgrade: &r.upgrade,
        }
    }
}

impl AgentView for AgentRef<'_> {
    fn agent_id(&self) -> &AgentId {
        self.id
    }
    fn reported_version(&self) -> &str {
        self.version
    }
    fn connection(&self) -> ConnectionState {
        self.connection
    }
    fn upgrade_state(&self) -> &UpgradeState {
        self.upgrade
    }
}
