//! The agent protocol: its version rule and the messages of the agent API that are not a
//! [`crate::ports::HostRuntime`] call.
//!
//! **The rule:** a server of protocol N accepts agents of N and N−1, so agents can be upgraded
//! after the server, one wave at a time. An older agent is refused with a reason it logs, and
//! the server records it as needing a manual upgrade; a newer agent (the server is behind) is
//! refused too. The version is named in the TLS handshake's ALPN (`dockmesh/N`).
//!
//! Messages are forward compatible: new fields carry `#[serde(default)]`, enums have an
//! `Unknown` catch-all, and nothing denies unknown fields, so an N−1 peer reads what an N peer
//! sends.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The ALPN prefix; the protocol id is `dockmesh/<version>`.
pub const ALPN_PREFIX: &str = "dockmesh/";

/// The ALPN protocol id of `version`.
pub fn alpn(version: u32) -> Vec<u8> {
    format!("{ALPN_PREFIX}{version}").into_bytes()
}

/// The ALPN ids a server of protocol `current` offers: `current`, then the previous one.
pub fn alpn_offers(current: u32) -> Vec<Vec<u8>> {
    let mut out = vec![alpn(current)];
    if current > 1 {
        out.push(alpn(current - 1));
    }
    out
}

/// The version an ALPN id names, if it is one of ours (`dockmesh/<decimal without sign or
/// leading zero>`).
pub fn parse_alpn(id: &[u8]) -> Option<u32> {
    let rest = std::str::from_utf8(id).ok()?.strip_prefix(ALPN_PREFIX)?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.starts_with('0') {
        return None;
    }
    rest.parse().ok()
}

/// How a server judges an agent's protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Compatibility {
    /// The same version.
    Current,
    /// One behind: accepted; the agent should be upgraded.
    Previous,
    /// Older than N−1: refused; the agent needs a manual upgrade.
    TooOld {
        /// The oldest accepted.
        oldest: u32,
    },
    /// Newer than the server: refused; upgrade the server first.
    TooNew {
        /// The newest accepted.
        newest: u32,
    },
}

impl Compatibility {
    /// Whether the agent may connect.
    pub fn accepted(self) -> bool {
        matches!(self, Compatibility::Current | Compatibility::Previous)
    }
}

/// Judge an agent of protocol `agent` connecting to a server of protocol `server`.
pub fn check(server: u32, agent: u32) -> Compatibility {
    if agent == server {
        Compatibility::Current
    } else if agent > server {
        Compatibility::TooNew { newest: server }
    } else if agent + 1 == server {
        Compatibility::Previous
    } else {
        Compatibility::TooOld {
            oldest: server.saturating_sub(1).max(1),
        }
    }
}

/// Why an agent of protocol `agent` is refused by a server of protocol `server`, in words an
/// operator can act on; `None` when it is accepted.
pub fn refusal(server: u32, agent: u32) -> Option<String> {
    match check(server, agent) {
        Compatibility::Current | Compatibility::Previous => None,
        Compatibility::TooOld { oldest } => Some(format!(
            "this agent speaks protocol {agent}, older than the {oldest} the server needs at least (the server speaks {server}): upgrade the agent by hand to the server's version"
        )),
        Compatibility::TooNew { newest } => Some(format!(
            "this agent speaks protocol {agent}, newer than the server's {newest}: upgrade the server first"
        )),
    }
}

/// What an agent says about itself when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's version (`0.1.0`).
    pub version: String,
    /// The build commit, when known.
    #[serde(default)]
    pub commit: Option<String>,
    /// The protocol it speaks.
    pub protocol_version: u32,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// CPU architecture (`x86_64`).
    #[serde(default)]
    pub arch: String,
    /// The host's name.
    #[serde(default)]
    pub hostname: String,
    /// The Docker engine's version.
    #[serde(default)]
    pub docker_version: String,
    /// The last upgrade this agent was sent failed and it went back to its previous binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_failure: Option<UpgradeFailure>,
}

/// An upgrade that did not take: the agent runs its previous binary again and says why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeFailure {
    /// The version the agent was sent.
    pub target_version: String,
    /// What went wrong (the new binary exited, or did not connect before the deadline).
    pub reason: String,
}

/// A report an agent sends on its event stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentReport {
    /// Still here (also keeps intermediaries from closing an idle stream).
    Heartbeat {
        /// The agent's clock, for skew warnings.
        at: jiff::Timestamp,
    },
    /// A stack's containers changed state on the host.
    StackChanged {
        /// The stack.
        stack: String,
    },
    /// A report this version does not know (sent by a newer peer); ignored.
    #[serde(other)]
    Unknown,
}

/// The first reconnect delay's ceiling.
pub const RECONNECT_FIRST: Duration = Duration::from_secs(1);
/// The largest reconnect delay.
pub const RECONNECT_MAX: Duration = Duration::from_secs(60);
/// A session that lasted this long was stable: the next reconnect starts again from
/// [`RECONNECT_FIRST`].
pub const RECONNECT_STABLE: Duration = Duration::from_secs(60);

/// The ceiling of an agent's reconnect delay after `failures` failed or short sessions in a
/// row (0 for the first retry): 1 s, 2 s, 4 s, … at most [`RECONNECT_MAX`].
pub fn reconnect_ceiling(failures: u32) -> Duration {
    let factor = 1u64.checked_shl(failures.min(32)).unwrap_or(u64::MAX);
    RECONNECT_FIRST
        .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .map_or(RECONNECT_MAX, |d| d.min(RECONNECT_MAX))
}

/// "Full jitter": the delay is drawn uniformly between zero and the ceiling, so that agents
/// cut off together do not come back together. `unit` is a uniform draw in `[0, 1)`.
pub fn reconnect_delay(failures: u32, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    reconnect_ceiling(failures).mul_f64(unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn n_and_n_minus_one_are_accepted() {
        for (server, agent, want) in [
            (1, 1, Compatibility::Current),
            (2, 1, Compatibility::Previous),
            (3, 1, Compatibility::TooOld { oldest: 2 }),
            (1, 2, Compatibility::TooNew { newest: 1 }),
            (5, 0, Compatibility::TooOld { oldest: 4 }),
            (1, 0, Compatibility::Previous),
        ] {
            assert_eq!(check(server, agent), want, "{server} {agent}");
            assert_eq!(
                check(server, agent).accepted(),
                matches!(want, Compatibility::Current | Compatibility::Previous)
            );
        }
        assert!(refusal(3, 1).unwrap().contains("protocol 1"));
        assert!(refusal(3, 1).unwrap().contains("by hand"));
        assert!(refusal(1, 2).unwrap().contains("upgrade the server"));
        assert_eq!(refusal(2, 1), None);
    }

    #[test]
    fn alpn_ids_round_trip_and_strangers_are_not_ours() {
        assert_eq!(alpn(1), b"dockmesh/1");
        assert_eq!(alpn_offers(1), vec![b"dockmesh/1".to_vec()]);
        assert_eq!(
            alpn_offers(3),
            vec![b"dockmesh/3".to_vec(), b"dockmesh/2".to_vec()]
        );
        for bad in [
            &b"h2"[..],
            b"dockmesh/",
            b"dockmesh/01",
            b"dockmesh/-1",
            b"dockmesh/+1",
            b"dockmesh/1a",
            b"dockmesh/99999999999",
            b"\xff",
        ] {
            assert_eq!(parse_alpn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_from_a_newer_peer_are_read() {
        let hello: Hello = serde_json::from_str(
            r#"{"version":"0.2.0","protocol_version":2,"later_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(hello.protocol_version, 2);
        assert_eq!(hello.os, "");
        let r: AgentReport =
            serde_json::from_str(r#"{"type":"disk_filling","percent":97}"#).unwrap();
        assert_eq!(r, AgentReport::Unknown);
        let r: AgentReport =
            serde_json::from_str(r#"{"type":"stack_changed","stack":"shop","extra":1}"#).unwrap();
        assert_eq!(
            r,
            AgentReport::StackChanged {
                stack: "shop".into()
            }
        );
    }

    #[test]
    fn reconnect_ceilings_double_from_one_second_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|f| reconnect_ceiling(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(reconnect_ceiling(u32::MAX), RECONNECT_MAX);
        assert_eq!(reconnect_delay(3, 0.5), Duration::from_secs(4));
        assert_eq!(reconnect_delay(0, 0.0), Duration::ZERO);
        assert_eq!(reconnect_delay(0, f64::NAN), Duration::ZERO);
        assert_eq!(reconnect_delay(0, 7.0), RECONNECT_FIRST);
    }

    proptest! {
        #[test]
        fn a_reconnect_delay_stays_under_its_ceiling(failures in 0u32..200, unit in 0.0f64..1.0) {
            let d = reconnect_delay(failures, unit);
            prop_assert!(d <= reconnect_ceiling(failures));
            prop_assert!(reconnect_ceiling(failures) <= RECONNECT_MAX);
            prop_assert!(reconnect_ceiling(failures) <= reconnect_ceiling(failures + 1));
            prop_assert!(reconnect_ceiling(failures) >= RECONNECT_FIRST);
        }
    }

    proptest! {
        /// The rule, recomputed: accepted exactly when the agent is the server's version or
        /// the one before; a refusal names the agent's version.
        #[test]
        fn accepted_exactly_for_n_and_n_minus_one(
            server in 0u32..1000,
            near in -3i64..=3,
            far in 0u32..1000,
            pick_near in any::<bool>(),
        ) {
            // Half the cases within 3 of the server's version, where the rule's edges are.
            let agent = if pick_near {
                u32::try_from((i64::from(server) + near).max(0)).unwrap()
            } else {
                far
            };
            let accepted = agent == server || agent.checked_add(1) == Some(server);
            prop_assert_eq!(check(server, agent).accepted(), accepted);
            prop_assert_eq!(refusal(server, agent).is_none(), accepted);
            if let Some(r) = refusal(server, agent) {
                let named = format!("protocol {agent}");
                prop_assert!(r.contains(&named));
            }
        }

        #[test]
        fn every_version_round_trips_through_alpn(v in 1u32..u32::MAX) {
            prop_assert_eq!(parse_alpn(&alpn(v)), Some(v));
        }
    }
}
