use super::download::{DOWNLOAD_DIR, digest_open};
use super::watchdog::alive;
use super::*;
use dockmesh_core::agent_upgrade::{Record, Stage};
use std::io::Write;

const RUNNING: &str = "1.4.0";

fn swapper(state: &Path) -> Swapper {
    Swapper::new(
        state,
        "http://127.0.0.1:1",
        RUNNING,
        Duration::from_secs(60),
    )
    .unwrap()
}

fn order() -> UpgradeOrder {
    UpgradeOrder {
        version: "1.5.0".into(),
        binary: "/api/v1/agent-binaries/x".into(),
        size: 10,
        sha256: "ab".repeat(32),
        signature: Some("00".repeat(64)),
        allow_downgrade: false,
    }
}

fn reason(report: AgentReport) -> String {
    match report {
        AgentReport::UpgradeFailed { reason } => reason,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_order_is_checked_before_anything_is_downloaded() {
    let dir = tempfile::tempdir().unwrap();
    let swapper = swapper(dir.path());
    type Change = fn(&mut UpgradeOrder);
    let bad: [(Change, &str); 4] = [
        (|o| o.version = "1.2 3".into(), "is not a version"),
        (|o| o.sha256 = "zz".repeat(32), "64 hex digits"),
        (|o| o.size = 0, "between 1 byte"),
        (|o| o.signature = None, "no release signature"),
    ];
    for (change, why) in bad {
        let mut o = order();
        change(&mut o);
        let r = reason(swapper.upgrade(o.clone()).await.unwrap_err());
        assert!(r.contains(why), "{o:?}: {r}");
    }
    // A well-formed order without a pinned key: refused before any request.
    let r = reason(swapper.upgrade(order()).await.unwrap_err());
    assert!(r.contains("no release key pinned"), "{r}");
    assert!(
        !dir.path().join(DOWNLOAD_DIR).exists(),
        "nothing was downloaded"
    );
}

#[tokio::test]
async fn an_order_for_an_older_version_is_refused_after_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = release::keygen().unwrap();
    std::fs::write(dir.path().join(PINNED_KEY), &public).unwrap();
    let key = release::parse_private(&private, "k").unwrap();
    let signed = |version: &str, allow_downgrade| {
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        let mut o = order();
        o.version = version.into();
        o.allow_downgrade = allow_downgrade;
        let statement = release::statement(version, os, arch, o.size, &o.sha256);
        o.signature = Some(hex::encode(
            ed25519_dalek::Signer::sign(&key, &statement).to_bytes(),
        ));
        o
    };
    let swapper = swapper(dir.path());
    let r = reason(swapper.upgrade(signed("1.3.9", false)).await.unwrap_err());
    assert!(r.contains("downgrades are refused"), "{r}");
    assert!(r.contains("older than the running 1.4.0"), "{r}");
    // Allowed by the policy: it goes on to the download (nothing answers at port 1).
    let r = swapper.upgrade(signed("1.3.9", true)).await.unwrap_err();
    assert!(
        matches!(&r, AgentReport::CannotDownload { reason } if reason.contains("cannot reach")),
        "{r:?}"
    );
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

fn record(stage: Stage, target: &str, from: &str) -> UpgradeState {
    Record {
        stage,
        target_version: target.into(),
        from_version: from.into(),
        exe: "/x/dockmesh".into(),
        previous: "/x/dockmesh.previous".into(),
        pid: 1,
        deadline_ms: jiff::Timestamp::now().as_millisecond() + 60_000,
        argv: vec!["dockmesh".into(), "agent".into()],
        reason: Some("it exited".into()),
    }
    .into()
}

fn stage(dir: &Path) -> Stage {
    Record::from(read_state(dir).unwrap()).stage
}

#[test]
fn upgrade_json_says_what_to_report_and_whether_this_binary_is_on_trial() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    assert!(startup(dir, RUNNING).trial.is_none());
    assert!(current_failure(dir, RUNNING).is_none());
    // Put back after an upgrade away from this version: reported.
    write_state(dir, record(Stage::Reverted, "9.9.9", RUNNING)).unwrap();
    assert!(startup(dir, RUNNING).trial.is_none());
    let f = current_failure(dir, RUNNING).unwrap();
    assert_eq!(
        (f.target_version.as_str(), f.reason.as_str()),
        ("9.9.9", "it exited")
    );
    // About another version's upgrade: not this binary's to report.
    write_state(dir, record(Stage::Reverted, "9.9.9", "0.0.0-other")).unwrap();
    assert!(current_failure(dir, RUNNING).is_none());
    // A trial of another version found by this binary: the swap did not complete.
    write_state(dir, record(Stage::Trial, "9.9.9", RUNNING)).unwrap();
    assert!(startup(dir, RUNNING).trial.is_none());
    let f = current_failure(dir, RUNNING).unwrap();
    assert!(f.reason.contains("did not complete"), "{f:?}");
    // This binary on trial: confirmed once, and then nothing is reported.
    write_state(dir, record(Stage::Trial, RUNNING, "0.0.0-old")).unwrap();
    let trial = startup(dir, RUNNING).trial.expect("on trial");
    trial.confirm();
    assert_eq!(stage(dir), Stage::Confirmed);
    assert!(current_failure(dir, RUNNING).is_none());
    assert!(startup(dir, RUNNING).trial.is_none());
    // The record is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(RECORD))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A damaged record is ignored.
    std::fs::write(dir.join(RECORD), b"{").unwrap();
    assert!(startup(dir, RUNNING).trial.is_none());
}

#[test]
fn a_watchdog_with_nothing_on_trial_ends_settled() {
    let dir = tempfile::tempdir().unwrap();
    let mut said = Vec::new();
    assert_eq!(
        watchdog(dir.path(), |m| said.push(m.to_owned())),
        WatchdogEnd::Settled
    );
    write_state(dir.path(), record(Stage::Confirmed, "9.9.9", RUNNING)).unwrap();
    assert_eq!(
        watchdog(dir.path(), |m| said.push(m.to_owned())),
        WatchdogEnd::Settled
    );
    assert!(said.is_empty(), "{said:?}");
}

#[test]
fn a_watchdog_that_cannot_put_the_previous_binary_back_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // On trial, its process long gone, and no previous binary where the record says.
    let mut r = Record::from(record(Stage::Trial, "9.9.9", RUNNING));
    r.pid = u32::MAX - 1;
    r.previous = dir.path().join("missing.previous");
    r.exe = dir.path().join("dockmesh");
    write_state(dir.path(), r.into()).unwrap();
    let mut said = Vec::new();
    assert_eq!(
        watchdog(dir.path(), |m| said.push(m.to_owned())),
        WatchdogEnd::Failed
    );
    assert!(
        said[0].contains("exited before it connected") && said[0].contains("putting 1.4.0 back"),
        "{said:?}"
    );
    assert!(said[1].contains("cannot put"), "{said:?}");
    assert_eq!(stage(dir.path()), Stage::Trial, "nothing was put back");
}

#[test]
fn a_release_key_offered_is_taken_only_when_it_is_the_one_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let swapper = swapper(dir.path());
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
fn the_download_is_made_new_in_a_private_directory_and_never_through_a_link() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let swapper = swapper(&state);
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
