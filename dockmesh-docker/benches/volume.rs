//! Export + import of a 1 GiB volume (half random, half compressible) through dockmesh, against
//! the plain baseline `docker run … tar c -C /s . | docker run -i … tar x -C /d`
//! (`bench/volume-baseline.sh`), measured in the same run, rounds interleaved.
//!
//! dockmesh's time covers everything a migration needs: the export with its manifest, the
//! checked import, and the read-back of the target with its manifest, compared with the
//! source's. The baseline does no verification at all.
//!
//! ```text
//! cargo bench -p dockmesh-docker --bench volume
//! DOCKMESH_BENCH_VOLUME_MIB=256 DOCKMESH_BENCH_ROUNDS=5 cargo bench -p dockmesh-docker --bench volume
//! ```
//!
//! Without an engine it prints why and exits (fails under `DOCKMESH_REQUIRE_SERVICES=1`).

#[path = "../tests/support_volume/mod.rs"]
mod support_volume;
mod timing;

use dockmesh_core::ports::{VolumeTarget, no_progress};
use dockmesh_docker::volume;
use std::process::Command;
use std::time::Instant;
use support_volume::*;
use timing::*;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let Some(client) = engine().await else { return };
    volume::ensure_carrier_image(&client)
        .await
        .expect("carrier image");
    let rounds = env_u64("DOCKMESH_BENCH_ROUNDS", 3).max(1);
    let mut cleanup = Cleanup::default();
    let (src, bytes) = filled_source(&mut cleanup);
    let baseline_script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/volume-baseline.sh");

    let mut base = Vec::new();
    let mut ours = Vec::new();
    for round in 1..=rounds {
        let dst = cleanup.volume(&unique("bench-base"));
        sync();
        let t = Instant::now();
        let status = Command::new("bash")
            .args([baseline_script, &src, &dst, IMAGE])
            .status()
            .expect("run the baseline");
        let elapsed = t.elapsed();
        assert!(status.success(), "the baseline failed");
        base.push(elapsed);
        assert!(docker(&["volume", "rm", "-f", &dst]).status.success());

        let dst = cleanup.volume(&unique("bench-ours"));
        sync();
        let t = Instant::now();
        let export = volume::export_volume(&client, &src).await.expect("export");
        let target = VolumeTarget {
            name: dst.clone(),
            labels: Default::default(),
            expected_bytes: None,
        };
        let imported = volume::import_volume(&client, &target, export.stream, no_progress())
            .await
            .expect("import");
        let exported = export.manifest.take().expect("manifest");
        let verified = exported.first_difference(&imported).is_none();
        let elapsed = t.elapsed();
        assert!(verified, "the manifests differ");
        assert_eq!(exported.content_bytes(), bytes);
        ours.push(elapsed);
        volume::remove_volume(&client, &dst).await.expect("remove");
        eprintln!(
            "round {round}: baseline {:.2} s ({:.0} MiB/s), dockmesh {:.2} s ({:.0} MiB/s)",
            base[base.len() - 1].as_secs_f64(),
            mib_per_s(bytes, base[base.len() - 1]),
            elapsed.as_secs_f64(),
            mib_per_s(bytes, elapsed),
        );
    }
    let (b, o) = (median(base), median(ours));
    let ratio = mib_per_s(bytes, o) / mib_per_s(bytes, b);
    println!("| what | median of {rounds} | throughput |");
    println!("|---|---|---|");
    println!(
        "| baseline `tar c | tar x` (no verification) | {:.2} s | {:.0} MiB/s |",
        b.as_secs_f64(),
        mib_per_s(bytes, b)
    );
    println!(
        "| dockmesh export + checked import + read-back, manifests compared | {:.2} s | {:.0} MiB/s |",
        o.as_secs_f64(),
        mib_per_s(bytes, o)
    );
    println!("| ratio (dockmesh / baseline throughput), target ≥ 0.90 | | {ratio:.2} |");
}
