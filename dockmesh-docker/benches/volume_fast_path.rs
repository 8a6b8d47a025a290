//! The file-system fast path on one host: export + import of a 1 GiB volume (half random, half
//! compressible) between two volumes' directories on the same disk, against the disk's own
//! speed, `tar -C SRC -c . | tar -C DST -x` between the same directories, measured in the same
//! run, rounds interleaved; the archive path runs beside them for reference.
//!
//! dockmesh's time covers everything a migration needs: the export with its manifest (SHA-256
//! of every file), the checked import, the read-back of the target with its manifest and the
//! comparison; the import ends with a `syncfs`, so its data is on disk. The baseline verifies
//! nothing; `sync` runs after it inside its time, so both are timed to durable data.
//!
//! ```text
//! cargo bench -p dockmesh-docker --bench volume_fast_path
//! DOCKMESH_BENCH_VOLUME_MIB=256 DOCKMESH_BENCH_ROUNDS=5 cargo bench -p dockmesh-docker --bench volume_fast_path
//! ```
//!
//! Needs root and the local engine; without them it prints why and exits.

#[path = "../tests/support_volume/mod.rs"]
mod support_volume;
mod timing;

use dockmesh_core::ports::{VolumeTarget, no_progress};
use dockmesh_docker::volume::{self, VolumeAccess};
use std::process::Command;
use std::time::Instant;
use support_volume::*;
use timing::*;

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run());
}

async fn mountpoint(client: &bollard::Docker, volume: &str) -> String {
    client
        .inspect_volume(volume)
        .await
        .expect("inspect")
        .mountpoint
}

/// dockmesh's export and import of `src` into a new volume, the manifests compared.
async fn ours(client: &bollard::Docker, src: &str, dst: &str, access: VolumeAccess, bytes: u64) {
    let export = volume::export_volume_with(client, src, access)
        .await
        .expect("export");
    let target = VolumeTarget {
        name: dst.to_owned(),
        labels: Default::default(),
        expected_bytes: None,
    };
    let imported =
        volume::import_volume_with(client, &target, export.stream, no_progress(), access)
            .await
            .expect("import");
    let exported = export.manifest.take().expect("manifest");
    assert!(
        exported.first_difference(&imported).is_none(),
        "the manifests differ"
    );
    assert_eq!(exported.content_bytes(), bytes);
}

async fn run() {
    let Some(client) = engine().await else { return };
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: the file-system fast path needs root");
        return;
    }
    volume::ensure_carrier_image(&client)
        .await
        .expect("carrier image");
    let rounds = env_u64("DOCKMESH_BENCH_ROUNDS", 3).max(1);
    let mut cleanup = Cleanup::default();
    let (src, bytes) = filled_source(&mut cleanup);
    let src_dir = mountpoint(&client, &src).await;

    let (mut base, mut fast, mut archive) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dst = cleanup.volume(&unique("bench-tar"));
        assert!(docker(&["volume", "create", &dst]).status.success());
        let dst_dir = mountpoint(&client, &dst).await;
        sync();
        let t = Instant::now();
        let status = Command::new("bash")
            .args([
                "-c",
                "set -o pipefail; tar -C \"$1\" -c . | tar -C \"$2\" -x && sync",
                "baseline",
                &src_dir,
                &dst_dir,
            ])
            .status()
            .expect("run tar");
        base.push(t.elapsed());
        assert!(status.success(), "the baseline failed");
        assert!(docker(&["volume", "rm", "-f", &dst]).status.success());

        for (access, times) in [
            (VolumeAccess::FileSystem, &mut fast),
            (VolumeAccess::Archive, &mut archive),
        ] {
            let dst = cleanup.volume(&unique("bench-ours"));
            sync();
            let t = Instant::now();
            ours(&client, &src, &dst, access, bytes).await;
            times.push(t.elapsed());
            volume::remove_volume(&client, &dst).await.expect("remove");
        }
        eprintln!(
            "round {round}: tar {:.2} s, fast path {:.2} s, archive path {:.2} s",
            base[base.len() - 1].as_secs_f64(),
            fast[fast.len() - 1].as_secs_f64(),
            archive[archive.len() - 1].as_secs_f64(),
        );
    }
    let (b, f, a) = (median(base), median(fast), median(archive));
    println!("| what | median of {rounds} | throughput | × baseline |");
    println!("|---|---:|---:|---:|");
    for (what, d) in [
        (
            "`tar -C src -c . | tar -C dst -x`, then `sync` (baseline, no verification)",
            b,
        ),
        ("dockmesh, file-system fast path (verified)", f),
        ("dockmesh, engine archive path (verified)", a),
    ] {
        println!(
            "| {what} | {:.2} s | {:.0} MiB/s | {:.2} |",
            d.as_secs_f64(),
            mib_per_s(bytes, d),
            b.as_secs_f64() / d.as_secs_f64()
        );
    }
}
