//! The agent API: every [`HostRuntime`] method as an HTTP route over the agent's own runtime.
//!
//! The agent serves [`agent_api`] over the reversed channel; the server's
//! [`RemoteHost`](crate::channel::RemoteHost) calls it. JSON in and out; a [`RuntimeError`] is answered
//! as [`WireError`] `{kind, message}` with a non-2xx status.
//!
//! | method | path | body → answer |
//! |---|---|---|
//! | GET | `/v1/hello` | → `Hello` |
//! | GET | `/v1/snapshot` | → `HostSnapshot` |
//! | PUT / GET / DELETE | `/v1/stacks/{stack}/files` | `StackFiles` → 204 / `StackFiles` or `null` / 204 |
//! | POST | `/v1/stacks/{stack}/deploy` | `StackFiles` → `DeployReport` |
//! | POST | `/v1/stacks/{stack}/stop`, `…/start` | → 204 |
//! | DELETE | `/v1/stacks/{stack}?volumes=true` | → 204 |
//! | GET | `/v1/stacks/{stack}/status` | → `StackStatus` |
//! | POST | `/v1/stacks/{stack}/wait-healthy` | → `HealthReport` |
//! | POST | `/v1/stacks/{stack}/resolve` | `StackFiles` → `[ServiceShape]` |
//! | POST | `/v1/images/ensure` | `[image]` → 204 |
//! | POST | `/v1/volumes/{volume}/exports` | → the tar stream (zstd when asked with `accept-encoding`), header `x-dockmesh-export-id`; with `x-dockmesh-export-from: N` (repeated in the answer), the stream from byte N |
//! | GET | `/v1/volumes/{volume}/exports/{id}/manifest` | → `VolumeManifest` (once) |
//! | PUT | `/v1/volumes/{volume}/data` | the tar stream (zstd with `content-encoding`), header `x-dockmesh-volume-target` → `VolumeManifest`; with `x-dockmesh-resume-at: N`, the rest of the stream of the import that waits at byte N; with `x-dockmesh-progress: lines`, answered at once with `ImportLine`s (bytes taken in as they go, the manifest or the error last) |
//! | GET | `/v1/volumes/{volume}/import` | → `ResumePoint` of the import that waits (its stream broke off), 404 when none does |
//! | DELETE | `/v1/volumes/{volume}` | → 204 |
//! | GET | `/v1/events` | → the host's `HostEvent`s, one JSON line each, while the request is open |
//! | GET | `/v1/projects` | → `[ProjectInfo]` |
//! | POST | `/v1/projects/{name}/adopt` | `StackFiles` or `null` → `AdoptReport` |
//!
//! Volume data streams in both directions without being buffered whole: the export's body is
//! the runtime's stream, the import's request body is handed to the runtime as it arrives, and
//! HTTP/2 flow control holds the sender back. An export's manifest is known only once its stream
//! has ended, so the agent keeps its [`ManifestSlot`] under an export id (the last
//! [`KEPT_EXPORTS`] exports) until the server fetches it.
//!
//! Volume streams are compressed with zstd when the server asks ([`crate::channel::compress`]).
//!
//! Imports run through [`super::resume::Imports`]: one whose stream breaks off waits to be
//! resumed at the exact byte it took in.
//!
//! Not built: request size limits beyond axum's JSON default.

use super::resume::Incoming;
use crate::channel::compress;
use crate::channel::wire::{
    self, EXPORT_FROM, EXPORT_ID, ImportLine, PROGRESS, PROGRESS_LINES, RESUME_AT, VOLUME_TARGET,
    WireError,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, http};
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    AdoptReport, DeployReport, ExportRequest, HealthReport, HostRuntime, ManifestSlot, ProjectInfo,
    RuntimeError, RuntimeErrorKind, StackStatus, VolumeTarget, cannot,
};
use dockmesh_core::protocol::Hello;
use dockmesh_core::release::ServiceShape;
use dockmesh_core::snapshot::HostSnapshot;
use dockmesh_core::types::StackFiles;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many exports' manifests the agent keeps for the server to fetch; older ones are dropped.
pub const KEPT_EXPORTS: usize = 64;

struct Api {
    hello: Hello,
    runtime: Arc<dyn HostRuntime>,
    imports: Arc<super::resume::Imports>,
    exports: Mutex<BTreeMap<u64, (String, ManifestSlot)>>,
    next_export: AtomicU64,
}

impl Api {
    fn keep(&self, volume: String, slot: ManifestSlot) -> u64 {
        let id = self.next_export.fetch_add(1, Ordering::Relaxed);
        let mut exports = self.exports.lock().unwrap_or_else(|p| p.into_inner());
        exports.insert(id, (volume, slot));
        while exports.len() > KEPT_EXPORTS {
            exports.pop_first();
        }
        id
    }
}

/// A [`RuntimeError`] as an answer: [`WireError`] JSON with [`wire::status_of`] its kind.
#[derive(Debug)]
pub struct Failure(pub RuntimeError);

impl From<RuntimeError> for Failure {
    fn from(e: RuntimeError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (wire::status_of(self.0.kind), Json(WireError::of(&self.0))).into_response()
    }
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure(RuntimeError::new(RuntimeErrorKind::InvalidStack, message))
}

type Answer<T> = Result<Json<T>, Failure>;
type Done = Result<StatusCode, Failure>;

/// The agent API over `runtime`, answering `hello` at `GET /v1/hello`.
pub fn agent_api(hello: Hello, runtime: Arc<dyn HostRuntime>) -> Router {
    let imports = super::resume::Imports::new(runtime.clone());
    agent_api_with(hello, runtime, imports)
}

/// [`agent_api`] with the imports kept across connections (an agent serves each connection
/// with a new router; an import cut off with one is resumed over the next).
pub fn agent_api_with(
    hello: Hello,
    runtime: Arc<dyn HostRuntime>,
    imports: Arc<super::resume::Imports>,
) -> Router {
    let api = Arc::new(Api {
        hello,
        imports,
        runtime,
        exports: Mutex::new(BTreeMap::new()),
        next_export: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/hello", get(hello_of))
        .route("/v1/snapshot", get(snapshot))
        .route(
            "/v1/stacks/{stack}/files",
            put(write_files).get(read_files).delete(remove_files),
        )
        .route("/v1/stacks/{stack}/deploy", post(deploy))
        .route("/v1/stacks/{stack}/stop", post(stop))
        .route("/v1/stacks/{stack}/start", post(start))
        .route("/v1/stacks/{stack}", axum::routing::delete(remove_stack))
        .route("/v1/stacks/{stack}/status", get(status))
        .route("/v1/stacks/{stack}/wait-healthy", post(wait_healthy))
        .route("/v1/stacks/{stack}/resolve", post(resolve_release))
        .route("/v1/images/ensure", post(ensure_images))
        .route("/v1/volumes/{volume}/exports", post(export))
        .route(
            "/v1/volumes/{volume}/exports/{id}/manifest",
            get(export_manifest),
        )
        .route("/v1/volumes/{volume}/data", put(import))
        .route("/v1/volumes/{volume}/import", get(import_waiting))
        .route("/v1/volumes/{volume}", axum::routing::delete(remove_volume))
        .route(wire::EVENTS_PATH, get(events))
        .route("/v1/projects", get(list_projects))
        .route("/v1/projects/{name}/adopt", post(adopt))
        .with_state(api)
}

type S = State<Arc<Api>>;

async fn hello_of(State(api): S) -> Json<Hello> {
    Json(api.hello.clone())
}

async fn snapshot(State(api): S) -> Answer<HostSnapshot> {
    Ok(Json(api.runtime.snapshot().await?))
}

fn same_stack(path: &str, files: &StackFiles) -> Result<(), Failure> {
    if files.name == path {
        Ok(())
    } else {
        Err(invalid(format!(
            "the files name stack {} but were sent for {path}",
            files.name
        )))
    }
}

async fn write_files(State(api): S, Path(stack): Path<String>, Json(f): Json<StackFiles>) -> Done {
    same_stack(&stack, &f)?;
    api.runtime.write_stack_files(&f).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn read_files(State(api): S, Path(stack): Path<String>) -> Answer<Option<StackFiles>> {
    Ok(Json(api.runtime.read_stack_files(&stack).await?))
}

async fn remove_files(State(api): S, Path(stack): Path<String>) -> Done {
    api.runtime.remove_stack_files(&stack).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn deploy(
    State(api): S,
    Path(stack): Path<String>,
    Json(f): Json<StackFiles>,
) -> Answer<DeployReport> {
    same_stack(&stack, &f)?;
    Ok(Json(api.runtime.deploy(&f).await?))
}

async fn stop(State(api): S, Path(stack): Path<String>) -> Done {
    api.runtime.stop_stack(&stack).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start(State(api): S, Path(stack): Path<String>) -> Done {
    api.runtime.start_stack(&stack).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The query of `DELETE /v1/stacks/{stack}`.
#[derive(Debug, Default, serde::Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    volumes: bool,
}

async fn remove_stack(
    State(api): S,
    Path(stack): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Done {
    api.runtime.remove_stack(&stack, q.volumes).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn status(State(api): S, Path(stack): Path<String>) -> Answer<StackStatus> {
    Ok(Json(api.runtime.stack_status(&stack).await?))
}

async fn wait_healthy(State(api): S, Path(stack): Path<String>) -> Answer<HealthReport> {
    Ok(Json(api.runtime.wait_healthy(&stack).await?))
}

async fn export(
    State(api): S,
    Path(volume): Path<String>,
    req_headers: HeaderMap,
) -> Result<Response, Failure> {
    let zstd = compress::names_zstd(req_headers.get(header::ACCEPT_ENCODING));
    let from = match req_headers.get(EXPORT_FROM) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| invalid(format!("{EXPORT_FROM} is not a byte offset: {v:?}")))?,
        ),
    };
    let export = api
        .runtime
        .export_volume(&ExportRequest::new(volume.clone()))
        .await?;
    let id = api.keep(volume, export.manifest);
    let stream = match from {
        Some(offset) => wire::skip_bytes(export.stream, offset),
        None => export.stream,
    };
    let stream = if zstd {
        compress::encode(stream, compress::LEVEL)?
    } else {
        stream
    };
    let mut resp = Body::from_stream(wire::coalesce(stream)).into_response();
    let headers = resp.headers_mut();
    if zstd {
        headers.insert(
            header::CONTENT_ENCODING,
            http::HeaderValue::from_static(compress::ZSTD),
        );
    }
    headers.insert(EXPORT_ID, http::HeaderValue::from(id));
    if let Some(offset) = from {
        headers.insert(EXPORT_FROM, http::HeaderValue::from(offset));
    }
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}

/// The host's events, one JSON line each, for as long as the server holds the request open.
async fn events(State(api): S) -> Result<Response, Failure> {
    let rt = &api.runtime;
    let events = rt.events().ok_or_else(|| cannot::events(rt.host_id()))?;
    let events = events.follow_events().await?;
    let mut resp =
        Body::from_stream(events.map(|r| r.map(|e| wire::event_line(&e)))).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

async fn export_manifest(
    State(api): S,
    Path((volume, id)): Path<(String, u64)>,
) -> Answer<VolumeManifest> {
    let slot = {
        let mut exports = api.exports.lock().unwrap_or_else(|p| p.into_inner());
        match exports.get(&id) {
            Some((of, _)) if *of == volume => exports.remove(&id).map(|(_, slot)| slot),
            _ => None,
        }
    };
    let slot = slot.ok_or_else(|| {
        Failure(RuntimeError::new(
            RuntimeErrorKind::NotFound,
            format!("no export {id} of volume {volume} is kept (fetched already, or too old)"),
        ))
    })?;
    Ok(Json(slot.take()?))
}

fn target_of(headers: &HeaderMap, volume: &str) -> Result<VolumeTarget, Failure> {
    let bad = |why: &str| {
        Failure(RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("the import of {volume} has no usable {VOLUME_TARGET} header: {why}"),
        ))
    };
    let raw = headers.get(VOLUME_TARGET).ok_or_else(|| bad("missing"))?;
    let json = hex::decode(raw.as_bytes()).map_err(|_| bad("not hex"))?;
    let target: VolumeTarget = serde_json::from_slice(&json).map_err(|_| bad("not JSON"))?;
    if target.name != volume {
        return Err(bad("it names another volume"));
    }
    Ok(target)
}

async fn import(
    State(api): S,
    Path(volume): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let target = target_of(&headers, &volume)?;
    let data = body
        .into_data_stream()
        .map_err(|e| {
            RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!("the volume stream from the server broke: {e}"),
            )
        })
        .boxed();
    let zstd = match headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(v) if compress::names_zstd(Some(v)) => true,
        Some(v) => {
            return Err(invalid(format!(
                "the import of {volume} is coded as {v:?}: only zstd is understood"
            )));
        }
    };
    let resume = match headers.get(RESUME_AT) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| invalid(format!("{RESUME_AT} is not a byte offset: {v:?}")))?,
        ),
    };
    let imports = api.imports.clone();
    let run = |data: Incoming| async move {
        match resume {
            None => imports.start(target, data).await,
            Some(offset) => imports.resume(&target.name, offset, data).await,
        }
    };
    let lines = headers
        .get(PROGRESS)
        .is_some_and(|v| v.as_bytes() == PROGRESS_LINES.as_bytes());
    if !lines {
        let data = Incoming {
            body: data,
            zstd,
            counter: None,
        };
        return Ok(Json(run(data).await?).into_response());
    }
    // The bytes of the plain stream handed on to the import, from the stream's start.
    let taken = Arc::new(AtomicU64::new(resume.unwrap_or(0)));
    let run = run(Incoming {
        body: data,
        zstd,
        counter: Some(taken.clone()),
    });
    let mut resp =
        Body::from_stream(progress_lines(volume, taken, tokio::spawn(run))).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// How often an import answering in lines says how far it is.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The lines of an import's answer: `taken` each [`PROGRESS_EVERY`] while it changes, then,
/// once `import` has ended, `taken` as it ended and the manifest, or the error.
fn progress_lines(
    volume: String,
    taken: Arc<AtomicU64>,
    import: tokio::task::JoinHandle<Result<VolumeManifest, RuntimeError>>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> {
    struct Lines {
        import: tokio::task::JoinHandle<Result<VolumeManifest, RuntimeError>>,
        tick: tokio::time::Interval,
        told: Option<u64>,
        /// The import's last line, once it has ended.
        last: Option<ImportLine>,
    }
    let start = Lines {
        import,
        tick: tokio::time::interval(PROGRESS_EVERY),
        told: None,
        last: None,
    };
    futures_util::stream::unfold(Some(start), move |state| {
        let (volume, taken) = (volume.clone(), taken.clone());
        async move {
            let mut st = state?;
            if let Some(last) = st.last.take() {
                return Some((Ok(wire::import_line(&last)), None));
            }
            loop {
                tokio::select! {
                    biased;
                    ended = &mut st.import => {
                        st.last = Some(match ended {
                            Ok(Ok(m)) => ImportLine::Manifest(m),
                            Ok(Err(e)) => ImportLine::Error(WireError::of(&e)),
                            Err(e) => ImportLine::Error(WireError::of(&RuntimeError::new(
                                RuntimeErrorKind::Engine,
                                format!("the import of volume {volume} stopped: {e}"),
                            ))),
                        });
                        let now = taken.load(Ordering::Relaxed);
                        let line = ImportLine::Taken(now);
                        return Some((Ok(wire::import_line(&line)), Some(st)));
                    }
                    _ = st.tick.tick() => {
                        let now = taken.load(Ordering::Relaxed);
                        if st.told != Some(now) {
                            st.told = Some(now);
                            let line = ImportLine::Taken(now);
                            return Some((Ok(wire::import_line(&line)), Some(st)));
                        }
                    }
                }
            }
        }
    })
}

/// Where the import of a volume waits to be resumed; 404 when none does.
async fn import_waiting(State(api): S, Path(volume): Path<String>) -> Answer<wire::ResumePoint> {
    match api.imports.waiting_at(&volume) {
        Some(waiting_at) => Ok(Json(wire::ResumePoint { waiting_at })),
        None => Err(Failure(RuntimeError::new(
            RuntimeErrorKind::NotFound,
            format!("no import of volume {volume} waits on this host"),
        ))),
    }
}

async fn resolve_release(
    State(api): S,
    Path(stack): Path<String>,
    Json(files): Json<StackFiles>,
) -> Answer<Vec<ServiceShape>> {
    if files.name != stack {
        return Err(invalid(format!(
            "the files are of stack {}, not {stack}",
            files.name
        )));
    }
    let rt = &api.runtime;
    let releases = rt
        .releases()
        .ok_or_else(|| cannot::resolve_release(rt.host_id(), &files.name))?;
    Ok(Json(releases.resolve_release(&files).await?))
}

async fn ensure_images(State(api): S, Json(images): Json<Vec<String>>) -> Done {
    let rt = &api.runtime;
    let releases = rt
        .releases()
        .ok_or_else(|| cannot::ensure_images(rt.host_id(), &images))?;
    releases.ensure_images(&images).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_volume(State(api): S, Path(volume): Path<String>) -> Done {
    // An import waiting to be resumed holds the volume: it is given up first.
    api.imports.cancel(&volume).await;
    api.runtime.remove_volume(&volume).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_projects(State(api): S) -> Answer<Vec<ProjectInfo>> {
    let rt = &api.runtime;
    let projects = rt
        .projects()
        .ok_or_else(|| cannot::list_projects(rt.host_id()))?;
    Ok(Json(projects.list_projects().await?))
}

async fn adopt(
    State(api): S,
    Path(name): Path<String>,
    Json(given): Json<Option<StackFiles>>,
) -> Answer<AdoptReport> {
    let rt = &api.runtime;
    let projects = rt
        .projects()
        .ok_or_else(|| cannot::adopt_project(rt.host_id(), &name))?;
    Ok(Json(projects.adopt_project(&name, given.as_ref()).await?))
}
