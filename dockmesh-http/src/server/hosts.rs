//! The hosts the server manages: one [`HostRuntime`] each, and which are cordoned.
//!
//! Hosts reached by socket are given at start (the binary builds a runtime per Docker engine it
//! reaches); hosts reached through an agent are added when the agent enrolls and at start for
//! every agent the store knows, and removed when the agent is removed. A
//! cordoned host is never a migration target; cordons are stored (the API writes the store
//! first) and loaded at start; this set is their in-memory copy.

use async_trait::async_trait;
use dockmesh_core::HostId;
use dockmesh_core::ports::{Fleet, HostRuntime, RuntimeError, RuntimeErrorKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

/// The server's hosts.
#[derive(Default)]
pub struct Hosts {
    hosts: RwLock<BTreeMap<HostId, Arc<dyn HostRuntime>>>,
    cordoned: Mutex<BTreeSet<HostId>>,
}

impl Hosts {
    /// No hosts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a host under its own id; a second host with the same id is refused.
    pub fn add(&self, host: Arc<dyn HostRuntime>) -> Result<(), String> {
        let id = host.host_id().clone();
        let mut hosts = self.hosts.write().expect("host map poisoned");
        if hosts.contains_key(&id) {
            return Err(format!("host {id} is given twice"));
        }
        hosts.insert(id, host);
        Ok(())
    }

    /// Remove a host; returns whether it was there.
    pub fn remove(&self, id: &HostId) -> bool {
        self.hosts
            .write()
            .expect("host map poisoned")
            .remove(id)
            .is_some()
    }

    /// The ids, in order.
    pub fn ids(&self) -> Vec<HostId> {
        self.hosts
            .read()
            .expect("host map poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// One host's runtime.
    pub fn get(&self, id: &HostId) -> Option<Arc<dyn HostRuntime>> {
        self.hosts
            .read()
            .expect("host map poisoned")
            .get(id)
            .cloned()
    }

    /// Cordon (`true`) or uncordon a host; returns whether the state changed.
    pub fn set_cordoned(&self, id: &HostId, cordoned: bool) -> bool {
        let mut set = self.cordoned.lock().expect("cordon set poisoned");
        if cordoned {
            set.insert(id.clone())
        } else {
            set.remove(id)
        }
    }

    /// Whether a host is cordoned.
    pub fn is_cordoned(&self, id: &HostId) -> bool {
        self.cordoned
            .lock()
            .expect("cordon set poisoned")
            .contains(id)
    }
}

#[async_trait]
impl Fleet for Hosts {
    async fn host(&self, id: &HostId) -> Result<Arc<dyn HostRuntime>, RuntimeError> {
        self.get(id).ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("unknown host {id}: the server has no host of that id"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::testing::FakeHost;

    #[tokio::test]
    async fn hosts_are_unique_and_cordons_toggle() {
        let hosts = Hosts::new();
        hosts.add(Arc::new(FakeHost::new("a"))).unwrap();
        assert!(hosts.add(Arc::new(FakeHost::new("a"))).is_err());
        hosts.add(Arc::new(FakeHost::new("b"))).unwrap();
        assert_eq!(hosts.ids(), [HostId::from("a"), HostId::from("b")]);
        let a = HostId::from("a");
        assert!(!hosts.is_cordoned(&a));
        assert!(hosts.set_cordoned(&a, true));
        assert!(!hosts.set_cordoned(&a, true), "already cordoned");
        assert!(hosts.is_cordoned(&a));
        assert!(hosts.set_cordoned(&a, false));
        assert!(!hosts.is_cordoned(&a));
        assert!(hosts.remove(&HostId::from("b")));
        assert!(!hosts.remove(&HostId::from("b")), "already gone");
        assert_eq!(hosts.ids(), std::slice::from_ref(&a));
        assert!(hosts.host(&HostId::from("zz")).await.is_err());
        assert_eq!(hosts.host(&a).await.unwrap().host_id(), &a);
    }
}
