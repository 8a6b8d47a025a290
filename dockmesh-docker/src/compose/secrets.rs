//! `secrets` and `configs`: top-level definitions and the services' uses of them, placed as
//! Compose places them without swarm (a secret at `/run/secrets/<name>`, a config at
//! `/<name>`, or at the entry's `target`). A definition by `file` becomes a read-only bind
//! mount; one by `environment` (a variable of `.env`) or, for configs, inline `content` is
//! written into the container before it starts ([`InjectedFile`], mode 0444), as Compose v2
//! does. Swarm's `external` definitions are refused by name, as are `uid`, `gid` and `mode`.

use super::beneath::stack_relative;
use super::interpolate::Vars;
use super::schema::scalar_text;
use super::{ComposeError, InjectedFile, MountKind, MountSpec, Problems};
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

/// Where a definition's content comes from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// A host file (absolute path).
    File(String),
    /// The content itself (from a variable or inline).
    Content(String),
    /// Declared with a problem already reported: its uses add none.
    Unusable,
}

/// The top-level definitions of one kind, by name.
pub(super) fn parse_definitions(
    kind: Kind,
    section: Option<&Value>,
    dir: &Path,
    vars: &Vars,
    problems: &mut Problems,
) -> BTreeMap<String, Source> {
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
        let mut source = None;
        let supported = match kind {
            Kind::Secret => "file, environment, name",
            Kind::Config => "file, environment, content, name",
        };
        for (k, v) in m {
            let text = scalar_text(v);
            match (scalar_text(k).as_deref(), kind) {
                (Some("file"), _) => match text.as_deref().map(stack_relative) {
                    Some(Ok(p)) => source = Some(Source::File(dir.join(p).display().to_string())),
                    Some(Err(m)) => problems.push(invalid(&location, m)),
                    None => problems.push(invalid(&location, "`file` must be a path")),
                },
                (Some("environment"), _) => match text.as_deref().map(|n| (n, vars.get(n))) {
                    Some((_, Some(value))) => source = Some(Source::Content(value.clone())),
                    Some((n, None)) => problems.push(invalid(
                        &location,
                        format!("takes its value from `{n}`, which .env does not set"),
                    )),
                    None => problems.push(invalid(&location, "`environment` must name a variable")),
                },
                (Some("content"), Kind::Config) => match text {
                    Some(c) => source = Some(Source::Content(c)),
                    None => problems.push(invalid(&location, "`content` must be text")),
                },
                (Some("name"), _) => {}
                (other, _) => problems.push(ComposeError::UnsupportedKey {
                    location: location.clone(),
                    key: other.unwrap_or("?").to_owned(),
                    supported: supported.into(),
                }),
            }
        }
        match source {
            Some(s) => {
                out.insert(name, s);
            }
            None => {
                if m.keys().all(|k| scalar_text(k).as_deref() == Some("name")) {
                    problems.push(invalid(&location, "has no `file` or `environment`"));
                }
                out.insert(name, Source::Unusable);
            }
        }
    }
    out
}

/// A service's uses of one kind: read-only bind mounts of files, and files to write into the
/// container.
pub(super) fn service_mounts(
    kind: Kind,
    uses: &Value,
    defined: &BTreeMap<String, Source>,
    location: &str,
    problems: &mut Problems,
) -> (Vec<MountSpec>, Vec<InjectedFile>) {
    let location = format!("{location} `{}`", kind.key());
    let Some(items) = uses.as_sequence() else {
        problems.push(invalid(&location, "must be a list"));
        return (vec![], vec![]);
    };
    let mut out = Vec::new();
    let mut injected = Vec::new();
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
        let Some(defined) = defined.get(&source) else {
            problems.push(invalid(
                &location,
                format!(
                    "uses `{source}`, which is not declared under the top-level `{}`",
                    kind.key()
                ),
            ));
            continue;
        };
        match defined {
            Source::File(file) => out.push(MountSpec {
                kind: MountKind::Bind,
                source: file.clone(),
                target: kind.target(&target),
                read_only: true,
                no_copy: false,
                selinux: None,
                consistency: None,
            }),
            Source::Content(content) => injected.push(InjectedFile {
                target: kind.target(&target),
                content: content.clone(),
            }),
            Source::Unusable => {}
        }
    }
    (out, injected)
}

fn invalid(location: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        location: location.into(),
        message: message.into(),
    }
}
