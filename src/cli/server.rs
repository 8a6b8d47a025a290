//! `dockmesh server`: the reference server on the embedded default (SQLite in the data
//! directory, the local Docker engine as host `local`) or PostgreSQL and engines given by
//! `--host NAME=ENDPOINT`.

use super::db::Location;
use anyhow::Context;
use clap::{Args, ValueEnum};
use dockmesh_core::HostId;
use dockmesh_core::system::{SystemClock, UuidV7Ids};
use dockmesh_docker::{DockerConfig, Endpoint};
use dockmesh_http::server::{Hosts, ServerConfig, ServerState};
use dockmesh_sqlx::{OpenOptions, ServerLock, SqlStore};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

/// Volume data on the agent channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    /// zstd, level 1.
    Zstd,
    /// Uncompressed.
    None,
}

/// How volume transfers reach a volume's data on a host reached by socket or run by an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VolumePath {
    /// The volume's directory directly when the engine is on this machine (a Unix socket), the
    /// volume is a plain `local` one and dockmesh runs as root: faster, and it keeps sparse
    /// holes, nanosecond times and `user.*` attributes. Otherwise the engine's archive endpoints.
    Auto,
    /// Always the engine's archive endpoints.
    Archive,
}

impl VolumePath {
    /// Whether the file-system fast path may run.
    pub fn fast_path(self) -> bool {
        self == VolumePath::Auto
    }
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
    /// The API listener's certificate chain (PEM, the server's certificate first): serve
    /// HTTPS with it. Without it, a listener on a non-loopback address serves HTTPS with a
    /// certificate of the server's own CA (its fingerprint is printed at start).
    #[arg(
        long,
        value_name = "PEM",
        env = "DOCKMESH_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(
        long,
        value_name = "PEM",
        env = "DOCKMESH_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// A DNS name (or IP address) the own CA's certificate of the API listener carries
    /// besides the listen address and `localhost`. Repeat for more.
    #[arg(
        long = "tls-name",
        value_name = "NAME",
        env = "DOCKMESH_TLS_NAMES",
        value_delimiter = ','
    )]
    tls_names: Vec<String>,
    /// Serve plain HTTP on a non-loopback `--listen` (and `--metrics-listen`): only behind a
    /// TLS-terminating proxy, which must send `X-Forwarded-Proto: https` so dashboard
    /// cookies are `Secure`.
    #[arg(long, env = "DOCKMESH_INSECURE_HTTP", conflicts_with = "tls_cert")]
    insecure_http: bool,
    /// Serve `/metrics` without a token on this address of its own (HTTPS like the API
    /// listener unless loopback); on the API listener it needs an API token.
    #[arg(long, value_name = "ADDR", env = "DOCKMESH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Where agents connect (TLS 1.3 with client certificates from the server's own CA, kept
    /// in `<data-dir>/ca`).
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKMESH_AGENT_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    agent_listen: SocketAddr,
    /// The address agents dial (`host:port`), told to each agent when it enrolls; by default
    /// the host the agent reached the API at, with the agent listener's port.
    #[arg(long, value_name = "HOST:PORT", env = "DOCKMESH_AGENT_ADVERTISE")]
    agent_advertise: Option<String>,
    /// Run no agent listener: every host is an engine reached by socket, and agents cannot
    /// enroll.
    #[arg(long, env = "DOCKMESH_NO_AGENT_LISTENER")]
    no_agent_listener: bool,
    /// How long an agent's connection may stay silent before the server takes it for dead, in
    /// seconds (HTTP/2 PING every half of it).
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_AGENT_GRACE",
        default_value_t = 60
    )]
    agent_grace: u64,
    /// How volume data travels to and from agents: `zstd` (level 1) or `none` (for fast
    /// links where the CPU is the limit).
    #[arg(
        long,
        value_enum,
        env = "DOCKMESH_AGENT_COMPRESSION",
        default_value = "zstd"
    )]
    agent_compression: Compression,
    /// How volume data is read and written on the hosts this server reaches by socket.
    #[arg(long, value_enum, env = "DOCKMESH_VOLUME_PATH", default_value = "auto")]
    volume_path: VolumePath,
    /// The release public key (PEM, from `dockmesh release keygen`) that agent binaries are
    /// signed with; agents pin it on their first connection. By default
    /// `<data-dir>/release.pub` when it exists; without a key, agent upgrades are off.
    #[arg(long, value_name = "FILE", env = "DOCKMESH_RELEASE_KEY")]
    release_key: Option<PathBuf>,
    /// Where the signed agent binaries are (each with the `.release.json` written by
    /// `dockmesh release sign`); served to agents under `/api/v1/agent-binaries/`. By default
    /// `<data-dir>/agent-binaries`.
    #[arg(long, value_name = "DIR", env = "DOCKMESH_AGENT_BINARIES")]
    agent_binaries: Option<PathBuf>,
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
    /// TLS for a `tcp://` host whose engine verifies its clients (`dockerd --tlsverify`):
    /// `NAME=DIR`, DIR holding `ca.pem`, `cert.pem` and `key.pem` (Docker's `DOCKER_CERT_PATH`
    /// layout). Repeat for more hosts.
    #[arg(
        long = "host-tls",
        value_name = "NAME=DIR",
        env = "DOCKMESH_HOST_TLS",
        value_delimiter = ','
    )]
    host_tls: Vec<String>,
    /// Allow host NAME's plain `tcp://` engine on a non-loopback address. Whoever reaches such
    /// a port is root on its machine and sees volume data in the clear: give the host TLS
    /// (`--host-tls`) instead where you can. Repeat for more hosts.
    #[arg(
        long = "insecure-host",
        value_name = "NAME",
        env = "DOCKMESH_INSECURE_HOSTS",
        value_delimiter = ','
    )]
    insecure_hosts: Vec<String>,
    /// A host's policy on what compose content may ask of it, refused at deploy, upgrade and
    /// migration pre-flight: `HOST=RULE,RULE` with rules `no-privileged`, `no-host-namespaces`,
    /// `no-devices`, `no-cap-add`, `bind-prefixes=/ABS:/ABS`, or `strict` (all but the
    /// prefixes). Repeat for more hosts (`;`-separated in the variable). Bind mounts of the
    /// data directory are always refused on `local` and every `unix://` host.
    #[arg(
        long = "host-policy",
        value_name = "HOST=RULES",
        env = "DOCKMESH_HOST_POLICY",
        value_delimiter = ';'
    )]
    host_policies: Vec<String>,
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

pub(crate) fn init_logging(format: LogFormat) {
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
    tracing::info!("dockmesh v{} starting", super::VERSION);
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
    // What the listeners speak is decided first: refused flags change nothing.
    let transport = transport_of(&args, args.listen)?;
    let metrics_transport = match args.metrics_listen {
        Some(addr) => Some(transport_of(&args, addr)?),
        None => None,
    };
    let data_dir = args.location.data_dir.clone();
    super::db::private_dir(&data_dir, "the data directory")?;
    let target = args.location.target()?;
    let holder = format!("dockmesh server (pid {})", std::process::id());
    let lock = ServerLock::acquire(&target, &holder).await?;
    let (store, _report) =
        SqlStore::open_with(&target, &OpenOptions::in_data_dir(&data_dir)).await?;
    tracing::info!(backend = ?store.backend(), "database open");
    let hosts = build_hosts(&args, &data_dir)?;
    tracing::info!(hosts = ?hosts.ids(), "hosts");
    let agent_tcp = if args.no_agent_listener {
        None
    } else {
        let tcp = tokio::net::TcpListener::bind(args.agent_listen)
            .await
            .with_context(|| {
                format!(
                    "listening for agents on {} (choose another address with --agent-listen, \
                     or run without agents with --no-agent-listener)",
                    args.agent_listen
                )
            })?;
        Some(tcp)
    };
    let agent_port = match &agent_tcp {
        Some(tcp) => Some(
            tcp.local_addr()
                .context("reading the agent listener's address")?,
        ),
        None => None,
    };
    let agent_binaries = agent_binaries(&args, &data_dir)?;
    let config = ServerConfig {
        version: super::VERSION.to_owned(),
        agent_binaries,
        agent_port: agent_port.map(|a| a.port()),
        agent_endpoint: args.agent_advertise.clone(),
        agent_compression: args.agent_compression == Compression::Zstd,
        retention: jiff::SignedDuration::from_hours(i64::from(args.retention_hours)),
        lease_ttl: jiff::SignedDuration::from_secs(i64::from(args.lease_ttl.max(1))),
        max_retry_delay: Duration::from_secs(args.max_retry_delay.max(1)),
        crash_at: args.test_crash_at.clone(),
        host_policies: super::host_policy::build(
            &args.host_policies,
            &data_dir,
            &args.hosts,
            args.no_local_host,
        )?,
        ..ServerConfig::default()
    };
    let store = Arc::new(store);
    let state = ServerState::new(
        store.clone(),
        hosts,
        Arc::new(SystemClock),
        Arc::new(UuidV7Ids),
        config,
    );
    let ca_dir = data_dir.join("ca");
    let ca = Arc::new(
        dockmesh_http::channel::pki::Ca::load_or_create(&ca_dir).with_context(|| {
            format!("loading or making the server's CA in {}", ca_dir.display())
        })?,
    );
    let tls_addrs: Vec<SocketAddr> = [Some((args.listen, transport))]
        .into_iter()
        .chain([args.metrics_listen.zip(metrics_transport)])
        .flatten()
        .filter(|(_, t)| t.is_tls())
        .map(|(a, _)| a)
        .collect();
    let tls = super::tls::listener_tls(
        args.tls_cert.as_deref().zip(args.tls_key.as_deref()),
        &args.tls_names,
        &ca,
        &tls_addrs,
    )?;
    let agent_task = match agent_tcp {
        Some(tcp) => Some(start_agent_listener(&state, tcp, &ca, args.agent_grace).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(ca_fingerprint = %ca.fingerprint(), "the server's CA");
    tracing::info!(
        "{} listening on {addr}",
        if transport.is_tls() { "HTTPS" } else { "HTTP" }
    );
    let metrics_task = match args.metrics_listen {
        Some(addr) => {
            let tcp = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for metrics on {addr}"))?;
            let addr = tcp
                .local_addr()
                .context("reading the metrics listener's address")?;
            let tls = metrics_transport.filter(|t| t.is_tls()).and(tls.clone());
            tracing::info!(
                "metrics listening on {}://{addr}/metrics",
                if tls.is_some() { "https" } else { "http" }
            );
            Some(tokio::spawn(dockmesh_http::server::tls::serve_app(
                tcp,
                tls,
                dockmesh_http::server::api::metrics_router(state.clone()),
                std::future::pending(),
            )))
        }
        None => None,
    };
    let tls = tls.filter(|_| transport.is_tls());
    let rollout_owner = format!("{holder} {}", uuid::Uuid::now_v7());
    let rollout = tokio::spawn(dockmesh_http::server::rollout::run_loop(
        state.clone(),
        rollout_owner.clone(),
    ));
    dockmesh_http::server::serve_with(listener, tls, state, shutdown_signal()).await?;
    rollout.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    // The next server drives the rollout at once rather than after the lease runs out.
    let _ = dockmesh_core::ports::LeaseStore::release_lease(
        store.as_ref(),
        dockmesh_http::server::rollout::ROLLOUT_LEASE,
        &rollout_owner,
    )
    .await;
    if let Some(task) = agent_task {
        task.abort();
    }
    store.close().await;
    lock.release().await;
    Ok(())
}

/// The release key and binaries directory, when agent upgrades are on.
fn agent_binaries(
    args: &ServerArgs,
    data_dir: &Path,
) -> anyhow::Result<Option<dockmesh_http::channel::agent_binaries::AgentBinaries>> {
    let default_key = data_dir.join("release.pub");
    let key_path = match &args.release_key {
        Some(p) => p.clone(),
        None if default_key.exists() => default_key,
        None => return Ok(None),
    };
    let pem = std::fs::read_to_string(&key_path)
        .with_context(|| format!("reading the release key {}", key_path.display()))?;
    let key = dockmesh_http::channel::agent_binaries::parse_public(
        &pem,
        &key_path.display().to_string(),
    )?;
    let dir = args
        .agent_binaries
        .clone()
        .unwrap_or_else(|| data_dir.join("agent-binaries"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the agent binaries directory {}", dir.display()))?;
    let binaries = dockmesh_http::channel::agent_binaries::AgentBinaries::new(dir, key);
    let scan = binaries.scan();
    tracing::info!(
        key = %dockmesh_http::channel::agent_binaries::fingerprint(binaries.key()),
        dir = %binaries.dir().display(),
        served = scan.served.len(),
        "agent upgrades on"
    );
    for r in &scan.refused {
        tracing::warn!("agent binary not served: {r}");
    }
    Ok(Some(binaries))
}

/// This machine's host name (`HOSTNAME`, else `/etc/hostname`).
pub(crate) fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// What the listener on `addr` speaks, or why the flags are refused.
fn transport_of(
    args: &ServerArgs,
    addr: SocketAddr,
) -> anyhow::Result<dockmesh_http::server::tls::Transport> {
    dockmesh_http::server::tls::decide(
        addr,
        args.tls_cert.is_some(),
        args.tls_key.is_some(),
        args.insecure_http,
    )
    .map_err(|e| anyhow::anyhow!("{e}; {}", e.hint()))
}

/// The agent channel: the CA in `<data-dir>/ca` (made on the first start), the listener's
/// certificate, the registry that admits enrolled agents, and each stored agent's host.
async fn start_agent_listener(
    state: &ServerState,
    tcp: tokio::net::TcpListener,
    ca: &Arc<dockmesh_http::channel::pki::Ca>,
    grace: u64,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use dockmesh_http::channel::ChannelOptions;
    use dockmesh_http::server::agents::AgentRegistry;
    use dockmesh_http::server::{AgentAcceptor, AgentListener};
    let mut names = vec!["localhost".to_owned()];
    names.extend(host_name());
    let server_cert = ca
        .issue_server(&names)
        .context("issuing the agent listener's certificate")?;
    let half = Duration::from_secs(grace.max(2) / 2);
    let options = ChannelOptions {
        keep_alive_interval: half,
        keep_alive_timeout: half,
        ..ChannelOptions::default()
    };
    let registry = AgentRegistry::new(state.clone());
    let acceptor = AgentAcceptor::new(
        ca,
        &server_cert,
        dockmesh_core::protocol::PROTOCOL_VERSION,
        options,
        state.connected_agents().clone(),
    )
    .context("configuring the agent listener's TLS")?
    .with_gate(Arc::new(registry.clone()));
    let registered = registry.register_stored().await?;
    let addr = tcp
        .local_addr()
        .context("reading the agent listener's address")?;
    tracing::info!(
        %addr,
        ca_fingerprint = %ca.fingerprint(),
        agents = registered,
        "agent listener on {addr}"
    );
    state.set_agent_ca(ca.clone());
    Ok(tokio::spawn(AgentListener::new(tcp, acceptor).run()))
}

pub(crate) async fn shutdown_signal() {
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
    secure_hosts(&mut specs, &args.host_tls, &args.insecure_hosts)?;
    if specs.is_empty() && args.no_agent_listener {
        anyhow::bail!(
            "no hosts: drop --no-local-host, give --host NAME=ENDPOINT, or let agents enroll \
             (drop --no-agent-listener)"
        );
    }
    let hosts = Hosts::new();
    for (name, endpoint) in specs {
        tracing::info!(host = %name, %endpoint, "host");
        let config = DockerConfig::new(data_dir.join("hosts").join(&name).join("stacks"))
            .with_endpoint(endpoint)
            .with_volume_fast_path(args.volume_path.fast_path());
        hosts
            .add(Arc::new(super::engine::EngineHost::new(
                HostId::from(name.as_str()),
                config,
            )))
            .map_err(anyhow::Error::msg)?;
    }
    Ok(hosts)
}

/// Give the hosts named by `--host-tls` their TLS files, then refuse a plain `tcp://` engine on
/// a non-loopback address unless `--insecure-host` names it.
fn secure_hosts(
    specs: &mut [(String, Endpoint)],
    host_tls: &[String],
    insecure: &[String],
) -> anyhow::Result<()> {
    for spec in host_tls {
        let (name, dir) = spec
            .split_once('=')
            .with_context(|| format!("--host-tls {spec:?}: expected NAME=DIR"))?;
        let (_, endpoint) = specs
            .iter_mut()
            .find(|(n, _)| n == name)
            .with_context(|| format!("--host-tls {spec:?}: no host is named {name:?}"))?;
        *endpoint = endpoint
            .clone()
            .with_tls(Path::new(dir))
            .map_err(|e| anyhow::anyhow!("--host-tls {spec:?}: {e}"))?;
    }
    for name in insecure {
        if !specs.iter().any(|(n, _)| n == name) {
            anyhow::bail!("--insecure-host {name:?}: no host is named {name:?}");
        }
    }
    for (name, endpoint) in specs.iter() {
        if let Some(addr) = endpoint.plain_on_network()
            && !insecure.contains(name)
        {
            anyhow::bail!(
                "host {name:?} is a plain tcp:// engine on {addr}, which is not a loopback \
                 address: whoever reaches that port is root on its machine, and volume data would \
                 cross the network in the clear. Give it TLS (--host-tls {name}=DIR with ca.pem, \
                 cert.pem, key.pem) or allow it by name (--insecure-host {name})"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(list: &[(&str, &str)]) -> Vec<(String, Endpoint)> {
        list.iter()
            .map(|(n, e)| ((*n).to_owned(), Endpoint::parse(e).unwrap()))
            .collect()
    }

    #[test]
    fn a_plain_tcp_engine_on_the_network_needs_tls_or_a_name() {
        let strings = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut ok = specs(&[
            ("local", "unix:///var/run/docker.sock"),
            ("lo", "tcp://127.0.0.1:2375"),
            ("lo6", "tcp://[::1]:2375"),
            ("name", "tcp://localhost:2375"),
        ]);
        secure_hosts(&mut ok, &[], &[]).unwrap();

        let mut net = specs(&[("b", "tcp://10.1.2.3:2375")]);
        let e = secure_hosts(&mut net, &[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("10.1.2.3") && e.contains("--insecure-host b"),
            "{e}"
        );
        secure_hosts(&mut net, &[], &strings(&["b"])).unwrap();
        let e = secure_hosts(&mut net, &[], &strings(&["c"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no host is named \"c\""), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let tls = format!("b={}", dir.path().display());
        let e = secure_hosts(&mut net, std::slice::from_ref(&tls), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ca.pem is missing"), "{e}");
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        secure_hosts(&mut net, &[tls], &[]).unwrap();
        assert!(matches!(&net[0].1, Endpoint::TcpTls { addr, .. } if addr == "10.1.2.3:2375"));

        let mut sock = specs(&[("local", "unix:///var/run/docker.sock")]);
        let e = secure_hosts(&mut sock, &[format!("local={}", dir.path().display())], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only for tcp://"), "{e}");
    }
}
