//! The download of an order's binary into the agent's own `upgrade/` directory, resumed after
//! an interruption as core's [`Download`] says, then checked through the open file (size,
//! SHA-256) and by running it (`--version`).

use super::{Swapper, VERSION_CHECK, failed};
use crate::agent::error_chain as chain;
use crate::channel::files::{self, ProbeError};
use dockmesh_core::agent_upgrade::{Answer, Download, DownloadError, Next};
use dockmesh_core::rollout::{AgentReport, UpgradeOrder};
use futures_util::StreamExt;
use std::path::{Path, PathBuf};

/// The directory of the state directory the download is written in (0700).
pub(super) const DOWNLOAD_DIR: &str = "upgrade";

impl Swapper {
    /// Download the order's binary from `url` and check it; returns where it is. Whatever
    /// fails a check is removed.
    pub(super) async fn download_checked(
        &self,
        url: &str,
        order: &UpgradeOrder,
    ) -> Result<PathBuf, AgentReport> {
        let (path, file) = self.create_download()?;
        let mut file = tokio::fs::File::from_std(file);
        if let Err(e) = self.download(url, &path, &mut file, order.size).await {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        // Checked through the file written, not by its name; it is closed before it is run.
        let file = file.into_std().await;
        let (size, sha256) = tokio::task::spawn_blocking(move || digest_open(file))
            .await
            .map_err(|e| failed(format!("checking the download: {e}")))?
            .map_err(|e| failed(format!("reading the download back: {e}")))?;
        if size != order.size || !sha256.eq_ignore_ascii_case(&order.sha256) {
            let _ = std::fs::remove_file(&path);
            return Err(failed(format!(
                "the downloaded binary's SHA-256 is {sha256} ({size} bytes), the signed release \
                 says {} ({} bytes): it was refused and removed; the agent keeps running {}",
                order.sha256, order.size, self.running
            )));
        }
        if let Err(reason) = try_version(&path, &order.version).await {
            let _ = std::fs::remove_file(&path);
            return Err(failed(reason));
        }
        Ok(path)
    }

    /// A new, empty file for the download in the agent's own `upgrade/` directory (made 0700,
    /// refused when another user owns it): created `O_EXCL | O_NOFOLLOW`, so nothing planted
    /// there (a file, a link) is written through or run.
    pub(super) fn create_download(&self) -> Result<(PathBuf, std::fs::File), AgentReport> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.state_dir.join(DOWNLOAD_DIR);
        crate::channel::private::private_dir(&dir).map_err(|e| {
            failed(format!(
                "the agent's download directory cannot be made private: {}; {}; nothing was \
                 downloaded",
                chain(&e),
                e.hint()
            ))
        })?;
        let path = dir.join("dockmesh.download");
        // A leftover of an earlier attempt (or whatever is there) is unlinked, never followed.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(failed(format!(
                    "removing the leftover {}: {e}; nothing was downloaded",
                    path.display()
                )));
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .mode(0o700)
            .open(&path)
            .map_err(|e| {
                failed(format!(
                    "creating the download {}: {e}; nothing was downloaded",
                    path.display()
                ))
            })?;
        Ok((path, file))
    }

    /// Download `url` into `file` (at `path`) until it holds `size` bytes, resuming with a
    /// range request after an interruption.
    async fn download(
        &self,
        url: &str,
        path: &Path,
        file: &mut tokio::fs::File,
        size: u64,
    ) -> Result<(), AgentReport> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let mut download = Download::new(url, size, &self.running);
        loop {
            let from = match download.next_step() {
                Next::Done => return Ok(()),
                Next::GiveUp(e @ DownloadError::Unreachable { .. }) => {
                    return Err(AgentReport::CannotDownload {
                        reason: e.to_string(),
                    });
                }
                Next::GiveUp(e) => return Err(failed(e.to_string())),
                Next::Request { wait, from } => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    from
                }
            };
            let mut req = self.http.get(url);
            if let Some(from) = from {
                req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    download.unreachable(chain(&e));
                    continue;
                }
            };
            let status = resp.status();
            let at = match download.answered(status.as_u16(), &status.to_string()) {
                Ok(Answer::WriteAt(at)) => at,
                Ok(Answer::Retry) => continue,
                Err(e) => return Err(failed(e.to_string())),
            };
            let placed = async {
                file.set_len(at).await?;
                file.seek(std::io::SeekFrom::Start(at)).await
            };
            if let Err(e) = placed.await {
                return Err(failed(format!(
                    "cannot write the download to {}: {e}",
                    path.display()
                )));
            }
            let mut body = resp.bytes_stream();
            let mut broke = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(bytes) => {
                        download
                            .chunk(bytes.len() as u64)
                            .map_err(|e| failed(e.to_string()))?;
                        if let Err(e) = file.write_all(&bytes).await {
                            return Err(failed(format!(
                                "writing the download to {}: {e}",
                                path.display()
                            )));
                        }
                    }
                    Err(e) => {
                        broke = Some(chain(&e));
                        break;
                    }
                }
            }
            let _ = file.flush().await;
            let _ = file.sync_all().await;
            if !download.ended(broke) {
                let (written, size) = download.progress();
                tracing::warn!(
                    written,
                    size,
                    "the download was cut ({}); resuming",
                    download.last()
                );
            }
        }
    }
}

/// The new binary must run and say it is `dockmesh <version>`.
async fn try_version(path: &Path, version: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("making the download executable: {e}"))?;
    let probe = path.to_owned();
    let said = tokio::task::spawn_blocking(move || files::probe_version(&probe, VERSION_CHECK))
        .await
        .map_err(|e| format!("running the new binary: {e}"))?;
    let said = match said {
        Ok(v) => v.line,
        Err(ProbeError::NotAVersion { line, .. }) => line,
        Err(ProbeError::Timeout { .. }) => {
            return Err("the new binary did not answer `--version` in time".to_owned());
        }
        Err(ProbeError::Run { source, .. }) => {
            return Err(format!("the new binary cannot be run: {source}"));
        }
        Err(e) => return Err(format!("the new binary failed: {e}")),
    };
    if said != format!("dockmesh {version}") {
        return Err(format!(
            "the new binary says {said:?} to `--version`, not \"dockmesh {version}\""
        ));
    }
    Ok(())
}

/// The size and SHA-256 of an open file, read from its start.
pub(super) fn digest_open(mut file: std::fs::File) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}
