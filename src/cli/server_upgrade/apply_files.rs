//! What `upgrade apply` keeps on disk and the files it checks and swaps: the run record (core's
//! `RunRecord`, `upgrade-run.json`, written atomically), the releases directory (`Catalog`: each
//! release's signature, size and SHA-256), and the swap of the installed binary (`swap`).

use super::binary::said_version;
use anyhow::{Context, anyhow, bail};
use dockmesh_core::server_upgrade::RunRecord;
use dockmesh_core::version::Version;
use dockmesh_http::channel::agent_binaries::{
    self as release, ReleaseError, ReleaseMeta, VerifyingKey,
};
use std::path::{Path, PathBuf};

/// Put the release `new` in place of `binary`, keeping `binary` as `previous`: the release is
/// copied beside `binary` (fsync, 0755), that copy's size and SHA-256 checked against `meta` and
/// its `--version` against `to`, the installed binary copied to `previous`, then the copy renamed
/// over `binary`. Done already (a run interrupted after the rename) when `binary` is the release
/// and `previous` is there. Returns what the release said (for the step line).
pub(super) fn swap(
    binary: &Path,
    new: &Path,
    previous: &Path,
    meta: &ReleaseMeta,
    to: &Version,
) -> anyhow::Result<String> {
    let (_, current) = release::digest_file(binary)?;
    if current == meta.sha256.to_ascii_lowercase() && previous.is_file() {
        return Ok(", already in place".into());
    }
    let staged = temp_beside(binary, &format!("new-{to}"))?;
    let result = (|| {
        copy_synced(new, &staged).context("release: staging it beside the binary")?;
        let (size, sha256) = release::digest_file(&staged)?;
        if size != meta.size || sha256 != meta.sha256.to_ascii_lowercase() {
            bail!(
                "release: the copy {} is {size} bytes with SHA-256 {sha256}, the release says \
                 {} bytes, {}",
                staged.display(),
                meta.size,
                meta.sha256
            );
        }
        let said = said_version(&staged).map_err(|e| anyhow!("release: {e:#}"))?;
        if &said != to {
            bail!(
                "release: {} says `dockmesh {said}`, not `dockmesh {to}`",
                new.display()
            );
        }
        let kept = temp_beside(previous, "tmp")?;
        copy_synced(binary, &kept)
            .and_then(|()| std::fs::rename(&kept, previous))
            .and_then(|()| sync_dir(previous))
            .with_context(|| format!("swap: keeping the binary as {}", previous.display()))?;
        std::fs::rename(&staged, binary)
            .with_context(|| format!("swap: renaming the release over {}", binary.display()))?;
        // The rename is done: from here on the hop counts as swapped (an undo puts `previous`
        // back), so a failed directory fsync is not reported as a failed swap.
        let _ = sync_dir(binary);
        Ok(format!(", says dockmesh {said}"))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    result
}

/// `.<name>.<what>-<pid>` beside `path`.
pub(super) fn temp_beside(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} has no file name", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{what}-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Copy `src` to `dst`, make it 0755 and fsync it.
pub(super) fn copy_synced(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::copy(src, dst)?;
    let f = std::fs::File::open(dst)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
    }
    f.sync_all()
}

/// fsync the directory holding `path`, so a rename in it survives a crash.
pub(super) fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
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

/// Write the run record atomically (temp file, fsync, rename, fsync the directory).
pub(super) fn save_run(path: &Path, run: &RunRecord) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(
            &mut f,
            &serde_json::to_vec_pretty(run).expect("a run record serializes"),
        )?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    };
    write().with_context(|| format!("recording the upgrade's progress in {}", path.display()))
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
