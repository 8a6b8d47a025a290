//! Embedding the real adapters: a SQLite store (`dockmesh-sqlx`), two Docker engines
//! (`dockmesh-docker`) and the core driver move a stack, with its named volumes, from one engine
//! to the other.
//!
//! ```text
//! cargo run --example migrate_two_engines -- STATE_DIR ENGINE_A ENGINE_B COMPOSE_FILE [NAME]
//! # e.g. … -- /tmp/demo unix:///var/run/docker.sock tcp://127.0.0.1:2376 ./compose.yaml shop
//! ```
//!
//! The stack is deployed on engine A first (unless it already runs there), then migrated: stop,
//! copy and verify every volume, start on B, wait for health; the source is kept for the
//! rollback window.

use dockmesh_core::HostId;
use dockmesh_core::fleet::StaticFleet;
use dockmesh_core::migration::{DEFAULT_RETENTION, Driver, MigrationRequest, ProgressEvent};
use dockmesh_core::ports::{Clock, HostRuntime, prelude::*};
use dockmesh_core::records::StackRecord;
use dockmesh_core::system::{SystemClock, UuidV7Ids};
use dockmesh_core::types::StackFiles;
use dockmesh_docker::{DockerConfig, DockerRuntime, Endpoint};
use dockmesh_sqlx::{DbTarget, SqlStore};
use std::path::Path;
use std::sync::Arc;

async fn engine(
    id: &str,
    endpoint: &str,
    state: &Path,
) -> Result<Arc<DockerRuntime>, Box<dyn std::error::Error>> {
    let config = DockerConfig::new(state.join(id)).with_endpoint(Endpoint::parse(endpoint)?);
    Ok(Arc::new(
        DockerRuntime::connect(HostId::from(id), config).await?,
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, a, b, compose, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: migrate_two_engines STATE_DIR ENGINE_A ENGINE_B COMPOSE_FILE [NAME]".into(),
        );
    };
    let state = Path::new(state);
    std::fs::create_dir_all(state)?;
    let name = rest.first().cloned().unwrap_or_else(|| "demo".into());
    let store = Arc::new(SqlStore::open(&DbTarget::sqlite_in(state)).await?);
    let (a, b) = (
        engine("engine-a", a, state).await?,
        engine("engine-b", b, state).await?,
    );
    let files = StackFiles {
        name: name.clone(),
        compose: std::fs::read_to_string(compose)?,
        env: None,
    };
    if store.get_stack(&name).await?.is_none() {
        a.write_stack_files(&files).await?;
        a.deploy(&files).await?;
        let record = StackRecord {
            name: name.clone(),
            compose: files.compose.clone(),
            env: None,
            host: Some(a.host_id().clone()),
            updated_at: SystemClock.now(),
        };
        store.put_stack(&record, None).await?;
        println!("deployed {name} on engine-a");
    }
    let fleet = Arc::new(StaticFleet::new().with(a).with(b));
    let driver = Driver::new(
        store.clone(),
        fleet,
        Arc::new(SystemClock),
        Arc::new(UuidV7Ids),
    )
    .with_progress(Arc::new(|e| match e {
        ProgressEvent::Command { what, .. } => println!("  → {what}"),
        ProgressEvent::VolumeResumed { volume, offset, .. } => {
            println!("    {volume}: resumed at byte {offset}")
        }
        _ => {}
    }));
    let request = MigrationRequest {
        stack: name.clone(),
        target: HostId::from("engine-b"),
        by: "example".into(),
        retention: DEFAULT_RETENTION,
    };
    let id = driver.start(request).await?;
    let m = driver.run(id).await?;
    println!(
        "migration {id} ended {:?}; the source is kept until {:?}",
        m.phase(),
        m.retain_until()
    );
    Ok(())
}
