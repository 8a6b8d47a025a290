//! The file-system fast path on the real engine: a volume read and written in its directory
//! gives the same manifest as the engine's archive path (and busybox sees the same tree), mixes
//! with the archive path in either direction, and keeps what the archive path loses: holes of
//! sparse files, nanosecond modification times and `user.*` extended attributes. A device
//! node is refused by name as on the archive path.
//!
//! Needs root (the fast path's condition); skips, printing why, without an engine or as
//! another user, except that `DOCKMESH_REQUIRE_SERVICES=1` makes a missing engine a failure.

mod support_volume;

use bollard::Docker;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{RuntimeErrorKind, VolumeTarget, no_progress};
use dockmesh_docker::volume::{self, VolumeAccess};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::fs::{File, FileTimes};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};
use support_volume::*;

async fn fast_engine() -> Option<Docker> {
    let docker = engine().await?;
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: the file-system fast path needs root");
        return None;
    }
    Some(docker)
}

async fn mountpoint(docker: &Docker, volume: &str) -> PathBuf {
    PathBuf::from(docker.inspect_volume(volume).await.unwrap().mountpoint)
}

fn target(name: &str) -> VolumeTarget {
    VolumeTarget {
        name: name.to_owned(),
        labels: BTreeMap::from([("test".to_owned(), "fast-path".to_owned())]),
        expected_bytes: None,
    }
}

/// Export `src` and import it into `dst`, each way as asked; both manifests.
async fn transfer(
    docker: &Docker,
    src: &str,
    dst: &str,
    export: VolumeAccess,
    import: VolumeAccess,
) -> (VolumeManifest, VolumeManifest) {
    let exported = volume::export_volume_with(docker, src, export)
        .await
        .expect("export");
    let imported =
        volume::import_volume_with(docker, &target(dst), exported.stream, no_progress(), import)
            .await
            .expect("import");
    let manifest = exported.manifest.take().expect("export manifest");
    (manifest, imported)
}

/// The manifest without the `user.*` attributes, which the archive path does not read.
fn without_user_xattrs(m: &VolumeManifest) -> VolumeManifest {
    let mut m = m.clone();
    for e in &mut m.entries {
        e.xattrs.retain(|k, _| !k.starts_with("user."));
    }
    m
}

fn set_mtime(path: &std::path::Path, secs: u64, nanos: u32) {
    let t = UNIX_EPOCH + Duration::new(secs, nanos);
    File::open(path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(t))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_moves_the_same_tree_and_keeps_holes_nanoseconds_and_xattrs() {
    let Some(docker) = fast_engine().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let src = cleanup.volume(&unique("fsrc"));
    docker_ok(&["volume", "create", &src]);
    sh(&[(&src, "/v")], FILL);
    // What only the file system can carry, set from outside: an attribute, times to the
    // nanosecond on a file and a directory, and a socket (skipped by both paths).
    let root = mountpoint(&docker, &src).await;
    let file = root.join("dir with space/file one.txt");
    rustix::fs::setxattr(
        &file,
        "user.origin",
        b"dockmesh\0bytes",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    set_mtime(&root.join("big.bin"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("deep"), 1_500_000_000, 987_654_321);
    let socket = std::os::unix::net::UnixListener::bind(root.join("app.sock")).unwrap();

    // The reference: the archive path's export of the same volume.
    let reference = {
        let export = volume::export_volume(&docker, &src).await.unwrap();
        let mut s = export.stream;
        while let Some(chunk) = s.next().await {
            chunk.unwrap();
        }
        export.manifest.take().unwrap()
    };
    assert!(reference.entries.iter().all(|e| e.path != "app.sock"));

    // Fast path both ways.
    let dst = cleanup.volume(&unique("fdst"));
    let (exported, imported) = transfer(
        &docker,
        &src,
        &dst,
        VolumeAccess::FileSystem,
        VolumeAccess::FileSystem,
    )
    .await;
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported, imported);
    // The same checks and manifest as the archive path, plus the attribute it cannot read.
    assert_eq!(
        without_user_xattrs(&exported).first_difference(&reference),
        None
    );
    let entry = exported
        .entries
        .iter()
        .find(|e| e.path == "dir with space/file one.txt")
        .unwrap();
    assert_eq!(
        entry.xattrs.get("user.origin").map(String::as_str),
        Some(hex::encode(b"dockmesh\0bytes").as_str()),
        "the export read the attribute from the file system"
    );

    // Outside dockmesh: busybox sees the same tree (the socket was not carried).
    assert!(!mountpoint(&docker, &dst).await.join("app.sock").exists());
    drop(socket);
    let root_meta = std::fs::metadata(&root).unwrap();
    std::fs::remove_file(root.join("app.sock")).unwrap();
    // Removing it changed the root's mtime; put back the one that was moved.
    set_mtime(
        &root,
        root_meta.mtime() as u64,
        root_meta.mtime_nsec() as u32,
    );
    let before = sh(&[(&src, "/v")], LIST);
    let after = sh(&[(&dst, "/v")], LIST);
    assert_eq!(
        String::from_utf8_lossy(&before),
        String::from_utf8_lossy(&after)
    );

    // What the archive path loses, kept.
    let out = mountpoint(&docker, &dst).await;
    let meta = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap();
    for name in ["big.bin", "deep", "dir with space/file one.txt", "rel-link"] {
        let (a, b) = (meta(&root.join(name)), meta(&out.join(name)));
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{name}: mtime to the nanosecond"
        );
    }
    assert_eq!(meta(&out.join("big.bin")).mtime_nsec(), 123_456_789);
    assert_eq!(meta(&out.join("deep")).mtime_nsec(), 987_654_321);
    let mut value = [0u8; 64];
    let n = rustix::fs::getxattr(
        out.join("dir with space/file one.txt"),
        "user.origin",
        &mut value[..],
    )
    .unwrap();
    assert_eq!(&value[..n], b"dockmesh\0bytes");
    let (sparse_src, sparse_dst) = (
        meta(&root.join("sparse.bin")),
        meta(&out.join("sparse.bin")),
    );
    assert_eq!(sparse_dst.len(), 64 << 20);
    eprintln!(
        "sparse.bin (64 MiB): {} KiB allocated on the source, {} KiB on the target",
        sparse_src.blocks() / 2,
        sparse_dst.blocks() / 2
    );
    assert!(
        sparse_dst.blocks() * 512 <= 64 << 10,
        "the holes stay holes: {} KiB allocated",
        sparse_dst.blocks() / 2
    );
    // The hard link is a hard link.
    assert_eq!(
        meta(&out.join("hardlink")).ino(),
        meta(&out.join("dir with space/file one.txt")).ino()
    );

    // Mixed: archive export into a fast import, and a fast export into an archive import of a
    // volume without the attribute the archive path cannot read back.
    let mixed = cleanup.volume(&unique("fmix"));
    let (exported, imported) = transfer(
        &docker,
        &src,
        &mixed,
        VolumeAccess::Archive,
        VolumeAccess::FileSystem,
    )
    .await;
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported.first_difference(&reference), None);
    rustix::fs::removexattr(&file, "user.origin").unwrap();
    let back = cleanup.volume(&unique("fback"));
    let (exported, imported) = transfer(
        &docker,
        &src,
        &back,
        VolumeAccess::FileSystem,
        VolumeAccess::Archive,
    )
    .await;
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported.first_difference(&reference), None);
    for v in [&src, &dst, &mixed, &back] {
        assert!(carriers_of(v).is_empty(), "{v}: a carrier was left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_node_is_refused_by_name_on_the_fast_path() {
    let Some(docker) = fast_engine().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let src = cleanup.volume(&unique("fdev"));
    docker_ok(&["volume", "create", &src]);
    let root = mountpoint(&docker, &src).await;
    std::fs::create_dir(root.join("dev")).unwrap();
    std::fs::write(root.join("before.txt"), b"kept").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let export = volume::export_volume_with(&docker, &src, VolumeAccess::FileSystem)
        .await
        .unwrap();
    let mut s = export.stream;
    let mut failure = None;
    while let Some(chunk) = s.next().await {
        if let Err(e) = chunk {
            failure = Some(e);
            break;
        }
    }
    let err = failure.expect("the export fails");
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
    assert!(err.message.contains("\"dev/null\""), "{err}");
    assert!(err.message.contains("character device"), "{err}");
    assert!(export.manifest.take().is_err());
    drop(s);
    // The volume was only read.
    assert_eq!(std::fs::read(root.join("before.txt")).unwrap(), b"kept");
    for _ in 0..50 {
        if carriers_of(&src).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(carriers_of(&src).is_empty(), "the carrier was removed");
}
