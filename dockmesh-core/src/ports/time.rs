//! Time and ids: the ports through which core learns the time and makes new ids.

use async_trait::async_trait;
use jiff::Timestamp;

/// The source of time. Core never reads the system clock itself.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// Waiting, for the loops that renew leases while a long step runs.
#[async_trait]
pub trait Timer: Send + Sync {
    /// Return after `d`.
    async fn sleep(&self, d: std::time::Duration);
}

/// The source of new ids.
pub trait IdGen: Send + Sync {
    /// A new unique id.
    fn new_id(&self) -> uuid::Uuid;
}
