//! A stack migration between two real Docker engines: the stack's named volume moves with every
//! byte, mode, owner and link intact (checked with the engines' own tools, outside dockmesh),
//! the source is kept for the rollback window, a rollback brings it back, and a target that
//! never becomes healthy leaves the source running and the target holding nothing.
//!
//! Needs the main engine (`DOCKER_HOST` or the default socket) and a second one whose address is
//! in `DOCKMESH_TEST_DOCKER_HOST_B` (`scripts/start-second-engine.sh` starts one).

use dockmesh_core::HostId;
use dockmesh_core::MigrationId;
use dockmesh_core::fleet::StaticFleet;
use dockmesh_core::migration::{
    Command, DEFAULT_RETENTION, DriveError, Driver, MigrationRequest, Phase, ProgressEvent, Step,
};
use dockmesh_core::ports::{HostRuntime, prelude::*};
use dockmesh_core::records::StackRecord;
use dockmesh_core::system::SystemClock;
use dockmesh_core::testing::{MemStore, SeqIds};
use dockmesh_core::types::StackFiles;
use dockmesh_docker::{DockerConfig, DockerRuntime, Endpoint};
use std::sync::Arc;
use std::time::Duration;
use support::*;

mod support;

fn print_progress(e: ProgressEvent) {
    match e {
        ProgressEvent::Command { what, .. } => eprintln!("migration: {what}"),
        ProgressEvent::VolumeBytes { volume, bytes, .. } if bytes % (8 << 20) < 65536 => {
            eprintln!("migration: {volume}: {bytes} bytes")
        }
        ProgressEvent::VolumeResumed { volume, offset, .. } => {
            eprintln!("migration: {volume}: resumed at byte {offset}")
        }
        _ => {}
    }
}

fn compose(image: &str) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "mkdir -p /data/site && exec httpd -f -p 8080 -h /data/site"]
    volumes:
      - data:/data
    healthcheck:
      test: ["CMD", "sh", "-c", "test -e /healthy && wget -q -O /dev/null http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 3
volumes:
  data:
"#
    )
}

async fn runtime(id: &str, endpoint: &str, dir: &std::path::Path) -> Arc<DockerRuntime> {
    let config = DockerConfig::new(dir.join(id))
        .with_endpoint(Endpoint::parse(endpoint).expect("endpoint"))
        .with_health_margin(Duration::from_secs(5));
    Arc::new(
        DockerRuntime::connect(HostId::from(id), config)
            .await
            .expect("connect"),
    )
}

struct Setup {
    stack: Stack,
    driver: Driver,
    store: Arc<dyn Store>,
    fleet: Arc<StaticFleet>,
    a: Arc<DockerRuntime>,
    b: Arc<DockerRuntime>,
    _dir: tempfile::TempDir,
}

impl Setup {
    /// Ask for the stack to move from engine A to engine B.
    async fn start_migration(&self) -> MigrationId {
        self.driver
            .start(MigrationRequest {
                stack: self.stack.name.clone(),
                target: HostId::from("engine-b"),
                by: "test".into(),
                retention: DEFAULT_RETENTION,
            })
            .await
            .expect("the migration is recorded")
    }
}

async fn setup(healthy_on_target: bool, store: Arc<dyn Store>) -> Option<Setup> {
    let (ea, eb) = engines()?;
    let name = unique("dmmig");
    let stack = Stack {
        name: name.clone(),
        a: ea.clone(),
        b: eb.clone(),
    };
    let tag = format!("dockmesh-test/{name}:1");
    image_with_health(&ea, &tag, true);
    image_with_health(&eb, &tag, healthy_on_target);
    let dir = tempfile::tempdir().unwrap();
    let a = runtime("engine-a", &ea, dir.path()).await;
    let b = runtime("engine-b", &eb, dir.path()).await;
    let files = StackFiles {
        name: name.clone(),
        compose: compose(&tag),
        env: None,
    };
    a.write_stack_files(&files).await.unwrap();
    a.deploy(&files).await.expect("deploy on the source");
    // Fill the volume outside dockmesh: every kind of entry.
    let fill = r#"set -e; cd /data; mkdir -p site empty "dir with space/ünïcödé"
echo '<h1>shop</h1>' > site/index.html
dd if=/dev/urandom of=big.bin bs=1M count=24 2>/dev/null
printf 'héllo wörld\n' > "dir with space/ünïcödé/naïve file.txt"
ln -s site/index.html link-to-index; ln -s site dir-link
mkdir -p venv/bin; ln -s /usr/bin/python3 venv/bin/python; ln -s ../../var/log/app log
mkfifo spool.fifo
echo shared > hard1; ln hard1 hard2
echo secret > owned; chown 1234:5678 owned; chmod 0640 owned
touch -d '2001-02-03 04:05:06' site/index.html; chmod 4755 big.bin; chmod 1777 empty"#;
    docker(
        &ea,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{name}_data:/data"),
            IMAGE,
            "sh",
            "-c",
            fill,
        ],
    )
    .expect("fill the volume");
    let health = a.wait_healthy(&name).await.unwrap();
    assert!(health.healthy(), "the source stack is healthy: {health:?}");

    store
        .put_stack(
            &StackRecord {
                name: name.clone(),
                compose: files.compose.clone(),
                env: None,
                host: Some(HostId::from("engine-a")),
                updated_at: jiff::Timestamp::now(),
            },
            None,
        )
        .await
        .unwrap();
    let fleet = Arc::new(StaticFleet::new().with(a.clone()).with(b.clone()));
    let driver = Driver::new(
        store.clone(),
        fleet.clone(),
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
    )
    .with_progress(Arc::new(print_progress));
    Some(Setup {
        stack,
        driver,
        store,
        fleet,
        a,
        b,
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_moves_to_another_engine_with_its_data_and_rolls_back() {
    let Some(s) = setup(true, Arc::new(MemStore::new())).await else {
        return;
    };
    let name = s.stack.name.clone();
    let volume = format!("{name}_data");
    let before = describe_volume(&s.stack.a, &volume);
    assert!(
        before.contains("owned 81a0 1234:5678"),
        "fixture has an owned file:\n{before}"
    );

    let id = s.start_migration().await;
    let m = s.driver.run(id).await.expect("the migration runs");
    assert_eq!(m.phase(), Phase::Committed, "failure: {:?}", m.failure());

    let after = describe_volume(&s.stack.b, &volume);
    assert_eq!(
        before, after,
        "the target volume is identical to the source, entry by entry"
    );
    assert!(
        s.b.stack_status(&name).await.unwrap().all_running(),
        "the target runs"
    );
    assert!(
        !s.a.stack_status(&name).await.unwrap().any_running(),
        "the source is stopped"
    );
    assert_eq!(
        describe_volume(&s.stack.a, &volume),
        before,
        "the source volume is kept as it was"
    );
    let rec = s.store.get_stack(&name).await.unwrap().unwrap();
    assert_eq!(rec.host, Some(HostId::from("engine-b")));
    // Links that leave the volume were carried verbatim, and the transfer report lists them.
    assert_eq!(
        m.outside_links(),
        [
            format!("{volume}: log -> ../../var/log/app"),
            format!("{volume}: venv/bin/python -> /usr/bin/python3"),
        ],
        "links that point outside the volume are reported"
    );
    assert!(after.contains("venv/bin/python"), "{after}");

    let m = s.driver.rollback(id, "test").await.expect("rollback");
    assert_eq!(m.phase(), Phase::RolledBack);
    assert!(
        s.a.stack_status(&name).await.unwrap().all_running(),
        "the source runs again"
    );
    assert!(
        !s.b.stack_status(&name).await.unwrap().any_running(),
        "the target is stopped"
    );
    let rec = s.store.get_stack(&name).await.unwrap().unwrap();
    assert_eq!(rec.host, Some(HostId::from("engine-a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_never_becomes_healthy_is_undone_and_the_source_runs_again() {
    let Some(s) = setup(false, Arc::new(MemStore::new())).await else {
        return;
    };
    let name = s.stack.name.clone();
    let volume = format!("{name}_data");
    let before = describe_volume(&s.stack.a, &volume);
    let id = s.start_migration().await;
    let m = match s.driver.run(id).await {
        Ok(m) => m,
        Err(DriveError::Retry { .. }) => panic!("compensation should not need a retry here"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(m.phase(), Phase::Failed);
    let failure = m.failure().unwrap();
    let reason = &failure.reason;
    assert_eq!(failure.step, Step::TargetHealth, "{reason}");
    assert!(
        reason.contains("web"),
        "the reason names the service: {reason}"
    );
    assert!(
        s.a.stack_status(&name).await.unwrap().all_running(),
        "the source runs again"
    );
    assert_eq!(
        describe_volume(&s.stack.a, &volume),
        before,
        "source data untouched"
    );
    assert!(
        s.b.stack_status(&name).await.unwrap().containers.is_empty(),
        "no container left on the target"
    );
    let vols = docker(&s.stack.b, &["volume", "ls", "-q"]).unwrap();
    assert!(
        !vols.contains(&name),
        "no volume left on the target: {vols}"
    );
    assert_eq!(
        s.b.read_stack_files(&name).await.unwrap(),
        None,
        "no files left on the target"
    );
}

/// The server crashes in the middle of streaming the volumes (leaving half a volume on the
/// target): a new process opens the same
/// SQLite database, replays the migration's log and finishes it. Nothing is marked failed
/// because of the restart, and the data arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_resumes_from_the_database_and_finishes() {
    let db_dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", db_dir.path().join("dockmesh.db").display());
    let store: Arc<dyn Store> = Arc::new(dockmesh_sqlx::SqlStore::open_url(&url).await.unwrap());
    let Some(s) = setup(true, store).await else {
        return;
    };
    let name = s.stack.name.clone();
    let volume = format!("{name}_data");
    let before = describe_volume(&s.stack.a, &volume);
    let id = s.start_migration().await;
    // Run until the volume transfer has begun, then "crash": drop the driver and the store.
    // The crashed process held the migration's lease, which runs out after its ttl.
    let crashed = Driver::new(
        s.store.clone(),
        s.fleet.clone(),
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
    )
    .with_lease_ttl(jiff::SignedDuration::from_secs(2));
    let lease = crashed
        .claim(&dockmesh_core::ports::migration_lease(id))
        .await
        .unwrap();
    let mut m = crashed.load(id).await.unwrap();
    while !matches!(m.next_command(), Some(Command::TransferVolume(_))) {
        assert!(
            crashed.step(&mut m, &lease).await.unwrap(),
            "the migration settled early: {:?}",
            m.failure()
        );
    }
    assert_eq!(m.phase(), Phase::SourceStopped);
    drop(m);
    // The crashed process had written part of the volume on the target.
    docker(
        &s.stack.b,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{volume}:/v"),
            IMAGE,
            "sh",
            "-c",
            "mkdir -p /v/site && echo half > /v/site/index.html && echo junk > /v/partial",
        ],
    )
    .unwrap();
    let fleet = s.fleet.clone();
    drop(crashed);
    drop(s.driver);
    drop(s.store);

    let reopened: Arc<dyn Store> = Arc::new(
        dockmesh_sqlx::SqlStore::open_url(&url)
            .await
            .expect("reopen"),
    );
    let driver = Driver::new(
        reopened.clone(),
        fleet,
        Arc::new(SystemClock),
        Arc::new(SeqIds::default()),
    );
    let resumed = driver.load(id).await.unwrap();
    assert_eq!(
        resumed.phase(),
        Phase::SourceStopped,
        "the log survives the restart"
    );
    // The new process waits for the crashed one's lease to run out, then resumes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let m = loop {
        match driver.run(id).await {
            Err(DriveError::Busy { owner, .. }) if std::time::Instant::now() < deadline => {
                assert!(owner.starts_with("driver-"), "{owner}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => break other.expect("the migration resumes"),
        }
    };
    assert_eq!(m.phase(), Phase::Committed, "failure: {:?}", m.failure());
    assert_eq!(describe_volume(&s.stack.b, &volume), before);
    assert!(s.b.stack_status(&name).await.unwrap().all_running());
    let rec = reopened.get_stack(&name).await.unwrap().unwrap();
    assert_eq!(rec.host, Some(HostId::from("engine-b")));
}
