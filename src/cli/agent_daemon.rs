//! `dockmesh agent` run as the daemon: its arguments, the Docker engine it serves, and
//! `dockmesh_http::agent::daemon::Agent` (enroll once or load the state directory, then serve
//! the engine to the server over the outbound mTLS connection, reconnecting).

use super::client::error_chain;
use super::db::fail;
use super::engine::EngineHost;
use super::server::LogFormat;
use clap::Args;
use dockmesh_core::ports::HostRuntime;
use dockmesh_docker::{DockerConfig, Endpoint};
use dockmesh_http::agent::daemon::{Agent, AgentError, AgentOptions, RunEnd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Running the agent.
#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// The server's API address, for enrolling (`https://server:8080`; plain `http://` only
    /// to a loopback address). Over HTTPS the server must present the CA whose fingerprint
    /// the token carries (or, with `--ca-file`, a certificate those CAs issued).
    #[arg(
        long = "server",
        id = "agent_server",
        value_name = "URL",
        env = "DOCKMESH_SERVER"
    )]
    server: Option<String>,
    /// A one-time enrollment token from `dockmesh agent token create`; needed only the first
    /// time (the agent then keeps its certificate in its state directory).
    #[arg(
        long = "token",
        id = "agent_token",
        value_name = "TOKEN",
        env = "DOCKMESH_ENROLL_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Trust the server's API listener by the CA certificates in this PEM file (an operator's
    /// certificate, names checked) instead of the CA fingerprint the token carries; also for
    /// downloading agent binaries.
    #[arg(
        long = "ca-file",
        id = "agent_ca_file",
        value_name = "PEM",
        env = "DOCKMESH_CA_FILE"
    )]
    ca_file: Option<PathBuf>,
    /// The name of this host on the server (lowercase letters, digits, `-`, `_`); by default
    /// the machine's host name.
    #[arg(long, value_name = "NAME", env = "DOCKMESH_AGENT_NAME")]
    name: Option<String>,
    /// Where the agent keeps its key, certificates and stack files (mode 0700).
    #[arg(
        long,
        value_name = "DIR",
        env = "DOCKMESH_AGENT_STATE_DIR",
        default_value = "dockmesh-agent"
    )]
    state_dir: PathBuf,
    /// The Docker engine this agent serves (`unix:///var/run/docker.sock`, `tcp://addr:port`);
    /// by default `DOCKER_HOST`, else the local socket.
    #[arg(long, value_name = "ENDPOINT", env = "DOCKMESH_AGENT_DOCKER_HOST")]
    docker_host: Option<String>,
    /// Dial the agent listener here (`host:port`) instead of where the server said at
    /// enrollment.
    #[arg(long, value_name = "HOST:PORT", env = "DOCKMESH_AGENT_ENDPOINT")]
    endpoint: Option<String>,
    /// How long the connection may stay silent before the agent takes it for dead and
    /// reconnects, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_AGENT_GRACE",
        default_value_t = 60
    )]
    grace: u64,
    /// How long a new binary has, after an upgrade, to connect to the server before the
    /// previous binary is put back, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_AGENT_UPGRADE_DEADLINE",
        default_value_t = 60
    )]
    upgrade_deadline: u64,
    /// How volume data is read and written on this host: `auto` uses the volumes' directories
    /// when the engine is on this machine and the agent runs as root, `archive` always the
    /// engine's archive endpoints.
    #[arg(long, value_enum, env = "DOCKMESH_VOLUME_PATH", default_value = "auto")]
    volume_path: super::server::VolumePath,
    /// Keep each incoming volume stream in `<state-dir>/imports` while it is imported, so that
    /// a transfer cut by a restart of this agent goes on from the last byte kept (`on`), or
    /// keep nothing on disk and have the volume sent again whole after a restart (`off`).
    #[arg(long, value_enum, env = "DOCKMESH_IMPORT_SPOOL", default_value = "on")]
    import_spool: Switch,
    /// Log format.
    #[arg(long, value_enum, env = "DOCKMESH_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

pub(super) fn run_agent(args: RunArgs) -> ExitCode {
    super::server::init_logging(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::from(e).context("starting the runtime")),
    };
    match rt.block_on(agent_main(args)) {
        Ok(RunEnd::Refused { .. }) => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

async fn agent_main(args: RunArgs) -> anyhow::Result<RunEnd> {
    let said = |e: AgentError| anyhow::anyhow!("{}; {}", error_chain(&e), e.hint());
    // The engine is named before anything is enrolled: a bad --docker-host spends no token.
    let endpoint = Endpoint::resolve(
        args.docker_host
            .as_deref()
            .map(Endpoint::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--docker-host: {e}"))?
            .as_ref(),
        std::env::var("DOCKER_HOST").ok().as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let mut options = AgentOptions::new(super::VERSION);
    options.commit = option_env!("DOCKMESH_COMMIT").map(str::to_owned);
    options.server = args.server;
    options.token = args.token;
    options.ca_file = args.ca_file;
    options.name = args.name;
    options.endpoint = args.endpoint;
    options.grace = Duration::from_secs(args.grace);
    options.upgrade_deadline = Duration::from_secs(args.upgrade_deadline);
    options.import_spool = args.import_spool == Switch::On;
    let agent = tokio::select! {
        a = Agent::load_or_enroll(&args.state_dir, &options) => a.map_err(said)?,
        () = super::server::shutdown_signal() => return Ok(RunEnd::Shutdown),
    };
    let runtime: Arc<dyn HostRuntime> = Arc::new(EngineHost::new(
        agent.host_id(),
        DockerConfig::new(agent.state_dir().join("stacks"))
            .with_endpoint(endpoint.clone())
            .with_volume_fast_path(args.volume_path.fast_path()),
    ));
    tracing::info!(engine = %endpoint, "the agent serves the Docker engine at {endpoint}");
    agent
        .run(runtime, super::server::shutdown_signal())
        .await
        .map_err(said)
}
