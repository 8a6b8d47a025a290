//! A migration's timeline: the steps its event log records, each as a span of time, the cuts
//! of its transfers, and its downtime window (from `source_stopped` to `target_healthy`, or
//! to `source_restarted` when a failure put the stack back on its source).
//!
//! The timeline covers the move itself: from the request to the commit, or to the end of the
//! compensation after a failure. A later rollback or purge is not part of it.
//!
//! Recorded times are taken as they are: a log whose clock stepped back still gives a timeline
//! whose spans never end before they start (a span's end is at least its start) and whose
//! durations are never negative.

use super::event::{MigrationEvent, Step};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::fmt;

/// What a span of the timeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Pre-flight checks (from the request).
    Preflight,
    /// Stopping the stack on the source.
    StopSource,
    /// One volume's transfer, from its start to its verification (cuts included).
    Transfer,
    /// Shipping `compose.yaml` and `.env`.
    ShipFiles,
    /// Starting the stack on the target.
    StartTarget,
    /// Waiting for the target to be healthy.
    TargetHealth,
    /// Recording the commit.
    Commit,
    /// Undoing a failed step: cleaning the target and restarting the source.
    Compensation,
}

impl Stage {
    /// Every stage, in the order a migration runs them.
    pub const ALL: [Stage; 8] = [
        Stage::Preflight,
        Stage::StopSource,
        Stage::Transfer,
        Stage::ShipFiles,
        Stage::StartTarget,
        Stage::TargetHealth,
        Stage::Commit,
        Stage::Compensation,
    ];

    /// The stage's name on the wire (`preflight`, `stop_source`, `transfer`, …).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Preflight => "preflight",
            Stage::StopSource => "stop_source",
            Stage::Transfer => "transfer",
            Stage::ShipFiles => "ship_files",
            Stage::StartTarget => "start_target",
            Stage::TargetHealth => "target_health",
            Stage::Commit => "commit",
            Stage::Compensation => "compensation",
        }
    }

    /// The stage in a few words (`transfer`, `health wait`, …).
    pub fn words(self) -> &'static str {
        match self {
            Stage::Preflight => "pre-flight",
            Stage::StopSource => "stop",
            Stage::Transfer => "transfer",
            Stage::ShipFiles => "ship",
            Stage::StartTarget => "start",
            Stage::TargetHealth => "health wait",
            Stage::Commit => "commit",
            Stage::Compensation => "compensation",
        }
    }

    fn of_step(step: Step) -> Stage {
        match step {
            Step::Preflight => Stage::Preflight,
            Step::StopSource => Stage::StopSource,
            Step::TransferVolumes => Stage::Transfer,
            Step::ShipFiles => Stage::ShipFiles,
            Step::StartTarget => Stage::StartTarget,
            Step::TargetHealth => Stage::TargetHealth,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One step as a span of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// What ran.
    pub stage: Stage,
    /// The volume, for a transfer.
    pub volume: Option<String>,
    /// When it began.
    pub start: Timestamp,
    /// When it ended (never before `start`); `now` while it runs.
    pub end: Timestamp,
    /// The step failed at `end`.
    pub failed: bool,
    /// The step still runs: `end` is the time the timeline was drawn up.
    pub running: bool,
}

impl Span {
    /// How long it took (or has taken so far).
    pub fn duration(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }
}

/// A transfer cut off by a host that stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The volume.
    pub volume: String,
    /// When.
    pub at: Timestamp,
    /// What the host said.
    pub reason: String,
}

/// The time the stack ran nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the source stopped.
    pub start: Timestamp,
    /// When the target was healthy (or the source ran again); `now` while it lasts.
    pub end: Timestamp,
    /// The stack is still down: `end` is the time the timeline was drawn up.
    pub open: bool,
}

impl Window {
    /// How long the stack was (or has been so far) down.
    pub fn duration(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }
}

/// A migration's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// When the migration was asked for: the start of the time axis.
    pub start: Timestamp,
    /// The end of the time axis: the last event, or `now` while a step runs.
    pub end: Timestamp,
    /// The steps, in the order they began.
    pub spans: Vec<Span>,
    /// The downtime window, once the source stopped.
    pub downtime: Option<Window>,
    /// Transfers cut off, in order.
    pub cuts: Vec<Cut>,
}

impl Timeline {
    /// The timeline of a migration asked for at `requested_at` with this event log, drawn up
    /// at `now` (the end of a step that still runs).
    pub fn of(requested_at: Timestamp, events: &[MigrationEvent], now: Timestamp) -> Timeline {
        let mut b = Builder {
            cursor: requested_at,
            spans: Vec::new(),
            open: BTreeMap::new(),
            down_start: None,
            down_end: None,
            cuts: Vec::new(),
            last: requested_at,
            ended: false,
            next: Some(Stage::Preflight),
        };
        for e in events {
            if b.ended {
                break;
            }
            b.apply(e);
        }
        let ended = b.ended;
        let end = if ended { b.last } else { b.last.max(now) };
        // Transfers that began and have not ended run until now (or stopped with the log).
        let open = std::mem::take(&mut b.open);
        let transferring = !open.is_empty();
        for (volume, start) in open {
            b.spans.push(Span {
                stage: Stage::Transfer,
                volume: Some(volume),
                start,
                end: end.max(start),
                failed: false,
                running: !ended,
            });
        }
        if !ended && !transferring {
            // The step that runs now, when the log says which.
            if let Some(stage) = b.next {
                b.spans.push(Span {
                    stage,
                    volume: None,
                    start: b.cursor,
                    end: end.max(b.cursor),
                    failed: false,
                    running: true,
                });
            }
        }
        b.spans.sort_by_key(|s| s.start);
        let downtime = b.down_start.map(|start| match b.down_end {
            Some(e) => Window {
                start,
                end: e.max(start),
                open: false,
            },
            None => Window {
                start,
                end: end.max(start),
                open: !ended,
            },
        });
        Timeline {
            start: requested_at,
            end: end.max(requested_at),
            spans: b.spans,
            downtime,
            cuts: b.cuts,
        }
    }

    /// How long the stack was down, once the window closed; `None` before the source stopped
    /// or while the stack is still down.
    pub fn downtime(&self) -> Option<SignedDuration> {
        self.downtime
            .filter(|w| !w.open)
            .map(|w| w.duration().max(SignedDuration::ZERO))
    }

    /// How much of the downtime window each stage took, largest first (ties by stage order).
    pub fn downtime_by_stage(&self) -> Vec<(Stage, SignedDuration)> {
        let Some(w) = self.downtime else {
            return vec![];
        };
        let mut by: BTreeMap<Stage, SignedDuration> = BTreeMap::new();
        for s in &self.spans {
            let from = s.start.max(w.start);
            let to = s.end.min(w.end);
            if to > from {
                *by.entry(s.stage).or_default() += to.duration_since(from);
            }
        }
        let mut v: Vec<_> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

struct Builder {
    /// The end of the last step: where the next one begins.
    cursor: Timestamp,
    spans: Vec<Span>,
    /// Transfers begun and not verified, by volume: when they began.
    open: BTreeMap<String, Timestamp>,
    down_start: Option<Timestamp>,
    down_end: Option<Timestamp>,
    cuts: Vec<Cut>,
    /// The latest time recorded.
    last: Timestamp,
    /// The move ended (committed or failed): later events are not part of it.
    ended: bool,
    /// The stage that runs after the last event, when the log alone says which.
    next: Option<Stage>,
}

impl Builder {
    fn step(&mut self, stage: Stage, at: Timestamp) {
        let start = self.cursor;
        self.spans.push(Span {
            stage,
            volume: None,
            start,
            end: at.max(start),
            failed: false,
            running: false,
        });
        self.cursor = at.max(start);
    }

    fn apply(&mut self, e: &MigrationEvent) {
        use MigrationEvent as E;
        let at = e.at();
        self.last = self.last.max(at);
        self.next = match e {
            E::PreflightPassed { .. } => Some(Stage::StopSource),
            E::FilesShipped { .. } => Some(Stage::StartTarget),
            E::TargetStarted { .. } => Some(Stage::TargetHealth),
            E::TargetHealthy { .. } => Some(Stage::Commit),
            E::StepFailed { .. } | E::TargetCleaned { .. } | E::SourceRestarted { .. } => {
                Some(Stage::Compensation)
            }
            _ => None,
        };
        match e {
            E::PreflightPassed { .. } => self.step(Stage::Preflight, at),
            E::SourceStopped { .. } => {
                self.step(Stage::StopSource, at);
                // `at` itself unless the clock stepped back before an earlier event.
                let start = self.cursor;
                self.down_start.get_or_insert(start);
            }
            E::VolumeTransferStarted { volume, .. } => {
                let from = at.max(self.cursor);
                self.open.entry(volume.clone()).or_insert(from);
            }
            E::VolumeTransferInterrupted { volume, reason, .. } => self.cuts.push(Cut {
                volume: volume.clone(),
                at,
                reason: reason.clone(),
            }),
            E::VolumeVerified { volume, .. } => {
                let start = self.open.remove(volume).unwrap_or(self.cursor);
                self.spans.push(Span {
                    stage: Stage::Transfer,
                    volume: Some(volume.clone()),
                    start,
                    end: at.max(start),
                    failed: false,
                    running: false,
                });
                self.cursor = self.cursor.max(at);
            }
            E::FilesShipped { .. } => self.step(Stage::ShipFiles, at),
            E::TargetStarted { .. } => self.step(Stage::StartTarget, at),
            E::TargetHealthy { .. } => {
                self.step(Stage::TargetHealth, at);
                if self.down_start.is_some() {
                    self.down_end.get_or_insert(at);
                }
            }
            E::Committed { .. } => {
                self.step(Stage::Commit, at);
                self.ended = true;
            }
            E::StepFailed { step, .. } => {
                let stage = Stage::of_step(*step);
                let open = std::mem::take(&mut self.open);
                if stage == Stage::Transfer && !open.is_empty() {
                    for (volume, start) in open {
                        self.spans.push(Span {
                            stage,
                            volume: Some(volume),
                            start,
                            end: at.max(start),
                            failed: true,
                            running: false,
                        });
                    }
                    self.cursor = self.cursor.max(at);
                } else {
                    self.step(stage, at);
                    if let Some(s) = self.spans.last_mut() {
                        s.failed = true;
                    }
                }
            }
            E::SourceRestarted { .. } => {
                if self.down_start.is_some() {
                    self.down_end.get_or_insert(at);
                }
            }
            E::Failed { .. } => {
                self.step(Stage::Compensation, at);
                self.ended = true;
            }
            E::TargetCleaned { .. } => {}
            E::RollbackRequested { .. }
            | E::TargetStopped { .. }
            | E::RolledBack { .. }
            | E::PurgeRequested { .. }
            | E::SourcePurged { .. } => self.ended = true,
        }
    }
}

/// A duration in words for people: `850 ms`, `8.3 s`, `4 min 12 s`, `2 h 5 min`.
pub fn duration_words(d: SignedDuration) -> String {
    let ms = d.as_millis().max(0);
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => match (ms / 60_000, ms % 60_000 / 1000) {
            (m, 0) => format!("{m} min"),
            (m, s) => format!("{m} min {s} s"),
        },
        _ => match (ms / 3_600_000, ms % 3_600_000 / 60_000) {
            (h, 0) => format!("{h} h"),
            (h, m) => format!("{h} h {m} min"),
        },
    }
}

impl fmt::Display for Timeline {
    /// The facts in words: `down for 8.3 s: 4.9 s transfer, 2.3 s health wait, …`, or what
    /// is known so far.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.downtime {
            None => f.write_str("the stack has not been stopped")?,
            Some(w) => {
                let by = self.downtime_by_stage();
                write!(
                    f,
                    "{} {}",
                    if w.open {
                        "down so far for"
                    } else {
                        "down for"
                    },
                    duration_words(w.duration())
                )?;
                if !by.is_empty() {
                    f.write_str(": ")?;
                    let parts: Vec<String> = by
                        .iter()
                        .map(|(s, d)| format!("{} {}", duration_words(*d), s.words()))
                        .collect();
                    f.write_str(&parts.join(", "))?;
                }
            }
        }
        if let Some(s) = self.spans.iter().find(|s| s.failed) {
            write!(f, "; {} failed", s.stage.words())?;
            if let Some(v) = &s.volume {
                write!(f, " on volume {v}")?;
            }
            if let Some(c) = self.spans.iter().find(|s| s.stage == Stage::Compensation) {
                if c.running {
                    f.write_str(", compensating")?;
                } else {
                    write!(f, ", compensated in {}", duration_words(c.duration()))?;
                }
            }
        }
        match self.cuts.len() {
            0 => {}
            1 => write!(f, "; 1 transfer cut ({})", self.cuts[0].volume)?,
            n => write!(f, "; {n} transfer cuts")?,
        }
        write!(
            f,
            "; {} in all",
            duration_words(self.end.duration_since(self.start))
        )
    }
}
