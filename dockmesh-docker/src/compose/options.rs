//! The single-host engine options of a service (`container_name`, `ulimits`, `cap_add`,
//! `network_mode`, `deploy.resources`, …), read from the raw YAML mapping into
//! [`ServiceOptions`]. Each maps to the one engine option Compose uses for it; what has no
//! meaning on one host (swarm placement, replicas above one, GPU reservations) is refused by
//! name. Every problem is collected, not only the first.

use super::schema::scalar_text;
use super::short::parse_range;
use super::units;
use super::{ComposeError, Problems};
use dockmesh_core::release::{FailureAction, UpdateConfig, UpdateOrder};
use serde::Serialize;
use std::collections::BTreeMap;
use yaml_serde::{Mapping, Value};

/// The service keys read here (the typed parse never sees them).
pub const OPTION_KEYS: &[&str] = &[
    "container_name",
    "hostname",
    "domainname",
    "ulimits",
    "expose",
    "read_only",
    "tmpfs",
    "security_opt",
    "cap_add",
    "cap_drop",
    "network_mode",
    "shm_size",
    "profiles",
    "dns",
    "dns_search",
    "dns_opt",
    "tty",
    "stdin_open",
    "init",
    "pids_limit",
    "devices",
    "logging",
    "privileged",
    "sysctls",
    "stop_signal",
    "extra_hosts",
    "group_add",
    "cpus",
    "mem_reservation",
    "deploy",
    "platform",
];

/// Keys of `deploy`.
pub const DEPLOY_KEYS: &[&str] = &[
    "mode",
    "replicas",
    "resources",
    "restart_policy",
    "update_config",
];
/// Keys of `deploy.update_config`.
pub const UPDATE_CONFIG_KEYS: &[&str] = &[
    "parallelism",
    "delay",
    "order",
    "failure_action",
    "monitor",
    "max_failure_ratio",
];
/// The most replicas a service may ask for on one host.
pub const MAX_REPLICAS: i64 = 100;
/// Keys of `deploy.resources`.
pub const RESOURCES_KEYS: &[&str] = &["limits", "reservations"];
/// Keys of `deploy.resources.limits`.
pub const LIMITS_KEYS: &[&str] = &["cpus", "memory", "pids"];
/// Keys of `deploy.resources.reservations`.
pub const RESERVATIONS_KEYS: &[&str] = &["memory"];
/// Keys of `deploy.restart_policy`.
pub const RESTART_POLICY_KEYS: &[&str] = &["condition", "max_attempts"];
/// Keys of `logging`.
pub const LOGGING_KEYS: &[&str] = &["driver", "options"];

/// How a service's container is networked instead of joining the stack's networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The host's network stack.
    Host,
    /// No network at all.
    None,
    /// The network stack of another service's container (`service:NAME`).
    Service(String),
}

/// A soft and a hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// A host device given to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSpec {
    /// Path on the host.
    pub host: String,
    /// Path in the container.
    pub container: String,
    /// cgroup permissions (`rwm`).
    pub permissions: String,
}

/// Where the container's logs go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggingSpec {
    /// Log driver (the engine's default when `None`).
    pub driver: Option<String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// `deploy.update_config` of a service: how its replicas are replaced (Swarm's defaults where
/// unset). See [`dockmesh_core::release::rolling`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateSettings {
    /// Replicas replaced at once (0: all).
    pub parallelism: u32,
    /// Wait between batches.
    pub delay: std::time::Duration,
    /// Stop-first or start-first.
    pub order: UpdateOrder,
    /// What to do when replicas fail beyond the ratio.
    pub failure_action: FailureAction,
    /// How long a new replica is watched once healthy.
    pub monitor: std::time::Duration,
    /// `max_failure_ratio` in millionths.
    pub max_failure_ppm: u32,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        let d = UpdateConfig::default();
        UpdateSettings {
            parallelism: d.parallelism,
            delay: d.delay,
            order: d.order,
            failure_action: d.failure_action,
            monitor: d.monitor,
            max_failure_ppm: 0,
        }
    }
}

impl UpdateSettings {
    /// As core's [`UpdateConfig`].
    pub fn config(&self) -> UpdateConfig {
        UpdateConfig {
            parallelism: self.parallelism,
            delay: self.delay,
            order: self.order,
            failure_action: self.failure_action,
            monitor: self.monitor,
            max_failure_ratio: f64::from(self.max_failure_ppm) / 1_000_000.0,
        }
    }
}

/// The engine options of a service. Empty ones are left out of its serialised form, so a
/// service that uses none hashes as it did before they existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServiceOptions {
    /// `deploy.replicas` when it is not 1. Left out of the hash: scaling adds or removes
    /// replicas without replacing the others.
    #[serde(skip)]
    pub replicas: Option<u32>,
    /// `deploy.update_config`, left out of the hash for the same reason.
    #[serde(skip)]
    pub update_config: Option<UpdateSettings>,
    /// A fixed container name instead of `<project>-<service>-1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Domain name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Resource limits by name (`nofile`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Ports exposed without publishing (`80/tcp`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// Read-only root filesystem.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// tmpfs mounts: path to mount options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Security options (`no-new-privileges:true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Capabilities added.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Networking other than the stack's networks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// Size of `/dev/shm` in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    /// Profiles the service belongs to (none: always deployed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// DNS resolver options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// Allocate a terminal.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// Keep stdin open.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    /// Run an init process (`None` keeps the engine's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Most processes the container may run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Host devices.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    /// Log driver and options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    /// Privileged mode.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Kernel parameters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Signal that stops the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Extra `/etc/hosts` entries, `host:ip`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Extra groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// CPU limit in billionths of a CPU (`cpus`, `deploy.resources.limits.cpus`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nano_cpus: Option<i64>,
    /// Memory soft limit in bytes (`mem_reservation`, `deploy.resources.reservations.memory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_reservation: Option<i64>,
    /// Platform the image must be for (`linux/amd64`); checked against the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// What `deploy` sets on fields the service has outside of [`ServiceOptions`].
#[derive(Debug, Default)]
pub(super) struct DeployOverrides {
    pub(super) mem_limit: Option<i64>,
    pub(super) restart: Option<String>,
}

/// Read and remove the option keys of `svc`. Problems go to `problems`, under `location`.
pub(super) fn take_options(
    svc: &mut Mapping,
    location: &str,
    problems: &mut Problems,
) -> (ServiceOptions, DeployOverrides) {
    let mut o = ServiceOptions::default();
    let mut deploy = DeployOverrides::default();
    let mut r = Reader { location, problems };
    for key in OPTION_KEYS {
        let Some(v) = svc.remove(*key) else { continue };
        if v.is_null() {
            continue;
        }
        match *key {
            "container_name" => o.container_name = r.container_name(&v),
            "hostname" => o.hostname = r.text(key, &v),
            "domainname" => o.domainname = r.text(key, &v),
            "ulimits" => o.ulimits = r.ulimits(&v),
            "expose" => o.expose = r.expose(&v),
            "read_only" => o.read_only = r.flag(key, &v),
            "tmpfs" => o.tmpfs = r.tmpfs(&v),
            "security_opt" => o.security_opt = r.list(key, &v),
            "cap_add" => o.cap_add = r.list(key, &v),
            "cap_drop" => o.cap_drop = r.list(key, &v),
            "network_mode" => o.network_mode = r.network_mode(&v),
            "shm_size" => o.shm_size = r.bytes(key, &v),
            "profiles" => o.profiles = r.list(key, &v),
            "dns" => o.dns = r.list(key, &v),
            "dns_search" => o.dns_search = r.list(key, &v),
            "dns_opt" => o.dns_opt = r.list(key, &v),
            "tty" => o.tty = r.flag(key, &v),
            "stdin_open" => o.stdin_open = r.flag(key, &v),
            "init" => o.init = Some(r.flag(key, &v)),
            "pids_limit" => o.pids_limit = r.int(key, &v, -1),
            "devices" => o.devices = r.devices(&v),
            "logging" => o.logging = r.logging(&v),
            "privileged" => o.privileged = r.flag(key, &v),
            "sysctls" => o.sysctls = r.map(key, &v),
            "stop_signal" => o.stop_signal = r.text(key, &v),
            "extra_hosts" => o.extra_hosts = r.extra_hosts(&v),
            "group_add" => o.group_add = r.list(key, &v),
            "cpus" => o.nano_cpus = r.cpus(key, &v),
            "mem_reservation" => o.mem_reservation = r.bytes(key, &v),
            "deploy" => r.deploy(&v, &mut o, &mut deploy),
            "platform" => o.platform = r.text(key, &v),
            _ => unreachable!("every option key is read"),
        }
    }
    (o, deploy)
}

struct Reader<'a> {
    location: &'a str,
    problems: &'a mut Problems,
}

impl Reader<'_> {
    fn bad(&mut self, key: &str, message: impl std::fmt::Display) {
        self.problems.push(ComposeError::Invalid {
            location: format!("{} `{key}`", self.location),
            message: message.to_string(),
        });
    }

    fn keys(&mut self, m: &Mapping, allowed: &[&str], key: &str, why: &str) -> bool {
        let mut ok = true;
        for k in m.keys() {
            let k = scalar_text(k).unwrap_or_else(|| "?".into());
            if !allowed.contains(&k.as_str()) {
                self.problems.push(ComposeError::UnsupportedKey {
                    location: format!("{} `{key}`", self.location),
                    key: k,
                    supported: format!("{}{why}", allowed.join(", ")),
                });
                ok = false;
            }
        }
        ok
    }

    fn text(&mut self, key: &str, v: &Value) -> Option<String> {
        let t = scalar_text(v);
        if t.is_none() {
            self.bad(key, "must be a single value");
        }
        t
    }

    fn flag(&mut self, key: &str, v: &Value) -> bool {
        match v {
            Value::Bool(b) => *b,
            Value::String(s) if s.eq_ignore_ascii_case("true") => true,
            Value::String(s) if s.eq_ignore_ascii_case("false") => false,
            _ => {
                self.bad(key, "must be true or false");
                false
            }
        }
    }

    fn int(&mut self, key: &str, v: &Value, min: i64) -> Option<i64> {
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if n >= min => Some(n),
            _ => {
                self.bad(key, format!("must be a whole number of at least {min}"));
                None
            }
        }
    }

    fn update_config(&mut self, v: &Value) -> Option<UpdateSettings> {
        const KEY: &str = "deploy.update_config";
        let Some(m) = v.as_mapping() else {
            self.bad(KEY, "must be a mapping");
            return None;
        };
        self.keys(m, UPDATE_CONFIG_KEYS, KEY, "");
        let mut u = UpdateSettings::default();
        if let Some(p) = m.get("parallelism")
            && let Some(n) = self.int("deploy.update_config.parallelism", p, 0)
        {
            u.parallelism = u32::try_from(n.min(MAX_REPLICAS)).unwrap_or(1);
        }
        let duration = |me: &mut Self, key: &str| -> Option<std::time::Duration> {
            let full = format!("{KEY}.{key}");
            let t = me.text(&full, m.get(key)?)?;
            units::parse_duration(&t).map_err(|e| me.bad(&full, e)).ok()
        };
        if let Some(d) = duration(self, "delay") {
            u.delay = d;
        }
        if let Some(d) = duration(self, "monitor") {
            u.monitor = d;
        }
        if let Some(o) = m.get("order") {
            match scalar_text(o).as_deref() {
                Some("stop-first") => u.order = UpdateOrder::StopFirst,
                Some("start-first") => u.order = UpdateOrder::StartFirst,
                _ => self.bad(
                    "deploy.update_config.order",
                    "must be stop-first or start-first",
                ),
            }
        }
        if let Some(a) = m.get("failure_action") {
            match scalar_text(a).as_deref() {
                Some("pause") => u.failure_action = FailureAction::Pause,
                Some("rollback") => u.failure_action = FailureAction::Rollback,
                Some("continue") => u.failure_action = FailureAction::Continue,
                _ => self.bad(
                    "deploy.update_config.failure_action",
                    "must be pause, rollback or continue",
                ),
            }
        }
        if let Some(r) = m.get("max_failure_ratio") {
            let ratio = match r {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match ratio {
                Some(x) if (0.0..=1.0).contains(&x) => {
                    u.max_failure_ppm = (x * 1_000_000.0).round() as u32
                }
                _ => self.bad(
                    "deploy.update_config.max_failure_ratio",
                    "must be a number from 0 to 1",
                ),
            }
        }
        Some(u)
    }

    fn bytes(&mut self, key: &str, v: &Value) -> Option<i64> {
        let t = self.text(key, v)?;
        units::parse_bytes(&t).map_err(|m| self.bad(key, m)).ok()
    }

    fn cpus(&mut self, key: &str, v: &Value) -> Option<i64> {
        let t = self.text(key, v)?;
        match t.trim().parse::<f64>() {
            Ok(c) if c.is_finite() && c > 0.0 && c < 1e6 => Some((c * 1e9).round() as i64),
            _ => {
                self.bad(
                    key,
                    format!("{t:?} is not a positive number of CPUs (like 0.5)"),
                );
                None
            }
        }
    }

    fn list(&mut self, key: &str, v: &Value) -> Vec<String> {
        match v {
            Value::Sequence(items) => items
                .iter()
                .filter_map(|i| {
                    let t = scalar_text(i);
                    if t.is_none() {
                        self.bad(key, "entries must be single values");
                    }
                    t
                })
                .collect(),
            // Compose accepts a single string where it takes a list of them.
            other => scalar_text(other).into_iter().collect(),
        }
    }

    /// A mapping, or a list of `KEY=VALUE`.
    fn map(&mut self, key: &str, v: &Value) -> BTreeMap<String, String> {
        match v {
            Value::Mapping(m) => m
                .iter()
                .map(|(k, v)| {
                    (
                        scalar_text(k).unwrap_or_default(),
                        scalar_text(v).unwrap_or_default(),
                    )
                })
                .collect(),
            Value::Sequence(_) => self
                .list(key, v)
                .into_iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (e, String::new()),
                })
                .collect(),
            _ => {
                self.bad(key, "must be a mapping or a list of KEY=VALUE");
                BTreeMap::new()
            }
        }
    }

    fn container_name(&mut self, v: &Value) -> Option<String> {
        let name = self.text("container_name", v)?;
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            self.bad(
                "container_name",
                format!(
                    "{name:?} is not a container name: letters, digits, `_`, `.` and `-`, \
                     starting with a letter or digit"
                ),
            );
            return None;
        }
        Some(name)
    }

    fn ulimits(&mut self, v: &Value) -> BTreeMap<String, Ulimit> {
        let mut out = BTreeMap::new();
        let Some(m) = v.as_mapping() else {
            self.bad("ulimits", "must be a mapping of limit names");
            return out;
        };
        for (name, limit) in m {
            let name = scalar_text(name).unwrap_or_default();
            let key = format!("ulimits.{name}");
            let limit = match limit {
                Value::Mapping(l) => {
                    if !self.keys(l, &["soft", "hard"], &key, "") {
                        continue;
                    }
                    let get = |r: &mut Self, k: &str| match l.get(k) {
                        Some(v) => r.int(&format!("{key}.{k}"), v, -1),
                        None => {
                            r.bad(&key, format!("needs `{k}`"));
                            None
                        }
                    };
                    match (get(self, "soft"), get(self, "hard")) {
                        (Some(soft), Some(hard)) => Ulimit { soft, hard },
                        _ => continue,
                    }
                }
                single => match self.int(&key, single, -1) {
                    Some(n) => Ulimit { soft: n, hard: n },
                    None => continue,
                },
            };
            out.insert(name, limit);
        }
        out
    }

    fn expose(&mut self, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for item in self.list("expose", v) {
            let (ports, proto) = match item.split_once('/') {
                Some((p, proto)) => (p, proto.to_ascii_lowercase()),
                None => (item.as_str(), "tcp".to_owned()),
            };
            if !matches!(proto.as_str(), "tcp" | "udp") {
                self.bad("expose", format!("{item:?}: protocol must be tcp or udp"));
                continue;
            }
            match parse_range(ports) {
                Ok((a, b)) => out.extend((a..=b).map(|p| format!("{p}/{proto}"))),
                Err(m) => self.bad("expose", m),
            }
        }
        out
    }

    fn tmpfs(&mut self, v: &Value) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for item in self.list("tmpfs", v) {
            let (path, opts) = item.split_once(':').unwrap_or((item.as_str(), ""));
            if !path.starts_with('/') {
                self.bad("tmpfs", format!("{path:?} must be an absolute path"));
                continue;
            }
            out.insert(path.to_owned(), opts.to_owned());
        }
        out
    }

    fn network_mode(&mut self, v: &Value) -> Option<NetworkMode> {
        let t = self.text("network_mode", v)?;
        match t.as_str() {
            "host" => Some(NetworkMode::Host),
            "none" => Some(NetworkMode::None),
            other => match other.strip_prefix("service:") {
                Some(s) if !s.is_empty() => Some(NetworkMode::Service(s.to_owned())),
                _ => {
                    self.bad(
                        "network_mode",
                        format!(
                            "`{other}` is not supported: use host, none or service:NAME (a \
                             container outside the stack would not move with it)"
                        ),
                    );
                    None
                }
            },
        }
    }

    fn devices(&mut self, v: &Value) -> Vec<DeviceSpec> {
        let mut out = Vec::new();
        for item in self.list("devices", v) {
            let parts: Vec<&str> = item.split(':').collect();
            let (host, container, permissions) = match parts.as_slice() {
                [h] => (*h, *h, "rwm"),
                [h, c] if c.starts_with('/') => (*h, *c, "rwm"),
                [h, p] => (*h, *h, *p),
                [h, c, p] => (*h, *c, *p),
                _ => {
                    self.bad(
                        "devices",
                        format!("{item:?} is not HOST[:CONTAINER[:PERMISSIONS]]"),
                    );
                    continue;
                }
            };
            if !host.starts_with('/') || !container.starts_with('/') {
                self.bad(
                    "devices",
                    format!("{item:?}: device paths must be absolute"),
                );
                continue;
            }
            if permissions.is_empty() || !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            {
                self.bad(
                    "devices",
                    format!("{item:?}: permissions are letters of rwm"),
                );
                continue;
            }
            out.push(DeviceSpec {
                host: host.to_owned(),
                container: container.to_owned(),
                permissions: permissions.to_owned(),
            });
        }
        out
    }

    fn logging(&mut self, v: &Value) -> Option<LoggingSpec> {
        let Some(m) = v.as_mapping() else {
            self.bad("logging", "must be a mapping with `driver` and `options`");
            return None;
        };
        if !self.keys(m, LOGGING_KEYS, "logging", "") {
            return None;
        }
        let driver = match m.get("driver") {
            Some(d) => Some(self.text("logging.driver", d)?),
            None => None,
        };
        let options = match m.get("options") {
            Some(o) if !o.is_null() => self.map("logging.options", o),
            _ => BTreeMap::new(),
        };
        Some(LoggingSpec { driver, options })
    }

    fn extra_hosts(&mut self, v: &Value) -> Vec<String> {
        let entries: Vec<(String, String)> = match v {
            Value::Mapping(_) => self.map("extra_hosts", v).into_iter().collect(),
            _ => self
                .list("extra_hosts", v)
                .into_iter()
                .filter_map(|e| {
                    // `host=ip` (Compose v2) or `host:ip` (the ip may be IPv6, with colons).
                    let split = e.split_once('=').or_else(|| e.split_once(':'));
                    if split.is_none() {
                        self.bad("extra_hosts", format!("{e:?} is not HOST:IP"));
                    }
                    split.map(|(h, ip)| (h.to_owned(), ip.to_owned()))
                })
                .collect(),
        };
        entries
            .into_iter()
            .map(|(h, ip)| {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                format!("{h}:{ip}")
            })
            .collect()
    }

    fn deploy(&mut self, v: &Value, o: &mut ServiceOptions, out: &mut DeployOverrides) {
        let Some(m) = v.as_mapping() else {
            self.bad("deploy", "must be a mapping");
            return;
        };
        self.keys(
            m,
            DEPLOY_KEYS,
            "deploy",
            " (the rest are swarm settings, with no meaning on one host)",
        );
        if let Some(mode) = m.get("mode").and_then(scalar_text)
            && mode != "replicated"
        {
            self.bad(
                "deploy.mode",
                format!(
                    "`{mode}` is a swarm mode; only `replicated` with one replica is supported"
                ),
            );
        }
        if let Some(r) = m.get("replicas")
            && let Some(n) = self.int("deploy.replicas", r, 1)
        {
            if n > MAX_REPLICAS {
                self.bad(
                    "deploy.replicas",
                    format!(
                        "{n} replicas on one host is more than the {MAX_REPLICAS} dockmesh runs"
                    ),
                );
            } else if n != 1 {
                o.replicas = Some(n as u32);
            }
        }
        if let Some(u) = m.get("update_config") {
            o.update_config = self.update_config(u);
        }
        if let Some(Value::Mapping(res)) = m.get("resources") {
            self.keys(res, RESOURCES_KEYS, "deploy.resources", "");
            if let Some(Value::Mapping(l)) = res.get("limits") {
                self.keys(l, LIMITS_KEYS, "deploy.resources.limits", "");
                if let Some(c) = l.get("cpus") {
                    o.nano_cpus = self.cpus("deploy.resources.limits.cpus", c);
                }
                if let Some(mem) = l.get("memory") {
                    out.mem_limit = self.bytes("deploy.resources.limits.memory", mem);
                }
                if let Some(p) = l.get("pids") {
                    o.pids_limit = self.int("deploy.resources.limits.pids", p, -1);
                }
            }
            if let Some(Value::Mapping(r)) = res.get("reservations") {
                self.keys(
                    r,
                    RESERVATIONS_KEYS,
                    "deploy.resources.reservations",
                    " (CPU and device reservations are scheduling requests a single engine \
                     does not make)",
                );
                if let Some(mem) = r.get("memory") {
                    o.mem_reservation = self.bytes("deploy.resources.reservations.memory", mem);
                }
            }
        }
        if let Some(Value::Mapping(p)) = m.get("restart_policy") {
            self.keys(
                p,
                RESTART_POLICY_KEYS,
                "deploy.restart_policy",
                " (the engine has no restart delay or window)",
            );
            let condition = p
                .get("condition")
                .and_then(scalar_text)
                .unwrap_or_else(|| "any".into());
            let policy = match condition.as_str() {
                "none" => "no".to_owned(),
                "any" => "always".to_owned(),
                "on-failure" => match p.get("max_attempts") {
                    Some(n) => match self.int("deploy.restart_policy.max_attempts", n, 0) {
                        Some(n) => format!("on-failure:{n}"),
                        None => return,
                    },
                    None => "on-failure".into(),
                },
                other => {
                    self.bad(
                        "deploy.restart_policy.condition",
                        format!("`{other}` is not one of none, on-failure, any"),
                    );
                    return;
                }
            };
            if condition != "on-failure" && p.contains_key("max_attempts") {
                self.bad(
                    "deploy.restart_policy.max_attempts",
                    "only applies with `condition: on-failure` on one engine",
                );
            }
            out.restart = Some(policy);
        }
    }
}
