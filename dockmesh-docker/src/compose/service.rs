//! Resolving one service of the file into a [`ServiceSpec`]: image, command, environment and
//! `env_file`s, ports, mounts, networks, healthcheck and the rest.

use super::options::take_options;
use super::secrets;
use super::short::{normalize_protocol, parse_range, resolve_host_path};
use super::*;

pub(super) struct ServiceContext<'a> {
    pub(super) dir: &'a Path,
    pub(super) vars: &'a Vars,
    pub(super) volumes: &'a BTreeMap<String, VolumeSpec>,
    pub(super) networks: &'a BTreeMap<String, NetworkSpec>,
    pub(super) secrets: &'a BTreeMap<String, secrets::Source>,
    pub(super) configs: &'a BTreeMap<String, secrets::Source>,
    pub(super) read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

pub(super) fn invalid(location: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        location: location.into(),
        message: message.into(),
    }
}

pub(super) fn resolve_service(
    name: &str,
    def: &Value,
    ctx: &ServiceContext<'_>,
) -> Result<ServiceSpec, ComposeError> {
    let location = format!("service `{name}`");
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid_name {
        return Err(invalid(
            &location,
            "service names are letters, digits, `_`, `.` and `-`, starting with a letter or digit",
        ));
    }
    // `ports` may mix the short and the long syntax, which the typed `Ports` cannot: its entries
    // are read one by one below.
    let mut without_ports = def.clone();
    let port_items = without_ports
        .as_mapping_mut()
        .and_then(|m| m.remove("ports"))
        .and_then(|p| p.as_sequence().cloned())
        .unwrap_or_default();
    let mut problems = Problems::default();
    let network_keys = without_ports
        .as_mapping()
        .is_some_and(|m| m.contains_key("networks"));
    let (mut options, deploy) = match without_ports.as_mapping_mut() {
        Some(m) => take_options(m, &location, &mut problems),
        None => Default::default(),
    };
    // Long-syntax `type: tmpfs` entries are tmpfs mounts, as the `tmpfs` key makes them.
    if let Some(Value::Sequence(items)) = without_ports.get_mut("volumes") {
        items.retain(|item| {
            if item.get("type").and_then(Value::as_str) != Some("tmpfs") {
                return true;
            }
            match tmpfs_entry(item) {
                Ok((target, opts)) => {
                    options.tmpfs.insert(target, opts);
                }
                Err(m) => problems.push(invalid(&format!("{location} volumes"), m)),
            }
            false
        });
    }
    let mut file_mounts = Vec::new();
    let mut files = Vec::new();
    for (kind, defined) in [
        (secrets::Kind::Secret, ctx.secrets),
        (secrets::Kind::Config, ctx.configs),
    ] {
        let key = match kind {
            secrets::Kind::Secret => "secrets",
            secrets::Kind::Config => "configs",
        };
        if let Some(uses) = without_ports.as_mapping_mut().and_then(|m| m.remove(key)) {
            let (mounts, injected) =
                secrets::service_mounts(kind, &uses, defined, &location, &mut problems);
            file_mounts.extend(mounts);
            files.extend(injected);
        }
    }
    let s: dct::Service = match typed(&without_ports, &location) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return problems
                .finish()
                .map(|()| unreachable!("a problem was pushed"));
        }
    };
    let image = s
        .image
        .clone()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            invalid(
                &location,
                "has no `image` (every service needs one: images are never built here)",
            )
        })?;

    let words = |v: &dct::Command| -> Result<Vec<String>, ComposeError> {
        match v {
            dct::Command::Simple(s) => units::shell_split(s).map_err(|e| invalid(&location, e)),
            dct::Command::Args(a) => Ok(a.clone()),
        }
    };
    let command = s.command.as_ref().map(words).transpose()?;
    let entrypoint = s
        .entrypoint
        .as_ref()
        .map(|e| match e {
            dct::Entrypoint::Simple(s) => units::shell_split(s).map_err(|e| invalid(&location, e)),
            dct::Entrypoint::List(l) => Ok(l.clone()),
        })
        .transpose()?;

    let mut environment = BTreeMap::new();
    if let Some(env_file) = &s.env_file {
        let paths = match env_file {
            dct::StringOrList::Simple(p) => vec![p.clone()],
            dct::StringOrList::List(l) => l.clone(),
        };
        // Every path is checked before any file is opened.
        let resolved = paths
            .iter()
            .map(|p| {
                super::beneath::stack_relative(p)
                    .map(|path| (p, path))
                    .map_err(|m| invalid(&location, format!("env_file: {m}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (p, path) in resolved {
            let text = (ctx.read_file)(&path).map_err(|source| ComposeError::EnvFileRead {
                service: name.into(),
                path: path.display().to_string(),
                source,
            })?;
            environment.extend(interpolate::parse_env_file(&text, p, ctx.vars)?);
        }
    }
    match &s.environment {
        dct::Environment::List(items) => {
            for item in items {
                match item.split_once('=') {
                    Some((k, v)) => {
                        environment.insert(k.to_owned(), v.to_owned());
                    }
                    None => {
                        if let Some(v) = ctx.vars.get(item) {
                            environment.insert(item.clone(), v.clone());
                        }
                    }
                }
            }
        }
        dct::Environment::KvPair(map) => {
            for (k, v) in map {
                match v {
                    Some(v) => {
                        environment.insert(k.clone(), v.to_string());
                    }
                    None => {
                        if let Some(v) = ctx.vars.get(k) {
                            environment.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
    }

    let mut ports = Vec::new();
    for (i, item) in port_items.iter().enumerate() {
        if let Some(text) = item.as_str() {
            ports.extend(parse_port(text).map_err(|m| invalid(&location, m))?);
            continue;
        }
        let p: dct::Port = typed(item, &format!("{location} ports entry {}", i + 1))?;
        let protocol =
            normalize_protocol(p.protocol.as_deref()).map_err(|m| invalid(&location, m))?;
        let host_port = match &p.published {
            None => None,
            Some(dct::PublishedPort::Single(n)) => Some(*n),
            Some(dct::PublishedPort::Range(r)) => {
                let (a, b) = parse_range(r).map_err(|m| invalid(&location, m))?;
                if a != b {
                    return Err(invalid(
                        &location,
                        format!(
                            "published port range {r:?} maps to the single port {}",
                            p.target
                        ),
                    ));
                }
                Some(a)
            }
        };
        ports.push(PortSpec {
            host_ip: p.host_ip.clone().filter(|s| !s.is_empty()),
            host_port,
            container_port: p.target,
            protocol,
        });
    }

    let mut mounts = Vec::new();
    for v in &s.volumes {
        let (kind, source, target, flags) = match v {
            dct::Volumes::Simple(text) => {
                parse_short_mount_flags(text).map_err(|m| invalid(&location, m))?
            }
            dct::Volumes::Advanced(a) => {
                let kind = match a._type.as_str() {
                    "volume" => MountKind::Volume,
                    "bind" => MountKind::Bind,
                    other => {
                        return Err(invalid(
                            &location,
                            format!(
                                "mount type `{other}` is not supported (use `volume` or `bind`)"
                            ),
                        ));
                    }
                };
                let source = a.source.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                    invalid(&location, format!("the mount at {} has no `source` (anonymous volumes are not supported: their data could not be moved; name the volume)", a.target))
                })?;
                let flags = MountFlags {
                    read_only: a.read_only,
                    no_copy: a.volume.as_ref().and_then(|v| v.nocopy).unwrap_or(false),
                    selinux: a.bind.as_ref().and_then(|b| b.selinux.clone()),
                    consistency: None,
                };
                (kind, source, a.target.clone(), flags)
            }
        };
        if !target.starts_with('/') {
            return Err(invalid(
                &location,
                format!("mount target {target:?} must be an absolute path"),
            ));
        }
        let source = match kind {
            MountKind::Volume => {
                let vol = ctx.volumes.get(&source).ok_or_else(|| {
                    invalid(&location, format!("mounts volume `{source}`, which is not declared under the top-level `volumes`"))
                })?;
                vol.engine_name.clone()
            }
            MountKind::Bind => resolve_host_path(ctx.dir, &source)
                .map_err(|m| invalid(&location, m))?
                .display()
                .to_string(),
        };
        mounts.push(MountSpec {
            kind,
            source,
            target,
            read_only: flags.read_only,
            no_copy: flags.no_copy,
            selinux: flags.selinux,
            consistency: flags.consistency,
        });
    }

    mounts.extend(file_mounts);
    let mut networks = BTreeMap::new();
    let wanted: Vec<(String, Vec<String>)> = match &s.networks {
        _ if options.network_mode.is_some() => vec![],
        dct::Networks::Simple(l) if l.is_empty() => vec![("default".into(), vec![])],
        dct::Networks::Simple(l) => l.iter().map(|n| (n.clone(), vec![])).collect(),
        dct::Networks::Advanced(a) => {
            a.0.iter()
                .map(|(n, settings)| {
                    let aliases = match settings {
                        dct::MapOrEmpty::Map(s) => s.aliases.clone(),
                        dct::MapOrEmpty::Empty => vec![],
                    };
                    (n.clone(), aliases)
                })
                .collect()
        }
    };
    for (key, aliases) in wanted {
        let net = ctx.networks.get(&key).ok_or_else(|| {
            invalid(
                &location,
                format!(
                    "joins network `{key}`, which is not declared under the top-level `networks`"
                ),
            )
        })?;
        networks.insert(
            key,
            NetworkAttachment {
                engine_name: net.engine_name.clone(),
                aliases,
            },
        );
    }

    let healthcheck = s
        .healthcheck
        .as_ref()
        .map(|h| resolve_health(h, &location))
        .transpose()?;

    let mut depends_on = BTreeMap::new();
    let mut restart_with = BTreeSet::new();
    let mut optional = BTreeSet::new();
    match &s.depends_on {
        dct::DependsOnOptions::Simple(l) => {
            for d in l {
                depends_on.insert(d.clone(), DependCondition::ServiceStarted);
            }
        }
        dct::DependsOnOptions::Conditional(m) => {
            for (d, c) in m {
                let Some(cond) = DependCondition::from_name(&c.condition) else {
                    return Err(invalid(
                        &location,
                        format!(
                            "depends_on `{d}` uses condition `{}`, which dockmesh does not support (use service_started, service_healthy or service_completed_successfully)",
                            c.condition
                        ),
                    ));
                };
                if c.restart == Some(true) {
                    restart_with.insert(d.clone());
                }
                if c.required == Some(false) {
                    optional.insert(d.clone());
                }
                depends_on.insert(d.clone(), cond);
            }
        }
    }

    let restart = match s.restart.as_deref() {
        None => None,
        Some(r @ ("no" | "always" | "unless-stopped" | "on-failure")) => Some(r.to_owned()),
        Some(r)
            if r.strip_prefix("on-failure:")
                .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Some(r.to_owned())
        }
        Some(r) => {
            return Err(invalid(
                &location,
                format!(
                    "restart policy `{r}` is not one of no, always, unless-stopped, on-failure[:N]"
                ),
            ));
        }
    };
    let mem_limit = s
        .mem_limit
        .as_deref()
        .map(units::parse_bytes)
        .transpose()
        .map_err(|m| invalid(&location, format!("mem_limit: {m}")))?;
    let stop_grace_period = s
        .stop_grace_period
        .as_deref()
        .map(units::parse_duration)
        .transpose()
        .map_err(|m| invalid(&location, format!("stop_grace_period: {m}")))?
        .map(|d| d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0));
    let mem_limit = match (mem_limit, deploy.mem_limit) {
        (Some(_), Some(_)) => {
            problems.push(invalid(
                &location,
                "sets both `mem_limit` and `deploy.resources.limits.memory`; keep one",
            ));
            None
        }
        (a, b) => a.or(b),
    };
    let restart = match (restart, deploy.restart) {
        (Some(_), Some(_)) => {
            problems.push(invalid(
                &location,
                "sets both `restart` and `deploy.restart_policy`; keep one",
            ));
            None
        }
        (a, b) => a.or(b),
    };
    // The container whose network a service uses starts first, and stops last: an implicit
    // dependency, recorded like the others (as Compose does).
    if let Some(NetworkMode::Service(n)) = &options.network_mode {
        depends_on
            .entry(n.clone())
            .or_insert(DependCondition::ServiceStarted);
    }
    if let Some(mode) = &options.network_mode {
        if network_keys {
            problems.push(invalid(
                &location,
                "sets both `network_mode` and `networks`; a container has one or the other",
            ));
        }
        if !ports.is_empty() {
            problems.push(invalid(
                &location,
                format!(
                    "publishes ports with `network_mode: {}`, where the engine cannot publish                      them; remove `ports`",
                    match mode {
                        NetworkMode::Host => "host".to_owned(),
                        NetworkMode::None => "none".to_owned(),
                        NetworkMode::Service(s) => format!("service:{s}"),
                    }
                ),
            ));
        }
    }
    if let Some(n) = options.replicas {
        if let Some(c) = &options.container_name {
            problems.push(invalid(
                &location,
                format!(
                    "asks for {n} replicas with the fixed `container_name: {c}`, which only one \
                     container can have; remove one of them"
                ),
            ));
        }
        if let Some(p) = ports.iter().find(|p| p.host_port.is_some()) {
            problems.push(invalid(
                &location,
                format!(
                    "asks for {n} replicas but publishes the fixed host port {}, which only one \
                     of them can hold; publish the container port alone (`\"{}\"`) or use one replica",
                    p.host_port.unwrap_or_default(),
                    p.container_port
                ),
            ));
        }
    }
    problems.finish()?;
    Ok(ServiceSpec {
        name: name.to_owned(),
        image,
        command,
        entrypoint,
        environment,
        ports,
        mounts,
        networks,
        healthcheck,
        depends_on,
        restart_with,
        optional,
        restart,
        labels: labels_map(&s.labels, &location)?,
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        mem_limit,
        stop_grace_period,
        options,
        files,
    })
}

/// A long-syntax tmpfs mount: its target and the engine's options (`size=…,mode=…`).
fn tmpfs_entry(item: &Value) -> Result<(String, String), String> {
    let m = item.as_mapping().ok_or("a tmpfs entry must be a mapping")?;
    for k in m.keys() {
        let k = schema::scalar_text(k).unwrap_or_default();
        if !matches!(k.as_str(), "type" | "target" | "tmpfs" | "read_only") {
            return Err(format!("`{k}` does not apply to a tmpfs mount"));
        }
    }
    let target = m
        .get("target")
        .and_then(schema::scalar_text)
        .filter(|t| t.starts_with('/'))
        .ok_or("a tmpfs mount needs an absolute `target`")?;
    let mut opts = Vec::new();
    if m.get("read_only").and_then(Value::as_bool) == Some(true) {
        opts.push("ro".to_owned());
    }
    if let Some(t) = m.get("tmpfs").filter(|t| !t.is_null()) {
        let t = t.as_mapping().ok_or("`tmpfs` must be a mapping")?;
        for (k, v) in t {
            let k = schema::scalar_text(k).unwrap_or_default();
            let v = schema::scalar_text(v).unwrap_or_default();
            match k.as_str() {
                "size" => opts.push(format!("size={}", units::parse_bytes(&v)?)),
                "mode" => {
                    let mode = v
                        .parse::<u32>()
                        .ok()
                        .map(|n| format!("{n:o}"))
                        .filter(|_| !v.starts_with('0'))
                        .unwrap_or_else(|| v.trim_start_matches("0o").to_owned());
                    opts.push(format!("mode={mode}"));
                }
                other => {
                    return Err(format!(
                        "tmpfs option `{other}` is not supported (size, mode)"
                    ));
                }
            }
        }
    }
    Ok((target, opts.join(",")))
}

fn resolve_health(h: &dct::Healthcheck, location: &str) -> Result<HealthSpec, ComposeError> {
    let location = format!("{location} healthcheck");
    let ns = |field: &str, v: &Option<String>| -> Result<Option<i64>, ComposeError> {
        v.as_deref()
            .map(|t| units::parse_duration(t).map(|d| d.as_nanos().min(i64::MAX as u128) as i64))
            .transpose()
            .map_err(|m| invalid(&location, format!("{field}: {m}")))
    };
    if h.disable {
        return Ok(HealthSpec {
            test: Some(vec!["NONE".into()]),
            interval_ns: None,
            timeout_ns: None,
            start_period_ns: None,
            retries: None,
            start_interval_ns: None,
        });
    }
    let test = match &h.test {
        None => None,
        Some(dct::HealthcheckTest::Single(s)) => Some(vec!["CMD-SHELL".into(), s.clone()]),
        Some(dct::HealthcheckTest::Multiple(v)) => {
            match v.first().map(String::as_str) {
                Some("CMD" | "CMD-SHELL" | "NONE") => {}
                _ => {
                    return Err(invalid(
                        &location,
                        "`test` must be a string, or a list starting with CMD, CMD-SHELL or NONE",
                    ));
                }
            }
            Some(v.clone())
        }
    };
    Ok(HealthSpec {
        test,
        interval_ns: ns("interval", &h.interval)?,
        timeout_ns: ns("timeout", &h.timeout)?,
        start_period_ns: ns("start_period", &h.start_period)?,
        start_interval_ns: ns("start_interval", &h.start_interval)?,
        retries: (h.retries > 0).then_some(h.retries),
    })
}
