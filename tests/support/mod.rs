//! What the end-to-end tests share: the two engines, the docker CLI, volume descriptions
//! computed inside containers (outside dockmesh), unique names, and clean-up.
#![allow(dead_code)]

pub mod agent;
pub mod backups;
pub mod build;
pub mod server;
pub mod stack;

use std::process::Command as Process;

/// The test image every engine holds (`scripts/build-test-image.sh`).
pub const IMAGE: &str = "dockmesh-test/busybox:1";

/// Whether absent services fail the run.
pub fn required() -> bool {
    std::env::var("DOCKMESH_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The two engines' addresses, or `None` (with the reason printed) when they are not there.
pub fn engines() -> Option<(String, String)> {
    let a = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let b = match std::env::var("DOCKMESH_TEST_DOCKER_HOST_B") {
        Ok(b) => b,
        Err(_) => {
            let why = "DOCKMESH_TEST_DOCKER_HOST_B is not set (run scripts/start-second-engine.sh)";
            assert!(!required(), "{why}, and DOCKMESH_REQUIRE_SERVICES=1");
            eprintln!("skipping: {why}");
            return None;
        }
    };
    for e in [&a, &b] {
        let ok = docker(e, &["info", "--format", "{{.ServerVersion}}"]).is_ok();
        if !ok {
            let why = format!("the Docker engine at {e} does not answer");
            assert!(!required(), "{why}, and DOCKMESH_REQUIRE_SERVICES=1");
            eprintln!("skipping: {why}");
            return None;
        }
    }
    Some((a, b))
}

/// Run the docker CLI against one engine; stdout on success.
pub fn docker(host: &str, args: &[&str]) -> Result<String, String> {
    let out = Process::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output()
        .map_err(|e| format!("running docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {args:?} on {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Everything about a volume's tree, computed inside a container by busybox: path, type and
/// mode, owner, size, mtime, link target, content hash.
pub fn describe_volume(host: &str, volume: &str) -> String {
    let script = r#"cd /v && find . | sort | while IFS= read -r f; do
  if [ -L "$f" ]; then echo "$f link $(stat -c '%u:%g %Y' "$f") -> $(readlink "$f")";
  elif [ -f "$f" ]; then echo "$f $(stat -c '%f %u:%g %s %Y %h' "$f") $(sha256sum < "$f" | cut -c1-64)";
  else echo "$f $(stat -c '%f %u:%g %Y' "$f")"; fi; done"#;
    docker(
        host,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{volume}:/v:ro"),
            IMAGE,
            "sh",
            "-c",
            script,
        ],
    )
    .expect("describe volume")
}

/// A stack's leftovers on both engines, removed on drop.
pub struct Stack {
    pub name: String,
    pub a: String,
    pub b: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for host in [&self.a, &self.b] {
            // Carriers a killed server left behind hold the stack's volumes.
            let carriers = docker(
                host,
                &[
                    "ps",
                    "-a",
                    "--filter",
                    "label=dockmesh.volume-carrier",
                    "--format",
                    "{{.ID}} {{.Label \"dockmesh.volume-carrier\"}}",
                ],
            )
            .unwrap_or_default();
            for line in carriers.lines() {
                if let Some((id, volume)) = line.split_once(' ')
                    && volume.starts_with(&format!("{}_", self.name))
                {
                    let _ = docker(host, &["rm", "-f", id]);
                }
            }
            let ids = docker(
                host,
                &[
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=com.docker.compose.project={}", self.name),
                ],
            )
            .unwrap_or_default();
            for id in ids.split_whitespace() {
                let _ = docker(host, &["rm", "-f", id]);
            }
            let vols = docker(
                host,
                &[
                    "volume",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("name={}", self.name),
                ],
            )
            .unwrap_or_default();
            for v in vols.split_whitespace() {
                let _ = docker(host, &["volume", "rm", "-f", v]);
            }
            let nets = docker(
                host,
                &[
                    "network",
                    "ls",
                    "-q",
                    "--filter",
                    &format!("name={}", self.name),
                ],
            )
            .unwrap_or_default();
            for n in nets.split_whitespace() {
                let _ = docker(host, &["network", "rm", n]);
            }
            let _ = docker(host, &["rmi", &format!("dockmesh-test/{}:1", self.name)]);
        }
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// Tag an image on an engine under `tag`, with `/healthy` present or not.
pub fn image_with_health(host: &str, tag: &str, healthy: bool) {
    if healthy {
        let c = unique("mk");
        docker(
            host,
            &[
                "run",
                "--name",
                &c,
                "--network",
                "none",
                IMAGE,
                "touch",
                "/healthy",
            ],
        )
        .unwrap();
        docker(host, &["commit", &c, tag]).unwrap();
        docker(host, &["rm", "-f", &c]).unwrap();
    } else {
        docker(host, &["tag", IMAGE, tag]).unwrap();
    }
}
