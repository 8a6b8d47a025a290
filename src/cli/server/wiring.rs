//! What `dockmesh server` assembles from its flags: the engines it serves as hosts (and their
//! TLS), the agent listener, the agent binaries it offers.

use super::ServerArgs;
use super::host_name;
use anyhow::Context;
use dockmesh_core::HostId;
use dockmesh_docker::{DockerConfig, Endpoint};
use dockmesh_http::server::{Hosts, ServerState};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The release key and binaries directory, when agent upgrades are on.
pub(super) fn agent_binaries(
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

/// What the listener on `addr` speaks, or why the flags are refused.
pub(super) fn transport_of(
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
pub(super) async fn start_agent_listener(
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
        "Agent listener on {addr} (mTLS)"
    );
    state.set_agent_ca(ca.clone());
    Ok(tokio::spawn(AgentListener::new(tcp, acceptor).run()))
}

/// `local` (unless `--no-local-host`) and every `--host NAME=ENDPOINT`.
pub(super) fn build_hosts(args: &ServerArgs, data_dir: &Path) -> anyhow::Result<Hosts> {
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
            .add(Arc::new(crate::cli::engine::EngineHost::new(
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
