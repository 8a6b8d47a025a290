//! The transfer rate of each volume of a migration over its transfer, from the byte progress
//! the hosts report: a bounded history of `(time, bytes so far)` samples per volume, with the
//! moments a cut transfer went on from its resume point or from its start.
//!
//! In memory only, like the progress counters: a restarted server draws no rate for the
//! transfers before it. Bounded twice: at most [`MAX_SAMPLES`] samples per volume (when full,
//! every other one is dropped and the sampling interval doubles, so a long transfer keeps its
//! whole shape at a coarser grain) and the histories of at most [`MAX_MIGRATIONS`] migrations
//! (the oldest forgotten first).

use dockmesh_core::MigrationId;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

/// Samples kept per volume.
pub const MAX_SAMPLES: usize = 240;
/// Migrations whose histories are kept.
pub const MAX_MIGRATIONS: usize = 64;
/// The first sampling interval.
const FIRST_INTERVAL: SignedDuration = SignedDuration::from_millis(100);

/// A transfer that went on after a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// When.
    pub at: Timestamp,
    /// The byte of the stream it went on from (0: from its start).
    pub offset: u64,
}

/// One volume's transfer over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateHistory {
    /// `(time, bytes so far)`, oldest first.
    samples: Vec<(Timestamp, u64)>,
    /// The latest report, when newer than the last sample.
    latest: Option<(Timestamp, u64)>,
    /// Where the transfer went on after cuts.
    pub resumes: Vec<Resume>,
    interval: SignedDuration,
}

impl Default for RateHistory {
    fn default() -> Self {
        RateHistory {
            samples: Vec::new(),
            latest: None,
            resumes: Vec::new(),
            interval: FIRST_INTERVAL,
        }
    }
}

impl RateHistory {
    /// `bytes` so far at `at`. A count lower than the last one is a transfer that went on
    /// from an earlier byte (or from its start).
    pub fn record(&mut self, at: Timestamp, bytes: u64) {
        let last = self.latest.or(self.samples.last().copied());
        if let Some((_, before)) = last
            && bytes < before
            && self.resumes.last().is_none_or(|r| r.offset != bytes)
        {
            self.resumes.push(Resume { at, offset: bytes });
        }
        self.take(at, bytes);
    }

    /// The transfer went on from byte `offset` at `at`.
    pub fn resumed(&mut self, at: Timestamp, offset: u64) {
        self.resumes.push(Resume { at, offset });
        self.take(at, offset);
    }

    fn take(&mut self, at: Timestamp, bytes: u64) {
        let prev = self.latest.or(self.samples.last().copied());
        let dropped = prev.is_some_and(|(_, b)| bytes < b);
        if dropped && let Some(l) = self.latest.take() {
            self.push(l);
        }
        let due = dropped
            || self
                .samples
                .last()
                .is_none_or(|(t, _)| at.duration_since(*t) >= self.interval);
        if due {
            self.latest = None;
            self.push((at, bytes));
        } else {
            self.latest = Some((at, bytes));
        }
    }

    fn push(&mut self, sample: (Timestamp, u64)) {
        if self.samples.len() >= MAX_SAMPLES {
            // Keep the first and every other one after it: the same shape at a coarser grain.
            let mut i = 0;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.interval *= 2;
        }
        self.samples.push(sample);
    }

    /// The samples, the latest report included.
    pub fn samples(&self) -> Vec<(Timestamp, u64)> {
        let mut v = self.samples.clone();
        v.extend(self.latest);
        v
    }

    /// Bytes per second between consecutive samples, at the later one's time; a drop (a cut
    /// transfer going on from an earlier byte) starts again from the new count.
    pub fn rates(&self) -> Vec<(Timestamp, f64)> {
        self.samples()
            .windows(2)
            .filter_map(|w| {
                let ((t0, b0), (t1, b1)) = (w[0], w[1]);
                let secs = t1.duration_since(t0).as_secs_f64();
                (b1 >= b0 && secs > 0.0).then(|| (t1, (b1 - b0) as f64 / secs))
            })
            .collect()
    }
}

/// The rate histories of recent migrations.
#[derive(Default)]
pub struct Rates {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by: HashMap<MigrationId, BTreeMap<String, RateHistory>>,
    order: VecDeque<MigrationId>,
}

impl Rates {
    fn with(&self, id: MigrationId, volume: String, f: impl FnOnce(&mut RateHistory)) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !inner.by.contains_key(&id) {
            inner.order.push_back(id);
            while inner.order.len() > MAX_MIGRATIONS {
                if let Some(old) = inner.order.pop_front() {
                    inner.by.remove(&old);
                }
            }
        }
        f(inner.by.entry(id).or_default().entry(volume).or_default());
    }

    /// `bytes` of `volume` so far at `at`.
    pub fn record(&self, id: MigrationId, volume: String, at: Timestamp, bytes: u64) {
        self.with(id, volume, |h| h.record(at, bytes));
    }

    /// The transfer of `volume` went on from byte `offset` at `at`.
    pub fn resumed(&self, id: MigrationId, volume: String, at: Timestamp, offset: u64) {
        self.with(id, volume, |h| h.resumed(at, offset));
    }

    /// The histories of migration `id`, by volume.
    pub fn of(&self, id: MigrationId) -> BTreeMap<String, RateHistory> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by.get(&id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn rates_follow_the_bytes_and_a_resume_is_marked() {
        let mut h = RateHistory::default();
        h.record(t(0), 0);
        h.record(t(50), 1_000); // inside the interval: kept as the latest only
        h.record(t(1_000), 10_000);
        h.record(t(2_000), 30_000);
        h.resumed(t(3_000), 25_000);
        h.record(t(4_000), 45_000);
        assert_eq!(
            h.rates(),
            vec![
                (t(1_000), 10_000.0),
                (t(2_000), 20_000.0),
                (t(4_000), 20_000.0)
            ]
        );
        assert_eq!(
            h.resumes,
            vec![Resume {
                at: t(3_000),
                offset: 25_000
            }]
        );
        // A transfer that starts over from zero is marked too (once).
        h.record(t(5_000), 0);
        h.record(t(5_100), 0);
        assert_eq!(h.resumes.last().unwrap().offset, 0);
        assert_eq!(h.resumes.len(), 2);
    }

    #[test]
    fn the_latest_report_counts_until_the_next_sample() {
        let mut h = RateHistory::default();
        h.record(t(0), 0);
        h.record(t(60), 600);
        assert_eq!(h.samples(), vec![(t(0), 0), (t(60), 600)]);
        assert_eq!(h.rates(), vec![(t(60), 10_000.0)]);
    }

    #[test]
    fn only_the_newest_migrations_are_kept() {
        let r = Rates::default();
        for i in 0..(MAX_MIGRATIONS as u128 + 3) {
            r.record(
                MigrationId(uuid::Uuid::from_u128(i + 1)),
                "v".into(),
                t(0),
                1,
            );
        }
        assert!(r.of(MigrationId(uuid::Uuid::from_u128(1))).is_empty());
        let newest = MigrationId(uuid::Uuid::from_u128(MAX_MIGRATIONS as u128 + 3));
        assert_eq!(r.of(newest)["v"].samples(), vec![(t(0), 1)]);
    }

    proptest! {
        /// However long the transfer, the history stays bounded, in time order, and keeps its
        /// first and last report.
        #[test]
        fn a_history_stays_bounded_and_in_order(steps in proptest::collection::vec((1i64..5_000, 0u64..1 << 20), 1..2_000)) {
            let mut h = RateHistory::default();
            let (mut at, mut bytes) = (0, 0u64);
            for (dt, db) in &steps {
                at += dt;
                bytes += db;
                h.record(t(at), bytes);
            }
            let s = h.samples();
            prop_assert!(s.len() <= MAX_SAMPLES + 1);
            prop_assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert_eq!(s.first().unwrap().0, t(steps[0].0));
            prop_assert_eq!(*s.last().unwrap(), (t(at), bytes));
            prop_assert!(h.rates().iter().all(|(_, r)| r.is_finite() && *r >= 0.0));
        }
    }
}
