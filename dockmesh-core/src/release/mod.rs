//! Stack release upgrades: what changes between two releases, how replicas are replaced, and
//! the releases a stack has had.
//!
//! - [`diff`]: service by service, what a new release adds, removes and changes (image,
//!   environment keys, ports, volumes, replicas, other settings) against the one that runs.
//! - [`rolling`]: `deploy.update_config` with Swarm's defaults; the batches replacing a
//!   replicated service ([`rolling::plan`]), the verdict after a batch ([`rolling::verdict`]) and
//!   what a rollback touches ([`rolling::rollback`]).
//! - [`ReleaseRecord`]: one release of a stack as deployed (files and image ids) and its
//!   outcome, kept by the [`crate::ports::Store`] so that any revision can be deployed again.
//!
//! ```
//! use dockmesh_core::release::{ServiceShape, diff};
//!
//! let shape = |image: &str| ServiceShape {
//!     name: "web".into(),
//!     image: image.into(),
//!     image_id: None,
//!     environment: Default::default(),
//!     ports: vec![],
//!     volumes: vec!["data:/srv".into()],
//!     replicas: 1,
//!     update: Default::default(),
//!     digest: image.into(),
//! };
//! let d = diff(&[shape("shop:1")], &[shape("shop:2")]);
//! assert_eq!(d.to_string(), "~ web: image shop:1 → shop:2\n");
//! ```

mod diff;
pub mod rolling;
#[cfg(test)]
mod tests;

pub use diff::{Change, ReleaseDiff, ServiceChange, ServiceShape, diff};
pub use rolling::{FailureAction, UpdateConfig, UpdateOrder};

use crate::types::HostId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseOutcome {
    /// It was deployed and became healthy: it is (or was) the running release.
    Deployed,
    /// It failed and the previous release was put back.
    RolledBack,
    /// It failed and putting the previous release back failed too: the stack needs an operator.
    Failed,
}

impl fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleaseOutcome::Deployed => "deployed",
            ReleaseOutcome::RolledBack => "rolled back",
            ReleaseOutcome::Failed => "failed",
        })
    }
}

/// One release of a stack: the files deployed, the images they ran, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    /// The stack.
    pub stack: String,
    /// The revision: 1 for the first release, one more for each next one.
    pub rev: u64,
    /// When it was deployed.
    pub at: Timestamp,
    /// On which host.
    pub host: HostId,
    /// `compose.yaml`.
    pub compose: String,
    /// `.env`, if any.
    pub env: Option<String>,
    /// Each service's image id on the host (service → id).
    pub images: BTreeMap<String, String>,
    /// How it ended.
    pub outcome: ReleaseOutcome,
    /// Why it failed, when it did.
    pub detail: Option<String>,
    /// The revision it replaced or restored, if any (a rollback names the revision it went back to).
    pub from_rev: Option<u64>,
    /// Who deployed it.
    pub actor: String,
}

/// The revision after the newest of `releases` (1 when there is none).
pub fn next_rev(releases: &[ReleaseRecord]) -> u64 {
    releases.iter().map(|r| r.rev).max().map_or(1, |r| r + 1)
}

/// The release a stack runs: the newest deployed one of `releases`.
pub fn running(releases: &[ReleaseRecord]) -> Option<&ReleaseRecord> {
    releases
        .iter()
        .filter(|r| r.outcome == ReleaseOutcome::Deployed)
        .max_by_key(|r| r.rev)
}

/// The release a rollback without `--to` goes back to: the newest deployed release older than
/// the running one.
pub fn previous(releases: &[ReleaseRecord]) -> Option<&ReleaseRecord> {
    let current = running(releases)?.rev;
    releases
        .iter()
        .filter(|r| r.outcome == ReleaseOutcome::Deployed && r.rev < current)
        .max_by_key(|r| r.rev)
}
