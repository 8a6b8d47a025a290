//! `secrets` and `configs`: top-level definitions backed by files, and the services' uses of
//! them, which become read-only bind mounts as Compose makes them without swarm (a secret at
//! `/run/secrets/<name>`, a config at `/<name>`, or at the entry's `target`). Definitions from
//! the environment, inline `content` and swarm's `external` ones are refused by name, as are
//! `uid`, `gid` and `mode` (a bind mount keeps the file's own).

use super::schema::scalar_text;
use super::short::resolve_host_path;
use super::{ComposeError, MountKind, MountSpec, Problems};
use std::collections::BTreeMap;
use std::path::Path;
use yaml_serde::Value;

/// Secrets or configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Config => "configs",
        }
    }

    fn target(self, name: &str) -> String {
        match self {
            Kind::Secret if name.starts_with('/') => name.to_owned(),
            Kind::Secret => format!("/run/secrets/{name}"),
            Kind::Config if name.starts_with('/') => name.to_owned(),
            Kind::Config => format!("/{name}"),
        }
    }
}

/// The top-level definitions of one kind: name to the absolute host path of its file.
pub(super) fn parse_definitions(
    kind: Kind,
    section: Option<&Value>,
    dir: &Path,
    problems: &mut Problems,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(map)) = section else {
        return out;
    };
    for (name, def) in map {
        let name = scalar_text(name).unwrap_or_default();
        let location = format!("{} `{name}`", &kind.key()[..kind.key().len() - 1]);
        let Some(m) = def.as_mapping() else {
            problems.push(invalid(&location, "must be a mapping with `file`"));
            continue;
        };
        let mut file = None;
        for (k, v) in m {
            match scalar_text(k).as_deref() {
                Some("file") => file = scalar_text(v),
                Some("name") => {}
                Some(
                    other @ ("environment" | "content" | "external" | "driver" | "template_driver"),
                ) => problems.push(ComposeError::UnsupportedKey {
                    location: location.clone(),
                    key: other.to_owned(),
                    supported: "file, name (only file-based definitions, which are mounted \
                                    from the host)"
                        .into(),
                }),
                other => problems.push(ComposeError::UnsupportedKey {
                    location: location.clone(),
                    key: other.unwrap_or("?").to_owned(),
                    supported: "file, name".into(),
                }),
            }
        }
        let Some(file) = file else {
            if !m.keys().any(|k| scalar_text(k).as_deref() != Some("name")) {
                problems.push(invalid(&location, "has no `file`"));
            }
            continue;
        };
        match resolve_host_path(dir, &file) {
            Ok(p) => {
                out.insert(name, p.display().to_string());
            }
            Err(m) => problems.push(invalid(&location, m)),
        }
    }
    out
}

/// A service's uses of one kind, as read-only bind mounts.
pub(super) fn service_mounts(
    kind: Kind,
    uses: &Value,
    defined: &BTreeMap<String, String>,
    location: &str,
    problems: &mut Problems,
) -> Vec<MountSpec> {
    let location = format!("{location} `{}`", kind.key());
    let Some(items) = uses.as_sequence() else {
        problems.push(invalid(&location, "must be a list"));
        return vec![];
    };
    let mut out = Vec::new();
    for item in items {
        let (source, target) = match item {
            Value::Mapping(m) => {
                let mut source = None;
                let mut target = None;
                for (k, v) in m {
                    match scalar_text(k).as_deref() {
                        Some("source") => source = scalar_text(v),
                        Some("target") => target = scalar_text(v),
                        other => problems.push(ComposeError::UnsupportedKey {
                            location: location.clone(),
                            key: other.unwrap_or("?").to_owned(),
                            supported: "source, target (a file mounted from the host keeps its \
                                        own owner and mode)"
                                .into(),
                        }),
                    }
                }
                let Some(source) = source else {
                    problems.push(invalid(&location, "an entry has no `source`"));
                    continue;
                };
                let target = target.unwrap_or_else(|| source.clone());
                (source, target)
            }
            other => match scalar_text(other) {
                Some(s) => (s.clone(), s),
                None => {
                    problems.push(invalid(&location, "entries are names or mappings"));
                    continue;
                }
            },
        };
        let Some(file) = defined.get(&source) else {
            problems.push(invalid(
                &location,
                format!(
                    "uses `{source}`, which is not declared under the top-level `{}`",
                    kind.key()
                ),
            ));
            continue;
        };
        out.push(MountSpec {
            kind: MountKind::Bind,
            source: file.clone(),
            target: kind.target(&target),
            read_only: true,
            no_copy: false,
            selinux: None,
            consistency: None,
        });
    }
    out
}

fn invalid(location: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        location: location.into(),
        message: message.into(),
    }
}
