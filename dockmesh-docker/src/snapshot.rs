//! The host snapshot pre-flight decides over.
//!
//! Where each number comes from:
//! - **Memory total**: the engine's `/info` `MemTotal`.
//! - **Memory used**: when the engine is on this machine (a unix socket) and `/proc/meminfo`
//!   describes the same machine (its `MemTotal` within 2% of the engine's), `MemTotal −
//!   MemAvailable`: what the whole host uses, not only containers. Otherwise (a remote engine, or
//!   an engine inside a VM) the sum of the memory used by the running containers (one-shot stats,
//!   page cache excluded, as `docker stats` shows it).
//! - **Disk**: the filesystem holding the engine's `DockerRootDir`, measured with `df -Pk` when the
//!   engine is local. The Engine API cannot tell free disk, so a remote engine reports
//!   `disk_total = 0` and `disk_used` = the bytes of images, containers and volumes from
//!   `/system/df`: pre-flight then sees no free disk and refuses rather than risk filling it.
//! - **Ports in use**: host ports published by running containers.
//! - **Images**: every tag present.
//! - **Per stack** (containers labelled `com.docker.compose.project`): services, images with
//!   their sizes, published ports (from each container's port bindings, so a stopped stack still
//!   reports them), named volumes with their sizes (`/system/df`) and labels, bind mounts, memory
//!   used by its running containers, and whether any is running.

use crate::DockerRuntime;
use crate::error::engine;
use crate::labels::{self, summary_label};
use bollard::models::{
    ContainerInspectResponse, ContainerStatsResponse, ContainerSummary, PortSummaryTypeEnum,
};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, StatsOptionsBuilder,
};
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use dockmesh_core::snapshot::{
    BindMount, HostSnapshot, ImageUsage, PortKey, Protocol, StackSnapshot, VolumeUsage,
};
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub(crate) async fn host_snapshot(rt: &DockerRuntime) -> Result<HostSnapshot, RuntimeError> {
    let now = jiff::Timestamp::now();
    let version = match rt.docker.version().await {
        Ok(v) => v,
        Err(e) => {
            let err = engine(
                format!(
                    "asking the Docker engine at {} for its version",
                    rt.endpoint
                ),
                e,
            );
            if err.kind == RuntimeErrorKind::Unreachable {
                tracing::warn!(error = %err, "engine unreachable: reporting the host offline");
                return Ok(HostSnapshot::offline(rt.host.clone(), now));
            }
            return Err(err);
        }
    };
    let (info, containers, images, volumes, df) = tokio::try_join!(
        async {
            rt.docker
                .info()
                .await
                .map_err(|e| engine("reading the engine's system information", e))
        },
        async {
            rt.docker
                .list_containers(Some(ListContainersOptionsBuilder::new().all(true).build()))
                .await
                .map_err(|e| engine("listing containers", e))
        },
        async {
            rt.docker
                .list_images(Some(ListImagesOptionsBuilder::new().build()))
                .await
                .map_err(|e| engine("listing images", e))
        },
        async {
            rt.docker
                .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
                .await
                .map_err(|e| engine("listing volumes", e))
                .map(|v| v.volumes.unwrap_or_default())
        },
        system_df(rt),
    )?;
    let volume_sizes = volume_sizes(&df);

    let running: Vec<&ContainerSummary> = containers
        .iter()
        .filter(|c| state_of(c) == "running")
        .collect();
    let memory: HashMap<String, Option<u64>> =
        futures_util::future::join_all(running.iter().map(|c| async {
            let id = c.id.clone().unwrap_or_default();
            let used = container_memory(rt, &id).await;
            (id, used)
        }))
        .await
        .into_iter()
        .collect();

    let memory_total = info.mem_total.unwrap_or_default().max(0) as u64;
    let local = rt.endpoint.is_local();
    let memory_used = match local.then(read_meminfo).flatten() {
        Some((total, available)) if within_two_percent(total, memory_total) => {
            total.saturating_sub(available)
        }
        _ => memory.values().map(|m| m.unwrap_or(0)).sum(),
    };
    let root_dir = info
        .docker_root_dir
        .clone()
        .unwrap_or_else(|| "/var/lib/docker".into());
    let (disk_total, disk_used) = match local {
        true => match disk_usage(&root_dir).await {
            Some(d) => d,
            None => (0, engine_bytes(&df)),
        },
        false => (0, engine_bytes(&df)),
    };

    let mut ports_in_use = BTreeSet::new();
    for c in &running {
        for p in c.ports.iter().flatten() {
            if let Some(public) = p.public_port {
                ports_in_use.insert(PortKey {
                    port: public,
                    protocol: protocol_of(p.typ),
                });
            }
        }
    }
    let mut image_tags = BTreeSet::new();
    let mut image_size: HashMap<String, u64> = HashMap::new();
    for i in &images {
        image_size.insert(i.id.clone(), i.size.max(0) as u64);
        for t in &i.repo_tags {
            if t != "<none>:<none>" {
                image_tags.insert(t.clone());
            }
        }
    }
    let volume_labels: HashMap<&str, &HashMap<String, String>> = volumes
        .iter()
        .map(|v| (v.name.as_str(), &v.labels))
        .collect();

    let mut by_stack: BTreeMap<String, Vec<&ContainerSummary>> = BTreeMap::new();
    for c in &containers {
        if let Some(project) = summary_label(c, labels::PROJECT)
            && summary_label(c, labels::ONEOFF) != Some("True")
        {
            by_stack.entry(project.to_owned()).or_default().push(c);
        }
    }
    // A container removed while the snapshot is taken is left out, not an error.
    let inspected: HashMap<String, ContainerInspectResponse> =
        futures_util::future::try_join_all(by_stack.values().flatten().map(|c| async move {
            let id = c.id.clone().unwrap_or_default();
            match rt.docker.inspect_container(&id, None).await {
                Ok(i) => Ok(Some((id, i))),
                Err(e) if crate::error::is_not_found(&e) => Ok(None),
                Err(e) => Err(engine(
                    format!("inspecting container {}", labels::summary_name(c)),
                    e,
                )),
            }
        }))
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut stacks = BTreeMap::new();
    for (name, members) in by_stack {
        let mut st = StackSnapshot {
            name: name.clone(),
            ..Default::default()
        };
        let mut services = BTreeSet::new();
        let mut stack_images: BTreeMap<String, u64> = BTreeMap::new();
        let mut ports = BTreeSet::new();
        let mut volume_names = BTreeSet::new();
        let mut memory_used = Some(0u64);
        for c in &members {
            let service = summary_label(c, labels::SERVICE)
                .unwrap_or_default()
                .to_owned();
            services.insert(service.clone());
            let id = c.id.clone().unwrap_or_default();
            let Some(inspected) = inspected.get(&id) else {
                continue;
            };
            let reference = inspected
                .config
                .as_ref()
                .and_then(|cfg| cfg.image.clone())
                .or_else(|| c.image.clone())
                .unwrap_or_default();
            let size = inspected
                .image
                .as_ref()
                .and_then(|i| image_size.get(i))
                .copied()
                .unwrap_or(0);
            stack_images.insert(reference, size);
            if let Some(bindings) = inspected
                .host_config
                .as_ref()
                .and_then(|h| h.port_bindings.as_ref())
            {
                for (key, list) in bindings {
                    let protocol = if key.ends_with("/udp") {
                        Protocol::Udp
                    } else {
                        Protocol::Tcp
                    };
                    for b in list.iter().flatten() {
                        if let Some(port) =
                            b.host_port.as_deref().and_then(|p| p.parse::<u16>().ok())
                        {
                            ports.insert(PortKey { port, protocol });
                        }
                    }
                }
            }
            for m in inspected.mounts.iter().flatten() {
                match m.typ.as_deref() {
                    Some("volume") => {
                        if let Some(n) = &m.name {
                            volume_names.insert(n.clone());
                        }
                    }
                    Some("bind") => st.bind_mounts.push(BindMount {
                        service: service.clone(),
                        source: m.source.clone().unwrap_or_default(),
                        target: m.destination.clone().unwrap_or_default(),
                        read_only: !m.rw.unwrap_or(true),
                    }),
                    _ => {}
                }
            }
            if state_of(c) == "running" {
                st.running = true;
                memory_used = match (memory_used, memory.get(&id).copied().flatten()) {
                    (Some(total), Some(m)) => Some(total + m),
                    _ => None,
                };
            }
        }
        for v in &volumes {
            if v.labels.get(labels::PROJECT) == Some(&name) {
                volume_names.insert(v.name.clone());
            }
        }
        st.services = services.into_iter().collect();
        st.images = stack_images
            .into_iter()
            .map(|(reference, bytes)| ImageUsage { reference, bytes })
            .collect();
        st.published_ports = ports.into_iter().collect();
        st.volumes = volume_names
            .into_iter()
            .map(|n| VolumeUsage {
                bytes: volume_sizes.get(&n).copied().flatten(),
                labels: volume_labels
                    .get(n.as_str())
                    .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                name: n,
            })
            .collect();
        st.memory_used = memory_used;
        let mut names: Vec<String> = members.iter().map(|c| labels::summary_name(c)).collect();
        names.sort();
        st.container_names = names;
        stacks.insert(name, st);
    }

    Ok(HostSnapshot {
        host: rt.host.clone(),
        online: true,
        taken_at: now,
        memory_total,
        memory_used,
        disk_total,
        disk_used,
        arch: info
            .architecture
            .clone()
            .or(version.arch.clone())
            .unwrap_or_default(),
        docker_version: version.version.clone().unwrap_or_default(),
        docker_api_version: version
            .api_version
            .clone()
            .unwrap_or_else(|| rt.api_version.clone()),
        ports_in_use,
        images: image_tags,
        stacks,
        volumes: volumes.iter().map(|v| v.name.clone()).collect(),
        container_names: containers.iter().map(labels::summary_name).collect(),
        containers_running: Some(running.len() as u64),
    })
}

fn state_of(c: &ContainerSummary) -> String {
    c.state.map(|s| s.to_string()).unwrap_or_default()
}

fn protocol_of(t: Option<PortSummaryTypeEnum>) -> Protocol {
    match t {
        Some(PortSummaryTypeEnum::UDP) => Protocol::Udp,
        _ => Protocol::Tcp,
    }
}

/// Volume sizes from `/system/df`: the top-level `Volumes` of API ≤ 1.51, or
/// `VolumeUsage.Items` of newer engines. `None` where the engine did not measure (-1).
pub(crate) fn volume_sizes(df: &serde_json::Value) -> HashMap<String, Option<u64>> {
    let list = df
        .get("Volumes")
        .and_then(|v| v.as_array())
        .or_else(|| df.pointer("/VolumeUsage/Items").and_then(|v| v.as_array()));
    list.into_iter()
        .flatten()
        .filter_map(|v| {
            let name = v.get("Name")?.as_str()?.to_owned();
            let size = v
                .pointer("/UsageData/Size")
                .and_then(|s| s.as_i64())
                .filter(|s| *s >= 0)
                .map(|s| s as u64);
            Some((name, size))
        })
        .collect()
}

/// Bytes the engine stores: image layers, container layers and volumes (from `/system/df`).
pub(crate) fn engine_bytes(df: &serde_json::Value) -> u64 {
    let layers = df
        .get("LayersSize")
        .and_then(|v| v.as_i64())
        .unwrap_or(0)
        .max(0) as u64;
    let containers: u64 = df
        .get("Containers")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("SizeRw").and_then(|s| s.as_i64()))
        .map(|s| s.max(0) as u64)
        .sum();
    let volumes: u64 = volume_sizes(df).values().map(|s| s.unwrap_or(0)).sum();
    layers + containers + volumes
}

/// Memory a running container uses, as `docker stats` shows it (usage minus inactive page cache).
async fn container_memory(rt: &DockerRuntime, id: &str) -> Option<u64> {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let stats: ContainerStatsResponse = rt.docker.stats(id, Some(options)).next().await?.ok()?;
    memory_of(&stats)
}

pub(crate) fn memory_of(stats: &ContainerStatsResponse) -> Option<u64> {
    let m = stats.memory_stats.as_ref()?;
    let usage = m.usage?;
    let cache = m.stats.as_ref().and_then(|s| {
        s.get("inactive_file")
            .or_else(|| s.get("total_inactive_file"))
            .or_else(|| s.get("cache"))
            .copied()
    });
    Some(usage.saturating_sub(cache.unwrap_or(0)))
}

fn within_two_percent(a: u64, b: u64) -> bool {
    let (lo, hi) = (a.min(b), a.max(b));
    hi > 0 && (hi - lo) * 50 <= hi
}

/// `(MemTotal, MemAvailable)` in bytes from this machine's `/proc/meminfo`.
fn read_meminfo() -> Option<(u64, u64)> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

pub(crate) fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

/// `(total, used)` bytes of the filesystem holding `path`, with `df -Pk` (used counts reserved
/// blocks, so `total - used` is what can still be written).
async fn disk_usage(path: &str) -> Option<(u64, u64)> {
    let out = tokio::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        tracing::warn!(path, stderr = %String::from_utf8_lossy(&out.stderr), "df failed; disk size unknown");
        return None;
    }
    parse_df(&String::from_utf8_lossy(&out.stdout))
}

pub(crate) fn parse_df(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().nth(1)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    // Filesystem 1024-blocks Used Available Capacity Mounted-on (a long device name may wrap,
    // so count from the end).
    if fields.len() < 6 {
        return None;
    }
    let n = fields.len();
    let total = fields[n - 5].parse::<u64>().ok()? * 1024;
    let available = fields[n - 3].parse::<u64>().ok()? * 1024;
    Some((total, total.saturating_sub(available)))
}

/// `/system/df`, waited for when another disk-usage computation is running on the engine (the
/// engine runs one at a time and answers 500 "a disk usage operation is already running").
async fn system_df(rt: &DockerRuntime) -> Result<serde_json::Value, RuntimeError> {
    let mut attempt = 0u32;
    loop {
        let res = crate::rawapi::get_json(
            &rt.endpoint,
            &rt.api_version,
            "/system/df",
            rt.config.request_timeout,
        )
        .await;
        match res {
            Err(e) if e.message.contains("already running") && attempt < 120 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output() {
        let text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n/dev/vda         263174212 14000000 81000000      15% /var/lib/docker\n";
        assert_eq!(
            parse_df(text),
            Some((263174212 * 1024, (263174212 - 81000000) * 1024))
        );
        assert_eq!(parse_df("header only\n"), None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24683656 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some((24683656 * 1024, 20000000 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn volume_sizes_from_either_api_shape() {
        let old = serde_json::json!({
            "LayersSize": 100,
            "Volumes": [
                {"Name": "a", "UsageData": {"Size": 10, "RefCount": 1}},
                {"Name": "b", "UsageData": {"Size": -1, "RefCount": 0}}
            ],
            "Containers": [{"SizeRw": 5}]
        });
        let sizes = volume_sizes(&old);
        assert_eq!(sizes["a"], Some(10));
        assert_eq!(sizes["b"], None);
        assert_eq!(engine_bytes(&old), 115);
        let new = serde_json::json!({"VolumeUsage": {"Items": [{"Name": "c", "UsageData": {"Size": 7}}]}});
        assert_eq!(volume_sizes(&new)["c"], Some(7));
    }

    #[test]
    fn memory_excludes_inactive_cache() {
        let stats = ContainerStatsResponse {
            memory_stats: Some(bollard::models::ContainerMemoryStats {
                usage: Some(1000),
                stats: Some(HashMap::from([("inactive_file".to_owned(), 300)])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(memory_of(&stats), Some(700));
    }

    #[test]
    fn two_percent() {
        assert!(within_two_percent(100, 99));
        assert!(!within_two_percent(100, 90));
        assert!(!within_two_percent(0, 0));
    }
}
