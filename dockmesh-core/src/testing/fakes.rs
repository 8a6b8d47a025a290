//! In-memory fakes of the ports.

use crate::ports::{Fleet, HostRuntime, RuntimeError, RuntimeErrorKind};
use crate::types::HostId;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

mod host;
mod store;
mod time;

pub use host::{CUT_AFTER, FakeHost, FakeOp, FakeStack, fake_snapshot};
pub use store::MemStore;
pub use time::{FixedClock, SeqIds};

/// A fleet of [`FakeHost`]s.
#[derive(Default)]
pub struct FakeFleet {
    hosts: Mutex<BTreeMap<HostId, Arc<FakeHost>>>,
}

impl FakeFleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a host.
    pub fn add(&self, host: Arc<FakeHost>) {
        lock(&self.hosts).insert(host.host_id().clone(), host);
    }
    /// One host.
    pub fn get(&self, id: &str) -> Arc<FakeHost> {
        lock(&self.hosts)
            .get(&HostId::from(id))
            .cloned()
            .expect("host is in the fake fleet")
    }
}

#[async_trait]
impl Fleet for FakeFleet {
    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError> {
        lock(&self.hosts)
            .get(id)
            .cloned()
            .map(|h| h as Arc<dyn HostRuntime>)
            .ok_or_else(|| {
                RuntimeError::new(RuntimeErrorKind::NotFound, format!("unknown host {id}"))
            })
    }
}
