//! [`DockerRuntime`]: connecting to an engine, and the [`HostRuntime`] it implements.

use crate::error::engine;
use async_trait::async_trait;
use bollard::Docker;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{
    AdoptReport, ByteStream, DeployReport, ExportRequest, HealthReport, HostEvents, HostProjects,
    HostReleases, HostRuntime, ImportRequest, Progress, ProjectInfo, RuntimeError,
    RuntimeErrorKind, StackStatus, VolumeExport,
};
use dockmesh_core::snapshot::HostSnapshot;
use dockmesh_core::types::{HostId, StackFiles};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The default engine socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket path (the engine is on this machine).
    Unix(PathBuf),
    /// `host:port` of an engine listening on plain TCP.
    Tcp(String),
    /// `host:port` of an engine listening on TCP with TLS (`dockerd --tlsverify`): the engine
    /// is verified against `certs.ca` and this side proves itself with `certs.cert`/`certs.key`.
    TcpTls {
        /// `host:port`.
        addr: String,
        /// The CA, client certificate and key.
        certs: TlsFiles,
    },
}

/// The files of a TLS connection to an engine, in the layout of Docker's `DOCKER_CERT_PATH`:
/// `ca.pem`, `cert.pem`, `key.pem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA the engine's certificate must chain to.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client certificate's key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` of `dir`; each must exist.
    pub fn from_dir(dir: &Path) -> Result<TlsFiles, String> {
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        for f in [&files.ca, &files.cert, &files.key] {
            if !f.is_file() {
                return Err(format!(
                    "{} is missing: a TLS directory holds ca.pem, cert.pem and key.pem (as DOCKER_CERT_PATH does)",
                    f.display()
                ));
            }
        }
        Ok(files)
    }
}

impl Endpoint {
    /// Parse `unix:///path`, `/path`, `tcp://host:port` or `http://host:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("engine endpoint {text:?} has no socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if text.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(text)));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(addr) = text.strip_prefix(scheme) {
                let addr = addr.trim_end_matches('/');
                if addr.is_empty() || !addr.contains(':') {
                    return Err(format!(
                        "engine endpoint {text:?} needs a host and a port (tcp://host:2375)"
                    ));
                }
                return Ok(Endpoint::Tcp(addr.to_owned()));
            }
        }
        Err(format!(
            "engine endpoint {text:?} is not supported: use unix:///path/to/docker.sock or tcp://host:port (with TLS files for an engine that verifies its clients)"
        ))
    }

    /// The endpoint named by `DOCKER_HOST`, when it is set and not empty.
    pub fn from_env() -> Option<Result<Self, String>> {
        Endpoint::from_docker_host(std::env::var("DOCKER_HOST").ok().as_deref())
    }

    /// This `tcp://` endpoint with TLS, from a directory holding `ca.pem`, `cert.pem` and
    /// `key.pem`. A unix socket takes no TLS.
    pub fn with_tls(self, dir: &Path) -> Result<Self, String> {
        match self {
            Endpoint::Tcp(addr) | Endpoint::TcpTls { addr, .. } => Ok(Endpoint::TcpTls {
                addr,
                certs: TlsFiles::from_dir(dir)?,
            }),
            Endpoint::Unix(p) => Err(format!(
                "unix://{} is a local socket: TLS is only for tcp:// endpoints",
                p.display()
            )),
        }
    }

    /// For a plain `tcp://` endpoint whose host is not a loopback address: the host. Such an
    /// engine takes commands (root on its machine) from anyone who reaches its port, and sees
    /// volume data in the clear; a server refuses it unless the operator allows it by name.
    pub fn plain_on_network(&self) -> Option<&str> {
        let Endpoint::Tcp(addr) = self else {
            return None;
        };
        let host = match addr.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => addr.as_str(),
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (!loopback).then_some(host)
    }

    /// The endpoint a `DOCKER_HOST` value names (`None` when unset or empty).
    pub fn from_docker_host(value: Option<&str>) -> Option<Result<Self, String>> {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| Endpoint::parse(v).map_err(|e| format!("DOCKER_HOST: {e}")))
    }

    /// The endpoint to use: the configured one, else `DOCKER_HOST`, else [`DEFAULT_SOCKET`].
    pub fn resolve(
        configured: Option<&Endpoint>,
        docker_host: Option<&str>,
    ) -> Result<Self, String> {
        match configured {
            Some(e) => Ok(e.clone()),
            None => Endpoint::from_docker_host(docker_host)
                .unwrap_or_else(|| Ok(Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)))),
        }
    }

    /// True when the engine runs on this machine (a unix socket): then the host's own
    /// `/proc/meminfo` and filesystem describe the engine's host.
    pub fn is_local(&self) -> bool {
        matches!(self, Endpoint::Unix(_))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::TcpTls { addr, .. } => write!(f, "tcp://{addr} (TLS)"),
        }
    }
}

/// How to reach the engine and where stack files live.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DockerConfig {
    /// The engine; `None` means `DOCKER_HOST` when set, else [`DEFAULT_SOCKET`].
    pub endpoint: Option<Endpoint>,
    /// Where stack files are kept: `<stacks_dir>/<stack>/compose.yaml` and `.env`.
    pub stacks_dir: PathBuf,
    /// Time limit of one engine request. Stopping containers, health waits and volume streams
    /// can take long, so this is generous.
    pub request_timeout: Duration,
    /// How long a service without a healthcheck must stay running to count as healthy.
    pub stable_grace: Duration,
    /// Added to each healthcheck's own budget (start_period + interval × retries + timeout).
    pub health_margin: Duration,
    /// Time between two looks at the engine while waiting.
    pub poll_interval: Duration,
    /// Read and write volumes in their directories when the engine is on this machine (a Unix
    /// socket), the volume is a plain `local` one and this process runs as root; else, or when
    /// `false`, through the engine's archive endpoints. Default `true`. See
    /// [`volume`](crate::volume) and [`VolumeAccess`](crate::volume::VolumeAccess).
    pub volume_fast_path: bool,
}

impl DockerConfig {
    /// The defaults, with stack files under `stacks_dir`.
    pub fn new(stacks_dir: impl Into<PathBuf>) -> Self {
        DockerConfig {
            endpoint: None,
            stacks_dir: stacks_dir.into(),
            request_timeout: Duration::from_secs(3600),
            stable_grace: Duration::from_secs(3),
            health_margin: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            volume_fast_path: true,
        }
    }

    /// Allow or forbid the file-system fast path for volumes (allowed by default).
    pub fn with_volume_fast_path(mut self, allowed: bool) -> Self {
        self.volume_fast_path = allowed;
        self
    }

    /// Use this engine instead of `DOCKER_HOST` or the default socket.
    pub fn with_endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// Set how long a service without a healthcheck must stay running.
    pub fn with_stable_grace(mut self, grace: Duration) -> Self {
        self.stable_grace = grace;
        self
    }

    /// Set the margin added to healthcheck budgets.
    pub fn with_health_margin(mut self, margin: Duration) -> Self {
        self.health_margin = margin;
        self
    }

    /// Set the engine request time limit.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// One Docker engine as a dockmesh [`HostRuntime`].
pub struct DockerRuntime {
    pub(crate) host: HostId,
    pub(crate) docker: Docker,
    pub(crate) endpoint: Endpoint,
    pub(crate) api_version: String,
    pub(crate) config: DockerConfig,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("host", &self.host)
            .field("endpoint", &self.endpoint)
            .field("api_version", &self.api_version)
            .field("stacks_dir", &self.config.stacks_dir)
            .finish()
    }
}

impl DockerRuntime {
    /// Connect to the engine, negotiate the API version, and check that it answers.
    pub async fn connect(host: HostId, config: DockerConfig) -> Result<Self, RuntimeError> {
        let endpoint = Endpoint::resolve(
            config.endpoint.as_ref(),
            std::env::var("DOCKER_HOST").ok().as_deref(),
        )
        .map_err(|m| RuntimeError::new(RuntimeErrorKind::Unreachable, m))?;
        let timeout = config.request_timeout.as_secs().max(1);
        let docker = match &endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                timeout,
                bollard::API_DEFAULT_VERSION,
            ),
            Endpoint::Tcp(addr) => Docker::connect_with_http(
                &format!("tcp://{addr}"),
                timeout,
                bollard::API_DEFAULT_VERSION,
            ),
            Endpoint::TcpTls { addr, certs } => {
                // bollard builds its TLS configuration with the process's provider: the one
                // this project compiles in (installing it again is a no-op).
                let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
                Docker::connect_with_ssl(
                    &format!("tcp://{addr}"),
                    &certs.key,
                    &certs.cert,
                    &certs.ca,
                    timeout,
                    bollard::API_DEFAULT_VERSION,
                )
            }
        }
        .map_err(|e| engine(format!("connecting to the Docker engine at {endpoint}"), e))?;
        let docker = docker.negotiate_version().await.map_err(|e| {
            engine(
                format!("negotiating the API version with the Docker engine at {endpoint}"),
                e,
            )
        })?;
        let v = docker.client_version();
        let api_version = format!("{}.{}", v.major_version, v.minor_version);
        docker
            .ping()
            .await
            .map_err(|e| engine(format!("pinging the Docker engine at {endpoint}"), e))?;
        Ok(DockerRuntime {
            host,
            docker,
            endpoint,
            api_version,
            config,
            locks: Mutex::new(HashMap::new()),
        })
    }

    /// How this runtime's volume transfers reach the data: the file system where
    /// [`DockerConfig::volume_fast_path`] allows it, the engine is reached through a Unix socket
    /// and this process runs as root.
    pub fn volume_access(&self) -> crate::volume::VolumeAccess {
        if self.config.volume_fast_path
            && self.endpoint.is_local()
            && rustix::process::geteuid().is_root()
        {
            crate::volume::VolumeAccess::FileSystem
        } else {
            crate::volume::VolumeAccess::Archive
        }
    }

    /// The bollard client, on the negotiated API version.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Where the engine listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The API version agreed with the engine (e.g. `1.41`).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The configuration this runtime was connected with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The directory holding a stack's files.
    pub fn stack_dir(&self, stack: &str) -> PathBuf {
        self.config.stacks_dir.join(stack)
    }

    /// The stacks directory.
    pub fn stacks_dir(&self) -> &Path {
        &self.config.stacks_dir
    }

    /// Serialise the operations on one stack (deploys, stops, starts, removals).
    pub(crate) async fn lock_stack(&self, stack: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(stack.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// A stack name that is safe to use in paths and engine names.
pub(crate) fn checked_stack(stack: &str) -> Result<(), RuntimeError> {
    dockmesh_core::types::validate_stack_name(stack)
        .map_err(|m| RuntimeError::new(RuntimeErrorKind::InvalidStack, m))
}

#[async_trait]
impl HostRuntime for DockerRuntime {
    fn host_id(&self) -> &HostId {
        &self.host
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

    async fn snapshot(&self) -> Result<HostSnapshot, RuntimeError> {
        crate::snapshot::host_snapshot(self).await
    }

    async fn write_stack_files(&self, files: &StackFiles) -> Result<(), RuntimeError> {
        checked_stack(&files.name)?;
        crate::files::write(&self.config.stacks_dir, files).await
    }

    async fn read_stack_files(&self, stack: &str) -> Result<Option<StackFiles>, RuntimeError> {
        checked_stack(stack)?;
        crate::files::read(&self.config.stacks_dir, stack).await
    }

    async fn remove_stack_files(&self, stack: &str) -> Result<(), RuntimeError> {
        checked_stack(stack)?;
        crate::files::remove(&self.config.stacks_dir, stack).await
    }

    async fn deploy(&self, files: &StackFiles) -> Result<DeployReport, RuntimeError> {
        checked_stack(&files.name)?;
        let _guard = self.lock_stack(&files.name).await;
        crate::deploy::deploy(self, files).await
    }

    async fn stop_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        checked_stack(stack)?;
        let _guard = self.lock_stack(stack).await;
        crate::deploy::stop(self, stack).await
    }

    async fn start_stack(&self, stack: &str) -> Result<(), RuntimeError> {
        checked_stack(stack)?;
        let _guard = self.lock_stack(stack).await;
        crate::deploy::start(self, stack).await
    }

    async fn remove_stack(&self, stack: &str, volumes: bool) -> Result<(), RuntimeError> {
        checked_stack(stack)?;
        let _guard = self.lock_stack(stack).await;
        crate::deploy::remove(self, stack, volumes).await
    }

    async fn stack_status(&self, stack: &str) -> Result<StackStatus, RuntimeError> {
        checked_stack(stack)?;
        crate::deploy::status(self, stack).await
    }

    async fn wait_healthy(&self, stack: &str) -> Result<HealthReport, RuntimeError> {
        checked_stack(stack)?;
        crate::health::wait_stack(self, stack).await
    }

    async fn export_volume(&self, req: &ExportRequest) -> Result<VolumeExport, RuntimeError> {
        // Whole and plain only: an agent resumes and codes the stream on the way.
        req.whole_only(&self.host)?;
        crate::volume::export_volume_with(&self.docker, &req.volume, self.volume_access()).await
    }

    async fn import_volume(
        &self,
        req: &ImportRequest,
        data: ByteStream,
        progress: Progress,
    ) -> Result<VolumeManifest, RuntimeError> {
        req.check(&self.host, self.stream_codings(), false)?;
        crate::volume::import_volume_with(
            &self.docker,
            &req.target,
            data,
            progress,
            self.volume_access(),
        )
        .await
    }

    async fn remove_volume(&self, volume: &str) -> Result<(), RuntimeError> {
        crate::volume::remove_volume(&self.docker, volume).await
    }
}

#[async_trait]
impl HostEvents for DockerRuntime {
    async fn follow_events(&self) -> Result<dockmesh_core::ports::EventStream, RuntimeError> {
        Ok(crate::events::stream(&self.docker))
    }
}

#[async_trait]
impl HostReleases for DockerRuntime {
    async fn resolve_release(
        &self,
        files: &StackFiles,
    ) -> Result<Vec<dockmesh_core::release::ServiceShape>, RuntimeError> {
        checked_stack(&files.name)?;
        crate::deploy::resolve_release(self, files).await
    }

    async fn ensure_images(&self, images: &[String]) -> Result<(), RuntimeError> {
        crate::deploy::ensure_images(self, images).await
    }
}

#[async_trait]
impl HostProjects for DockerRuntime {
    async fn list_projects(&self) -> Result<Vec<ProjectInfo>, RuntimeError> {
        Ok(crate::adopt::find_projects(&self.docker)
            .await?
            .into_iter()
            .map(|p| ProjectInfo {
                services: p.containers.keys().cloned().collect(),
                running: p.running,
                config_files: p
                    .config_files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect(),
                name: p.name,
            })
            .collect())
    }

    async fn adopt_project(
        &self,
        name: &str,
        given: Option<&StackFiles>,
    ) -> Result<AdoptReport, RuntimeError> {
        checked_stack(name)?;
        let _guard = self.lock_stack(name).await;
        // Given files are read as if they sat in dockmesh's own directory for the stack.
        let given = given.map(|f| (f.clone(), self.stack_dir(name)));
        let adopted = crate::adopt::adopt(&self.docker, name, given)
            .await
            .map_err(|e| {
                let kind = match &e {
                    crate::adopt::AdoptError::NotFound { .. } => RuntimeErrorKind::NotFound,
                    crate::adopt::AdoptError::Engine(inner) => inner.kind,
                    _ => RuntimeErrorKind::InvalidStack,
                };
                let hint = e.hint().map(|h| format!(" {h}")).unwrap_or_default();
                let mut message = e.to_string();
                let mut cur = std::error::Error::source(&e);
                while let Some(c) = cur {
                    message = format!("{message}: {c}");
                    cur = c.source();
                }
                RuntimeError::new(kind, format!("{message}.{hint} Nothing was changed."))
            })?;
        crate::files::write(&self.config.stacks_dir, &adopted.files).await?;
        Ok(AdoptReport {
            files: adopted.files,
            containers: adopted.containers,
            renamed_on_next_deploy: adopted.renamed_on_next_deploy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok: &[(&str, Endpoint)] = &[
            (
                "unix:///var/run/docker.sock",
                Endpoint::Unix("/var/run/docker.sock".into()),
            ),
            (
                "/run/user/1000/docker.sock",
                Endpoint::Unix("/run/user/1000/docker.sock".into()),
            ),
            ("tcp://10.0.0.5:2375", Endpoint::Tcp("10.0.0.5:2375".into())),
            (
                "http://localhost:2375/",
                Endpoint::Tcp("localhost:2375".into()),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(&Endpoint::parse(text).unwrap(), want, "{text}");
        }
        for bad in [
            "unix://",
            "tcp://host",
            "https://h:2376",
            "ssh://me@h",
            "docker.sock",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Endpoint::Tcp("h:1".into()).to_string(), "tcp://h:1");
        assert_eq!(Endpoint::Unix("/s".into()).to_string(), "unix:///s");
        assert!(Endpoint::Unix("/s".into()).is_local() && !Endpoint::Tcp("h:1".into()).is_local());
    }

    #[test]
    fn plain_tcp_off_loopback_is_named() {
        for (addr, want) in [
            ("10.0.0.5:2375", Some("10.0.0.5")),
            ("docker.example:2375", Some("docker.example")),
            ("[2001:db8::1]:2375", Some("2001:db8::1")),
            ("127.0.0.1:2375", None),
            ("127.9.9.9:2375", None),
            ("[::1]:2375", None),
            ("LocalHost:2375", None),
        ] {
            assert_eq!(
                Endpoint::Tcp(addr.into()).plain_on_network(),
                want,
                "{addr}"
            );
        }
        assert_eq!(Endpoint::Unix("/s".into()).plain_on_network(), None);
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let tls = Endpoint::Tcp("10.0.0.5:2376".into())
            .with_tls(dir.path())
            .unwrap();
        assert_eq!(tls.plain_on_network(), None, "TLS is not plain");
        assert_eq!(tls.to_string(), "tcp://10.0.0.5:2376 (TLS)");
        assert!(!tls.is_local());
        match &tls {
            Endpoint::TcpTls { addr, certs } => {
                assert_eq!(addr, "10.0.0.5:2376");
                assert_eq!(certs.ca, dir.path().join("ca.pem"));
                assert_eq!(certs.cert, dir.path().join("cert.pem"));
                assert_eq!(certs.key, dir.path().join("key.pem"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(dir.path().join("key.pem")).unwrap();
        let e = Endpoint::Tcp("h:1".into())
            .with_tls(dir.path())
            .unwrap_err();
        assert!(e.contains("key.pem is missing"), "{e}");
        let e = Endpoint::Unix("/s".into())
            .with_tls(dir.path())
            .unwrap_err();
        assert!(e.contains("only for tcp://"), "{e}");
    }

    #[test]
    fn which_endpoint_is_used() {
        let explicit = Endpoint::Tcp("h:1".into());
        assert_eq!(
            Endpoint::resolve(Some(&explicit), Some("unix:///x")).unwrap(),
            explicit,
            "configured wins"
        );
        assert_eq!(
            Endpoint::resolve(None, Some("unix:///x")).unwrap(),
            Endpoint::Unix("/x".into()),
            "then DOCKER_HOST"
        );
        assert_eq!(
            Endpoint::resolve(None, Some("  ")).unwrap(),
            Endpoint::Unix(DEFAULT_SOCKET.into()),
            "empty is unset"
        );
        assert_eq!(
            Endpoint::resolve(None, None).unwrap(),
            Endpoint::Unix(DEFAULT_SOCKET.into())
        );
        assert!(
            Endpoint::resolve(None, Some("ssh://h"))
                .unwrap_err()
                .contains("DOCKER_HOST")
        );
    }
}
