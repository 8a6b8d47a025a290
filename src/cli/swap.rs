//! The agent's self-upgrade: take an order, download the binary beside the running one
//! (resuming an interrupted download), check size, SHA-256 and the release signature, keep the
//! running binary as `<exe>.previous`, replace it atomically, and re-execute in place (same
//! pid). A watchdog, started from the previous binary before the swap, puts the previous binary
//! back and starts it when the new one exits, or does not connect before the deadline; the
//! restored agent states the failure in its next `hello`. Containers are never touched.
//!
//! The state of an upgrade is `upgrade.json` in the agent's state directory: `trial` from the
//! swap until the new binary's `hello` is read by the server (`confirmed`), or `reverted` with
//! the reason. The release key is pinned in `release.pub` at enrollment (the server's, when it
//! has one); a key offered later is taken only when it is the pinned one, so a server that had
//! none cannot pin one without the operator copying it there. An order for a version older
//! than the running one is refused (a correctly signed old release is still a downgrade). The
//! download is created `O_EXCL | O_NOFOLLOW` in `upgrade/` of the state directory (0700, the
//! agent's own), checked through the same open file, and only then run and installed.

use super::VERSION;
use anyhow::Context;
use dockmesh_core::protocol::UpgradeFailure;
use dockmesh_core::rollout::{AgentReport, UpgradeOrder};
use dockmesh_http::agent::agent_upgrade::AgentUpgrader;
use dockmesh_http::channel::agent_binaries as release;
use dockmesh_http::channel::files::{self, FileMode, ProbeError, StagedBinary};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const MARKER: &str = "upgrade.json";
pub(crate) const PINNED_KEY: &str = "release.pub";
/// The directory of the state directory the download is written in (0700).
const DOWNLOAD_DIR: &str = "upgrade";
/// Attempts at a download, each resuming where the last stopped.
const ATTEMPTS: u32 = 4;
/// How long the new binary's `--version` may take.
const VERSION_CHECK: Duration = Duration::from_secs(10);
/// How many checks in a row (100 ms apart) must find the new binary gone before it counts as
/// exited.
const GONE_CHECKS: u32 = 10;
/// How long past the deadline the watchdog waits for a new binary that did not exit by itself.
const HUNG_GRACE_MS: i64 = 15_000;

/// Where an upgrade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stage {
    Trial,
    Confirmed,
    Reverted,
}

/// `upgrade.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    stage: Stage,
    target_version: String,
    from_version: String,
    exe: PathBuf,
    previous: PathBuf,
    pid: u32,
    /// Unix milliseconds by which the new binary must have connected.
    deadline_ms: i64,
    argv: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

fn read_marker(dir: &Path) -> Option<Marker> {
    let bytes = std::fs::read(dir.join(MARKER)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(
                "{} is damaged ({e}); it is ignored",
                dir.join(MARKER).display()
            );
            None
        }
    }
}

fn write_marker(dir: &Path, m: &Marker) -> anyhow::Result<()> {
    Ok(files::write_atomic(
        &dir.join(MARKER),
        &serde_json::to_vec_pretty(m).expect("the upgrade marker serialises"),
        FileMode::Private,
    )?)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn failed(reason: impl Into<String>) -> AgentReport {
    AgentReport::UpgradeFailed {
        reason: reason.into(),
    }
}

/// The agent's [`AgentUpgrader`].
pub struct Swapper {
    state_dir: PathBuf,
    server: String,
    exe: PathBuf,
    argv: Vec<String>,
    deadline: Duration,
    http: reqwest::Client,
    busy: Arc<AtomicBool>,
}

impl Swapper {
    /// An upgrader for the agent whose state is in `state_dir`, which enrolled with the API at
    /// `server`; a new binary must connect within `deadline`.
    pub fn new(state_dir: &Path, server: &str, deadline: Duration) -> anyhow::Result<Swapper> {
        let exe = std::env::current_exe().context("finding the agent's own binary")?;
        let argv = std::env::args_os()
            .map(|a| {
                a.into_string()
                    .map_err(|a| anyhow::anyhow!("the argument {a:?} is not UTF-8"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Swapper {
            state_dir: state_dir.to_owned(),
            server: server.trim_end_matches('/').to_owned(),
            exe,
            argv,
            deadline,
            http,
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Download from an `https://` server trusting what enrollment trusted: the CAs of
    /// `ca_file`, else the server's CA kept in the state directory (`ca.crt`) by its
    /// fingerprint. A plain `http://` server (loopback) is left as it is.
    pub fn trusting(mut self, ca_file: Option<&Path>) -> anyhow::Result<Swapper> {
        if !self.server.starts_with("https://") {
            return Ok(self);
        }
        let config = match ca_file {
            Some(f) => dockmesh_http::channel::tls::client_config_roots(f),
            None => {
                let path = self.state_dir.join("ca.crt");
                let pem = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let der = dockmesh_http::channel::pki::der_of_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
                dockmesh_http::channel::tls::client_config_pinned(
                    &dockmesh_http::channel::pki::fingerprint_of(&der),
                )
            }
        }
        .map_err(|e| anyhow::anyhow!("{e}; {}", e.hint()))?;
        self.http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .tls_backend_preconfigured(config)
            .build()
            .context("building the HTTP client")?;
        Ok(self)
    }

    fn pinned_key(&self) -> Option<release::VerifyingKey> {
        let pem = std::fs::read_to_string(self.state_dir.join(PINNED_KEY)).ok()?;
        release::parse_public(&pem, PINNED_KEY).ok()
    }

    /// A new, empty file for the download in the agent's own `upgrade/` directory (made 0700,
    /// refused when another user owns it): created `O_EXCL | O_NOFOLLOW`, so nothing planted
    /// there (a file, a link) is written through or run.
    fn create_download(&self) -> Result<(PathBuf, std::fs::File), AgentReport> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.state_dir.join(DOWNLOAD_DIR);
        super::db::private_dir(&dir, "the agent's download directory")
            .map_err(|e| failed(format!("{e:#}; nothing was downloaded")))?;
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

    fn previous_path(&self) -> PathBuf {
        let mut p = self.exe.clone().into_os_string();
        p.push(".previous");
        PathBuf::from(p)
    }

    /// Download and check the order's binary; returns where it is.
    async fn fetch(&self, order: &UpgradeOrder) -> Result<PathBuf, AgentReport> {
        check_order(order)?;
        let key = self.pinned_key().ok_or_else(|| {
            failed(
                "this agent has no release key pinned (the server offers its key on each \
                 connection once it has one): nothing was downloaded; upgrade it by hand",
            )
        })?;
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        let signature = order.signature.as_deref().unwrap_or_default();
        release::verify(
            &key,
            &release::statement(&order.version, os, arch, order.size, &order.sha256),
            signature,
            &format!("dockmesh {} for {os}/{arch}", order.version),
        )
        .map_err(|e| failed(format!("{e}; nothing was downloaded")))?;
        check_not_older(&order.version, VERSION, order.allow_downgrade)?;
        let url = if order.binary.starts_with("http://") || order.binary.starts_with("https://") {
            order.binary.clone()
        } else {
            format!("{}{}", self.server, order.binary)
        };
        let (path, file) = self.create_download()?;
        let mut file = tokio::fs::File::from_std(file);
        if let Err(e) = self.download(&url, &path, &mut file, order.size).await {
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
                 says {} ({} bytes): it was refused and removed; the agent keeps running {VERSION}",
                order.sha256, order.size
            )));
        }
        if let Err(reason) = self.try_version(&path, &order.version).await {
            let _ = std::fs::remove_file(&path);
            return Err(failed(reason));
        }
        Ok(path)
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
        let mut reached = false;
        let mut last = String::from("no attempt made");
        // Bytes of `file` that hold the download so far.
        let mut have = 0u64;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            if have == size {
                return Ok(());
            }
            let mut req = self.http.get(url);
            if have > 0 {
                req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{e:#}");
                    continue;
                }
            };
            reached = true;
            let status = resp.status();
            let append = match status {
                reqwest::StatusCode::PARTIAL_CONTENT => true,
                reqwest::StatusCode::OK => false,
                reqwest::StatusCode::RANGE_NOT_SATISFIABLE => {
                    have = 0;
                    last = "the server refused to resume the download".into();
                    continue;
                }
                s => {
                    return Err(failed(format!(
                        "downloading {url}: the server answered {s}; the agent keeps running \
                         {VERSION}"
                    )));
                }
            };
            let mut written = if append { have } else { 0 };
            let placed = async {
                file.set_len(written).await?;
                file.seek(std::io::SeekFrom::Start(written)).await
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
                        written += bytes.len() as u64;
                        if written > size {
                            return Err(failed(format!(
                                "the download from {url} is longer than the signed size of \
                                 {size} bytes: refused and removed"
                            )));
                        }
                        if let Err(e) = file.write_all(&bytes).await {
                            return Err(failed(format!(
                                "writing the download to {}: {e}",
                                path.display()
                            )));
                        }
                    }
                    Err(e) => {
                        broke = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            let _ = file.flush().await;
            let _ = file.sync_all().await;
            have = written;
            if written == size {
                return Ok(());
            }
            last = broke.unwrap_or_else(|| format!("the answer ended after {written} bytes"));
            tracing::warn!(written, size, "the download was cut ({last}); resuming");
        }
        if !reached {
            return Err(AgentReport::CannotDownload {
                reason: format!("cannot reach {url}: {last}"),
            });
        }
        Err(failed(format!(
            "the download from {url} stayed truncated: {have} of {size} bytes after {ATTEMPTS} \
             attempts ({last}); the agent keeps running {VERSION}"
        )))
    }

    /// The new binary must run and say it is `dockmesh <version>`.
    async fn try_version(&self, path: &Path, version: &str) -> Result<(), String> {
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

    /// Copy the new binary beside the running one, start the watchdog, then keep the running
    /// binary as the previous one and put the new one in place.
    fn swap(&self, order: &UpgradeOrder, new: &Path) -> Result<(), AgentReport> {
        let previous = self.previous_path();
        let staged = StagedBinary::beside(&self.exe, new).map_err(|e| {
            failed(format!(
                "{e}: {}; the agent keeps running {VERSION}",
                source_of(&e)
            ))
        })?;
        let marker = Marker {
            stage: Stage::Trial,
            target_version: order.version.clone(),
            from_version: VERSION.to_owned(),
            exe: self.exe.clone(),
            previous: previous.clone(),
            pid: std::process::id(),
            deadline_ms: now_ms()
                .saturating_add(i64::try_from(self.deadline.as_millis()).unwrap_or(i64::MAX)),
            argv: self.argv.clone(),
            reason: None,
        };
        write_marker(&self.state_dir, &marker).map_err(|e| failed(format!("{e:#}")))?;
        // Started from the running binary before it is replaced: the watchdog runs the
        // binary that is kept as the previous one.
        let watchdog = std::process::Command::new(&self.exe)
            .arg("agent")
            .arg("watchdog")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(std::process::Stdio::null())
            .spawn();
        if let Err(e) = watchdog {
            let _ = std::fs::remove_file(self.state_dir.join(MARKER));
            return Err(failed(format!("starting the upgrade watchdog: {e}")));
        }
        if let Err(e) = staged.install(&previous) {
            // The watchdog stops once the marker is gone.
            let _ = std::fs::remove_file(self.state_dir.join(MARKER));
            return Err(failed(format!(
                "replacing {} failed: {e}: {}; the agent keeps running {VERSION}",
                self.exe.display(),
                source_of(&e)
            )));
        }
        let _ = std::fs::remove_file(new);
        Ok(())
    }
}

/// The cause of an error, for a report.
fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

/// Re-execute the (new) binary at `exe` in place; on failure put the previous one back.
fn restart(exe: &Path, argv: &[String], state_dir: &Path, busy: &AtomicBool) {
    use std::os::unix::process::CommandExt;
    tracing::info!("restarting as the new binary");
    let err = std::process::Command::new(exe)
        .args(argv.iter().skip(1))
        .exec();
    tracing::error!("re-executing {} failed: {err}", exe.display());
    let reason = format!("the new binary could not be executed: {err}");
    if let Some(mut m) = read_marker(state_dir)
        && std::fs::rename(&m.previous, &m.exe).is_ok()
    {
        m.stage = Stage::Reverted;
        m.reason = Some(reason);
        let _ = write_marker(state_dir, &m);
    }
    busy.store(false, Ordering::SeqCst);
}

/// The size and SHA-256 of an open file, read from its start.
fn digest_open(mut file: std::fs::File) -> std::io::Result<(u64, String)> {
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

/// An order for a version older than the running one is refused: a correctly signed old
/// release is still a downgrade (it may bring back what a newer one fixed).
fn check_not_older(version: &str, running: &str, allowed: bool) -> Result<(), AgentReport> {
    use dockmesh_core::version::Version;
    let order = Version::parse(version).map_err(|e| {
        failed(format!(
            "the order's version {version:?} is not a version: {e}"
        ))
    })?;
    let running_v = Version::parse(running).map_err(|e| {
        failed(format!(
            "the running version {running:?} is not a version: {e}"
        ))
    })?;
    if order < running_v && allowed {
        tracing::warn!(
            "the order brings this agent from {running} down to {version}: the upgrade policy \
             allows downgrades"
        );
    } else if order < running_v {
        return Err(failed(format!(
            "the order is for dockmesh {version}, older than the running {running}: downgrades \
             are refused and nothing was downloaded; install an older binary by hand if it is \
             meant"
        )));
    }
    Ok(())
}

fn check_order(order: &UpgradeOrder) -> Result<(), AgentReport> {
    let v = &order.version;
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(failed(format!(
            "the order's version {v:?} is not a version"
        )));
    }
    if order.sha256.len() != 64 || !order.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(failed(format!(
            "the order's SHA-256 {:?} is not 64 hex digits",
            order.sha256
        )));
    }
    if order.size == 0 || order.size > release::MAX_BINARY {
        return Err(failed(format!(
            "the order's size {} is not between 1 byte and {} bytes",
            order.size,
            release::MAX_BINARY
        )));
    }
    if order.signature.is_none() {
        return Err(failed("the order carries no release signature: refused"));
    }
    Ok(())
}

#[async_trait::async_trait]
impl AgentUpgrader for Swapper {
    async fn upgrade(&self, order: UpgradeOrder) -> Result<(), AgentReport> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(failed(
                "an upgrade is already being carried out on this agent",
            ));
        }
        tracing::info!(version = %order.version, binary = %order.binary, "upgrade order taken");
        // A new order means the server has settled the last one: its outcome is not stated
        // again.
        if read_marker(&self.state_dir).is_some_and(|m| m.stage != Stage::Trial) {
            let _ = std::fs::remove_file(self.state_dir.join(MARKER));
        }
        let outcome = match self.fetch(&order).await {
            Ok(new) => self.swap(&order, &new),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                let (exe, argv, dir, busy) = (
                    self.exe.clone(),
                    self.argv.clone(),
                    self.state_dir.clone(),
                    self.busy.clone(),
                );
                tokio::spawn(async move {
                    // Let the answer reach the server first.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    tokio::task::spawn_blocking(move || restart(&exe, &argv, &dir, &busy));
                });
                Ok(())
            }
            Err(report) => {
                tracing::warn!(?report, "upgrade refused");
                self.busy.store(false, Ordering::SeqCst);
                Err(report)
            }
        }
    }

    fn offer_release_key(&self, pem: &str) -> Result<(), String> {
        let offered =
            release::parse_public(pem, "the offered release key").map_err(|e| e.to_string())?;
        let path = self.state_dir.join(PINNED_KEY);
        match std::fs::read_to_string(&path) {
            Ok(pinned) => {
                let pinned = release::parse_public(&pinned, &path.display().to_string())
                    .map_err(|e| e.to_string())?;
                if pinned == offered {
                    Ok(())
                } else {
                    let msg = format!(
                        "this agent pinned the release key {} and the server offers {}: \
                         upgrades signed with the new key are refused; to trust it, remove {} \
                         on this host",
                        release::fingerprint(&pinned),
                        release::fingerprint(&offered),
                        path.display()
                    );
                    tracing::error!("{msg}");
                    Err(msg)
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let msg = format!(
                    "this agent pinned no release key at enrollment (its server had none) and \
                     does not take one offered later: upgrades are refused; to trust the key \
                     {}, copy the server's release public key to {} on this host",
                    release::fingerprint(&offered),
                    path.display()
                );
                tracing::warn!("{msg}");
                Err(msg)
            }
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }
}

/// At start: the trial to confirm when this binary is the new one on trial.
pub struct Startup {
    /// Set when this process is a new binary on trial.
    pub trial: Option<Arc<Trial>>,
}

/// A new binary on trial: it must be confirmed before the deadline, else the process exits so
/// the watchdog puts the previous binary back.
pub struct Trial {
    dir: PathBuf,
    done: AtomicBool,
}

impl Trial {
    /// The server read this binary's `hello`: the upgrade took.
    pub fn confirm(&self) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(mut m) = read_marker(&self.dir) {
            m.stage = Stage::Confirmed;
            match write_marker(&self.dir, &m) {
                Ok(()) => tracing::info!(version = VERSION, "upgrade confirmed"),
                Err(e) => tracing::warn!("recording the confirmed upgrade failed: {e:#}"),
            }
        }
    }
}

/// Read the upgrade marker at start.
pub fn startup(state_dir: &Path) -> Startup {
    let Some(mut m) = read_marker(state_dir) else {
        return Startup { trial: None };
    };
    match m.stage {
        Stage::Trial if m.target_version == VERSION => {
            let trial = Arc::new(Trial {
                dir: state_dir.to_owned(),
                done: AtomicBool::new(false),
            });
            let watch = trial.clone();
            let left = Duration::from_millis(u64::try_from(m.deadline_ms - now_ms()).unwrap_or(0));
            if now_ms() > m.deadline_ms.saturating_add(2 * HUNG_GRACE_MS) {
                // Long past the deadline (a restart much later): no watchdog waits any more, so
                // exiting would only stop the agent. It is confirmed once it connects.
                tracing::warn!(
                    "an upgrade to {VERSION} was never confirmed and its watchdog is gone; it is \
                     confirmed once the server reads this agent's hello"
                );
                return Startup { trial: Some(trial) };
            }
            tracing::info!(
                from = %m.from_version,
                "running a new binary on trial: it must connect within {:.0} s",
                left.as_secs_f64()
            );
            std::thread::spawn(move || {
                std::thread::sleep(left);
                if !watch.done.load(Ordering::SeqCst) {
                    tracing::error!(
                        "the new binary did not connect to the server before the deadline; \
                         exiting so the previous binary is put back"
                    );
                    std::process::exit(3);
                }
            });
            Startup { trial: Some(trial) }
        }
        Stage::Trial => {
            // This is not the binary on trial: the swap did not complete.
            m.stage = Stage::Reverted;
            m.reason = Some(format!(
                "the upgrade to {} did not complete; {} runs again",
                m.target_version, VERSION
            ));
            let _ = write_marker(state_dir, &m);
            Startup { trial: None }
        }
        Stage::Reverted => Startup { trial: None },
        Stage::Confirmed => Startup { trial: None },
    }
}

/// The failed upgrade this agent states in its `hello` now (read at each connection: a new
/// order clears it).
pub fn current_failure(state_dir: &Path) -> Option<UpgradeFailure> {
    read_marker(state_dir)
        .filter(|m| m.stage == Stage::Reverted)
        .and_then(|m| failure_of(&m))
}

fn failure_of(m: &Marker) -> Option<UpgradeFailure> {
    (m.from_version == VERSION).then(|| UpgradeFailure {
        target_version: m.target_version.clone(),
        reason: m
            .reason
            .clone()
            .unwrap_or_else(|| "the new binary did not take".into()),
    })
}

/// Whether process `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// `dockmesh agent watchdog`: watch an upgrade on trial; put the previous binary back and
/// start it when the new one exits or hangs before it is confirmed.
pub fn watchdog(state_dir: &Path) -> std::process::ExitCode {
    // While a multi-threaded process executes a new binary, its main thread shows as a zombie
    // for a moment: only a process seen gone for a whole second has exited.
    let mut gone_for = 0u32;
    loop {
        let Some(m) = read_marker(state_dir) else {
            return std::process::ExitCode::SUCCESS;
        };
        if m.stage != Stage::Trial {
            return std::process::ExitCode::SUCCESS;
        }
        gone_for = if alive(m.pid) { 0 } else { gone_for + 1 };
        if gone_for >= GONE_CHECKS {
            return revert(
                state_dir,
                m.clone(),
                format!(
                    "the new binary ({}) exited before it connected to the server",
                    m.target_version
                ),
            );
        }
        if now_ms() > m.deadline_ms.saturating_add(HUNG_GRACE_MS) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &m.pid.to_string()])
                .status();
            std::thread::sleep(Duration::from_millis(500));
            return revert(
                state_dir,
                m.clone(),
                format!(
                    "the new binary ({}) did not connect to the server before the deadline",
                    m.target_version
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn revert(state_dir: &Path, mut m: Marker, reason: String) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    eprintln!(
        "dockmesh agent watchdog: {reason}; putting {} back",
        m.from_version
    );
    if let Err(e) = std::fs::rename(&m.previous, &m.exe) {
        eprintln!(
            "dockmesh agent watchdog: cannot put {} back in place of {}: {e}",
            m.previous.display(),
            m.exe.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    m.stage = Stage::Reverted;
    m.reason = Some(reason);
    if let Err(e) = write_marker(state_dir, &m) {
        eprintln!("dockmesh agent watchdog: {e:#}");
    }
    let _ = std::io::stderr().flush();
    let err = std::process::Command::new(&m.exe)
        .args(m.argv.iter().skip(1))
        .exec();
    eprintln!(
        "dockmesh agent watchdog: starting {} failed: {err}",
        m.exe.display()
    );
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> UpgradeOrder {
        UpgradeOrder {
            version: "1.2.3".into(),
            binary: "/api/v1/agent-binaries/x".into(),
            size: 10,
            sha256: "ab".repeat(32),
            signature: Some("00".repeat(64)),
            allow_downgrade: false,
        }
    }

    #[test]
    fn an_order_is_checked_before_anything_is_downloaded() {
        assert!(check_order(&order()).is_ok());
        let bad: [fn(&mut UpgradeOrder); 7] = [
            |o| o.version = String::new(),
            |o| o.version = "1.2 3".into(),
            |o| o.sha256 = "ab".repeat(31),
            |o| o.sha256 = "zz".repeat(32),
            |o| o.size = 0,
            |o| o.size = release::MAX_BINARY + 1,
            |o| o.signature = None,
        ];
        for change in bad {
            let mut o = order();
            change(&mut o);
            let err = check_order(&o).unwrap_err();
            assert!(matches!(err, AgentReport::UpgradeFailed { .. }), "{o:?}");
        }
    }

    #[test]
    fn a_process_is_alive_until_it_is_gone() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not yet reaped: a zombie counts as gone.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!alive(pid));
        child.wait().unwrap();
    }

    fn marker(stage: Stage, target: &str, from: &str) -> Marker {
        Marker {
            stage,
            target_version: target.into(),
            from_version: from.into(),
            exe: "/x/dockmesh".into(),
            previous: "/x/dockmesh.previous".into(),
            pid: 1,
            deadline_ms: now_ms() + 60_000,
            argv: vec!["dockmesh".into(), "agent".into()],
            reason: Some("it exited".into()),
        }
    }

    #[test]
    fn the_marker_says_what_to_report_and_whether_this_binary_is_on_trial() {
        let dir = tempfile::tempdir().unwrap();
        assert!(startup(dir.path()).trial.is_none());
        assert!(current_failure(dir.path()).is_none());
        // Put back after an upgrade away from this version: reported.
        write_marker(dir.path(), &marker(Stage::Reverted, "9.9.9", VERSION)).unwrap();
        assert!(startup(dir.path()).trial.is_none());
        let f = current_failure(dir.path()).unwrap();
        assert_eq!(
            (f.target_version.as_str(), f.reason.as_str()),
            ("9.9.9", "it exited")
        );
        // About another version's upgrade: not this binary's to report.
        write_marker(dir.path(), &marker(Stage::Reverted, "9.9.9", "0.0.0-other")).unwrap();
        assert!(current_failure(dir.path()).is_none());
        // A trial of another version found by this binary: the swap did not complete.
        write_marker(dir.path(), &marker(Stage::Trial, "9.9.9", VERSION)).unwrap();
        assert!(startup(dir.path()).trial.is_none());
        let f = current_failure(dir.path()).unwrap();
        assert!(f.reason.contains("did not complete"), "{f:?}");
        // This binary on trial: confirmed once, and then nothing is reported.
        write_marker(dir.path(), &marker(Stage::Trial, VERSION, "0.0.0-old")).unwrap();
        let trial = startup(dir.path()).trial.expect("on trial");
        trial.confirm();
        assert_eq!(read_marker(dir.path()).unwrap().stage, Stage::Confirmed);
        assert!(current_failure(dir.path()).is_none());
        assert!(startup(dir.path()).trial.is_none());
        // A damaged marker is ignored.
        std::fs::write(dir.path().join(MARKER), b"{").unwrap();
        assert!(startup(dir.path()).trial.is_none());
    }

    #[test]
    fn a_release_key_offered_is_taken_only_when_it_is_the_one_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let swapper = Swapper::new(dir.path(), "http://server", Duration::from_secs(60)).unwrap();
        let (_, first) = release::keygen().unwrap();
        let (_, second) = release::keygen().unwrap();
        assert!(swapper.pinned_key().is_none());
        assert!(swapper.offer_release_key("not a key").is_err());
        // Enrolled with a server that had no key: one offered later is not pinned.
        let err = swapper.offer_release_key(&first).unwrap_err();
        assert!(err.contains("pinned no release key"), "{err}");
        assert!(err.contains(PINNED_KEY), "{err}");
        assert!(swapper.pinned_key().is_none(), "nothing pinned by an offer");
        assert!(!dir.path().join(PINNED_KEY).exists());
        // Pinned at enrollment (or by the operator): that key is taken, another refused.
        std::fs::write(dir.path().join(PINNED_KEY), &first).unwrap();
        swapper.offer_release_key(&first).unwrap();
        let err = swapper.offer_release_key(&second).unwrap_err();
        assert!(err.contains("pinned"), "{err}");
        assert_eq!(
            swapper.pinned_key().unwrap(),
            release::parse_public(&first, "k").unwrap()
        );
    }

    #[test]
    fn an_order_for_an_older_version_is_refused() {
        for (order, running) in [
            ("1.2.2", "1.2.3"),
            ("0.9.0", "1.0.0"),
            ("1.3.0-rc.1", "1.3.0"),
        ] {
            let err = check_not_older(order, running, false).unwrap_err();
            let AgentReport::UpgradeFailed { reason } = err else {
                panic!("{order} over {running}: {err:?}")
            };
            assert!(reason.contains("downgrades are refused"), "{reason}");
        }
        for (order, running) in [("1.2.3", "1.2.3"), ("1.2.4", "1.2.3"), ("2.0.0", "1.9.9")] {
            check_not_older(order, running, false).unwrap();
        }
        // Only when the policy allows it.
        check_not_older("1.2.2", "1.2.3", true).unwrap();
        assert!(check_not_older("not a version", "1.2.3", true).is_err());
    }

    #[test]
    fn the_download_is_made_new_in_a_private_directory_and_never_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let swapper = Swapper::new(&state, "http://server", Duration::from_secs(60)).unwrap();
        // Something planted where the download goes: a link to a file elsewhere.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"kept").unwrap();
        let downloads = state.join(DOWNLOAD_DIR);
        std::fs::create_dir(&downloads).unwrap();
        std::fs::set_permissions(&downloads, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, downloads.join("dockmesh.download")).unwrap();
        let (path, mut file) = swapper.create_download().unwrap();
        file.write_all(b"new binary").unwrap();
        assert_eq!(
            std::fs::read(&elsewhere).unwrap(),
            b"kept",
            "the link was not followed"
        );
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&downloads), 0o700, "only the agent writes there");
        assert_eq!(mode(&path), 0o700);
        // What is checked is the open file: replacing the name changes nothing of it.
        let swapped = downloads.join("other");
        std::fs::write(&swapped, b"other binary").unwrap();
        std::fs::rename(&swapped, &path).unwrap();
        let (size, sha) = digest_open(file).unwrap();
        assert_eq!(size, 10);
        use sha2::Digest;
        assert_eq!(sha, hex::encode(sha2::Sha256::digest(b"new binary")));
    }
}
