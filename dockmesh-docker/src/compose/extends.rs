//! `extends`: a service built on another one, of the same file or of another file (relative to
//! the stack directory, interpolated with the same variables). Merged on the YAML tree before
//! the schema check, with Compose's rules: mappings are merged key by key (the extending
//! service wins), `volumes` are merged by target, the other lists are concatenated, and any
//! other value is replaced. `environment` and `labels` written as lists are merged as maps.

use super::schema::scalar_text;
use super::{ComposeError, Problems};
use yaml_serde::{Mapping, Value};

/// How deep `extends` may chain.
const MAX_DEPTH: usize = 16;

/// Resolve every `extends` of `services` in place. `load_file` returns the interpolated,
/// merged root of another compose file.
pub(super) fn resolve(
    root: &mut Value,
    load_file: &dyn Fn(&str) -> Result<Value, ComposeError>,
    problems: &mut Problems,
) {
    let Some(services) = root.get("services").and_then(Value::as_mapping).cloned() else {
        return;
    };
    let mut resolved = services.clone();
    for (name, def) in &services {
        let name = scalar_text(name).unwrap_or_default();
        if def.get("extends").is_none() {
            continue;
        }
        match extend(&name, def, &services, load_file, 0) {
            Ok(v) => {
                resolved.insert(Value::String(name), v);
            }
            Err(e) => {
                problems.push(e);
                let mut rest = def.clone();
                if let Some(m) = rest.as_mapping_mut() {
                    m.remove("extends");
                }
                resolved.insert(Value::String(name), rest);
            }
        }
    }
    if let Some(m) = root.as_mapping_mut() {
        m.insert("services".into(), Value::Mapping(resolved));
    }
}

fn invalid(service: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        location: format!("service `{service}` extends"),
        message: message.into(),
    }
}

/// `def` (service `name` of a file whose services are `services`) with its `extends` applied.
fn extend(
    name: &str,
    def: &Value,
    services: &Mapping,
    load_file: &dyn Fn(&str) -> Result<Value, ComposeError>,
    depth: usize,
) -> Result<Value, ComposeError> {
    let Some(ext) = def.get("extends") else {
        return Ok(def.clone());
    };
    if depth >= MAX_DEPTH {
        return Err(invalid(
            name,
            format!("chains more than {MAX_DEPTH} services (is there a cycle?)"),
        ));
    }
    let (base_name, file) = match ext {
        Value::Mapping(m) => {
            for k in m.keys() {
                let k = scalar_text(k).unwrap_or_default();
                if k != "service" && k != "file" {
                    return Err(ComposeError::UnsupportedKey {
                        location: format!("service `{name}` extends"),
                        key: k,
                        supported: "service, file".into(),
                    });
                }
            }
            let service = m
                .get("service")
                .and_then(scalar_text)
                .ok_or_else(|| invalid(name, "has no `service`"))?;
            (service, m.get("file").and_then(scalar_text))
        }
        other => (
            scalar_text(other).ok_or_else(|| invalid(name, "must name a service"))?,
            None,
        ),
    };
    let other_root;
    let base_services = match &file {
        Some(f) => {
            other_root = load_file(f)?;
            other_root
                .get("services")
                .and_then(Value::as_mapping)
                .ok_or_else(|| invalid(name, format!("{f} has no `services`")))?
        }
        None => services,
    };
    let base = base_services.get(base_name.as_str()).ok_or_else(|| {
        invalid(
            name,
            match &file {
                Some(f) => format!("`{base_name}` is not a service of {f}"),
                None => format!("`{base_name}` is not a service of this file"),
            },
        )
    })?;
    if file.is_none() && base_name == name {
        return Err(invalid(name, "extends itself"));
    }
    let base = extend(&base_name, base, base_services, load_file, depth + 1)?;
    let mut local = def.clone();
    if let Some(m) = local.as_mapping_mut() {
        m.remove("extends");
    }
    Ok(merge(base, local, ""))
}

/// Compose's merge of `local` over `base` at `key`.
fn merge(base: Value, local: Value, key: &str) -> Value {
    match (base, local) {
        (base, Value::Null) => base,
        (Value::Mapping(mut b), Value::Mapping(l)) => {
            for (k, v) in l {
                let name = scalar_text(&k).unwrap_or_default();
                let merged = match b.remove(&k) {
                    Some(old) => merge(old, v, &name),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Mapping(b)
        }
        (b, l) if matches!(key, "environment" | "labels") => merge(as_map(b), as_map(l), ""),
        (Value::Sequence(b), Value::Sequence(l)) if key == "volumes" => {
            let target = |v: &Value| match v {
                Value::Mapping(m) => m.get("target").and_then(scalar_text),
                other => scalar_text(other).and_then(|t| t.split(':').nth(1).map(str::to_owned)),
            };
            let mut out: Vec<Value> = b
                .into_iter()
                .filter(|bv| {
                    !l.iter()
                        .any(|lv| target(lv).is_some() && target(lv) == target(bv))
                })
                .collect();
            out.extend(l);
            Value::Sequence(out)
        }
        (Value::Sequence(mut b), Value::Sequence(l))
            if !matches!(key, "command" | "entrypoint") =>
        {
            for v in l {
                if !b.contains(&v) {
                    b.push(v);
                }
            }
            Value::Sequence(b)
        }
        (_, l) => l,
    }
}

/// `KEY=VALUE` lists as mappings (what Compose merges them as).
fn as_map(v: Value) -> Value {
    match v {
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                let text = scalar_text(&item).unwrap_or_default();
                match text.split_once('=') {
                    Some((k, v)) => m.insert(k.into(), v.into()),
                    None => m.insert(text.into(), Value::Null),
                };
            }
            Value::Mapping(m)
        }
        other => other,
    }
}
