//! `dockmesh upgrade apply`, run as a user runs it, on a temporary data directory with a SQLite
//! database (no Docker needed). The releases are small shell scripts signed as newer versions:
//! they answer `--version` and `version --json` as that version and hand every other command
//! (`db migrate`, `db status`, `backup`, `restore`) to the real binary, so the database work is
//! real. The installed binary is a copy of the real one, passed with `--binary`. One test
//! applies a real second build (the same code with the next patch version baked in).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_dockmesh");

struct Run {
    /// `None` when the process was killed by a signal.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn dockmesh(args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("DOCKMESH_DATA_DIR")
        .env_remove("DOCKMESH_DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the dockmesh binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// This binary's `version --json`.
fn info() -> Value {
    let run = dockmesh(&["version", "--json"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap()
}

/// This binary's version and the next two minors' `.0` (each hop one minor: the dtr rules
/// allow it, and not the skip).
fn versions() -> (String, String, String) {
    let own = info()["version"].as_str().unwrap().to_owned();
    let v = dockmesh_core::version::Version::parse(&own).unwrap();
    (
        own,
        format!("{}.{}.0", v.major(), v.minor() + 1),
        format!("{}.{}.0", v.major(), v.minor() + 2),
    )
}

/// A data directory with a database, a release key, a releases directory and an installed
/// binary (a copy of the real one).
struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    releases: PathBuf,
    public: PathBuf,
    binary: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let data = root.join("data");
        let run = dockmesh(&["token", "create", "--data-dir", s(&data)]);
        assert_eq!(run.code, Some(0), "token create: {}", run.stderr);
        let (private, public) = (root.join("release.key"), root.join("release.pub"));
        let run = dockmesh(&[
            "release",
            "keygen",
            "--private",
            s(&private),
            "--public",
            s(&public),
        ]);
        assert_eq!(run.code, Some(0), "keygen: {}", run.stderr);
        let releases = root.join("releases");
        std::fs::create_dir_all(&releases).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let binary = root.join("bin").join("dockmesh");
        std::fs::copy(BIN, &binary).unwrap();
        Case {
            _dir: dir,
            root,
            data,
            releases,
            public,
            binary,
        }
    }

    /// A release of `version`: a script answering as that version, running `hook` (shell, `$1
    /// $2` are the command) before handing the command to the real binary; signed.
    fn release(&self, version: &str, hook: &str) -> PathBuf {
        let i = info();
        let script = format!(
            "#!/bin/sh\n# a stand-in for dockmesh {version}\n\
             case \"$1\" in\n\
             --version) echo \"dockmesh {version}\"; exit 0 ;;\n\
             version) echo '{{\"version\":\"{version}\",\"protocol\":{},\"schema\":{}}}'; exit 0 ;;\n\
             esac\n{hook}\nexec \"{BIN}\" \"$@\"\n",
            i["protocol"], i["schema"]
        );
        let path = self.releases.join(format!("dockmesh-{version}"));
        std::fs::write(&path, script).unwrap();
        let run = dockmesh(&[
            "release",
            "sign",
            "--key",
            s(&self.root.join("release.key")),
            "--release-version",
            version,
            s(&path),
        ]);
        assert_eq!(run.code, Some(0), "sign: {}", run.stderr);
        path
    }

    fn apply_with(&self, to: &str, key: &Path, extra: &[&str]) -> Run {
        let mut args = vec![
            "upgrade",
            "apply",
            "--to",
            to,
            "--releases",
            s(&self.releases),
            "--release-key",
            s(key),
            "--binary",
            s(&self.binary),
            "--data-dir",
            s(&self.data),
        ];
        args.extend_from_slice(extra);
        dockmesh(&args)
    }

    fn apply(&self, to: &str, extra: &[&str]) -> Run {
        self.apply_with(to, &self.public, extra)
    }

    fn record(&self) -> Value {
        let text = std::fs::read_to_string(self.data.join("upgrade-run.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn previous(&self, version: &str) -> PathBuf {
        PathBuf::from(format!("{}.previous-{version}", self.binary.display()))
    }

    fn backup(&self, version: &str) -> PathBuf {
        self.data
            .join("backups")
            .join(format!("pre-upgrade-{version}.tar.zst"))
    }

    /// The `server.backup` audit entries (newest first) and the chain's verification.
    fn backups_recorded(
        &self,
    ) -> (
        Vec<dockmesh_core::audit::AuditEntry>,
        dockmesh_core::audit::ChainVerification,
    ) {
        support::backups::backup_entries(&self.data)
    }

    /// The real binary still reads the database.
    fn assert_database_usable(&self) {
        let run = dockmesh(&["db", "status", "--data-dir", s(&self.data)]);
        assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    }

    /// Nothing was changed: the binary is the original, no run record, no backup, no
    /// previous binary.
    fn assert_untouched(&self) {
        assert_eq!(read(&self.binary), read(Path::new(BIN)));
        assert!(!self.data.join("upgrade-run.json").exists());
        assert!(!self.data.join("backups").exists());
        let names: Vec<String> = std::fs::read_dir(self.binary.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["dockmesh"]);
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn stages(record: &Value) -> Vec<String> {
    record["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["stage"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_two_hop_plan_is_applied_keeping_the_previous_binaries_and_the_backups() {
    let case = Case::new();
    let (own, v1, v2) = versions();
    let r1 = case.release(&v1, "");
    let r2 = case.release(&v2, "");
    let run = case.apply(&v2, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    for want in [
        format!("plan: 2 hop(s): {own} → {v1}, {v1} → {v2}"),
        format!("hop {own} → {v1}: backup "),
        format!("hop {own} → {v1}: release "),
        format!("hop {own} → {v1}: swapped "),
        format!("hop {own} → {v1}: migrated: "),
        format!("hop {own} → {v1}: checked: schema up to date"),
        format!("hop {own} → {v1}: done"),
        format!("hop {v1} → {v2}: done"),
        format!("upgraded to {v2}: 2 hop(s)"),
    ] {
        assert!(
            run.stdout.contains(&want),
            "{want:?} not in:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        read(&case.binary),
        read(&r2),
        "the installed binary is the last release"
    );
    assert_eq!(read(&case.previous(&own)), read(Path::new(BIN)));
    assert_eq!(read(&case.previous(&v1)), read(&r1));
    assert!(case.backup(&v1).is_file());
    assert!(case.backup(&v2).is_file());
    let record = case.record();
    assert_eq!(record["result"], "done");
    assert_eq!(record["target"], v2.as_str());
    assert_eq!(stages(&record), ["done", "done"]);
    assert_eq!(record["hops"][1]["from"], v1.as_str());
    assert_eq!(
        record["hops"][0]["backup"].as_str().unwrap(),
        s(&case.backup(&v1))
    );
    assert_eq!(
        record["hops"][1]["previous"].as_str().unwrap(),
        s(&case.previous(&v1))
    );
    case.assert_database_usable();
    // Each hop's bundle is in the audit log, taken by `upgrade apply`; the chain verifies.
    let (entries, verified) = case.backups_recorded();
    let paths: Vec<&str> = entries
        .iter()
        .map(|e| e.event.detail["path"].as_str())
        .collect();
    let canonical = |p: PathBuf| p.canonicalize().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        paths,
        [canonical(case.backup(&v2)), canonical(case.backup(&v1))],
        "newest first"
    );
    for e in &entries {
        assert_eq!(e.event.detail["by"], "dockmesh upgrade apply", "{e:?}");
    }
    assert_eq!(verified.first_broken, None, "{verified:?}");

    // The same command again has nothing to do.
    let run = case.apply(&v2, &["--json"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["result"], "nothing_to_do");
    assert_eq!(read(&case.binary), read(&r2));
}

#[test]
fn an_interrupted_run_resumes_from_its_recorded_stage_and_skips_the_done_hop() {
    let case = Case::new();
    let (own, v1, v2) = versions();
    case.release(&v1, "");
    // The second release's first `db migrate` kills the upgrade (as a power cut would).
    let marker = case.root.join("kill-once");
    std::fs::write(&marker, "").unwrap();
    let hook = format!(
        "if [ \"$1 $2\" = \"db migrate\" ] && [ -e \"{m}\" ]; then rm -f \"{m}\"; \
         kill -KILL $PPID; exit 9; fi",
        m = marker.display()
    );
    let r2 = case.release(&v2, &hook);
    let run = case.apply(&v2, &[]);
    assert_eq!(run.code, None, "killed:\n{}\n{}", run.stdout, run.stderr);
    assert!(!marker.exists());
    let record = case.record();
    assert_eq!(record["result"], "running");
    assert_eq!(stages(&record), ["done", "swapped"]);
    assert_eq!(read(&case.binary), read(&r2));
    let backup_made = std::fs::metadata(case.backup(&v2))
        .unwrap()
        .modified()
        .unwrap();

    // Another target while the run is unfinished is refused, naming the run.
    let run = case.apply(&v1, &[]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "the run to {v2} ({own} → {v1} done, {v1} → {v2} swapped)"
        )) && run.stderr.contains("unfinished"),
        "{}",
        run.stderr
    );
    assert_eq!(stages(&case.record()), ["done", "swapped"]);

    // The same command resumes: the done hop is skipped, the second continues after its swap.
    let run = case.apply(&v2, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("hop {own} → {v1}: already done, skipped")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("hop {v1} → {v2}: resuming after swapped")),
        "{}",
        run.stdout
    );
    for not in ["backup", "swapped", "release"] {
        assert!(
            !run.stdout.contains(&format!("hop {v1} → {v2}: {not}")),
            "{not} again:\n{}",
            run.stdout
        );
        assert!(
            !run.stdout.contains(&format!("hop {own} → {v1}: {not}")),
            "{not} again:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(&format!("hop {v1} → {v2}: migrated")),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::metadata(case.backup(&v2))
            .unwrap()
            .modified()
            .unwrap(),
        backup_made,
        "the backup is not taken again"
    );
    let record = case.record();
    assert_eq!(record["result"], "done");
    assert_eq!(stages(&record), ["done", "done"]);
    assert_eq!(read(&case.binary), read(&r2));
    case.assert_database_usable();
}

#[test]
fn a_tampered_binary_a_wrong_key_or_bad_input_is_refused_before_anything_changes() {
    let case = Case::new();
    let (_own, v1, _v2) = versions();
    let r1 = case.release(&v1, "");

    // A byte changed after signing (the size stays the same).
    let mut bytes = read(&r1);
    let at = bytes.iter().position(|&b| b == b'#').unwrap();
    bytes[at] = b'%';
    std::fs::write(&r1, &bytes).unwrap();
    let run = case.apply(&v1, &[]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("the release {v1} is refused"))
            && run.stderr.contains("SHA-256")
            && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    case.assert_untouched();

    // Signed again, but checked with another key.
    case.release(&v1, "");
    let other = case.root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let run = dockmesh(&[
        "release",
        "keygen",
        "--private",
        s(&other.join("k")),
        "--public",
        s(&other.join("k.pub")),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let run = case.apply_with(&v1, &other.join("k.pub"), &["--json"]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("does not verify"), "{}", run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["result"], "error");
    case.assert_untouched();

    // Bad input: a bad version, a version with no release, an unreadable key.
    for (to, key, says) in [
        ("not-a-version", case.public.clone(), "--to"),
        ("99.0.0", case.public.clone(), "no plan"),
        ("0.0.1", case.public.clone(), "only upgrades"),
        (
            v1.as_str(),
            case.root.join("missing.pub"),
            "cannot read the release key",
        ),
    ] {
        let run = case.apply_with(to, &key, &[]);
        assert_eq!(run.code, Some(2), "{to}: {}\n{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(says), "{to}: {}", run.stderr);
        case.assert_untouched();
    }
    // The releases directory holds the next minor, not the one after: no such release.
    let (_, _, v2) = versions();
    let run = case.apply(&v2, &[]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("no release {v2} for ")),
        "{}",
        run.stderr
    );
    case.assert_untouched();
}

#[test]
fn a_hop_whose_check_fails_puts_the_previous_binary_back_and_restores_the_backup() {
    let case = Case::new();
    let (own, v1, _v2) = versions();
    case.release(
        &v1,
        "if [ \"$1 $2\" = \"db status\" ]; then echo 'broken on purpose' >&2; exit 3; fi",
    );
    let run = case.apply(&v1, &["--json"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["result"], "failed");
    let hop = &out["hops"][0];
    assert_eq!(hop["stage"], "failed");
    let error = hop["error"].as_str().unwrap();
    assert!(
        error.starts_with("check: ") && error.contains("broken on purpose"),
        "{error}"
    );
    let undone: Vec<&str> = hop["undone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        undone[0].starts_with("put the previous binary back"),
        "{undone:?}"
    );
    assert!(undone[1].starts_with("restored the database"), "{undone:?}");
    assert_eq!(
        read(&case.binary),
        read(Path::new(BIN)),
        "the previous binary is back"
    );
    assert!(!case.previous(&own).exists(), "renamed back");
    assert!(case.backup(&v1).is_file());
    let record = case.record();
    assert_eq!(record["result"], "failed");
    assert_eq!(stages(&record), ["failed"]);
    case.assert_database_usable();

    // Without --json the steps and the undoing are printed as they happen.
    let run = case.apply(&v1, &[]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    for want in [
        format!("hop {own} → {v1}: FAILED after migrated: check: "),
        format!("hop {own} → {v1}: put the previous binary back"),
        format!("hop {own} → {v1}: restored the database"),
        format!("upgrade to {v1} failed at hop {own} → {v1}"),
    ] {
        assert!(
            run.stdout.contains(&want),
            "{want:?} not in:\n{}",
            run.stdout
        );
    }
    assert_eq!(read(&case.binary), read(Path::new(BIN)));

    // With the cause fixed (a good release signed in its place), the same command retries the
    // hop and finishes.
    let fixed = case.release(&v1, "");
    let run = case.apply(&v1, &["--json"]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let out: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(out["result"], "done");
    assert_eq!(out["from"], own.as_str());
    assert_eq!(out["hops"][0]["stage"], "done");
    assert_eq!(out["hops"][0]["error"], Value::Null);
    assert_eq!(read(&case.binary), read(&fixed));
    assert_eq!(read(&case.previous(&own)), read(Path::new(BIN)));
    case.assert_database_usable();
}

#[test]
fn a_server_holding_the_database_is_refused() {
    let case = Case::new();
    let (_own, v1, _v2) = versions();
    case.release(&v1, "");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = dockmesh_sqlx::DbTarget::sqlite_in(&case.data);
    let lock = rt
        .block_on(dockmesh_sqlx::ServerLock::acquire(
            &target,
            "dockmesh server (test)",
        ))
        .unwrap();
    let run = case.apply(&v1, &[]);
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("is in use by dockmesh server (test)")
            && run.stderr.contains("stop the server first"),
        "{}",
        run.stderr
    );
    case.assert_untouched();
    rt.block_on(lock.release());

    let run = case.apply(&v1, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

/// Two real builds: this binary installed, and the same code built as the next patch release
/// (`DOCKMESH_BUILD_VERSION`), signed as an operator signs it (the version asked of the binary
/// itself). Preflight with the new binary passes; apply installs it, keeps the previous one,
/// and the new build answers as its version and reads the database.
#[test]
fn a_real_second_build_is_preflighted_applied_and_answers_as_the_new_version() {
    use support::build::{NEW, new_build, version_of};
    let case = Case::new();
    let (own, _, _) = versions();
    let release = case.releases.join(format!("dockmesh-{NEW}"));
    std::fs::copy(new_build(), &release).unwrap();
    let run = dockmesh(&[
        "release",
        "sign",
        "--key",
        s(&case.root.join("release.key")),
        s(&release),
    ]);
    assert_eq!(run.code, Some(0), "sign: {}", run.stderr);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains(&format!("as dockmesh {NEW}")), "{said}");

    let run = dockmesh(&[
        "upgrade",
        "preflight",
        "--to",
        NEW,
        "--binary",
        s(&release),
        "--backup",
        "--data-dir",
        s(&case.data),
        "--json",
    ]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["result"], "pass", "{report}");
    assert_eq!(report["to"], NEW);

    let run = case.apply(NEW, &[]);
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("hop {own} → {NEW}: checked: schema up to date")),
        "{}",
        run.stdout
    );
    assert_eq!(version_of(&case.binary), NEW);
    assert_eq!(read(&case.binary), read(&release));
    assert_eq!(read(&case.previous(&own)), read(Path::new(BIN)));
    assert_eq!(case.record()["result"], "done");
    let out = Command::new(&case.binary)
        .args(["db", "status", "--data-dir", s(&case.data)])
        .env_remove("DOCKMESH_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the new build reads the database: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));
}
