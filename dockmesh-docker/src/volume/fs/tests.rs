use super::super::Limits;
use super::super::policy::{Checked, CheckedKind, Layout};
use super::super::reader::Mtime;
use super::import::{TreeWriter, system_time};
use super::readback::{self, Hashed};
use super::*;
use crate::volume::TarTransform;
use dockmesh_core::manifest::{EntryKind, VolumeManifest};
use futures_util::stream::{self, StreamExt};
use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::time::{Duration, UNIX_EPOCH};

fn root_user() -> bool {
    rustix::process::geteuid().is_root()
}

/// What a transfer between two directories does on the fast path: read `src` through the
/// export's transform, write the checked stream into `dst`, read `dst` back. The manifest
/// of the read-back is the same whether it takes the hashes read while writing, reads every
/// file again, or reads `dst` as a stream through the transform.
async fn transfer(src: &Path, dst: &Path) -> (VolumeManifest, VolumeManifest) {
    let (exported, imported, _) = transfer_counted(src, dst).await;
    (exported, imported)
}

/// Export `src` and write the checked stream into `dst`: the export's manifest and what
/// the writing did.
async fn export_and_write(src: &Path, dst: &Path) -> (VolumeManifest, Written) {
    let mut export = TarTransform::new(Layout::Carrier, Some(Layout::Transfer), Limits::default())
        .with_manifest();
    let mut import = TarTransform::new(Layout::Transfer, Some(Layout::Carrier), Limits::default());
    let mut checked = Vec::new();
    let mut body = read_tree(src.to_path_buf(), "src");
    while let Some(chunk) = body.next().await {
        export.push(chunk.expect("read")).expect("export checks");
        while let Some(b) = export.pop() {
            import.push(b).expect("import checks");
            while let Some(b) = import.pop() {
                checked.push(Ok(b));
            }
        }
    }
    let exported = export.finish().expect("export ends").unwrap();
    while let Some(b) = export.pop() {
        import.push(b).unwrap();
    }
    import.finish().unwrap();
    while let Some(b) = import.pop() {
        checked.push(Ok(b));
    }
    let written = write_tree(dst.to_path_buf(), stream::iter(checked))
        .await
        .expect("write");
    (exported, written)
}

async fn transfer_counted(
    src: &Path,
    dst: &Path,
) -> (VolumeManifest, VolumeManifest, ReadBackCounts) {
    let (exported, written) = export_and_write(src, dst).await;
    let mut back = TarTransform::new(Layout::Carrier, None, Limits::default()).with_manifest();
    let mut body = read_tree(dst.to_path_buf(), "dst");
    while let Some(chunk) = body.next().await {
        back.push(chunk.expect("read back"))
            .expect("read back checks");
    }
    let streamed = back.finish().unwrap().unwrap();
    let (all_again, counts) = readback::tree_manifest(dst, &Hashed::default()).unwrap();
    assert_eq!(counts.during_import, 0);
    assert_eq!(all_again, streamed);
    let (imported, counts) = read_manifest(dst.to_path_buf(), "dst", written)
        .await
        .unwrap();
    assert_eq!(imported, streamed);
    (exported, imported, counts)
}

fn set_mtime(path: &Path, secs: i64, nanos: u32) {
    let ts = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: i64::from(nanos),
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_moves_exactly_with_holes_times_attributes_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("a.txt"), b"hello").unwrap();
    // Larger than one chunk of the walk, and not a multiple of a block.
    let big: Vec<u8> = (0..CHUNK * 2 + 4097).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(src.join("sub/big.bin"), &big).unwrap();
    // A real hole in the middle and at the end.
    let sparse = File::create(src.join("sparse.bin")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    sparse.write_all_at(b"middle", 4 << 20).unwrap();
    drop(sparse);
    // Zeros written out: a hole on the target; a trailing partial block of zeros; zeros
    // that are not block aligned.
    let mut zeros = vec![0u8; 3 * HOLE + 100];
    zeros[HOLE + 10] = 1;
    fs::write(src.join("zeros.bin"), &zeros).unwrap();
    let unaligned: Vec<u8> = [b"x".as_slice(), &[0u8; 2 * HOLE]].concat();
    fs::write(src.join("unaligned.bin"), &unaligned).unwrap();
    fs::write(src.join("empty.bin"), b"").unwrap();
    fs::hard_link(src.join("a.txt"), src.join("sub/again.txt")).unwrap();
    symlink("/etc/passwd", src.join("abs-link")).unwrap();
    symlink("../a.txt", src.join("sub/rel-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        src.join("a.txt"),
        "user.note",
        b"\x00bin\xff",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        src.join("sub"),
        "user.dir",
        b"d",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    // Not carried: another namespace is not read.
    let _ = rustix::fs::setxattr(
        src.join("a.txt"),
        "trusted.secret",
        b"x",
        rustix::fs::XattrFlags::empty(),
    );
    fs::set_permissions(src.join("a.txt"), Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(src.join("sub/deeper"), Permissions::from_mode(0o2750)).unwrap();
    fs::set_permissions(&src, Permissions::from_mode(0o1777)).unwrap();
    if root_user() {
        std::os::unix::fs::lchown(src.join("sub/big.bin"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(src.join("abs-link"), Some(42), Some(43)).unwrap();
    }
    for (p, s, n) in [
        ("a.txt", 1_600_000_000, 1),
        ("sub/deeper", 1_500_000_000, 999_999_999),
        ("abs-link", 1_400_000_000, 500),
        ("pipe", 1_300_000_000, 7),
        ("sub", 1_200_000_000, 123_456_789),
        ("", 1_100_000_000, 42),
    ] {
        set_mtime(&src.join(p), s, n);
    }

    let (exported, imported, counts) = transfer_counted(&src, &dst).await;
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported, imported);
    // Six regular files: five read back while the import went on; `a.txt` too unless the
    // hard link made to it later moved its change time after it was read.
    assert_eq!(counts.during_import + counts.at_the_end, 6, "{counts:?}");
    assert!(counts.during_import >= 5, "{counts:?}");

    let meta = |root: &Path, p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    // Content.
    for p in [
        "a.txt",
        "sub/big.bin",
        "sparse.bin",
        "zeros.bin",
        "unaligned.bin",
        "empty.bin",
    ] {
        assert_eq!(
            fs::read(src.join(p)).unwrap(),
            fs::read(dst.join(p)).unwrap(),
            "{p}"
        );
    }
    // Modes, owners, times to the nanosecond, for every kind.
    for p in [
        "",
        "a.txt",
        "sub",
        "sub/deeper",
        "sub/big.bin",
        "abs-link",
        "pipe",
        "sub/rel-link",
    ] {
        let (a, b) = (meta(&src, p), meta(&dst, p));
        assert_eq!(a.mode(), b.mode(), "{p}: mode and type");
        assert_eq!((a.uid(), a.gid()), (b.uid(), b.gid()), "{p}: owner");
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{p}: mtime"
        );
    }
    assert_eq!(meta(&dst, "").mtime_nsec(), 42);
    assert_eq!(meta(&dst, "sub").mtime_nsec(), 123_456_789);
    assert_eq!(meta(&dst, "a.txt").mode() & 0o7777, 0o4755);
    assert!(meta(&dst, "pipe").file_type().is_fifo());
    assert_eq!(
        fs::read_link(dst.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(meta(&dst, "a.txt").ino(), meta(&dst, "sub/again.txt").ino());
    assert_eq!(meta(&dst, "a.txt").nlink(), 2);
    // Attributes: the user ones, and only those.
    let mut buf = [0u8; 16];
    let n = rustix::fs::getxattr(dst.join("a.txt"), "user.note", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"\x00bin\xff");
    let n = rustix::fs::getxattr(dst.join("sub"), "user.dir", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"d");
    assert!(rustix::fs::getxattr(dst.join("a.txt"), "trusted.secret", &mut buf[..]).is_err());
    let entry = |p: &str| exported.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(entry("a.txt").xattrs.len(), 1);
    assert_eq!(
        entry("sub/again.txt").kind,
        EntryKind::HardLink {
            target: "a.txt".into()
        }
    );
    // Holes: the sparse file's stay holes, written zeros become holes, data does not.
    let blocks = |p: &str| meta(&dst, p).blocks() * 512;
    assert_eq!(meta(&dst, "sparse.bin").len(), 8 << 20);
    assert!(blocks("sparse.bin") <= 64 << 10, "{}", blocks("sparse.bin"));
    assert!(
        blocks("zeros.bin") < 3 * HOLE as u64,
        "{}",
        blocks("zeros.bin")
    );
    assert!(blocks("sub/big.bin") >= big.len() as u64 - HOLE as u64);
    // The order is the engine's: a directory's content right after it.
    let paths: Vec<&str> = exported.entries.iter().map(|e| e.path.as_str()).collect();
    let sub = paths.iter().position(|p| *p == "sub").unwrap();
    assert_eq!(paths[sub + 1], "sub/again.txt");
    assert_eq!(paths[0], ".");
}

#[test]
fn zero_blocks_become_holes_wherever_the_pieces_break() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = TreeWriter::new(dir.path().to_path_buf()).expect("writer");
    let entry = |path: &[u8], kind| Checked {
        path: path.to_vec(),
        kind,
        mode: 0o640,
        uid: u64::from(rustix::process::geteuid().as_raw()),
        gid: u64::from(rustix::process::getegid().as_raw()),
        mtime: Mtime {
            secs: 1_000_000_000,
            nanos: 5,
        },
        xattrs: Vec::new(),
    };
    w.begin(entry(b"", CheckedKind::Dir)).unwrap();
    let mut content = vec![0u8; 4 * HOLE];
    content[..100].fill(b'a');
    content[3 * HOLE + 7] = b'z';
    w.begin(entry(
        b"f",
        CheckedKind::File {
            size: 4 * HOLE as u64,
        },
    ))
    .unwrap();
    // Pieces that end inside blocks, as a network stream cuts them.
    for piece in [&content[..100], &content[100..103], &content[103..]] {
        w.data(piece).unwrap();
    }
    w.end().unwrap();
    let path = dir.path().join("f");
    assert_eq!(fs::read(&path).unwrap(), content);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
    // The first and the last block hold data; the two between are holes.
    assert!(
        meta.blocks() * 512 <= 2 * HOLE as u64,
        "{} bytes allocated",
        meta.blocks() * 512
    );
}

#[test]
fn times_before_and_after_the_epoch_keep_their_nanoseconds() {
    // A PAX time of -1.5 s is secs -2 (the floor) and 0.5 s.
    let before = system_time(Mtime {
        secs: -2,
        nanos: 500_000_000,
    });
    assert_eq!(
        UNIX_EPOCH.duration_since(before).unwrap(),
        Duration::from_millis(1500)
    );
    let after = system_time(Mtime {
        secs: 1_700_000_000,
        nanos: 7,
    });
    assert_eq!(
        after.duration_since(UNIX_EPOCH).unwrap(),
        Duration::new(1_700_000_000, 7)
    );
}

#[test]
fn only_plain_local_volumes_and_empty_directories_qualify() {
    let none = HashMap::new();
    let nfs = HashMap::from([("type".to_owned(), "nfs".to_owned())]);
    assert!(eligible("local", &none, "/var/lib/docker/volumes/v/_data"));
    assert!(!eligible("local", &nfs, "/var/lib/docker/volumes/v/_data"));
    assert!(!eligible(
        "rexray",
        &none,
        "/var/lib/docker/volumes/v/_data"
    ));
    assert!(!eligible("local", &none, ""));
    let dir = tempfile::tempdir().unwrap();
    assert!(is_empty_dir(dir.path()));
    fs::write(dir.path().join("f"), b"").unwrap();
    assert!(!is_empty_dir(dir.path()));
    assert!(!is_empty_dir(&dir.path().join("missing")));
}

/// A temporary directory holding two empty ones, `src` and `dst`.
fn two_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    (dir, src, dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_changed_after_it_was_read_back_is_read_again() {
    let (_dir, src, dst) = two_dirs();
    for name in ["one", "two", "three"] {
        fs::write(src.join(name), name.repeat(1000)).unwrap();
    }
    set_mtime(&src.join("two"), 1_600_000_000, 5);
    let (exported, written) = export_and_write(&src, &dst).await;
    assert_eq!(written.hashed.files.len(), 3);
    assert_eq!(written.background_syncs, 0, "3 KiB written");
    // The same size and modification time, other content: only the change time says so.
    fs::write(dst.join("two"), "owt".repeat(1000)).unwrap();
    set_mtime(&dst.join("two"), 1_600_000_000, 5);
    let (imported, counts) = read_manifest(dst.clone(), "dst", written).await.unwrap();
    assert_eq!(
        counts,
        ReadBackCounts {
            during_import: 2,
            at_the_end: 1
        }
    );
    let difference = exported.first_difference(&imported).expect("differs");
    assert!(difference.contains("two"), "{difference}");
    let entry = |m: &VolumeManifest, p: &str| m.entries.iter().find(|e| e.path == p).cloned();
    assert_eq!(entry(&exported, "one"), entry(&imported, "one"));
    assert_ne!(
        entry(&exported, "two").unwrap().sha256,
        entry(&imported, "two").unwrap().sha256
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_is_synced_while_a_large_import_goes_on() {
    let (_dir, src, dst) = two_dirs();
    let content: Vec<u8> = (0..SYNC_EVERY as usize + HOLE)
        .map(|i| (i % 253) as u8)
        .collect();
    fs::write(src.join("large"), &content).unwrap();
    let (exported, written) = export_and_write(&src, &dst).await;
    assert!(written.background_syncs >= 1, "{written:?}");
    let (imported, counts) = read_manifest(dst.clone(), "dst", written).await.unwrap();
    assert_eq!(exported, imported);
    assert_eq!(counts.during_import, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_skipped_and_a_device_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(src.join("s.sock")).unwrap();
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let (exported, _) = transfer(&src, &dst).await;
    assert!(exported.entries.iter().all(|e| e.path != "s.sock"));
    assert!(!dst.join("s.sock").exists());
    if !root_user() {
        return;
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("zz-null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let mut body = read_tree(src.clone(), "vol");
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        if let Err(e) = chunk {
            failure = Some(e);
        }
    }
    let e = failure.expect("refused");
    assert_eq!(e.kind, RuntimeErrorKind::Integrity);
    assert!(e.message.contains("\"zz-null\""), "{e}");
    assert!(e.message.contains("character device"), "{e}");
    assert!(e.message.contains("volume vol cannot be exported"), "{e}");
    assert!(e.message.contains("Device nodes are not moved"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_cannot_land_fails_and_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    // The target already holds the file: created new, never overwritten or followed.
    let dst = dir.path().join("dst");
    fs::create_dir(&dst).unwrap();
    symlink("/etc/hostname", dst.join("f")).unwrap();
    let mut export = TarTransform::new(Layout::Carrier, Some(Layout::Carrier), Limits::default());
    let mut bytes = Vec::new();
    let mut body = read_tree(src.clone(), "src");
    while let Some(chunk) = body.next().await {
        export.push(chunk.unwrap()).unwrap();
    }
    export.finish().unwrap();
    while let Some(b) = export.pop() {
        bytes.push(Ok(b));
    }
    let err = write_tree(dst.clone(), stream::iter(bytes))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&dst.join("f").display().to_string()),
        "{err}"
    );
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert!(fs::symlink_metadata(dst.join("f")).unwrap().is_symlink());
}
