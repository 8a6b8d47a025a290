//! The difference between the release that runs and the one asked for, service by service.

use super::UpdateConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One service of a release as its host resolves it (interpolated, defaults applied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceShape {
    /// The service name.
    pub name: String,
    /// The image reference the file names.
    pub image: String,
    /// The id of that image on the host; `None` when the host does not have it.
    #[serde(default)]
    pub image_id: Option<String>,
    /// The container environment (values may be secrets: a diff names keys only).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Published ports, one `host:container/proto` string each.
    #[serde(default)]
    pub ports: Vec<String>,
    /// Mounts, one `source:target[:ro]` string each.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `deploy.replicas` (1 when unset).
    #[serde(default = "one")]
    pub replicas: u32,
    /// `deploy.update_config`, with Swarm's defaults where unset.
    #[serde(default)]
    pub update: UpdateConfig,
    /// A digest of the whole resolved definition: two shapes whose digests differ are
    /// replaced by a deploy even when none of the fields above differ.
    pub digest: String,
}

fn one() -> u32 {
    1
}

/// What changed in one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "field", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// The image reference, or the image the same reference names now.
    Image {
        /// Before: the reference, with the short id when only the id changed.
        from: String,
        /// After.
        to: String,
    },
    /// Environment variables (keys only).
    Environment {
        /// Keys set only by the new release.
        added: Vec<String>,
        /// Keys the new release no longer sets.
        removed: Vec<String>,
        /// Keys whose value changed.
        changed: Vec<String>,
    },
    /// Published ports.
    Ports {
        /// Only in the new release.
        added: Vec<String>,
        /// Only in the running one.
        removed: Vec<String>,
    },
    /// Mounts.
    Volumes {
        /// Only in the new release.
        added: Vec<String>,
        /// Only in the running one.
        removed: Vec<String>,
    },
    /// The number of replicas.
    Replicas {
        /// Before.
        from: u32,
        /// After.
        to: u32,
    },
    /// Another setting of the definition (command, labels, healthcheck, …).
    Other,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, sign: &str, items: &[String]) -> fmt::Result {
            for i in items {
                write!(f, " {sign}{i}")?;
            }
            Ok(())
        }
        match self {
            Change::Image { from, to } => write!(f, "image {from} → {to}"),
            Change::Environment {
                added,
                removed,
                changed,
            } => {
                f.write_str("environment")?;
                list(f, "+", added)?;
                list(f, "-", removed)?;
                list(f, "~", changed)
            }
            Change::Ports { added, removed } => {
                f.write_str("ports")?;
                list(f, "+", added)?;
                list(f, "-", removed)
            }
            Change::Volumes { added, removed } => {
                f.write_str("volumes")?;
                list(f, "+", added)?;
                list(f, "-", removed)
            }
            Change::Replicas { from, to } => write!(f, "replicas {from} → {to}"),
            Change::Other => f.write_str("other settings"),
        }
    }
}

/// One changed service and what changed in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChange {
    /// The service.
    pub service: String,
    /// What changed, in the order of [`Change`]'s variants; never empty.
    pub changes: Vec<Change>,
}

/// The difference between two releases of a stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseDiff {
    /// Services only in the new release.
    pub added: Vec<String>,
    /// Services only in the running release (their containers go; their volumes stay).
    pub removed: Vec<String>,
    /// Services in both whose definition differs: these are replaced.
    pub changed: Vec<ServiceChange>,
    /// Services in both, identical: left running as they are.
    pub unchanged: Vec<String>,
}

impl ReleaseDiff {
    /// True when the new release changes nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The services a deploy of the new release creates or replaces, by name.
    pub fn touched(&self) -> BTreeSet<&str> {
        self.added
            .iter()
            .map(String::as_str)
            .chain(self.changed.iter().map(|c| c.service.as_str()))
            .collect()
    }
}

impl fmt::Display for ReleaseDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no change: every service is as it runs");
        }
        for s in &self.added {
            writeln!(f, "+ {s} (new service)")?;
        }
        for s in &self.removed {
            writeln!(f, "- {s} (removed; its volumes are kept)")?;
        }
        for c in &self.changed {
            let what: Vec<String> = c.changes.iter().map(ToString::to_string).collect();
            writeln!(f, "~ {}: {}", c.service, what.join("; "))?;
        }
        for s in &self.unchanged {
            writeln!(f, "= {s}")?;
        }
        Ok(())
    }
}

/// The difference from the running release `current` to `next`.
///
/// Services are matched by name. A service is changed when any field of its shape differs
/// (its [`ServiceShape::digest`] included; ports and mounts compare as sets); each differing
/// field is named, and a difference
/// only in the digest is [`Change::Other`]. Every list is sorted by service name.
pub fn diff(current: &[ServiceShape], next: &[ServiceShape]) -> ReleaseDiff {
    let old: BTreeMap<&str, &ServiceShape> = current.iter().map(|s| (s.name.as_str(), s)).collect();
    let new: BTreeMap<&str, &ServiceShape> = next.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out = ReleaseDiff::default();
    for (name, n) in &new {
        match old.get(name) {
            None => out.added.push((*name).to_owned()),
            Some(o) => {
                let changes = service_changes(o, n);
                if changes.is_empty() {
                    out.unchanged.push((*name).to_owned());
                } else {
                    out.changed.push(ServiceChange {
                        service: (*name).to_owned(),
                        changes,
                    });
                }
            }
        }
    }
    out.removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| (*k).to_owned())
        .collect();
    out
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

fn service_changes(o: &ServiceShape, n: &ServiceShape) -> Vec<Change> {
    let mut changes = Vec::new();
    if o.image != n.image {
        changes.push(Change::Image {
            from: o.image.clone(),
            to: n.image.clone(),
        });
    } else if o.image_id != n.image_id {
        let show = |id: &Option<String>| match id {
            Some(id) => format!("{}@{}", o.image, short(id)),
            None => format!("{} (not on the host)", o.image),
        };
        changes.push(Change::Image {
            from: show(&o.image_id),
            to: show(&n.image_id),
        });
    }
    let keys = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<BTreeSet<_>>();
    let (ok, nk) = (keys(&o.environment), keys(&n.environment));
    let env_changed: Vec<String> = ok
        .intersection(&nk)
        .filter(|k| o.environment[*k] != n.environment[*k])
        .cloned()
        .collect();
    let env_added: Vec<String> = nk.difference(&ok).cloned().collect();
    let env_removed: Vec<String> = ok.difference(&nk).cloned().collect();
    if !(env_added.is_empty() && env_removed.is_empty() && env_changed.is_empty()) {
        changes.push(Change::Environment {
            added: env_added,
            removed: env_removed,
            changed: env_changed,
        });
    }
    let (added, removed) = set_diff(&o.ports, &n.ports);
    if !(added.is_empty() && removed.is_empty()) {
        changes.push(Change::Ports { added, removed });
    }
    let (added, removed) = set_diff(&o.volumes, &n.volumes);
    if !(added.is_empty() && removed.is_empty()) {
        changes.push(Change::Volumes { added, removed });
    }
    if o.replicas != n.replicas {
        changes.push(Change::Replicas {
            from: o.replicas,
            to: n.replicas,
        });
    }
    if changes.is_empty() && (o.digest != n.digest || o.update != n.update) {
        changes.push(Change::Other);
    }
    changes
}

/// `(only in new, only in old)`, each sorted and without duplicates.
fn set_diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let o: BTreeSet<&String> = old.iter().collect();
    let n: BTreeSet<&String> = new.iter().collect();
    (
        n.difference(&o).map(|s| (*s).clone()).collect(),
        o.difference(&n).map(|s| (*s).clone()).collect(),
    )
}
