//! The hosts' snapshot cache in process, over the core's fakes: concurrent reads of the hosts
//! list share one engine call per host, a host that does not answer is listed unreachable
//! without delaying the others, an event makes the next read ask again, and decisions
//! (pre-flight, a drain's plan) always ask the engine.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockmesh_core::HostId;
use dockmesh_core::ports::{Clock, HostEvent, TokenStore};
use dockmesh_core::testing::{FakeHost, FixedClock, MemStore, SeqIds};
use dockmesh_http::server::snapshots::SnapshotSettings;
use dockmesh_http::server::{Hosts, Lifecycle, ServerConfig, ServerState, api};
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

struct World {
    state: ServerState,
    token: String,
    clock: Arc<FixedClock>,
    a: Arc<FakeHost>,
    b: Arc<FakeHost>,
}

const TIMEOUT: Duration = Duration::from_millis(300);

async fn world() -> World {
    let clock = Arc::new(FixedClock::new(
        jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    ));
    let store = Arc::new(MemStore::with_clock(clock.clone()));
    let (token, record) = dockmesh_http::server::auth::new_api_token("ops", clock.now()).unwrap();
    store.put_token(&record).await.unwrap();
    let a = Arc::new(FakeHost::new("a"));
    let b = Arc::new(FakeHost::new("b"));
    let hosts = Hosts::new();
    hosts.add(a.clone()).unwrap();
    hosts.add(b.clone()).unwrap();
    let config = ServerConfig {
        snapshots: SnapshotSettings {
            timeout: TIMEOUT,
            ..SnapshotSettings::default()
        },
        ..ServerConfig::default()
    };
    let state = ServerState::new(
        store,
        hosts,
        clock.clone(),
        Arc::new(SeqIds::default()),
        config,
    );
    state.set_lifecycle(Lifecycle::Ready);
    World {
        state,
        token,
        clock,
        a,
        b,
    }
}

impl World {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => {
                req = req.header(header::CONTENT_LENGTH, "0");
                req.body(Body::empty())
            }
        }
        .unwrap();
        let resp = api::router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    async fn hosts(&self) -> Value {
        let (s, v) = self.call("GET", "/api/v1/hosts", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

fn sleeps(d: Duration) -> impl Fn() -> futures_util::future::BoxFuture<'static, ()> {
    move || tokio::time::sleep(d).boxed()
}

#[tokio::test]
async fn concurrent_host_lists_make_one_engine_call_per_host() {
    let w = Arc::new(world().await);
    // Slow engines, so that every request arrives while the first call still runs.
    w.a.delay_snapshots(sleeps(Duration::from_millis(100)));
    w.b.delay_snapshots(sleeps(Duration::from_millis(100)));
    let lists = futures_util::future::join_all((0..64).map(|_| {
        let w = w.clone();
        tokio::spawn(async move { w.hosts().await })
    }))
    .await;
    for l in lists {
        let l = l.unwrap();
        assert_eq!(l[0]["id"], "a");
        assert_eq!(l[0]["online"], true, "{l}");
        assert_eq!(l[1]["online"], true, "{l}");
        assert_eq!(l[0]["observed_at"], "2027-01-15T08:00:00Z", "{l}");
    }
    assert_eq!((w.a.snapshot_calls(), w.b.snapshot_calls()), (1, 1));
    // Later reads are served from memory until the max age passes.
    w.clock.advance(jiff::SignedDuration::from_secs(29));
    w.hosts().await;
    assert_eq!((w.a.snapshot_calls(), w.b.snapshot_calls()), (1, 1));
    w.clock.advance(jiff::SignedDuration::from_secs(2));
    let l = w.hosts().await;
    assert_eq!((w.a.snapshot_calls(), w.b.snapshot_calls()), (2, 2));
    assert_eq!(l[0]["observed_at"], "2027-01-15T08:00:31Z", "{l}");
}

#[tokio::test]
async fn a_host_that_never_answers_is_unreachable_and_slows_no_other_row() {
    let w = world().await;
    w.hosts().await;
    // `b` answered once; now its engine hangs.
    w.b.delay_snapshots(|| futures_util::future::pending().boxed());
    w.clock.advance(jiff::SignedDuration::from_secs(40));
    let started = Instant::now();
    let l = w.hosts().await;
    let took = started.elapsed();
    assert!(took < TIMEOUT + Duration::from_millis(200), "took {took:?}");
    assert!(took >= TIMEOUT, "took {took:?}");
    assert_eq!(l[0]["online"], true, "{l}");
    assert_eq!(l[0]["observed_at"], "2027-01-15T08:00:40Z", "{l}");
    assert_eq!(l[1]["online"], false, "{l}");
    assert!(
        l[1]["error"].as_str().unwrap().starts_with("unreachable"),
        "{l}"
    );
    // The last time it answered.
    assert_eq!(l[1]["observed_at"], "2027-01-15T08:00:00Z", "{l}");
    // The failure is remembered too: the next reads do not wait on the dead engine again.
    let started = Instant::now();
    let l = w.hosts().await;
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    assert_eq!(l[1]["online"], false, "{l}");
}

#[tokio::test]
async fn the_per_host_bound_holds_for_fresh_calls() {
    let w = Arc::new(world().await);
    w.a.delay_snapshots(|| futures_util::future::pending().boxed());
    // Drain plans ask every host fresh each time; `a` never answers.
    let plans: Vec<_> = (0..8)
        .map(|_| {
            let w = w.clone();
            tokio::spawn(async move { w.call("POST", "/api/v1/hosts/b/drain/plan", None).await })
        })
        .collect();
    tokio::time::sleep(TIMEOUT / 3).await;
    assert_eq!(w.a.snapshot_calls(), 2, "calls running at once on one host");
    assert_eq!(w.b.snapshot_calls(), 8);
    for p in plans {
        let (s, v) = p.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test]
async fn an_event_makes_the_next_read_ask_again() {
    let w = world().await;
    let l = w.hosts().await;
    assert_eq!(l[0]["stacks"], json!([]));
    w.a.seed_stack(
        dockmesh_core::StackFiles {
            name: "shop".into(),
            compose: "services: {}".into(),
            env: None,
        },
        &[],
        1 << 20,
    );
    // Without an event the cached snapshot is still served.
    assert_eq!(w.hosts().await[0]["stacks"], json!([]));
    assert_eq!(w.a.snapshot_calls(), 1);
    w.state.host_events().record(
        &HostId::from("a"),
        HostEvent {
            at: w.clock.now(),
            stack: "shop".into(),
            service: None,
            container: "shop-web-1".into(),
            action: "start".into(),
            exit_code: None,
        },
    );
    let l = w.hosts().await;
    assert_eq!(l[0]["stacks"], json!(["shop"]), "{l}");
    assert_eq!((w.a.snapshot_calls(), w.b.snapshot_calls()), (2, 1));
}

#[tokio::test]
async fn preflight_and_drain_plans_ask_the_engine_even_when_the_cache_is_fresh() {
    let w = world().await;
    w.hosts().await;
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks",
            Some(json!({"name": "shop", "compose": "services: {}"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/deploy",
            Some(json!({"host": "a"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A drain's plan asks both hosts although the cache is fresh.
    let before = (w.a.snapshot_calls(), w.b.snapshot_calls());
    let (s, v) = w.call("POST", "/api/v1/hosts/a/drain/plan", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (w.a.snapshot_calls(), w.b.snapshot_calls()),
        (before.0 + 1, before.1 + 1)
    );
    // `b` goes down without an event: the list still shows it as last observed, but the
    // migration's pre-flight asks it and refuses.
    w.b.set_online(false);
    assert_eq!(w.hosts().await[1]["online"], true);
    let before = w.b.snapshot_calls();
    let (s, v) = w
        .call(
            "POST",
            "/api/v1/stacks/shop/migrate",
            Some(json!({"target_host_id": "b"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "preflight_failed");
    assert!(w.b.snapshot_calls() > before);

    // `?fresh=true` asks every host now: `b` is listed down at once, and asked once more.
    let before = (w.a.snapshot_calls(), w.b.snapshot_calls());
    let (s, v) = w.call("GET", "/api/v1/hosts?fresh=true", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v[1]["online"], false, "{v}");
    assert_eq!(
        (w.a.snapshot_calls(), w.b.snapshot_calls()),
        (before.0 + 1, before.1 + 1)
    );
}

#[tokio::test]
async fn each_host_keeps_a_bounded_history_sampled_at_most_every_half_refresh() {
    use dockmesh_http::server::snapshots::HISTORY;
    let w = world().await;
    let cache = w.state.snapshots();
    let a = HostId::from("a");
    assert!(
        cache.history(&a).is_empty(),
        "nothing before the first answer"
    );
    let start = w.clock.now();
    cache.fresh(&a).await;
    // Calls closer together than half the refresh interval (5 s) add nothing.
    w.clock.advance(jiff::SignedDuration::from_secs(2));
    cache.fresh(&a).await;
    let h = cache.history(&a);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0].at, start);
    assert_eq!(
        (h[0].memory_used, h[0].memory_total, h[0].containers_running),
        (1 << 30, 8 << 30, Some(0))
    );
    // A host that does not answer adds nothing either.
    w.clock.advance(jiff::SignedDuration::from_secs(10));
    w.a.set_online(false);
    cache.fresh(&a).await;
    assert_eq!(cache.history(&a).len(), 1);
    w.a.set_online(true);
    for _ in 0..HISTORY + 10 {
        w.clock.advance(jiff::SignedDuration::from_secs(10));
        cache.fresh(&a).await;
    }
    let h = cache.history(&a);
    assert_eq!(h.len(), HISTORY, "bounded");
    assert!(h.windows(2).all(|p| p[0].at < p[1].at), "oldest first");
    assert_eq!(h.last().unwrap().at, w.clock.now(), "the newest kept");
    assert!(cache.history(&HostId::from("b")).is_empty());
}
