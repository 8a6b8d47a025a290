//! `dockmesh server`: the reference server on the embedded default (SQLite in the data
//! directory, the local Docker engine as host `local`) or PostgreSQL and engines given by
//! `--host NAME=ENDPOINT`.

use super::db::Location;
use anyhow::Context;
use async_trait::async_trait;
use clap::{Args, ValueEnum};
use dockmesh_core::HostId;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    AdoptReport, ByteStream, Clock, DeployReport, HealthReport, HostRuntime, IdGen, Progress,
    ProjectInfo, RuntimeError, RuntimeErrorKind, StackStatus, VolumeExport, VolumeTarget,
};
use dockmesh_core::snapshot::HostSnapshot;
use dockmesh_core::types::StackFiles;
use dockmesh_docker::{DockerConfig, DockerRuntime, Endpoint};
use dockmesh_http::{Hosts, ServerConfig, ServerState};
use dockmesh_sqlx::{OpenOptions, ServerLock, SqlStore};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `dockmesh server …`
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    location: Location,
    /// Where the REST API listens.
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKMESH_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Where agents would connect (mTLS). The agent channel is not built yet: nothing listens.
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKMESH_AGENT_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    agent_listen: SocketAddr,
    /// Do not manage the local Docker engine (`DOCKER_HOST`, else /var/run/docker.sock) as
    /// host `local`.
    #[arg(long, env = "DOCKMESH_NO_LOCAL_HOST")]
    no_local_host: bool,
    /// A host reached by its Docker engine's socket: `NAME=unix:///path/docker.sock` or
    /// `NAME=tcp://addr:port`. Repeat for more hosts (comma-separated in the variable).
    #[arg(
        long = "host",
        value_name = "NAME=ENDPOINT",
        env = "DOCKMESH_HOSTS",
        value_delimiter = ','
    )]
    hosts: Vec<String>,
    /// How long a migrated stack's source is kept for rollback, in hours.
    #[arg(
        long,
        value_name = "HOURS",
        env = "DOCKMESH_RETENTION_HOURS",
        default_value_t = 72
    )]
    retention_hours: u32,
    /// How long a migration lease lasts unless renewed, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_LEASE_TTL",
        default_value_t = 60
    )]
    lease_ttl: u32,
    /// The longest wait between two attempts at a migration whose host does not answer.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_MAX_RETRY_DELAY",
        default_value_t = 60
    )]
    max_retry_delay: u64,
    /// For crash tests only: kill the server just before this migration command
    /// (`StopSource`, `TransferVolume`, …) or after `bytes:N` bytes of a transfer.
    #[arg(long, hide = true, env = "DOCKMESH_TEST_CRASH_AT")]
    test_crash_at: Option<String>,
    /// Log format.
    #[arg(long, value_enum, env = "DOCKMESH_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

struct UuidV7;
impl IdGen for UuidV7 {
    fn new_id(&self) -> uuid::Uuid {
        uuid::Uuid::now_v7()
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Run `dockmesh server`: exit 0 after a clean shutdown, 1 when the database is refused or
/// held by another server, 2 on other errors.
pub fn run(args: ServerArgs) -> ExitCode {
    init_logging(args.log_format);
    tracing::info!("dockmesh v{} starting", env!("CARGO_PKG_VERSION"));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return super::db::fail(anyhow::Error::from(e).context("starting the runtime")),
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            super::db::fail(e)
        }
    }
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let data_dir = args.location.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let target = args.location.target()?;
    let holder = format!("dockmesh server (pid {})", std::process::id());
    let lock = ServerLock::acquire(&target, &holder).await?;
    let (store, _report) =
        SqlStore::open_with(&target, &OpenOptions::in_data_dir(&data_dir)).await?;
    tracing::info!(backend = ?store.backend(), "database open");
    let hosts = build_hosts(&args, &data_dir)?;
    tracing::info!(hosts = ?hosts.ids(), "hosts");
    let config = ServerConfig {
        retention: jiff::SignedDuration::from_hours(i64::from(args.retention_hours)),
        lease_ttl: jiff::SignedDuration::from_secs(i64::from(args.lease_ttl.max(1))),
        max_retry_delay: Duration::from_secs(args.max_retry_delay.max(1)),
        crash_at: args.test_crash_at.clone(),
        ..ServerConfig::default()
    };
    let store = Arc::new(store);
    let state = ServerState::new(
        store.clone(),
        hosts,
        Arc::new(SystemClock),
        Arc::new(UuidV7),
        config,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(
        "HTTP listening on {}",
        listener
            .local_addr()
            .context("reading the listener's address")?
    );
    tracing::warn!(
        "Agent listener on {} not started: the agent channel is not built yet; hosts are Docker engines reached by socket (--host NAME=ENDPOINT)",
        args.agent_listen
    );
    dockmesh_http::serve(listener, state, shutdown_signal()).await?;
    store.close().await;
    lock.release().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("interrupt received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// `local` (unless `--no-local-host`) and every `--host NAME=ENDPOINT`.
fn build_hosts(args: &ServerArgs, data_dir: &Path) -> anyhow::Result<Hosts> {
    let mut specs: Vec<(String, Endpoint)> = Vec::new();
    if !args.no_local_host {
        let endpoint = Endpoint::resolve(None, std::env::var("DOCKER_HOST").ok().as_deref())
            .map_err(anyhow::Error::msg)?;
        specs.push(("local".into(), endpoint));
    }
    for spec in &args.hosts {
        let (name, endpoint) = spec.split_once('=').with_context(|| {
            format!("--host {spec:?}: expected NAME=ENDPOINT, e.g. b=unix:///run/b/docker.sock")
        })?;
        dockmesh_core::types::validate_stack_name(name)
            .map_err(|e| anyhow::anyhow!("--host {spec:?}: the host name is invalid: {e}"))?;
        let endpoint =
            Endpoint::parse(endpoint).map_err(|e| anyhow::anyhow!("--host {spec:?}: {e}"))?;
        specs.push((name.to_owned(), endpoint));
    }
    if specs.is_empty() {
        anyhow::bail!("no hosts: drop --no-local-host or give --host NAME=ENDPOINT");
    }
    let hosts = Hosts::new();
    for (name, endpoint) in specs {
        tracing::info!(host = %name, %endpoint, "host");
        let config = DockerConfig::new(data_dir.join("hosts").join(&name).join("stacks"))
            .with_endpoint(endpoint);
        hosts
            .add(Arc::new(EngineHost::new(
                HostId::from(name.as_str()),
                config,
            )))
            .map_err(anyhow::Error::msg)?;
    }
    Ok(hosts)
}

/// A Docker engine reached by socket, connected on first use (and again after a failed
/// connection), so that a server starts while one of its engines is down.
struct EngineHost {
    id: HostId,
    config: DockerConfig,
    runtime: tokio::sync::OnceCell<Arc<DockerRuntime>>,
}

impl EngineHost {
    fn new(id: HostId, config: DockerConfig) -> Self {
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
}
