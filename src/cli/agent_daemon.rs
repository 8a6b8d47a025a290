//! `dockmesh agent` run as the daemon: enroll once (or load the state directory), then keep an
//! outbound mTLS connection to the server and serve the agent API over it, reconnecting with
//! core's `protocol::reconnect_delay`.

use super::db::fail;
use super::engine::EngineHost;
use super::server::LogFormat;
use anyhow::Context;
use clap::Args;
use dockmesh_core::HostId;
use dockmesh_core::ports::HostRuntime;
use dockmesh_core::protocol::{self, Hello, PROTOCOL_VERSION};
use dockmesh_docker::{DockerConfig, Endpoint};
use dockmesh_http::agent::agent_upgrade::{on_hello, upgrade_routes};
use dockmesh_http::agent::renew::{AgentCredentials, renewal_routes};
use dockmesh_http::agent::resume::{Imports, RESUME_WAIT};
use dockmesh_http::agent::spool::SpoolOptions;
use dockmesh_http::agent::{AgentConnector, ConnectError, agent_api_with};
use dockmesh_http::channel::ChannelOptions;
use dockmesh_http::channel::enroll::{self, EnrollRequest, Enrolled, EnrollmentToken};
use dockmesh_http::channel::files;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// What the agent keeps about its enrollment (`agent.json`; the key and certificates sit
/// beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentState {
    agent_id: String,
    host: String,
    agent_endpoint: String,
    server_name: String,
    server: String,
    /// The key and certificate files in use (renewal writes new ones, then this file).
    #[serde(default = "default_key_file")]
    key_file: String,
    #[serde(default = "default_cert_file")]
    cert_file: String,
}

fn default_key_file() -> String {
    KEY_FILE.to_owned()
}

fn default_cert_file() -> String {
    CERT_FILE.to_owned()
}

const STATE_FILE: &str = "agent.json";
const KEY_FILE: &str = "agent.key";
const CERT_FILE: &str = "agent.crt";
const CA_FILE: &str = "ca.crt";

pub(super) fn run_agent(args: RunArgs) -> ExitCode {
    super::server::init_logging(args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::from(e).context("starting the runtime")),
    };
    let out = rt.block_on(async {
        tokio::select! {
            r = agent_main(args) => r,
            () = super::server::shutdown_signal() => Ok(ExitCode::SUCCESS),
        }
    });
    match out {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
}

async fn agent_main(args: RunArgs) -> anyhow::Result<ExitCode> {
    // An agent that cannot enroll and has no state directory says so and makes nothing; an
    // existing one is made private (or refused) first.
    if (args.server.is_none() || args.token.is_none()) && !args.state_dir.exists() {
        return Err(not_enrolled(&args));
    }
    // Keys, stack files and spooled volume data live here.
    super::db::private_dir(&args.state_dir, "the agent's state directory")?;
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
    let state = match load_state(&args.state_dir)? {
        Some(s) => {
            if args.token.is_some() {
                tracing::warn!(
                    agent = %s.agent_id,
                    "already enrolled (state in {}): the token was not used",
                    args.state_dir.display()
                );
            }
            s
        }
        None => {
            let name = args
                .name
                .clone()
                .or_else(host_name)
                .context("this host has no name to enroll under: give one with --name")?;
            let hello = hello_for(None, None).await;
            enroll_once(&args, &name, hello).await?
        }
    };
    let runtime: Arc<dyn HostRuntime> = Arc::new(EngineHost::new(
        HostId::from(state.host.as_str()),
        DockerConfig::new(args.state_dir.join("stacks"))
            .with_endpoint(endpoint.clone())
            .with_volume_fast_path(args.volume_path.fast_path()),
    ));
    let creds = Arc::new(FileCredentials {
        dir: args.state_dir.clone(),
        agent_id: state.agent_id.clone(),
        state: std::sync::Mutex::new(state.clone()),
        ca_pem: std::fs::read_to_string(args.state_dir.join(CA_FILE))
            .with_context(|| format!("reading {}", args.state_dir.join(CA_FILE).display()))?,
        pending: std::sync::Mutex::new(None),
    });
    let startup = super::swap::startup(&args.state_dir);
    let swapper: Arc<dyn dockmesh_http::agent::agent_upgrade::AgentUpgrader> = Arc::new(
        super::swap::Swapper::new(
            &args.state_dir,
            &state.server,
            Duration::from_secs(args.upgrade_deadline.max(1)),
        )?
        .trusting(args.ca_file.as_deref())?,
    );
    let dial = args
        .endpoint
        .clone()
        .unwrap_or_else(|| state.agent_endpoint.clone());
    let server_name = ServerName::try_from(state.server_name.clone())
        .with_context(|| format!("the server name {:?} is not usable", state.server_name))?;
    tracing::info!(
        agent = %state.agent_id,
        host = %state.host,
        engine = %endpoint,
        "dockmesh agent v{} serving host {} (agent listener {dial})",
        super::VERSION,
        state.host
    );
    let mut failures = 0u32;
    // Imports outlive a connection: one cut off waits for the server to resume it. Their
    // streams are kept on disk, so they outlive this process too: those cut off by its last
    // stop go on from what was kept.
    let imports = match args.import_spool {
        Switch::On => Imports::with_spool(
            runtime.clone(),
            RESUME_WAIT,
            SpoolOptions::new(args.state_dir.join("imports")),
        ),
        Switch::Off => Imports::new(runtime.clone()),
    };
    imports.recover().await;
    loop {
        let started = Instant::now();
        // Read each time: a renewal may have replaced the key and certificate.
        let connector = connector_from(&args.state_dir, &creds.current(), args.grace)?;
        match connector.connect(dial.as_str(), server_name.clone()).await {
            Ok(session) => {
                tracing::info!(
                    protocol = session.protocol(),
                    "connected to the server at {dial}"
                );
                let hello = hello_for(
                    Some(runtime.as_ref()),
                    super::swap::current_failure(&args.state_dir),
                )
                .await;
                let mut api = agent_api_with(hello, runtime.clone(), imports.clone())
                    .merge(renewal_routes(creds.clone()))
                    .merge(upgrade_routes(swapper.clone()));
                if let Some(trial) = &startup.trial {
                    let trial = trial.clone();
                    api = on_hello(api, Arc::new(move || trial.confirm()));
                }
                let served = session.serve(api).await;
                // The session's requests are gone: imports they fed wait to be resumed.
                imports.connection_closed();
                match served {
                    Err(ConnectError::Refused(r)) if !r.is_transient() => {
                        tracing::error!(kind = %r.kind, "the server refused this agent: {}", r.reason);
                        return Ok(ExitCode::from(1));
                    }
                    Err(e) => tracing::warn!("the connection to the server ended: {e:#}"),
                    Ok(()) => tracing::info!("the server closed the connection"),
                }
            }
            Err(e) => tracing::warn!(
                "cannot connect to the server's agent listener at {dial}: {}",
                anyhow::Error::from(e)
            ),
        }
        if started.elapsed() >= protocol::RECONNECT_STABLE {
            failures = 0;
        }
        let delay = protocol::reconnect_delay(failures, unit_draw());
        failures = failures.saturating_add(1);
        tracing::info!("reconnecting in {:.1} s", delay.as_secs_f64());
        tokio::time::sleep(delay).await;
    }
}

/// A uniform draw in `[0, 1)`.
fn unit_draw() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// What this agent says about itself; the engine's version when it answers.
async fn hello_for(
    runtime: Option<&dyn HostRuntime>,
    upgrade_failure: Option<dockmesh_core::protocol::UpgradeFailure>,
) -> Hello {
    let docker_version = match runtime {
        Some(r) => r
            .snapshot()
            .await
            .map(|s| s.docker_version)
            .unwrap_or_default(),
        None => String::new(),
    };
    Hello {
        version: super::VERSION.to_owned(),
        commit: option_env!("DOCKMESH_COMMIT").map(str::to_owned),
        protocol_version: PROTOCOL_VERSION,
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        hostname: host_name().unwrap_or_default(),
        docker_version,
        upgrade_failure,
    }
}

fn load_state(dir: &Path) -> anyhow::Result<Option<AgentState>> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let state: AgentState = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; remove the state directory and enroll again",
                    path.display()
                )
            })?;
            for f in [state.key_file.as_str(), state.cert_file.as_str(), CA_FILE] {
                if !dir.join(f).exists() {
                    anyhow::bail!(
                        "{} is missing from the agent's state directory; remove {} and enroll again",
                        f,
                        dir.display()
                    );
                }
            }
            Ok(Some(state))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Enroll with the server: make a key here, send its request with the token, check the CA
/// that comes back against the token's fingerprint, and only then keep anything.
fn not_enrolled(args: &RunArgs) -> anyhow::Error {
    anyhow::anyhow!(
        "this agent is not enrolled yet (no {} in {}): run it once with --server URL and \
         --token TOKEN (from `dockmesh agent token create` on the server)",
        STATE_FILE,
        args.state_dir.display()
    )
}

async fn enroll_once(args: &RunArgs, name: &str, hello: Hello) -> anyhow::Result<AgentState> {
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        return Err(not_enrolled(args));
    };
    let parsed =
        EnrollmentToken::parse(token).map_err(|e| anyhow::anyhow!("--token: {e}; {}", e.hint()))?;
    let (key_pem, csr_pem) = enroll::new_agent_key().context("making the agent's key")?;
    let req = EnrollRequest {
        token: token.clone(),
        name: name.to_owned(),
        hello: Some(hello),
        csr_pem: Some(csr_pem),
    };
    let base = server.trim_end_matches('/').to_owned();
    let http = enroll_client(&base, &parsed, args.ca_file.as_deref())?;
    let resp = http
        .post(format!("{base}/api/v1/agents/enroll"))
        .json(&req)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot enroll with the dockmesh server at {base}: {}; nothing was sent unless \
                 the server was trusted (over HTTPS it must present the CA whose fingerprint the \
                 token carries, or a certificate of --ca-file)",
                super::client::error_chain(&e)
            )
        })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["error"].as_str().unwrap_or("no reason given");
        let hint = body["hint"]
            .as_str()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        anyhow::bail!("the server refused the enrollment ({status}): {msg}{hint}");
    }
    let enrolled: Enrolled = serde_json::from_value(body)
        .context("the server's answer to the enrollment is not understood")?;
    enroll::check_ca(&parsed, &enrolled.ca_pem).map_err(|_| {
        anyhow::anyhow!(
            "the server at {base} presented a CA whose fingerprint is not the token's: it is \
             not the server that made the token; nothing was kept"
        )
    })?;
    let mut enrolled = enrolled;
    if !answer_is_authenticated(&base) && enrolled.release_key_pem.take().is_some() {
        tracing::warn!(
            "the server's release key came over plain HTTP and is not pinned: copy the \
             server's release.pub into {} to take upgrades",
            args.state_dir.display()
        );
    }
    let state = AgentState {
        agent_id: enrolled.agent_id.clone(),
        host: enrolled.host.clone(),
        agent_endpoint: enrolled.agent_endpoint.clone(),
        server_name: enrolled.server_name.clone(),
        server: base,
        key_file: default_key_file(),
        cert_file: default_cert_file(),
    };
    save_state(&args.state_dir, &state, &key_pem, &enrolled)?;
    tracing::info!(agent = %state.agent_id, host = %state.host, "enrolled");
    Ok(state)
}

/// The HTTP client enrolling with `base`: over HTTPS it trusts only the CA the token names
/// (or the CAs of `ca_file`); plain HTTP only to a loopback address, where nothing crosses
/// the network.
fn enroll_client(
    base: &str,
    token: &EnrollmentToken,
    ca_file: Option<&Path>,
) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().timeout(Duration::from_secs(60));
    let builder = if base.starts_with("https://") {
        let config = match ca_file {
            Some(f) => dockmesh_http::channel::tls::client_config_roots(f),
            None => dockmesh_http::channel::tls::client_config_pinned(token.ca_fingerprint()),
        }
        .map_err(|e| anyhow::anyhow!("{e}; {}", e.hint()))?;
        builder.tls_backend_preconfigured(config)
    } else if base.starts_with("http://") && loopback_url(base) {
        builder
    } else {
        anyhow::bail!(
            "--server {base}: enrolling sends the token, so it needs https:// (the server \
             serves HTTPS on every non-loopback address; plain http:// only to 127.0.0.1, ::1 \
             or localhost)"
        );
    };
    builder.build().context("building the HTTP client")
}

/// Whether a URL names a loopback host (an address or `localhost`).
fn loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(dockmesh_http::channel::tls::is_loopback)
}

/// Whether an answer from `base` is the server's own: over HTTPS (checked against the CA the
/// token names), or from this machine.
fn answer_is_authenticated(base: &str) -> bool {
    reqwest::Url::parse(base).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        u.scheme() == "https"
            || host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(files::write_atomic(path, bytes, files::FileMode::Private)?)
}

fn save_state(dir: &Path, state: &AgentState, key_pem: &str, e: &Enrolled) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    write_private(&dir.join(KEY_FILE), key_pem.as_bytes())?;
    write_private(&dir.join(CERT_FILE), e.cert_pem.as_bytes())?;
    write_private(&dir.join(CA_FILE), e.ca_pem.as_bytes())?;
    // The server's release key, pinned now: the only time one is taken without the operator.
    if let Some(pem) = &e.release_key_pem {
        let key =
            dockmesh_http::channel::agent_binaries::parse_public(pem, "the server's release key")?;
        write_private(&dir.join(super::swap::PINNED_KEY), pem.as_bytes())?;
        tracing::info!(key = %dockmesh_http::channel::agent_binaries::fingerprint(&key), "release key pinned");
    }
    // Last: its presence means the enrollment is complete.
    write_private(
        &dir.join(STATE_FILE),
        &serde_json::to_vec_pretty(state).expect("the agent state serialises"),
    )
}

fn connector_from(dir: &Path, state: &AgentState, grace: u64) -> anyhow::Result<AgentConnector> {
    let read = |f: &str| {
        std::fs::read(dir.join(f)).with_context(|| format!("reading {}", dir.join(f).display()))
    };
    let ca = CertificateDer::from_pem_slice(&read(CA_FILE)?)
        .context("ca.crt is not a PEM certificate")?;
    let cert = CertificateDer::from_pem_slice(&read(&state.cert_file)?)
        .with_context(|| format!("{} is not a PEM certificate", state.cert_file))?;
    let key = PrivateKeyDer::from_pem_slice(&read(&state.key_file)?)
        .with_context(|| format!("{} is not a PEM key", state.key_file))?;
    let half = Duration::from_secs(grace.max(2) / 2);
    AgentConnector::new(
        ca,
        vec![cert],
        key,
        PROTOCOL_VERSION,
        ChannelOptions {
            keep_alive_interval: half,
            keep_alive_timeout: half,
            ..ChannelOptions::default()
        },
    )
    .context("the agent's key or certificates are unusable")
}

/// The agent's key and certificate in its state directory, renewed by the server over the
/// channel. A renewal writes the new pair under new names, then `agent.json` naming them
/// (atomically), then removes the old pair: a crash at any point leaves a usable pair.
struct FileCredentials {
    dir: PathBuf,
    agent_id: String,
    state: std::sync::Mutex<AgentState>,
    ca_pem: String,
    pending: std::sync::Mutex<Option<String>>,
}

impl FileCredentials {
    fn current(&self) -> AgentState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl AgentCredentials for FileCredentials {
    fn agent_id(&self) -> &str {
        &self.agent_id
    }

    fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    fn new_request(&self) -> Result<String, String> {
        let (key, csr) = enroll::new_agent_key().map_err(|e| e.to_string())?;
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(csr)
    }

    fn pending_key(&self) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn install(&self, cert_pem: &str) -> Result<(), String> {
        let key = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or("no new key is pending")?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = jiff::Timestamp::now().as_second();
        let mut next = state.clone();
        next.key_file = format!("agent-{stamp}.key");
        next.cert_file = format!("agent-{stamp}.crt");
        let write = || -> anyhow::Result<()> {
            write_private(&self.dir.join(&next.key_file), key.as_bytes())?;
            write_private(&self.dir.join(&next.cert_file), cert_pem.as_bytes())?;
            write_private(
                &self.dir.join(STATE_FILE),
                &serde_json::to_vec_pretty(&next).expect("the agent state serialises"),
            )
        };
        write().map_err(|e| format!("{e:#}"))?;
        for old in [&state.key_file, &state.cert_file] {
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        *state = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_http::channel::pki;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_loopback_server_may_be_enrolled_with_over_plain_http() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://[::1]:8080",
            "http://127.0.0.2:1",
            "http://user@127.0.0.1:8080/x",
        ] {
            assert!(loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.5:8080",
            "http://server:8080",
            "http://localhost.evil.example:8080",
            "http://127.0.0.1.nip.io",
            "http://[fe80::1]:8080",
            "http://0.0.0.0:8080",
        ] {
            assert!(!loopback_url(url), "{url}");
        }
        let token =
            EnrollmentToken::parse(&format!("dme_{}_{}", "a".repeat(64), "b".repeat(64))).unwrap();
        let e = enroll_client("http://10.0.0.5:8080", &token, None).unwrap_err();
        assert!(e.to_string().contains("https://"), "{e}");
        assert!(enroll_client("http://127.0.0.1:8080", &token, None).is_ok());
        assert!(enroll_client("https://10.0.0.5:8080", &token, None).is_ok());
    }

    #[test]
    fn a_renewal_replaces_key_and_certificate_together_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let ca = pki::Ca::ephemeral().unwrap();
        let (key_pem, csr) = enroll::new_agent_key().unwrap();
        let enrolled = Enrolled {
            agent_id: "agent-x".into(),
            cert_pem: ca.issue_agent_for_csr("agent-x", &csr).unwrap(),
            key_pem: None,
            ca_pem: ca.cert_pem().to_owned(),
            host: "edge".into(),
            agent_endpoint: "127.0.0.1:1".into(),
            server_name: pki::SERVER_NAME.into(),
            release_key_pem: None,
        };
        let state = AgentState {
            agent_id: "agent-x".into(),
            host: "edge".into(),
            agent_endpoint: "127.0.0.1:1".into(),
            server_name: pki::SERVER_NAME.into(),
            server: "http://s".into(),
            key_file: default_key_file(),
            cert_file: default_cert_file(),
        };
        save_state(dir.path(), &state, &key_pem, &enrolled).unwrap();
        let loaded = load_state(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.key_file, KEY_FILE);
        connector_from(dir.path(), &loaded, 60).unwrap();

        let creds = FileCredentials {
            dir: dir.path().to_owned(),
            agent_id: "agent-x".into(),
            state: std::sync::Mutex::new(loaded),
            ca_pem: ca.cert_pem().to_owned(),
            pending: std::sync::Mutex::new(None),
        };
        assert!(creds.install("x").is_err(), "nothing pending");
        let csr = creds.new_request().unwrap();
        let new_key = creds.pending_key().unwrap();
        assert_ne!(new_key, key_pem);
        let cert = ca.issue_agent_for_csr("agent-x", &csr).unwrap();
        creds.install(&cert).unwrap();

        let reloaded = load_state(dir.path()).unwrap().unwrap();
        assert_ne!(reloaded.key_file, KEY_FILE);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&reloaded.key_file)).unwrap(),
            new_key
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&reloaded.cert_file)).unwrap(),
            cert
        );
        for f in [&reloaded.key_file, &reloaded.cert_file] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        assert!(!dir.path().join(KEY_FILE).exists(), "the old key is gone");
        assert!(
            !dir.path().join(CERT_FILE).exists(),
            "the old certificate is gone"
        );
        connector_from(dir.path(), &reloaded, 60).unwrap();
        assert!(creds.pending_key().is_none());
    }

    #[test]
    fn the_servers_release_key_is_pinned_at_enrollment_and_none_without_one() {
        let ca = pki::Ca::ephemeral().unwrap();
        let (key_pem, csr) = enroll::new_agent_key().unwrap();
        let (_, public) = dockmesh_http::channel::agent_binaries::keygen().unwrap();
        let enrolled = |release_key_pem| Enrolled {
            agent_id: "agent-x".into(),
            cert_pem: ca.issue_agent_for_csr("agent-x", &csr).unwrap(),
            key_pem: None,
            ca_pem: ca.cert_pem().to_owned(),
            host: "edge".into(),
            agent_endpoint: "127.0.0.1:1".into(),
            server_name: pki::SERVER_NAME.into(),
            release_key_pem,
        };
        let state = AgentState {
            agent_id: "agent-x".into(),
            host: "edge".into(),
            agent_endpoint: "127.0.0.1:1".into(),
            server_name: pki::SERVER_NAME.into(),
            server: "http://s".into(),
            key_file: default_key_file(),
            cert_file: default_cert_file(),
        };
        let dir = tempfile::tempdir().unwrap();
        save_state(
            dir.path(),
            &state,
            &key_pem,
            &enrolled(Some(public.clone())),
        )
        .unwrap();
        let pinned = dir.path().join(super::super::swap::PINNED_KEY);
        assert_eq!(std::fs::read_to_string(&pinned).unwrap(), public);
        let mode = std::fs::metadata(&pinned).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let dir = tempfile::tempdir().unwrap();
        save_state(dir.path(), &state, &key_pem, &enrolled(None)).unwrap();
        assert!(!dir.path().join(super::super::swap::PINNED_KEY).exists());
    }

    #[test]
    fn a_release_key_is_taken_from_an_enrollment_answer_only_over_https_or_loopback() {
        for (base, taken) in [
            ("https://server.example:8443", true),
            ("http://127.0.0.1:8080", true),
            ("http://[::1]:8080", true),
            ("http://localhost:8080", true),
            ("http://server.example:8080", false),
            ("http://10.0.0.5:8080", false),
            ("not a url", false),
        ] {
            assert_eq!(answer_is_authenticated(base), taken, "{base}");
        }
    }
}
