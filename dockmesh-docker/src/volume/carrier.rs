//! The carrier: an empty local image and a never-started container that mounts one volume.

use super::engine::{engine_error, status_of};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use bytes::Bytes;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The names of the carriers of the transfers running in this process: cleaning up what an
/// interrupted transfer left behind never touches them. A name is registered *before* its
/// container is created, so no cleanup can see the container while it is unregistered.
static LIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashSet<String>>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_live(name: &str) -> bool {
    live().as_ref().is_some_and(|s| s.contains(name))
}

/// A carrier name registered for a transfer of this process; released when dropped.
pub(crate) struct Claim {
    name: String,
}

impl Claim {
    /// Register `name` for `volume`'s transfer; a conflict when a transfer of this process
    /// holds it already.
    pub(crate) fn take(volume: &str, name: String) -> Result<Claim, RuntimeError> {
        if live().get_or_insert_with(HashSet::new).insert(name.clone()) {
            Ok(Claim { name })
        } else {
            Err(busy(volume))
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(set) = live().as_mut() {
            set.remove(&self.name);
        }
    }
}

/// The name of the one carrier an import into `volume` uses. Two imports into one volume
/// cannot both hold it: the second is refused in this process by the registry, and in another
/// process by the engine, which refuses a second container of the same name.
pub(crate) fn import_name(volume: &str) -> String {
    format!("dockmesh-import-{volume}")
}

/// A fresh name for an export's carrier (several exports of one volume may run at once).
pub(crate) fn export_name(volume: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("dockmesh-export-{volume}-{}-{n}", std::process::id())
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
    claim: Option<Claim>,
    removed: bool,
}

impl Carrier {
    /// Create the carrier named by `claim` ([`import_name`], [`export_name`]) that mounts
    /// `volume` at [`MOUNT`]. The volume must exist (the engine would otherwise create it). A
    /// name the engine already has (a transfer of another process) is a conflict and creates
    /// nothing.
    pub(crate) async fn create(
        docker: &Docker,
        volume: &str,
        claim: Claim,
    ) -> Result<Carrier, RuntimeError> {
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
        let options = CreateContainerOptions {
            name: Some(claim.name.clone()),
            ..Default::default()
        };
        let created = match docker.create_container(Some(options), body).await {
            Ok(created) => created,
            Err(e) => {
                return Err(if status_of(&e) == Some(409) {
                    busy(volume).with_source(e)
                } else {
                    engine_error(
                        &format!("creating the carrier container for volume {volume}"),
                        e,
                    )
                });
            }
        };
        Ok(Carrier {
            docker: docker.clone(),
            id: created.id,
            claim: Some(claim),
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
        self.claim = None;
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
        let claim = self.claim.take();
        let cleanup = move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let result = match runtime {
                Ok(rt) => rt.block_on(remove_container(&docker, &id)),
                Err(e) => Err(RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!("no runtime to remove the carrier with: {e}"),
                )),
            };
            if let Err(e) = result {
                tracing::warn!(container = %id, error = %e, "removing a volume carrier failed");
            }
            drop(claim);
        };
        if let Err(e) = std::thread::Builder::new()
            .name("dockmesh-carrier-cleanup".into())
            .spawn(cleanup)
        {
            tracing::warn!(error = %e, "could not start the volume carrier cleanup");
        }
    }
}

/// Remove the carrier an interrupted import of an earlier process left under `claim`'s name.
/// This process holds the claim, so no import of this process uses that container; a server
/// that was killed mid-import leaves it behind, and its migration resumes through here.
pub(crate) async fn remove_leftover(docker: &Docker, claim: &Claim) -> Result<(), RuntimeError> {
    remove_container(docker, &claim.name).await
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
    for container in found {
        let names = container.names.unwrap_or_default();
        let held = names.iter().any(|n| is_live(n.trim_start_matches('/')));
        if let (false, Some(id)) = (held, container.id) {
            remove_container(docker, &id).await?;
        }
    }
    Ok(())
}

/// The refusal of a transfer into a volume another transfer holds.
fn busy(volume: &str) -> RuntimeError {
    RuntimeError::new(
        RuntimeErrorKind::Conflict,
        format!(
            "another transfer into volume {volume} is running, so this import was refused and              nothing was written; wait for it to end, or import under another name"
        ),
    )
}
