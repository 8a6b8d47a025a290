//! What hosts report as it happens: each host's event stream ([`HostRuntime::events`]) held open
//! by the server, its recent events kept in memory (the last [`KEPT_PER_HOST`] per host) for
//! `GET /api/v1/hosts/{id}/events`, each logged.
//!
//! An agent's stream is opened on each of its connections (`GET /v1/events` over the channel)
//! and ends with the connection; the agent's next connection opens it again. A host reached by
//! socket is followed from the server's start, again after a pause that doubles from 1 s to
//! 60 s while its engine does not answer.

use dockmesh_core::HostId;
use dockmesh_core::ports::{HostEvent, HostRuntime, RuntimeError, cannot};
use futures_util::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many recent events the server keeps per host.
pub const KEPT_PER_HOST: usize = 200;

/// The pause before following a socket host again starts here and doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between two attempts to follow a socket host.
const MAX_PAUSE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct HostLog {
    events: VecDeque<HostEvent>,
    /// Streams open on the host now (an agent's replaced connection can overlap its next).
    open: u32,
    /// Why the host's events are not followed, when they are not.
    note: Option<String>,
    /// How many events were recorded since the host's log began (it never goes down while
    /// the log lives): a snapshot taken at a lower count is stale.
    recorded: u64,
}

/// The recent events of each host, and whether they are being followed.
#[derive(Clone, Default)]
pub struct HostEvents {
    logs: Arc<Mutex<HashMap<HostId, HostLog>>>,
    /// Woken on every recorded event (the snapshot refresher waits on it).
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for HostEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostEvents").finish_non_exhaustive()
    }
}

/// A host's recent events, oldest first, and whether they are followed now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recent {
    /// The newest events (at most the limit asked for), oldest first.
    pub events: Vec<HostEvent>,
    /// Whether a stream from the host is open now.
    pub following: bool,
    /// Why the host's events are not followed, when they are not and it is known.
    pub note: Option<String>,
}

impl HostEvents {
    fn with<T>(&self, host: &HostId, f: impl FnOnce(&mut HostLog) -> T) -> T {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        f(logs.entry(host.clone()).or_default())
    }

    /// Keep `event` of `host`, dropping the oldest beyond [`KEPT_PER_HOST`].
    pub fn record(&self, host: &HostId, event: HostEvent) {
        self.with(host, |log| {
            log.events.push_back(event);
            log.recorded += 1;
            while log.events.len() > KEPT_PER_HOST {
                log.events.pop_front();
            }
        });
        self.changed.notify_one();
    }

    /// How many events of `host` were recorded so far: a snapshot of the host taken when
    /// the count was lower is stale ([`crate::server::snapshots`]).
    pub fn recorded(&self, host: &HostId) -> u64 {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.get(host).map_or(0, |l| l.recorded)
    }

    /// Resolves once an event was recorded (of any host) after the last wait.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The newest `limit` events of `host`, oldest first.
    pub fn recent(&self, host: &HostId, limit: usize) -> Recent {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        let Some(log) = logs.get(host) else {
            return Recent::default();
        };
        let skip = log.events.len().saturating_sub(limit);
        Recent {
            events: log.events.iter().skip(skip).cloned().collect(),
            following: log.open > 0,
            note: log.note.clone(),
        }
    }

    /// Forget `host` (it was removed).
    pub fn forget(&self, host: &HostId) {
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host);
    }

    /// Follow `host`'s events until its stream ends: `Ok` when it ended, the error that
    /// ended it or kept it from opening otherwise. A stream item that is an error (a line the
    /// host sent that is not understood) is logged and skipped.
    pub async fn follow(&self, host: &dyn HostRuntime) -> Result<(), RuntimeError> {
        let id = host.host_id().clone();
        let opened = match host.events() {
            Some(events) => events.follow_events().await,
            None => Err(cannot::events(&id)),
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                self.with(&id, |log| log.note = Some(e.message.clone()));
                return Err(e);
            }
        };
        self.with(&id, |log| {
            log.open += 1;
            log.note = None;
        });
        // Counted open until this call ends, or is dropped.
        let _open = Open {
            events: self,
            host: &id,
        };
        tracing::debug!(host = %id, "following the host's events");
        let mut ended = Ok(());
        while let Some(item) = stream.next().await {
            match item {
                Ok(e) => {
                    tracing::info!(
                        host = %id,
                        stack = %e.stack,
                        container = %e.container,
                        action = %e.action,
                        exit_code = ?e.exit_code,
                        "host event"
                    );
                    self.record(&id, e);
                }
                Err(e) if e.kind == dockmesh_core::ports::RuntimeErrorKind::Integrity => {
                    tracing::warn!(host = %id, error = %e, "an event from the host was skipped");
                }
                Err(e) => {
                    ended = Err(e);
                    break;
                }
            }
        }
        if let Err(e) = &ended {
            self.with(&id, |log| log.note = Some(e.message.clone()));
        }
        ended
    }

    /// Follow `host` for as long as the task runs: again after each end, after a pause that
    /// doubles from 1 s to 60 s while it fails, back to 1 s after a stream that lasted a minute.
    pub async fn follow_forever(&self, host: Arc<dyn HostRuntime>) {
        let mut pause = FIRST_PAUSE;
        loop {
            let started = std::time::Instant::now();
            if let Err(e) = self.follow(host.as_ref()).await {
                tracing::debug!(host = %host.host_id(), error = %e, "the host's events are not followed");
            }
            let (now, next) = pauses(pause, started.elapsed());
            tokio::time::sleep(now).await;
            pause = next;
        }
    }
}

/// The pause before following a host again after a stream that lasted `lasted`, and the one
/// after that: doubling from [`FIRST_PAUSE`] up to [`MAX_PAUSE`], back to the first after a
/// stream that lasted [`MAX_PAUSE`] or more.
fn pauses(pause: Duration, lasted: Duration) -> (Duration, Duration) {
    let now = if lasted >= MAX_PAUSE {
        FIRST_PAUSE
    } else {
        pause
    };
    (now, (now * 2).min(MAX_PAUSE))
}

/// One open stream of a host, counted until dropped.
struct Open<'a> {
    events: &'a HostEvents,
    host: &'a HostId,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.events
            .with(self.host, |log| log.open = log.open.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::ports::RuntimeErrorKind;
    use dockmesh_core::testing::FakeHost;
    use jiff::Timestamp;

    fn event(n: i64) -> HostEvent {
        HostEvent {
            at: Timestamp::from_second(1_700_000_000 + n).unwrap(),
            stack: "shop".into(),
            service: Some("db".into()),
            container: "shop-db-1".into(),
            action: "die".into(),
            exit_code: Some(n),
        }
    }

    #[test]
    fn the_newest_events_are_kept_oldest_first() {
        let log = HostEvents::default();
        let h = HostId::from("a");
        for n in 0..(KEPT_PER_HOST as i64 + 5) {
            log.record(&h, event(n));
        }
        let all = log.recent(&h, usize::MAX);
        assert_eq!(all.events.len(), KEPT_PER_HOST);
        assert_eq!(all.events[0].exit_code, Some(5));
        let last = log.recent(&h, 2);
        assert_eq!(
            last.events.iter().map(|e| e.exit_code).collect::<Vec<_>>(),
            [
                Some(KEPT_PER_HOST as i64 + 3),
                Some(KEPT_PER_HOST as i64 + 4)
            ]
        );
        assert!(log.recent(&HostId::from("b"), 10).events.is_empty());
        log.forget(&h);
        assert!(log.recent(&h, 10).events.is_empty());
    }

    #[tokio::test]
    async fn following_records_events_skips_what_is_not_understood_and_stops_at_an_error() {
        let log = HostEvents::default();
        let host = FakeHost::new("a");
        host.script_events(vec![
            Ok(event(1)),
            Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                "an event line is not understood",
            )),
            Ok(event(2)),
            Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                "the connection closed",
            )),
            Ok(event(3)),
        ]);
        let err = log.follow(&host).await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable);
        let r = log.recent(host.host_id(), 10);
        assert_eq!(
            r.events.iter().map(|e| e.exit_code).collect::<Vec<_>>(),
            [Some(1), Some(2)]
        );
        assert!(!r.following);
        assert_eq!(r.note.as_deref(), Some("the connection closed"));
        // It cannot open again: the reason is kept.
        assert!(log.follow(&host).await.is_err());
        assert_eq!(
            log.recent(host.host_id(), 10).note.as_deref(),
            Some("host a has no event stream scripted")
        );
    }

    #[tokio::test]
    async fn a_host_counts_as_followed_while_its_stream_is_open_and_no_longer() {
        let log = HostEvents::default();
        let host = Arc::new(FakeHost::new("a"));
        host.script_event_stream(
            futures_util::stream::iter(vec![Ok(event(1))])
                .chain(futures_util::stream::pending())
                .boxed(),
        );
        let id = host.host_id().clone();
        assert!(!log.recent(&id, 10).following);
        let task = {
            let (log, host) = (log.clone(), host.clone());
            tokio::spawn(async move { log.follow(host.as_ref()).await })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while log.recent(&id, 10).events.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no event recorded");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(log.recent(&id, 10).following);
        // Dropped (its connection closed): no longer followed.
        task.abort();
        let _ = task.await;
        let r = log.recent(&id, 10);
        assert!(!r.following);
        assert_eq!(r.events.len(), 1);
    }

    #[test]
    fn the_pause_doubles_to_a_minute_and_starts_over_after_a_long_stream() {
        let short = Duration::from_millis(10);
        let mut pause = FIRST_PAUSE;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let (now, next) = pauses(pause, short);
            seen.push(now.as_secs());
            pause = next;
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(pauses(MAX_PAUSE, MAX_PAUSE), (FIRST_PAUSE, FIRST_PAUSE * 2));
        assert_eq!(pauses(MAX_PAUSE, MAX_PAUSE - short), (MAX_PAUSE, MAX_PAUSE));
    }

    #[tokio::test]
    async fn a_host_is_followed_again_once_it_answers() {
        let log = HostEvents::default();
        let host = Arc::new(FakeHost::new("a"));
        let task = tokio::spawn({
            let (log, host) = (log.clone(), host.clone());
            async move { log.follow_forever(host).await }
        });
        // The first attempt finds no stream; the next, a second later, finds this one.
        tokio::time::sleep(Duration::from_millis(100)).await;
        host.script_events(vec![Ok(event(7))]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.recent(host.host_id(), 10).events.is_empty() {
            assert!(std::time::Instant::now() < deadline, "not followed again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }
}
