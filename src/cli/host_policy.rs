//! `dockmesh server --host-policy HOST=RULE,…`: each host's policy on what compose content may
//! ask of it (core's `host_policy`), and the server's own data directory, which no bind mount
//! on a host of this machine (`local`, and every `unix://` engine) may expose.
//!
//! `HOST` is a host's name: `local`, a `--host` name, or the name an agent enrolled its host
//! under (such a policy applies from the agent's enrollment on).

use anyhow::Context;
use dockmesh_core::HostId;
use dockmesh_docker::Endpoint;
use dockmesh_http::server::host_policy::HostPolicies;
use std::path::Path;
use std::sync::Arc;

/// The policies of `--host-policy` values, with `data_dir` protected on the hosts of this
/// machine. `hosts` are the `--host NAME=ENDPOINT` values; `local` is managed unless
/// `no_local_host`.
pub fn build(
    specs: &[String],
    data_dir: &Path,
    hosts: &[String],
    no_local_host: bool,
) -> anyhow::Result<HostPolicies> {
    let mut policies = HostPolicies::new(Arc::new(dockmesh_docker::host_policy::ComposeInspect));
    for spec in specs {
        let (host, policy) = dockmesh_core::host_policy::parse(spec)
            .map_err(|e| anyhow::anyhow!("--host-policy: {e}; {}", e.hint()))?;
        policies.set(HostId::new(host), policy);
    }
    let mut on_this_machine: Vec<String> = Vec::new();
    if !no_local_host {
        on_this_machine.push("local".into());
    }
    for spec in hosts {
        if let Some((name, endpoint)) = spec.split_once('=')
            && matches!(Endpoint::parse(endpoint), Ok(Endpoint::Unix(_)))
        {
            on_this_machine.push(name.to_owned());
        }
    }
    let mut protected = vec![data_dir.display().to_string()];
    let real = data_dir
        .canonicalize()
        .with_context(|| format!("resolving the data directory {}", data_dir.display()))?;
    protected.push(real.display().to_string());
    protected.dedup();
    for host in on_this_machine {
        for path in &protected {
            // A relative data directory is protected by its resolved path alone.
            if Path::new(path).is_absolute() {
                policies.protect(HostId::new(host.clone()), path.clone());
            }
        }
    }
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_read_and_the_data_dir_is_protected_on_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let p = build(
            &["far=strict,bind-prefixes=/srv".into()],
            dir.path(),
            &[
                "b=unix:///run/b/docker.sock".into(),
                "far=tcp://10.0.0.9:2375".into(),
            ],
            false,
        )
        .unwrap();
        let real = dir.path().canonicalize().unwrap().display().to_string();
        for host in ["local", "b"] {
            let policy = p.get(&HostId::new(host)).expect(host);
            assert!(policy.protected_paths.contains(&real), "{host}");
            assert!(
                !policy.no_privileged,
                "{host} has only the data directory rule"
            );
        }
        let far = p.get(&HostId::new("far")).unwrap();
        assert!(far.no_privileged && far.protected_paths.is_empty());
        assert_eq!(far.bind_prefixes, Some(vec!["/srv".to_owned()]));

        let none = build(&[], dir.path(), &[], true).unwrap();
        assert!(none.get(&HostId::new("local")).is_none());

        let e = build(&["local=no-root".into()], dir.path(), &[], false).unwrap_err();
        assert!(e.to_string().contains("unknown rule \"no-root\""), "{e}");
    }
}
