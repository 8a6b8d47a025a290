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

mod beneath;
mod error;
mod extends;
pub mod interpolate;
pub mod options;
mod order;
mod problems;
pub mod schema;
mod secrets;
mod service;
mod short;
pub mod units;

pub use beneath::{MAX_STACK_FILE, read_beneath, stack_relative};
pub use error::ComposeError;
pub use options::{DeviceSpec, LoggingSpec, NetworkMode, ServiceOptions, Ulimit};
use order::dependency_order;
pub(crate) use problems::Problems;
use service::{ServiceContext, invalid, resolve_service};
pub use short::{MountFlags, parse_port, parse_short_mount, parse_short_mount_flags};

use docker_compose_types as dct;
use dockmesh_core::StackFiles;
use interpolate::Vars;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use yaml_serde::Value;

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
    /// The dependency's container ran to its end with exit code 0 (a one-shot job).
    ServiceCompletedSuccessfully,
}

impl DependCondition {
    /// The condition Compose names `name`.
    pub fn from_name(name: &str) -> Option<DependCondition> {
        [
            DependCondition::ServiceStarted,
            DependCondition::ServiceHealthy,
            DependCondition::ServiceCompletedSuccessfully,
        ]
        .into_iter()
        .find(|c| c.as_str() == name)
    }

    /// Compose's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            DependCondition::ServiceStarted => "service_started",
            DependCondition::ServiceHealthy => "service_healthy",
            DependCondition::ServiceCompletedSuccessfully => "service_completed_successfully",
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
    /// A new volume does not get the image's content at the target (`nocopy`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
    /// SELinux relabelling of a bind (`z` shared, `Z` private).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
    /// `cached`, `delegated` or `consistent` (no effect on Linux engines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
}

/// A file written into a service's container before it starts (a secret or config whose
/// content is not a host file). Serialised as the SHA-256 of its content, so the content
/// changes the service's hash without appearing in it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InjectedFile {
    /// Absolute path in the container.
    pub target: String,
    /// The content.
    pub content: String,
}

impl std::fmt::Debug for InjectedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectedFile")
            .field("target", &self.target)
            .field("content", &"<hidden>")
            .finish()
    }
}

impl Serialize for InjectedFile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        use sha2::Digest;
        let mut st = s.serialize_struct("InjectedFile", 2)?;
        st.serialize_field("target", &self.target)?;
        st.serialize_field(
            "sha256",
            &hex::encode(sha2::Sha256::digest(self.content.as_bytes())),
        )?;
        st.end()
    }
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
    /// Time between checks during the start period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval_ns: Option<i64>,
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
    /// Dependencies with `restart: true`: when one is replaced, this service is too.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub restart_with: BTreeSet<String>,
    /// Dependencies with `required: false`: left out when the stack does not deploy them,
    /// and only warned about when they fail their condition.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub optional: BTreeSet<String>,
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
    /// The engine options (`container_name`, `ulimits`, `cap_add`, …).
    #[serde(flatten)]
    pub options: ServiceOptions,
    /// Secrets and configs written into the container before it starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InjectedFile>,
}

impl ServiceSpec {
    /// The name of the service's container in `project`: its `container_name`, or Compose's
    /// `<project>-<service>-1`.
    pub fn container_name(&self, project: &str) -> String {
        self.options
            .container_name
            .clone()
            .unwrap_or_else(|| crate::labels::container_name(project, &self.name))
    }

    /// `deploy.replicas` (1 when unset).
    pub fn replicas(&self) -> u32 {
        self.options.replicas.unwrap_or(1)
    }

    /// The name of replica `n` (from 1): [`ServiceSpec::container_name`] for the first,
    /// Compose's `<project>-<service>-<n>` for the others.
    pub fn replica_name(&self, project: &str, n: u32) -> String {
        if n <= 1 {
            self.container_name(project)
        } else {
            format!("{project}-{}-{n}", self.name)
        }
    }

    /// `deploy.update_config`, with Swarm's defaults where unset.
    pub fn update_settings(&self) -> options::UpdateSettings {
        self.options.update_config.unwrap_or_default()
    }
}

/// Labels no compose file may set: the ones dockmesh and Compose manage.
pub const RESERVED_LABEL_PREFIXES: &[&str] = &["com.docker.compose.", "com.dockmesh."];

/// The project name a compose file gives itself (top-level `name:`), if it parses and has one.
pub fn declared_name(compose: &str) -> Option<String> {
    let root: Value = yaml_serde::from_str(compose).ok()?;
    root.get("name").and_then(schema::scalar_text)
}

/// The project name Compose derives from a directory name: lowercase letters, digits, `-` and
/// `_`, starting with a letter or digit.
pub fn project_name_of_dir(dir_name: &str) -> String {
    dir_name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect::<String>()
        .trim_start_matches(['-', '_'])
        .to_owned()
}

/// The variable of `.env` (or the environment Compose reads) that selects profiles.
pub const PROFILES_VAR: &str = "COMPOSE_PROFILES";

/// Read a stack. `read_file` reads the files the stack names (`env_file`s, `extends` files); it
/// is given each path relative to `dir`, after [`stack_relative`] has refused absolute paths and
/// paths that climb out of it. A server or agent passes [`read_beneath`], which also refuses
/// symbolic links that leave `dir`. The active
/// profiles are those `COMPOSE_PROFILES` of `.env` names (comma-separated; `*` is all).
pub fn load(
    files: &StackFiles,
    dir: &Path,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<StackSpec, ComposeError> {
    load_with_profiles(files, dir, read_file, None)
}

/// [`load`] with the active profiles given (`Some`), instead of read from `COMPOSE_PROFILES`.
/// A service with `profiles` is deployed only when one of them is active (`*` activates all);
/// a service without is always deployed.
pub fn load_with_profiles(
    files: &StackFiles,
    dir: &Path,
    read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    profiles: Option<&[String]>,
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
    let active: Vec<String> = match profiles {
        Some(p) => p.to_vec(),
        None => vars
            .get(PROFILES_VAR)
            .map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut root: Value = yaml_serde::from_str(&files.compose).map_err(|e| ComposeError::Yaml {
        message: e.to_string(),
    })?;
    root.apply_merge().map_err(|e| ComposeError::Yaml {
        message: e.to_string(),
    })?;
    interpolate_tree(&mut root, &mut Vec::new(), &vars)?;
    let mut problems = Problems::default();
    let load_file = |file: &str| -> Result<Value, ComposeError> {
        let unreadable = |message: String| ComposeError::Invalid {
            location: format!("extends file {file}"),
            message,
        };
        let path = beneath::stack_relative(file).map_err(unreadable)?;
        let text = read_file(&path).map_err(|e| unreadable(format!("cannot be read: {e}")))?;
        let mut other: Value = yaml_serde::from_str(&text)
            .map_err(|e| unreadable(format!("is not valid YAML: {e}")))?;
        other
            .apply_merge()
            .map_err(|e| unreadable(format!("is not valid YAML: {e}")))?;
        interpolate_tree(&mut other, &mut Vec::new(), &vars)?;
        Ok(other)
    };
    extends::resolve(&mut root, &load_file, &mut problems);
    let broken = schema::check_collect(&mut root, &mut problems)?;
    let top = root.as_mapping().expect("checked by schema::check");
    if let Some(name) = top.get("name").and_then(Value::as_str)
        && name != files.name
    {
        problems.push(ComposeError::Invalid {
            location: "top level".into(),
            message: format!(
                "the file names its project `{name}` but the stack is `{}`; remove `name:` or make them equal",
                files.name
            ),
        });
    }
    let project = files.name.clone();
    let declared_volumes = problems
        .take(parse_volumes(&project, top.get("volumes")))
        .unwrap_or_default();
    let declared_networks = problems
        .take(parse_networks(&project, top.get("networks")))
        .unwrap_or_default();

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
    let secrets = secrets::parse_definitions(
        secrets::Kind::Secret,
        top.get("secrets"),
        dir,
        &vars,
        &mut problems,
    );
    let configs = secrets::parse_definitions(
        secrets::Kind::Config,
        top.get("configs"),
        dir,
        &vars,
        &mut problems,
    );
    let mut all = Vec::new();
    for (name, def) in services_value {
        let name = schema::scalar_text(name).unwrap_or_default();
        if broken.contains(&name) {
            continue;
        }
        let ctx = ServiceContext {
            dir,
            vars: &vars,
            volumes: &declared_volumes,
            networks: &declared_networks,
            secrets: &secrets,
            configs: &configs,
            read_file,
        };
        if let Some(s) = problems.take(resolve_service(&name, def, &ctx)) {
            all.push(s);
        }
    }
    let enabled = |s: &ServiceSpec| {
        s.options.profiles.is_empty()
            || active
                .iter()
                .any(|a| a == "*" || s.options.profiles.contains(a))
    };
    let (mut services, disabled): (Vec<_>, Vec<_>) = all.into_iter().partition(|s| enabled(s));
    let active_names: BTreeSet<String> = services.iter().map(|s| s.name.clone()).collect();
    for s in &mut services {
        let gone: Vec<String> = s
            .optional
            .iter()
            .filter(|d| !active_names.contains(*d))
            .cloned()
            .collect();
        for d in gone {
            s.depends_on.remove(&d);
            s.restart_with.remove(&d);
        }
    }
    for s in &services {
        let needs = s.depends_on.keys().chain(match &s.options.network_mode {
            Some(NetworkMode::Service(n)) => Some(n),
            _ => None,
        });
        for d in needs {
            if let Some(off) = disabled.iter().find(|x| &x.name == d) {
                problems.push(invalid(
                    &format!("service `{}`", s.name),
                    format!(
                        "needs `{d}`, which is only in profile(s) {} and none of them is active \
                         (activate one with --profile or {PROFILES_VAR} in .env)",
                        off.options.profiles.join(", ")
                    ),
                ));
            }
        }
    }
    if services.is_empty() && problems.is_empty() {
        problems.push(ComposeError::Invalid {
            location: "top level".into(),
            message: format!(
                "no service is active: each has `profiles` and none is selected (active: {})",
                if active.is_empty() {
                    "none".to_owned()
                } else {
                    active.join(", ")
                }
            ),
        });
    }
    let mut names: BTreeMap<String, &str> = BTreeMap::new();
    for s in &services {
        if let Some(other) = names.insert(s.container_name(&project), &s.name) {
            problems.push(invalid(
                &format!("service `{}`", s.name),
                format!(
                    "its container would be named `{}`, like the container of service `{other}`",
                    s.container_name(&project)
                ),
            ));
        }
    }
    problems.finish()?;
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

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_options;
