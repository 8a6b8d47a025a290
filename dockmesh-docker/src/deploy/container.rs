//! The engine's container definition of a service: each Compose key to the create-config or
//! host-config field Compose sets for it.

use crate::compose::{MountKind, NetworkMode, ServiceSpec, StackSpec};
use crate::labels;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount, MountType, MountVolumeOptions, NetworkingConfig, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

fn restart_policy(text: Option<&str>) -> Option<RestartPolicy> {
    let text = text?;
    let (name, max) = match text {
        "no" => (RestartPolicyNameEnum::NO, None),
        "always" => (RestartPolicyNameEnum::ALWAYS, None),
        "unless-stopped" => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        "on-failure" => (RestartPolicyNameEnum::ON_FAILURE, None),
        other => (
            RestartPolicyNameEnum::ON_FAILURE,
            other
                .strip_prefix("on-failure:")
                .and_then(|n| n.parse::<i64>().ok()),
        ),
    };
    Some(RestartPolicy {
        name: Some(name),
        maximum_retry_count: max,
    })
}

/// The engine's container definition of a service.
///
/// `network_container` is the id of the container whose network a `network_mode:
/// service:NAME` service uses (Compose writes `container:<id>`).
pub(super) fn container_body(
    spec: &StackSpec,
    s: &ServiceSpec,
    image_id: &str,
    hash: &str,
    network_container: Option<&str>,
    number: u32,
) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = s.labels.clone().into_iter().collect();
    let compose_file = spec.dir.join(crate::files::COMPOSE_FILE);
    for (k, v) in [
        (labels::PROJECT, spec.project.clone()),
        (labels::SERVICE, s.name.clone()),
        (labels::CONTAINER_NUMBER, number.to_string()),
        (labels::ONEOFF, "False".to_owned()),
        (labels::WORKING_DIR, spec.dir.display().to_string()),
        (labels::CONFIG_FILES, compose_file.display().to_string()),
        (
            labels::DEPENDS_ON,
            s.depends_on
                .iter()
                .map(|(d, c)| format!("{d}:{}:{}", c.as_str(), s.restart_with.contains(d)))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (labels::IMAGE, image_id.to_owned()),
        (labels::CONFIG_HASH, hash.to_owned()),
        (
            labels::COMPOSE_CONFIG_HASH,
            crate::compose_hash::compose_config_hash(spec, s),
        ),
    ] {
        labels.insert(k.to_owned(), v);
    }
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &s.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                host_port: Some(p.host_port.map(|n| n.to_string()).unwrap_or_default()),
            });
    }
    let mut mounts = Vec::new();
    let mut binds = Vec::new();
    for m in &s.mounts {
        match m.kind {
            MountKind::Volume => mounts.push(Mount {
                target: Some(m.target.clone()),
                source: Some(m.source.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(m.read_only),
                consistency: m.consistency.clone(),
                volume_options: m.no_copy.then(|| MountVolumeOptions {
                    no_copy: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // The legacy bind syntax creates a missing host directory, as Compose's short syntax does.
            MountKind::Bind => {
                let options: Vec<&str> = [
                    m.read_only.then_some("ro"),
                    m.selinux.as_deref(),
                    m.consistency.as_deref(),
                ]
                .into_iter()
                .flatten()
                .collect();
                let mut bind = format!("{}:{}", m.source, m.target);
                if !options.is_empty() {
                    bind = format!("{bind}:{}", options.join(","));
                }
                binds.push(bind);
            }
        }
    }
    let o = &s.options;
    let first_network = s.networks.values().next();
    let network_mode = match (&o.network_mode, network_container) {
        (Some(NetworkMode::Host), _) => Some("host".to_owned()),
        (Some(NetworkMode::None), _) => Some("none".to_owned()),
        (Some(NetworkMode::Service(n)), id) => Some(format!("container:{}", id.unwrap_or(n))),
        (None, _) => first_network.map(|n| n.engine_name.clone()),
    };
    let networking_config = first_network.map(|n| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            n.engine_name.clone(),
            endpoint(&s.name, &n.aliases),
        )])),
    });
    let healthcheck = s.healthcheck.as_ref().map(|h| HealthConfig {
        test: h.test.clone(),
        interval: h.interval_ns,
        timeout: h.timeout_ns,
        retries: h.retries,
        start_period: h.start_period_ns,
        start_interval: h.start_interval_ns,
    });
    let mut env: Vec<String> = s
        .environment
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    env.sort();
    for e in &o.expose {
        if !exposed.contains(e) {
            exposed.push(e.clone());
        }
    }
    let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    ContainerCreateBody {
        hostname: o.hostname.clone(),
        domainname: o.domainname.clone(),
        tty: o.tty.then_some(true),
        open_stdin: o.stdin_open.then_some(true),
        stop_signal: o.stop_signal.clone(),
        image: Some(s.image.clone()),
        cmd: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        env: Some(env),
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_timeout: s.stop_grace_period,
        host_config: Some(HostConfig {
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            mounts: (!mounts.is_empty()).then_some(mounts),
            binds: (!binds.is_empty()).then_some(binds),
            restart_policy: restart_policy(s.restart.as_deref()),
            memory: s.mem_limit,
            network_mode,
            ulimits: (!o.ulimits.is_empty()).then(|| {
                o.ulimits
                    .iter()
                    .map(|(name, u)| ResourcesUlimits {
                        name: Some(name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            readonly_rootfs: o.read_only.then_some(true),
            tmpfs: (!o.tmpfs.is_empty()).then(|| {
                o.tmpfs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            security_opt: some_vec(&o.security_opt),
            cap_add: some_vec(&o.cap_add),
            cap_drop: some_vec(&o.cap_drop),
            shm_size: o.shm_size,
            dns: some_vec(&o.dns),
            dns_search: some_vec(&o.dns_search),
            dns_options: some_vec(&o.dns_opt),
            init: o.init,
            pids_limit: o.pids_limit,
            devices: (!o.devices.is_empty()).then(|| {
                o.devices
                    .iter()
                    .map(|d| DeviceMapping {
                        path_on_host: Some(d.host.clone()),
                        path_in_container: Some(d.container.clone()),
                        cgroup_permissions: Some(d.permissions.clone()),
                    })
                    .collect()
            }),
            log_config: o.logging.as_ref().map(|l| HostConfigLogConfig {
                typ: l.driver.clone(),
                config: Some(
                    l.options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
            }),
            privileged: o.privileged.then_some(true),
            sysctls: (!o.sysctls.is_empty()).then(|| {
                o.sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }),
            extra_hosts: some_vec(&o.extra_hosts),
            group_add: some_vec(&o.group_add),
            nano_cpus: o.nano_cpus,
            memory_reservation: o.mem_reservation,
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
}

pub(super) fn endpoint(service: &str, aliases: &[String]) -> EndpointSettings {
    let mut all = vec![service.to_owned()];
    all.extend(aliases.iter().cloned());
    EndpointSettings {
        aliases: Some(all),
        ..Default::default()
    }
}

/// Write `files` into the created container `id` (read-only for everyone, as Compose does).
pub(super) async fn inject_files(
    rt: &crate::DockerRuntime,
    id: &str,
    files: &[crate::compose::InjectedFile],
) -> Result<(), BollardError> {
    let mut archive = tar::Builder::new(Vec::new());
    // The engine does not create missing parents: each directory on the way is an entry.
    let mut dirs = BTreeSet::new();
    for f in files {
        let mut path = Path::new(f.target.trim_start_matches('/'));
        while let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(parent.to_path_buf());
            path = parent;
        }
    }
    for dir in dirs {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Directory);
        archive
            .append_data(&mut header, &dir, std::io::empty())
            .map_err(|e| BollardError::IOError { err: e })?;
    }
    for f in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(f.content.len() as u64);
        header.set_mode(0o444);
        header.set_entry_type(tar::EntryType::Regular);
        let path = f.target.trim_start_matches('/');
        archive
            .append_data(&mut header, path, f.content.as_bytes())
            .map_err(|e| BollardError::IOError { err: e })?;
    }
    let bytes = archive
        .into_inner()
        .map_err(|e| BollardError::IOError { err: e })?;
    let options = bollard::query_parameters::UploadToContainerOptions {
        path: "/".into(),
        ..Default::default()
    };
    rt.docker
        .upload_to_container(id, Some(options), bollard::body_full(bytes.into()))
        .await
}
