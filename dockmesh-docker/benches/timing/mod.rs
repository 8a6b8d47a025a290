//! What the volume benchmarks share: settings from the environment, `sync`, medians and rates.
#![allow(dead_code)] // each benchmark uses a different part

use crate::support_volume::{Cleanup, docker, sh, unique};
use std::process::Command;
use std::time::Duration;

/// An integer setting from the environment, or its default.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Write out dirty pages, so that a round does not pay for the one before.
pub fn sync() {
    let _ = Command::new("sync").status();
}

/// The median of the samples.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// MiB per second for `bytes` in `d`.
pub fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// A new volume of `DOCKMESH_BENCH_VOLUME_MIB` (default 1024) MiB: four files of random bytes
/// and four of repeated text, a quarter of the size each pair. Its name and content bytes.
pub fn filled_source(cleanup: &mut Cleanup) -> (String, u64) {
    let mib = env_u64("DOCKMESH_BENCH_VOLUME_MIB", 1024);
    let quarter = mib / 4;
    let src = cleanup.volume(&unique("bench-src"));
    assert!(docker(&["volume", "create", &src]).status.success());
    eprintln!("filling {src} with {mib} MiB: half random, half compressible text");
    sh(
        &[(&src, "/v")],
        &format!(
            "set -e; cd /v; for i in 1 2 3 4; do \
               head -c {bytes} /dev/urandom > random-$i.bin; \
               yes 'dockmesh benchmark: compressible line 0123456789 abcdefghijklmnopqrstuvwxyz' \
                 | head -c {bytes} > text-$i.txt; \
             done",
            bytes = quarter << 19
        ),
    );
    (src, (quarter << 19) * 8)
}
