//! Helpers shared by the volume tests and the volume benchmark: the engine (or a printed reason
//! to skip), the local busybox test image, the docker CLI (to look at volumes from outside
//! dockmesh), unique names, cleanup, and hand-made tar streams.
#![allow(dead_code)] // each user needs a different part

use bollard::Docker;
use bytes::Bytes;
use dockmesh_core::ports::{ByteStream, RuntimeError};
use futures_util::StreamExt;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Fills `/v` with every kind of entry: a 200 MB file, a sparse file, an empty directory,
/// relative and dangling symbolic links, a hard link, setuid/setgid/sticky modes, owners,
/// old mtimes (on links too), names with spaces, non-ASCII, invalid UTF-8, a newline, `%`, a
/// `.wh.` prefix, and a path longer than a ustar header holds.
pub const FILL: &str = r#"
set -e
cd /v
mkdir -p "dir with space/nested" empty "ünïcödé" deep
echo hello > "dir with space/file one.txt"
printf 'x' > "ünïcödé/日本語.txt"
printf 'bad' > "$(printf 'bad\377name')"
printf 'nl' > "$(printf 'new\nline')"
printf 'pct' > "100% sure"
touch .wh.not-a-whiteout
long=deep/$(printf 'a%.0s' $(seq 1 120))
mkdir -p "$long"
printf 'long' > "$long/$(printf 'b%.0s' $(seq 1 150))"
dd if=/dev/urandom of=big.bin bs=1M count=200 2>/dev/null
truncate -s 64M sparse.bin
printf 'middle' | dd of=sparse.bin bs=1 seek=33554432 conv=notrunc 2>/dev/null
printf 'tail' | dd of=sparse.bin bs=1 seek=67108860 conv=notrunc 2>/dev/null
head -c 100000 /dev/urandom | gzip > "dir with space/nested/data.gz"
ln -s "dir with space/file one.txt" rel-link
ln -s does-not-exist dangling
ln -s ../../empty "dir with space/nested/up-link"
ln "dir with space/file one.txt" hardlink
chmod 4755 "dir with space/file one.txt"
chmod 2750 "dir with space/nested"
chmod 1777 empty
chmod 0600 "ünïcödé/日本語.txt"
chmod 0444 big.bin
chown 1234:5678 "ünïcödé/日本語.txt"
chown 3000000:4000000 sparse.bin
chown -h 42:43 rel-link
chown 999:998 .
chmod 0750 .
touch -d "2001-02-03 04:05:06" "dir with space/file one.txt" big.bin
touch -h -d "1999-12-31 23:59:59" rel-link
touch -d "1980-01-01 00:00:00" empty "dir with space/nested" "dir with space" deep "ünïcödé" .
"#;

/// What busybox sees in `/v`, with names NUL-sorted so both volumes list in the same order:
/// type, mode, owner, mtime, link count and link target of everything, size of everything but
/// directories, SHA-256 of every file, and `ls -l` of every directory (without block totals).
pub const LIST: &str = r#"
set -e
cd /v
find . -print0 | sort -z | xargs -0 stat -c '%n|%F|%a|%u|%g|%Y|%h|%N'
find . ! -type d -print0 | sort -z | xargs -0 stat -c '%n|%s'
find . -type f -print0 | sort -z | xargs -0 sha256sum
ls -lAnR --full-time . | grep -v "^total"
[ "dir with space/file one.txt" -ef hardlink ] && echo "hard link shares its inode"
"#;

/// The local test image (`scripts/build-test-image.sh`).
pub const IMAGE: &str = "dockmesh-test/busybox:1";

/// The engine, connected and version-negotiated, with the test image present. `None` (after
/// printing why) when there is no engine, except under `DOCKMESH_REQUIRE_SERVICES=1`, where a
/// missing engine fails the test.
pub async fn engine() -> Option<Docker> {
    let required = std::env::var("DOCKMESH_REQUIRE_SERVICES").as_deref() == Ok("1");
    let connected = match Docker::connect_with_defaults() {
        Ok(d) => match d.negotiate_version().await {
            Ok(d) => d.ping().await.map(|_| d),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match connected {
        Ok(d) => {
            ensure_test_image();
            Some(d)
        }
        Err(e) if required => {
            panic!("DOCKMESH_REQUIRE_SERVICES=1 but the Docker engine is not reachable: {e}")
        }
        Err(e) => {
            eprintln!("skipping: no Docker engine is reachable ({e})");
            None
        }
    }
}

/// Build the test image with the shared script when it is missing.
pub fn ensure_test_image() {
    if docker(&["image", "inspect", IMAGE]).status.success() {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/build-test-image.sh"
    );
    let status = Command::new("bash")
        .arg(script)
        .status()
        .expect("run scripts/build-test-image.sh");
    assert!(status.success(), "building the test image {IMAGE} failed");
}

/// Run the docker CLI; it must succeed. Its output, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Run the docker CLI.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the docker CLI")
}

/// Run `script` with `sh` in a throwaway busybox container with `mounts` (volume, path).
/// Panics with the script's output when it fails.
pub fn sh(mounts: &[(&str, &str)], script: &str) -> Vec<u8> {
    let mut args = vec!["run", "--rm", "--network", "none"];
    let specs: Vec<String> = mounts.iter().map(|(v, p)| format!("{v}:{p}")).collect();
    for s in &specs {
        args.extend(["-v", s.as_str()]);
    }
    args.extend([IMAGE, "sh", "-c", script]);
    let out = docker(&args);
    assert!(
        out.status.success(),
        "script failed: {script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A name no other test run uses.
pub fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "dockmesh-voltest-{what}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a volume exists.
pub fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).status.success()
}

/// Ids of the carrier containers that mount `volume`.
pub fn carriers_of(volume: &str) -> Vec<String> {
    let filter = format!("label=dockmesh.volume-carrier={volume}");
    let out = docker(&["ps", "-aq", "--filter", &filter]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes volumes (and containers) when dropped, whatever the test did.
#[derive(Default)]
pub struct Cleanup {
    volumes: Vec<String>,
    containers: Vec<String>,
}

impl Cleanup {
    /// A volume name to remove at the end.
    pub fn volume(&mut self, name: &str) -> String {
        self.volumes.push(name.to_owned());
        name.to_owned()
    }
    /// A container to remove at the end.
    pub fn container(&mut self, id: &str) {
        self.containers.push(id.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            docker(&["rm", "-f", c]);
        }
        for v in &self.volumes {
            for c in carriers_of(v) {
                docker(&["rm", "-f", &c]);
            }
            docker(&["volume", "rm", "-f", v]);
        }
    }
}

/// A byte stream of `data` in chunks of `chunk` bytes.
pub fn byte_stream(data: Vec<u8>, chunk: usize) -> ByteStream {
    let data = Bytes::from(data);
    let pieces: Vec<Result<Bytes, RuntimeError>> = (0..data.len())
        .step_by(chunk)
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    futures_util::stream::iter(pieces).boxed()
}

// --- hand-made tar ----------------------------------------------------------------------------

/// A ustar header with name and link written byte for byte, without any validation.
pub fn raw_header(name: &[u8], typ: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h.as_mut_bytes()[156] = typ;
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// One PAX record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    [format!("{len} {key}=").as_bytes(), value, b"\n".as_slice()].concat()
}

/// A PAX extension header carrying `records`.
pub fn pax_header(records: &[u8]) -> Vec<u8> {
    let mut out = raw_header(b"PaxHeaders/x", b'x', records.len() as u64, b"");
    out.extend_from_slice(records);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// A regular file entry with content and padding.
pub fn tar_file(name: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = raw_header(name, b'0', content.len() as u64, b"");
    out.extend_from_slice(content);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// A directory entry.
pub fn tar_dir(name: &[u8]) -> Vec<u8> {
    raw_header(name, b'5', 0, b"")
}

/// The end-of-archive marker.
pub fn tar_end() -> Vec<u8> {
    vec![0; 1024]
}
