//! Helpers of the tests that run Debian's `docker-compose` beside dockmesh.

use std::process::Command;

/// `docker-compose`, when it is installed.
pub fn oracle() -> Option<&'static str> {
    let ok = |bin: &str| {
        Command::new(bin)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ok("docker-compose").then_some("docker-compose")
}

/// `docker-compose` for `test`; `None` (after saying why) when it is missing, which fails the
/// test under `DOCKMESH_REQUIRE_SERVICES=1`.
pub fn oracle_for_test(test: &str) -> Option<&'static str> {
    let found = oracle();
    if found.is_none() {
        assert!(
            !dockmesh_docker::testsupport::services_required(),
            "{test}: docker-compose is not installed (apt-get install -y docker-compose), and \
             DOCKMESH_REQUIRE_SERVICES=1 requires it"
        );
        eprintln!("SKIPPED {test}: docker-compose is not installed");
    }
    found
}

/// Run `cmd`, which must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes everything the projects created, whatever the test did.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for project in &self.0 {
            let filter = format!("label=com.docker.compose.project={project}");
            for (list, remove) in [
                (vec!["ps", "-aq"], vec!["rm", "-f"]),
                (vec!["volume", "ls", "-q"], vec!["volume", "rm", "-f"]),
                (vec!["network", "ls", "-q"], vec!["network", "rm"]),
            ] {
                let Ok(out) = Command::new("docker")
                    .args(&list)
                    .args(["--filter", &filter])
                    .output()
                else {
                    continue;
                };
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker").args(&remove).args(&ids).output();
                }
            }
        }
    }
}
