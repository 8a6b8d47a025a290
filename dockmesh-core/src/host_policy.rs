//! Host policy: what compose content may ask of a host.
//!
//! Deploying compose content is root on the target host by design: a service can be
//! privileged, join the host's namespaces, take its devices, add capabilities and mount any
//! host path. An operator who wants less sets a policy per host; the server checks it against
//! the stack's services before every deploy, upgrade and rollback of a stack on that host, and
//! at a migration's pre-flight (check `host_policy`).
//!
//! The policy is written `HOST=RULE,RULE,…` (the server's `--host-policy`), rules:
//!
//! | rule | refuses |
//! |------|---------|
//! | `no-privileged` | `privileged: true` |
//! | `no-host-namespaces` | `network_mode: host`, `pid: host`, `ipc: host`, `userns_mode: host` |
//! | `no-devices` | `devices` |
//! | `no-cap-add` | `cap_add` |
//! | `bind-prefixes=/srv:/data` | a bind mount whose host path is not beneath one of the prefixes |
//! | `strict` | all of the above but `bind-prefixes` |
//!
//! Bind mounts relative to the stack directory (`./conf:/etc/app`) stay within the stack's
//! own files and are allowed; one that climbs out of it (`../other`) is refused whenever the
//! host has a policy. Paths are compared by their components after `.` and `..` are resolved
//! (so `/srvx` is not beneath `/srv`); symbolic links on the host are not followed here.
//!
//! A host may also have protected paths (the server's own data directory, on the hosts on the
//! server's machine): a bind mount of such a path, of anything in it, or of a directory above
//! it is always refused.
//!
//! This module is pure: [`check`] takes what each service asks ([`ServicePrivileges`], read
//! from the compose file by a [`ComposeInspector`]) and returns every violation.

use crate::types::StackFiles;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What an operator allows compose content to ask of one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPolicy {
    /// Refuse `privileged: true`.
    pub no_privileged: bool,
    /// Refuse joining the host's network, PID, IPC or user namespace.
    pub no_host_namespaces: bool,
    /// Refuse `devices`.
    pub no_devices: bool,
    /// Refuse `cap_add`.
    pub no_cap_add: bool,
    /// When set, bind mounts only beneath one of these absolute paths.
    pub bind_prefixes: Option<Vec<String>>,
    /// Paths no bind mount may name, be inside of, or be above (the server's data directory).
    pub protected_paths: Vec<String>,
}

/// A bind mount's host path, as the compose file gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindSource {
    /// An absolute host path.
    Absolute(String),
    /// A path relative to the stack directory that stays within it (`./conf`).
    InStack(String),
    /// A relative path that climbs out of the stack directory (`../other`).
    OutsideStack(String),
}

/// What one service asks of its host, as far as a [`HostPolicy`] is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePrivileges {
    /// The service's name.
    pub service: String,
    /// `privileged: true`.
    pub privileged: bool,
    /// The host namespaces it joins, by option: `network_mode`, `pid`, `ipc`, `userns_mode`.
    pub host_namespaces: Vec<String>,
    /// The host devices it takes (host paths).
    pub devices: Vec<String>,
    /// The capabilities it adds.
    pub cap_add: Vec<String>,
    /// Its bind mounts' host paths.
    pub binds: Vec<BindSource>,
}

/// Reads what each service of a stack asks of its host (the compose loader, injected).
pub trait ComposeInspector: Send + Sync {
    /// Each service's privileges, or why the files cannot be read (never their content).
    fn inspect(&self, files: &StackFiles) -> Result<Vec<ServicePrivileges>, String>;
}

/// One thing a policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The service.
    pub service: String,
    /// The compose option (`privileged`, `network_mode`, `devices`, `cap_add`, `volumes`).
    pub option: String,
    /// What it asks, in words (`privileged: true`, `bind mount of /etc`).
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service `{}`: `{}`: {}",
            self.service, self.option, self.detail
        )
    }
}

/// A stack refused by a host's policy: every violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the host policy of {host} refuses this stack: {}", list(.violations))]
pub struct PolicyRefusal {
    /// The host.
    pub host: String,
    /// What is refused (at least one).
    pub violations: Vec<Violation>,
}

impl PolicyRefusal {
    /// What to do next.
    pub fn hint(&self) -> &'static str {
        "remove those options from the compose file, or have the operator change the host's \
         policy (the server's --host-policy); nothing was deployed"
    }
}

fn list(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every violation of `policy` by `services` (empty: allowed), in service order.
pub fn violations(policy: &HostPolicy, services: &[ServicePrivileges]) -> Vec<Violation> {
    let mut out = Vec::new();
    for s in services {
        let mut refuse = |option: &str, detail: String| {
            out.push(Violation {
                service: s.service.clone(),
                option: option.to_owned(),
                detail,
            })
        };
        if policy.no_privileged && s.privileged {
            refuse("privileged", "privileged: true is not allowed".into());
        }
        if policy.no_host_namespaces {
            for ns in &s.host_namespaces {
                refuse(ns, format!("{ns}: host joins the host's namespace"));
            }
        }
        if policy.no_devices && !s.devices.is_empty() {
            refuse(
                "devices",
                format!("host devices are not allowed ({})", s.devices.join(", ")),
            );
        }
        if policy.no_cap_add && !s.cap_add.is_empty() {
            refuse(
                "cap_add",
                format!(
                    "added capabilities are not allowed ({})",
                    s.cap_add.join(", ")
                ),
            );
        }
        for bind in &s.binds {
            if let Some(why) = bind_refusal(policy, bind) {
                refuse("volumes", why);
            }
        }
    }
    out
}

/// [`violations`] as a result: `Err` names the host and every violation.
pub fn check(
    host: &str,
    policy: &HostPolicy,
    services: &[ServicePrivileges],
) -> Result<(), PolicyRefusal> {
    let violations = violations(policy, services);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(PolicyRefusal {
            host: host.to_owned(),
            violations,
        })
    }
}

fn bind_refusal(policy: &HostPolicy, bind: &BindSource) -> Option<String> {
    let path = match bind {
        BindSource::InStack(_) => return None,
        BindSource::OutsideStack(p) => {
            return Some(format!(
                "bind mount of {p} climbs out of the stack directory"
            ));
        }
        BindSource::Absolute(p) => p,
    };
    let Some(parts) = components(path) else {
        return Some(format!("bind mount of {path:?}: not an absolute path"));
    };
    let shown = show(&parts);
    for protected in &policy.protected_paths {
        let Some(guarded) = components(protected) else {
            continue;
        };
        if beneath(&parts, &guarded) || beneath(&guarded, &parts) {
            return Some(format!(
                "bind mount of {shown} exposes the server's data directory {}",
                show(&guarded)
            ));
        }
    }
    if let Some(prefixes) = &policy.bind_prefixes {
        let allowed = prefixes
            .iter()
            .filter_map(|p| components(p))
            .any(|prefix| beneath(&parts, &prefix));
        if !allowed {
            return Some(format!(
                "bind mount of {shown} is outside the allowed prefixes ({})",
                prefixes.join(", ")
            ));
        }
    }
    None
}

/// The components of an absolute path with `.` and `..` resolved (`..` at the root stays
/// there, as the kernel does); `None` for a relative path.
pub fn components(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Whether `path` is `prefix` or beneath it.
fn beneath(path: &[&str], prefix: &[&str]) -> bool {
    path.len() >= prefix.len() && path[..prefix.len()] == *prefix
}

fn show(parts: &[&str]) -> String {
    format!("/{}", parts.join("/"))
}

/// A `--host-policy` value that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host policy {spec:?}: {problem}")]
pub struct PolicyParseError {
    /// The value as given.
    pub spec: String,
    /// What is wrong with it.
    pub problem: String,
}

impl PolicyParseError {
    /// What to write instead.
    pub fn hint(&self) -> &'static str {
        "write HOST=RULE,RULE with rules no-privileged, no-host-namespaces, no-devices, \
         no-cap-add, bind-prefixes=/ABS:/ABS, or strict"
    }
}

/// Read `HOST=RULE,RULE,…` (see the module's documentation): the host's name and its policy.
pub fn parse(spec: &str) -> Result<(String, HostPolicy), PolicyParseError> {
    let fail = |problem: String| PolicyParseError {
        spec: spec.to_owned(),
        problem,
    };
    let (host, rules) = spec
        .split_once('=')
        .ok_or_else(|| fail("expected HOST=RULE,RULE".into()))?;
    let host = host.trim();
    if host.is_empty() {
        return Err(fail("the host name is empty".into()));
    }
    let mut policy = HostPolicy::default();
    let mut any = false;
    for rule in rules.split(',').map(str::trim) {
        any = true;
        match rule {
            "no-privileged" => policy.no_privileged = true,
            "no-host-namespaces" => policy.no_host_namespaces = true,
            "no-devices" => policy.no_devices = true,
            "no-cap-add" => policy.no_cap_add = true,
            "strict" => {
                policy.no_privileged = true;
                policy.no_host_namespaces = true;
                policy.no_devices = true;
                policy.no_cap_add = true;
            }
            "" => return Err(fail("a rule is empty".into())),
            other => {
                let Some(list) = other.strip_prefix("bind-prefixes=") else {
                    return Err(fail(format!("unknown rule {other:?}")));
                };
                let mut prefixes = Vec::new();
                for p in list.split(':') {
                    let Some(parts) = components(p) else {
                        return Err(fail(format!("bind prefix {p:?} is not an absolute path")));
                    };
                    prefixes.push(show(&parts));
                }
                policy
                    .bind_prefixes
                    .get_or_insert_with(Vec::new)
                    .extend(prefixes);
            }
        }
    }
    if !any {
        return Err(fail("no rules".into()));
    }
    Ok((host.to_owned(), policy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn svc(name: &str) -> ServicePrivileges {
        ServicePrivileges {
            service: name.into(),
            ..Default::default()
        }
    }

    fn abs(p: &str) -> BindSource {
        BindSource::Absolute(p.into())
    }

    /// The violations of `services` under `policy`, as `service option` strings.
    fn check_rule(policy: &str, services: Vec<ServicePrivileges>, expected: &[&str]) {
        let (_, policy) = parse(&format!("h={policy}")).unwrap();
        let got: Vec<String> = violations(&policy, &services)
            .iter()
            .map(|v| format!("{} {}", v.service, v.option))
            .collect();
        assert_eq!(got, expected, "policy {policy:?}");
    }

    #[test]
    fn each_rule_refuses_its_option_by_service() {
        let mut web = svc("web");
        web.privileged = true;
        web.host_namespaces = vec!["network_mode".into(), "pid".into()];
        web.devices = vec!["/dev/kvm".into()];
        web.cap_add = vec!["SYS_ADMIN".into()];
        let db = svc("db");
        let all = vec![web.clone(), db.clone()];
        check_rule("no-privileged", all.clone(), &["web privileged"]);
        check_rule(
            "no-host-namespaces",
            all.clone(),
            &["web network_mode", "web pid"],
        );
        check_rule("no-devices", all.clone(), &["web devices"]);
        check_rule("no-cap-add", all.clone(), &["web cap_add"]);
        check_rule(
            "strict",
            all.clone(),
            &[
                "web privileged",
                "web network_mode",
                "web pid",
                "web devices",
                "web cap_add",
            ],
        );
        check_rule("bind-prefixes=/srv", all, &[]);
        check_rule("strict", vec![db], &[]);
    }

    #[test]
    fn bind_prefixes_compare_whole_components() {
        let mut s = svc("app");
        s.binds = vec![
            abs("/srv/app"),
            abs("/srv"),
            abs("/srvx/app"),
            abs("/srv/../etc"),
            abs("/data/./x"),
            abs("/etc/passwd"),
            BindSource::InStack("conf".into()),
            BindSource::OutsideStack("../other".into()),
        ];
        let (_, policy) = parse("h=bind-prefixes=/srv:/data").unwrap();
        let got: Vec<String> = violations(&policy, &[s])
            .iter()
            .map(|v| v.detail.clone())
            .collect();
        assert_eq!(
            got,
            [
                "bind mount of /srvx/app is outside the allowed prefixes (/srv, /data)",
                "bind mount of /etc is outside the allowed prefixes (/srv, /data)",
                "bind mount of /etc/passwd is outside the allowed prefixes (/srv, /data)",
                "bind mount of ../other climbs out of the stack directory",
            ]
        );
    }

    #[test]
    fn the_data_directory_is_never_mounted_nor_what_holds_it() {
        let policy = HostPolicy {
            protected_paths: vec!["/var/lib/dockmesh".into()],
            ..Default::default()
        };
        for (path, refused) in [
            ("/var/lib/dockmesh", true),
            ("/var/lib/dockmesh/", true),
            ("/var/lib/dockmesh/audit.key", true),
            ("/var/lib/dockmesh/../dockmesh/ca", true),
            ("/var/lib", true),
            ("/", true),
            ("/var/lib/dockmesh-other", false),
            ("/srv", false),
        ] {
            let mut s = svc("app");
            s.binds = vec![abs(path)];
            let v = violations(&policy, &[s]);
            assert_eq!(!v.is_empty(), refused, "{path}: {v:?}");
            if refused {
                assert!(
                    v[0].detail
                        .contains("exposes the server's data directory /var/lib/dockmesh"),
                    "{v:?}"
                );
            }
        }
        // The stack's own directory is its own files, even when it lies in the data directory.
        let mut s = svc("app");
        s.binds = vec![BindSource::InStack("conf/app.yml".into())];
        assert!(violations(&policy, &[s]).is_empty());
    }

    #[test]
    fn a_refusal_names_host_service_and_option() {
        let mut web = svc("web");
        web.privileged = true;
        web.binds = vec![abs("/etc")];
        let (_, policy) = parse("b=no-privileged,bind-prefixes=/srv").unwrap();
        let e = check("b", &policy, &[web]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the host policy of b refuses this stack: service `web`: `privileged`: privileged: \
             true is not allowed; service `web`: `volumes`: bind mount of /etc is outside the \
             allowed prefixes (/srv)"
        );
        assert!(check("b", &policy, &[svc("web")]).is_ok());
    }

    #[test]
    fn refusals_and_parse_errors_hint_at_what_to_do() {
        let mut web = svc("web");
        web.privileged = true;
        let (_, policy) = parse("b=no-privileged").unwrap();
        let e = check("b", &policy, &[web]).unwrap_err();
        for part in [
            "remove those options",
            "--host-policy",
            "nothing was deployed",
        ] {
            assert!(e.hint().contains(part), "{part}: {}", e.hint());
        }
        let e = parse("a=no-root").unwrap_err();
        for part in [
            "HOST=RULE,RULE",
            "no-privileged",
            "no-host-namespaces",
            "no-devices",
            "no-cap-add",
            "bind-prefixes=/ABS:/ABS",
            "strict",
        ] {
            assert!(e.hint().contains(part), "{part}: {}", e.hint());
        }
    }

    #[test]
    fn policies_parse_or_are_refused_by_name() {
        let (host, p) = parse("local=no-privileged, no-cap-add,bind-prefixes=/srv:/data/").unwrap();
        assert_eq!(host, "local");
        assert!(p.no_privileged && p.no_cap_add && !p.no_devices && !p.no_host_namespaces);
        assert_eq!(p.bind_prefixes, Some(vec!["/srv".into(), "/data".into()]));
        for (spec, problem) in [
            ("local", "expected HOST=RULE,RULE"),
            ("=strict", "the host name is empty"),
            ("a=", "a rule is empty"),
            ("a=no-root", "unknown rule \"no-root\""),
            (
                "a=bind-prefixes=srv",
                "bind prefix \"srv\" is not an absolute path",
            ),
            ("a=strict,,no-devices", "a rule is empty"),
        ] {
            let e = parse(spec).unwrap_err();
            assert_eq!(e.problem, problem, "{spec}");
        }
    }

    /// An independent model of "beneath": the normalised path string starts with the prefix
    /// followed by `/` or ends there.
    fn model_beneath(path: &str, prefix: &str) -> bool {
        let norm = |p: &str| {
            let mut v: Vec<&str> = Vec::new();
            for c in p.split('/') {
                match c {
                    "" | "." => {}
                    ".." => {
                        v.pop();
                    }
                    c => v.push(c),
                }
            }
            format!("/{}", v.join("/"))
        };
        let (p, q) = (norm(path), norm(prefix));
        q == "/" || p == q || p.starts_with(&format!("{q}/"))
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof!["srv", "data", "srvx", "etc", "..", ".", "a", ""],
            0..6,
        )
        .prop_map(|parts| format!("/{}", parts.join("/")))
    }

    proptest! {
        #[test]
        fn bind_prefixes_agree_with_a_model(
            bind in path(),
            prefixes in prop::collection::vec(path(), 1..3),
            protected in prop::option::of(path()),
        ) {
            let policy = HostPolicy {
                bind_prefixes: Some(prefixes.clone()),
                protected_paths: protected.iter().cloned().collect(),
                ..Default::default()
            };
            let mut s = svc("app");
            s.binds = vec![BindSource::Absolute(bind.clone())];
            let refused = !violations(&policy, &[s]).is_empty();
            let guarded = protected
                .as_deref()
                .is_some_and(|d| model_beneath(&bind, d) || model_beneath(d, &bind));
            let allowed = prefixes.iter().any(|p| model_beneath(&bind, p));
            prop_assert_eq!(refused, guarded || !allowed, "{} under {:?} / {:?}", bind, prefixes, protected);
        }
    }
}
