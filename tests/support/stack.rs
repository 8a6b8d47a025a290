//! Stacks for the end-to-end tests: a Compose file that serves HTTP and is healthy when it
//! answers, volumes seeded with a varied tree, and their description taken outside dockmesh.

use super::{IMAGE, describe_volume, docker, unique};
use std::path::Path;

/// A service that stops at once on SIGTERM, serves HTTP, and is healthy when it answers.
/// `health` overrides the healthcheck command; `ports` adds published ports.
pub fn compose(image: &str, health: &str, ports: &str) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; [ -f /data/owner ] || hostname > /data/owner; mkdir -p /www; echo ok > /www/index.html; httpd -p 8080 -h /www; while true; do sleep 1; done"]
    volumes:
      - db:/data
      - files:/files
{ports}    healthcheck:
      test: ["CMD-SHELL", "{health}"]
      interval: 1s
      timeout: 2s
      retries: 5
volumes:
  db:
  files:
"#
    )
}

pub const HEALTHY: &str = "wget -q -O /dev/null http://127.0.0.1:8080/";
/// Healthy only in the container that first started on the data: a copy elsewhere never is.
pub const HEALTHY_WHERE_BORN: &str = "test \\\"$$(cat /data/owner)\\\" = \\\"$$(hostname)\\\"";

/// Fill the stack's volumes with a varied tree: nested directories, random binary data, an
/// empty file, odd names, modes, owners, a symlink and a hard link.
pub fn seed(host: &str, stack: &str, random_kib: u32) {
    let script = format!(
        "set -e; cd /v1; mkdir -p a/b/c 'with space'; \
         dd if=/dev/urandom of=a/b/c/blob bs=1024 count={random_kib} 2>/dev/null; \
         echo hello > 'with space/greeting.txt'; : > empty; \
         printf 'secret' > a/private; chmod 600 a/private; chown 1000:1000 a/private; \
         ln -s a/b/c/blob link-to-blob; ln a/private a/hardlink; \
         cd /v2; for i in $(seq 1 50); do echo \"line $i\" > f$i.txt; done; chmod 700 /v2"
    );
    docker(
        host,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{stack}_db:/v1"),
            "-v",
            &format!("{stack}_files:/v2"),
            IMAGE,
            "sh",
            "-c",
            &script,
        ],
    )
    .expect("seed volumes");
}

/// Both volumes, described outside dockmesh.
pub fn describe(host: &str, stack: &str) -> (String, String) {
    (
        describe_volume(host, &format!("{stack}_db")),
        describe_volume(host, &format!("{stack}_files")),
    )
}

/// Write `text` as a new Compose file in `dir`; its path.
pub fn write_compose(dir: &Path, text: &str) -> String {
    let path = dir.join(format!("compose-{}.yaml", unique("c")));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}
