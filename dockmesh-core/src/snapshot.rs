//! Point-in-time views of a host and of the stacks on it, as a [`crate::ports::HostRuntime`]
//! reports them. Pre-flight and the drain planner decide over these values only.

use crate::types::HostId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A published host port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortKey {
    /// Port number on the host.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
}

impl PortKey {
    /// A TCP port.
    pub fn tcp(port: u16) -> Self {
        PortKey {
            port,
            protocol: Protocol::Tcp,
        }
    }
}

impl fmt::Display for PortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{}/{}", self.port, p)
    }
}

/// An image a stack uses, with its size on the source host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUsage {
    /// The image reference as written in the compose file (e.g. `nginx:1.27`).
    pub reference: String,
    /// Size of the image in bytes, 0 when unknown.
    pub bytes: u64,
}

/// A named volume and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeUsage {
    /// The engine's volume name (e.g. `shop_db`).
    pub name: String,
    /// Bytes used, when the engine reports it.
    pub bytes: Option<u64>,
    /// The volume's labels (Compose labels are carried to the target).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A bind mount: a host path mounted into a container. Bind mounts are not moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// The service that mounts it.
    pub service: String,
    /// Path on the host.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a host knows of one stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackSnapshot {
    /// The stack (Compose project) name.
    pub name: String,
    /// Service names.
    pub services: Vec<String>,
    /// Images used by the services.
    pub images: Vec<ImageUsage>,
    /// Host ports the stack publishes.
    pub published_ports: Vec<PortKey>,
    /// Named volumes of the stack.
    pub volumes: Vec<VolumeUsage>,
    /// Bind mounts of the stack.
    pub bind_mounts: Vec<BindMount>,
    /// Memory used by the stack's containers, in bytes (`None` when metrics are unavailable).
    pub memory_used: Option<u64>,
    /// Whether any container of the stack is running.
    pub running: bool,
    /// Names of the stack's containers (fixed ones by `container_name`, or
    /// `<project>-<service>-1`).
    #[serde(default)]
    pub container_names: Vec<String>,
}

impl StackSnapshot {
    /// Total bytes of the stack's named volumes (unknown sizes count as 0).
    pub fn volume_bytes(&self) -> u64 {
        self.volumes.iter().map(|v| v.bytes.unwrap_or(0)).sum()
    }
}

/// What a host reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// The host.
    pub host: HostId,
    /// Whether the host answered.
    pub online: bool,
    /// When the snapshot was taken.
    pub taken_at: Timestamp,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Used memory in bytes.
    pub memory_used: u64,
    /// Size of the filesystem holding the engine's data, in bytes.
    pub disk_total: u64,
    /// Used bytes on that filesystem.
    pub disk_used: u64,
    /// CPU architecture as the engine names it (`x86_64`, `aarch64`, …).
    pub arch: String,
    /// Engine version (e.g. `28.2.2`).
    pub docker_version: String,
    /// Engine API version (e.g. `1.47`).
    pub docker_api_version: String,
    /// Host ports already published by any container.
    pub ports_in_use: BTreeSet<PortKey>,
    /// Image references present on the host.
    pub images: BTreeSet<String>,
    /// Stacks deployed on the host, by name.
    pub stacks: BTreeMap<String, StackSnapshot>,
    /// Names of every volume on the host.
    #[serde(default)]
    pub volumes: BTreeSet<String>,
    /// Names of every container on the host.
    #[serde(default)]
    pub container_names: BTreeSet<String>,
    /// How many containers run on the host, when the host says (an older agent does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers_running: Option<u64>,
}

impl HostSnapshot {
    /// A snapshot of a host that did not answer.
    pub fn offline(host: HostId, taken_at: Timestamp) -> Self {
        HostSnapshot {
            host,
            online: false,
            taken_at,
            memory_total: 0,
            memory_used: 0,
            disk_total: 0,
            disk_used: 0,
            arch: String::new(),
            docker_version: String::new(),
            docker_api_version: String::new(),
            ports_in_use: BTreeSet::new(),
            images: BTreeSet::new(),
            stacks: BTreeMap::new(),
            volumes: BTreeSet::new(),
            container_names: BTreeSet::new(),
            containers_running: None,
        }
    }

    /// Free memory in bytes.
    pub fn memory_free(&self) -> u64 {
        self.memory_total.saturating_sub(self.memory_used)
    }

    /// Free disk in bytes.
    pub fn disk_free(&self) -> u64 {
        self.disk_total.saturating_sub(self.disk_used)
    }
}
