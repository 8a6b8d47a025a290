//! What dockmesh supports of the Compose format, checked on the raw YAML tree before the typed
//! parse: every key is either supported or an error that names it and where it is. Nothing is
//! silently ignored, except `x-` extension keys, which Compose itself defines as ignored.
//!
//! Keys that `docker compose config` writes out with their default value (`required: true`,
//! `mode: ingress`, `bind: {create_host_path: true}`, `volume: {}`) are accepted with that value
//! and dropped, so a file as Compose prints it loads; any other value of them is an error naming
//! the key (see [`DEFAULTED`]).
//!
//! The same pass coerces scalars to the type the typed parse expects, the way Compose does
//! (`user: 1000` is the string `"1000"`; `read_only: "true"` after interpolation is a boolean).

use super::options::OPTION_KEYS;
use super::{ComposeError, Problems};
use yaml_serde::{Mapping, Value};

/// Keys of the top level.
pub const TOP_KEYS: &[&str] = &[
    "version", "name", "services", "volumes", "networks", "secrets", "configs",
];
/// Keys of a service.
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "healthcheck",
    "depends_on",
    "restart",
    "labels",
    "user",
    "working_dir",
    "mem_limit",
    "stop_grace_period",
    "secrets",
    "configs",
];
/// Keys of a service's `healthcheck`.
pub const HEALTHCHECK_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "start_interval",
    "disable",
];
/// Keys of a long-syntax `ports` entry.
pub const PORT_KEYS: &[&str] = &["target", "published", "host_ip", "protocol", "mode"];
/// Keys of a long-syntax service `volumes` entry.
pub const MOUNT_KEYS: &[&str] = &[
    "type",
    "source",
    "target",
    "read_only",
    "bind",
    "volume",
    "tmpfs",
];
/// Keys of a mount's `bind` options.
pub const BIND_KEYS: &[&str] = &["create_host_path", "selinux"];
/// Keys of a mount's `volume` options.
pub const MOUNT_VOLUME_KEYS: &[&str] = &["nocopy"];
/// Keys of an entry of a service's `networks` map.
pub const SERVICE_NETWORK_KEYS: &[&str] = &["aliases"];
/// Keys of an entry of a service's `depends_on` map.
pub const DEPENDS_ON_KEYS: &[&str] = &["condition", "required", "restart"];

/// The keys accepted only with the value Compose gives them when they are absent (what
/// dockmesh does): (where, key, that value, what dockmesh does instead of other values).
pub const DEFAULTED: &[(&str, &str, &str, &str)] = &[
    (
        "ports",
        "mode",
        "ingress",
        "ports are published on the host's engine; `host` is accepted as well",
    ),
    (
        "bind",
        "create_host_path",
        "true",
        "a missing bind source directory is created, as with the short syntax",
    ),
];

/// Accept `key` of `m` only with its [`DEFAULTED`] value, then drop it.
fn accept_default(
    m: &mut Mapping,
    section: &str,
    key: &str,
    location: &str,
) -> Result<(), ComposeError> {
    let Some(v) = m.get(key) else {
        return Ok(());
    };
    let &(_, _, default, why) = DEFAULTED
        .iter()
        .find(|(s, k, _, _)| *s == section && *k == key)
        .expect("a defaulted key is listed");
    let text = scalar_text(v).map(|t| t.to_ascii_lowercase());
    if text.as_deref() != Some(default) {
        return Err(ComposeError::Invalid {
            location: location.into(),
            message: format!(
                "`{key}` is `{}`, which dockmesh does not support: it only does \
                 `{key}: {default}` ({why})",
                text.unwrap_or_else(|| "a non-scalar value".into())
            ),
        });
    }
    m.remove(key);
    Ok(())
}

/// A mount's `bind` or `volume` options: only their defaults, then the whole map is dropped.
fn accept_default_options(
    m: &mut Mapping,
    section: &str,
    keys: &[&str],
    location: &str,
) -> Result<(), ComposeError> {
    let Some(v) = m.get_mut(section) else {
        return Ok(());
    };
    let location = format!("{location} `{section}`");
    if !v.is_null() {
        let opts = v.as_mapping_mut().ok_or_else(|| ComposeError::Invalid {
            location: location.clone(),
            message: "must be a mapping".into(),
        })?;
        check_keys(opts, keys, &location, false)?;
        // Options dockmesh applies are kept for the typed parse; defaulted ones are dropped.
        let mut kept = Mapping::new();
        for key in keys {
            match (section, *key) {
                ("bind", "selinux") => {
                    if let Some(v) = opts.remove("selinux") {
                        if !matches!(v.as_str(), Some("z" | "Z")) {
                            return Err(ComposeError::Invalid {
                                location,
                                message: "`selinux` must be z or Z".into(),
                            });
                        }
                        kept.insert("selinux".into(), v);
                    }
                }
                ("volume", "nocopy") => {
                    if let Some(mut v) = opts.remove("nocopy") {
                        to_bool(&mut v, &location, "nocopy")?;
                        kept.insert("nocopy".into(), v);
                    }
                }
                _ => accept_default(opts, section, key, &location)?,
            }
        }
        if !kept.is_empty() {
            m.insert(section.into(), Value::Mapping(kept));
            return Ok(());
        }
    }
    m.remove(section);
    Ok(())
}
/// Keys of a top-level volume.
pub const VOLUME_KEYS: &[&str] = &["name", "external", "labels", "driver", "driver_opts"];
/// Keys of a top-level network.
pub const NETWORK_KEYS: &[&str] = &[
    "name",
    "external",
    "labels",
    "driver",
    "driver_opts",
    "internal",
    "attachable",
];

/// Check and coerce the whole (interpolated, merged) tree. Every problem is reported: all the
/// unsupported keys of each place, and the first bad value of each service.
pub fn check(root: &mut Value) -> Result<(), ComposeError> {
    let mut problems = Problems::default();
    check_collect(root, &mut problems)?;
    problems.finish()
}

/// [`check`], recording the problems in `problems` and going on where it can: unsupported keys
/// of a service are recorded and removed, so the rest of the service is still checked. Returns
/// the services that cannot be read further; an error when the file's structure is broken.
pub(crate) fn check_collect(
    root: &mut Value,
    problems: &mut Problems,
) -> Result<std::collections::BTreeSet<String>, ComposeError> {
    let mut broken = std::collections::BTreeSet::new();
    check_top(root, problems, &mut broken)?;
    Ok(broken)
}

fn check_top(
    root: &mut Value,
    problems: &mut Problems,
    broken: &mut std::collections::BTreeSet<String>,
) -> Result<(), ComposeError> {
    let top = root.as_mapping_mut().ok_or_else(|| ComposeError::Invalid {
        location: "top level".into(),
        message: "the compose file must be a mapping with a `services` key".into(),
    })?;
    problems.take(check_keys(top, TOP_KEYS, "top level", true));
    stringify_at(top, "version");
    stringify_at(top, "name");
    if let Some(services) = top.get_mut("services") {
        let services = services
            .as_mapping_mut()
            .ok_or_else(|| ComposeError::Invalid {
                location: "top level".into(),
                message: "`services` must be a mapping of service names to their definitions"
                    .into(),
            })?;
        for (name, service) in services.iter_mut() {
            let name = scalar_text(name).unwrap_or_default();
            let checked = check_service(&name, service, problems);
            if problems.take(checked).is_none() {
                broken.insert(name);
            }
        }
    }
    for (section, keys, what) in [
        ("volumes", VOLUME_KEYS, "volume"),
        ("networks", NETWORK_KEYS, "network"),
    ] {
        let Some(section) = top.get_mut(section) else {
            continue;
        };
        if section.is_null() {
            continue;
        }
        let map = section
            .as_mapping_mut()
            .ok_or_else(|| ComposeError::Invalid {
                location: "top level".into(),
                message: format!("`{what}s` must be a mapping"),
            })?;
        for (name, def) in map.iter_mut() {
            let location = format!("{what} `{}`", scalar_text(name).unwrap_or_default());
            if def.is_null() {
                continue;
            }
            let Some(m) = def.as_mapping_mut() else {
                problems.push(ComposeError::Invalid {
                    location: location.clone(),
                    message: "must be a mapping (or empty)".into(),
                });
                continue;
            };
            if problems
                .take(check_keys(m, keys, &location, true))
                .is_none()
            {
                continue;
            }
            stringify_at(m, "name");
            stringify_labels(m);
            if let Some(ext) = m.get_mut("external")
                && !ext.is_mapping()
            {
                to_bool(ext, &location, "external")?;
            }
            for flag in ["internal", "attachable"] {
                if let Some(v) = m.get_mut(flag) {
                    to_bool(v, &location, flag)?;
                }
            }
            if let Some(Value::Mapping(ext)) = m.get_mut("external") {
                check_keys(ext, &["name"], &format!("{location} external"), false)?;
            }
        }
    }
    Ok(())
}

fn check_service(
    name: &str,
    service: &mut Value,
    problems: &mut Problems,
) -> Result<(), ComposeError> {
    let location = format!("service `{name}`");
    let svc = service
        .as_mapping_mut()
        .ok_or_else(|| ComposeError::Invalid {
            location: location.clone(),
            message: "must be a mapping with at least an `image`".into(),
        })?;
    if svc.contains_key("build") {
        return Err(ComposeError::Build {
            service: name.into(),
        });
    }
    let allowed: Vec<&str> = SERVICE_KEYS.iter().chain(OPTION_KEYS).copied().collect();
    if let Err(e) = check_keys(svc, &allowed, &location, true) {
        problems.push(e);
        svc.retain(|k, _| {
            scalar_text(k).is_some_and(|k| allowed.contains(&k.as_str()) || k.starts_with("x-"))
        });
    }
    for key in [
        "image",
        "user",
        "working_dir",
        "mem_limit",
        "stop_grace_period",
        "restart",
    ] {
        stringify_at(svc, key);
    }
    stringify_labels(svc);
    for key in ["command", "entrypoint", "env_file"] {
        if let Some(v) = svc.get_mut(key) {
            stringify(v);
            if let Value::Sequence(items) = v {
                items.iter_mut().for_each(stringify);
            }
        }
    }
    if let Some(Value::Sequence(items)) = svc.get_mut("env_file")
        && items.iter().any(|i| !i.is_string())
    {
        return Err(ComposeError::Invalid {
            location: location.clone(),
            message: "`env_file` entries must be file paths (the long syntax with `path`/`required` is not supported)".into(),
        });
    }
    if let Some(Value::Sequence(items)) = svc.get_mut("environment") {
        items.iter_mut().for_each(stringify);
    }
    if let Some(hc) = svc.get_mut("healthcheck") {
        let hl = format!("{location} healthcheck");
        let m = hc.as_mapping_mut().ok_or_else(|| ComposeError::Invalid {
            location: hl.clone(),
            message: "must be a mapping".into(),
        })?;
        check_keys(m, HEALTHCHECK_KEYS, &hl, false)?;
        for key in ["interval", "timeout", "start_period", "start_interval"] {
            stringify_at(m, key);
        }
        if let Some(Value::Sequence(items)) = m.get_mut("test") {
            items.iter_mut().for_each(stringify);
        }
        if let Some(v) = m.get_mut("retries") {
            to_int(v, &hl, "retries")?;
        }
        if let Some(v) = m.get_mut("disable") {
            to_bool(v, &hl, "disable")?;
        }
    }
    if let Some(ports) = svc.get_mut("ports") {
        let items = ports
            .as_sequence_mut()
            .ok_or_else(|| ComposeError::Invalid {
                location: location.clone(),
                message: "`ports` must be a list".into(),
            })?;
        for (i, item) in items.iter_mut().enumerate() {
            stringify(item);
            if let Value::Mapping(m) = item {
                let pl = format!("{location} ports entry {}", i + 1);
                check_keys(m, PORT_KEYS, &pl, false)?;
                // On one engine `host` publishes exactly as `ingress` does.
                if m.get("mode").and_then(Value::as_str) == Some("host") {
                    m.remove("mode");
                }
                accept_default(m, "ports", "mode", &pl)?;
                if let Some(v) = m.get_mut("target") {
                    to_int(v, &pl, "target")?;
                }
                if let Some(v) = m.get_mut("published")
                    && let Some(n) = v.as_str().and_then(|s| s.parse::<u16>().ok())
                {
                    *v = Value::from(n);
                }
                stringify_at(m, "host_ip");
            }
        }
    }
    if let Some(volumes) = svc.get_mut("volumes") {
        let items = volumes
            .as_sequence_mut()
            .ok_or_else(|| ComposeError::Invalid {
                location: location.clone(),
                message: "`volumes` must be a list".into(),
            })?;
        for (i, item) in items.iter_mut().enumerate() {
            if let Value::Mapping(m) = item {
                let vl = format!("{location} volumes entry {}", i + 1);
                check_keys(m, MOUNT_KEYS, &vl, false)?;
                accept_default_options(m, "bind", BIND_KEYS, &vl)?;
                accept_default_options(m, "volume", MOUNT_VOLUME_KEYS, &vl)?;
                if let Some(v) = m.get_mut("read_only") {
                    to_bool(v, &vl, "read_only")?;
                }
            }
        }
    }
    if let Some(Value::Mapping(nets)) = svc.get_mut("networks") {
        for (net, def) in nets.iter_mut() {
            if let Value::Mapping(m) = def {
                let nl = format!(
                    "{location} network `{}`",
                    scalar_text(net).unwrap_or_default()
                );
                check_keys(m, SERVICE_NETWORK_KEYS, &nl, false)?;
            }
        }
    }
    if let Some(Value::Mapping(deps)) = svc.get_mut("depends_on") {
        for (dep, def) in deps.iter_mut() {
            let dl = format!(
                "{location} depends_on `{}`",
                scalar_text(dep).unwrap_or_default()
            );
            if def.is_null() {
                *def = Value::Mapping(Mapping::new());
            }
            let m = def.as_mapping_mut().ok_or_else(|| ComposeError::Invalid {
                location: dl.clone(),
                message: "must be a mapping with a `condition`".into(),
            })?;
            check_keys(m, DEPENDS_ON_KEYS, &dl, false)?;
            for flag in ["required", "restart"] {
                if let Some(v) = m.get_mut(flag) {
                    to_bool(v, &dl, flag)?;
                }
            }
            if !m.contains_key("condition") {
                m.insert("condition".into(), "service_started".into());
            }
        }
    }
    Ok(())
}

/// Every key of `map` must be in `allowed` (or an `x-` extension, where `extensions` is true).
fn check_keys(
    map: &Mapping,
    allowed: &[&str],
    location: &str,
    extensions: bool,
) -> Result<(), ComposeError> {
    let mut problems = Problems::default();
    for key in map.keys() {
        let Some(k) = scalar_text(key) else {
            problems.push(ComposeError::Invalid {
                location: location.into(),
                message: "a key is not a plain string".into(),
            });
            continue;
        };
        if allowed.contains(&k.as_str()) || (extensions && k.starts_with("x-")) {
            continue;
        }
        problems.push(ComposeError::UnsupportedKey {
            location: location.into(),
            key: k,
            supported: allowed.join(", "),
        });
    }
    problems.finish()
}

/// The text of a scalar (strings, numbers and booleans).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn stringify(v: &mut Value) {
    if matches!(v, Value::Number(_) | Value::Bool(_))
        && let Some(s) = scalar_text(v)
    {
        *v = Value::String(s);
    }
}

fn stringify_at(m: &mut Mapping, key: &str) {
    if let Some(v) = m.get_mut(key) {
        stringify(v);
    }
}

fn stringify_labels(m: &mut Mapping) {
    match m.get_mut("labels") {
        Some(Value::Mapping(labels)) => labels.values_mut().for_each(stringify),
        Some(Value::Sequence(labels)) => labels.iter_mut().for_each(stringify),
        _ => {}
    }
}

fn to_bool(v: &mut Value, location: &str, key: &str) -> Result<(), ComposeError> {
    let b = match v {
        Value::Bool(b) => *b,
        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(ComposeError::Invalid {
                location: location.into(),
                message: format!("`{key}` must be true or false"),
            });
        }
    };
    *v = Value::Bool(b);
    Ok(())
}

fn to_int(v: &mut Value, location: &str, key: &str) -> Result<(), ComposeError> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n >= 0 => {
            *v = Value::from(n);
            Ok(())
        }
        _ => Err(ComposeError::Invalid {
            location: location.into(),
            message: format!("`{key}` must be a non-negative whole number"),
        }),
    }
}
