//! The flags of `dockmesh server`.

use crate::cli::db::Location;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    pub(super) location: Location,
    /// Where the REST API listens.
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKMESH_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub(super) listen: SocketAddr,
    /// The API listener's certificate chain (PEM, the server's certificate first): serve
    /// HTTPS with it. Without it, a listener on a non-loopback address serves HTTPS with a
    /// certificate of the server's own CA (its fingerprint is printed at start).
    #[arg(
        long,
        value_name = "PEM",
        env = "DOCKMESH_TLS_CERT",
        requires = "tls_key"
    )]
    pub(super) tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(
        long,
        value_name = "PEM",
        env = "DOCKMESH_TLS_KEY",
        requires = "tls_cert"
    )]
    pub(super) tls_key: Option<PathBuf>,
    /// A DNS name (or IP address) the own CA's certificate of the API listener carries
    /// besides the listen address and `localhost`. Repeat for more.
    #[arg(
        long = "tls-name",
        value_name = "NAME",
        env = "DOCKMESH_TLS_NAMES",
        value_delimiter = ','
    )]
    pub(super) tls_names: Vec<String>,
    /// Serve plain HTTP on a non-loopback `--listen` (and `--metrics-listen`): only behind a
    /// TLS-terminating proxy, which must send `X-Forwarded-Proto: https` so dashboard
    /// cookies are `Secure`.
    #[arg(long, env = "DOCKMESH_INSECURE_HTTP", conflicts_with = "tls_cert")]
    pub(super) insecure_http: bool,
    /// Serve `/metrics` without a token on this address of its own (HTTPS like the API
    /// listener unless loopback); on the API listener it needs an API token.
    #[arg(long, value_name = "ADDR", env = "DOCKMESH_METRICS_LISTEN")]
    pub(super) metrics_listen: Option<SocketAddr>,
    /// Where agents connect (TLS 1.3 with client certificates from the server's own CA, kept
    /// in `<data-dir>/ca`).
    #[arg(
        long,
        value_name = "ADDR",
        env = "DOCKMESH_AGENT_LISTEN",
        default_value = "0.0.0.0:8443"
    )]
    pub(super) agent_listen: SocketAddr,
    /// The address agents dial (`host:port`), told to each agent when it enrolls; by default
    /// the host the agent reached the API at, with the agent listener's port.
    #[arg(long, value_name = "HOST:PORT", env = "DOCKMESH_AGENT_ADVERTISE")]
    pub(super) agent_advertise: Option<String>,
    /// Run no agent listener: every host is an engine reached by socket, and agents cannot
    /// enroll.
    #[arg(long, env = "DOCKMESH_NO_AGENT_LISTENER")]
    pub(super) no_agent_listener: bool,
    /// How long an agent's connection may stay silent before the server takes it for dead, in
    /// seconds (HTTP/2 PING every half of it).
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_AGENT_GRACE",
        default_value_t = 60
    )]
    pub(super) agent_grace: u64,
    /// How volume data travels to and from agents: `zstd` (level 1) or `none` (for fast
    /// links where the CPU is the limit).
    #[arg(
        long,
        value_enum,
        env = "DOCKMESH_AGENT_COMPRESSION",
        default_value = "zstd"
    )]
    pub(super) agent_compression: Compression,
    /// How volume data is read and written on the hosts this server reaches by socket.
    #[arg(long, value_enum, env = "DOCKMESH_VOLUME_PATH", default_value = "auto")]
    pub(super) volume_path: VolumePath,
    /// The release public key (PEM, from `dockmesh release keygen`) that agent binaries are
    /// signed with; agents pin it on their first connection. By default
    /// `<data-dir>/release.pub` when it exists; without a key, agent upgrades are off.
    #[arg(long, value_name = "FILE", env = "DOCKMESH_RELEASE_KEY")]
    pub(super) release_key: Option<PathBuf>,
    /// Where the signed agent binaries are (each with the `.release.json` written by
    /// `dockmesh release sign`); served to agents under `/api/v1/agent-binaries/`. By default
    /// `<data-dir>/agent-binaries`.
    #[arg(long, value_name = "DIR", env = "DOCKMESH_AGENT_BINARIES")]
    pub(super) agent_binaries: Option<PathBuf>,
    /// Do not manage the local Docker engine (`DOCKER_HOST`, else /var/run/docker.sock) as
    /// host `local`.
    #[arg(long, env = "DOCKMESH_NO_LOCAL_HOST")]
    pub(super) no_local_host: bool,
    /// A host reached by its Docker engine's socket: `NAME=unix:///path/docker.sock` or
    /// `NAME=tcp://addr:port`. Repeat for more hosts (comma-separated in the variable).
    #[arg(
        long = "host",
        value_name = "NAME=ENDPOINT",
        env = "DOCKMESH_HOSTS",
        value_delimiter = ','
    )]
    pub(super) hosts: Vec<String>,
    /// TLS for a `tcp://` host whose engine verifies its clients (`dockerd --tlsverify`):
    /// `NAME=DIR`, DIR holding `ca.pem`, `cert.pem` and `key.pem` (Docker's `DOCKER_CERT_PATH`
    /// layout). Repeat for more hosts.
    #[arg(
        long = "host-tls",
        value_name = "NAME=DIR",
        env = "DOCKMESH_HOST_TLS",
        value_delimiter = ','
    )]
    pub(super) host_tls: Vec<String>,
    /// Allow host NAME's plain `tcp://` engine on a non-loopback address. Whoever reaches such
    /// a port is root on its machine and sees volume data in the clear: give the host TLS
    /// (`--host-tls`) instead where you can. Repeat for more hosts.
    #[arg(
        long = "insecure-host",
        value_name = "NAME",
        env = "DOCKMESH_INSECURE_HOSTS",
        value_delimiter = ','
    )]
    pub(super) insecure_hosts: Vec<String>,
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
    pub(super) host_policies: Vec<String>,
    /// How long a migrated stack's source is kept for rollback, in hours.
    #[arg(
        long,
        value_name = "HOURS",
        env = "DOCKMESH_RETENTION_HOURS",
        default_value_t = 72
    )]
    pub(super) retention_hours: u32,
    /// How long a migration lease lasts unless renewed, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_LEASE_TTL",
        default_value_t = 60
    )]
    pub(super) lease_ttl: u32,
    /// The longest wait between two attempts at a migration whose host does not answer.
    #[arg(
        long,
        value_name = "SECONDS",
        env = "DOCKMESH_MAX_RETRY_DELAY",
        default_value_t = 60
    )]
    pub(super) max_retry_delay: u64,
    /// Failed API tokens one address may present per minute (and at once) before its requests
    /// are answered 429 without a look at their token. Raise it when many clients share one
    /// address (a proxy that does not pass the client's address on).
    #[arg(
        long,
        value_name = "PER_MINUTE",
        env = "DOCKMESH_FAILED_TOKEN_LIMIT",
        default_value_t = dockmesh_http::server::limit::BEARER_FAILURES_PER_MINUTE,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub(super) failed_token_limit: u32,
    /// For crash tests only: kill the server just before this migration command
    /// (`StopSource`, `TransferVolume`, …) or after `bytes:N` bytes of a transfer.
    #[arg(long, hide = true, env = "DOCKMESH_TEST_CRASH_AT")]
    pub(super) test_crash_at: Option<String>,
    /// Log format.
    #[arg(long, value_enum, env = "DOCKMESH_LOG_FORMAT", default_value = "text")]
    pub(super) log_format: LogFormat,
}
