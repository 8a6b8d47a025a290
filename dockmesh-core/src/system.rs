//! The time ports on the real system (feature `system`): the wall clock, UUIDv7 ids and tokio's
//! timer. Nothing in core uses them; a server or an embedder hands them to the driver, the
//! supervisors and the store.
//!
//! ```
//! use dockmesh_core::ports::{Clock, IdGen};
//! use dockmesh_core::system::{SystemClock, UuidV7Ids};
//!
//! let (a, b) = (UuidV7Ids.new_id(), UuidV7Ids.new_id());
//! assert!(a < b, "UUIDv7 ids sort in the order they were made");
//! assert!(SystemClock.now() > jiff::Timestamp::UNIX_EPOCH);
//! ```

use crate::ports::{Clock, IdGen, Timer};
use async_trait::async_trait;
use std::time::Duration;

/// [`Clock`] reading the system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// [`IdGen`] making UUIDv7 ids: time-ordered, so ids made later sort later.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Ids;

impl IdGen for UuidV7Ids {
    fn new_id(&self) -> uuid::Uuid {
        uuid::Uuid::now_v7()
    }
}

/// [`Timer`] sleeping on tokio's timer (a tokio runtime with time enabled must be running).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioTimer;

#[async_trait]
impl Timer for TokioTimer {
    async fn sleep(&self, d: Duration) {
        tokio::time::sleep(d).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_timer_waits_at_least_the_duration_it_is_given() {
        let start = std::time::Instant::now();
        TokioTimer.sleep(Duration::from_millis(50)).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn the_clock_is_the_wall_clock() {
        let before = jiff::Timestamp::now();
        let read = SystemClock.now();
        let after = jiff::Timestamp::now();
        assert!(
            before <= read && read <= after,
            "{before} <= {read} <= {after}"
        );
    }

    #[test]
    fn ids_are_version_7_and_distinct() {
        let ids: Vec<_> = (0..100).map(|_| UuidV7Ids.new_id()).collect();
        assert!(ids.iter().all(|id| id.get_version_num() == 7));
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "ids come out distinct and in order");
    }
}
