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

/// A volume export to make: which volume, from which byte of its stream, in which coding.
///
/// Built with [`ExportRequest::new`] and its setters, so a transfer feature adds a field here,
/// not methods to [`HostRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportRequest {
    /// The named volume.
    pub volume: String,
    /// Leave out the first bytes of the plain stream: the stream starts at this byte. They are
    /// still read, so the manifest covers the whole volume; the stream is the same bytes each
    /// time while the volume does not change. `None`: the whole stream.
    pub from: Option<u64>,
    /// The coding asked for; a host that cannot code it so exports plain, and the export says
    /// which coding it is in ([`VolumeExport::coding`]).
    pub coding: StreamCoding,
}

impl ExportRequest {
    /// The whole plain stream of `volume`.
    pub fn new(volume: impl Into<String>) -> Self {
        ExportRequest {
            volume: volume.into(),
            from: None,
            coding: StreamCoding::Plain,
        }
    }

    /// The stream from byte `offset` on (`None`: the whole stream).
    pub fn from_byte(mut self, offset: Option<u64>) -> Self {
        self.from = offset;
        self
    }

    /// Coded as `coding` when the host can.
    pub fn coded(mut self, coding: StreamCoding) -> Self {
        self.coding = coding;
        self
    }

    /// For a host that exports only whole streams: the error it answers a request from a
    /// resume point with ([`RuntimeErrorKind::Engine`]). The coding asked for needs no check:
    /// such a host exports plain and says so.
    pub fn whole_only(&self, host: &HostId) -> Result<(), RuntimeError> {
        match self.from {
            None => Ok(()),
            Some(_) => Err(RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!(
                    "host {host} cannot export volume {} from a resume point",
                    self.volume
                ),
            )),
        }
    }
}

/// A volume import to make: into which volume, going on from which byte, from which coding.
///
/// Built with [`ImportRequest::new`] and its setters, so a transfer feature adds a field here,
/// not methods to [`HostRuntime`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportRequest {
    /// The volume to create (or empty, if it exists) and fill.
    pub target: VolumeTarget,
    /// Go on with the import of the volume that waits at this byte of the plain stream
    /// ([`HostResume::import_resume_point`]): the stream given is the rest from that byte on.
    /// Refused ([`RuntimeErrorKind::Integrity`]) when no import waits there at that offset;
    /// nothing changes then. `None`: a fresh import, which drops an import waiting there.
    pub resume_at: Option<u64>,
    /// How the stream given is coded. A coding the host does not take
    /// ([`HostRuntime::stream_codings`]) is refused ([`RuntimeErrorKind::Integrity`]) before
    /// anything changes.
    pub coding: StreamCoding,
}

impl ImportRequest {
    /// A fresh import of a plain stream into `target`.
    pub fn new(target: VolumeTarget) -> Self {
        ImportRequest {
            target,
            resume_at: None,
            coding: StreamCoding::Plain,
        }
    }

    /// Going on with the import that waits at byte `offset` (`None`: a fresh import).
    pub fn resume_at(mut self, offset: Option<u64>) -> Self {
        self.resume_at = offset;
        self
    }

    /// From a stream coded as `coding`.
    pub fn coded(mut self, coding: StreamCoding) -> Self {
        self.coding = coding;
        self
    }

    /// The error a host answers a request beyond what it takes: a stream coded in something
    /// other than plain or `codings`, or (unless it `resumes`) a resume point. Both are
    /// [`RuntimeErrorKind::Integrity`]; the coding is checked first.
    pub fn check(
        &self,
        host: &HostId,
        codings: &[StreamCoding],
        resumes: bool,
    ) -> Result<(), RuntimeError> {
        let coding = self.coding;
        if coding != StreamCoding::Plain && !codings.contains(&coding) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!(
                    "host {host} cannot import volume {} from a stream coded as {coding}",
                    self.target.name
                ),
            ));
        }
        if self.resume_at.is_some() && !resumes {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Integrity,
                format!(
                    "host {host} cannot resume the import of volume {}",
                    self.target.name
                ),
            ));
        }
        Ok(())
    }
}

/// One Docker host, local or remote. Every method is idempotent unless it says otherwise.
///
/// What every host does is a method here; what only some hosts can do is a capability a caller
/// asks for before it acts: [`HostRuntime::events`], [`HostRuntime::projects`],
/// [`HostRuntime::releases`], [`HostRuntime::resume`] answer `None` on a host without that
/// power (the defaults), and [`HostRuntime::stream_codings`] names the codings it takes. The
/// errors a caller answers in place of a missing power are in [`cannot`].
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

    /// Export a named volume as a tar stream, as `request` says; the manifest is computed
    /// while it streams. A host that cannot start at a resume point refuses one
    /// ([`ExportRequest::whole_only`]).
    async fn export_volume(&self, request: &ExportRequest) -> Result<VolumeExport, RuntimeError>;
    /// Create the volume (or empty it, if it exists) and fill it from a tar stream, as
    /// `request` says (refusing what it cannot take: [`ImportRequest::check`]). Refuses a
    /// hostile stream before writing anything outside the volume. `progress` is told the bytes
    /// of the plain stream taken in by this call. Returns the manifest of what the volume
    /// holds afterwards.
    async fn import_volume(
        &self,
        request: &ImportRequest,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError>;
    /// Remove a named volume. Removing a missing volume is not an error.
    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError>;

    /// The codings besides [`StreamCoding::Plain`] this host can export a volume's stream in
    /// and import one from ([`ExportRequest::coding`], [`ImportRequest::coding`]), preferred
    /// first. Default: none.
    fn stream_codings(&self) -> &[StreamCoding] {
        &[]
    }

    /// Imports whose stream broke off and that wait to be resumed, when this host keeps them.
    /// Default: none (a volume is then always sent whole).
    fn resume(&self) -> Option<&dyn HostResume> {
        None
    }

    /// The host's events as they happen, when it reports them. Default: none
    /// ([`cannot::events`]).
    fn events(&self) -> Option<&dyn HostEvents> {
        None
    }

    /// The Compose projects on the host (also those dockmesh did not start), when it can find
    /// them. Default: none ([`cannot::list_projects`], [`cannot::adopt_project`]).
    fn projects(&self) -> Option<&dyn HostProjects> {
        None
    }

    /// Releases: resolving a stack's files without deploying them and fetching images, when
    /// the host can. Default: none ([`cannot::resolve_release`], [`cannot::ensure_images`]).
    fn releases(&self) -> Option<&dyn HostReleases> {
        None
    }
}

/// A host that keeps an import whose stream broke off, to go on with it
/// ([`ImportRequest::resume_at`]).
#[async_trait]
pub trait HostResume: Send + Sync {
    /// Where an import of `volume` whose stream broke off can go on: how many bytes of the
    /// stream it has taken in (they need not be sent again). `None` when no import waits
    /// there; the volume is then sent whole. A fresh import of the volume drops a waiting
    /// import.
    async fn import_resume_point(&self, volume: &str) -> Result<Option<u64>, RuntimeError>;
}

/// A host that reports what happens to its containers.
#[async_trait]
pub trait HostEvents: Send + Sync {
    /// Follow what happens to the containers of Compose projects on the host from now on
    /// (nothing from before). The stream ends, or yields an error, when the engine or the
    /// connection to the host goes; a caller that keeps watching calls again.
    async fn follow_events(&self) -> Result<EventStream, RuntimeError>;
}

/// A host that finds the Compose projects it runs and adopts them.
#[async_trait]
pub trait HostProjects: Send + Sync {
    /// The Compose projects on the host, found by their containers' labels (also those
    /// dockmesh did not start).
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>, RuntimeError>;

    /// Adopt a Compose project that runs on the host: take its files (`given`, or read from
    /// where its labels record them), check that they describe what runs, and keep them as
    /// the stack's files. No container is stopped, recreated or renamed.
    async fn adopt_project(
        &self,
        name: &str,
        given: Option<&StackFiles>,
    ) -> Result<AdoptReport, RuntimeError>;
}

/// A host that resolves releases and fetches images.
#[async_trait]
pub trait HostReleases: Send + Sync {
    /// Resolve a stack's files as this host would deploy them, changing nothing: each
    /// service's shape (image, and its id when the host has it; environment, ports, mounts,
    /// replicas; a digest of the whole definition), for a release diff. Invalid files are an
    /// [`RuntimeErrorKind::InvalidStack`] error naming the problem.
    async fn resolve_release(&self, files: &StackFiles) -> Result<Vec<ServiceShape>, RuntimeError>;

    /// Make sure every image in `images` is on the host, pulling the missing ones when a
    /// registry answers. The error ([`RuntimeErrorKind::NotFound`]) names every image still
    /// missing; nothing else changes.
    async fn ensure_images(&self, images: &[String]) -> Result<(), RuntimeError>;
}

/// The errors a caller answers when a host lacks the power it needed (its capability is
/// `None`): [`RuntimeErrorKind::Engine`], naming the host and what it cannot do.
pub mod cannot {
    use super::{HostId, RuntimeError, RuntimeErrorKind};

    fn engine(message: String) -> RuntimeError {
        RuntimeError::new(RuntimeErrorKind::Engine, message)
    }

    /// The host does not report events ([`super::HostRuntime::events`]).
    pub fn events(host: &HostId) -> RuntimeError {
        engine(format!("host {host} does not report events"))
    }

    /// The host cannot list its Compose projects ([`super::HostRuntime::projects`]).
    pub fn list_projects(host: &HostId) -> RuntimeError {
        engine(format!("host {host} cannot list Compose projects"))
    }

    /// The host cannot adopt project `name` ([`super::HostRuntime::projects`]).
    pub fn adopt_project(host: &HostId, name: &str) -> RuntimeError {
        engine(format!("host {host} cannot adopt project {name}"))
    }

    /// The host cannot resolve a stack's release ([`super::HostRuntime::releases`]).
    pub fn resolve_release(host: &HostId, stack: &str) -> RuntimeError {
        engine(format!(
            "host {host} cannot resolve the release of stack {stack}"
        ))
    }

    /// The host cannot fetch images ([`super::HostRuntime::releases`]).
    pub fn ensure_images(host: &HostId, images: &[String]) -> RuntimeError {
        engine(format!(
            "host {host} cannot fetch images ({})",
            images.join(", ")
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

    fn target(name: &str) -> VolumeTarget {
        VolumeTarget {
            name: name.into(),
            labels: BTreeMap::new(),
            expected_bytes: None,
        }
    }

    #[test]
    fn a_host_that_exports_whole_streams_refuses_a_resume_point() {
        let h = HostId::from("h");
        let check = |req: ExportRequest, want: Option<&str>| {
            let got = req.whole_only(&h).err();
            if let Some(e) = &got {
                assert_eq!(e.kind, RuntimeErrorKind::Engine);
            }
            assert_eq!(got.map(|e| e.message).as_deref(), want, "{req:?}");
        };
        check(ExportRequest::new("v"), None);
        check(ExportRequest::new("v").coded(StreamCoding::Zstd), None);
        check(ExportRequest::new("v").from_byte(None), None);
        let from = Some("host h cannot export volume v from a resume point");
        check(ExportRequest::new("v").from_byte(Some(0)), from);
        check(ExportRequest::new("v").from_byte(Some(5)), from);
    }

    #[test]
    fn an_import_beyond_what_a_host_takes_is_refused_coding_first() {
        use StreamCoding::*;
        let h = HostId::from("h");
        let coded = Some("host h cannot import volume v from a stream coded as zstd");
        let resume = Some("host h cannot resume the import of volume v");
        let check = |coding, resume_at, codings: &[StreamCoding], resumes, want: Option<&str>| {
            let req = ImportRequest::new(target("v"))
                .coded(coding)
                .resume_at(resume_at);
            let got = req.check(&h, codings, resumes).err();
            if let Some(e) = &got {
                assert_eq!(e.kind, RuntimeErrorKind::Integrity);
            }
            assert_eq!(got.map(|e| e.message).as_deref(), want, "{req:?}");
        };
        check(Plain, None, &[], false, None);
        check(Plain, None, &[Zstd], true, None);
        check(Zstd, None, &[Zstd], false, None);
        check(Zstd, None, &[], true, coded);
        check(Zstd, Some(3), &[], false, coded);
        check(Plain, Some(3), &[], false, resume);
        check(Zstd, Some(3), &[Zstd], false, resume);
        check(Plain, Some(0), &[Zstd], true, None);
        check(Zstd, Some(3), &[Zstd], true, None);
    }

    #[test]
    fn requests_start_whole_and_plain() {
        let e = ExportRequest::new("v");
        assert_eq!(
            (e.volume.as_str(), e.from, e.coding),
            ("v", None, StreamCoding::Plain)
        );
        let i = ImportRequest::new(target("v"));
        assert_eq!((i.resume_at, i.coding), (None, StreamCoding::Plain));
        assert_eq!(i.target, target("v"));
    }

    #[test]
    fn the_errors_of_a_missing_power_name_the_host_and_what_it_cannot_do() {
        let h = HostId::from("h");
        let check = |e: RuntimeError, want: &str| {
            assert_eq!(e.kind, RuntimeErrorKind::Engine);
            assert_eq!(e.message, want);
        };
        check(cannot::events(&h), "host h does not report events");
        check(
            cannot::list_projects(&h),
            "host h cannot list Compose projects",
        );
        check(
            cannot::adopt_project(&h, "p"),
            "host h cannot adopt project p",
        );
        check(
            cannot::resolve_release(&h, "s"),
            "host h cannot resolve the release of stack s",
        );
        check(
            cannot::ensure_images(&h, &["a".into(), "b".into()]),
            "host h cannot fetch images (a, b)",
        );
    }

    /// A host with only the required methods: every power is the trait's default. It exports
    /// plain whatever is asked, and refuses what it cannot take as [`ImportRequest::check`]
    /// says (it resumes: the fake under it keeps cut imports).
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
        async fn export_volume(&self, r: &ExportRequest) -> Result<VolumeExport, RuntimeError> {
            self.0
                .export_volume(&r.clone().coded(StreamCoding::Plain))
                .await
        }
        async fn import_volume(
            &self,
            r: &ImportRequest,
            data: ByteStream,
            progress: Progress,
        ) -> Result<VolumeManifest, RuntimeError> {
            r.check(self.host_id(), self.stream_codings(), true)?;
            self.0.import_volume(r, data, progress).await
        }
        async fn remove_volume(&self, v: &str) -> Result<(), RuntimeError> {
            self.0.remove_volume(v).await
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

    fn into(name: &str) -> ImportRequest {
        ImportRequest::new(target(name))
    }

    fn one(data: &'static [u8]) -> ByteStream {
        use futures_util::StreamExt;
        futures_util::stream::iter(vec![Ok(Bytes::from_static(data))]).boxed()
    }

    #[tokio::test]
    async fn a_host_by_default_takes_and_gives_only_plain_streams() {
        let host = plain_host();
        assert!(host.stream_codings().is_empty());
        assert!(host.resume().is_none());
        assert!(host.events().is_none());
        assert!(host.projects().is_none());
        assert!(host.releases().is_none());
        // Asked for zstd, it exports plain and says so; from an offset, from there.
        let export = host
            .export_volume(&ExportRequest::new("s_data").coded(StreamCoding::Zstd))
            .await
            .unwrap();
        assert_eq!(export.coding, StreamCoding::Plain);
        assert_eq!(bytes_of(export.stream).await, DATA);
        let export = host
            .export_volume(&ExportRequest::new("s_data").from_byte(Some(4)))
            .await
            .unwrap();
        assert_eq!(bytes_of(export.stream).await, &DATA[4..]);

        // A coded stream is refused before anything changes; a plain one is imported.
        let err = host
            .import_volume(
                &into("v").coded(StreamCoding::Zstd),
                one(DATA),
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
            .import_volume(
                &into("v"),
                one(DATA),
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
            .import_volume(&into("w"), one(long), no_progress())
            .await
            .unwrap_err();
        assert_eq!(cut.kind, RuntimeErrorKind::Unreachable);
        let at = crate::testing::CUT_AFTER as u64;
        host.import_volume(
            &into("w").resume_at(Some(at)),
            one(&long[crate::testing::CUT_AFTER..]),
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
