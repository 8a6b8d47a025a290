//! The conformance suites of the store ports: one per focused trait, and [`store_conformance`]
//! running them all.

use crate::audit::{AuditEvent, AuditQuery, MIGRATION_START, STACK_DEPLOY};
use crate::drain::{DrainPlan, DrainRecord, DrainState};
use crate::migration::{DEFAULT_RETENTION, MigrationEvent, MigrationSpec};
use crate::ports::{
    AgentStore, AuditLog, DrainStore, Fence, LeaseClaim, LeaseStore, MAX_PAGE, MigrationLog,
    MigrationQuery, PageQuery, RolloutStore, StackStore, Store, StoreError, TokenStore,
};
use crate::records::{
    CordonRecord, DeployRecord, Scope, StackRecord, TokenKind, TokenRecord, TokenUse,
};
use crate::release::{ReleaseOutcome, ReleaseRecord};
use crate::rollout::{AgentRecord, ConnectionState, RolloutMode, RolloutRecord, UpgradeState};
use crate::types::{HostId, MigrationId};
use jiff::{SignedDuration, Timestamp};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("valid timestamp")
}

/// Check every promise of the [`Store`] port: each focused trait's suite in turn. `store`
/// must be empty.
pub async fn store_conformance(store: &dyn Store) {
    agent_store_conformance(store).await;
    token_store_conformance(store).await;
    stack_store_conformance(store).await;
    migration_log_conformance(store).await;
    drain_store_conformance(store).await;
    rollout_store_conformance(store).await;
    audit_log_conformance(store).await;
    lease_store_conformance(store).await;
    super::stack_upgrade_log_conformance(store).await;
}

/// Check every promise of [`AgentStore`]. `store` must hold no agent.
pub async fn agent_store_conformance(store: &dyn AgentStore) {
    agents(store).await;
}

/// Check every promise of [`TokenStore`]. `store` must hold no token.
pub async fn token_store_conformance(store: &dyn TokenStore) {
    tokens(store).await;
}

/// Check every promise of [`StackStore`]: stacks, deploy history, releases. `store` must hold
/// no stack.
pub async fn stack_store_conformance(store: &dyn StackStore) {
    stacks(store).await;
    releases(store).await;
}

/// Check every promise of [`MigrationLog`]. Its writes are fenced by leases and carry audit
/// entries in the same transaction, so the store is also a [`LeaseStore`] and an [`AuditLog`].
/// `store` must hold no migration.
pub async fn migration_log_conformance<S>(store: &S)
where
    S: MigrationLog + LeaseStore + AuditLog + ?Sized,
{
    migrations(store).await;
}

/// Check every promise of [`DrainStore`]: drains and cordons. `store` must hold neither.
pub async fn drain_store_conformance(store: &dyn DrainStore) {
    drains(store).await;
    cordons(store).await;
}

/// Check every promise of [`RolloutStore`]. `store` must never have had a policy set.
pub async fn rollout_store_conformance(store: &dyn RolloutStore) {
    rollout(store).await;
}

/// Check every promise of [`AuditLog`] (entries already in the log are allowed).
pub async fn audit_log_conformance(store: &dyn AuditLog) {
    audit(store).await;
}

/// Check every promise of [`LeaseStore`]. `store` must hold no lease.
pub async fn lease_store_conformance(store: &dyn LeaseStore) {
    leases(store).await;
}

async fn agents(store: &dyn AgentStore) {
    assert!(
        store.list_agents().await.unwrap().is_empty(),
        "store must start empty"
    );
    let mut a = AgentRecord {
        id: HostId::from("host-b"),
        name: "b".into(),
        version: "1.2.3".into(),
        commit: Some("abc".into()),
        protocol_version: 1,
        arch: "x86_64".into(),
        docker_version: "28.2.2".into(),
        last_seen: Some(t(1)),
        connection: ConnectionState::Connected,
        upgrade: UpgradeState::InFlight {
            since: t(2),
            target_version: "1.3.0".into(),
        },
    };
    store.upsert_agent(&a).await.unwrap();
    let mut a2 = a.clone();
    a2.id = HostId::from("host-a");
    a2.upgrade = UpgradeState::Idle;
    store.upsert_agent(&a2).await.unwrap();
    assert_eq!(
        store.get_agent(&a.id).await.unwrap(),
        Some(a.clone()),
        "agent round trip"
    );
    a.version = "1.3.0".into();
    a.upgrade = UpgradeState::PendingManual {
        since: t(3),
        reason: "no network".into(),
    };
    store.upsert_agent(&a).await.unwrap();
    let all = store.list_agents().await.unwrap();
    assert_eq!(
        all,
        vec![a2.clone(), a.clone()],
        "agents are listed by id, upsert replaces"
    );
    store.delete_agent(&a2.id).await.unwrap();
    store.delete_agent(&a2.id).await.unwrap();
    assert_eq!(
        store.get_agent(&a2.id).await.unwrap(),
        None,
        "deleted agent is gone"
    );
}

async fn tokens(store: &dyn TokenStore) {
    let tok = |hash: &str, one_time: bool, expires: Option<Timestamp>, created: i64| TokenRecord {
        hash: hash.into(),
        kind: TokenKind::Enrollment,
        name: format!("token {hash}"),
        created_at: t(created),
        expires_at: expires,
        one_time,
        used_at: None,
        scope: Scope::Read,
    };
    store
        .put_token(&tok("h1", true, Some(t(100)), 1))
        .await
        .unwrap();
    store.put_token(&tok("h2", false, None, 2)).await.unwrap();
    store
        .put_token(&tok("h3", false, Some(t(10)), 3))
        .await
        .unwrap();
    assert!(
        matches!(
            store.put_token(&tok("h1", false, None, 4)).await,
            Err(StoreError::Conflict { .. })
        ),
        "a duplicate token hash is a conflict"
    );
    assert_eq!(
        store.get_token("h2").await.unwrap(),
        Some(tok("h2", false, None, 2)),
        "a token is read back by its hash as it was stored"
    );
    assert_eq!(store.get_token("nope").await.unwrap(), None);
    assert_eq!(
        store
            .get_token("h1")
            .await
            .unwrap()
            .and_then(|t| t.expires_at),
        Some(t(100)),
        "the first of two puts with one hash is kept"
    );
    assert_eq!(
        store.use_token("nope", t(5)).await.unwrap(),
        TokenUse::Unknown
    );
    match store.use_token("h1", t(5)).await.unwrap() {
        TokenUse::Accepted { token } => assert_eq!(token.used_at, Some(t(5)), "spent at use"),
        other => panic!("a fresh one-time token is accepted, got {other:?}"),
    }
    assert_eq!(
        store.use_token("h1", t(6)).await.unwrap(),
        TokenUse::AlreadyUsed,
        "a one-time token works once"
    );
    assert_eq!(
        store.get_token("h1").await.unwrap().and_then(|t| t.used_at),
        Some(t(5)),
        "reading a token shows when it was spent"
    );
    for _ in 0..2 {
        assert!(matches!(
            store.use_token("h2", t(7)).await.unwrap(),
            TokenUse::Accepted { .. }
        ));
    }
    assert_eq!(
        store.use_token("h3", t(10)).await.unwrap(),
        TokenUse::Expired
    );
    let hashes: Vec<_> = store
        .list_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.hash)
        .collect();
    assert_eq!(hashes, ["h1", "h2", "h3"], "tokens listed by creation time");
    store.delete_token("h2").await.unwrap();
    assert_eq!(
        store.use_token("h2", t(8)).await.unwrap(),
        TokenUse::Unknown
    );
    assert_eq!(store.get_token("h2").await.unwrap(), None, "deleted");
    // Each API token keeps its scope.
    for (hash, scope) in [
        ("s1", Scope::Read),
        ("s2", Scope::Operate),
        ("s3", Scope::Admin),
    ] {
        let mut record = tok(hash, false, None, 20);
        record.kind = TokenKind::Api;
        record.scope = scope;
        store.put_token(&record).await.unwrap();
        match store.use_token(hash, t(21)).await.unwrap() {
            TokenUse::Accepted { token } => assert_eq!(token.scope, scope, "{hash}"),
            other => panic!("an API token is accepted, got {other:?}"),
        }
        let listed = store.list_tokens().await.unwrap();
        let found = listed.iter().find(|t| t.hash == hash).expect("listed");
        assert_eq!(found.scope, scope, "{hash} listed with its scope");
        let read = store.get_token(hash).await.unwrap().expect("read back");
        assert_eq!(
            (read.kind, read.scope),
            (TokenKind::Api, scope),
            "{hash} read with its kind and scope"
        );
        store.delete_token(hash).await.unwrap();
    }
}

async fn stacks(store: &dyn StackStore) {
    let s = StackRecord {
        name: "web".into(),
        compose: "services:\n  app:\n    image: x\n".into(),
        env: Some("A=1\n".into()),
        host: Some(HostId::from("h1")),
        updated_at: t(1),
    };
    let mut s2 = s.clone();
    s2.name = "api".into();
    s2.env = None;
    s2.host = None;
    let d = |stack: &str, at: i64, action: &str| DeployRecord {
        stack: stack.into(),
        at: t(at),
        host: HostId::from("h1"),
        action: action.into(),
        actor: "alice".into(),
    };
    store
        .put_stack(&s, Some(&d("web", 1, "deploy")))
        .await
        .unwrap();
    store
        .put_stack(&s2, Some(&d("api", 2, "deploy")))
        .await
        .unwrap();
    assert_eq!(store.get_stack("web").await.unwrap(), Some(s.clone()));
    assert_eq!(
        store.list_stacks().await.unwrap(),
        vec![s2.clone(), s.clone()],
        "by name"
    );
    store.put_stack(&s, None).await.unwrap();
    store
        .put_stack(&s, Some(&d("web", 3, "stop")))
        .await
        .unwrap();
    store
        .put_stack(&s, Some(&d("web", 4, "start")))
        .await
        .unwrap();
    let all =
        |v: Vec<crate::ports::DeployEntry>| v.into_iter().map(|e| e.record).collect::<Vec<_>>();
    let history = store
        .deploy_history("web", &PageQuery::default())
        .await
        .unwrap();
    assert!(
        history.windows(2).all(|w| w[0].seq > w[1].seq),
        "cursors decrease down the page"
    );
    assert_eq!(
        all(history),
        vec![
            d("web", 4, "start"),
            d("web", 3, "stop"),
            d("web", 1, "deploy")
        ],
        "history newest first, per stack; a put without a deploy adds none"
    );
    let page1 = store
        .deploy_history(
            "web",
            &PageQuery {
                before: None,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(page1.len(), 2, "the limit holds");
    let page2 = store
        .deploy_history(
            "web",
            &PageQuery {
                before: Some(page1[1].seq),
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all(page2),
        vec![d("web", 1, "deploy")],
        "the cursor pages on"
    );
    store.delete_stack("web").await.unwrap();
    assert_eq!(store.get_stack("web").await.unwrap(), None);
    assert!(
        store
            .deploy_history("web", &PageQuery::default())
            .await
            .unwrap()
            .is_empty(),
        "history goes with the stack"
    );
    assert_eq!(
        store
            .deploy_history("api", &PageQuery::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn releases(store: &dyn StackStore) {
    let stack = |compose: &str| StackRecord {
        name: "shop".into(),
        compose: compose.into(),
        env: Some("TAG=1\n".into()),
        host: Some(HostId::from("h1")),
        updated_at: t(10),
    };
    let release = |rev: u64, outcome: ReleaseOutcome| ReleaseRecord {
        stack: "shop".into(),
        rev,
        at: t(10 + rev as i64),
        host: HostId::from("h1"),
        compose: format!("services:\n  web:\n    image: shop:{rev}\n"),
        env: (rev % 2 == 1).then(|| "TAG=1\n".into()),
        images: [("web".to_owned(), format!("sha256:{rev:064}"))].into(),
        outcome,
        detail: (outcome != ReleaseOutcome::Deployed).then(|| "web: unhealthy".into()),
        from_rev: rev.checked_sub(1).filter(|r| *r > 0),
        actor: "alice".into(),
    };
    let deploy = |at: i64| DeployRecord {
        stack: "shop".into(),
        at: t(at),
        host: HostId::from("h1"),
        action: "upgrade".into(),
        actor: "alice".into(),
    };
    assert!(store.list_releases("shop").await.unwrap().is_empty());
    let r1 = release(1, ReleaseOutcome::Deployed);
    store
        .put_release(&r1, &stack("v1"), Some(&deploy(11)))
        .await
        .unwrap();
    assert_eq!(
        store.get_stack("shop").await.unwrap(),
        Some(stack("v1")),
        "the stack is written with its release"
    );
    let r3 = release(3, ReleaseOutcome::Deployed);
    assert!(
        matches!(
            store
                .put_release(&r3, &stack("v3"), Some(&deploy(13)))
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "a revision that skips one is a conflict"
    );
    assert!(
        matches!(
            store.put_release(&r1, &stack("again"), None).await,
            Err(StoreError::Conflict { .. })
        ),
        "a revision that exists is a conflict"
    );
    assert_eq!(
        store.get_stack("shop").await.unwrap(),
        Some(stack("v1")),
        "a refused release writes nothing"
    );
    assert_eq!(
        store
            .deploy_history("shop", &PageQuery::default())
            .await
            .unwrap()
            .len(),
        1,
        "a refused release adds no history"
    );
    let r2 = release(2, ReleaseOutcome::RolledBack);
    store.put_release(&r2, &stack("v1"), None).await.unwrap();
    let r3 = release(3, ReleaseOutcome::Failed);
    store.put_release(&r3, &stack("v1"), None).await.unwrap();
    assert_eq!(
        store.list_releases("shop").await.unwrap(),
        vec![r3, r2, r1],
        "newest first, every field kept"
    );
    assert!(store.list_releases("other").await.unwrap().is_empty());
    store.delete_stack("shop").await.unwrap();
    assert!(
        store.list_releases("shop").await.unwrap().is_empty(),
        "releases go with the stack"
    );
    store
        .put_release(&release(1, ReleaseOutcome::Deployed), &stack("v1"), None)
        .await
        .expect("a stack made again starts at revision 1");
    store.delete_stack("shop").await.unwrap();
}

fn spec(n: u128, stack: &str, at: i64) -> MigrationSpec {
    MigrationSpec {
        id: MigrationId(uuid::Uuid::from_u128(n)),
        stack: stack.into(),
        source: HostId::from("src"),
        target: HostId::from("dst"),
        requested_at: t(at),
        requested_by: "alice".into(),
        retention: DEFAULT_RETENTION,
    }
}

async fn audit_count<S: AuditLog + ?Sized>(store: &S) -> u64 {
    store.verify_audit().await.unwrap().entries_checked
}

async fn fence<S: LeaseStore + ?Sized>(store: &S, id: MigrationId) -> Fence {
    let name = crate::ports::migration_lease(id);
    match store
        .claim_lease(&name, "conformance", SignedDuration::from_hours(1))
        .await
        .unwrap()
    {
        LeaseClaim::Granted(l) => l.fence(),
        other => panic!("lease {name} not granted: {other:?}"),
    }
}

fn active(stack: Option<&str>) -> MigrationQuery {
    MigrationQuery {
        active_only: true,
        stack: stack.map(str::to_owned),
        ..Default::default()
    }
}

async fn migrations<S>(store: &S)
where
    S: MigrationLog + LeaseStore + AuditLog + ?Sized,
{
    let m1 = spec(1, "shop", 1);
    let audits = audit_count(store).await;
    let start = AuditEvent::new(t(1), "alice", MIGRATION_START, "shop");
    store.create_migration(&m1, Some(&start)).await.unwrap();
    assert_eq!(
        audit_count(store).await,
        audits + 1,
        "the audit entry is written with the migration"
    );
    assert!(
        matches!(
            store
                .create_migration(&spec(2, "shop", 2), Some(&start))
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "one active migration per stack"
    );
    assert!(
        matches!(
            store.create_migration(&spec(1, "other", 2), None).await,
            Err(StoreError::Conflict { .. })
        ),
        "duplicate id is a conflict"
    );
    assert_eq!(
        audit_count(store).await,
        audits + 1,
        "a refused migration writes no audit entry"
    );
    let f1 = fence(store, m1.id).await;
    let events = [
        MigrationEvent::SourceStopped { at: t(2) },
        MigrationEvent::VolumeTransferStarted {
            at: t(3),
            volume: "shop_db".into(),
        },
        MigrationEvent::VolumeVerified {
            at: t(4),
            volume: "shop_db".into(),
            bytes: 42,
            digest: "ab".repeat(32),
            outside_links: vec!["venv/bin/python -> /usr/bin/python3".into()],
        },
    ];
    for (i, e) in events.iter().enumerate() {
        store
            .append_migration_event(m1.id, i as u64, e, &f1, None)
            .await
            .unwrap();
    }
    let note = AuditEvent::new(t(5), "system", STACK_DEPLOY, "shop");
    assert!(
        matches!(
            store
                .append_migration_event(
                    m1.id,
                    1,
                    &MigrationEvent::FilesShipped { at: t(5) },
                    &f1,
                    Some(&note)
                )
                .await,
            Err(StoreError::Conflict { .. })
        ),
        "a stale sequence number is a conflict"
    );
    let stale = Fence {
        lease: f1.lease.clone(),
        token: f1.token + 1,
    };
    assert!(
        matches!(
            store
                .append_migration_event(
                    m1.id,
                    3,
                    &MigrationEvent::FilesShipped { at: t(5) },
                    &stale,
                    Some(&note)
                )
                .await,
            Err(StoreError::Fenced { .. })
        ),
        "a token that is not the lease's is fenced"
    );
    assert_eq!(
        audit_count(store).await,
        audits + 1,
        "a refused append writes no audit entry"
    );
    assert!(matches!(
        store
            .append_migration_event(
                MigrationId(uuid::Uuid::from_u128(99)),
                0,
                &events[0],
                &f1,
                None
            )
            .await,
        Err(StoreError::NotFound { .. })
    ));
    let loaded = store.load_migration(m1.id).await.unwrap().expect("stored");
    assert_eq!(loaded.spec, m1);
    assert_eq!(loaded.events, events.to_vec(), "events round trip in order");
    assert_eq!(store.list_migrations(&active(None)).await.unwrap().len(), 1);
    let fail = AuditEvent::new(t(6), "system", crate::audit::MIGRATION_FAIL, "shop");
    store
        .append_migration_event(
            m1.id,
            3,
            &MigrationEvent::StepFailed {
                at: t(6),
                step: crate::migration::Step::TransferVolumes,
                reason: "boom".into(),
                kind: None,
            },
            &f1,
            None,
        )
        .await
        .unwrap();
    store
        .append_migration_event(
            m1.id,
            4,
            &MigrationEvent::Failed { at: t(6) },
            &f1,
            Some(&fail),
        )
        .await
        .unwrap();
    assert_eq!(
        audit_count(store).await,
        audits + 2,
        "the audit entry is written with the event"
    );
    assert!(
        store
            .list_migrations(&active(None))
            .await
            .unwrap()
            .is_empty(),
        "failed is not active"
    );
    let m2 = spec(2, "shop", 7);
    store
        .create_migration(&m2, None)
        .await
        .expect("a new migration once the last one ended");
    let all = store
        .list_migrations(&MigrationQuery::default())
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|m| m.spec.id).collect();
    assert_eq!(ids, vec![m2.id, m1.id], "newest first");
    assert_eq!(
        store
            .load_migration(MigrationId(uuid::Uuid::from_u128(77)))
            .await
            .unwrap(),
        None
    );

    // Activity follows the log: a commit ends it, a rollback request resumes it, and it
    // cannot resume beside another active migration of the stack.
    let f2 = fence(store, m2.id).await;
    let to_commit = [
        MigrationEvent::SourceStopped { at: t(8) },
        MigrationEvent::FilesShipped { at: t(9) },
        MigrationEvent::TargetStarted { at: t(10) },
        MigrationEvent::TargetHealthy { at: t(11) },
        MigrationEvent::Committed {
            at: t(12),
            retain_until: t(100),
        },
    ];
    for (i, e) in to_commit.iter().enumerate() {
        store
            .append_migration_event(m2.id, i as u64, e, &f2, None)
            .await
            .unwrap();
    }
    assert!(
        store
            .list_migrations(&active(Some("shop")))
            .await
            .unwrap()
            .is_empty(),
        "committed is not active"
    );
    let m3 = spec(3, "shop", 13);
    store.create_migration(&m3, None).await.unwrap();
    let rollback = MigrationEvent::RollbackRequested {
        at: t(14),
        by: "alice".into(),
    };
    let err = store
        .append_migration_event(m2.id, 5, &rollback, &f2, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict { what } if what.contains(&m3.id.to_string())),
        "a rollback cannot become active beside another active migration: {err}"
    );
    let f3 = fence(store, m3.id).await;
    store
        .append_migration_event(
            m3.id,
            0,
            &MigrationEvent::StepFailed {
                at: t(15),
                step: crate::migration::Step::Preflight,
                reason: "no".into(),
                kind: None,
            },
            &f3,
            None,
        )
        .await
        .unwrap();
    store
        .append_migration_event(m3.id, 1, &MigrationEvent::Failed { at: t(16) }, &f3, None)
        .await
        .unwrap();
    store
        .append_migration_event(m2.id, 5, &rollback, &f2, None)
        .await
        .expect("the rollback resumes once no other migration is active");
    let act = store.list_migrations(&active(Some("shop"))).await.unwrap();
    assert_eq!(act.len(), 1);
    assert_eq!(act[0].spec.id, m2.id, "a rolling-back migration is active");

    // Pages: newest first, a cursor, a stack filter, and no page over the maximum.
    for n in 10..16u128 {
        store
            .create_migration(&spec(n, &format!("s{n}"), 20 + n as i64), None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut q = MigrationQuery {
        limit: 4,
        ..Default::default()
    };
    loop {
        let page = store.list_migrations(&q).await.unwrap();
        assert!(page.len() <= 4, "the limit holds");
        let Some(last) = page.last() else { break };
        q.after = Some(last.spec.id);
        seen.extend(page.into_iter().map(|m| m.spec.id));
    }
    let expect: Vec<_> = (10..16u128)
        .rev()
        .map(|n| MigrationId(uuid::Uuid::from_u128(n)))
        .chain([m3.id, m2.id, m1.id])
        .collect();
    assert_eq!(seen, expect, "every migration once, newest first");
    let shop = store
        .list_migrations(&MigrationQuery {
            stack: Some("shop".into()),
            limit: MAX_PAGE + 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        shop.iter().map(|m| m.spec.id).collect::<Vec<_>>(),
        vec![m3.id, m2.id, m1.id],
        "by stack"
    );
}

async fn drains(store: &dyn DrainStore) {
    let d = |n: u128, at: i64| DrainRecord {
        id: uuid::Uuid::from_u128(n),
        created_at: t(at),
        plan: DrainPlan {
            host: HostId::from("h1"),
            entries: vec![],
        },
        migrations: vec![MigrationId(uuid::Uuid::from_u128(n + 100))],
        state: DrainState::Running,
        acknowledged: vec![],
    };
    store.put_drain(&d(1, 1)).await.unwrap();
    store.put_drain(&d(2, 2)).await.unwrap();
    let mut changed = d(1, 1);
    changed
        .migrations
        .push(MigrationId(uuid::Uuid::from_u128(5)));
    changed.state = DrainState::Paused {
        at: t(3),
        reason: "the migration of x failed".into(),
    };
    changed
        .acknowledged
        .push(MigrationId(uuid::Uuid::from_u128(101)));
    store.put_drain(&changed).await.unwrap();
    assert_eq!(
        store.get_drain(changed.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        store.list_drains().await.unwrap(),
        vec![d(2, 2), changed],
        "newest first"
    );
}

async fn cordons(store: &dyn DrainStore) {
    assert!(store.list_cordons().await.unwrap().is_empty());
    let c = |h: &str, at: i64| CordonRecord {
        host: HostId::from(h),
        at: t(at),
        by: "token:ops".into(),
    };
    store.put_cordon(&c("h2", 1)).await.unwrap();
    store.put_cordon(&c("h1", 2)).await.unwrap();
    store.put_cordon(&c("h1", 3)).await.unwrap();
    assert_eq!(
        store.list_cordons().await.unwrap(),
        vec![c("h1", 3), c("h2", 1)],
        "by host, the latest cordon of each"
    );
    store.delete_cordon(&HostId::from("h1")).await.unwrap();
    store.delete_cordon(&HostId::from("nope")).await.unwrap();
    assert_eq!(store.list_cordons().await.unwrap(), vec![c("h2", 1)]);
}

async fn rollout(store: &dyn RolloutStore) {
    assert_eq!(
        store.get_rollout().await.unwrap(),
        RolloutRecord::default(),
        "defaults"
    );
    let mut r = RolloutRecord::default();
    r.policy.mode = RolloutMode::Staged;
    r.policy.staged.percent = 25;
    r.policy.staged.min_gap = SignedDuration::from_mins(7);
    r.state.waves = 2;
    r.state.last_wave_at = Some(t(9));
    store.put_rollout(&r).await.unwrap();
    assert_eq!(store.get_rollout().await.unwrap(), r, "rollout round trip");
}

async fn audit(store: &dyn AuditLog) {
    let base = store
        .query_audit(&AuditQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len() as u64;
    let mut entries = Vec::new();
    for i in 0..7 {
        let action = if i % 2 == 0 {
            MIGRATION_START
        } else {
            STACK_DEPLOY
        };
        let ev = AuditEvent::new(t(100 + i), "alice", action, format!("s{}", i % 3))
            .with("i", i.to_string());
        entries.push(store.append_audit(&ev).await.unwrap());
    }
    for w in entries.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "sequence numbers increase by one");
        assert_eq!(
            w[1].prev_hash, w[0].hash,
            "each entry chains to the one before"
        );
    }
    assert_eq!(entries[0].seq, base + 1);
    let page1 = store
        .query_audit(&AuditQuery {
            action: Some(MIGRATION_START.into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page1.len(), 2);
    assert_eq!(page1[0], entries[6], "newest first");
    assert_eq!(page1[1], entries[4]);
    let page2 = store
        .query_audit(&AuditQuery {
            action: Some(MIGRATION_START.into()),
            limit: 2,
            before_seq: Some(page1[1].seq),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page2,
        vec![entries[2].clone(), entries[0].clone()],
        "the cursor pages on"
    );
    let by_target = store
        .query_audit(&AuditQuery {
            target: Some("s1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_target, vec![entries[4].clone(), entries[1].clone()]);
    let ranged = store
        .query_audit(&AuditQuery {
            since: Some(t(102)),
            until: Some(t(104)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ranged,
        vec![entries[3].clone(), entries[2].clone()],
        "since inclusive, until exclusive"
    );
    let v = store.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, None, "an untouched chain verifies");
    assert_eq!(v.entries_checked, base + 7);
}

async fn leases(store: &dyn LeaseStore) {
    let hour = SignedDuration::from_hours(1);
    let claim = |name: &'static str, owner: &'static str, ttl: SignedDuration| async move {
        store.claim_lease(name, owner, ttl).await.unwrap()
    };
    let LeaseClaim::Granted(a1) = claim("evaluator", "a", hour).await else {
        panic!("a free lease is granted");
    };
    assert_eq!((a1.name.as_str(), a1.owner.as_str()), ("evaluator", "a"));
    assert!(a1.token > 0);
    match claim("evaluator", "b", hour).await {
        LeaseClaim::Held { owner, until } => {
            assert_eq!(owner, "a", "says who holds it");
            assert_eq!(until, a1.expires_at);
        }
        other => panic!("held: {other:?}"),
    }
    let LeaseClaim::Granted(a2) = claim("evaluator", "a", hour).await else {
        panic!("renew");
    };
    assert_eq!(a2.token, a1.token, "a renewal keeps the token");
    assert!(a2.expires_at >= a1.expires_at, "a renewal extends");
    store.release_lease("evaluator", "b").await.unwrap();
    assert!(
        matches!(claim("evaluator", "b", hour).await, LeaseClaim::Held { .. }),
        "only the holder releases"
    );
    store.release_lease("evaluator", "a").await.unwrap();
    let LeaseClaim::Granted(b1) = claim("evaluator", "b", hour).await else {
        panic!("a released lease is free");
    };
    assert!(b1.token > a2.token, "a new holder gets a greater token");
    // A lease claimed for no time expires at once (on the store's clock): taken over.
    let LeaseClaim::Granted(b2) = claim("evaluator", "b", SignedDuration::ZERO).await else {
        panic!("renew");
    };
    assert_eq!(b2.token, b1.token);
    let LeaseClaim::Granted(c1) = claim("evaluator", "c", hour).await else {
        panic!("an expired lease is taken over");
    };
    assert!(c1.token > b2.token, "a takeover gets a greater token");
    assert!(
        matches!(claim("evaluator", "b", hour).await, LeaseClaim::Held { .. }),
        "the old holder cannot renew a lease taken over"
    );
    let LeaseClaim::Granted(o) = claim("other", "b", hour).await else {
        panic!("leases are independent");
    };
    assert_eq!(o.owner, "b");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemStore;

    #[tokio::test]
    async fn the_memory_store_conforms() {
        store_conformance(&MemStore::new()).await;
    }
}
