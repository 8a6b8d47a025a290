//! A migration's timeline as the API shows it: each step with its times and duration, the
//! downtime window, the cuts of its transfers, and the same facts in words. Drawn up by core's
//! [`Timeline`] from the event log; the dashboard draws its picture from this view, so a script
//! reading the API gets the picture's numbers.

use super::migrations::MigrationView;
use crate::server::rates::RateHistory;
use crate::server::state::ServerState;
use dockmesh_core::MigrationId;
use dockmesh_core::migration::Timeline;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One step of a migration, as a span of time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepView {
    /// What ran: `preflight`, `stop_source`, `transfer`, `ship_files`, `start_target`,
    /// `target_health`, `commit` or `compensation`.
    pub step: String,
    /// The volume, for a transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// When it began.
    pub started_at: Timestamp,
    /// When it ended (the time of the answer while it runs).
    pub ended_at: Timestamp,
    /// How long it took, in milliseconds (so far, while it runs).
    pub duration_ms: u64,
    /// The step failed.
    #[serde(default)]
    pub failed: bool,
    /// The step still runs.
    #[serde(default)]
    pub running: bool,
}

/// The time the stack ran nowhere: from `source_stopped` to `target_healthy` (or to
/// `source_restarted` after a failure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DowntimeView {
    /// When the source stopped.
    pub from: Timestamp,
    /// When the target was healthy, or the source ran again (the time of the answer while the
    /// stack is still down).
    pub to: Timestamp,
    /// How long, in milliseconds (so far, while `open`).
    pub duration_ms: u64,
    /// The stack is still down.
    #[serde(default)]
    pub open: bool,
}

/// A transfer cut off by a host that stopped answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CutView {
    /// The volume.
    pub volume: String,
    /// When.
    pub at: Timestamp,
    /// What the host said.
    pub reason: String,
}

/// A migration's timeline, from its request to its commit or the end of its compensation (a
/// later rollback or purge is not part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineView {
    /// When the migration was asked for: the start of its time axis.
    pub started_at: Timestamp,
    /// The end of its time axis: its last event, or the time of the answer while it runs.
    pub ended_at: Timestamp,
    /// The steps, in the order they began.
    pub steps: Vec<StepView>,
    /// The downtime window, once the source stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime: Option<DowntimeView>,
    /// Transfers cut off, in order.
    #[serde(default)]
    pub cuts: Vec<CutView>,
    /// The same facts in words: `down for 8.3 s: 4.9 s transfer, 2.3 s health wait, …`.
    pub summary: String,
}

/// Milliseconds of `d`, 0 when negative.
pub fn millis(d: SignedDuration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(0)
}

impl From<&Timeline> for TimelineView {
    fn from(tl: &Timeline) -> Self {
        TimelineView {
            started_at: tl.start,
            ended_at: tl.end,
            steps: tl
                .spans
                .iter()
                .map(|s| StepView {
                    step: s.stage.name().to_owned(),
                    volume: s.volume.clone(),
                    started_at: s.start,
                    ended_at: s.end,
                    duration_ms: millis(s.duration()),
                    failed: s.failed,
                    running: s.running,
                })
                .collect(),
            downtime: tl.downtime.map(|w| DowntimeView {
                from: w.start,
                to: w.end,
                duration_ms: millis(w.duration()),
                open: w.open,
            }),
            cuts: tl
                .cuts
                .iter()
                .map(|c| CutView {
                    volume: c.volume.clone(),
                    at: c.at,
                    reason: c.reason.clone(),
                })
                .collect(),
            summary: tl.to_string(),
        }
    }
}

/// The transfer rate history of each volume of migration `m` seen by this server process
/// (empty for transfers before it started).
pub fn transfer_rates(state: &ServerState, m: &MigrationView) -> BTreeMap<String, RateHistory> {
    uuid::Uuid::parse_str(&m.id)
        .map(|id| state.supervisor().rates(MigrationId(id)))
        .unwrap_or_default()
}
