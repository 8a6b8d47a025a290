//! Export, import and removal of volumes on the engine.

use super::Limits;
use super::carrier::{
    Carrier, Claim, MOUNT, ensure_carrier_image, export_name, import_name, remove_leftover,
    remove_stale_carriers,
};
use super::error::{Refusal, StreamError};
use super::fs as fast;
use super::policy::Layout;
use super::transform::TarTransform;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use bytes::Bytes;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    ByteStream, ManifestSlot, Progress, RuntimeError, RuntimeErrorKind, VolumeExport, VolumeTarget,
};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The content an import accepts beyond what its source announced
/// ([`VolumeTarget::expected_bytes`]): a tenth of the announced size, at least 64 MiB. The
/// announced size is the engine's disk usage of the source volume, measured before the export:
/// the margin absorbs what a volume may still gain before its containers are stopped and the
/// rounding of the engine's accounting. A sparse file counts with its full size here but only
/// with its allocated blocks in the engine's usage, so a volume made mostly of holes needs the
/// caller to announce its apparent size (or none).
pub fn import_margin(expected: u64) -> u64 {
    (expected / 10).max(64 << 20)
}

/// The disk space an import leaves free on the file system of the volume it writes: 256 MiB.
/// Whatever the source announced, a stream whose regular files add up to more than the free
/// space less this is refused at the header of the file that goes over.
pub const IMPORT_DISK_RESERVE: u64 = 256 << 20;

/// How long an import's upload may take before the engine is considered stuck. The request is
/// answered only once the whole stream has been extracted, so this bounds a whole transfer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The HTTP status of an engine error, when the engine answered.
pub(crate) fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A [`RuntimeError`] for an engine error, classified by what the engine answered.
pub(crate) fn engine_error(what: &str, e: DockerError) -> RuntimeError {
    let kind = match &e {
        DockerError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeErrorKind::NotFound,
        DockerError::DockerResponseServerError {
            status_code: 409, ..
        } => RuntimeErrorKind::Conflict,
        DockerError::DockerResponseServerError { .. }
        | DockerError::DockerStreamError { .. }
        | DockerError::JsonDataError { .. }
        | DockerError::JsonSerdeError { .. } => RuntimeErrorKind::Engine,
        _ => RuntimeErrorKind::Unreachable,
    };
    RuntimeError::new(kind, format!("{what} failed: {e}")).with_source(e)
}

/// What to do about a refused stream, in words.
fn hint(e: &StreamError) -> &'static str {
    match e.refusal() {
        Some(Refusal::SpecialFile { .. }) => {
            "Device nodes are not moved: remove them from the source volume (the software that \
             uses them creates them again) and retry."
        }
        Some(Refusal::LargerThanAnnounced { .. }) => {
            "The source sent more than it announced: the volume grew during the transfer (stop \
             the containers that write to it) or the stream is not the volume's; retry."
        }
        Some(Refusal::LargerThanDiskAllows { .. }) => {
            "This host's disk has too little room for the volume: free space on it (or move the \
             stack to another host) and retry."
        }
        Some(Refusal::PathBudget { .. } | Refusal::TooManyEntries { .. }) => {
            "The volume holds more paths than a transfer accepts: raise the limits or split the \
             data over several volumes."
        }
        Some(Refusal::PathTooLong { .. } | Refusal::NameTooLong { .. }) => {
            "Shorten the path in the source volume and retry."
        }
        Some(_) | None => {
            "The stream is not a dockmesh volume export, or it was damaged or tampered with on \
             the way: check the source host and retry the transfer."
        }
    }
}

pub(crate) fn export_refused(volume: &str, e: StreamError) -> RuntimeError {
    let hint = hint(&e);
    RuntimeError::new(
        RuntimeErrorKind::Integrity,
        format!(
            "volume {volume} cannot be exported: {e}. The volume was only read and is \
             unchanged. {hint}"
        ),
    )
    .with_source(e)
}

fn import_refused(volume: &str, e: StreamError) -> RuntimeError {
    let hint = hint(&e);
    RuntimeError::new(
        RuntimeErrorKind::Integrity,
        format!(
            "import into volume {volume} refused: {e}. The refused entry was not written and \
             nothing was written outside the volume; the partly written volume is removed and \
             the source is unchanged. {hint}"
        ),
    )
    .with_source(e)
}

fn read_stream_error(volume: &str, e: StreamError) -> RuntimeError {
    RuntimeError::new(
        RuntimeErrorKind::Integrity,
        format!(
            "volume {volume} could not be read back after the import: {e}. It is removed; \
             check the engine's storage and retry."
        ),
    )
    .with_source(e)
}

/// How a transfer reaches a volume's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeAccess {
    /// Always through the engine's archive endpoints.
    Archive,
    /// Through the volume's directory when this process can reach it (a `local` volume without
    /// options, an engine on this machine, this process running as root: the caller vouches for
    /// the last two), else through the archive endpoints. See the module documentation.
    FileSystem,
}

/// Which way a transfer went, for the logs.
fn path_name(root: &Option<std::path::PathBuf>) -> &'static str {
    match root {
        Some(_) => "file system",
        None => "engine archive",
    }
}

/// Export the named volume as a tar stream ([`Layout::Transfer`]) through the engine's archive
/// endpoints ([`VolumeAccess::Archive`]); see [`export_volume_with`].
pub async fn export_volume(docker: &Docker, volume: &str) -> Result<VolumeExport, RuntimeError> {
    export_volume_with(docker, volume, VolumeAccess::Archive).await
}

/// Export the named volume as a tar stream ([`Layout::Transfer`]). The manifest is computed as
/// the stream flows and put in the returned slot when it ends, or the error when it fails. The
/// volume is only read; stop the containers that write to it first for a consistent copy.
/// `access` says whether the volume's directory may be read directly; the stream, its checks
/// and its manifest are the same either way.
pub async fn export_volume_with(
    docker: &Docker,
    volume: &str,
    access: VolumeAccess,
) -> Result<VolumeExport, RuntimeError> {
    match docker.inspect_volume(volume).await {
        Ok(_) => {}
        Err(e) if status_of(&e) == Some(404) => {
            return Err(RuntimeError::new(
                RuntimeErrorKind::NotFound,
                format!(
                    "volume {volume} does not exist on this host, so nothing was exported; \
                     check the name with `docker volume ls`"
                ),
            )
            .with_source(e));
        }
        Err(e) => return Err(engine_error(&format!("looking up volume {volume}"), e)),
    }
    ensure_carrier_image(docker).await?;
    let claim = Claim::take(volume, export_name(volume))?;
    let carrier = Carrier::create(docker, volume, claim).await?;
    let root = match access {
        VolumeAccess::FileSystem => fast::local_root(docker, volume).await,
        VolumeAccess::Archive => None,
    };
    tracing::info!(volume, path = path_name(&root), "exporting volume");
    let body = match root {
        Some(root) => fast::read_tree(root, volume),
        None => download(docker, &carrier, volume),
    };
    let slot = ManifestSlot::default();
    let state = ExportState {
        volume: volume.to_owned(),
        body,
        transform: TarTransform::new(Layout::Carrier, Some(Layout::Transfer), Limits::default())
            .with_manifest(),
        carrier: Some(carrier),
        slot: slot.clone(),
        done: false,
    };
    Ok(VolumeExport::plain(
        stream::unfold(state, export_step).boxed(),
        slot,
    ))
}

fn download(
    docker: &Docker,
    carrier: &Carrier,
    volume: &str,
) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
    let options = DownloadFromContainerOptions { path: MOUNT.into() };
    let what = format!("reading volume {volume} from the engine");
    docker
        .download_from_container(carrier.id(), Some(options))
        .map(move |chunk| chunk.map_err(|e| engine_error(&what, e)))
        .boxed()
}

struct ExportState {
    volume: String,
    body: BoxStream<'static, Result<Bytes, RuntimeError>>,
    transform: TarTransform,
    carrier: Option<Carrier>,
    slot: ManifestSlot,
    done: bool,
}

async fn export_step(mut st: ExportState) -> Option<(Result<Bytes, RuntimeError>, ExportState)> {
    loop {
        if let Some(bytes) = st.transform.pop() {
            return Some((Ok(bytes), st));
        }
        if st.done {
            return None;
        }
        let failure = match st.body.next().await {
            Some(Ok(chunk)) => match st.transform.push(chunk) {
                Ok(()) => continue,
                Err(e) => export_refused(&st.volume, e),
            },
            Some(Err(e)) => e,
            None => match st.transform.finish() {
                Ok(manifest) => {
                    if let Some(carrier) = st.carrier.take()
                        && let Err(e) = carrier.remove().await
                    {
                        tracing::warn!(volume = %st.volume, error = %e, "removing the export's carrier failed");
                    }
                    st.slot.fill(Ok(manifest.unwrap_or_default()));
                    st.done = true;
                    continue;
                }
                Err(e) => export_refused(&st.volume, e),
            },
        };
        st.done = true;
        st.slot.fill(Err(failure.message.clone()));
        // Close the engine's archive stream before removing the carrier: the engine does not
        // remove a container while an archive read of it is still being written out.
        st.body = stream::empty().boxed();
        if let Some(carrier) = st.carrier.take() {
            let _ = carrier.remove().await;
        }
        return Some((Err(failure), st));
    }
}

/// Import a tar stream ([`Layout::Transfer`], as [`export_volume`] produces) into the named
/// volume. The volume is created with the target's labels; an existing one is replaced (removed
/// and created again with the same driver and options) unless a container uses it, which is a
/// conflict. Every entry is checked before it reaches the engine, and a refused stream leaves no
/// volume behind. With [`VolumeTarget::expected_bytes`], a stream whose regular files add up to
/// more than that plus [`import_margin`] is refused at the header of the file that goes over,
/// before its content reaches the disk; whatever was announced, the same holds for more than
/// the volume's disk has free less [`IMPORT_DISK_RESERVE`] (when that disk is on this machine).
/// Only the carrier this import creates is removed when it
/// ends; carriers of other transfers running in this process are never touched. `progress` is told the number of stream bytes read so far, as they flow.
///
/// On success the stream has been read to its end, so an export's manifest slot is filled. The
/// returned manifest is computed from what the volume holds afterwards (read back from the
/// engine), for the caller to compare with the source's.
pub async fn import_volume(
    docker: &Docker,
    target: &VolumeTarget,
    data: ByteStream,
    progress: Progress,
) -> Result<VolumeManifest, RuntimeError> {
    import_volume_with(docker, target, data, progress, VolumeAccess::Archive).await
}

/// [`import_volume`], writing into the volume's directory directly when `access` allows it and
/// the freshly created volume's directory is here and empty ([`VolumeAccess::FileSystem`]);
/// the checks, the read-back and the returned manifest are the same either way.
pub async fn import_volume_with(
    docker: &Docker,
    target: &VolumeTarget,
    data: ByteStream,
    progress: Progress,
    access: VolumeAccess,
) -> Result<VolumeManifest, RuntimeError> {
    let volume = target.name.as_str();
    ensure_carrier_image(docker).await?;
    // Refused before the volume is touched when another import into it runs in this process;
    // the carrier's name makes the same refusal atomic across processes below, where the
    // volume is left to the import that holds it.
    let claim = Claim::take(volume, import_name(volume))?;
    remove_leftover(docker, &claim).await?;
    prepare_volume(docker, target).await?;
    let carrier = match Carrier::create(docker, volume, claim).await {
        Ok(c) => c,
        Err(e) if e.kind == RuntimeErrorKind::Conflict => return Err(e),
        Err(e) => return Err(discard(docker, volume, e).await),
    };
    let failure: Arc<Mutex<Option<RuntimeError>>> = Arc::default();
    let mut transform =
        TarTransform::new(Layout::Transfer, Some(Layout::Carrier), Limits::default());
    if let Some(expected) = target.expected_bytes {
        transform = transform.with_content_limit(expected.saturating_add(import_margin(expected)));
    }
    // Bounded by this host's disk too, never by the source's word alone.
    match volume_free_bytes(docker, volume).await {
        Some(free) => transform = transform.with_disk_limit(free, IMPORT_DISK_RESERVE),
        None => tracing::warn!(
            volume,
            "the free space of the volume's disk cannot be read here: the import is bounded \
             only by the size its source announced"
        ),
    }
    let body = upload_body(UploadState {
        volume: volume.to_owned(),
        data,
        transform,
        progress,
        moved: 0,
        failure: failure.clone(),
        done: false,
    });
    let root = match access {
        VolumeAccess::FileSystem => fast::local_root(docker, volume)
            .await
            .filter(|root| fast::is_empty_dir(root)),
        VolumeAccess::Archive => None,
    };
    tracing::info!(volume, path = path_name(&root), "importing volume");
    let started = Instant::now();
    let uploaded = match &root {
        Some(root) => fast::write_tree(root.clone(), body)
            .await
            .map(Some)
            .map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!("writing the stream into the directory of volume {volume} failed: {e}"),
                )
                .with_source(e)
            }),
        None => {
            let options = UploadToContainerOptions {
                path: "/".into(),
                ..Default::default()
            };
            docker
                .clone()
                .with_timeout(UPLOAD_TIMEOUT)
                .upload_to_container(carrier.id(), Some(options), bollard::body_try_stream(body))
                .await
                .map(|()| None)
                .map_err(|e| engine_error(&format!("writing the stream into volume {volume}"), e))
        }
    };
    let importing = started.elapsed();
    let refused = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    let result = match (refused, uploaded) {
        (Some(e), _) => Err(e),
        (None, Err(e)) => Err(e),
        (None, Ok(written)) => {
            let reading = Instant::now();
            match (root, written) {
                (Some(root), Some(written)) => {
                    let (syncs, synced) = (written.background_syncs, written.synced);
                    fast::read_manifest(root, volume, written)
                        .await
                        .map(|(manifest, counts)| {
                            tracing::info!(
                                volume,
                                writing = ?importing,
                                syncs_while_writing = syncs,
                                final_sync = ?synced,
                                final_walk = ?reading.elapsed(),
                                files_read_back_while_writing = counts.during_import,
                                files_read_back_at_the_end = counts.at_the_end,
                                "volume imported and read back"
                            );
                            manifest
                        })
                }
                _ => read_back_stream(download(docker, &carrier, volume), volume)
                    .await
                    .inspect(|_| {
                        tracing::info!(
                            volume,
                            writing = ?importing,
                            read_back = ?reading.elapsed(),
                            "volume imported and read back"
                        )
                    }),
            }
        }
    };
    let removed = carrier.remove().await;
    match result {
        Ok(manifest) => {
            removed?;
            Ok(manifest)
        }
        Err(e) => Err(discard(docker, volume, e).await),
    }
}

/// The bytes free on the file system holding `volume`'s data, when its directory is on this
/// machine (the engine is local and the volume is the `local` driver's without options, which
/// keeps its data in its mountpoint for good).
async fn volume_free_bytes(docker: &Docker, volume: &str) -> Option<u64> {
    let v = docker.inspect_volume(volume).await.ok()?;
    if v.driver != "local" || !v.options.is_empty() || v.mountpoint.is_empty() {
        return None;
    }
    tokio::task::spawn_blocking(move || {
        let st = rustix::fs::statvfs(v.mountpoint.as_str()).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    })
    .await
    .ok()
    .flatten()
}

/// Remove the volume after a failed import and say so in the error.
async fn discard(docker: &Docker, volume: &str, e: RuntimeError) -> RuntimeError {
    match remove_volume(docker, volume).await {
        Ok(()) => e,
        Err(cleanup) => RuntimeError {
            message: format!(
                "{}; removing the partly written volume {volume} failed as well ({cleanup}): \
                 remove it with `docker volume rm {volume}` before retrying",
                e.message
            ),
            ..e
        },
    }
}

/// Create the target volume, replacing an existing one.
async fn prepare_volume(docker: &Docker, target: &VolumeTarget) -> Result<(), RuntimeError> {
    let volume = target.name.as_str();
    remove_stale_carriers(docker, volume).await?;
    let mut request = VolumeCreateRequest {
        name: Some(volume.to_owned()),
        labels: Some(
            target
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ),
        ..Default::default()
    };
    match docker.inspect_volume(volume).await {
        Ok(existing) => {
            docker
                .remove_volume(
                    volume,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|e| {
                    if status_of(&e) == Some(409) {
                        RuntimeError::new(
                        RuntimeErrorKind::Conflict,
                        format!(
                            "volume {volume} already exists and a container uses it, so it cannot \
                             be replaced by the import; nothing was written. Remove the containers \
                             that use it (`docker ps -a --filter volume={volume}`) or import under \
                             another name"
                        ),
                    )
                    .with_source(e)
                    } else {
                        engine_error(&format!("removing the existing volume {volume}"), e)
                    }
                })?;
            request.driver = Some(existing.driver);
            request.driver_opts = Some(existing.options);
        }
        Err(e) if status_of(&e) == Some(404) => {}
        Err(e) => return Err(engine_error(&format!("looking up volume {volume}"), e)),
    }
    docker
        .create_volume(request)
        .await
        .map_err(|e| engine_error(&format!("creating volume {volume}"), e))?;
    Ok(())
}

struct UploadState {
    volume: String,
    data: ByteStream,
    transform: TarTransform,
    progress: Progress,
    moved: u64,
    failure: Arc<Mutex<Option<RuntimeError>>>,
    done: bool,
}

/// The request body of an import: the checked, re-written stream. On a refusal or a failing
/// source it records the error and ends with an I/O error, which aborts the request.
fn upload_body(
    state: UploadState,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(bytes) = st.transform.pop() {
                return Some((Ok(bytes), st));
            }
            if st.done {
                return None;
            }
            let failure = match st.data.next().await {
                Some(Ok(chunk)) => {
                    if !chunk.is_empty() {
                        st.moved += chunk.len() as u64;
                        (st.progress)(st.moved);
                    }
                    match st.transform.push(chunk) {
                        Ok(()) => continue,
                        Err(e) => import_refused(&st.volume, e),
                    }
                }
                Some(Err(e)) => RuntimeError {
                    message: format!(
                        "the stream for volume {} failed: {}; the partly written volume is \
                         removed",
                        st.volume, e.message
                    ),
                    ..e
                },
                None => match st.transform.finish() {
                    Ok(_) => {
                        st.done = true;
                        continue;
                    }
                    Err(e) => import_refused(&st.volume, e),
                },
            };
            st.done = true;
            let message = failure.message.clone();
            *st.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
            return Some((Err(std::io::Error::other(message)), st));
        }
    })
}

/// The manifest of what the volume holds now, from a read of it (engine or directory).
async fn read_back_stream(
    mut body: BoxStream<'static, Result<Bytes, RuntimeError>>,
    volume: &str,
) -> Result<VolumeManifest, RuntimeError> {
    let mut check = TarTransform::new(Layout::Carrier, None, Limits::default()).with_manifest();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| RuntimeError {
            message: format!(
                "reading volume {volume} back after the import: {}",
                e.message
            ),
            ..e
        })?;
        check
            .push(chunk)
            .map_err(|e| read_stream_error(volume, e))?;
    }
    let manifest = check.finish().map_err(|e| read_stream_error(volume, e))?;
    Ok(manifest.unwrap_or_default())
}

/// Remove a named volume (and any carrier an interrupted transfer left behind for it; never the
/// carrier of a transfer that is running in this process). A missing volume is fine; a volume
/// that a container uses is a conflict and is kept.
pub async fn remove_volume(docker: &Docker, volume: &str) -> Result<(), RuntimeError> {
    remove_stale_carriers(docker, volume).await?;
    match docker
        .remove_volume(
            volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        Err(e) if status_of(&e) == Some(409) => Err(RuntimeError::new(
            RuntimeErrorKind::Conflict,
            format!(
                "volume {volume} is used by a container and was kept; remove the containers that \
                 use it first (`docker ps -a --filter volume={volume}`)"
            ),
        )
        .with_source(e)),
        Err(e) => Err(engine_error(&format!("removing volume {volume}"), e)),
    }
}
