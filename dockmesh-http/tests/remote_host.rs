//! `RemoteHost` against agents serving the agent API over `FakeHost`s, in process on loopback.

use dockmesh_core::ports::{
    ExportRequest, HostProjects, HostRuntime, ImportRequest, RuntimeErrorKind, StreamCoding,
    VolumeTarget, no_progress,
};
use dockmesh_core::protocol::{Hello, PROTOCOL_VERSION};
use dockmesh_core::testing::{FakeHost, FakeOp, RuntimeFixture, host_runtime_conformance};
use dockmesh_core::types::StackFiles;
use dockmesh_http::agent::{AgentConnector, agent_api};
use dockmesh_http::channel::pki::Ca;
use dockmesh_http::channel::{AgentConnection, ChannelOptions, ConnectedAgents, RemoteHost};
use dockmesh_http::server::{AgentAcceptor, AgentListener};
use futures_util::StreamExt;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

fn hello() -> Hello {
    Hello {
        version: "0.1.0".into(),
        commit: None,
        protocol_version: PROTOCOL_VERSION,
        os: "linux".into(),
        arch: "x86_64".into(),
        hostname: "host".into(),
        docker_version: "28.0.0".into(),
        upgrade_failure: None,
    }
}

fn options() -> ChannelOptions {
    ChannelOptions {
        handshake_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(1),
    }
}

/// A server's agent listener on loopback.
struct Server {
    ca: Ca,
    addr: SocketAddr,
    agents: ConnectedAgents,
    _listener: JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        let ca = Ca::ephemeral().unwrap();
        let server_cert = ca.issue_server(&["localhost".into()]).unwrap();
        let agents = ConnectedAgents::default();
        let acceptor = AgentAcceptor::new(
            &ca,
            &server_cert,
            PROTOCOL_VERSION,
            options(),
            agents.clone(),
        )
        .unwrap();
        let listener = AgentListener::bind("127.0.0.1:0".parse().unwrap(), acceptor)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        Server {
            ca,
            addr,
            agents,
            _listener: tokio::spawn(listener.run()),
        }
    }

    /// Connect agent `id` serving the agent API over `host`; its connection once the server
    /// holds it, and the agent's task (abort it to take the agent away).
    async fn agent(&self, id: &str, host: Arc<FakeHost>) -> (AgentConnection, JoinHandle<()>) {
        self.agent_over(id, host).await
    }

    /// [`Server::agent`] over any runtime.
    async fn agent_over(
        &self,
        id: &str,
        host: Arc<dyn HostRuntime>,
    ) -> (AgentConnection, JoinHandle<()>) {
        self.agent_serving(id, agent_api(hello(), host)).await
    }

    /// An agent `id` serving `router`.
    async fn agent_serving(
        &self,
        id: &str,
        router: axum::Router,
    ) -> (AgentConnection, JoinHandle<()>) {
        let cert = self.ca.issue_agent(id).unwrap();
        let connector = AgentConnector::new(
            self.ca.cert_der().clone(),
            vec![cert.cert_der.clone()],
            cert.key_der(),
            PROTOCOL_VERSION,
            options(),
        )
        .unwrap();
        let session = connector
            .connect(self.addr, ServerName::try_from("localhost").unwrap())
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            let _ = session.serve(router).await;
        });
        for _ in 0..200 {
            if let Some(conn) = self.agents.get(id) {
                return (conn, task);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("agent {id} did not connect");
    }
}

fn fixture() -> RuntimeFixture {
    let stack = StackFiles {
        name: "web".into(),
        compose: "v1".into(),
        env: None,
    };
    let changed = StackFiles {
        compose: "v2".into(),
        ..stack.clone()
    };
    RuntimeFixture {
        stack,
        changed,
        volume: "web_data".into(),
        scratch_volume: "scratch".into(),
    }
}

#[tokio::test]
async fn a_remote_host_passes_the_host_runtime_conformance_suite() {
    let server = Server::start().await;
    let (conn, _agent) = server.agent("a1", Arc::new(FakeHost::new("h1"))).await;
    assert_eq!(conn.hello().await.unwrap(), hello());
    let remote = RemoteHost::new("h1", conn);
    host_runtime_conformance(&remote, &fixture()).await;

    // The same over the registry, which follows the agent's current connection.
    let (_conn, _agent2) = server.agent("a2", Arc::new(FakeHost::new("h2"))).await;
    let registered = RemoteHost::registered("h2", server.agents.clone(), "a2");
    host_runtime_conformance(&registered, &fixture()).await;
}

#[tokio::test]
async fn a_volume_moves_between_two_remote_hosts_byte_identical() {
    let server = Server::start().await;
    let source_fake = Arc::new(FakeHost::new("src"));
    let target_fake = Arc::new(FakeHost::new("dst"));
    // 3 MiB, well over HTTP/2's initial flow-control window, so the window is exercised.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let content: Vec<u8> = (0..3 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    source_fake.seed_stack(fixture().stack, &[("web_data", &content)], 1 << 20);
    let (src_conn, _a) = server.agent("src-agent", source_fake.clone()).await;
    let (dst_conn, _b) = server.agent("dst-agent", target_fake.clone()).await;
    let source = RemoteHost::new("src", src_conn);
    let target = RemoteHost::new("dst", dst_conn);

    let export = source
        .export_volume(&ExportRequest::new("web_data"))
        .await
        .unwrap();
    let moved = Arc::new(AtomicU64::new(0));
    let seen = moved.clone();
    let imported = target
        .import_volume(
            &ImportRequest::new(VolumeTarget {
                name: "web_data".into(),
                labels: [("com.docker.compose.project".into(), "web".into())].into(),
                expected_bytes: Some(content.len() as u64),
            }),
            export.stream,
            Arc::new(move |n| seen.store(n, Ordering::Relaxed)),
        )
        .await
        .unwrap();
    let exported = export.manifest.take().expect("the manifest once streamed");
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported, imported);
    assert_eq!(target_fake.volume("web_data").unwrap(), content);
    assert_eq!(moved.load(Ordering::Relaxed), content.len() as u64);
    assert!(
        export.manifest.take().is_err(),
        "a manifest is handed out once"
    );
}

#[tokio::test]
async fn the_agents_errors_arrive_with_their_kind() {
    let server = Server::start().await;
    let fake = Arc::new(FakeHost::new("h1"));
    let (conn, _agent) = server.agent("a1", fake.clone()).await;
    let remote = RemoteHost::new("h1", conn);

    let kind = |r: Result<(), dockmesh_core::ports::RuntimeError>| r.unwrap_err().kind;
    assert_eq!(
        kind(remote.stop_stack("no-such-stack").await),
        RuntimeErrorKind::NotFound
    );
    let missing = remote
        .export_volume(&ExportRequest::new("no such/volume"))
        .await;
    assert_eq!(
        missing.err().map(|e| e.kind),
        Some(RuntimeErrorKind::NotFound)
    );
    fake.fail(FakeOp::Deploy, 1);
    let err = remote.deploy(&fixture().stack).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Engine);
    assert!(err.message.contains("injected fault"), "{}", err.message);
    // The FakeHost's default: it cannot list projects.
    assert_eq!(
        remote.list_projects().await.unwrap_err().kind,
        RuntimeErrorKind::Engine
    );
    fake.set_online(false);
    assert_eq!(
        remote.snapshot().await.unwrap_err().kind,
        RuntimeErrorKind::Unreachable
    );
    fake.set_online(true);
    assert!(remote.snapshot().await.unwrap().online);

    // A failing source stream fails the import with the source's own error.
    let broken = futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from_static(b"some data")),
        Err(dockmesh_core::ports::RuntimeError::new(
            RuntimeErrorKind::Integrity,
            "the source broke",
        )),
    ])
    .boxed();
    let err = remote
        .import_volume(
            &ImportRequest::new(VolumeTarget {
                name: "v".into(),
                labels: Default::default(),
                expected_bytes: None,
            }),
            broken,
            no_progress(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
    assert_eq!(err.message, "the source broke");
}

#[tokio::test]
async fn an_agent_that_disconnects_makes_calls_unreachable() {
    let server = Server::start().await;
    let (conn, agent) = server.agent("a1", Arc::new(FakeHost::new("h1"))).await;
    let fixed = RemoteHost::new("h1", conn.clone());
    let registered = RemoteHost::registered("h1", server.agents.clone(), "a1");
    assert!(fixed.snapshot().await.unwrap().online);
    assert!(registered.snapshot().await.unwrap().online);

    agent.abort();
    for _ in 0..200 {
        if conn.is_closed() && server.agents.get("a1").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(conn.is_closed(), "the server notices the closed connection");
    for host in [&fixed, &registered] {
        let err = host.snapshot().await.unwrap_err();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
        let err = host
            .export_volume(&ExportRequest::new("v"))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
    }

    // The registered host follows the agent when it comes back.
    let (_conn, _agent) = server.agent("a1", Arc::new(FakeHost::new("h1"))).await;
    assert!(registered.snapshot().await.unwrap().online);
    assert_eq!(
        fixed.snapshot().await.unwrap_err().kind,
        RuntimeErrorKind::Unreachable
    );
}

/// A host whose exports never end and whose imports read one chunk and then wait: for watching
/// HTTP/2 flow control hold the sender back.
struct Endless {
    id: dockmesh_core::types::HostId,
    produced: Arc<AtomicU64>,
}

fn not_here() -> dockmesh_core::ports::RuntimeError {
    dockmesh_core::ports::RuntimeError::new(RuntimeErrorKind::Engine, "not part of this test")
}

#[async_trait::async_trait]
impl HostRuntime for Endless {
    fn host_id(&self) -> &dockmesh_core::types::HostId {
        &self.id
    }
    async fn snapshot(
        &self,
    ) -> Result<dockmesh_core::snapshot::HostSnapshot, dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn write_stack_files(
        &self,
        _: &StackFiles,
    ) -> Result<(), dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn read_stack_files(
        &self,
        _: &str,
    ) -> Result<Option<StackFiles>, dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn remove_stack_files(&self, _: &str) -> Result<(), dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn deploy(
        &self,
        _: &StackFiles,
    ) -> Result<dockmesh_core::ports::DeployReport, dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn stop_stack(&self, _: &str) -> Result<(), dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn start_stack(&self, _: &str) -> Result<(), dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn remove_stack(
        &self,
        _: &str,
        _: bool,
    ) -> Result<(), dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn stack_status(
        &self,
        _: &str,
    ) -> Result<dockmesh_core::ports::StackStatus, dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn wait_healthy(
        &self,
        _: &str,
    ) -> Result<dockmesh_core::ports::HealthReport, dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
    async fn export_volume(
        &self,
        _: &ExportRequest,
    ) -> Result<dockmesh_core::ports::VolumeExport, dockmesh_core::ports::RuntimeError> {
        let produced = self.produced.clone();
        let mut seed = 1;
        let stream = futures_util::stream::repeat_with(move || {
            produced.fetch_add(CHUNK as u64, Ordering::Relaxed);
            Ok(noise(&mut seed))
        });
        Ok(dockmesh_core::ports::VolumeExport::plain(
            stream.boxed(),
            Default::default(),
        ))
    }
    async fn import_volume(
        &self,
        _: &ImportRequest,
        mut data: dockmesh_core::ports::ByteStream,
        _: dockmesh_core::ports::Progress,
    ) -> Result<dockmesh_core::manifest::VolumeManifest, dockmesh_core::ports::RuntimeError> {
        let _ = data.next().await;
        std::future::pending().await
    }
    async fn remove_volume(&self, _: &str) -> Result<(), dockmesh_core::ports::RuntimeError> {
        Err(not_here())
    }
}

const CHUNK: usize = 64 << 10;

/// A chunk of incompressible bytes: volume streams are compressed on the wire, and flow
/// control bounds what is in flight, so the bound holds for source bytes only when they do
/// not compress.
fn noise(seed: &mut u64) -> bytes::Bytes {
    (0..CHUNK)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed as u8
        })
        .collect::<Vec<u8>>()
        .into()
}
/// More than HTTP/2's windows and the few chunks in flight, far less than "everything".
const BOUND: u64 = 8 << 20;

#[tokio::test]
async fn flow_control_holds_back_an_export_nobody_reads() {
    let server = Server::start().await;
    let produced = Arc::new(AtomicU64::new(0));
    let (conn, _agent) = server
        .agent_over(
            "a1",
            Arc::new(Endless {
                id: "h1".into(),
                produced: produced.clone(),
            }),
        )
        .await;
    let remote = RemoteHost::new("h1", conn);
    let mut export = remote
        .export_volume(&ExportRequest::new("v"))
        .await
        .unwrap();
    assert!(export.stream.next().await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = produced.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        produced.load(Ordering::Relaxed),
        held,
        "the agent stops producing"
    );
    assert!(held < BOUND, "{held} bytes read ahead");
    // The connection still serves other calls meanwhile.
    assert_eq!(
        remote.snapshot().await.unwrap_err().message,
        "not part of this test"
    );
}

#[tokio::test]
async fn flow_control_holds_back_an_import_the_agent_does_not_read() {
    let server = Server::start().await;
    let (conn, _agent) = server
        .agent_over(
            "a1",
            Arc::new(Endless {
                id: "h1".into(),
                produced: Arc::default(),
            }),
        )
        .await;
    let remote = RemoteHost::new("h1", conn);
    let produced = Arc::new(AtomicU64::new(0));
    let counter = produced.clone();
    let mut seed = 2;
    let endless = futures_util::stream::repeat_with(move || {
        counter.fetch_add(CHUNK as u64, Ordering::Relaxed);
        Ok(noise(&mut seed))
    })
    .boxed();
    let target = VolumeTarget {
        name: "v".into(),
        labels: Default::default(),
        expected_bytes: None,
    };
    let target = ImportRequest::new(target);
    let import = remote.import_volume(&target, endless, no_progress());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), import)
            .await
            .is_err(),
        "the import waits on the agent"
    );
    let held = produced.load(Ordering::Relaxed);
    assert!(held < BOUND, "{held} bytes sent ahead");
}

#[tokio::test]
async fn an_exports_manifest_is_handed_out_once_and_only_for_its_volume() {
    use axum::body::Body;
    use tower::ServiceExt;
    let fake = Arc::new(FakeHost::new("h1"));
    fake.seed_stack(fixture().stack, &[("web_data", b"abc")], 1);
    let api = agent_api(hello(), fake);
    let call = |method: &str, uri: &str| {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        api.clone().oneshot(req)
    };
    let resp = call("POST", "/v1/volumes/web_data/exports").await.unwrap();
    assert!(resp.status().is_success());
    let id = resp.headers()["x-dockmesh-export-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&body[..], b"abc");

    let other = call("GET", &format!("/v1/volumes/other/exports/{id}/manifest"))
        .await
        .unwrap();
    assert_eq!(
        other.status(),
        404,
        "another volume's manifest is not handed out"
    );
    let path = format!("/v1/volumes/web_data/exports/{id}/manifest");
    assert_eq!(call("GET", &path).await.unwrap().status(), 200);
    let again = call("GET", &path).await.unwrap();
    assert_eq!(again.status(), 404);
    let body = axum::body::to_bytes(again.into_body(), 1 << 20)
        .await
        .unwrap();
    let err: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["kind"], "not_found");
}

#[tokio::test]
async fn an_export_cut_off_by_a_lost_agent_ends_in_an_error_not_a_short_volume() {
    let server = Server::start().await;
    let (conn, agent) = server
        .agent_over(
            "a1",
            Arc::new(Endless {
                id: "h1".into(),
                produced: Arc::default(),
            }),
        )
        .await;
    let remote = RemoteHost::new("h1", conn);
    let mut export = remote
        .export_volume(&ExportRequest::new("v"))
        .await
        .unwrap();
    assert!(export.stream.next().await.unwrap().is_ok());
    agent.abort();
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match export.stream.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends once the agent is gone");
    assert!(
        matches!(last, Some(Err(_))),
        "a cut-off stream ends in an error"
    );
    assert!(export.manifest.take().is_err(), "and has no manifest");
    assert_eq!(
        remote.snapshot().await.unwrap_err().kind,
        RuntimeErrorKind::Unreachable
    );
}

async fn body_of(resp: axum::response::Response) -> Vec<u8> {
    axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn the_agent_compresses_an_export_when_asked_and_refuses_unknown_codings() {
    use tower::ServiceExt;
    let host = Arc::new(FakeHost::new("h1"));
    let content = vec![b'a'; 4 << 20];
    host.seed_stack(fixture().stack, &[("web_data", &content)], 1 << 20);
    let api = agent_api(hello(), host.clone());
    let export = |zstd: bool| {
        let mut req = axum::http::Request::post("/v1/volumes/web_data/exports");
        if zstd {
            req = req.header("accept-encoding", "gzip, zstd");
        }
        api.clone()
            .oneshot(req.body(axum::body::Body::empty()).unwrap())
    };
    let plain = export(false).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = body_of(plain).await;
    let packed = export(true).await.unwrap();
    assert_eq!(packed.headers()["content-encoding"], "zstd");
    let packed = body_of(packed).await;
    assert!(
        packed.len() * 100 < plain.len(),
        "{} bytes on the wire for {}",
        packed.len(),
        plain.len()
    );
    assert_eq!(zstd::decode_all(&packed[..]).unwrap(), plain);

    // An import in a coding the agent does not know is refused before anything is written.
    let req = axum::http::Request::put("/v1/volumes/scratch/data")
        .header("content-encoding", "gzip")
        .header(
            "x-dockmesh-volume-target",
            hex::encode(br#"{"name":"scratch","labels":{},"expected_bytes":null}"#),
        )
        .body(axum::body::Body::from(plain))
        .unwrap();
    let resp = api.clone().oneshot(req).await.unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    let body = String::from_utf8(body_of(resp).await).unwrap();
    assert!(body.contains("only zstd"), "{body}");
    assert!(host.volume("scratch").is_none(), "nothing imported");
}

/// The zstd frame's magic number, the first bytes of a compressed stream.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Import `data`, coded as zstd, into `web_data` on `host`.
async fn import_zstd(
    host: &RemoteHost,
    data: dockmesh_core::ports::ByteStream,
    progress: dockmesh_core::ports::Progress,
) -> Result<dockmesh_core::manifest::VolumeManifest, dockmesh_core::ports::RuntimeError> {
    let into = VolumeTarget {
        name: "web_data".into(),
        labels: Default::default(),
        expected_bytes: None,
    };
    let into = ImportRequest::new(into).coded(StreamCoding::Zstd);
    host.import_volume(&into, data, progress).await
}

/// A stream of the one chunk `bytes`.
fn once(bytes: impl Into<bytes::Bytes>) -> dockmesh_core::ports::ByteStream {
    futures_util::stream::iter(vec![Ok(bytes.into())]).boxed()
}

#[tokio::test]
async fn a_compressed_stream_goes_between_two_remote_hosts_without_being_decoded() {
    let server = Server::start().await;
    let source_fake = Arc::new(FakeHost::new("src"));
    let target_fake = Arc::new(FakeHost::new("dst"));
    // 8 MiB of text: compressible, so the bytes relayed are far fewer than the volume's.
    let content: Vec<u8> = (0..)
        .flat_map(|i: u64| format!("{i}\n").into_bytes())
        .take(8 << 20)
        .collect();
    source_fake.seed_stack(fixture().stack, &[("web_data", &content)], 1 << 20);
    let (src_conn, _a) = server.agent("src-agent", source_fake.clone()).await;
    let (dst_conn, _b) = server.agent("dst-agent", target_fake.clone()).await;
    let source = RemoteHost::new("src", src_conn);
    let target = RemoteHost::new("dst", dst_conn);
    assert_eq!(source.stream_codings(), [StreamCoding::Zstd]);
    assert_eq!(target.stream_codings(), [StreamCoding::Zstd]);
    // Asked for plain, an export is plain.
    let plain = source
        .export_volume(&ExportRequest::new("web_data").coded(StreamCoding::Plain))
        .await
        .unwrap();
    assert_eq!(plain.coding, StreamCoding::Plain);
    let plain: Vec<u8> = plain.stream.map(|c| c.unwrap().to_vec()).concat().await;
    assert_eq!(plain, content);

    let export = source
        .export_volume(&ExportRequest::new("web_data").coded(StreamCoding::Zstd))
        .await
        .unwrap();
    assert_eq!(export.coding, StreamCoding::Zstd);
    let relayed = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let copy = relayed.clone();
    let stream = export
        .stream
        .inspect(move |c| {
            if let Ok(c) = c {
                copy.lock().unwrap().extend_from_slice(c);
            }
        })
        .boxed();
    let told = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let seen = told.clone();
    let imported = target
        .import_volume(
            &ImportRequest::new(VolumeTarget {
                name: "web_data".into(),
                labels: Default::default(),
                expected_bytes: Some(content.len() as u64),
            })
            .coded(export.coding),
            stream,
            Arc::new(move |n| seen.lock().unwrap().push(n)),
        )
        .await
        .unwrap();
    let exported = export.manifest.take().expect("the manifest once streamed");
    assert_eq!(exported, imported);
    assert_eq!(target_fake.volume("web_data").unwrap(), content);

    // What went through the server is the source agent's zstd, as it was made.
    let relayed = relayed.lock().unwrap().clone();
    assert_eq!(relayed[..4], ZSTD_MAGIC);
    assert!(
        relayed.len() * 2 < content.len(),
        "{} bytes relayed",
        relayed.len()
    );
    assert_eq!(zstd::decode_all(&relayed[..]).unwrap(), content);
    // The target's agent told the bytes of the volume's stream it took in, up to all of them.
    let told = told.lock().unwrap().clone();
    assert!(told.windows(2).all(|w| w[0] <= w[1]), "{told:?}");
    assert_eq!(told.last(), Some(&(content.len() as u64)), "{told:?}");
}

#[tokio::test]
async fn a_coded_stream_that_does_not_decode_fails_the_import_with_its_kind() {
    let server = Server::start().await;
    let target_fake = Arc::new(FakeHost::new("dst"));
    let (dst_conn, _b) = server.agent("dst-agent", target_fake.clone()).await;
    let target = RemoteHost::new("dst", dst_conn);
    let mut garbage = ZSTD_MAGIC.to_vec();
    garbage.extend_from_slice(&[0xff; 4096]);
    let err = import_zstd(&target, once(garbage), no_progress())
        .await
        .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
    assert!(err.message.contains("zstd"), "{err}");
    assert!(target_fake.volume("web_data").is_none());
}

#[tokio::test]
async fn an_agent_answers_an_import_in_lines_when_asked() {
    use dockmesh_http::channel::wire::{ImportLine, import_lines};
    use tower::ServiceExt;
    let host = Arc::new(FakeHost::new("h1"));
    let api = agent_api(hello(), host.clone());
    let content = vec![b'x'; 1 << 20];
    let req = axum::http::Request::put("/v1/volumes/scratch/data")
        .header("x-dockmesh-progress", "lines")
        .header(
            "x-dockmesh-volume-target",
            hex::encode(br#"{"name":"scratch","labels":{},"expected_bytes":null}"#),
        )
        .body(axum::body::Body::from(content.clone()))
        .unwrap();
    let resp = api.clone().oneshot(req).await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<ImportLine> = import_lines(resp.into_body().into_data_stream())
        .map(|l| l.unwrap())
        .collect()
        .await;
    let n = lines.len();
    assert!(n >= 2, "{lines:?}");
    assert_eq!(lines[n - 2], ImportLine::Taken(content.len() as u64));
    match &lines[n - 1] {
        ImportLine::Manifest(m) => assert_eq!(m.content_bytes(), content.len() as u64),
        other => panic!("{other:?}"),
    }
    assert_eq!(host.volume("scratch").unwrap(), content);

    // Without the header, the answer is the manifest alone, as before.
    let req = axum::http::Request::put("/v1/volumes/scratch/data")
        .header(
            "x-dockmesh-volume-target",
            hex::encode(br#"{"name":"scratch","labels":{},"expected_bytes":null}"#),
        )
        .body(axum::body::Body::from(content.clone()))
        .unwrap();
    let resp = api.oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn an_import_answered_badly_in_lines_is_an_error_that_says_so() {
    let server = Server::start().await;
    // An agent whose import answers in lines it should not: one not understood, or none
    // that ends the import.
    let answer = |body: &'static str| {
        axum::Router::new().route(
            "/v1/volumes/{volume}/data",
            axum::routing::put(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
                    body,
                )
            }),
        )
    };
    let target = |conn| RemoteHost::new("dst", conn);
    let import = |host: RemoteHost| async move {
        import_zstd(&host, once(ZSTD_MAGIC.to_vec()), no_progress())
            .await
            .unwrap_err()
    };
    let (conn, _a) = server
        .agent_serving("odd-agent", answer("{\"taken\":1}\n{\"finished\":true}\n"))
        .await;
    let err = import(target(conn)).await;
    assert_eq!(err.kind, RuntimeErrorKind::Engine, "{err}");
    assert!(err.message.contains("answered an import badly"), "{err}");
    assert!(err.message.contains("finished"), "{err}");

    let (conn, _b) = server
        .agent_serving("short-agent", answer("{\"taken\":1}\n"))
        .await;
    let err = import(target(conn)).await;
    assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
    assert!(err.message.contains("ended before its manifest"), "{err}");
}

#[tokio::test]
async fn an_export_from_a_point_is_refused_when_the_agent_does_not_say_it_skipped() {
    let server = Server::start().await;
    // An agent that predates resuming: it answers the whole stream and does not repeat the
    // header.
    let old = axum::Router::new().route(
        "/v1/volumes/{volume}/exports",
        axum::routing::post(|| async {
            (
                [("x-dockmesh-export-id", "1")],
                bytes::Bytes::from_static(b"the whole stream"),
            )
        }),
    );
    let (conn, _a) = server.agent_serving("old-agent", old).await;
    let host = RemoteHost::new("src", conn);
    let from = ExportRequest::new("web_data").from_byte(Some(5));
    let err = host.export_volume(&from).await.err().unwrap();
    assert_eq!(err.kind, RuntimeErrorKind::Engine, "{err}");
    assert!(err.message.contains("predates resuming"), "{err}");
    // From the start, the same agent is fine.
    let whole = ExportRequest::new("web_data");
    assert!(host.export_volume(&whole).await.is_ok());
}

#[tokio::test]
async fn an_import_whose_agent_goes_away_while_it_answers_is_unreachable() {
    let server = Server::start().await;
    // An agent that says it took a byte in, then never finishes.
    let stalls = axum::Router::new().route(
        "/v1/volumes/{volume}/data",
        axum::routing::put(|| async {
            let first = futures_util::stream::once(async {
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{\"taken\":1}\n"))
            });
            (
                [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
                axum::body::Body::from_stream(first.chain(futures_util::stream::pending())),
            )
        }),
    );
    let (conn, agent) = server.agent_serving("stalling-agent", stalls).await;
    let host = RemoteHost::new("dst", conn);
    let told = Arc::new(AtomicU64::new(0));
    let seen = told.clone();
    let import = tokio::spawn(async move {
        let progress = Arc::new(move |n| seen.store(n, Ordering::SeqCst));
        import_zstd(&host, once(ZSTD_MAGIC.to_vec()), progress).await
    });
    for _ in 0..200 {
        if told.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        told.load(Ordering::SeqCst),
        1,
        "the agent's first line was told"
    );
    agent.abort();
    let err = tokio::time::timeout(Duration::from_secs(20), import)
        .await
        .expect("the import ends once its agent is gone")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
}
