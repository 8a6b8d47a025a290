//! The server's data directory and the agent's state directory are private, as the binary
//! makes them: 0700 directories owned by the user dockmesh runs as, 0600 database and keys;
//! and an enrollment token's lifetime is bounded.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn dockmesh(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(args)
        .current_dir(cwd)
        .env_remove("DOCKMESH_DATA_DIR")
        .env_remove("DOCKMESH_DATABASE_URL")
        .env_remove("DOCKMESH_AGENT_STATE_DIR")
        .env_remove("DOCKMESH_SERVER")
        .env_remove("DOCKMESH_TOKEN")
        .env_remove("DOCKMESH_AGENT_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn an_absurd_enrollment_token_lifetime_is_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    for (ttl, says) in [
        ("1000000000h", "longer than the longest allowed"),
        ("31d", "longer than the longest allowed"),
        ("0s", "must be positive"),
        ("-1h", "must be positive"),
    ] {
        let out = dockmesh(
            &[
                "agent",
                "token",
                "create",
                "--data-dir",
                d,
                &format!("--ttl={ttl}"),
            ],
            tmp.path(),
        );
        assert!(!out.status.success(), "--ttl {ttl} was accepted");
        assert!(stderr(&out).contains(says), "--ttl {ttl}: {}", stderr(&out));
        assert!(!data.exists(), "--ttl {ttl}: nothing is made");
    }
    let out = dockmesh(
        &[
            "agent",
            "token",
            "create",
            "--data-dir",
            d,
            "--ttl",
            "30d",
            "--json",
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["expires_at"].is_string(), "{v}");
}

#[test]
fn the_data_dir_database_and_keys_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let out = dockmesh(&["agent", "token", "create", "--data-dir", d], tmp.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&data), 0o700, "the data directory");
    assert_eq!(mode(&data.join("ca")), 0o700, "the CA's directory");
    for f in ["dockmesh.db", "audit.key", "ca/ca.key"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }

    // An existing data directory open to others is tightened, and so is its database.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("dockmesh.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = dockmesh(
        &["token", "create", "--data-dir", d, "--name", "ops"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&data), 0o700, "the data directory is tightened");
    assert_eq!(
        mode(&data.join("dockmesh.db")),
        0o600,
        "the database is tightened"
    );
}

#[test]
fn a_data_dir_or_agent_state_dir_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: only root can give a directory to another user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (args, dir) in [
        (
            vec!["token", "create", "--name", "ops", "--data-dir"],
            "data",
        ),
        (vec!["agent", "--state-dir"], "agent"),
    ] {
        let theirs = tmp.path().join(dir);
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let mut args = args.clone();
        args.push(theirs.to_str().unwrap());
        let out = dockmesh(&args, tmp.path());
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("owned by user 65534"), "{args:?}: {err}");
        assert_eq!(mode(&theirs), 0o755, "{args:?}: left as it was");
        assert_eq!(
            std::fs::read_dir(&theirs).unwrap().count(),
            0,
            "{args:?}: nothing written into it"
        );
    }
}

#[test]
fn an_agent_state_dir_is_made_or_tightened_to_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Not enrolled and no --server: it stops there, after making its existing directory private.
    let out = dockmesh(
        &["agent", "--state-dir", state.to_str().unwrap()],
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not enrolled"), "{}", stderr(&out));
    assert_eq!(mode(&state), 0o700);
    let fresh = tmp.path().join("fresh/state");
    let out = dockmesh(
        &["agent", "--state-dir", fresh.to_str().unwrap()],
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not enrolled"), "{}", stderr(&out));
    assert!(
        !fresh.exists(),
        "an agent that cannot enroll makes no directory"
    );
}
