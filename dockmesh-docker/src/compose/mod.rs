//! Reading a Compose stack: `compose.yaml` plus `.env` into a [`StackSpec`], the resolved model
//! the deployer works from.
//!
//! The order of work:
//! 1. `.env` is parsed ([`interpolate::parse_env_file`]).
//! 2. `compose.yaml` is parsed into a YAML tree (`yaml_serde`) and merge keys (`<<: *anchor`)
//!    are applied.
//! 3. Every string value of the tree is interpolated (`${VAR}`, `${VAR:-default}`, …). This
//!    happens on the tree, before the typed parse, so a value with YAML syntax in it (`a: b`,
//!    quotes) cannot change the structure of the file, and `docker-compose-types` (which knows
//!    nothing of interpolation) sees final values.
//! 4. [`schema::check`] refuses any key dockmesh does not support, naming it and where it is, and
//!    coerces scalars the way Compose does.
//! 5. Each service, volume and network is parsed with `docker-compose-types` and resolved: engine
//!    names (`<project>_<volume>` unless `name:` is given, `<project>_default`), relative bind
//!    paths, `env_file`s, durations and sizes; services are put in `depends_on` order.

pub mod interpolate;
pub mod schema;
pub mod units;

use docker_compose_types as dct;
use dockmesh_core::StackFiles;
use interpolate::{EnvFileError, InterpolationError, Vars};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use yaml_serde::Value;

/// Why a stack's files cannot be deployed. Nothing has been changed on the engine when this is
/// returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComposeError {
    /// `compose.yaml` is not valid YAML.
    #[error("compose.yaml is not valid YAML: {message}")]
    Yaml {
        /// The parser's message.
        message: String,
    },
    /// `.env` or an `env_file` is malformed.
    #[error("{0}")]
    EnvFile(#[from] EnvFileError),
    /// An `env_file` could not be read.
    #[error("service `{service}`: env_file {path} cannot be read: {source}")]
    EnvFileRead {
        /// The service.
        service: String,
        /// The file, as resolved.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Interpolation failed at a place in the file.
    #[error("{location}: {source}")]
    Interpolation {
        /// Where (`services.web.environment.PASSWORD`).
        location: String,
        /// What failed.
        #[source]
        source: InterpolationError,
    },
    /// A key dockmesh does not support.
    #[error(
        "{location} uses `{key}`, which dockmesh does not support (supported here: {supported})"
    )]
    UnsupportedKey {
        /// Where (`service `web``, `top level`, `volume `data``).
        location: String,
        /// The key.
        key: String,
        /// The keys supported at that place.
        supported: String,
    },
    /// A service wants to be built; there are no builds here.
    #[error(
        "service `{service}` uses `build`, which dockmesh does not support: images are never built or pulled; \
         build the image elsewhere, load it on the host (docker load) and name it with `image:`"
    )]
    Build {
        /// The service.
        service: String,
    },
    /// A value is invalid, or something refers to what does not exist.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: String,
        /// What is wrong.
        message: String,
    },
}

/// A resolved stack, ready to deploy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StackSpec {
    /// The Compose project name (the stack name).
    pub project: String,
    /// The directory holding the stack's files (bind mounts and `env_file`s are relative to it).
    pub dir: PathBuf,
    /// Services, dependencies first.
    pub services: Vec<ServiceSpec>,
    /// Volumes used by the services, by their key in the file.
    pub volumes: BTreeMap<String, VolumeSpec>,
    /// Networks used by the services, by their key in the file.
    pub networks: BTreeMap<String, NetworkSpec>,
}

impl StackSpec {
    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A named volume of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    /// Its key in the file.
    pub key: String,
    /// Its name on the engine.
    pub engine_name: String,
    /// Created outside the stack: must exist, never created or removed by dockmesh.
    pub external: bool,
    /// Volume driver.
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels from the file (Compose's own labels are added when it is created).
    pub labels: BTreeMap<String, String>,
}

/// A network of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    /// Its key in the file.
    pub key: String,
    /// Its name on the engine.
    pub engine_name: String,
    /// Created outside the stack: must exist.
    pub external: bool,
    /// Network driver.
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// No outside connectivity.
    pub internal: bool,
    /// Standalone containers may attach.
    pub attachable: bool,
    /// Labels from the file.
    pub labels: BTreeMap<String, String>,
}

/// The condition of a `depends_on` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DependCondition {
    /// The dependency's container is running.
    ServiceStarted,
    /// The dependency's healthcheck passes.
    ServiceHealthy,
}

impl DependCondition {
    /// Compose's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DependCondition::ServiceStarted => "service_started",
            DependCondition::ServiceHealthy => "service_healthy",
        }
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PortSpec {
    /// Host address to bind (all when `None`).
    pub host_ip: Option<String>,
    /// Host port (an ephemeral one when `None`).
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// What a mount mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A named volume.
    Volume,
    /// A host path.
    Bind,
}

/// A mount of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MountSpec {
    /// Volume or bind.
    pub kind: MountKind,
    /// The engine volume name, or the absolute host path.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A network a service joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkAttachment {
    /// The network's engine name.
    pub engine_name: String,
    /// Extra DNS aliases (the service name is always one).
    pub aliases: Vec<String>,
}

/// A service's healthcheck, as the engine takes it. Durations in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSpec {
    /// The test (`["CMD", …]`, `["CMD-SHELL", "…"]`, `["NONE"]`); `None` keeps the image's.
    pub test: Option<Vec<String>>,
    /// Time between checks.
    pub interval_ns: Option<i64>,
    /// Time a check may take.
    pub timeout_ns: Option<i64>,
    /// Grace period after start during which failures do not count.
    pub start_period_ns: Option<i64>,
    /// Consecutive failures before the container is unhealthy.
    pub retries: Option<i64>,
}

/// A resolved service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSpec {
    /// Service name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Command (`None` keeps the image's).
    pub command: Option<Vec<String>>,
    /// Entrypoint (`None` keeps the image's).
    pub entrypoint: Option<Vec<String>>,
    /// Environment (env_file values first, `environment` overriding).
    pub environment: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PortSpec>,
    /// Volume and bind mounts.
    pub mounts: Vec<MountSpec>,
    /// Networks, by key in the file.
    pub networks: BTreeMap<String, NetworkAttachment>,
    /// Healthcheck (`None` keeps the image's).
    pub healthcheck: Option<HealthSpec>,
    /// Dependencies and their conditions.
    pub depends_on: BTreeMap<String, DependCondition>,
    /// Restart policy (`no`, `always`, `unless-stopped`, `on-failure[:N]`).
    pub restart: Option<String>,
    /// Labels from the file.
    pub labels: BTreeMap<String, String>,
    /// User to run as.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Memory limit in bytes.
    pub mem_limit: Option<i64>,
    /// Seconds the engine waits after SIGTERM before killing (rounded up).
    pub stop_grace_period: Option<i64>,
}

/// Labels no compose file may set: the ones dockmesh and Compose manage.
pub const RESERVED_LABEL_PREFIXES: &[&str] = &["com.docker.compose.", "com.dockmesh."];

/// Read a stack. `read_file` reads `env_file`s (paths are resolved against `dir`).
pub fn load(
    files: &StackFiles,
    dir: &Path,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<StackSpec, ComposeError> {
    dockmesh_core::types::validate_stack_name(&files.name).map_err(|message| {
        ComposeError::Invalid {
            location: "stack".into(),
            message,
        }
    })?;
    let vars = match &files.env {
        Some(text) => interpolate::parse_env_file(text, ".env", &Vars::new())?,
        None => Vars::new(),
    };
    let mut root: Value = yaml_serde::from_str(&files.compose).map_err(|e| ComposeError::Yaml {
        message: e.to_string(),
    })?;
    root.apply_merge().map_err(|e| ComposeError::Yaml {
        message: e.to_string(),
    })?;
    interpolate_tree(&mut root, &mut Vec::new(), &vars)?;
    schema::check(&mut root)?;
    let top = root.as_mapping().expect("checked by schema::check");
    if let Some(name) = top.get("name").and_then(Value::as_str)
        && name != files.name
    {
        return Err(ComposeError::Invalid {
            location: "top level".into(),
            message: format!(
                "the file names its project `{name}` but the stack is `{}`; remove `name:` or make them equal",
                files.name
            ),
        });
    }
    let project = files.name.clone();
    let declared_volumes = parse_volumes(&project, top.get("volumes"))?;
    let declared_networks = parse_networks(&project, top.get("networks"))?;

    let services_value = top
        .get("services")
        .and_then(Value::as_mapping)
        .ok_or_else(|| ComposeError::Invalid {
            location: "top level".into(),
            message: "the file has no `services`".into(),
        })?;
    if services_value.is_empty() {
        return Err(ComposeError::Invalid {
            location: "top level".into(),
            message: "`services` is empty".into(),
        });
    }
    let mut services = Vec::new();
    for (name, def) in services_value {
        let name = schema::scalar_text(name).unwrap_or_default();
        let ctx = ServiceContext {
            dir,
            vars: &vars,
            volumes: &declared_volumes,
            networks: &declared_networks,
            read_file,
        };
        services.push(resolve_service(&name, def, &ctx)?);
    }
    let services = dependency_order(services)?;

    let used_volumes: BTreeSet<&str> = services
        .iter()
        .flat_map(|s| s.mounts.iter())
        .filter(|m| m.kind == MountKind::Volume)
        .map(|m| m.source.as_str())
        .collect();
    let volumes = declared_volumes
        .into_iter()
        .filter(|(_, v)| used_volumes.contains(v.engine_name.as_str()))
        .collect();
    let used_networks: BTreeSet<&str> = services
        .iter()
        .flat_map(|s| s.networks.keys())
        .map(String::as_str)
        .collect();
    let networks = declared_networks
        .into_iter()
        .filter(|(k, _)| used_networks.contains(k.as_str()))
        .collect();
    Ok(StackSpec {
        project,
        dir: dir.to_path_buf(),
        services,
        volumes,
        networks,
    })
}

fn interpolate_tree(
    v: &mut Value,
    path: &mut Vec<String>,
    vars: &Vars,
) -> Result<(), ComposeError> {
    match v {
        Value::String(s) => {
            if s.contains('$') {
                *s = interpolate::interpolate(s, vars).map_err(|source| {
                    ComposeError::Interpolation {
                        location: if path.is_empty() {
                            "top level".into()
                        } else {
                            path.join(".")
                        },
                        source,
                    }
                })?;
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                interpolate_tree(item, path, vars)?;
                path.pop();
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                path.push(schema::scalar_text(k).unwrap_or_else(|| "?".into()));
                interpolate_tree(item, path, vars)?;
                path.pop();
            }
        }
        Value::Tagged(t) => {
            return Err(ComposeError::Invalid {
                location: if path.is_empty() {
                    "top level".into()
                } else {
                    path.join(".")
                },
                message: format!(
                    "the YAML tag `{}` is not supported (Compose's `!reset` and `!override` only make sense across several files)",
                    t.tag
                ),
            });
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, location: &str) -> Result<T, ComposeError> {
    yaml_serde::from_value(v.clone()).map_err(|e| ComposeError::Invalid {
        location: location.into(),
        message: format!("does not fit the Compose format: {e}"),
    })
}

fn labels_map(
    labels: &dct::Labels,
    location: &str,
) -> Result<BTreeMap<String, String>, ComposeError> {
    let map: BTreeMap<String, String> = match labels {
        dct::Labels::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        dct::Labels::List(l) => l
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (e.clone(), String::new()),
            })
            .collect(),
    };
    if let Some(bad) = map
        .keys()
        .find(|k| RESERVED_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
    {
        return Err(ComposeError::Invalid {
            location: location.into(),
            message: format!(
                "label `{bad}` is reserved: Compose and dockmesh set labels with that prefix themselves"
            ),
        });
    }
    Ok(map)
}

fn opts_map<'a>(
    opts: impl IntoIterator<Item = (&'a String, &'a Option<dct::SingleValue>)>,
) -> BTreeMap<String, String> {
    opts.into_iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_ref().map(ToString::to_string).unwrap_or_default(),
            )
        })
        .collect()
}

fn parse_volumes(
    project: &str,
    section: Option<&Value>,
) -> Result<BTreeMap<String, VolumeSpec>, ComposeError> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(map)) = section else {
        return Ok(out);
    };
    for (key, def) in map {
        let key = schema::scalar_text(key).unwrap_or_default();
        let location = format!("volume `{key}`");
        let spec = if def.is_null() {
            VolumeSpec {
                engine_name: format!("{project}_{key}"),
                key: key.clone(),
                external: false,
                driver: None,
                driver_opts: BTreeMap::new(),
                labels: BTreeMap::new(),
            }
        } else {
            let v: dct::ComposeVolume = typed(def, &location)?;
            let (external, external_name) = match &v.external {
                None | Some(dct::ExternalVolume::Bool(false)) => (false, None),
                Some(dct::ExternalVolume::Bool(true)) => (true, None),
                Some(dct::ExternalVolume::Name { name }) => (true, Some(name.clone())),
            };
            let engine_name = match (external_name, &v.name, external) {
                (Some(n), _, _) => n,
                (None, Some(n), _) => n.clone(),
                (None, None, true) => key.clone(),
                (None, None, false) => format!("{project}_{key}"),
            };
            VolumeSpec {
                key: key.clone(),
                engine_name,
                external,
                driver: v.driver.clone(),
                driver_opts: opts_map(&v.driver_opts),
                labels: labels_map(&v.labels, &location)?,
            }
        };
        out.insert(key, spec);
    }
    Ok(out)
}

fn parse_networks(
    project: &str,
    section: Option<&Value>,
) -> Result<BTreeMap<String, NetworkSpec>, ComposeError> {
    let mut out = BTreeMap::new();
    if let Some(Value::Mapping(map)) = section {
        for (key, def) in map {
            let key = schema::scalar_text(key).unwrap_or_default();
            let location = format!("network `{key}`");
            let n: dct::NetworkSettings = if def.is_null() {
                dct::NetworkSettings::default()
            } else {
                typed(def, &location)?
            };
            let (external, external_name) = match &n.external {
                None | Some(dct::ComposeNetwork::Bool(false)) => (false, None),
                Some(dct::ComposeNetwork::Bool(true)) => (true, None),
                Some(dct::ComposeNetwork::Detailed(d)) => (true, Some(d.name.clone())),
            };
            let engine_name = match (external_name, &n.name, external) {
                (Some(x), _, _) => x,
                (None, Some(x), _) => x.clone(),
                (None, None, true) => key.clone(),
                (None, None, false) => format!("{project}_{key}"),
            };
            out.insert(
                key.clone(),
                NetworkSpec {
                    key,
                    engine_name,
                    external,
                    driver: n.driver.clone(),
                    driver_opts: opts_map(&n.driver_opts),
                    internal: n.internal,
                    attachable: n.attachable,
                    labels: labels_map(&n.labels, &location)?,
                },
            );
        }
    }
    out.entry("default".into()).or_insert_with(|| NetworkSpec {
        key: "default".into(),
        engine_name: format!("{project}_default"),
        external: false,
        driver: None,
        driver_opts: BTreeMap::new(),
        internal: false,
        attachable: false,
        labels: BTreeMap::new(),
    });
    Ok(out)
}

struct ServiceContext<'a> {
    dir: &'a Path,
    vars: &'a Vars,
    volumes: &'a BTreeMap<String, VolumeSpec>,
    networks: &'a BTreeMap<String, NetworkSpec>,
    read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

fn invalid(location: &str, message: impl Into<String>) -> ComposeError {
    ComposeError::Invalid {
        location: location.into(),
        message: message.into(),
    }
}

fn resolve_service(
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
    let s: dct::Service = typed(&without_ports, &location)?;
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
        for p in paths {
            let path = resolve_host_path(ctx.dir, &p).map_err(|m| invalid(&location, m))?;
            let text = (ctx.read_file)(&path).map_err(|source| ComposeError::EnvFileRead {
                service: name.into(),
                path: path.display().to_string(),
                source,
            })?;
            environment.extend(interpolate::parse_env_file(&text, &p, ctx.vars)?);
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
        let (kind, source, target, read_only) = match v {
            dct::Volumes::Simple(text) => {
                parse_short_mount(text).map_err(|m| invalid(&location, m))?
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
                (kind, source, a.target.clone(), a.read_only)
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
            read_only,
        });
    }

    let mut networks = BTreeMap::new();
    let wanted: Vec<(String, Vec<String>)> = match &s.networks {
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
    match &s.depends_on {
        dct::DependsOnOptions::Simple(l) => {
            for d in l {
                depends_on.insert(d.clone(), DependCondition::ServiceStarted);
            }
        }
        dct::DependsOnOptions::Conditional(m) => {
            for (d, c) in m {
                let cond = match c.condition.as_str() {
                    "service_started" => DependCondition::ServiceStarted,
                    "service_healthy" => DependCondition::ServiceHealthy,
                    other => {
                        return Err(invalid(
                            &location,
                            format!(
                                "depends_on `{d}` uses condition `{other}`, which dockmesh does not support (use service_started or service_healthy)"
                            ),
                        ));
                    }
                };
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
        restart,
        labels: labels_map(&s.labels, &location)?,
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        mem_limit,
        stop_grace_period,
    })
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
        retries: (h.retries > 0).then_some(h.retries),
    })
}

fn normalize_protocol(p: Option<&str>) -> Result<String, String> {
    match p.map(str::to_ascii_lowercase).as_deref() {
        None | Some("tcp") => Ok("tcp".into()),
        Some("udp") => Ok("udp".into()),
        Some(other) => Err(format!(
            "port protocol `{other}` is not supported (use tcp or udp)"
        )),
    }
}

fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid port {text:?}");
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let n = text.parse::<u16>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parse a short-syntax port: `[[host_ip:]host_port:]container_port[/protocol]`, with ranges
/// (`8000-8002:8000-8002`) and bracketed IPv6 addresses.
pub fn parse_port(text: &str) -> Result<Vec<PortSpec>, String> {
    let (body, proto) = match text.rsplit_once('/') {
        Some((b, p)) => (b, Some(p)),
        None => (text, None),
    };
    let protocol = normalize_protocol(proto)?;
    let (host_ip, rest) = if let Some(after) = body.strip_prefix('[') {
        let (ip, rest) = after
            .split_once(']')
            .ok_or_else(|| format!("invalid port {text:?}: unclosed `[`"))?;
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("invalid port {text:?}"))?;
        (Some(ip.to_owned()), rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => (
                Some(parts[0].to_owned()).filter(|s| !s.is_empty()),
                &body[parts[0].len() + 1..],
            ),
            _ => return Err(format!("invalid port {text:?}")),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (Some(h).filter(|h| !h.is_empty()), c),
        None => (None, rest),
    };
    let (c0, c1) = parse_range(container).map_err(|e| format!("{e} in {text:?}"))?;
    let count = c1 - c0;
    let hosts: Vec<Option<u16>> = match host {
        None => vec![None; usize::from(count) + 1],
        Some(h) => {
            let (h0, h1) = parse_range(h).map_err(|e| format!("{e} in {text:?}"))?;
            if h1 - h0 != count {
                return Err(format!(
                    "invalid port {text:?}: the host and container ranges differ in length"
                ));
            }
            (h0..=h1).map(Some).collect()
        }
    };
    Ok((c0..=c1)
        .zip(hosts)
        .map(|(container_port, host_port)| PortSpec {
            host_ip: host_ip.clone(),
            host_port,
            container_port,
            protocol: protocol.clone(),
        })
        .collect())
}

/// Parse a short-syntax mount `source:target[:ro|rw]`. A source starting with `/`, `.` or `~`
/// is a host path; anything else names a volume.
pub fn parse_short_mount(text: &str) -> Result<(MountKind, String, String, bool), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [_] => {
            return Err(format!(
                "volume {text:?} is anonymous, which is not supported: its data could not be moved; give it a name (name:{text})"
            ));
        }
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        _ => {
            return Err(format!(
                "invalid volume {text:?}: expected source:target[:ro|rw]"
            ));
        }
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(format!(
                "volume {text:?}: mount option `{other}` is not supported (use ro or rw)"
            ));
        }
    };
    if source.is_empty() {
        return Err(format!("invalid volume {text:?}: empty source"));
    }
    let kind = if source.starts_with(['/', '.', '~']) {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    Ok((kind, source.to_owned(), target.to_owned(), read_only))
}

/// A host path from the file: absolute, or relative to the stack directory. `~` is refused (the
/// home directory differs between hosts).
fn resolve_host_path(dir: &Path, text: &str) -> Result<PathBuf, String> {
    if text.starts_with('~') {
        return Err(format!(
            "path {text:?} starts with `~`: use an absolute path or one relative to the stack directory"
        ));
    }
    let joined = if Path::new(text).is_absolute() {
        PathBuf::from(text)
    } else {
        dir.join(text)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Order services so that every service comes after its dependencies (file order otherwise).
fn dependency_order(services: Vec<ServiceSpec>) -> Result<Vec<ServiceSpec>, ComposeError> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for s in &services {
        for d in s.depends_on.keys() {
            if !names.contains(d.as_str()) {
                return Err(invalid(
                    &format!("service `{}`", s.name),
                    format!("depends on `{d}`, which is not a service of this stack"),
                ));
            }
            if d == &s.name {
                return Err(invalid(
                    &format!("service `{}`", s.name),
                    "depends on itself",
                ));
            }
        }
    }
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut remaining = services;
    let mut ordered = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let Some(i) = remaining
            .iter()
            .position(|s| s.depends_on.keys().all(|d| placed.contains(d)))
        else {
            let cycle: Vec<&str> = remaining.iter().map(|s| s.name.as_str()).collect();
            return Err(invalid(
                "depends_on",
                format!(
                    "services {} depend on each other in a cycle",
                    cycle.join(", ")
                ),
            ));
        };
        let s = remaining.remove(i);
        placed.insert(s.name.clone());
        ordered.push(s);
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests;
