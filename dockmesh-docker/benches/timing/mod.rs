//! What the volume benchmarks share: settings from the environment, `sync`, medians and rates.
#![allow(dead_code)] // each benchmark uses a different part

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
