//! Rolling replacement of a replicated service: `deploy.update_config` with Swarm's defaults,
//! the order of steps, the verdict after each batch, and what a rollback touches.
//!
//! The plan is data: a list of batches, each a list of [`Step`]s a runtime performs in order.
//! Replicas are numbered from 1 (Compose's `com.docker.compose.container-number`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which of a replica's two containers runs first while it is replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// Stop the old container, then start the new one (Swarm's default).
    #[default]
    StopFirst,
    /// Start the new container, wait for it to be healthy, then stop the old one.
    StartFirst,
}

/// What to do when replicas fail beyond [`UpdateConfig::max_failure_ratio`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Stop replacing; what was replaced stays (Swarm's default).
    #[default]
    Pause,
    /// Put the replaced replicas back on the previous release.
    Rollback,
    /// Go on with the next batch.
    Continue,
}

/// `deploy.update_config` of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateConfig {
    /// Replicas replaced at once; 0 means all at once. Default 1.
    pub parallelism: u32,
    /// Wait between batches. Default 0.
    #[serde(with = "millis")]
    pub delay: Duration,
    /// Default stop-first.
    pub order: UpdateOrder,
    /// Default pause.
    pub failure_action: FailureAction,
    /// How long a new replica is watched for health. Default 5 s.
    #[serde(with = "millis")]
    pub monitor: Duration,
    /// The share of replicas allowed to fail before `failure_action` applies, 0 to 1. Default 0.
    pub max_failure_ratio: f64,
}

/// Swarm's default `monitor`.
pub const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: Duration::ZERO,
            order: UpdateOrder::StopFirst,
            failure_action: FailureAction::Pause,
            monitor: DEFAULT_MONITOR,
            max_failure_ratio: 0.0,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// One action on one replica (or a wait).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Stop the replica's old container (it is kept until the batch is healthy).
    StopOld(u32),
    /// Create and start the replica's new container.
    StartNew(u32),
    /// Wait until the new containers of these replicas are healthy, watching them for `monitor`.
    AwaitHealthy {
        /// The replicas of the batch.
        replicas: Vec<u32>,
        /// How long to watch.
        #[serde(with = "millis")]
        monitor: Duration,
    },
    /// Remove the replica's old container: the batch is done.
    RemoveOld(u32),
    /// Wait before the next batch.
    Wait(#[serde(with = "millis")] Duration),
}

/// The replicas of one batch and the steps replacing them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The replicas replaced together.
    pub replicas: Vec<u32>,
    /// In order.
    pub steps: Vec<Step>,
}

/// The batches replacing `replicas` replicas under `config`, in order.
///
/// Each batch has `parallelism` replicas (all of them when it is 0; the last batch may be
/// smaller). Stop-first: stop the olds, start the news, await health, remove the olds.
/// Start-first: start the news, await health, then stop and remove the olds. Every batch but
/// the last ends with the `delay` when it is not zero. No replica is replaced twice.
pub fn plan(replicas: u32, config: &UpdateConfig) -> Vec<Batch> {
    let size = match config.parallelism {
        0 => replicas.max(1),
        n => n,
    };
    let all: Vec<u32> = (1..=replicas).collect();
    let chunks: Vec<&[u32]> = all.chunks(size as usize).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let await_healthy = Step::AwaitHealthy {
                replicas: chunk.to_vec(),
                monitor: config.monitor,
            };
            let mut steps = Vec::new();
            match config.order {
                UpdateOrder::StopFirst => {
                    steps.extend(chunk.iter().map(|r| Step::StopOld(*r)));
                    steps.extend(chunk.iter().map(|r| Step::StartNew(*r)));
                    steps.push(await_healthy);
                    steps.extend(chunk.iter().map(|r| Step::RemoveOld(*r)));
                }
                UpdateOrder::StartFirst => {
                    steps.extend(chunk.iter().map(|r| Step::StartNew(*r)));
                    steps.push(await_healthy);
                    steps.extend(chunk.iter().map(|r| Step::StopOld(*r)));
                    steps.extend(chunk.iter().map(|r| Step::RemoveOld(*r)));
                }
            }
            if i != last && !config.delay.is_zero() {
                steps.push(Step::Wait(config.delay));
            }
            Batch {
                replicas: chunk.to_vec(),
                steps,
            }
        })
        .collect()
}

/// What happens after a batch, from the failures counted so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Go on with the next batch (or finish).
    Proceed,
    /// Stop here; what was replaced stays.
    Pause,
    /// Put the touched replicas back on the previous release.
    Rollback,
}

/// The verdict once `failed` of `replicas` replicas have failed: within
/// `max_failure_ratio` (`failed / replicas <= ratio`) the update proceeds, beyond it
/// `failure_action` applies (`continue` proceeds).
pub fn verdict(config: &UpdateConfig, replicas: u32, failed: u32) -> Verdict {
    if failed == 0 {
        return Verdict::Proceed;
    }
    let ratio = f64::from(failed) / f64::from(replicas.max(1));
    if ratio <= config.max_failure_ratio {
        return Verdict::Proceed;
    }
    match config.failure_action {
        FailureAction::Continue => Verdict::Proceed,
        FailureAction::Pause => Verdict::Pause,
        FailureAction::Rollback => Verdict::Rollback,
    }
}

/// One action of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Undo {
    /// Remove the replica's new container.
    RemoveNew(u32),
    /// Start the replica's old container again (it was stopped by the update).
    StartOld(u32),
}

/// The rollback of the replicas in `touched` (those whose batch started), in reverse order.
///
/// Only touched replicas are acted on, so a replica the update never reached is never
/// restarted. Under start-first, an old container still runs unless its batch passed
/// `AwaitHealthy` (`stopped` lists the replicas whose old container was stopped): only those
/// are started again.
pub fn rollback(touched: &[u32], stopped: &[u32]) -> Vec<Undo> {
    let mut out = Vec::new();
    for r in touched.iter().rev() {
        out.push(Undo::RemoveNew(*r));
        if stopped.contains(r) {
            out.push(Undo::StartOld(*r));
        }
    }
    out
}
