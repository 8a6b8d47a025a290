//! Multi-hop upgrade plans through a list of known releases, and advice.

use super::Version;
use super::rules::{Check, Needed, Refusal, Rules};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

/// One upgrade of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// The version upgraded from.
    pub from: Version,
    /// The version upgraded to.
    pub to: Version,
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.from, self.to)
    }
}

/// The shortest chain of allowed upgrades from one version to another.
///
/// [`Display`](fmt::Display) prints the chain (`2.3.1 → 2.4.3 → 2.5.0`), or the one version when
/// there is nothing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The version upgraded from.
    pub from: Version,
    /// The version to end on.
    pub to: Version,
    /// The upgrades, in order; empty when `from` and `to` are the same version.
    pub hops: Vec<Hop>,
    /// Recommendations that do not block the plan.
    pub advice: Vec<Advice>,
}

impl Plan {
    /// True when there is nothing to do (`from` and `to` are the same version).
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.from)?;
        for hop in &self.hops {
            write!(f, " → {}", hop.to)?;
        }
        Ok(())
    }
}

/// A recommendation that does not refuse anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Advice {
    /// An upgrade crosses a major from a release that is not the latest of its major among the
    /// known releases; upgrading to the latest of the major first is recommended.
    NotLatestOfMajor {
        /// The version the major is crossed from.
        from: Version,
        /// The latest known release of the same major.
        latest: Version,
    },
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotLatestOfMajor { from, latest } => write!(
                f,
                "{from} is not the latest release of major {} ({latest} is); upgrading to \
                 {latest} before crossing to {}.x is recommended",
                from.major(),
                from.major() + 1
            ),
        }
    }
}

/// Advice on the upgrade `from → to` given the known releases: when it crosses a major and a
/// later (non pre-release) release of `from`'s major is known, recommend that one first.
pub fn advice(from: &Version, to: &Version, releases: &[Version]) -> Vec<Advice> {
    if to.major() <= from.major() {
        return Vec::new();
    }
    releases
        .iter()
        .filter(|r| r.major() == from.major() && !r.is_prerelease() && *r > from)
        .max()
        .map(|latest| Advice::NotLatestOfMajor {
            from: from.clone(),
            latest: latest.clone(),
        })
        .into_iter()
        .collect()
}

/// Why no plan exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The target itself is refused whatever the path: a downgrade or a pre-release target.
    #[error("{0}")]
    Refused(Refusal),
    /// No chain of allowed upgrades through the given releases reaches the target.
    #[error("{0}")]
    NoPath(Box<NoPath>),
}

/// No chain of allowed upgrades through the given releases reaches the target: how far it gets,
/// what blocks it there, and the release that would let it go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
#[non_exhaustive]
pub struct NoPath {
    /// The version upgraded from.
    pub from: Version,
    /// The target.
    pub to: Version,
    /// The highest release reachable from `from` (possibly `from` itself).
    pub reached: Version,
    /// Why `reached → to` is refused.
    pub blocked: Refusal,
    /// The release that would let the chain go on, when one would.
    pub missing: Option<Needed>,
}

impl NoPath {
    fn describe(&self) -> String {
        let Self {
            from,
            to,
            reached,
            blocked,
            missing,
        } = self;
        let head = format!("no upgrade path from {from} to {to} through the given releases: ");
        let progress = if reached == from {
            String::new()
        } else {
            format!("it can reach {reached}, but ")
        };
        match missing {
            Some(needed) => {
                format!("{head}{progress}{needed} is missing from the list ({blocked})")
            }
            None => format!("{head}{progress}{blocked}"),
        }
    }
}

impl Rules {
    /// The shortest chain of allowed upgrades from `from` to `to` through `releases`.
    ///
    /// - The chain only goes up, and every hop is allowed by [`Rules::check`]. `to` is always a
    ///   valid end even when `releases` does not list it; duplicates (by precedence) are ignored.
    /// - Among the shortest chains, each hop goes to the highest release that still leads to
    ///   `to` in the fewest hops: the latest patch of each minor it passes through.
    /// - `from == to` gives an empty plan. A downgrade is one hop if the rules allow it.
    /// - [`Plan::advice`] holds [`advice`] for every hop that crosses a major.
    ///
    /// Errors: [`PlanError::Refused`] when the target is refused whatever the path;
    /// [`PlanError::NoPath`] naming the furthest reachable release, the rule that blocks, and the
    /// missing release when one would unblock it.
    pub fn plan(
        &self,
        from: &Version,
        to: &Version,
        releases: &[Version],
    ) -> Result<Plan, PlanError> {
        let done = |hops: Vec<Hop>| {
            let advice = hops
                .iter()
                .flat_map(|h| advice(&h.from, &h.to, releases))
                .collect();
            Ok(Plan {
                from: from.clone(),
                to: to.clone(),
                hops,
                advice,
            })
        };
        let direct = self.check(from, to);
        if from == to {
            return done(Vec::new());
        }
        if to < from || (to.is_prerelease() && !self.allow_prerelease) {
            return match direct {
                Check::Refused(r) => Err(PlanError::Refused(r)),
                _ => done(vec![Hop {
                    from: from.clone(),
                    to: to.clone(),
                }]),
            };
        }

        let nodes: Vec<&Version> = std::iter::once(from)
            .chain(releases.iter().filter(|r| from < *r && *r < to))
            .chain(std::iter::once(to))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let last = nodes.len() - 1;
        let allowed = |i: usize, j: usize| self.check(nodes[i], nodes[j]) == Check::Allowed;

        // dist[i]: fewest hops from nodes[i] to `to` (hops only go up, so one backward pass).
        let mut dist: Vec<Option<usize>> = vec![None; nodes.len()];
        dist[last] = Some(0);
        for i in (0..last).rev() {
            dist[i] = (i + 1..=last)
                .filter_map(|j| dist[j].filter(|_| allowed(i, j)))
                .min()
                .map(|d| d + 1);
        }

        let Some(mut remaining) = dist[0] else {
            let mut reachable = vec![false; nodes.len()];
            reachable[0] = true;
            for j in 1..last {
                reachable[j] = (0..j).any(|i| reachable[i] && allowed(i, j));
            }
            let reached = (0..last).rev().find(|&i| reachable[i]).unwrap_or(0);
            let reached = nodes[reached].clone();
            let Check::Refused(blocked) = self.check(&reached, to) else {
                unreachable!("`to` would be reachable from {reached}");
            };
            let missing = blocked.needs();
            return Err(PlanError::NoPath(Box::new(NoPath {
                from: from.clone(),
                to: to.clone(),
                reached,
                blocked,
                missing,
            })));
        };

        let mut hops = Vec::with_capacity(remaining);
        let mut cur = 0;
        while cur != last {
            let next = (cur + 1..=last)
                .rev()
                .find(|&j| dist[j] == Some(remaining - 1) && allowed(cur, j))
                .expect("a node one hop closer exists on a shortest chain");
            hops.push(Hop {
                from: nodes[cur].clone(),
                to: nodes[next].clone(),
            });
            remaining -= 1;
            cur = next;
        }
        done(hops)
    }
}

impl Rules {
    /// The recommended chain from `from` to `to` through `releases`: before each major is
    /// crossed, the latest known release of the current major (not a pre-release) is reached
    /// first; each stretch is a [`Rules::plan`]. It is never shorter than [`Rules::plan`]'s, and
    /// its [`Plan::advice`] is empty unless `to` itself is a crossing's only way.
    ///
    /// Errors: those of [`Rules::plan`] for the stretch that fails.
    pub fn recommended(
        &self,
        from: &Version,
        to: &Version,
        releases: &[Version],
    ) -> Result<Plan, PlanError> {
        let mut hops: Vec<Hop> = Vec::new();
        let mut cur = from.clone();
        while cur.major() < to.major() {
            let latest = releases
                .iter()
                .filter(|r| r.major() == cur.major() && !r.is_prerelease() && **r > cur)
                .max()
                .cloned();
            if let Some(latest) = latest {
                hops.extend(self.plan(&cur, &latest, releases)?.hops);
                cur = latest;
            }
            // The first hop of the shortest chain from here crosses the major (the latest of
            // this major is where we are).
            let rest = self.plan(&cur, to, releases)?;
            let Some(first) = rest.hops.into_iter().next() else {
                break;
            };
            cur = first.to.clone();
            hops.push(first);
        }
        hops.extend(self.plan(&cur, to, releases)?.hops);
        let advice = hops
            .iter()
            .flat_map(|h| advice(&h.from, &h.to, releases))
            .collect();
        Ok(Plan {
            from: from.clone(),
            to: to.clone(),
            hops,
            advice,
        })
    }
}
