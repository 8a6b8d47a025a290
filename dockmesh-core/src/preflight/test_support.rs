//! Builders and strategies shared by the pre-flight and drain tests.

use crate::snapshot::{
    BindMount, HostSnapshot, ImageUsage, PortKey, Protocol, StackSnapshot, VolumeUsage,
};
use crate::types::HostId;
use jiff::Timestamp;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

pub(crate) const MIB: u64 = 1024 * 1024;
pub(crate) const GIB: u64 = 1024 * MIB;

/// An online x86_64 host with API 1.47, 16 GiB of memory and 100 GiB of disk, nothing used.
pub(crate) fn host(id: &str) -> HostSnapshot {
    HostSnapshot {
        host: HostId::new(id),
        online: true,
        taken_at: Timestamp::UNIX_EPOCH,
        memory_total: 16 * GIB,
        memory_used: 0,
        disk_total: 100 * GIB,
        disk_used: 0,
        arch: "x86_64".into(),
        docker_version: "28.2.2".into(),
        docker_api_version: "1.47".into(),
        ports_in_use: BTreeSet::new(),
        images: BTreeSet::new(),
        stacks: BTreeMap::new(),
        volumes: BTreeSet::new(),
        container_names: BTreeSet::new(),
        containers_running: None,
    }
}

/// A stack with one service and one volume `<name>_data` of `volume` bytes.
pub(crate) fn stack(name: &str, memory: u64, volume: u64) -> StackSnapshot {
    StackSnapshot {
        name: name.into(),
        services: vec!["app".into()],
        images: vec![],
        published_ports: vec![],
        volumes: vec![VolumeUsage {
            name: format!("{name}_data"),
            bytes: Some(volume),
            labels: BTreeMap::new(),
        }],
        bind_mounts: vec![],
        memory_used: Some(memory),
        running: true,
        container_names: vec![],
    }
}

pub(crate) fn image(reference: &str, bytes: u64) -> ImageUsage {
    ImageUsage {
        reference: reference.into(),
        bytes,
    }
}

pub(crate) fn bind(service: &str, source: &str, target: &str) -> BindMount {
    BindMount {
        service: service.into(),
        source: source.into(),
        target: target.into(),
        read_only: false,
    }
}

pub(crate) fn with_stack(mut h: HostSnapshot, s: StackSnapshot) -> HostSnapshot {
    h.stacks.insert(s.name.clone(), s);
    h
}

pub(crate) const IMAGE_POOL: [&str; 4] = ["nginx:1.27", "postgres:16", "redis:7", "busybox:1"];

/// A random stack named `name`: sizes in steps of 100 MiB so that sums land on the
/// factor boundaries often, a few ports and images from small pools.
pub(crate) fn arb_stack(name: String) -> impl Strategy<Value = StackSnapshot> {
    (
        proptest::option::weighted(0.9, 0u64..30),
        prop::collection::vec(proptest::option::weighted(0.9, 0u64..30), 0..3),
        prop::collection::btree_set(8000u16..8012, 0..3),
        prop::collection::btree_set(0usize..IMAGE_POOL.len(), 0..3),
        0usize..3,
    )
        .prop_map(move |(mem, vols, ports, imgs, binds)| StackSnapshot {
            name: name.clone(),
            services: vec!["app".into()],
            images: imgs
                .into_iter()
                .map(|i| image(IMAGE_POOL[i], (i as u64 + 1) * 100 * MIB))
                .collect(),
            published_ports: ports.into_iter().map(PortKey::tcp).collect(),
            volumes: vols
                .into_iter()
                .enumerate()
                .map(|(i, b)| VolumeUsage {
                    name: format!("{name}_v{i}"),
                    bytes: b.map(|b| b * 100 * MIB),
                    labels: BTreeMap::new(),
                })
                .collect(),
            bind_mounts: (0..binds)
                .map(|i| bind("app", &format!("/srv/{name}/{i}"), &format!("/data/{i}")))
                .collect(),
            memory_used: mem.map(|m| m * 100 * MIB),
            running: true,
            container_names: vec![],
        })
}

/// A random host named `id`, with resources in steps of 100 MiB, mostly x86_64 and API
/// 1.47, and random stacks from `stack_names`.
pub(crate) fn arb_host(
    id: String,
    stack_names: Vec<String>,
) -> impl Strategy<Value = HostSnapshot> {
    let stacks: Vec<_> = stack_names
        .into_iter()
        .map(|n| proptest::option::weighted(0.8, arb_stack(n)))
        .collect();
    (
        proptest::bool::weighted(0.85),
        (0u64..40, 0u64..80, 0u64..40, 0u64..150),
        prop_oneof![
            8 => Just("x86_64"),
            1 => Just("amd64"),
            1 => Just("aarch64"),
            1 => Just(""),
        ],
        prop_oneof![
            8 => Just("1.47"),
            1 => Just("1.47.0"),
            1 => Just("1.41"),
            1 => Just("1.9"),
            1 => Just("x"),
        ],
        prop::collection::btree_set(8000u16..8012, 0..3),
        prop::collection::btree_set(0usize..IMAGE_POOL.len(), 0..4),
        stacks,
        prop::collection::btree_set("[a-c]_v[0-2]", 0..2),
    )
        .prop_map(
            move |(online, (mu, mf, du, df), arch, api, ports, imgs, stacks, vols)| {
                let mut h = host(&id);
                h.online = online;
                h.memory_used = mu * 100 * MIB;
                h.memory_total = (mu + mf) * 100 * MIB;
                h.disk_used = du * 100 * MIB;
                h.disk_total = (du + df) * 100 * MIB;
                h.arch = arch.into();
                h.docker_api_version = api.into();
                h.ports_in_use = ports
                    .into_iter()
                    .map(|p| PortKey {
                        port: p,
                        protocol: Protocol::Tcp,
                    })
                    .collect();
                h.images = imgs.into_iter().map(|i| IMAGE_POOL[i].to_owned()).collect();
                h.stacks = stacks
                    .into_iter()
                    .flatten()
                    .map(|s| (s.name.clone(), s))
                    .collect();
                h.volumes = vols;
                h
            },
        )
}
