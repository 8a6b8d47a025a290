//! Compose's `com.docker.compose.config-hash` of a service, so that `docker compose up` on a
//! stack dockmesh deployed finds its containers up to date instead of recreating them.
//!
//! Compose (`pkg/compose/hash.go`, `ServiceHash`) takes compose-go's `types.ServiceConfig` of
//! the service, clears `build`, `pull_policy`, `scale`, `deploy.replicas`, `depends_on` and
//! `profiles`, and writes the hex SHA-256 of its `encoding/json` form. What is matched here:
//! the fields of that JSON that dockmesh supports, under compose-go's JSON names, in the order
//! of compose-go's struct fields (Go writes struct fields in declaration order and map keys
//! sorted), with `omitempty` fields left out when empty, Go's escaping of `<`, `>`, `&`, U+2028
//! and U+2029, and the forms compose-go writes: commands as string lists, `environment` and
//! `labels` as maps, durations as Go duration strings (`1m30s`), `retries` as a number,
//! `mem_limit` as a decimal string, ports with `mode: ingress`, `published` as a string and
//! `protocol`, volumes by their key with `volume: {}` and binds with
//! `bind: {create_host_path: true}`, and `networks` as a map of attachments (`null` without
//! aliases, `default` when the service names none).
//!
//! The engine options (`cap_add` … `ulimits`) are written under their compose-go names and
//! forms as far as they are known (byte sizes as decimal strings, `extra_hosts` as sorted
//! `host=ip`, `devices` as source/target/permissions); `deploy` is not written (dockmesh folds it
//! into `cpus`, `mem_limit`, `restart`), and a `ulimits` entry written as one number is written
//! as `{soft, hard}`.
//!
//! Not verifiable on this machine (no compose plugin), and known to differ where compose-go
//! keeps what dockmesh's resolved service no longer has: the `env_file` list (its values are in
//! `environment`), a `stop_grace_period` written with sub-second parts (dockmesh keeps whole
//! seconds), and defaults compose-go adds on its own. A hash that differs only makes
//! `docker compose up` recreate the container, as it would without this label.

use crate::compose::{MountKind, NetworkMode, ServiceSpec, StackSpec};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Compose's config hash of `service` of `spec`.
pub(crate) fn compose_config_hash(spec: &StackSpec, service: &ServiceSpec) -> String {
    let config = ServiceConfig::of(spec, service);
    let json = serde_json::to_string(&config).expect("a service config serialises");
    hex::encode(Sha256::digest(go_escape(&json).as_bytes()))
}

/// Go's `encoding/json` escapes these inside strings (they only occur inside strings).
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Go's `time.Duration.String()`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |value: u64, unit: u64| {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let f = format!("{rest:0digits$}");
            format!("{whole}.{}", f.trim_end_matches('0'))
        }
    };
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", frac(u, 1_000));
    }
    if u < 1_000_000_000 {
        return format!("{sign}{}ms", frac(u, 1_000_000));
    }
    let secs_ns = u % 60_000_000_000;
    let mins = u / 60_000_000_000;
    let s = format!("{}s", frac(secs_ns, 1_000_000_000));
    if mins == 0 {
        return format!("{sign}{s}");
    }
    let (h, m) = (mins / 60, mins % 60);
    if h == 0 {
        format!("{sign}{m}m{s}")
    } else {
        format!("{sign}{h}h{m}m{s}")
    }
}

fn empty<T>(v: &[T]) -> bool {
    v.is_empty()
}

/// compose-go `types.ServiceConfig`, the fields dockmesh supports, in declaration order.
#[derive(Serialize)]
struct ServiceConfig {
    #[serde(skip_serializing_if = "empty")]
    cap_add: Vec<String>,
    #[serde(skip_serializing_if = "empty")]
    cap_drop: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_name: Option<String>,
    #[serde(skip_serializing_if = "empty")]
    devices: Vec<DeviceConfig>,
    #[serde(skip_serializing_if = "empty")]
    dns: Vec<String>,
    #[serde(skip_serializing_if = "empty")]
    dns_opt: Vec<String>,
    #[serde(skip_serializing_if = "empty")]
    dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    domainname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "empty")]
    expose: Vec<String>,
    #[serde(skip_serializing_if = "empty")]
    extra_hosts: Vec<String>,
    #[serde(skip_serializing_if = "empty")]
    group_add: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<HealthCheck>,
    #[serde(skip_serializing_if = "String::is_empty")]
    image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    init: Option<bool>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logging: Option<LoggingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mem_reservation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network_mode: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    networks: BTreeMap<String, Option<NetworkConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids_limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
    #[serde(skip_serializing_if = "empty")]
    ports: Vec<PortConfig>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    privileged: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    #[serde(skip_serializing_if = "empty")]
    security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shm_size: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stdin_open: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_grace_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sysctls: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "empty")]
    tmpfs: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tty: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    ulimits: BTreeMap<String, UlimitConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "empty")]
    volumes: Vec<VolumeConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
}

#[derive(Serialize)]
struct DeviceConfig {
    source: String,
    target: String,
    permissions: String,
}

#[derive(Serialize)]
struct LoggingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    options: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct UlimitConfig {
    soft: i64,
    hard: i64,
}

#[derive(Serialize)]
struct HealthCheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_interval: Option<String>,
}

#[derive(Serialize)]
struct NetworkConfig {
    aliases: Vec<String>,
}

#[derive(Serialize)]
struct PortConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_ip: Option<String>,
    target: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<String>,
    protocol: String,
}

#[derive(Serialize)]
struct VolumeConfig {
    #[serde(rename = "type")]
    typ: &'static str,
    source: String,
    target: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<BindOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<VolumeOptions>,
}

#[derive(Serialize)]
struct BindOptions {
    create_host_path: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    selinux: Option<String>,
}

#[derive(Serialize)]
struct VolumeOptions {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    nocopy: bool,
}

impl ServiceConfig {
    fn of(spec: &StackSpec, s: &ServiceSpec) -> Self {
        let duration = |ns: Option<i64>| ns.map(go_duration);
        let volume_key = |engine_name: &str| {
            spec.volumes
                .values()
                .find(|v| v.engine_name == engine_name)
                .map_or_else(|| engine_name.to_owned(), |v| v.key.clone())
        };
        let o = &s.options;
        let mut extra_hosts: Vec<String> = o
            .extra_hosts
            .iter()
            .map(|h| h.replacen(':', "=", 1))
            .collect();
        extra_hosts.sort();
        ServiceConfig {
            cap_add: o.cap_add.clone(),
            cap_drop: o.cap_drop.clone(),
            cpus: o.nano_cpus.map(|n| f64::from(n as f32 / 1e9)),
            container_name: o.container_name.clone(),
            devices: o
                .devices
                .iter()
                .map(|d| DeviceConfig {
                    source: d.host.clone(),
                    target: d.container.clone(),
                    permissions: d.permissions.clone(),
                })
                .collect(),
            dns: o.dns.clone(),
            dns_opt: o.dns_opt.clone(),
            dns_search: o.dns_search.clone(),
            domainname: o.domainname.clone(),
            expose: o.expose.clone(),
            extra_hosts,
            group_add: o.group_add.clone(),
            hostname: o.hostname.clone(),
            init: o.init,
            logging: o.logging.as_ref().map(|l| LoggingConfig {
                driver: l.driver.clone(),
                options: l.options.clone(),
            }),
            mem_reservation: o.mem_reservation.map(|b| b.to_string()),
            network_mode: o.network_mode.as_ref().map(|m| match m {
                NetworkMode::Host => "host".to_owned(),
                NetworkMode::None => "none".to_owned(),
                NetworkMode::Service(n) => format!("service:{n}"),
            }),
            pids_limit: o.pids_limit,
            platform: o.platform.clone(),
            privileged: o.privileged,
            read_only: o.read_only,
            security_opt: o.security_opt.clone(),
            shm_size: o.shm_size.map(|b| b.to_string()),
            stdin_open: o.stdin_open,
            stop_signal: o.stop_signal.clone(),
            sysctls: o.sysctls.clone(),
            tmpfs: o
                .tmpfs
                .iter()
                .map(|(p, opts)| {
                    if opts.is_empty() {
                        p.clone()
                    } else {
                        format!("{p}:{opts}")
                    }
                })
                .collect(),
            tty: o.tty,
            ulimits: o
                .ulimits
                .iter()
                .map(|(k, u)| {
                    (
                        k.clone(),
                        UlimitConfig {
                            soft: u.soft,
                            hard: u.hard,
                        },
                    )
                })
                .collect(),
            command: s.command.clone(),
            entrypoint: s.entrypoint.clone(),
            environment: s.environment.clone(),
            healthcheck: s.healthcheck.as_ref().map(|h| HealthCheck {
                test: h.test.clone(),
                timeout: duration(h.timeout_ns),
                interval: duration(h.interval_ns),
                retries: h.retries.and_then(|r| u64::try_from(r).ok()),
                start_period: duration(h.start_period_ns),
                start_interval: duration(h.start_interval_ns),
            }),
            image: s.image.clone(),
            labels: s.labels.clone(),
            mem_limit: s.mem_limit.map(|b| b.to_string()),
            networks: s
                .networks
                .iter()
                .map(|(key, a)| {
                    let config = (!a.aliases.is_empty()).then(|| NetworkConfig {
                        aliases: a.aliases.clone(),
                    });
                    (key.clone(), config)
                })
                .collect(),
            ports: s
                .ports
                .iter()
                .map(|p| PortConfig {
                    mode: "ingress",
                    host_ip: p.host_ip.clone(),
                    target: p.container_port,
                    published: p.host_port.map(|n| n.to_string()),
                    protocol: p.protocol.clone(),
                })
                .collect(),
            restart: s.restart.clone(),
            stop_grace_period: s
                .stop_grace_period
                .map(|secs| go_duration(secs.saturating_mul(1_000_000_000))),
            user: s.user.clone(),
            volumes: s
                .mounts
                .iter()
                .map(|m| match m.kind {
                    MountKind::Volume => VolumeConfig {
                        typ: "volume",
                        source: volume_key(&m.source),
                        target: m.target.clone(),
                        read_only: m.read_only,
                        consistency: m.consistency.clone(),
                        bind: None,
                        volume: Some(VolumeOptions { nocopy: m.no_copy }),
                    },
                    MountKind::Bind => VolumeConfig {
                        typ: "bind",
                        source: m.source.clone(),
                        target: m.target.clone(),
                        read_only: m.read_only,
                        consistency: m.consistency.clone(),
                        bind: Some(BindOptions {
                            create_host_path: true,
                            selinux: m.selinux.clone(),
                        }),
                        volume: None,
                    },
                })
                .collect(),
            working_dir: s.working_dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        for (ns, want) in [
            (0, "0s"),
            (5_000_000_000, "5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (1_500_000, "1.5ms"),
            (2_000, "2µs"),
            (7, "7ns"),
            (3_723_000_000_000, "1h2m3s"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    fn load(compose: &str) -> StackSpec {
        let files = dockmesh_core::StackFiles {
            name: "shop".into(),
            compose: compose.into(),
            env: None,
        };
        crate::compose::load(&files, std::path::Path::new("/stacks/shop"), &|_| {
            Err(std::io::Error::other("no env files"))
        })
        .expect("valid")
    }

    const STACK: &str = "services:\n  web:\n    image: nginx:1.27\n    command: [nginx, -g, 'daemon off;']\n    environment: {B: '2', A: '<1>'}\n    ports: ['127.0.0.1:8080:80']\n    volumes: ['data:/srv:ro', './static:/usr/share/nginx/html']\n    healthcheck: {test: [CMD, true], interval: 1m30s, retries: 3}\n    restart: unless-stopped\nvolumes:\n  data:\n";

    #[test]
    fn the_json_has_compose_gos_field_order_and_forms() {
        let spec = load(STACK);
        let json = serde_json::to_string(&ServiceConfig::of(&spec, &spec.services[0])).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"command":["nginx","-g","daemon off;"],"environment":{"A":"<1>","B":"2"},"#,
                r#""healthcheck":{"test":["CMD","true"],"interval":"1m30s","retries":3},"#,
                r#""image":"nginx:1.27","networks":{"default":null},"#,
                r#""ports":[{"mode":"ingress","host_ip":"127.0.0.1","target":80,"published":"8080","protocol":"tcp"}],"#,
                r#""restart":"unless-stopped","volumes":["#,
                r#"{"type":"volume","source":"data","target":"/srv","read_only":true,"volume":{}},"#,
                r#"{"type":"bind","source":"/stacks/shop/static","target":"/usr/share/nginx/html","bind":{"create_host_path":true}}]}"#
            )
        );
    }

    #[test]
    fn the_hash_is_stable_and_follows_changes() {
        let a = load(STACK);
        let hash = compose_config_hash(&a, &a.services[0]);
        assert_eq!(hash.len(), 64);
        let b = load(STACK);
        assert_eq!(compose_config_hash(&b, &b.services[0]), hash);
        let c = load(&STACK.replace("nginx:1.27", "nginx:1.28"));
        assert_ne!(compose_config_hash(&c, &c.services[0]), hash);
        let d = load(&STACK.replace("B: '2'", "B: '3'"));
        assert_ne!(compose_config_hash(&d, &d.services[0]), hash);
    }

    #[test]
    fn the_hash_follows_engine_options_and_ignores_profiles() {
        let base = load(STACK);
        let hash = compose_config_hash(&base, &base.services[0]);
        let with = |extra: &str| {
            let spec = load(&STACK.replace(
                "    restart: unless-stopped\n",
                &format!("    restart: unless-stopped\n{extra}"),
            ));
            compose_config_hash(&spec, &spec.services[0])
        };
        for extra in [
            "    cap_add: [NET_ADMIN]\n",
            "    container_name: shop-web\n",
            "    hostname: web1\n",
            "    ulimits: {nofile: 1024}\n",
            "    read_only: true\n",
            "    tmpfs: /run\n",
            "    shm_size: 64m\n",
            "    init: true\n",
            "    extra_hosts: ['db:10.0.0.1']\n",
            "    cpus: 0.5\n",
        ] {
            assert_ne!(with(extra), hash, "{extra}");
        }
        let files_all = crate::compose::load_with_profiles(
            &dockmesh_core::StackFiles {
                name: "shop".into(),
                compose: STACK.replace(
                    "    restart: unless-stopped\n",
                    "    restart: unless-stopped\n    profiles: [web]\n",
                ),
                env: None,
            },
            std::path::Path::new("/stacks/shop"),
            &|_| Err(std::io::Error::other("no env files")),
            Some(&["web".into()]),
        )
        .expect("valid");
        assert_eq!(
            compose_config_hash(&files_all, &files_all.services[0]),
            hash
        );
    }

    #[test]
    fn strings_are_escaped_like_go() {
        assert_eq!(
            go_escape(r#"{"a":"<b>&"}"#),
            r#"{"a":"\u003cb\u003e\u0026"}"#
        );
    }
}
