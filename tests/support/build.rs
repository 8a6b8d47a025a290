//! A second build of the binary: the same code with another version baked in through
//! `DOCKMESH_BUILD_VERSION`, built once into `target/upgrade-v2` and kept between runs (the
//! agent upgrade and the server upgrade tests both use it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The version baked into the second build: the next patch release.
pub const NEW: &str = "0.1.1";

/// The second build's binary, built on first use.
pub fn new_build() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/upgrade-v2");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        eprintln!("building dockmesh {NEW} into {}", target.display());
        let status = Command::new(cargo)
            .args(["build", "--bin", "dockmesh"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", &target)
            .env("DOCKMESH_BUILD_VERSION", NEW)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the second version failed");
        let exe = target.join("debug/dockmesh");
        assert_eq!(version_of(&exe), NEW);
        exe
    })
}

/// What `exe --version` says, without the program's name.
pub fn version_of(exe: &Path) -> String {
    let out = Command::new(exe).arg("--version").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("dockmesh ")
        .to_owned()
}
