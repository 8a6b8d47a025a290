//! Per-address limits on what an unauthenticated client can make the server do: failed bearer
//! tokens, failed dashboard logins and enrollment attempts. Over its limit an address is
//! answered 429 with `Retry-After` (and the API's JSON error body) before any token is looked at.
//!
//! Each limit is a keyed GCRA limiter (`governor`) on the server's clock, keyed by the client's
//! address ([`client_key`]: the peer address the listener saw, an IPv6 address by its /64).
//! Failures are counted after the fact, so a blocked address is remembered until its wait ends.
//!
//! **Memory stays bounded:** keys whose state is back to fresh are pruned at most every
//! [`PRUNE_EVERY`], and at most [`MAX_TRACKED`] addresses are tracked per limit; once that many
//! are, the addresses not yet tracked share one key (so a flood from many addresses slows them
//! all rather than growing the map).

use crate::server::error::ApiError;
use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dockmesh_core::ports::Clock;
use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Failed bearer tokens an address may present per minute (and at once).
pub const BEARER_FAILURES_PER_MINUTE: u32 = 20;
/// Failed dashboard logins an address may make per minute (and at once).
pub const LOGIN_FAILURES_PER_MINUTE: u32 = 10;
/// Enrollment attempts an address may make per minute (and at once).
pub const ENROLL_ATTEMPTS_PER_MINUTE: u32 = 10;
/// The most addresses one limit tracks; beyond them new addresses share one key.
pub const MAX_TRACKED: usize = 16_384;
/// How often state back to fresh is pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// The key of requests whose peer address is not known (no `ConnectInfo`): they share it.
const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// The key shared by the addresses not tracked once [`MAX_TRACKED`] are.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The key a request is limited by: its peer's address (the listener's `ConnectInfo`), an IPv6
/// address by its /64 (one host usually holds a whole /64), an IPv4-mapped one as IPv4. A
/// request without a peer address (served without `ConnectInfo`) shares one key with all
/// such requests.
pub fn client_key(ext: &Extensions) -> IpAddr {
    match ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()) {
        None => UNKNOWN,
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// The [`client_key`] of a request, as an extractor (never refuses).
#[derive(Debug, Clone, Copy)]
pub struct ClientKey(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientKey(client_key(&parts.extensions)))
    }
}

/// The server's clock as `governor` reads time: the time since the Unix epoch.
#[derive(Clone)]
struct ServerClock(Arc<dyn Clock>);

impl GovernorClock for ServerClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        let t = self.0.now();
        Duration::try_from(t.duration_since(jiff::Timestamp::UNIX_EPOCH)).unwrap_or_default()
    }
}

type Keyed = RateLimiter<IpAddr, HashMapStateStore<IpAddr>, ServerClock, NoOpMiddleware<Duration>>;

/// One per-address limit.
pub struct Limit {
    limiter: Keyed,
    clock: ServerClock,
    /// Addresses over the limit of failures, and until when.
    blocked: Mutex<HashMap<IpAddr, Duration>>,
    last_prune: Mutex<Duration>,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("tracked", &self.tracked())
            .finish_non_exhaustive()
    }
}

impl Limit {
    /// `per_minute` events per minute per address, all of them at once at most.
    fn per_minute(clock: Arc<dyn Clock>, per_minute: u32) -> Limit {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least one");
        let clock = ServerClock(clock);
        Limit {
            limiter: RateLimiter::hashmap_with_clock(Quota::per_minute(n), clock.clone()),
            last_prune: Mutex::new(clock.now()),
            clock,
            blocked: Mutex::default(),
        }
    }

    /// How many addresses the limit tracks now (blocked or counted).
    pub fn tracked(&self) -> usize {
        self.limiter.len() + self.blocked.lock().expect("limit lock").len()
    }

    /// The key to count `key` under: itself, or the shared overflow key when the limit
    /// already tracks as many addresses as it may.
    fn key_for(&self, key: IpAddr) -> IpAddr {
        let now = self.clock.now();
        let due = {
            let mut last = self.last_prune.lock().expect("limit lock");
            let due = now.saturating_sub(*last) >= PRUNE_EVERY || self.limiter.len() >= MAX_TRACKED;
            if due {
                *last = now;
            }
            due
        };
        if due {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            let mut blocked = self.blocked.lock().expect("limit lock");
            blocked.retain(|_, until| *until > now);
            blocked.shrink_to_fit();
        }
        if self.limiter.len() >= MAX_TRACKED {
            OVERFLOW
        } else {
            key
        }
    }

    /// How long `key` must still wait after too many failures, if it must.
    pub fn blocked(&self, key: IpAddr) -> Option<Duration> {
        let now = self.clock.now();
        let mut blocked = self.blocked.lock().expect("limit lock");
        let until = blocked
            .get(&key)
            .or_else(|| blocked.get(&OVERFLOW))
            .copied()?;
        if until > now {
            Some(until - now)
        } else {
            blocked.remove(&key);
            None
        }
    }

    /// Count a failure of `key`: how long it must wait now, when this one was over the limit.
    pub fn failed(&self, key: IpAddr) -> Option<Duration> {
        let key = self.key_for(key);
        let now = self.clock.now();
        let wait = self.limiter.check_key(&key).err()?.wait_time_from(now);
        let wait = wait.max(Duration::from_secs(1));
        self.blocked
            .lock()
            .expect("limit lock")
            .insert(key, now + wait);
        Some(wait)
    }

    /// Count an attempt of `key`: `Err` with how long to wait when it is over the limit (the
    /// refused attempt is not counted).
    pub fn attempt(&self, key: IpAddr) -> Result<(), Duration> {
        let key = self.key_for(key);
        let now = self.clock.now();
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => Err(not_until.wait_time_from(now).max(Duration::from_secs(1))),
        }
    }
}

/// The server's per-address limits.
#[derive(Debug)]
pub struct AuthLimits {
    /// Failed bearer tokens on the API.
    pub bearer: Limit,
    /// Failed logins on the dashboard.
    pub login: Limit,
    /// Enrollment attempts.
    pub enroll: Limit,
}

impl AuthLimits {
    /// The limits, on `clock`; an address may present `failed_tokens_per_minute` failed API
    /// tokens a minute ([`BEARER_FAILURES_PER_MINUTE`] unless the operator says otherwise).
    pub fn new(clock: Arc<dyn Clock>, failed_tokens_per_minute: u32) -> AuthLimits {
        AuthLimits {
            bearer: Limit::per_minute(clock.clone(), failed_tokens_per_minute),
            login: Limit::per_minute(clock.clone(), LOGIN_FAILURES_PER_MINUTE),
            enroll: Limit::per_minute(clock, ENROLL_ATTEMPTS_PER_MINUTE),
        }
    }
}

/// Whole seconds to wait, rounded up (at least one).
pub fn retry_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The `Retry-After` value of `wait`.
pub fn retry_after(wait: Duration) -> HeaderValue {
    HeaderValue::from(retry_secs(wait).max(1))
}

/// 429 with `Retry-After` and the API's error body: `what` from this address are over their
/// limit.
pub fn too_many(what: &str, wait: Duration) -> Response {
    let secs = retry_secs(wait).max(1);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many {what} from this address; nothing was checked"),
    )
    .with_hint(format!("wait {secs} s before trying again"))
    .into_response();
    r.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, retry_after(wait));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockmesh_core::testing::FixedClock;

    fn at(ip: &str) -> Extensions {
        let mut e = Extensions::new();
        e.insert(ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 4000)));
        e
    }

    #[test]
    fn keys_are_the_peer_address_an_ipv6_one_by_its_64() {
        assert_eq!(
            client_key(&at("10.1.2.3")),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key(&at("2001:db8:1:2:aaaa::1")),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_key(&at("::ffff:10.1.2.3")),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_key(&Extensions::new()), UNKNOWN);
    }

    #[test]
    fn failures_block_an_address_until_its_wait_ends_and_are_pruned() {
        let clock = Arc::new(FixedClock::new(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let limit = Limit::per_minute(clock.clone(), 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.failed(a), None);
            assert_eq!(limit.blocked(a), None);
        }
        let wait = limit
            .failed(a)
            .expect("the fourth failure is over the limit");
        assert!(wait <= Duration::from_secs(20), "{wait:?}");
        assert!(limit.blocked(a).is_some());
        assert_eq!(limit.blocked(b), None, "another address is not held back");
        clock.advance(jiff::SignedDuration::try_from(wait).unwrap());
        assert_eq!(limit.blocked(a), None, "the wait ended");
        // Long after, the state is fresh again and pruned.
        clock.advance(jiff::SignedDuration::from_mins(5));
        let _ = limit.failed(b);
        assert_eq!(limit.tracked(), 1, "only b is left");
    }

    #[test]
    fn attempts_are_counted_and_a_refused_one_is_not() {
        let clock = Arc::new(FixedClock::new(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let limit = Limit::per_minute(clock.clone(), 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limit.attempt(a).is_ok());
        assert!(limit.attempt(a).is_ok());
        let wait = limit.attempt(a).unwrap_err();
        assert!(wait >= Duration::from_secs(1));
        clock.advance(jiff::SignedDuration::from_secs(30));
        assert!(limit.attempt(a).is_ok());
    }

    fn clock() -> Arc<FixedClock> {
        Arc::new(FixedClock::new(
            jiff::Timestamp::from_second(1_800_000_000).unwrap(),
        ))
    }

    fn secs(s: i64) -> jiff::SignedDuration {
        jiff::SignedDuration::from_secs(s)
    }

    #[test]
    fn a_blocked_address_is_told_the_wait_left() {
        let clock = clock();
        let limit = Limit::per_minute(clock.clone(), 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limit.failed(a), None);
        }
        let wait = limit.failed(a).expect("over the limit");
        assert_eq!(wait, Duration::from_secs(20), "one failure per 20 s");
        assert_eq!(limit.blocked(a), Some(wait));
        assert_eq!(limit.tracked(), 2, "a is counted and blocked");
        assert_eq!(format!("{limit:?}"), "Limit { tracked: 2, .. }");
        clock.advance(secs(5));
        assert_eq!(limit.blocked(a), Some(Duration::from_secs(15)));
    }

    #[test]
    fn state_is_pruned_every_30_seconds_not_at_each_call() {
        let clock = clock();
        let limit = Limit::per_minute(clock.clone(), 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(limit.failed(a), None);
        // a's one failure is forgotten 40 s on (its 20 s, then one more period).
        clock.advance(secs(30));
        assert_eq!(limit.failed(b), None);
        assert_eq!(limit.tracked(), 2, "pruned at 30 s: a still counts");
        clock.advance(secs(15));
        assert_eq!(limit.failed(b), None);
        assert_eq!(
            limit.tracked(),
            2,
            "a is fresh again, but not pruned before 60 s"
        );
        clock.advance(secs(15));
        assert_eq!(limit.failed(b), None);
        assert_eq!(limit.tracked(), 1, "pruned at 60 s: only b is left");
    }

    #[test]
    fn a_block_that_ends_at_the_prune_is_pruned() {
        let clock = clock();
        let limit = Limit::per_minute(clock.clone(), 3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        clock.advance(secs(10));
        for _ in 0..3 {
            assert_eq!(limit.failed(a), None);
        }
        assert_eq!(limit.failed(a), Some(Duration::from_secs(20)));
        assert_eq!(limit.tracked(), 2);
        // 30 s after the start: the prune is due, and a's block ends now.
        clock.advance(secs(20));
        assert_eq!(limit.failed(b), None);
        assert_eq!(limit.tracked(), 2, "a and b are counted; a's block is gone");
    }

    #[test]
    fn past_max_tracked_new_addresses_share_one_key() {
        let clock = clock();
        let limit = Limit::per_minute(clock.clone(), 3);
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(limit.failed(ip), None);
        }
        assert_eq!(limit.tracked(), MAX_TRACKED);
        let c: IpAddr = "172.16.0.1".parse().unwrap();
        let d: IpAddr = "172.16.0.2".parse().unwrap();
        for ip in [c, d, c] {
            assert_eq!(limit.failed(ip), None);
        }
        assert!(
            limit.failed(d).is_some(),
            "c and d share one key: together they reach the limit"
        );
        assert_eq!(limit.tracked(), MAX_TRACKED + 2, "one shared key, blocked");
        let e: IpAddr = "172.16.0.3".parse().unwrap();
        assert!(
            limit.blocked(e).is_some(),
            "an address not tracked waits too"
        );
    }

    #[test]
    fn waits_are_rounded_up_to_whole_seconds() {
        for (wait, secs) in [
            (Duration::ZERO, 0),
            (Duration::from_nanos(1), 1),
            (Duration::from_millis(999), 1),
            (Duration::from_secs(1), 1),
            (Duration::from_millis(1500), 2),
            (Duration::from_secs(20), 20),
        ] {
            assert_eq!(retry_secs(wait), secs, "{wait:?}");
            assert_eq!(
                retry_after(wait),
                HeaderValue::from(secs.max(1)),
                "{wait:?}"
            );
        }
        let r = too_many("failed logins", Duration::from_millis(1500));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[axum::http::header::RETRY_AFTER], "2");
    }
}
