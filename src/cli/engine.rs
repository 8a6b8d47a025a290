//! A Docker engine reached by socket as a host, connected on first use: the server's hosts
//! given by `--host` and `local`, and the engine behind an agent.

use async_trait::async_trait;
use dockmesh_core::HostId;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    AdoptReport, ByteStream, DeployReport, EventStream, ExportRequest, HealthReport, HostEvents,
    HostProjects, HostReleases, HostResume, HostRuntime, ImportRequest, Progress, ProjectInfo,
    RuntimeError, RuntimeErrorKind, StackStatus, StreamCoding, VolumeExport, cannot,
};
use dockmesh_core::release::ServiceShape;
use dockmesh_core::snapshot::HostSnapshot;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::{DockerConfig, DockerRuntime};
use std::sync::Arc;

/// A Docker engine reached by socket, connected on first use (and again after a failed
/// connection), so that a server starts while one of its engines is down.
///
/// Every method and every power goes to the engine's runtime. The powers are offered before
/// the engine is reached; a power the runtime turns out not to have is answered with the
/// error [`cannot`] names. Its stream codings are known once it is reached.
pub struct EngineHost {
    id: HostId,
    config: DockerConfig,
    runtime: tokio::sync::OnceCell<Arc<dyn HostRuntime>>,
}

impl EngineHost {
    /// Host `id` on the engine `config` names; nothing is connected yet.
    pub fn new(id: HostId, config: DockerConfig) -> Self {
        EngineHost {
            id,
            config,
            runtime: tokio::sync::OnceCell::new(),
        }
    }

    async fn rt(&self) -> Result<&Arc<dyn HostRuntime>, RuntimeError> {
        self.runtime
            .get_or_try_init(|| async {
                DockerRuntime::connect(self.id.clone(), self.config.clone())
                    .await
                    .map(|rt| Arc::new(rt) as Arc<dyn HostRuntime>)
                    .map_err(|e| {
                        RuntimeError::new(
                            RuntimeErrorKind::Unreachable,
                            format!("the Docker engine of host {} does not answer: {e}", self.id),
                        )
                    })
            })
            .await
    }
}

#[async_trait]
impl HostRuntime for EngineHost {
    fn host_id(&self) -> &HostId {
        &self.id
    }
    async fn snapshot(&self) -> Result<HostSnapshot, RuntimeError> {
        self.rt().await?.snapshot().await
    }
    async fn write_stack_files(&self, files: &StackFiles) -> Result<(), RuntimeError> {
        self.rt().await?.write_stack_files(files).await
    }
    async fn read_stack_files(&self, stack: &str) -> Result<Option<StackFiles>, RuntimeError> {
        self.rt().await?.read_stack_files(stack).await
    }
    async fn remove_stack_files(&self, stack: &str) -> Result<(), RuntimeError> {
        self.rt().await?.remove_stack_files(stack).await
    }
    async fn deploy(&self, files: &StackFiles) -> Result<DeployReport, RuntimeError> {
        self.rt().await?.deploy(files).await
    }
    async fn stop_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        self.rt().await?.stop_stack(stack).await
    }
    async fn start_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        self.rt().await?.start_stack(stack).await
    }
    async fn remove_stack(&self, stack: &str, volumes: bool) -> Result<(), RuntimeError> {
        self.rt().await?.remove_stack(stack, volumes).await
    }
    async fn stack_status(&self, stack: &str) -> Result<StackStatus, RuntimeError> {
        self.rt().await?.stack_status(stack).await
    }
    async fn wait_healthy(&self, stack: &str) -> Result<HealthReport, RuntimeError> {
        self.rt().await?.wait_healthy(stack).await
    }
    async fn export_volume(&self, req: &ExportRequest) -> Result<VolumeExport, RuntimeError> {
        self.rt().await?.export_volume(req).await
    }
    async fn import_volume(
        &self,
        req: &ImportRequest,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        self.rt().await?.import_volume(req, data, progress).await
    }
    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError> {
        self.rt().await?.remove_volume(volume).await
    }
    fn stream_codings(&self) -> &[StreamCoding] {
        self.runtime.get().map_or(&[], |rt| rt.stream_codings())
    }
    fn resume(&self) -> Option<&dyn HostResume> {
        Some(self)
    }
    fn events(&self) -> Option<&dyn HostEvents> {
        Some(self)
    }
    fn projects(&self) -> Option<&dyn HostProjects> {
        Some(self)
    }
    fn releases(&self) -> Option<&dyn HostReleases> {
        Some(self)
    }
}

#[async_trait]
impl HostResume for EngineHost {
    async fn import_resume_point(&self, volume: &str) -> Result<Option<u64>, RuntimeError> {
        match self.rt().await?.resume() {
            Some(r) => r.import_resume_point(volume).await,
            None => Ok(None),
        }
    }
}

#[async_trait]
impl HostEvents for EngineHost {
    async fn follow_events(&self) -> Result<EventStream, RuntimeError> {
        let rt = self.rt().await?;
        let events = rt.events().ok_or_else(|| cannot::events(&self.id))?;
        events.follow_events().await
    }
}

#[async_trait]
impl HostProjects for EngineHost {
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>, RuntimeError> {
        let rt = self.rt().await?;
        let projects = rt
            .projects()
            .ok_or_else(|| cannot::list_projects(&self.id))?;
        projects.list_projects().await
    }
    async fn adopt_project(
        &self,
        name: &str,
        given: Option<&StackFiles>,
    ) -> Result<AdoptReport, RuntimeError> {
        let rt = self.rt().await?;
        let projects = rt
            .projects()
            .ok_or_else(|| cannot::adopt_project(&self.id, name))?;
        projects.adopt_project(name, given).await
    }
}

#[async_trait]
impl HostReleases for EngineHost {
    async fn resolve_release(&self, files: &StackFiles) -> Result<Vec<ServiceShape>, RuntimeError> {
        let rt = self.rt().await?;
        let releases = rt
            .releases()
            .ok_or_else(|| cannot::resolve_release(&self.id, &files.name))?;
        releases.resolve_release(files).await
    }
    async fn ensure_images(&self, images: &[String]) -> Result<(), RuntimeError> {
        let rt = self.rt().await?;
        let releases = rt
            .releases()
            .ok_or_else(|| cannot::ensure_images(&self.id, images))?;
        releases.ensure_images(images).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::ports::{VolumeTarget, no_progress};
    use dockmesh_core::testing::{CUT_AFTER, FakeHost, FakeOp};
    use futures_util::StreamExt;

    /// An engine host already connected to `rt`.
    fn over(rt: Arc<dyn HostRuntime>) -> EngineHost {
        let host = EngineHost::new(
            rt.host_id().clone(),
            DockerConfig::new(std::env::temp_dir()),
        );
        host.runtime.set(rt).ok().expect("a new cell is empty");
        host
    }

    const DATA: &[u8] = b"every byte of the volume's stream, and some more bytes";

    fn one(data: &[u8]) -> ByteStream {
        futures_util::stream::iter(vec![Ok(data.to_vec().into())]).boxed()
    }

    async fn bytes_of(stream: ByteStream) -> Vec<u8> {
        stream.map(|c| c.unwrap().to_vec()).concat().await
    }

    fn into(name: &str) -> ImportRequest {
        ImportRequest::new(VolumeTarget {
            name: name.into(),
            labels: Default::default(),
            expected_bytes: None,
        })
    }

    /// Every method and power reaches the runtime: codings, resuming, coded and resumed
    /// transfers, events; a power the runtime lacks is answered as the runtime's own absence.
    #[tokio::test]
    async fn everything_goes_to_the_engines_runtime() {
        let fake = Arc::new(FakeHost::new("h").with_stream_codings(&[StreamCoding::Zstd]));
        fake.seed_stack(
            StackFiles {
                name: "s".into(),
                compose: "services: {}".into(),
                env: None,
            },
            &[("s_data", DATA)],
            1 << 20,
        );
        let host = over(fake.clone());
        assert_eq!(host.stream_codings(), [StreamCoding::Zstd]);

        // A coded export from an offset, and a coded import of it.
        let export = host
            .export_volume(
                &ExportRequest::new("s_data")
                    .from_byte(Some(4))
                    .coded(StreamCoding::Zstd),
            )
            .await
            .unwrap();
        assert_eq!(export.coding, StreamCoding::Zstd);
        host.import_volume(
            &into("copy").coded(export.coding),
            export.stream,
            no_progress(),
        )
        .await
        .unwrap();
        assert_eq!(fake.volume("copy").as_deref(), Some(&DATA[4..]));

        // A cut import waits; the engine host says where and goes on from there.
        fake.fail(FakeOp::CutImport, 1);
        let cut = host
            .import_volume(&into("w"), one(DATA), no_progress())
            .await
            .unwrap_err();
        assert_eq!(cut.kind, RuntimeErrorKind::Unreachable);
        let resume = host.resume().expect("an engine host offers resuming");
        let at = resume.import_resume_point("w").await.unwrap();
        assert_eq!(at, Some(CUT_AFTER as u64));
        host.import_volume(
            &into("w").resume_at(at),
            one(&DATA[CUT_AFTER..]),
            no_progress(),
        )
        .await
        .unwrap();
        assert_eq!(fake.volume("w").as_deref(), Some(DATA));
        let whole = host.export_volume(&ExportRequest::new("w")).await.unwrap();
        assert_eq!(bytes_of(whole.stream).await, DATA);

        // Events come from the runtime.
        fake.script_events(Vec::new());
        let events = host.events().expect("an engine host offers events");
        assert!(events.follow_events().await.is_ok());
        assert!(
            events.follow_events().await.is_err(),
            "one stream was scripted"
        );

        // The fake finds no projects and resolves no releases: the engine host says so as
        // a caller of the runtime would.
        let projects = host
            .projects()
            .expect("offered before the engine is reached");
        let err = projects.list_projects().await.unwrap_err();
        assert_eq!(err.message, cannot::list_projects(&"h".into()).message);
        let err = projects.adopt_project("p", None).await.unwrap_err();
        assert_eq!(err.message, "host h cannot adopt project p");
        let releases = host
            .releases()
            .expect("offered before the engine is reached");
        let err = releases.ensure_images(&["a".into()]).await.unwrap_err();
        assert_eq!(err.message, "host h cannot fetch images (a)");
    }
}
