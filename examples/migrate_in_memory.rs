//! Embedding `dockmesh-core`: drive a stack migration between two in-memory hosts, then roll it
//! back, printing each command as it runs.
//!
//! `cargo run --example migrate_in_memory`

use dockmesh_core::migration::{DEFAULT_RETENTION, Driver, MigrationRequest, ProgressEvent};
use dockmesh_core::ports::{Clock, prelude::*};
use dockmesh_core::records::StackRecord;
use dockmesh_core::testing::{FakeFleet, FakeHost, FixedClock, MemStore, SeqIds};
use dockmesh_core::{HostId, StackFiles};
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(MemStore::new());
    let fleet = Arc::new(FakeFleet::new());
    let clock = Arc::new(FixedClock::new("2026-01-01T00:00:00Z".parse()?));
    let files = StackFiles {
        name: "shop".into(),
        compose: "services:\n  web:\n    image: shop:1\n".into(),
        env: None,
    };
    let source = Arc::new(FakeHost::new("edge-1"));
    source.seed_stack(
        files.clone(),
        &[("shop_db", b"orders and customers")],
        256 << 20,
    );
    fleet.add(source);
    fleet.add(Arc::new(FakeHost::new("edge-2")));
    store
        .put_stack(
            &StackRecord {
                name: files.name.clone(),
                compose: files.compose,
                env: None,
                host: Some(HostId::from("edge-1")),
                updated_at: clock.now(),
            },
            None,
        )
        .await?;

    let driver = Driver::new(
        store.clone(),
        fleet.clone(),
        clock.clone(),
        Arc::new(SeqIds::default()),
    )
    .with_progress(Arc::new(|e| match e {
        ProgressEvent::Command { what, .. } => println!("  → {what}"),
        ProgressEvent::VolumeBytes { volume, bytes, .. } => println!("    {volume}: {bytes} bytes"),
        ProgressEvent::VolumeResumed { volume, offset, .. } => {
            println!("    {volume}: resumed at byte {offset}")
        }
        _ => {}
    }));
    let id = driver
        .start(MigrationRequest {
            stack: "shop".into(),
            target: HostId::from("edge-2"),
            by: "example".into(),
            retention: DEFAULT_RETENTION,
        })
        .await?;
    println!("migration {id}");
    let m = driver.run(id).await?;
    println!(
        "ended {:?}; rollback possible until {:?}",
        m.phase(),
        m.retain_until()
    );
    let m = driver.rollback(id, "example").await?;
    println!("after rollback: {:?}", m.phase());
    let stack = store.get_stack("shop").await?.expect("stack");
    println!("the stack runs on {}", stack.host.expect("deployed"));
    Ok(())
}
