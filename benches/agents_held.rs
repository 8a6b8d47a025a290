//! How many agents one server holds: N simulated agents speaking the real protocol (TLS 1.3
//! with client certificates from the server's CA, ALPN `dockmesh/1`, the agent API served over
//! reversed HTTP/2, the real reconnect policy) against a real `dockmesh server` process on
//! loopback. Measures the server's memory with every agent connected, then kills the server
//! (SIGKILL), starts it again and measures the time until every agent is back.
//!
//! The agents are enrolled by writing their records into the store and issuing their
//! certificates from the CA before the server starts (enrolling 10,000 agents one token at a
//! time measures the enrollment endpoint, not holding them). They share one key pair.
//!
//! `cargo build --release --bin dockmesh && cargo bench --bench agents_held -- [AGENTS] [BINARY]`
//! (default 10000 agents and `target/release/dockmesh`). Needs a file-descriptor limit above
//! the number of agents (`ulimit -n`).

use dockmesh_core::ports::prelude::*;
use dockmesh_core::protocol::{self, Hello, PROTOCOL_VERSION};
use dockmesh_core::rollout::{AgentRecord, ConnectionState, UpgradeState};
use dockmesh_core::types::AgentId;
use dockmesh_http::agent::{AgentConnector, agent_router};
use dockmesh_http::channel::ChannelOptions;
use dockmesh_http::channel::pki::{Ca, SERVER_NAME, der_of_pem};
use dockmesh_sqlx::{DbTarget, OpenOptions, SqlStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn start_server(bin: &str, data: &Path, agent_port: u16) -> Child {
    let mut child = Command::new(bin)
        .args(["server", "--no-local-host", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data)
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .env("RUST_LOG", "warn,dockmesh_http=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the server");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("ERROR") {
                eprintln!("[server] {line}");
            }
        }
    });
    child
}

/// The server's resident and peak memory, KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn unit_draw(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

async fn wait_for(connected: &AtomicUsize, n: usize, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while connected.load(Ordering::Relaxed) < n {
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(start.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` adds `--bench`; the arguments are the ones that are not flags.
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let bin = args
        .next()
        .unwrap_or_else(|| "target/release/dockmesh".to_owned());
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    std::fs::create_dir_all(&data)?;

    // Enroll N agents: records in the store, certificates from the CA.
    let t = Instant::now();
    let ca = Ca::load_or_create(&data.join("ca"))?;
    let (key_pem, csr_pem) = dockmesh_http::channel::pki::new_key_and_csr()?;
    let (store, _) = SqlStore::open_with(
        &DbTarget::sqlite_in(&data),
        &OpenOptions::in_data_dir(&data),
    )
    .await?;
    let mut certs = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("agent-{i:08}");
        certs.push(der_of_pem(&ca.issue_agent_for_csr(&id, &csr_pem)?)?);
        store
            .upsert_agent(&AgentRecord {
                id: AgentId::from(id.as_str()),
                name: format!("sim-{i:05}"),
                version: env!("CARGO_PKG_VERSION").into(),
                commit: None,
                protocol_version: PROTOCOL_VERSION,
                arch: std::env::consts::ARCH.into(),
                docker_version: String::new(),
                last_seen: None,
                connection: ConnectionState::Disconnected,
                upgrade: UpgradeState::Idle,
            })
            .await?;
    }
    store.close().await;
    eprintln!("{n} agents enrolled in {:.1} s", t.elapsed().as_secs_f64());

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = start_server(&bin, &data, port);
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let connected = Arc::new(AtomicUsize::new(0));
    let options = ChannelOptions {
        handshake_timeout: Duration::from_secs(30),
        ..ChannelOptions::default()
    };
    for (i, cert) in certs.into_iter().enumerate() {
        let connector = AgentConnector::new(
            ca.cert_der().clone(),
            vec![cert],
            key.clone_key(),
            PROTOCOL_VERSION,
            options.clone(),
        )?;
        let connected = connected.clone();
        tokio::spawn(async move {
            let mut rng =
                0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
            let hello = Hello {
                version: env!("CARGO_PKG_VERSION").into(),
                protocol_version: PROTOCOL_VERSION,
                hostname: format!("sim-{i:05}"),
                ..Hello::default()
            };
            // Agents do not all start in the same instant.
            tokio::time::sleep(Duration::from_secs(1).mul_f64(unit_draw(&mut rng))).await;
            let mut failures = 0u32;
            loop {
                let began = Instant::now();
                let name = ServerName::try_from(SERVER_NAME).expect("a DNS name");
                if let Ok(session) = connector.connect(("127.0.0.1", port), name).await {
                    connected.fetch_add(1, Ordering::Relaxed);
                    let _ = session.serve(agent_router(hello.clone())).await;
                    connected.fetch_sub(1, Ordering::Relaxed);
                }
                if began.elapsed() >= protocol::RECONNECT_STABLE {
                    failures = 0;
                }
                let delay = protocol::reconnect_delay(failures, unit_draw(&mut rng));
                failures = failures.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        });
    }
    let Some(up) = wait_for(&connected, n, Duration::from_secs(300)).await else {
        eprintln!(
            "only {} of {n} agents connected within 300 s",
            connected.load(Ordering::Relaxed)
        );
        let _ = server.kill();
        std::process::exit(1);
    };
    // Let the server record every hello before reading its memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = memory(server.id());
    eprintln!(
        "all {n} agents connected {:.1} s after the first dialed; server memory {:.0} MiB resident, {:.0} MiB peak",
        up.as_secs_f64(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // Kill the server and start it again: time until every agent is back.
    server.kill()?;
    server.wait()?;
    let restarted = Instant::now();
    let mut server = start_server(&bin, &data, port);
    // Every agent notices the loss first (the kernel closed its connection).
    while connected.load(Ordering::Relaxed) == n && restarted.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let back = wait_for(&connected, n, Duration::from_secs(300)).await;
    let (rss2, _) = memory(server.id());
    let _ = server.kill();
    let _ = server.wait();
    match back {
        Some(_) => {
            let secs = restarted.elapsed().as_secs_f64();
            println!(
                "agents held: {n}; server memory with all connected {:.0} MiB resident ({:.0} MiB peak); \
                 after a server restart (SIGKILL), all {n} back in {secs:.1} s (server then {:.0} MiB); \
                 first connection of all took {:.1} s",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0,
                rss2 as f64 / 1024.0,
                up.as_secs_f64()
            );
            Ok(())
        }
        None => {
            eprintln!(
                "after the restart only {} of {n} agents were back within 300 s",
                connected.load(Ordering::Relaxed)
            );
            std::process::exit(1);
        }
    }
}
