//! `RemoteHost`: a [`HostRuntime`] whose every call goes to an agent's API over the channel.
//!
//! What works: every `HostRuntime` method, mapped to the routes of
//! `crate::agent::api`; the agent's errors are rebuilt with the same
//! [`RuntimeErrorKind`]; a closed or failing connection (or no live connection, when the host
//! follows the registry) is [`RuntimeErrorKind::Unreachable`]. Volume export streams the
//! answer's body as it arrives and, once it has ended, fetches the export's manifest into the
//! [`ManifestSlot`]; volume import streams the caller's [`ByteStream`] as the request body
//! (HTTP/2 flow control is the backpressure) and reports progress as bytes are handed on.
//!
//! Volume streams are compressed with zstd on the wire unless
//! [`RemoteHost::with_compression`] turns it off ([`super::compress`]). Between two agents the
//! compressed stream is relayed as it came ([`StreamCoding::Zstd`]): the server neither
//! decodes nor encodes it, and the target's agent reports the bytes it has taken in
//! ([`wire::ImportLine`]).
//!
//! [`HostEvents::follow_events`] reads the agent's `GET /v1/events` lines ([`wire::event_lines`]).
//!
//! A transfer cut by a dropped connection goes on from the byte the target's agent took in
//! ([`HostResume::import_resume_point`]).

use super::compress;
use super::connection::{AgentConnection, CallError, ConnectedAgents};
use super::wire::{
    self, EXPORT_FROM, EXPORT_ID, ImportLine, PROGRESS, PROGRESS_LINES, RESUME_AT, ResumePoint,
    VOLUME_TARGET, WireError,
};
use axum::body::Body;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    AdoptReport, ByteStream, DeployReport, ExportRequest, HealthReport, HostEvents, HostProjects,
    HostReleases, HostResume, HostRuntime, ImportRequest, ManifestSlot, Progress, ProjectInfo,
    RuntimeError, RuntimeErrorKind, StackStatus, StreamCoding, VolumeExport, VolumeTarget,
};
use dockmesh_core::release::ServiceShape;
use dockmesh_core::snapshot::HostSnapshot;
use dockmesh_core::types::{HostId, StackFiles};
use futures_util::StreamExt;
use hyper::{Method, Request, Response, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::{Arc, Mutex};

/// The largest JSON answer (or error body) read into memory.
const JSON_LIMIT: usize = 16 << 20;

#[derive(Clone)]
enum Link {
    /// One connection; once it closes, the host is unreachable.
    Fixed(AgentConnection),
    /// Whatever connection the agent has now.
    Registry {
        agents: ConnectedAgents,
        agent_id: String,
    },
}

#[derive(Clone)]
struct Client {
    host: HostId,
    link: Link,
    /// Compress volume streams on the wire (zstd).
    zstd: bool,
}

fn gone(host: &HostId, what: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::new(
        RuntimeErrorKind::Unreachable,
        format!("host {host} is unreachable: {what}"),
    )
}

impl Client {
    fn conn(&self) -> Result<AgentConnection, RuntimeError> {
        match &self.link {
            Link::Fixed(c) if c.is_closed() => {
                Err(gone(&self.host, "its agent's connection is closed"))
            }
            Link::Fixed(c) => Ok(c.clone()),
            Link::Registry { agents, agent_id } => agents
                .get(agent_id)
                .ok_or_else(|| gone(&self.host, format!("agent {agent_id} is not connected"))),
        }
    }

    /// Send `req`; a non-2xx answer is rebuilt as the agent's error.
    async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, RuntimeError> {
        let conn = self.conn()?;
        let resp = conn.request(req).await.map_err(|e| match e {
            CallError::Connection(e) => gone(&self.host, &e).with_source(e),
            other => gone(&self.host, &other).with_source(other),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = self.read(resp).await?;
        Err(match serde_json::from_slice::<WireError>(&body) {
            Ok(w) => w.into_runtime_error(),
            Err(_) => RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!(
                    "the agent of host {} answered {status}: {}",
                    self.host,
                    String::from_utf8_lossy(&body[..body.len().min(512)])
                ),
            ),
        })
    }

    async fn read(
        &self,
        resp: Response<hyper::body::Incoming>,
    ) -> Result<bytes::Bytes, RuntimeError> {
        axum::body::to_bytes(Body::new(resp.into_body()), JSON_LIMIT)
            .await
            .map_err(|e| gone(&self.host, format!("its answer could not be read: {e}")))
    }

    fn request(method: Method, path: &str, json: Option<Vec<u8>>) -> Request<Body> {
        let b = Request::builder()
            .method(method)
            .uri(format!("http://agent{path}"));
        match json {
            Some(j) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(j)),
            None => b.body(Body::empty()),
        }
        .expect("a request with a path of encoded segments is valid")
    }

    /// `method path` with an optional JSON body; the JSON answer decoded.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, RuntimeError> {
        let resp = self
            .send(Self::request(method, path, body.map(to_json)))
            .await?;
        let bytes = self.read(resp).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!(
                    "the agent of host {} answered unexpected JSON: {e}",
                    self.host
                ),
            )
        })
    }

    /// `method path` with an optional JSON body, answered with no content.
    async fn call_done(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<(), RuntimeError> {
        let resp = self
            .send(Self::request(method, path, body.map(to_json)))
            .await?;
        self.read(resp).await.map(drop)
    }
}

fn to_json(v: &(impl Serialize + ?Sized)) -> Vec<u8> {
    serde_json::to_vec(v).expect("the agent API's request types serialise")
}

const NONE: Option<&()> = None;

/// A host reached through its agent: [`HostRuntime`] over the agent API.
#[derive(Clone)]
pub struct RemoteHost {
    client: Client,
}

impl std::fmt::Debug for RemoteHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHost")
            .field("host", &self.client.host)
            .finish_non_exhaustive()
    }
}

impl RemoteHost {
    /// Host `host` over one connection: once it closes, every call is `Unreachable`.
    pub fn new(host: impl Into<HostId>, conn: AgentConnection) -> RemoteHost {
        RemoteHost {
            client: Client {
                host: host.into(),
                link: Link::Fixed(conn),
                zstd: true,
            },
        }
    }

    /// Host `host` over whichever connection `agent_id` has in `agents` at each call, so it
    /// follows the agent's reconnects; `Unreachable` while it has none.
    pub fn registered(
        host: impl Into<HostId>,
        agents: ConnectedAgents,
        agent_id: impl Into<String>,
    ) -> RemoteHost {
        RemoteHost {
            client: Client {
                host: host.into(),
                link: Link::Registry {
                    agents,
                    agent_id: agent_id.into(),
                },
                zstd: true,
            },
        }
    }

    /// Compress volume streams on the wire with zstd (`true`, the default) or not.
    pub fn with_compression(mut self, zstd: bool) -> RemoteHost {
        self.client.zstd = zstd;
        self
    }
}

fn stack_path(stack: &str, rest: &str) -> String {
    format!("/v1/stacks/{}{rest}", wire::segment(stack))
}

fn volume_path(volume: &str, rest: &str) -> String {
    format!("/v1/volumes/{}{rest}", wire::segment(volume))
}

/// The state of an export's stream on the server side.
struct Exporting {
    data: Option<ByteStream>,
    client: Client,
    manifest_path: String,
    slot: ManifestSlot,
}

impl RemoteHost {
    /// `POST …/exports`, the stream from byte `from` on when given; still compressed when
    /// `coded` and the agent compressed it.
    async fn export_from(
        &self,
        volume: &str,
        from: Option<u64>,
        coded: bool,
    ) -> Result<VolumeExport, RuntimeError> {
        let path = volume_path(volume, "/exports");
        let mut req = Client::request(Method::POST, &path, None);
        if self.client.zstd {
            req.headers_mut().insert(
                header::ACCEPT_ENCODING,
                header::HeaderValue::from_static(compress::ZSTD),
            );
        }
        if let Some(offset) = from {
            req.headers_mut()
                .insert(EXPORT_FROM, header::HeaderValue::from(offset));
        }
        let resp = self.client.send(req).await?;
        if let Some(offset) = from {
            let echoed = resp
                .headers()
                .get(EXPORT_FROM)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if echoed != Some(offset) {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!(
                        "the agent of host {} cannot export volume {volume} from byte {offset} \
                         (it predates resuming)",
                        self.client.host
                    ),
                ));
            }
        }

        let zstd = compress::names_zstd(resp.headers().get(header::CONTENT_ENCODING));
        let id = resp
            .headers()
            .get(EXPORT_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| {
                RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!(
                        "the agent of host {} answered an export without an export id",
                        self.client.host
                    ),
                )
            })?;
        let slot = ManifestSlot::default();
        let client = self.client.clone();
        let raw = Body::new(resp.into_body())
            .into_data_stream()
            .map(move |item| {
                item.map_err(|e| {
                    if client.conn().is_err() {
                        gone(&client.host, format!("the export stream broke: {e}"))
                    } else {
                        RuntimeError::new(
                            RuntimeErrorKind::Integrity,
                            format!("the export stream from host {} broke: {e}", client.host),
                        )
                    }
                })
            })
            .boxed();
        let (data, coding) = match (zstd, coded) {
            (true, true) => (raw, StreamCoding::Zstd),
            (true, false) => (compress::decode(raw)?, StreamCoding::Plain),
            (false, _) => (raw, StreamCoding::Plain),
        };
        let state = Exporting {
            data: Some(data),
            client: self.client.clone(),
            manifest_path: volume_path(volume, &format!("/exports/{id}/manifest")),
            slot: slot.clone(),
        };
        let stream = futures_util::stream::unfold(state, |mut st| async move {
            let data = st.data.as_mut()?;
            match data.next().await {
                Some(Ok(bytes)) => Some((Ok(bytes), st)),
                Some(Err(err)) => {
                    st.data = None;
                    st.slot.fill(Err(err.message.clone()));
                    Some((Err(err), st))
                }
                None => {
                    let manifest: Result<VolumeManifest, RuntimeError> =
                        st.client.call(Method::GET, &st.manifest_path, NONE).await;
                    st.slot.fill(manifest.map_err(|e| e.message));
                    None
                }
            }
        });
        Ok(VolumeExport {
            stream: stream.boxed(),
            manifest: slot,
            coding,
        })
    }

    /// `PUT …/data`, going on with the import waiting at byte `resume` when given. A plain
    /// stream is compressed on the way when the host compresses; a zstd one goes as it is, and
    /// the agent reports the bytes it takes in.
    async fn import_at(
        &self,
        volume: &VolumeTarget,
        resume: Option<u64>,
        data: ByteStream,
        coding: StreamCoding,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        let coded = match coding {
            StreamCoding::Plain => false,
            StreamCoding::Zstd => true,
            other => {
                return Err(RuntimeError::new(
                    RuntimeErrorKind::Integrity,
                    format!(
                        "host {} cannot import volume {} from a stream coded as {other}",
                        self.client.host, volume.name
                    ),
                ));
            }
        };
        // The source's own error, when the stream fails: hyper only sees the stream reset.
        let failed: Arc<Mutex<Option<(RuntimeErrorKind, String)>>> = Arc::default();
        let seen = failed.clone();
        let mut sent = 0u64;
        let told = progress.clone();
        let counted = wire::coalesce(data).map(move |item| {
            match &item {
                // A coded stream's bytes are not the volume's: the agent tells those.
                Ok(b) if !coded => {
                    sent += b.len() as u64;
                    told(sent);
                }
                Ok(_) => {}
                Err(e) => {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((e.kind, e.message.clone()));
                }
            }
            item
        });
        let counted = counted.boxed();
        let mut req = Request::builder()
            .method(Method::PUT)
            .uri(format!(
                "http://agent{}",
                volume_path(&volume.name, "/data")
            ))
            .header(header::CONTENT_TYPE, "application/x-tar")
            .header(VOLUME_TARGET, hex::encode(to_json(volume)));
        if let Some(offset) = resume {
            req = req.header(RESUME_AT, offset);
        }
        let body = if coded {
            req = req
                .header(header::CONTENT_ENCODING, compress::ZSTD)
                .header(PROGRESS, PROGRESS_LINES);
            Body::from_stream(counted)
        } else if self.client.zstd {
            req = req.header(header::CONTENT_ENCODING, compress::ZSTD);
            Body::from_stream(wire::coalesce(compress::encode(counted, compress::LEVEL)?))
        } else {
            Body::from_stream(counted)
        };
        let req = req
            .body(body)
            .expect("a request with a path of encoded segments is valid");
        let result = async {
            let resp = self.client.send(req).await?;
            let in_lines = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/x-ndjson"));
            if in_lines {
                return self.manifest_from_lines(resp, resume, progress).await;
            }
            let bytes = self.client.read(resp).await?;
            serde_json::from_slice::<VolumeManifest>(&bytes).map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!(
                        "the agent of host {} answered an unexpected manifest: {e}",
                        self.client.host
                    ),
                )
            })
        }
        .await;
        match result {
            Ok(m) => Ok(m),
            Err(e) => match failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some((kind, message)) => Err(RuntimeError::new(kind, message)),
                None => Err(e),
            },
        }
    }

    /// An import's answer in lines: `progress` told the bytes taken in by this request (past
    /// `resume`), the manifest or the error from the last line.
    async fn manifest_from_lines(
        &self,
        resp: Response<hyper::body::Incoming>,
        resume: Option<u64>,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        let host = &self.client.host;
        let mut lines = wire::import_lines(Body::new(resp.into_body()).into_data_stream());
        while let Some(line) = lines.next().await {
            match line {
                Ok(ImportLine::Taken(n)) => progress(n.saturating_sub(resume.unwrap_or(0))),
                Ok(ImportLine::Manifest(m)) => return Ok(m),
                Ok(ImportLine::Error(e)) => return Err(e.into_runtime_error()),
                Err(e) if e.kind == RuntimeErrorKind::Unreachable => {
                    return Err(gone(host, e.message));
                }
                Err(e) => {
                    return Err(RuntimeError::new(
                        e.kind,
                        format!(
                            "the agent of host {host} answered an import badly: {}",
                            e.message
                        ),
                    ));
                }
            }
        }
        Err(gone(host, "the import's answer ended before its manifest"))
    }
}

#[async_trait::async_trait]
impl HostRuntime for RemoteHost {
    fn host_id(&self) -> &HostId {
        &self.client.host
    }

    async fn snapshot(&self) -> Result<HostSnapshot, RuntimeError> {
        self.client.call(Method::GET, "/v1/snapshot", NONE).await
    }

    async fn write_stack_files(&self, files: &StackFiles) -> Result<(), RuntimeError> {
        let path = stack_path(&files.name, "/files");
        self.client.call_done(Method::PUT, &path, Some(files)).await
    }

    async fn read_stack_files(&self, stack: &str) -> Result<Option<StackFiles>, RuntimeError> {
        let path = stack_path(stack, "/files");
        self.client.call(Method::GET, &path, NONE).await
    }

    async fn remove_stack_files(&self, stack: &str) -> Result<(), RuntimeError> {
        let path = stack_path(stack, "/files");
        self.client.call_done(Method::DELETE, &path, NONE).await
    }

    async fn deploy(&self, files: &StackFiles) -> Result<DeployReport, RuntimeError> {
        let path = stack_path(&files.name, "/deploy");
        self.client.call(Method::POST, &path, Some(files)).await
    }

    async fn stop_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        let path = stack_path(stack, "/stop");
        self.client.call_done(Method::POST, &path, NONE).await
    }

    async fn start_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        let path = stack_path(stack, "/start");
        self.client.call_done(Method::POST, &path, NONE).await
    }

    async fn remove_stack(&self, stack: &str, volumes: bool) -> Result<(), RuntimeError> {
        let path = stack_path(stack, &format!("?volumes={volumes}"));
        self.client.call_done(Method::DELETE, &path, NONE).await
    }

    async fn stack_status(&self, stack: &str) -> Result<StackStatus, RuntimeError> {
        let path = stack_path(stack, "/status");
        self.client.call(Method::GET, &path, NONE).await
    }

    async fn wait_healthy(&self, stack: &str) -> Result<HealthReport, RuntimeError> {
        let path = stack_path(stack, "/wait-healthy");
        self.client.call(Method::POST, &path, NONE).await
    }

    async fn export_volume(&self, req: &ExportRequest) -> Result<VolumeExport, RuntimeError> {
        let coded = req.coding == StreamCoding::Zstd && self.client.zstd;
        self.export_from(&req.volume, req.from, coded).await
    }

    async fn import_volume(
        &self,
        req: &ImportRequest,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        self.import_at(&req.target, req.resume_at, data, req.coding, progress)
            .await
    }

    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError> {
        let path = volume_path(volume, "");
        self.client.call_done(Method::DELETE, &path, NONE).await
    }

    fn stream_codings(&self) -> &[StreamCoding] {
        if self.client.zstd {
            &[StreamCoding::Zstd]
        } else {
            &[]
        }
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

/// The agent keeps an import whose stream broke off; an agent that predates resuming answers
/// that none waits.
#[async_trait::async_trait]
impl HostResume for RemoteHost {
    async fn import_resume_point(&self, volume: &str) -> Result<Option<u64>, RuntimeError> {
        let path = volume_path(volume, "/import");
        match self
            .client
            .call::<ResumePoint>(Method::GET, &path, NONE)
            .await
        {
            Ok(p) => Ok(Some(p.waiting_at)),
            // None waits, or the agent predates resuming.
            Err(e)
                if e.kind == RuntimeErrorKind::NotFound || e.kind == RuntimeErrorKind::Engine =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The agent's releases; an agent whose runtime has none answers the error saying so.
#[async_trait::async_trait]
impl HostReleases for RemoteHost {
    async fn resolve_release(&self, files: &StackFiles) -> Result<Vec<ServiceShape>, RuntimeError> {
        let path = stack_path(&files.name, "/resolve");
        self.client.call(Method::POST, &path, Some(files)).await
    }

    async fn ensure_images(&self, images: &[String]) -> Result<(), RuntimeError> {
        self.client
            .call_done(Method::POST, "/v1/images/ensure", Some(images))
            .await
    }
}

/// The agent's events; an agent whose runtime reports none answers the error saying so.
#[async_trait::async_trait]
impl HostEvents for RemoteHost {
    async fn follow_events(&self) -> Result<dockmesh_core::ports::EventStream, RuntimeError> {
        let resp = self
            .client
            .send(Client::request(Method::GET, wire::EVENTS_PATH, None))
            .await?;
        Ok(wire::event_lines(
            &self.client.host,
            Body::new(resp.into_body()).into_data_stream(),
        ))
    }
}

/// The agent's Compose projects; an agent whose runtime finds none answers the error saying so.
#[async_trait::async_trait]
impl HostProjects for RemoteHost {
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>, RuntimeError> {
        self.client.call(Method::GET, "/v1/projects", NONE).await
    }

    async fn adopt_project(
        &self,
        name: &str,
        given: Option<&StackFiles>,
    ) -> Result<AdoptReport, RuntimeError> {
        let path = format!("/v1/projects/{}/adopt", wire::segment(name));
        self.client.call(Method::POST, &path, Some(&given)).await
    }
}
