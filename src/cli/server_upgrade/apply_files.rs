//! What `upgrade apply` keeps on disk and the files it checks and swaps: the run record (core's
//! `RunRecord`, `upgrade-run.json`, written atomically), the releases directory (`Catalog`: each
//! release's signature, size and SHA-256), and the swap of the installed binary (`swap`).

use super::binary;
use anyhow::{Context, anyhow, bail};
use dockmesh_core::server_upgrade::RunRecord;
use dockmesh_core::version::Version;
use dockmesh_http::channel::agent_binaries::{
    self as release, ReleaseError, ReleaseMeta, VerifyingKey,
};
use dockmesh_http::channel::files::{self, FileMode, StagedBinary};
use std::path::{Path, PathBuf};

/// Put the release `new` in place of `binary`, keeping `binary` as `previous`: the release is
/// staged beside `binary`, that copy's size and SHA-256 checked against `meta` and its
/// `--version` against `to`, then installed (`channel::files`). Done already (a run interrupted
/// after the rename) when `binary` is the release and `previous` is there. Returns what the
/// release said (for the step line).
pub(super) fn swap(
    binary: &Path,
    new: &Path,
    previous: &Path,
    meta: &ReleaseMeta,
    to: &Version,
) -> anyhow::Result<String> {
    if in_place(binary, previous, meta)? {
        return Ok(", already in place".into());
    }
    let staged = StagedBinary::beside(binary, new).context("release")?;
    let (size, sha256) = release::digest_file(staged.path())?;
    if size != meta.size || sha256 != meta.sha256.to_ascii_lowercase() {
        bail!(
            "release: the copy {} is {size} bytes with SHA-256 {sha256}, the release says {} \
             bytes, {}",
            staged.path().display(),
            meta.size,
            meta.sha256
        );
    }
    let said = binary::said_version(staged.path()).context("release")?;
    if &said != to {
        bail!(
            "release: {} says `dockmesh {said}`, not `dockmesh {to}`",
            new.display()
        );
    }
    if let Err(e) = staged.install(previous) {
        // Past its rename, an install fails only when the directory cannot be fsynced: the
        // release is in place then and the hop counts as swapped (an undo puts `previous` back).
        if !in_place(binary, previous, meta)? {
            return Err(anyhow::Error::new(e).context("swap"));
        }
    }
    Ok(format!(", says dockmesh {said}"))
}

/// `binary` is the release of `meta`, and the binary it replaced is kept at `previous`.
fn in_place(binary: &Path, previous: &Path, meta: &ReleaseMeta) -> anyhow::Result<bool> {
    let (_, current) = release::digest_file(binary)?;
    Ok(current == meta.sha256.to_ascii_lowercase() && previous.is_file())
}

pub(super) fn load_run(path: &Path) -> anyhow::Result<Option<RunRecord>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
            format!(
                "{} is not an upgrade run record; move it aside to start a new run",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!(e).context(format!("reading {}", path.display()))),
    }
}

/// Write the run record atomically (`channel::files::write_atomic`).
pub(super) fn save_run(path: &Path, run: &RunRecord) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(run).expect("a run record serializes");
    files::write_atomic(path, &bytes, FileMode::Shared)
        .with_context(|| format!("recording the upgrade's progress in {}", path.display()))
}

/// The releases of a directory for this machine's platform, as their metadata says.
pub(super) struct Catalog {
    pub(super) dir: PathBuf,
    metas: Vec<ReleaseMeta>,
    /// Metadata files that could not be read.
    unreadable: Vec<String>,
}

impl Catalog {
    pub(super) fn read(dir: &Path) -> anyhow::Result<Catalog> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the releases directory {}", dir.display()))?;
        let paths = dockmesh_http::channel::agent_binaries::meta_files(entries);
        let mut catalog = Catalog {
            dir: dir.to_owned(),
            metas: Vec::new(),
            unreadable: Vec::new(),
        };
        for path in paths {
            let meta = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ReleaseMeta>(&b).map_err(|e| e.to_string()));
            match meta {
                Ok(m) if m.os == std::env::consts::OS && m.arch == std::env::consts::ARCH => {
                    catalog.metas.push(m)
                }
                Ok(_) => {}
                Err(e) => catalog.unreadable.push(format!("{}: {e}", path.display())),
            }
        }
        Ok(catalog)
    }

    pub(super) fn versions(&self) -> Vec<Version> {
        self.metas
            .iter()
            .filter_map(|m| Version::parse(&m.version).ok())
            .collect()
    }

    /// The versions found, for messages.
    pub(super) fn listing(&self) -> String {
        let mut s = if self.metas.is_empty() {
            format!(
                "none for {}/{}",
                std::env::consts::OS,
                std::env::consts::ARCH
            )
        } else {
            self.metas
                .iter()
                .map(|m| m.version.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.unreadable.is_empty() {
            s.push_str(&format!("; unreadable: {}", self.unreadable.join("; ")));
        }
        s
    }

    /// The release of `version`: its signature verifies with `key`, and the binary beside its
    /// metadata has the signed size and SHA-256.
    pub(super) fn verify(
        &self,
        version: &Version,
        key: &VerifyingKey,
    ) -> anyhow::Result<(ReleaseMeta, PathBuf)> {
        let meta = self
            .metas
            .iter()
            .find(|m| Version::parse(&m.version).ok().as_ref() == Some(version))
            .ok_or_else(|| {
                anyhow!(
                    "no release {version} for {}/{} in {} (found: {})",
                    std::env::consts::OS,
                    std::env::consts::ARCH,
                    self.dir.display(),
                    self.listing()
                )
            })?;
        let plain = !meta.file.is_empty()
            && !meta.file.contains(['/', '\\'])
            && meta.file != "."
            && meta.file != "..";
        if !plain {
            bail!(
                "the release {version} in {} names the file {:?}, not a file beside it",
                self.dir.display(),
                meta.file
            );
        }
        // The release's words once (its I/O error names its cause in the message).
        let refused = |e: ReleaseError| anyhow!("the release {version} is refused: {e}");
        meta.verify(key).map_err(refused)?;
        let path = self.dir.join(&meta.file);
        let (size, sha256) = release::digest_file(&path).map_err(refused)?;
        if size != meta.size {
            return Err(refused(ReleaseError::Size {
                what: path.display().to_string(),
                got: size,
                expected: meta.size,
            }));
        }
        if sha256 != meta.sha256.to_ascii_lowercase() {
            return Err(refused(ReleaseError::Checksum {
                what: path.display().to_string(),
                got: sha256,
                expected: meta.sha256.clone(),
            }));
        }
        Ok((meta.clone(), path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(path: &Path, version: &str) {
        std::fs::write(path, format!("#!/bin/sh\necho 'dockmesh {version}'\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn meta_of(path: &Path, version: &str) -> ReleaseMeta {
        let (size, sha256) = release::digest_file(path).unwrap();
        ReleaseMeta {
            file: path.file_name().unwrap().to_str().unwrap().into(),
            version: version.into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            size,
            sha256,
            signature: String::new(),
        }
    }

    /// An installed 0.1.0 and a release saying `says`: (dir, binary, release, previous, the
    /// installed bytes, the version to swap to).
    fn case(
        says: &str,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        PathBuf,
        PathBuf,
        Vec<u8>,
        Version,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let (binary, new) = (tmp.path().join("dockmesh"), tmp.path().join("release"));
        let previous = tmp.path().join("dockmesh.previous-0.1.0");
        script(&binary, "0.1.0");
        script(&new, says);
        let old = std::fs::read(&binary).unwrap();
        (
            tmp,
            binary,
            new,
            previous,
            old,
            Version::parse("0.2.0").unwrap(),
        )
    }

    #[test]
    fn a_swap_keeps_the_binary_it_replaces_and_is_done_once() {
        let (_tmp, binary, new, previous, old, to) = case("0.2.0");
        let meta = meta_of(&new, "0.2.0");

        let said = swap(&binary, &new, &previous, &meta, &to).unwrap();
        assert_eq!(said, ", says dockmesh 0.2.0");
        assert_eq!(
            std::fs::read(&binary).unwrap(),
            std::fs::read(&new).unwrap()
        );
        assert_eq!(std::fs::read(&previous).unwrap(), old);
        // Run again (a run interrupted after the rename): nothing is done twice.
        let said = swap(&binary, &new, &previous, &meta, &to).unwrap();
        assert_eq!(said, ", already in place");
        assert_eq!(std::fs::read(&previous).unwrap(), old);
    }

    #[test]
    fn a_release_that_is_not_what_was_signed_or_says_another_version_is_not_installed() {
        let (tmp, binary, new, previous, old, to) = case("0.3.0");

        let mut meta = meta_of(&new, "0.2.0");
        let err = swap(&binary, &new, &previous, &meta, &to).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.starts_with("release: ")
                && err.contains("says `dockmesh 0.3.0`, not `dockmesh 0.2.0`"),
            "{err}"
        );
        meta.sha256 = "00".repeat(32);
        let err = format!(
            "{:#}",
            swap(&binary, &new, &previous, &meta, &to).unwrap_err()
        );
        assert!(err.starts_with("release: the copy "), "{err}");
        // Nothing changed: the binary is as it was, nothing kept, no copy left beside it.
        assert_eq!(std::fs::read(&binary).unwrap(), old);
        assert!(!previous.exists());
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["dockmesh", "release"]);
    }
}
