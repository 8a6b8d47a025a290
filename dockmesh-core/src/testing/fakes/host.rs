//! [`FakeHost`]: an in-memory [`HostRuntime`], with fault injection and a record of calls.

use super::lock;
use crate::manifest::{EntryKind, ManifestEntry, VolumeManifest};
use crate::ports::{
    ByteStream, ContainerStatus, DeployReport, ExportRequest, HealthReport, HostEvents, HostResume,
    HostRuntime, ImportRequest, ManifestSlot, Progress, RuntimeError, RuntimeErrorKind,
    ServiceHealth, StackStatus, StreamCoding, VolumeExport, VolumeTarget,
};
use crate::snapshot::{HostSnapshot, StackSnapshot, VolumeUsage};
use crate::types::{HostId, StackFiles};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// An operation of a [`FakeHost`], for fault injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeOp {
    /// `snapshot`
    Snapshot,
    /// `write_stack_files`
    WriteFiles,
    /// `deploy`
    Deploy,
    /// `stop_stack`
    Stop,
    /// `start_stack`
    Start,
    /// `remove_stack`
    Remove,
    /// `wait_healthy` (fails by reporting unhealthy)
    Health,
    /// `export_volume`
    Export,
    /// `import_volume`
    Import,
    /// `import_volume` succeeds but the stored data is altered (a verification failure)
    CorruptImport,
    /// `remove_volume`
    RemoveVolume,
    /// `import_volume` (fresh or resumed) loses its stream after [`CUT_AFTER`] more bytes: the
    /// call fails as unreachable and the import waits there to be resumed
    CutImport,
    /// `import_resume_point` fails (an engine error: the host cannot tell)
    ResumePoint,
    /// `import_resume_point` fails as unreachable (the host is not back yet)
    ResumePointGone,
}

/// How many bytes an import takes in before a [`FakeOp::CutImport`] cuts it.
pub const CUT_AFTER: usize = 21;

/// What a fake host holds for one stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeStack {
    /// Files written to the host.
    pub files: Option<StackFiles>,
    /// Whether containers exist.
    pub deployed: bool,
    /// Whether they run.
    pub running: bool,
    /// Memory the stack uses when running.
    pub memory: u64,
}

#[derive(Default)]
struct HostInner {
    online: bool,
    stacks: BTreeMap<String, FakeStack>,
    volumes: BTreeMap<String, (BTreeMap<String, String>, Vec<u8>)>,
    faults: BTreeMap<FakeOp, u32>,
    calls: Vec<String>,
    /// Imports whose stream broke off, waiting to be resumed: the bytes taken in.
    parked: BTreeMap<String, Vec<u8>>,
    /// The event streams the next calls of `events` yield, one per call.
    event_streams: std::collections::VecDeque<crate::ports::EventStream>,
    /// What each call of `snapshot` awaits before it answers ([`FakeHost::delay_snapshots`]).
    snapshot_delay: Option<SnapshotDelay>,
}

/// What a fake host's `snapshot` awaits before answering: a fresh future per call (a sleep,
/// or one that never resolves).
pub type SnapshotDelay =
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync>;

/// An in-memory [`HostRuntime`] with fault injection. Volume content is an opaque byte string;
/// its manifest is one file entry holding the content's hash.
pub struct FakeHost {
    id: HostId,
    inner: Mutex<HostInner>,
    snapshot_base: HostSnapshot,
    codings: Vec<StreamCoding>,
    snapshot_calls: AtomicU64,
}

/// A plausible snapshot of an empty online host with 8 GiB memory and 100 GiB disk.
pub fn fake_snapshot(host: &HostId) -> HostSnapshot {
    let mut s = HostSnapshot::offline(host.clone(), Timestamp::UNIX_EPOCH);
    s.online = true;
    s.memory_total = 8 << 30;
    s.memory_used = 1 << 30;
    s.disk_total = 100 << 30;
    s.disk_used = 10 << 30;
    s.arch = "x86_64".into();
    s.docker_version = "28.2.2".into();
    s.docker_api_version = "1.47".into();
    s
}

impl FakeHost {
    /// An online, empty host.
    pub fn new(id: impl Into<HostId>) -> Self {
        let id = id.into();
        FakeHost {
            snapshot_base: fake_snapshot(&id),
            id,
            inner: Mutex::new(HostInner {
                online: true,
                ..Default::default()
            }),
            codings: Vec::new(),
            snapshot_calls: AtomicU64::new(0),
        }
    }

    /// Each later call of `snapshot` first awaits a future `delay` makes (for example a
    /// sleep, or `futures_util::future::pending()` for a host that never answers).
    pub fn delay_snapshots(
        &self,
        delay: impl Fn() -> futures_util::future::BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        lock(&self.inner).snapshot_delay = Some(Arc::new(delay));
    }

    /// How many calls of `snapshot` began so far (also those still waiting on a delay).
    pub fn snapshot_calls(&self) -> u64 {
        self.snapshot_calls.load(Ordering::SeqCst)
    }

    /// The host also exports and imports volume streams in `codings`. The fake's coding of
    /// every one of them is a stand-in (each byte inverted), so a test sees whether a stream
    /// reached the target still coded; each coded export and import is recorded in
    /// [`FakeHost::calls`] (`coded export zstd VOLUME`, `coded import zstd VOLUME`).
    pub fn with_stream_codings(mut self, codings: &[StreamCoding]) -> Self {
        self.codings = codings.to_vec();
        self
    }

    /// The next call of `events` yields `items` and ends (a call with none scripted is
    /// refused as unreachable).
    pub fn script_events(&self, items: Vec<Result<crate::ports::HostEvent, RuntimeError>>) {
        self.script_event_stream(futures_util::stream::iter(items).boxed());
    }

    /// The next call of `events` yields `stream`.
    pub fn script_event_stream(&self, stream: crate::ports::EventStream) {
        lock(&self.inner).event_streams.push_back(stream);
    }

    /// Make the next `times` calls of `op` fail.
    pub fn fail(&self, op: FakeOp, times: u32) {
        lock(&self.inner).faults.insert(op, times);
    }

    /// Take the host off line (every call fails) or bring it back.
    pub fn set_online(&self, online: bool) {
        lock(&self.inner).online = online;
    }

    /// Create a running stack with these volumes (name → content) directly, as if deployed.
    pub fn seed_stack(&self, files: StackFiles, volumes: &[(&str, &[u8])], memory: u64) {
        let mut g = lock(&self.inner);
        for (name, data) in volumes {
            let labels =
                BTreeMap::from([("com.docker.compose.project".to_owned(), files.name.clone())]);
            g.volumes
                .insert((*name).to_owned(), (labels, data.to_vec()));
        }
        g.stacks.insert(
            files.name.clone(),
            FakeStack {
                files: Some(files),
                deployed: true,
                running: true,
                memory,
            },
        );
    }

    /// What the host holds for a stack.
    pub fn stack(&self, name: &str) -> Option<FakeStack> {
        lock(&self.inner).stacks.get(name).cloned()
    }

    /// A volume's content.
    pub fn volume(&self, name: &str) -> Option<Vec<u8>> {
        lock(&self.inner).volumes.get(name).map(|v| v.1.clone())
    }

    /// Names of every volume.
    pub fn volume_names(&self) -> Vec<String> {
        lock(&self.inner).volumes.keys().cloned().collect()
    }

    /// Every call made so far (`op stack-or-volume`).
    pub fn calls(&self) -> Vec<String> {
        lock(&self.inner).calls.clone()
    }

    /// True when the host holds nothing of `stack`: no containers, files or volumes labelled with it.
    pub fn holds_nothing_of(&self, stack: &str) -> bool {
        let g = lock(&self.inner);
        let s = g.stacks.get(stack);
        s.is_none_or(|s| !s.deployed && s.files.is_none())
            && !g.volumes.values().any(|(labels, _)| {
                labels.get("com.docker.compose.project").map(String::as_str) == Some(stack)
            })
    }

    fn enter(&self, op: FakeOp, what: &str) -> Result<MutexGuard<'_, HostInner>, RuntimeError> {
        let mut g = lock(&self.inner);
        g.calls.push(format!("{op:?} {what}"));
        if !g.online {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!("host {} is offline", self.id),
            ));
        }
        if let Some(n) = g.faults.get_mut(&op)
            && *n > 0
        {
            *n -= 1;
            return Err(RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!("injected fault in {op:?} on {}", self.id),
            ));
        }
        Ok(g)
    }

    /// Read an import's stream on top of `buf` (what it took in before), cutting it when a
    /// [`FakeOp::CutImport`] is injected; store the volume at the end.
    async fn take_in(
        &self,
        volume: &VolumeTarget,
        mut buf: Vec<u8>,
        mut data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        let start = buf.len();
        let cut = Self::take_fault(&mut lock(&self.inner), FakeOp::CutImport);
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            if cut && buf.len() - start + chunk.len() > CUT_AFTER {
                let keep = CUT_AFTER - (buf.len() - start);
                buf.extend_from_slice(&chunk[..keep]);
                lock(&self.inner).parked.insert(volume.name.clone(), buf);
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Unreachable,
                    format!(
                        "host {} is unreachable: the import's stream was cut (injected)",
                        self.id
                    ),
                ));
            }
            buf.extend_from_slice(&chunk);
            progress((buf.len() - start) as u64);
        }
        let mut g = lock(&self.inner);
        if Self::take_fault(&mut g, FakeOp::CorruptImport) {
            buf.push(b'!');
        }
        let m = manifest_of(&buf);
        g.volumes
            .insert(volume.name.clone(), (volume.labels.clone(), buf));
        Ok(m)
    }

    /// The whole plain stream of `volume`, in chunks of 7 bytes.
    fn export_whole(&self, volume: &str) -> Result<VolumeExport, RuntimeError> {
        let g = self.enter(FakeOp::Export, volume)?;
        let Some((_, data)) = g.volumes.get(volume) else {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("volume {volume} not found on {}", self.id),
            ));
        };
        let data = data.clone();
        let slot = ManifestSlot::default();
        slot.fill(Ok(manifest_of(&data)));
        let chunks: Vec<Result<Bytes, RuntimeError>> = data
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(VolumeExport::plain(
            futures_util::stream::iter(chunks).boxed(),
            slot,
        ))
    }

    fn take_fault(g: &mut HostInner, op: FakeOp) -> bool {
        match g.faults.get_mut(&op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}

/// The fake's stand-in for every coding: each byte inverted (its own inverse).
fn fake_code(stream: ByteStream) -> ByteStream {
    stream
        .map(|chunk| chunk.map(|c| c.iter().map(|b| !b).collect::<Vec<u8>>().into()))
        .boxed()
}

fn manifest_of(data: &[u8]) -> VolumeManifest {
    VolumeManifest::new(vec![ManifestEntry {
        path: "data".into(),
        kind: EntryKind::File,
        size: data.len() as u64,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 0,
        sha256: Some(hex::encode(Sha256::digest(data))),
        xattrs: Default::default(),
    }])
}

#[async_trait]
impl HostRuntime for FakeHost {
    fn host_id(&self) -> &HostId {
        &self.id
    }

    fn stream_codings(&self) -> &[StreamCoding] {
        &self.codings
    }

    fn resume(&self) -> Option<&dyn HostResume> {
        Some(self)
    }

    fn events(&self) -> Option<&dyn HostEvents> {
        Some(self)
    }

    async fn snapshot(&self) -> Result<HostSnapshot, RuntimeError> {
        self.snapshot_calls.fetch_add(1, Ordering::SeqCst);
        let delay = lock(&self.inner).snapshot_delay.clone();
        if let Some(delay) = delay {
            delay().await;
        }
        let g = self.enter(FakeOp::Snapshot, "")?;
        let mut s = self.snapshot_base.clone();
        for (name, st) in &g.stacks {
            if !st.deployed {
                continue;
            }
            let volumes = g
                .volumes
                .iter()
                .filter(|(_, (l, _))| {
                    l.get("com.docker.compose.project").map(String::as_str) == Some(name)
                })
                .map(|(v, (l, d))| VolumeUsage {
                    name: v.clone(),
                    bytes: Some(d.len() as u64),
                    labels: l.clone(),
                })
                .collect();
            s.stacks.insert(
                name.clone(),
                StackSnapshot {
                    name: name.clone(),
                    services: vec!["app".into()],
                    volumes,
                    memory_used: Some(if st.running { st.memory } else { 0 }),
                    running: st.running,
                    ..Default::default()
                },
            );
        }
        s.volumes = g.volumes.keys().cloned().collect::<BTreeSet<_>>();
        // One container (`app`) per running stack.
        s.containers_running = Some(s.stacks.values().filter(|st| st.running).count() as u64);
        Ok(s)
    }

    async fn write_stack_files(&self, files: &StackFiles) -> Result<(), RuntimeError> {
        let mut g = self.enter(FakeOp::WriteFiles, &files.name)?;
        g.stacks.entry(files.name.clone()).or_default().files = Some(files.clone());
        Ok(())
    }
    async fn read_stack_files(&self, stack: &str) -> Result<Option<StackFiles>, RuntimeError> {
        let g = self.enter(FakeOp::Snapshot, stack)?;
        Ok(g.stacks.get(stack).and_then(|s| s.files.clone()))
    }
    async fn remove_stack_files(&self, stack: &str) -> Result<(), RuntimeError> {
        let mut g = self.enter(FakeOp::Remove, stack)?;
        if let Some(s) = g.stacks.get_mut(stack) {
            s.files = None;
        }
        Ok(())
    }

    async fn deploy(&self, files: &StackFiles) -> Result<DeployReport, RuntimeError> {
        let mut g = self.enter(FakeOp::Deploy, &files.name)?;
        let volume = format!("{}_data", files.name);
        g.volumes.entry(volume).or_insert_with(|| {
            (
                BTreeMap::from([("com.docker.compose.project".to_owned(), files.name.clone())]),
                Vec::new(),
            )
        });
        let s = g.stacks.entry(files.name.clone()).or_default();
        let unchanged = s.deployed && s.running && s.files.as_ref() == Some(files);
        let mut report = DeployReport::default();
        if unchanged {
            report.unchanged.push("app".into());
        } else if s.deployed {
            report.recreated.push("app".into());
        } else {
            report.created.push("app".into());
        }
        s.files = Some(files.clone());
        s.deployed = true;
        s.running = true;
        Ok(report)
    }
    async fn stop_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        let mut g = self.enter(FakeOp::Stop, stack)?;
        match g.stacks.get_mut(stack) {
            Some(s) if s.deployed => {
                s.running = false;
                Ok(())
            }
            _ => Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("stack {stack} has no containers on {}", self.id),
            )),
        }
    }
    async fn start_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        let mut g = self.enter(FakeOp::Start, stack)?;
        match g.stacks.get_mut(stack) {
            Some(s) if s.deployed => {
                s.running = true;
                Ok(())
            }
            _ => Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!("stack {stack} has no containers on {}", self.id),
            )),
        }
    }
    async fn remove_stack(&self, stack: &str, volumes: bool) -> Result<(), RuntimeError> {
        let mut g = self.enter(FakeOp::Remove, stack)?;
        if let Some(s) = g.stacks.get_mut(stack) {
            s.deployed = false;
            s.running = false;
        }
        if volumes {
            g.volumes.retain(|_, (l, _)| {
                l.get("com.docker.compose.project").map(String::as_str) != Some(stack)
            });
        }
        Ok(())
    }
    async fn stack_status(&self, stack: &str) -> Result<StackStatus, RuntimeError> {
        let g = self.enter(FakeOp::Snapshot, stack)?;
        let mut st = StackStatus::default();
        if let Some(s) = g.stacks.get(stack).filter(|s| s.deployed) {
            st.containers.push(ContainerStatus {
                name: format!("{stack}-app-1"),
                service: "app".into(),
                state: if s.running { "running" } else { "exited" }.into(),
                health: None,
            });
        }
        Ok(st)
    }
    async fn wait_healthy(&self, stack: &str) -> Result<HealthReport, RuntimeError> {
        let mut g = self.enter(FakeOp::Snapshot, stack)?;
        let injected = Self::take_fault(&mut g, FakeOp::Health);
        let running = g.stacks.get(stack).is_some_and(|s| s.deployed && s.running);
        let healthy = running && !injected;
        let detail = if injected {
            "healthcheck failed (injected)".to_owned()
        } else if running {
            "running".to_owned()
        } else {
            "not running".to_owned()
        };
        Ok(HealthReport {
            services: vec![ServiceHealth {
                service: "app".into(),
                healthy,
                detail,
            }],
        })
    }

    async fn export_volume(&self, req: &ExportRequest) -> Result<VolumeExport, RuntimeError> {
        let volume = req.volume.as_str();
        let mut export = self.export_whole(volume)?;
        if let Some(offset) = req.from {
            let mut skip = offset;
            let mut chunks = Vec::new();
            while let Some(chunk) = export.stream.next().await {
                let chunk = chunk?;
                let n = skip.min(chunk.len() as u64);
                skip -= n;
                if (n as usize) < chunk.len() {
                    chunks.push(Ok(chunk.slice(n as usize..)));
                }
            }
            if skip > 0 {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Integrity,
                    format!("volume {volume} is shorter than {offset} bytes"),
                ));
            }
            export.stream = futures_util::stream::iter(chunks).boxed();
        }
        let coding = req.coding;
        if coding != StreamCoding::Plain && self.codings.contains(&coding) {
            lock(&self.inner)
                .calls
                .push(format!("coded export {coding} {volume}"));
            export.stream = fake_code(export.stream);
            export.coding = coding;
        }
        Ok(export)
    }
    async fn import_volume(
        &self,
        req: &ImportRequest,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        req.check(&self.id, &self.codings, true)?;
        let (volume, coding) = (&req.target, req.coding);
        let data = if coding == StreamCoding::Plain {
            data
        } else {
            lock(&self.inner)
                .calls
                .push(format!("coded import {coding} {}", volume.name));
            fake_code(data)
        };
        let Some(offset) = req.resume_at else {
            self.enter(FakeOp::Import, &volume.name)?
                .parked
                .remove(&volume.name);
            return self.take_in(volume, Vec::new(), data, progress).await;
        };
        let buf = {
            let mut g = self.enter(FakeOp::Import, &volume.name)?;
            match g.parked.get(&volume.name) {
                Some(b) if b.len() as u64 == offset => g.parked.remove(&volume.name),
                other => {
                    return Err(RuntimeError::new(
                        RuntimeErrorKind::Integrity,
                        format!(
                            "no import of volume {} waits at byte {offset} on {} ({})",
                            volume.name,
                            self.id,
                            other.map_or("none waits".into(), |b| format!(
                                "one waits at {}",
                                b.len()
                            ))
                        ),
                    ));
                }
            }
        };
        self.take_in(volume, buf.unwrap_or_default(), data, progress)
            .await
    }
    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError> {
        let mut g = self.enter(FakeOp::RemoveVolume, volume)?;
        g.parked.remove(volume);
        g.volumes.remove(volume);
        Ok(())
    }
}

#[async_trait]
impl HostResume for FakeHost {
    async fn import_resume_point(&self, volume: &str) -> Result<Option<u64>, RuntimeError> {
        let mut g = self.enter(FakeOp::ResumePoint, volume)?;
        if Self::take_fault(&mut g, FakeOp::ResumePointGone) {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!("host {} is unreachable (injected)", self.id),
            ));
        }
        Ok(g.parked.get(volume).map(|b| b.len() as u64))
    }
}

#[async_trait]
impl HostEvents for FakeHost {
    async fn follow_events(&self) -> Result<crate::ports::EventStream, RuntimeError> {
        lock(&self.inner).event_streams.pop_front().ok_or_else(|| {
            RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!("host {} has no event stream scripted", self.id),
            )
        })
    }
}
