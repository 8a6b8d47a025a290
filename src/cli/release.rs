//! `dockmesh release keygen|sign`: the release key that agent binaries are signed with, and
//! signing binaries for the server to send agents.

use super::db::fail;
use anyhow::Context;
use clap::Subcommand;
use dockmesh_http::channel::agent_binaries as release;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `dockmesh release …`
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Make a release key pair: the private key (keep it off the server) and the public key
    /// (give it to the server with --release-key, or put it at `<data-dir>/release.pub`).
    Keygen {
        /// Where to write the private key (PKCS#8 PEM, mode 0600); refused if it exists.
        #[arg(long, value_name = "FILE", default_value = "release.key")]
        private: PathBuf,
        /// Where to write the public key (PEM); refused if it exists.
        #[arg(long, value_name = "FILE", default_value = "release.pub")]
        public: PathBuf,
    },
    /// Sign agent binaries: writes `BINARY.release.json` (version, platform, size, SHA-256,
    /// ed25519 signature) beside each. Put both in the server's --agent-binaries directory.
    Sign {
        /// The private release key (from `dockmesh release keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The version each binary reports; by default asked of the binary (`BINARY
        /// --version`).
        #[arg(long = "release-version", value_name = "VERSION")]
        version: Option<String>,
        /// The operating system the binaries run on.
        #[arg(long, default_value = "linux")]
        os: String,
        /// The CPU architecture the binaries run on (`x86_64`, `aarch64`).
        #[arg(long, default_value = std::env::consts::ARCH)]
        arch: String,
        /// The binaries.
        #[arg(required = true)]
        binaries: Vec<PathBuf>,
    },
}

/// Run `dockmesh release …`.
pub fn run(cmd: ReleaseCommand) -> ExitCode {
    let out = match cmd {
        ReleaseCommand::Keygen { private, public } => keygen(&private, &public),
        ReleaseCommand::Sign {
            key,
            version,
            os,
            arch,
            binaries,
        } => sign(&key, version.as_deref(), &os, &arch, &binaries),
    };
    match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn keygen(private: &Path, public: &Path) -> anyhow::Result<()> {
    for p in [private, public] {
        if p.exists() {
            anyhow::bail!(
                "{} exists: nothing was written (a new key would orphan the binaries signed \
                 with the old one and every agent pinned to it)",
                p.display()
            );
        }
    }
    let (private_pem, public_pem) = release::keygen()?;
    dockmesh_http::channel::files::write_atomic(
        private,
        private_pem.as_bytes(),
        dockmesh_http::channel::files::FileMode::Private,
    )?;
    std::fs::write(public, public_pem.as_bytes())
        .with_context(|| format!("writing {}", public.display()))?;
    let key = release::parse_public(&public_pem, "the new key")?;
    println!(
        "release key {} made: private key in {} (keep it off the server), public key in {}",
        release::fingerprint(&key),
        private.display(),
        public.display()
    );
    Ok(())
}

/// The version a binary reports (`dockmesh X` to `--version`).
fn version_of(binary: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "running {} --version to read its version (or give --release-version)",
                binary.display()
            )
        })?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    said.strip_prefix("dockmesh ")
        .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "{} says {said:?} to --version, not \"dockmesh VERSION\": give --release-version",
                binary.display()
            )
        })
}

fn sign(
    key: &Path,
    version: Option<&str>,
    os: &str,
    arch: &str,
    binaries: &[PathBuf],
) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("reading the release key {}", key.display()))?;
    let key = release::parse_private(&pem, &key.display().to_string())?;
    for bin in binaries {
        let v = match version {
            Some(v) => v.to_owned(),
            None => version_of(bin)?,
        };
        let meta = release::sign_file(&key, bin, &v, os, arch)?;
        println!(
            "signed {} as dockmesh {} for {}/{} ({} bytes, sha256 {}) -> {}",
            bin.display(),
            meta.version,
            meta.os,
            meta.arch,
            meta.size,
            meta.sha256,
            release::meta_path(bin).display()
        );
    }
    Ok(())
}
