//! `dockmesh upgrade check|plan` and `dockmesh version`, run as a user runs them.

use std::io::Write;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn dockmesh(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(args)
        .output()
        .expect("run the dockmesh binary");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn releases_file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

fn json(run: &Run) -> serde_json::Value {
    assert_eq!(
        run.stdout.lines().count(),
        1,
        "one JSON object: {}",
        run.stdout
    );
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[test]
fn version_prints_name_and_version() {
    let run = dockmesh(&["version"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("dockmesh {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_allowed() {
    let run = dockmesh(&["upgrade", "check", "2.3.1", "v2.4"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "allowed: 2.3.1 → 2.4.0 (dtr rules)\n");
}

#[test]
fn check_refused_names_the_rule() {
    let run = dockmesh(&["upgrade", "check", "2.3.1", "2.5.0"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "refused: 2.3.1 → 2.5.0 skips minor 2.4; upgrade to a 2.4.x release first\n"
    );
    let run = dockmesh(&["upgrade", "check", "2.3.1", "2.3.0"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .starts_with("refused: 2.3.1 → 2.3.0 is a downgrade"),
        "{}",
        run.stdout
    );
}

#[test]
fn check_with_k8s_rules() {
    let run = dockmesh(&["upgrade", "check", "1.28.3", "1.29.0", "--rules", "k8s"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "allowed: 1.28.3 → 1.29.0 (k8s rules)\n");
    let run = dockmesh(&["upgrade", "check", "1.33.0", "2.0.0", "--rules", "k8s"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .starts_with("refused: 1.33.0 → 2.0.0 crosses a major version"),
        "{}",
        run.stdout
    );
    // The same upgrade under dtr is allowed.
    assert_eq!(dockmesh(&["upgrade", "check", "1.33.0", "2.0.0"]).code, 0);
}

#[test]
fn check_nothing_to_do() {
    let run = dockmesh(&["upgrade", "check", "1.2.3", "v1.2.3"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "nothing to do: 1.2.3 is already 1.2.3\n");
}

#[test]
fn check_prints_advice_given_releases() {
    let releases = releases_file("1.4.2\n1.5.3\n2.0.0\n");
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "check", "1.4.2", "2.0.0", "--releases", path]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "allowed: 1.4.2 → 2.0.0 (dtr rules)\n\
         advice: 1.4.2 is not the latest release of major 1 (1.5.3 is); upgrading to 1.5.3 \
         before crossing to 2.x is recommended\n"
    );
}

#[test]
fn check_json() {
    let run = dockmesh(&["upgrade", "check", "2.3.1", "2.5.0", "--json"]);
    assert_eq!(run.code, 1);
    let v = json(&run);
    assert_eq!(v["result"], "refused");
    assert_eq!(v["from"], "2.3.1");
    assert_eq!(v["to"], "2.5.0");
    assert_eq!(v["rules"], "dtr");
    assert_eq!(v["rule"], "skips_minor");
    assert_eq!(v["needs"], "a 2.4.x release");
    assert_eq!(
        v["reason"],
        "2.3.1 → 2.5.0 skips minor 2.4; upgrade to a 2.4.x release first"
    );

    let run = dockmesh(&["upgrade", "check", "2.3.1", "2.4.0", "--json"]);
    assert_eq!(run.code, 0);
    let v = json(&run);
    assert_eq!(v["result"], "allowed");
    assert_eq!(v["advice"], serde_json::json!([]));

    let run = dockmesh(&["upgrade", "check", "2.3.1", "2.3.1", "--json"]);
    assert_eq!(run.code, 0);
    assert_eq!(json(&run)["result"], "nothing_to_do");
}

#[test]
fn bad_versions_exit_2_naming_the_input() {
    let run = dockmesh(&["upgrade", "check", "2.3.1", "latest"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr
            .starts_with("error: TO: invalid version \"latest\""),
        "{}",
        run.stderr
    );
    let run = dockmesh(&["upgrade", "check", "x.y", "1.0.0", "--json"]);
    assert_eq!(run.code, 2);
    let v = json(&run);
    assert_eq!(v["result"], "error");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("FROM: invalid version \"x.y\"")
    );
    let run = dockmesh(&["upgrade", "check", "1.0.0", "1.1.0", "--rules", "debian"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("unknown upgrade rules \"debian\""),
        "{}",
        run.stderr
    );
}

#[test]
fn plan_prints_one_hop_per_line() {
    let releases = releases_file(
        "# releases of the product\n2.3.1\n2.4.0\n2.4.3  # latest 2.4\n\n2.5.0\n2.5.1\n2.6.0\n",
    );
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "plan", "2.3.1", "2.6.0", "--releases", path]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "2.3.1 → 2.4.3\n2.4.3 → 2.5.1\n2.5.1 → 2.6.0\n");
}

#[test]
fn plan_from_a_json_array_with_advice() {
    let releases = releases_file(r#"["1.4.2", "1.5.3", "2.0.0", "2.0.1", "2.1.0"]"#);
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "plan", "1.4.2", "2.1.0", "--releases", path]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout, "1.4.2 → 1.5.3\n1.5.3 → 2.0.1\n2.0.1 → 2.1.0\n",
        "by default the recommended path: the latest of major 1 before crossing"
    );
    let run = dockmesh(&[
        "upgrade",
        "plan",
        "1.4.2",
        "2.1.0",
        "--releases",
        path,
        "--shortest",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "1.4.2 → 2.0.1\n2.0.1 → 2.1.0\n\
         advice: 1.4.2 is not the latest release of major 1 (1.5.3 is); upgrading to 1.5.3 \
         before crossing to 2.x is recommended\n"
    );

    let run = dockmesh(&[
        "upgrade",
        "plan",
        "1.4.2",
        "2.1.0",
        "--releases",
        path,
        "--json",
        "--shortest",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = json(&run);
    assert_eq!(v["result"], "planned");
    assert_eq!(
        v["hops"],
        serde_json::json!([
            {"from": "1.4.2", "to": "2.0.1"},
            {"from": "2.0.1", "to": "2.1.0"},
        ])
    );
    assert_eq!(v["advice"][0]["kind"], "not_latest_of_major");
    assert_eq!(v["advice"][0]["latest"], "1.5.3");
}

#[test]
fn plan_none_exits_1_with_the_reason() {
    let releases = releases_file("2.4.0\n2.4.2\n");
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "plan", "2.3.1", "2.6.0", "--releases", path]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "no plan: no upgrade path from 2.3.1 to 2.6.0 through the given releases: it can \
         reach 2.4.2, but a 2.5.x release is missing from the list (2.4.2 → 2.6.0 skips minor \
         2.5; upgrade to a 2.5.x release first)\n"
    );
    let run = dockmesh(&[
        "upgrade",
        "plan",
        "2.3.1",
        "2.6.0",
        "--releases",
        path,
        "--json",
    ]);
    assert_eq!(run.code, 1);
    let v = json(&run);
    assert_eq!(v["result"], "no_plan");
    assert_eq!(v["reached"], "2.4.2");
    assert_eq!(v["missing"], "a 2.5.x release");
    assert_eq!(v["rule"], "skips_minor");

    let run = dockmesh(&[
        "upgrade",
        "plan",
        "1.28.0",
        "2.0.0",
        "--releases",
        path,
        "--rules",
        "k8s",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("these rules define no major upgrade"),
        "{}",
        run.stdout
    );
}

#[test]
fn plan_nothing_to_do() {
    let releases = releases_file("1.0.0\n");
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "plan", "1.0", "1.0.0", "--releases", path]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "nothing to do: 1.0.0 is already 1.0.0\n");
}

#[test]
fn bad_releases_files_exit_2_naming_the_problem() {
    let releases = releases_file("1.0.0\n1.1.0\nnot-a-version\n");
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "plan", "1.0.0", "1.1.0", "--releases", path]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.starts_with(&format!(
            "error: releases file {path}: line 3: invalid version \"not-a-version\""
        )),
        "{}",
        run.stderr
    );

    let releases = releases_file(r#"["1.0.0", 2]"#);
    let path = releases.path().to_str().unwrap();
    let run = dockmesh(&["upgrade", "plan", "1.0.0", "1.1.0", "--releases", path]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("not a JSON array of version strings"),
        "{}",
        run.stderr
    );

    let run = dockmesh(&[
        "upgrade",
        "plan",
        "1.0.0",
        "1.1.0",
        "--releases",
        "/nonexistent/releases.txt",
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("error: cannot read the releases file /nonexistent/releases.txt"),
        "{}",
        run.stderr
    );

    let run = dockmesh(&["upgrade", "plan", "1.0.0", "1.1.0"]);
    assert_eq!(run.code, 2, "--releases is required");
    assert!(run.stderr.contains("--releases"), "{}", run.stderr);
}

#[test]
fn an_agent_that_is_not_enrolled_says_how_to_enroll_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("agent");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dockmesh"))
        .args(["agent", "--state-dir"])
        .arg(&state)
        .env_remove("DOCKMESH_SERVER")
        .env_remove("DOCKMESH_ENROLL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not enrolled yet") && err.contains("--server") && err.contains("--token"),
        "{err}"
    );
    assert!(!state.exists(), "nothing kept");
}

#[test]
fn server_upgrade_apply_names_the_releases_and_key_it_needs() {
    // The upgrade itself is tested in cli_upgrade_apply.rs.
    let run = dockmesh(&["upgrade", "apply", "--to", "2.0.0"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("--releases") && run.stderr.contains("--release-key"),
        "{}",
        run.stderr
    );
}
