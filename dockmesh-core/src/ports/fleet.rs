//! The set of hosts the server can reach.

use super::{HostRuntime, RuntimeError};
use crate::types::HostId;
use async_trait::async_trait;
use std::sync::Arc;

/// The set of hosts the server can reach.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// The runtime of one host, when it is known and reachable.
    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError>;
}
