//! A fixed set of hosts, for embedders and tools that reach every engine directly.

use crate::ports::{Fleet, HostRuntime, RuntimeError, RuntimeErrorKind};
use crate::types::HostId;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A [`Fleet`] over runtimes known up front (for example two local Docker engines).
#[derive(Default, Clone)]
pub struct StaticFleet {
    hosts: BTreeMap<HostId, Arc<dyn HostRuntime>>,
}

impl StaticFleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a host under its own id.
    pub fn with(mut self, host: Arc<dyn HostRuntime>) -> Self {
        self.hosts.insert(host.host_id().clone(), host);
        self
    }

    /// The ids of the hosts.
    pub fn host_ids(&self) -> impl Iterator<Item = &HostId> {
        self.hosts.keys()
    }
}

#[async_trait]
impl Fleet for StaticFleet {
    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError> {
        self.hosts.get(id).cloned().ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("unknown host {id}: this fleet has no host of that id"),
            )
        })
    }
}
