//! The checks after a server upgrade (`dockmesh upgrade verify`): every host online (and as
//! many as expected), agents on the server's version or listed as pending a manual upgrade,
//! stacks healthy, the audit chain intact, the schema up to date. A pure function of what was
//! observed; the report is a [`PreflightReport`] of pass / warn / fail.

use crate::preflight::{CheckResult, CheckStatus, PreflightReport};
use serde::{Deserialize, Serialize};

/// One host as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Its id.
    pub id: String,
    /// Whether it answered.
    pub online: bool,
}

/// One agent as the server records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// Its id.
    pub id: String,
    /// The version it runs.
    pub version: String,
    /// Why it waits for a manual upgrade, when it does.
    pub pending_manual: Option<String>,
}

/// One deployed stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackState {
    /// Its name.
    pub name: String,
    /// Healthy: every container running, none unhealthy.
    pub healthy: bool,
    /// What was seen, when not healthy.
    pub detail: String,
}

/// Everything observed for a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyInput {
    /// The server's version.
    pub server_version: String,
    /// How many hosts there must be, when the operator says.
    pub expect_hosts: Option<usize>,
    /// Every host.
    pub hosts: Vec<HostState>,
    /// Every agent.
    pub agents: Vec<AgentState>,
    /// Every deployed stack.
    pub stacks: Vec<StackState>,
    /// The audit chain: `Err(why)` when it is broken or cannot be verified.
    pub audit: Result<(), String>,
    /// The schema: `Err(why)` when it is not up to date (or cannot be read).
    pub schema: Result<(), String>,
}

fn result(name: &str, status: CheckStatus, detail: String) -> CheckResult {
    CheckResult {
        name: name.to_owned(),
        status,
        detail,
    }
}

/// The checks, in a fixed order: `hosts_online`, `agents_version`, `stacks_healthy`,
/// `audit_chain`, `schema`. A check fails when anything it looks at is off, naming each; an
/// agent pending a manual upgrade is a warning, listed.
pub fn verify(input: &VerifyInput) -> PreflightReport {
    let mut checks = Vec::with_capacity(5);

    let offline: Vec<&str> = input
        .hosts
        .iter()
        .filter(|h| !h.online)
        .map(|h| h.id.as_str())
        .collect();
    let mut problems = Vec::new();
    if !offline.is_empty() {
        problems.push(format!("offline: {}", offline.join(", ")));
    }
    if let Some(n) = input.expect_hosts
        && n != input.hosts.len()
    {
        problems.push(format!("{} hosts, {n} expected", input.hosts.len()));
    }
    checks.push(if problems.is_empty() {
        result(
            "hosts_online",
            CheckStatus::Pass,
            format!("{} hosts online", input.hosts.len()),
        )
    } else {
        result("hosts_online", CheckStatus::Fail, problems.join("; "))
    });

    let behind: Vec<String> = input
        .agents
        .iter()
        .filter(|a| a.version != input.server_version && a.pending_manual.is_none())
        .map(|a| format!("{} runs {}", a.id, a.version))
        .collect();
    let pending: Vec<String> = input
        .agents
        .iter()
        .filter_map(|a| {
            let why = a.pending_manual.as_ref()?;
            Some(format!("{} runs {} ({why})", a.id, a.version))
        })
        .collect();
    checks.push(if !behind.is_empty() {
        result(
            "agents_version",
            CheckStatus::Fail,
            format!("not on {}: {}", input.server_version, behind.join(", ")),
        )
    } else if !pending.is_empty() {
        result(
            "agents_version",
            CheckStatus::Warn,
            format!("pending a manual upgrade: {}", pending.join(", ")),
        )
    } else {
        result(
            "agents_version",
            CheckStatus::Pass,
            format!("{} agents on {}", input.agents.len(), input.server_version),
        )
    });

    let sick: Vec<String> = input
        .stacks
        .iter()
        .filter(|s| !s.healthy)
        .map(|s| format!("{} ({})", s.name, s.detail))
        .collect();
    checks.push(if sick.is_empty() {
        result(
            "stacks_healthy",
            CheckStatus::Pass,
            format!("{} stacks healthy", input.stacks.len()),
        )
    } else {
        result("stacks_healthy", CheckStatus::Fail, sick.join("; "))
    });

    checks.push(match &input.audit {
        Ok(()) => result("audit_chain", CheckStatus::Pass, "intact".into()),
        Err(why) => result("audit_chain", CheckStatus::Fail, why.clone()),
    });
    checks.push(match &input.schema {
        Ok(()) => result("schema", CheckStatus::Pass, "up to date".into()),
        Err(why) => result("schema", CheckStatus::Fail, why.clone()),
    });
    PreflightReport { checks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input() -> VerifyInput {
        VerifyInput {
            server_version: "2.0.0".into(),
            expect_hosts: Some(2),
            hosts: vec![
                HostState {
                    id: "a".into(),
                    online: true,
                },
                HostState {
                    id: "b".into(),
                    online: true,
                },
            ],
            agents: vec![AgentState {
                id: "ag1".into(),
                version: "2.0.0".into(),
                pending_manual: None,
            }],
            stacks: vec![StackState {
                name: "shop".into(),
                healthy: true,
                detail: String::new(),
            }],
            audit: Ok(()),
            schema: Ok(()),
        }
    }

    fn lines(r: &PreflightReport) -> Vec<String> {
        r.checks
            .iter()
            .map(|c| format!("{} {:?}: {}", c.name, c.status, c.detail))
            .collect()
    }

    #[test]
    fn all_well() {
        let r = verify(&input());
        assert!(r.passed());
        assert_eq!(
            lines(&r),
            [
                "hosts_online Pass: 2 hosts online",
                "agents_version Pass: 1 agents on 2.0.0",
                "stacks_healthy Pass: 1 stacks healthy",
                "audit_chain Pass: intact",
                "schema Pass: up to date",
            ]
        );
    }

    #[test]
    fn each_problem_is_named() {
        let mut i = input();
        i.hosts[1].online = false;
        i.expect_hosts = Some(3);
        i.agents.push(AgentState {
            id: "ag2".into(),
            version: "1.9.0".into(),
            pending_manual: None,
        });
        i.stacks[0].healthy = false;
        i.stacks[0].detail = "web: unhealthy".into();
        i.audit = Err("entry 7 was edited".into());
        i.schema = Err("pending: 6 -> 7".into());
        let r = verify(&i);
        assert!(!r.passed());
        assert_eq!(
            lines(&r),
            [
                "hosts_online Fail: offline: b; 2 hosts, 3 expected",
                "agents_version Fail: not on 2.0.0: ag2 runs 1.9.0",
                "stacks_healthy Fail: shop (web: unhealthy)",
                "audit_chain Fail: entry 7 was edited",
                "schema Fail: pending: 6 -> 7",
            ]
        );
        let mut i = input();
        i.agents[0].version = "1.9.0".into();
        i.agents[0].pending_manual = Some("protocol 1 refused".into());
        i.expect_hosts = None;
        let r = verify(&i);
        assert!(
            r.passed(),
            "a pending manual upgrade is listed, not a failure"
        );
        assert_eq!(
            lines(&r)[1],
            "agents_version Warn: pending a manual upgrade: ag1 runs 1.9.0 (protocol 1 refused)"
        );
    }

    fn arb_input() -> impl Strategy<Value = VerifyInput> {
        (
            prop::collection::vec(any::<bool>(), 0..4),
            prop::option::of(0usize..5),
            prop::collection::vec((0..3u8, any::<bool>()), 0..4),
            prop::collection::vec(any::<bool>(), 0..4),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(hosts, expect, agents, stacks, audit, schema)| VerifyInput {
                    server_version: "2.0.0".into(),
                    expect_hosts: expect,
                    hosts: hosts
                        .into_iter()
                        .enumerate()
                        .map(|(i, online)| HostState {
                            id: format!("h{i}"),
                            online,
                        })
                        .collect(),
                    agents: agents
                        .into_iter()
                        .enumerate()
                        .map(|(i, (v, pending))| AgentState {
                            id: format!("a{i}"),
                            version: format!("{}.0.0", v + 1),
                            pending_manual: pending.then(|| "manual".into()),
                        })
                        .collect(),
                    stacks: stacks
                        .into_iter()
                        .enumerate()
                        .map(|(i, healthy)| StackState {
                            name: format!("s{i}"),
                            healthy,
                            detail: "x".into(),
                        })
                        .collect(),
                    audit: if audit { Ok(()) } else { Err("broken".into()) },
                    schema: if schema { Ok(()) } else { Err("old".into()) },
                },
            )
    }

    proptest! {
        /// Reference model: the report passes exactly when nothing is off, and every failing
        /// check names each host, agent and stack that is off.
        #[test]
        fn passes_exactly_when_nothing_is_off(i in arb_input()) {
            let r = verify(&i);
            let hosts_ok = i.hosts.iter().all(|h| h.online)
                && i.expect_hosts.is_none_or(|n| n == i.hosts.len());
            let agents_ok = i.agents.iter().all(|a| a.version == i.server_version || a.pending_manual.is_some());
            let stacks_ok = i.stacks.iter().all(|s| s.healthy);
            let expected = hosts_ok && agents_ok && stacks_ok && i.audit.is_ok() && i.schema.is_ok();
            prop_assert_eq!(r.passed(), expected);
            prop_assert_eq!(r.checks.len(), 5);
            let status = |n: &str| r.checks.iter().find(|c| c.name == n).unwrap().clone();
            prop_assert_eq!(status("hosts_online").status == CheckStatus::Fail, !hosts_ok);
            prop_assert_eq!(status("agents_version").status == CheckStatus::Fail, !agents_ok);
            prop_assert_eq!(status("stacks_healthy").status == CheckStatus::Fail, !stacks_ok);
            let pending = i.agents.iter().any(|a| a.pending_manual.is_some());
            prop_assert_eq!(status("agents_version").status == CheckStatus::Warn, agents_ok && pending);
            for h in i.hosts.iter().filter(|h| !h.online) {
                prop_assert!(status("hosts_online").detail.contains(&h.id));
            }
            for s in i.stacks.iter().filter(|s| !s.healthy) {
                prop_assert!(status("stacks_healthy").detail.contains(&s.name));
            }
            for a in i.agents.iter().filter(|a| a.version != i.server_version && a.pending_manual.is_none()) {
                prop_assert!(status("agents_version").detail.contains(&a.id));
            }
        }
    }
}

/// An agent as last seen, for [`stale`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The agent's id.
    pub id: String,
    /// Its host.
    pub host: String,
    /// When it was last seen; `None`: never.
    pub last_seen: Option<jiff::Timestamp>,
}

/// The agents (with their hosts) not seen since `now − older_than`, or never: oldest first,
/// the never seen ones before all.
pub fn stale(now: jiff::Timestamp, older_than: jiff::SignedDuration, seen: &[Seen]) -> Vec<Seen> {
    let limit = now.checked_sub(older_than).unwrap_or(jiff::Timestamp::MIN);
    let mut out: Vec<Seen> = seen
        .iter()
        .filter(|s| s.last_seen.is_none_or(|t| t < limit))
        .cloned()
        .collect();
    out.sort_by(|a, b| a.last_seen.cmp(&b.last_seen).then_with(|| a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod stale_tests {
    use super::*;
    use jiff::{SignedDuration, Timestamp};
    use proptest::prelude::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn seen(id: &str, at: Option<i64>) -> Seen {
        Seen {
            id: id.into(),
            host: format!("host-{id}"),
            last_seen: at.map(t),
        }
    }

    #[test]
    fn lists_the_never_seen_then_the_oldest() {
        let day = 86_400;
        let all = [
            seen("fresh", Some(-day)),
            seen("old", Some(-40 * day)),
            seen("never", None),
            seen("older", Some(-90 * day)),
            seen("edge", Some(-30 * day)),
        ];
        let ids: Vec<String> = stale(t(0), SignedDuration::from_hours(24 * 30), &all)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(
            ids,
            ["never", "older", "old"],
            "exactly 30 days ago is not stale"
        );
    }

    proptest! {
        /// Reference: stale exactly when never seen or seen strictly before the limit.
        #[test]
        fn stale_is_seen_before_the_limit(ages in prop::collection::vec(prop::option::of(0i64..100), 0..8), limit in 0i64..100) {
            let all: Vec<Seen> = ages.iter().enumerate().map(|(i, a)| seen(&format!("a{i}"), a.map(|a| -a))).collect();
            let out = stale(t(0), SignedDuration::from_secs(limit), &all);
            for s in &all {
                let expected = s.last_seen.is_none_or(|at| at < t(-limit));
                prop_assert_eq!(out.contains(s), expected);
            }
            prop_assert!(out.windows(2).all(|w| w[0].last_seen <= w[1].last_seen));
        }
    }
}
