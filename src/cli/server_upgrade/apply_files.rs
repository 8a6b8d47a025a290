//! What `upgrade apply` keeps on disk and the files it checks and swaps: the run record
//! (`upgrade-run.json`, written atomically), the releases directory (`Catalog`: each release's
//! signature, size and SHA-256), and the swap of the installed binary (`swap`).

use super::binary::said_version;
use anyhow::{Context, anyhow, bail};
use dockmesh_core::version::{Hop, Version};
use dockmesh_http::channel::agent_binaries::{
    self as release, ReleaseError, ReleaseMeta, VerifyingKey,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How far a hop got. Each stage is recorded once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Not started.
    Pending,
    /// The bundle taken before it verifies.
    BackedUp,
    /// The new binary is in place; the previous one kept.
    Swapped,
    /// `db migrate` ran.
    Migrated,
    /// The schema is up to date and the binary says its version.
    Checked,
    /// Finished.
    Done,
    /// Failed and undone (as far as the record's `undone` says); a new run retries it.
    Failed,
}

impl Stage {
    pub(super) fn word(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::BackedUp => "backed_up",
            Stage::Swapped => "swapped",
            Stage::Migrated => "migrated",
            Stage::Checked => "checked",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
}

/// One hop of a run, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HopRecord {
    /// The version upgraded from.
    pub from: String,
    /// The version upgraded to.
    pub to: String,
    /// How far it got.
    pub stage: Stage,
    /// The bundle taken before it.
    #[serde(default)]
    pub backup: Option<PathBuf>,
    /// Where the binary it replaced is kept.
    #[serde(default)]
    pub previous: Option<PathBuf>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// What was undone after it failed.
    #[serde(default)]
    pub undone: Vec<String>,
}

/// `upgrade-run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The version upgraded to.
    pub target: String,
    /// The rules the plan follows.
    pub rules: String,
    /// The installed binary upgraded.
    pub binary: PathBuf,
    /// `running`, `done` or `failed`.
    pub result: String,
    /// The plan, with each hop's progress.
    pub hops: Vec<HopRecord>,
}

impl RunRecord {
    pub(super) fn finished(&self) -> bool {
        self.result == "done"
    }

    pub(super) fn where_it_stands(&self) -> String {
        let hops: Vec<String> = self
            .hops
            .iter()
            .map(|h| format!("{} → {} {}", h.from, h.to, h.stage.word()))
            .collect();
        format!("the run to {} ({})", self.target, hops.join(", "))
    }
}

pub(super) fn new_run(to: &Version, rules: &str, binary: &Path, hops: &[Hop]) -> RunRecord {
    RunRecord {
        target: to.to_string(),
        rules: rules.to_owned(),
        binary: binary.to_owned(),
        result: "running".into(),
        hops: hops
            .iter()
            .map(|h| HopRecord {
                from: h.from.to_string(),
                to: h.to.to_string(),
                stage: Stage::Pending,
                backup: None,
                previous: None,
                error: None,
                undone: Vec::new(),
            })
            .collect(),
    }
}

/// `<binary>.previous-<from>`.
pub(super) fn previous_path(binary: &Path, from: &str) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(format!(".previous-{from}"));
    PathBuf::from(name)
}

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
    ) -> Result<(ReleaseMeta, PathBuf), String> {
        let meta = self
            .metas
            .iter()
            .find(|m| Version::parse(&m.version).ok().as_ref() == Some(version))
            .ok_or_else(|| {
                format!(
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
            return Err(format!(
                "the release {version} in {} names the file {:?}, not a file beside it",
                self.dir.display(),
                meta.file
            ));
        }
        let refused = |e: ReleaseError| format!("the release {version} is refused: {e}");
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
    use serde_json::json;

    #[test]
    fn stages_are_ordered_and_named_as_recorded() {
        assert!(Stage::Pending < Stage::BackedUp);
        assert!(Stage::BackedUp < Stage::Swapped);
        assert!(Stage::Swapped < Stage::Migrated);
        assert!(Stage::Migrated < Stage::Checked);
        assert!(Stage::Checked < Stage::Done);
        for s in [
            Stage::Pending,
            Stage::BackedUp,
            Stage::Swapped,
            Stage::Migrated,
            Stage::Checked,
            Stage::Done,
            Stage::Failed,
        ] {
            assert_eq!(json!(s), json!(s.word()));
        }
    }

    #[test]
    fn the_previous_binary_sits_beside_it() {
        assert_eq!(
            previous_path(Path::new("/usr/local/bin/dockmesh"), "0.1.0"),
            Path::new("/usr/local/bin/dockmesh.previous-0.1.0")
        );
    }

    #[test]
    fn a_run_record_round_trips_and_names_where_it_stands() {
        let hops = [Hop {
            from: Version::parse("0.1.0").unwrap(),
            to: Version::parse("0.2.0").unwrap(),
        }];
        let mut run = new_run(
            &Version::parse("0.2.0").unwrap(),
            "dtr",
            Path::new("/b"),
            &hops,
        );
        run.hops[0].stage = Stage::Swapped;
        let back: RunRecord = serde_json::from_value(json!(run)).unwrap();
        assert_eq!(back.hops[0].stage, Stage::Swapped);
        assert!(!back.finished());
        assert_eq!(
            back.where_it_stands(),
            "the run to 0.2.0 (0.1.0 → 0.2.0 swapped)"
        );
    }
}
