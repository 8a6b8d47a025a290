//! One Docker host as core sees it: [`HostRuntime`] and the types its methods take and give.

use crate::manifest::VolumeManifest;
use crate::release::ServiceShape;
use crate::snapshot::HostSnapshot;
use crate::types::{HostId, StackFiles};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What kind of problem a [`HostRuntime`] ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RuntimeErrorKind {
    /// The host or its engine cannot be reached.
    Unreachable,
    /// A stack, volume or image does not exist.
    NotFound,
    /// The compose file or its `.env` is invalid or uses something unsupported.
    InvalidStack,
    /// Something with that name already exists, or a port is taken.
    Conflict,
    /// A service did not become healthy.
    Unhealthy,
    /// Data failed verification, or a tar stream was refused.
    Integrity,
    /// Anything else the engine reported.
    Engine,
}

/// An error of a [`HostRuntime`]: what kind, and what happened in words.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    /// What kind of error.
    pub kind: RuntimeErrorKind,
    /// What happened, for a person.
    pub message: String,
    /// The underlying error.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl RuntimeError {
    /// An error of `kind` with a message.
    pub fn new(kind: RuntimeErrorKind, message: impl Into<String>) -> Self {
        RuntimeError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// State of one container of a stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Container name.
    pub name: String,
    /// The service it belongs to.
    pub service: String,
    /// Engine state (`created`, `running`, `exited`, …).
    pub state: String,
    /// Health (`healthy`, `unhealthy`, `starting`) when the service has a healthcheck.
    pub health: Option<String>,
}

/// State of a stack on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackStatus {
    /// One entry per container.
    pub containers: Vec<ContainerStatus>,
}

impl StackStatus {
    /// True when at least one container exists and every one is running.
    pub fn all_running(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(|c| c.state == "running")
    }
    /// True when any container is running.
    pub fn any_running(&self) -> bool {
        self.containers.iter().any(|c| c.state == "running")
    }
}

/// What a deploy changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployReport {
    /// Services whose containers were created.
    pub created: Vec<String>,
    /// Services whose containers were recreated because their definition changed.
    pub recreated: Vec<String>,
    /// Services left as they were.
    pub unchanged: Vec<String>,
}

/// Health of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// The service.
    pub service: String,
    /// Healthy (or running and stable, without a healthcheck).
    pub healthy: bool,
    /// What was seen, in words.
    pub detail: String,
}

/// Health of a stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// One entry per service.
    pub services: Vec<ServiceHealth>,
}

impl HealthReport {
    /// True when every service is healthy (and there is at least one).
    pub fn healthy(&self) -> bool {
        !self.services.is_empty() && self.services.iter().all(|s| s.healthy)
    }
    /// The unhealthy services, `service: detail; …`.
    pub fn failure_summary(&self) -> String {
        self.services
            .iter()
            .filter(|s| !s.healthy)
            .map(|s| format!("{}: {}", s.service, s.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A stream of tar bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, RuntimeError>>;

/// Told the number of bytes moved so far, as they flow.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// A progress callback that ignores its input.
pub fn no_progress() -> Progress {
    Arc::new(|_| {})
}

/// Where an export leaves the manifest it computed once its stream has been read to the end.
#[derive(Clone, Default)]
pub struct ManifestSlot(Arc<Mutex<Option<Result<VolumeManifest, String>>>>);

impl std::fmt::Debug for ManifestSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManifestSlot")
    }
}

impl ManifestSlot {
    /// Fill the slot (the exporter does this when its stream ends).
    pub fn fill(&self, manifest: Result<VolumeManifest, String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(manifest);
    }
    /// Take the manifest. An error when the stream was not read to the end or the export failed.
    pub fn take(&self) -> Result<VolumeManifest, RuntimeError> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => Err(RuntimeError::new(RuntimeErrorKind::Integrity, e)),
            None => Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                "the export's manifest is not available: its stream was not read to the end",
            )),
        }
    }
}

/// How a volume's tar stream is coded while it travels between two hosts.
///
/// Hosts that can take a coded stream say so ([`HostRuntime::stream_codings`]); the driver
/// asks a source for a coding the target also takes ([`shared_coding`]), so a stream can go
/// from one host to the other without being decoded on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamCoding {
    /// The tar stream itself.
    Plain,
    /// The tar stream compressed with zstd (RFC 8878), in one or more frames.
    Zstd,
}

impl std::fmt::Display for StreamCoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamCoding::Plain => "plain",
            StreamCoding::Zstd => "zstd",
        })
    }
}

/// The coding a stream from a host offering `source` to a host taking `target` travels in: the
/// first of the source's codings the target also takes, else [`StreamCoding::Plain`], which
/// every host takes.
pub fn shared_coding(source: &[StreamCoding], target: &[StreamCoding]) -> StreamCoding {
    source
        .iter()
        .copied()
        .find(|c| target.contains(c))
        .unwrap_or(StreamCoding::Plain)
}

/// A volume export in progress: the tar stream and, once it has been read to the end, the
/// manifest of what it contained.
pub struct VolumeExport {
    /// The tar stream, coded as `coding` says.
    pub stream: ByteStream,
    /// The manifest, filled when the stream ends.
    pub manifest: ManifestSlot,
    /// How `stream` is coded.
    pub coding: StreamCoding,
}

impl VolumeExport {
    /// An export whose stream is the plain tar stream.
    pub fn plain(stream: ByteStream, manifest: ManifestSlot) -> VolumeExport {
        VolumeExport {
            stream,
            manifest,
            coding: StreamCoding::Plain,
        }
    }
}

/// Which volume to import into: its name and the labels it is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTarget {
    /// The volume name.
    pub name: String,
    /// Labels to create it with (Compose's, so `docker compose` recognises it).
    pub labels: BTreeMap<String, String>,
    /// The size the source announced for the volume (its `VolumeUsage::bytes`), when known. An
    /// import refuses a stream whose regular-file content goes over it by more than a margin
    /// (the runtime documents its margin), before the excess reaches the disk. `None`: no bound.
    #[serde(default)]
    pub expected_bytes: Option<u64>,
}

/// Something a host's engine reported about the container of a Compose project, as it
/// happened: a start, an exit (with its code), a kill, an out-of-memory kill, a health change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvent {
    /// When the engine saw it.
    pub at: Timestamp,
    /// The Compose project (stack) of the container.
    pub stack: String,
    /// The service the container runs, when labelled.
    #[serde(default)]
    pub service: Option<String>,
    /// The container's name.
    pub container: String,
    /// What happened, in the engine's words: `start`, `die`, `kill`, `oom`, `stop`, `restart`,
    /// `pause`, `unpause`, `create`, `destroy`, `health_status: healthy` / `unhealthy`.
    pub action: String,
    /// The exit code, for `die`.
    #[serde(default)]
    pub exit_code: Option<i64>,
}

/// A host's events as they happen; it ends when the host's engine or connection goes away.
pub type EventStream = BoxStream<'static, Result<HostEvent, RuntimeError>>;

/// One Docker host, local or remote. Every method is idempotent unless it says otherwise.
#[async_trait]
pub trait HostRuntime: Send + Sync {
    /// The host's id.
    fn host_id(&self) -> &HostId;

    /// What the host looks like now: resources, engine, ports, images, stacks, volumes.
    async fn snapshot(&self) -> Result<HostSnapshot, RuntimeError>;

    /// Store a stack's files on the host (replacing earlier ones).
    async fn write_stack_files(&self, files: &StackFiles) -> Result<(), RuntimeError>;
    /// Read back a stack's files, if the host has them.
    async fn read_stack_files(&self, stack: &str) -> Result<Option<StackFiles>, RuntimeError>;
    /// Remove a stack's files.
    async fn remove_stack_files(&self, stack: &str) -> Result<(), RuntimeError>;

    /// Create or update the stack's containers, networks and volumes and start them. A second
    /// deploy of the same files changes nothing; a changed service is recreated.
    async fn deploy(&self, files: &StackFiles) -> Result<DeployReport, RuntimeError>;
    /// Stop the stack's containers (they are kept).
    async fn stop_stack(&self, stack: &str) -> Result<(), RuntimeError>;
    /// Start the stack's existing containers.
    async fn start_stack(&self, stack: &str) -> Result<(), RuntimeError>;
    /// Remove the stack's containers and networks; its volumes too when `volumes` is true.
    async fn remove_stack(&self, stack: &str, volumes: bool) -> Result<(), RuntimeError>;
    /// State of each container of the stack (empty when it has none).
    async fn stack_status(&self, stack: &str) -> Result<StackStatus, RuntimeError>;
    /// Wait until every service is healthy, or its own budget runs out; the report names each
    /// service that failed and why.
    async fn wait_healthy(&self, stack: &str) -> Result<HealthReport, RuntimeError>;

    /// Export a named volume as a tar stream; the manifest is computed while it streams.
    async fn export_volume(&self, volume: &str) -> Result<VolumeExport, RuntimeError>;
    /// Create the volume (or empty it, if it exists) and fill it from a tar stream. Refuses a
    /// hostile stream before writing anything outside the volume. Returns the manifest of what
    /// the volume holds afterwards.
    async fn import_volume(
        &self,
        volume: &VolumeTarget,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError>;
    /// Remove a named volume. Removing a missing volume is not an error.
    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError>;

    /// Where an import of `volume` whose stream broke off can go on: how many bytes of the
    /// stream it has taken in (they need not be sent again). `None` when no import waits
    /// there; the volume is then sent whole. A fresh [`HostRuntime::import_volume`] of the
    /// volume drops a waiting import. Hosts that cannot resume answer `None`.
    async fn import_resume_point(&self, volume: &str) -> Result<Option<u64>, RuntimeError> {
        let _ = volume;
        Ok(None)
    }

    /// [`HostRuntime::export_volume`] whose stream leaves out its first `offset` bytes. They
    /// are still read, so the manifest covers the whole volume; the export's stream is the
    /// same bytes each time while the volume does not change. Hosts that cannot say so.
    async fn export_volume_from(
        &self,
        volume: &str,
        offset: u64,
    ) -> Result<VolumeExport, RuntimeError> {
        let _ = offset;
        Err(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!(
                "host {} cannot export volume {volume} from a resume point",
                self.host_id()
            ),
        ))
    }

    /// Go on with the import of `volume` that waits at `offset` ([`HostRuntime::import_resume_point`]):
    /// `data` is the stream from that byte on. Returns what the whole import returns: the
    /// manifest of what the volume holds. Refused ([`RuntimeErrorKind::Integrity`]) when no
    /// import waits there at that offset; nothing changes then.
    async fn resume_import(
        &self,
        volume: &VolumeTarget,
        offset: u64,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        let _ = (offset, data, progress);
        Err(RuntimeError::new(
            RuntimeErrorKind::Integrity,
            format!(
                "host {} cannot resume the import of volume {}",
                self.host_id(),
                volume.name
            ),
        ))
    }

    /// The codings besides [`StreamCoding::Plain`] this host can export a volume's stream in
    /// and import one from ([`HostRuntime::export_volume_coded`],
    /// [`HostRuntime::import_volume_coded`]), preferred first. Default: none.
    fn stream_codings(&self) -> &[StreamCoding] {
        &[]
    }

    /// [`HostRuntime::export_volume`] (from byte `offset` of the plain stream when given, as
    /// [`HostRuntime::export_volume_from`]), its stream coded as `coding` when this host can;
    /// the export says which coding it is in, and may be plain whatever was asked.
    async fn export_volume_coded(
        &self,
        volume: &str,
        offset: Option<u64>,
        coding: StreamCoding,
    ) -> Result<VolumeExport, RuntimeError> {
        let _ = coding;
        match offset {
            None => self.export_volume(volume).await,
            Some(offset) => self.export_volume_from(volume, offset).await,
        }
    }

    /// [`HostRuntime::import_volume`] (or, with `resume`, [`HostRuntime::resume_import`] at
    /// that byte of the plain stream) from a stream coded as `coding`. `progress` is told the
    /// bytes of the plain stream taken in. A coding this host does not take is refused
    /// ([`RuntimeErrorKind::Integrity`]) before anything changes.
    async fn import_volume_coded(
        &self,
        volume: &VolumeTarget,
        resume: Option<u64>,
        data: ByteStream,
        coding: StreamCoding,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        if coding != StreamCoding::Plain {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!(
                    "host {} cannot import volume {} from a stream coded as {coding}",
                    self.host_id(),
                    volume.name
                ),
            ));
        }
        match resume {
            None => self.import_volume(volume, data, progress).await,
            Some(offset) => self.resume_import(volume, offset, data, progress).await,
        }
    }

    /// Resolve a stack's files as this host would deploy them, changing nothing: each
    /// service's shape (image, and its id when the host has it; environment, ports, mounts,
    /// replicas; a digest of the whole definition), for a release diff. Invalid files are an
    /// [`RuntimeErrorKind::InvalidStack`] error naming the problem. Hosts that cannot tell say so.
    async fn resolve_release(&self, files: &StackFiles) -> Result<Vec<ServiceShape>, RuntimeError> {
        Err(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!(
                "host {} cannot resolve the release of stack {}",
                self.host_id(),
                files.name
            ),
        ))
    }

    /// Make sure every image in `images` is on the host, pulling the missing ones when a
    /// registry answers. The error ([`RuntimeErrorKind::NotFound`]) names every image still
    /// missing; nothing else changes.
    async fn ensure_images(&self, images: &[String]) -> Result<(), RuntimeError> {
        Err(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!(
                "host {} cannot fetch images ({})",
                self.host_id(),
                images.join(", ")
            ),
        ))
    }

    /// The Compose projects on the host, found by their containers' labels (also those
    /// dockmesh did not start). Hosts that cannot tell say so with an error.
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>, RuntimeError> {
        Err(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("host {} cannot list Compose projects", self.host_id()),
        ))
    }

    /// Adopt a Compose project that runs on the host: take its files (`given`, or read from
    /// where its labels record them), check that they describe what runs, and keep them as
    /// the stack's files. No container is stopped, recreated or renamed.
    async fn adopt_project(
        &self,
        name: &str,
        given: Option<&StackFiles>,
    ) -> Result<AdoptReport, RuntimeError> {
        let _ = given;
        Err(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("host {} cannot adopt project {name}", self.host_id()),
        ))
    }

    /// Follow what happens to the containers of Compose projects on the host from now on
    /// (nothing from before). The stream ends, or yields an error, when the engine or the
    /// connection to the host goes; a caller that keeps watching calls again. Hosts that cannot
    /// report events say so.
    async fn events(&self) -> Result<EventStream, RuntimeError> {
        Err(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("host {} does not report events", self.host_id()),
        ))
    }
}

/// A Compose project found on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectInfo {
    /// The project name.
    pub name: String,
    /// Its services.
    pub services: Vec<String>,
    /// Whether every container runs.
    pub running: bool,
    /// The compose files its containers record.
    pub config_files: Vec<String>,
}

/// What adopting a project found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdoptReport {
    /// The files, now the stack's.
    pub files: StackFiles,
    /// Each service's container id (unchanged).
    pub containers: BTreeMap<String, String>,
    /// Services whose container a later deploy recreates under dockmesh's name.
    pub renamed_on_next_deploy: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn coding() -> impl Strategy<Value = StreamCoding> {
        prop_oneof![Just(StreamCoding::Plain), Just(StreamCoding::Zstd)]
    }

    #[test]
    fn the_shared_coding_is_the_sources_first_the_target_takes() {
        use StreamCoding::*;
        assert_eq!(shared_coding(&[Zstd], &[Zstd]), Zstd);
        assert_eq!(shared_coding(&[Zstd], &[]), Plain);
        assert_eq!(shared_coding(&[], &[Zstd]), Plain);
        assert_eq!(shared_coding(&[Plain, Zstd], &[Zstd, Plain]), Plain);
        assert_eq!(shared_coding(&[Zstd, Plain], &[Plain, Zstd]), Zstd);
    }

    /// A host with only the required methods (and resuming): every coded method is the
    /// trait's default.
    struct PlainHost(crate::testing::FakeHost);

    #[async_trait]
    impl HostRuntime for PlainHost {
        fn host_id(&self) -> &HostId {
            self.0.host_id()
        }
        async fn snapshot(&self) -> Result<HostSnapshot, RuntimeError> {
            self.0.snapshot().await
        }
        async fn write_stack_files(&self, f: &StackFiles) -> Result<(), RuntimeError> {
            self.0.write_stack_files(f).await
        }
        async fn read_stack_files(&self, s: &str) -> Result<Option<StackFiles>, RuntimeError> {
            self.0.read_stack_files(s).await
        }
        async fn remove_stack_files(&self, s: &str) -> Result<(), RuntimeError> {
            self.0.remove_stack_files(s).await
        }
        async fn deploy(&self, f: &StackFiles) -> Result<DeployReport, RuntimeError> {
            self.0.deploy(f).await
        }
        async fn stop_stack(&self, s: &str) -> Result<(), RuntimeError> {
            self.0.stop_stack(s).await
        }
        async fn start_stack(&self, s: &str) -> Result<(), RuntimeError> {
            self.0.start_stack(s).await
        }
        async fn remove_stack(&self, s: &str, volumes: bool) -> Result<(), RuntimeError> {
            self.0.remove_stack(s, volumes).await
        }
        async fn stack_status(&self, s: &str) -> Result<StackStatus, RuntimeError> {
            self.0.stack_status(s).await
        }
        async fn wait_healthy(&self, s: &str) -> Result<HealthReport, RuntimeError> {
            self.0.wait_healthy(s).await
        }
        async fn export_volume(&self, v: &str) -> Result<VolumeExport, RuntimeError> {
            self.0.export_volume(v).await
        }
        async fn import_volume(
            &self,
            v: &VolumeTarget,
            data: ByteStream,
            progress: Progress,
        ) -> Result<VolumeManifest, RuntimeError> {
            self.0.import_volume(v, data, progress).await
        }
        async fn remove_volume(&self, v: &str) -> Result<(), RuntimeError> {
            self.0.remove_volume(v).await
        }
        async fn export_volume_from(
            &self,
            v: &str,
            offset: u64,
        ) -> Result<VolumeExport, RuntimeError> {
            self.0.export_volume_from(v, offset).await
        }
        async fn resume_import(
            &self,
            v: &VolumeTarget,
            offset: u64,
            data: ByteStream,
            progress: Progress,
        ) -> Result<VolumeManifest, RuntimeError> {
            self.0.resume_import(v, offset, data, progress).await
        }
    }

    const DATA: &[u8] = b"the volume's stream, every byte of it";

    fn plain_host() -> PlainHost {
        let host = crate::testing::FakeHost::new("h");
        host.seed_stack(
            StackFiles {
                name: "s".into(),
                compose: "services: {}".into(),
                env: None,
            },
            &[("s_data", DATA)],
            1 << 20,
        );
        PlainHost(host)
    }

    async fn bytes_of(stream: ByteStream) -> Vec<u8> {
        use futures_util::StreamExt;
        stream.map(|c| c.unwrap().to_vec()).concat().await
    }

    fn into(name: &str) -> VolumeTarget {
        VolumeTarget {
            name: name.into(),
            labels: BTreeMap::new(),
            expected_bytes: None,
        }
    }

    fn one(data: &'static [u8]) -> ByteStream {
        use futures_util::StreamExt;
        futures_util::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed()
    }

    #[tokio::test]
    async fn a_host_by_default_takes_and_gives_only_plain_streams() {
        let host = plain_host();
        assert!(host.stream_codings().is_empty());
        // Asked for zstd, it exports plain and says so; from an offset, from there.
        let export = host
            .export_volume_coded("s_data", None, StreamCoding::Zstd)
            .await
            .unwrap();
        assert_eq!(export.coding, StreamCoding::Plain);
        assert_eq!(bytes_of(export.stream).await, DATA);
        let export = host
            .export_volume_coded("s_data", Some(4), StreamCoding::Plain)
            .await
            .unwrap();
        assert_eq!(bytes_of(export.stream).await, &DATA[4..]);

        // A coded stream is refused before anything changes; a plain one is imported.
        let err = host
            .import_volume_coded(
                &into("v"),
                None,
                one(DATA),
                StreamCoding::Zstd,
                no_progress(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Integrity);
        assert!(err.message.contains("coded as zstd"), "{err}");
        assert_eq!(host.0.volume("v"), None);
        let told = Arc::new(Mutex::new(Vec::new()));
        let seen = told.clone();
        let m = host
            .import_volume_coded(
                &into("v"),
                None,
                one(DATA),
                StreamCoding::Plain,
                Arc::new(move |n| seen.lock().unwrap().push(n)),
            )
            .await
            .unwrap();
        assert_eq!(host.0.volume("v").as_deref(), Some(DATA));
        assert_eq!(m.content_bytes(), DATA.len() as u64);
        assert_eq!(told.lock().unwrap().last(), Some(&(DATA.len() as u64)));

        // With a resume point, the import that waits there goes on.
        host.0.fail(crate::testing::FakeOp::CutImport, 1);
        let long: &'static [u8] =
            Box::leak(vec![7u8; crate::testing::CUT_AFTER + 10].into_boxed_slice());
        let cut = host
            .import_volume_coded(
                &into("w"),
                None,
                one(long),
                StreamCoding::Plain,
                no_progress(),
            )
            .await
            .unwrap_err();
        assert_eq!(cut.kind, RuntimeErrorKind::Unreachable);
        let at = crate::testing::CUT_AFTER as u64;
        host.import_volume_coded(
            &into("w"),
            Some(at),
            one(&long[crate::testing::CUT_AFTER..]),
            StreamCoding::Plain,
            no_progress(),
        )
        .await
        .unwrap();
        assert_eq!(host.0.volume("w").as_deref(), Some(long));
    }

    proptest! {
        #[test]
        fn the_shared_coding_is_one_both_take_and_the_first_such(
            source in proptest::collection::vec(coding(), 0..4),
            target in proptest::collection::vec(coding(), 0..4),
        ) {
            let c = shared_coding(&source, &target);
            let both: Vec<StreamCoding> =
                source.iter().copied().filter(|c| target.contains(c)).collect();
            match both.first() {
                Some(first) => prop_assert_eq!(c, *first),
                None => prop_assert_eq!(c, StreamCoding::Plain),
            }
        }
    }
}
