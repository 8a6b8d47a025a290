//! The set of hosts the server can reach.

use super::{HostRuntime, RuntimeError};
use crate::types::{AgentId, HostId};
use async_trait::async_trait;
use std::sync::Arc;

/// The set of hosts the server can reach.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// The runtime of one host, when it is known and reachable.
    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError>;
    /// Send an agent the order to upgrade itself.
    async fn dispatch_upgrade(
        &self,
        agent: &AgentId,
        order: &crate::rollout::UpgradeOrder,
    ) -> Result<(), RuntimeError>;
}
