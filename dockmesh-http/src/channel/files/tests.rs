use super::*;
use std::os::unix::fs::MetadataExt;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_write_replaces_the_target_whole_and_leaves_nothing_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.json");
    write_atomic(&path, b"first", FileMode::Shared).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
    write_atomic(&path, b"second, longer", FileMode::Shared).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
    assert_eq!(names(tmp.path()), ["state.json"]);
    let umask_allowed = mode(&path);
    assert_eq!(umask_allowed & 0o600, 0o600, "{umask_allowed:o}");
    assert_eq!(umask_allowed & 0o111, 0, "{umask_allowed:o}");
}

#[test]
fn a_private_write_is_0600_even_over_a_file_others_could_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("agent.key");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic(&path, b"secret", FileMode::Private).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    assert_eq!(names(tmp.path()), ["agent.key"]);
}

#[test]
fn a_write_that_fails_names_the_target_and_keeps_what_was_there() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-dir/state.json");
    let e = write_atomic(&missing, b"x", FileMode::Private).unwrap_err();
    assert!(e.to_string().contains("no-such-dir/state.json"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
    // The target is a non-empty directory: the rename fails; nothing is left behind.
    let dir = tmp.path().join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("inside"), b"kept").unwrap();
    let e = write_atomic(&dir, b"x", FileMode::Shared).unwrap_err();
    assert!(e.to_string().contains("taken"), "{e}");
    assert_eq!(std::fs::read(dir.join("inside")).unwrap(), b"kept");
    assert_eq!(names(tmp.path()), ["taken"]);
}

#[test]
fn a_bare_file_name_is_written_in_the_current_directory() {
    assert_eq!(dir_of(Path::new("state.json")), Path::new("."));
    assert_eq!(dir_of(Path::new("/a/b")), Path::new("/a"));
}

/// `installed` holding `old`, and `new` (elsewhere) holding `new`.
fn binaries(tmp: &Path) -> (PathBuf, PathBuf) {
    let bin = tmp.join("bin");
    let dl = tmp.join("download");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&dl).unwrap();
    let installed = bin.join("dockmesh");
    std::fs::write(&installed, b"old binary").unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let new = dl.join("dockmesh.download");
    std::fs::write(&new, b"new binary").unwrap();
    (installed, new)
}

#[test]
fn a_swap_installs_the_new_binary_and_keeps_the_old_one_as_previous() {
    let tmp = tempfile::tempdir().unwrap();
    let (installed, new) = binaries(tmp.path());
    let previous = tmp.path().join("bin/dockmesh.previous");
    std::fs::write(&previous, b"an older previous").unwrap();
    let old_inode = std::fs::metadata(&installed).unwrap().ino();
    swap_binary(&installed, &new, &previous).unwrap();
    assert_eq!(std::fs::read(&installed).unwrap(), b"new binary");
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(std::fs::read(&previous).unwrap(), b"old binary");
    assert_eq!(mode(&previous), 0o755);
    // The old binary's inode (what a running process executes) is now `previous`.
    assert_eq!(std::fs::metadata(&previous).unwrap().ino(), old_inode);
    assert_ne!(std::fs::metadata(&installed).unwrap().ino(), old_inode);
    assert_eq!(
        names(&tmp.path().join("bin")),
        ["dockmesh", "dockmesh.previous"]
    );
    assert_eq!(
        std::fs::read(&new).unwrap(),
        b"new binary",
        "the source is left"
    );
}

#[test]
fn a_staged_binary_is_checked_where_it_lies_and_removed_when_not_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let (installed, new) = binaries(tmp.path());
    let staged = StagedBinary::beside(&installed, &new).unwrap();
    assert_eq!(staged.path().parent(), installed.parent());
    assert_eq!(std::fs::read(staged.path()).unwrap(), b"new binary");
    assert_eq!(mode(staged.path()), 0o755);
    drop(staged);
    assert_eq!(names(&tmp.path().join("bin")), ["dockmesh"]);
    assert_eq!(std::fs::read(&installed).unwrap(), b"old binary");

    // `previous` cannot be written: the installed binary is unchanged, the copy removed.
    let staged = StagedBinary::beside(&installed, &new).unwrap();
    let nowhere = tmp.path().join("no-such-dir/dockmesh.previous");
    let e = staged.install(&nowhere).unwrap_err();
    assert!(e.to_string().contains("dockmesh.previous"), "{e}");
    assert_eq!(std::fs::read(&installed).unwrap(), b"old binary");
    assert_eq!(names(&tmp.path().join("bin")), ["dockmesh"]);
}

#[test]
fn a_missing_new_binary_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (installed, _) = binaries(tmp.path());
    let previous = tmp.path().join("bin/dockmesh.previous");
    let e = swap_binary(&installed, &tmp.path().join("absent"), &previous).unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    assert_eq!(std::fs::read(&installed).unwrap(), b"old binary");
    assert_eq!(names(&tmp.path().join("bin")), ["dockmesh"]);
}

/// An executable shell script `name` in `dir` running `body`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_probe_reads_the_version_from_the_first_line() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = script(
        tmp.path(),
        "ok",
        r#"[ "$1" = --version ] || exit 9; echo 'dockmesh 1.2.3-rc.1'; echo more"#,
    );
    let other = script(tmp.path(), "other", "echo 'nginx 1.2.3'");
    let fails = script(
        tmp.path(),
        "fails",
        "echo 'dockmesh 1.2.3'; echo boom >&2; exit 3",
    );
    let hangs = script(tmp.path(), "hangs", "sleep 30");

    let v = probe_version(&ok, Duration::from_secs(10)).unwrap();
    assert_eq!(v.line, "dockmesh 1.2.3-rc.1");
    assert_eq!(v.version, Version::parse("1.2.3-rc.1").unwrap());

    let e = probe_version(&other, Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(&e, ProbeError::NotAVersion { line, .. } if line == "nginx 1.2.3"),
        "{e:?}"
    );
    assert!(e.to_string().contains(&other.display().to_string()), "{e}");

    let e = probe_version(&fails, Duration::from_secs(10)).unwrap_err();
    let ProbeError::Exit { status, stderr, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!((status.code(), stderr.as_str()), (Some(3), "boom"));
    assert!(e.to_string().contains("fails --version"), "{e}");

    let started = Instant::now();
    let e = probe_version(&hangs, Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, ProbeError::Timeout { .. }), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "killed at the timeout"
    );
    assert!(e.to_string().contains("hangs --version"), "{e}");

    let e = probe_version(&tmp.path().join("absent"), Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, ProbeError::Run { .. }), "{e:?}");
    assert!(e.to_string().contains("absent"), "{e}");
}
