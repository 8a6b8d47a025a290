//! Fakes of the time ports: a clock that says what it is told, sequential ids.

use super::lock;
use crate::ports::{Clock, IdGen};
use jiff::Timestamp;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A clock that says what it is told.
#[derive(Debug)]
pub struct FixedClock(Mutex<Timestamp>);

impl FixedClock {
    /// A clock at `t`.
    pub fn new(t: Timestamp) -> Self {
        FixedClock(Mutex::new(t))
    }
    /// Move the clock.
    pub fn set(&self, t: Timestamp) {
        *lock(&self.0) = t;
    }
    /// Move the clock forward.
    pub fn advance(&self, d: jiff::SignedDuration) {
        let mut g = lock(&self.0);
        *g += d;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        *lock(&self.0)
    }
}

/// Ids 1, 2, 3, … as UUIDs.
#[derive(Debug, Default)]
pub struct SeqIds(AtomicU64);

impl IdGen for SeqIds {
    fn new_id(&self) -> uuid::Uuid {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        uuid::Uuid::from_u128(n as u128)
    }
}
