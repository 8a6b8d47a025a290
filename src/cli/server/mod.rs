//! `dockmesh server`: the reference server on the embedded default (SQLite in the data
//! directory, the local Docker engine as host `local`) or PostgreSQL and engines given by
//! `--host NAME=ENDPOINT`.

use anyhow::Context;
use dockmesh_core::system::{SystemClock, UuidV7Ids};
use dockmesh_http::server::{ServerConfig, ServerState};
use dockmesh_sqlx::{OpenOptions, ServerLock, SqlStore};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod args;
mod wiring;

pub use args::{Compression, LogFormat, ServerArgs, VolumePath};
use wiring::{agent_binaries, build_hosts, start_agent_listener, transport_of};

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
        failed_tokens_per_minute: args.failed_token_limit,
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

/// This machine's host name (`HOSTNAME`, else `/etc/hostname`).
pub(crate) fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
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
