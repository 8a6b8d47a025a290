//! A Docker engine reached by socket as a host, connected on first use: the server's hosts
//! given by `--host` and `local`, and the engine behind an agent.

use async_trait::async_trait;
use dockmesh_core::HostId;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    AdoptReport, ByteStream, DeployReport, HealthReport, HostRuntime, Progress, ProjectInfo,
    RuntimeError, RuntimeErrorKind, StackStatus, VolumeExport, VolumeTarget,
};
use dockmesh_core::snapshot::HostSnapshot;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::{DockerConfig, DockerRuntime};
use std::sync::Arc;

/// A Docker engine reached by socket, connected on first use (and again after a failed
/// connection), so that a server starts while one of its engines is down.
pub struct EngineHost {
    id: HostId,
    config: DockerConfig,
    runtime: tokio::sync::OnceCell<Arc<DockerRuntime>>,
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

    async fn rt(&self) -> Result<&Arc<DockerRuntime>, RuntimeError> {
        self.runtime
            .get_or_try_init(|| async {
                DockerRuntime::connect(self.id.clone(), self.config.clone())
                    .await
                    .map(Arc::new)
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
    async fn export_volume(&self, volume: &str) -> Result<VolumeExport, RuntimeError> {
        self.rt().await?.export_volume(volume).await
    }
    async fn import_volume(
        &self,
        volume: &VolumeTarget,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        self.rt().await?.import_volume(volume, data, progress).await
    }
    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError> {
        self.rt().await?.remove_volume(volume).await
    }
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>, RuntimeError> {
        self.rt().await?.list_projects().await
    }
    async fn adopt_project(
        &self,
        name: &str,
        given: Option<&StackFiles>,
    ) -> Result<AdoptReport, RuntimeError> {
        self.rt().await?.adopt_project(name, given).await
    }
    async fn resolve_release(
        &self,
        files: &StackFiles,
    ) -> Result<Vec<dockmesh_core::release::ServiceShape>, RuntimeError> {
        self.rt().await?.resolve_release(files).await
    }
    async fn ensure_images(&self, images: &[String]) -> Result<(), RuntimeError> {
        self.rt().await?.ensure_images(images).await
    }
    async fn events(&self) -> Result<dockmesh_core::ports::EventStream, RuntimeError> {
        self.rt().await?.events().await
    }
}
