//! The carrier: an empty local image and a never-started container that mounts one volume.

use super::engine::{engine_error, status_of};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use bytes::Bytes;
use dockmesh_core::ports::RuntimeError;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

/// The carriers of the transfers running in this process: cleaning up what an interrupted
/// transfer left behind never touches them.
static LIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashSet<String>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_live(id: &str) -> bool {
    live().as_ref().is_some_and(|s| s.contains(id))
}

fn set_live(id: &str, yes: bool) {
    let mut guard = live();
    let set = guard.get_or_insert_with(HashSet::new);
    if yes {
        set.insert(id.to_owned());
    } else {
        set.remove(id);
    }
}

/// The carrier image: made locally from an empty tar, never pulled, never run.
pub const CARRIER_IMAGE: &str = "dockmesh/volume-carrier:1";
const CARRIER_REPO: &str = "dockmesh/volume-carrier";
const CARRIER_TAG: &str = "1";

/// The label on every carrier container; its value is the name of the volume it mounts.
pub const CARRIER_LABEL: &str = "dockmesh.volume-carrier";

/// Where a carrier mounts its volume.
pub(crate) const MOUNT: &str = "/v";

/// Make sure the carrier image exists, importing it from an empty tar when it does not.
/// Idempotent; needs no registry.
pub async fn ensure_carrier_image(docker: &Docker) -> Result<(), RuntimeError> {
    match docker.inspect_image(CARRIER_IMAGE).await {
        Ok(_) => return Ok(()),
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => return Err(engine_error("looking up the volume carrier image", e)),
    }
    let options = CreateImageOptions {
        from_src: Some("-".into()),
        repo: Some(CARRIER_REPO.into()),
        tag: Some(CARRIER_TAG.into()),
        message: Some("dockmesh volume carrier: an empty image, mounted, never run".into()),
        changes: vec![format!("LABEL {CARRIER_LABEL}=image")],
        ..Default::default()
    };
    // An empty tar: just the end-of-archive marker.
    let empty = Bytes::from_static(&[0u8; 1024]);
    let mut progress = docker.create_image(Some(options), Some(bollard::body_full(empty)), None);
    while let Some(step) = progress.next().await {
        step.map_err(|e| engine_error("creating the volume carrier image from an empty tar", e))?;
    }
    tracing::info!(image = CARRIER_IMAGE, "created the volume carrier image");
    Ok(())
}

/// A carrier container. Removed by [`Carrier::remove`], or in the background when dropped.
pub(crate) struct Carrier {
    docker: Docker,
    id: String,
    removed: bool,
}

impl Carrier {
    /// Create a carrier that mounts `volume` at [`MOUNT`]. The volume must exist (the engine
    /// would otherwise create it).
    pub(crate) async fn create(docker: &Docker, volume: &str) -> Result<Carrier, RuntimeError> {
        let body = ContainerCreateBody {
            image: Some(CARRIER_IMAGE.into()),
            cmd: Some(vec!["/dockmesh-volume-carrier-is-never-started".into()]),
            labels: Some(HashMap::from([(
                CARRIER_LABEL.to_owned(),
                volume.to_owned(),
            )])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                mounts: Some(vec![Mount {
                    target: Some(MOUNT.into()),
                    source: Some(volume.into()),
                    typ: Some(MountType::VOLUME),
                    volume_options: Some(MountVolumeOptions {
                        no_copy: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker.create_container(None, body).await.map_err(|e| {
            engine_error(
                &format!("creating the carrier container for volume {volume}"),
                e,
            )
        })?;
        set_live(&created.id, true);
        Ok(Carrier {
            docker: docker.clone(),
            id: created.id,
            removed: false,
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Remove the container (never the volume).
    pub(crate) async fn remove(mut self) -> Result<(), RuntimeError> {
        self.removed = true;
        let result = remove_container(&self.docker, &self.id).await;
        set_live(&self.id, false);
        result
    }
}

impl Drop for Carrier {
    /// A carrier dropped before [`Carrier::remove`] (an export stream dropped half way, a
    /// cancelled import) is removed on a thread of its own, so the removal also happens when the
    /// caller's runtime is shutting down.
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let docker = self.docker.clone();
        let id = std::mem::take(&mut self.id);
        let cleanup = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(rt) => rt.block_on(remove_container(&docker, &id)),
                Err(e) => Err(RuntimeError::new(
                    dockmesh_core::ports::RuntimeErrorKind::Engine,
                    format!("no runtime to remove the carrier with: {e}"),
                )),
            };
            if let Err(e) = result {
                tracing::warn!(container = %id, error = %e, "removing a volume carrier failed");
            }
            set_live(&id, false);
        };
        if let Err(e) = std::thread::Builder::new()
            .name("dockmesh-carrier-cleanup".into())
            .spawn(cleanup)
        {
            tracing::warn!(error = %e, "could not start the volume carrier cleanup");
        }
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), RuntimeError> {
    let options = RemoveContainerOptions {
        force: true,
        v: false,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) => Err(engine_error(
            &format!("removing the volume carrier container {id}"),
            e,
        )),
    }
}

/// Remove the carriers left behind for `volume` by interrupted transfers: every carrier of the
/// volume except those of the transfers running in this process, which are never touched (an
/// import that fails must not take another transfer's carrier with it).
pub(crate) async fn remove_stale_carriers(
    docker: &Docker,
    volume: &str,
) -> Result<(), RuntimeError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("{CARRIER_LABEL}={volume}")],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| engine_error("listing volume carrier containers", e))?;
    for id in found.into_iter().filter_map(|c| c.id) {
        if !is_live(&id) {
            remove_container(docker, &id).await?;
        }
    }
    Ok(())
}
