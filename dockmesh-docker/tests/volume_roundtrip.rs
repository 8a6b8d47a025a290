//! Volume export and import on the real engine: every kind of entry survives a round trip (seen
//! by the manifests *and* by busybox `stat`/`sha256sum`/`ls` outside dockmesh), hostile streams
//! are refused by name and leave the engine as it was, and failures clean up after themselves.
//!
//! Skips (printing why) without an engine, except under `DOCKMESH_REQUIRE_SERVICES=1`.

mod support_volume;

use bollard::Docker;
use dockmesh_core::manifest::EntryKind;
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind, VolumeTarget, no_progress};
use dockmesh_docker::volume::{self, CARRIER_IMAGE, VolumeAccess};
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support_volume::*;

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "com.docker.compose.project".to_owned(),
            "voltest".to_owned(),
        ),
        ("com.docker.compose.volume".to_owned(), "data".to_owned()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_entry_survives_export_and_import() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let src = cleanup.volume(&unique("src"));
    let dst = cleanup.volume(&unique("dst"));
    docker_ok(&["volume", "create", &src]);
    sh(&[(&src, "/v")], FILL);

    let started = std::time::Instant::now();
    let export = volume::export_volume(&docker, &src).await.expect("export");
    let streamed = Arc::new(Mutex::new(0u64));
    let counted = {
        let streamed = streamed.clone();
        export
            .stream
            .inspect(move |c| {
                if let Ok(c) = c {
                    *streamed.lock().unwrap() += c.len() as u64;
                }
            })
            .boxed()
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let progress = {
        let seen = seen.clone();
        Arc::new(move |n| seen.lock().unwrap().push(n))
    };
    let target = VolumeTarget {
        name: dst.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    let imported = volume::import_volume(&docker, &target, counted, progress)
        .await
        .expect("import");
    let exported = export
        .manifest
        .take()
        .expect("the manifest is there once the stream was read");
    eprintln!(
        "round trip of {} content bytes in {:?}",
        exported.content_bytes(),
        started.elapsed()
    );

    // The manifests: equal, and they really hold every kind of entry.
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported, imported);
    let get = |p: &str| {
        exported
            .entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} in the manifest"))
    };
    let root = get(".");
    assert_eq!((root.mode, root.uid, root.gid), (0o750, 999, 998));
    assert_eq!(root.mtime, 315_532_800);
    assert_eq!(get("big.bin").size, 200 << 20);
    assert_eq!(get("big.bin").mode, 0o444);
    assert_eq!(get("sparse.bin").size, 64 << 20);
    assert_eq!(
        (get("sparse.bin").uid, get("sparse.bin").gid),
        (3_000_000, 4_000_000)
    );
    assert_eq!(get("dir with space/file one.txt").mode, 0o4755);
    assert_eq!(get("dir with space/file one.txt").mtime, 981_173_106);
    assert_eq!(get("dir with space/nested").mode, 0o2750);
    assert_eq!(get("empty").mode, 0o1777);
    assert_eq!(get("empty").kind, EntryKind::Dir);
    assert_eq!(
        get("rel-link").kind,
        EntryKind::Symlink {
            target: "dir with space/file one.txt".into()
        }
    );
    assert_eq!(
        (get("rel-link").uid, get("rel-link").mtime),
        (42, 946_684_799)
    );
    assert_eq!(
        get("dangling").kind,
        EntryKind::Symlink {
            target: "does-not-exist".into()
        }
    );
    assert_eq!(
        get("hardlink").kind,
        EntryKind::HardLink {
            target: "dir with space/file one.txt".into()
        }
    );
    assert_eq!(get("ünïcödé/日本語.txt").uid, 1234);
    get("bad%FFname");
    get("new\nline");
    get("100%25 sure");
    get(".wh.not-a-whiteout");
    assert!(exported.entries.iter().any(|e| e.path.len() > 250));

    // Progress: told as the bytes flowed, ending with all of them.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 10, "progress reported as data flowed");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen.last().copied(), Some(*streamed.lock().unwrap()));

    // Outside dockmesh: busybox sees the same tree in both volumes.
    let before = sh(&[(&src, "/v")], LIST);
    let after = sh(&[(&dst, "/v")], LIST);
    let text = String::from_utf8_lossy(&after);
    assert!(text.contains("hard link shares its inode"), "{text}");
    assert!(text.contains("./big.bin|regular file|444|0|0|981173106|1|"));
    assert!(text.contains("./dir with space/file one.txt|regular file|4755|0|0|981173106|2|"));
    assert!(text.contains("./empty|directory|1777|"));
    assert!(text.contains("./sparse.bin|regular file|644|3000000|4000000|"));
    assert!(text.contains(".|directory|750|999|998|315532800|"));
    if before != after {
        let a = String::from_utf8_lossy(&before);
        for (x, y) in a.lines().zip(text.lines()) {
            if x != y {
                panic!("source and target differ:\n  {x}\n  {y}");
            }
        }
        panic!("source and target listings differ in length");
    }

    // The target volume carries the labels it was created with.
    let inspected = docker.inspect_volume(&dst).await.unwrap();
    for (k, v) in labels() {
        assert_eq!(inspected.labels.get(&k), Some(&v));
    }
    // Sparse files: content identical; holes are not kept (measured here, printed).
    let blocks = |vol: &str| {
        String::from_utf8(sh(&[(vol, "/v")], "du -k /v/sparse.bin | cut -f1"))
            .unwrap()
            .trim()
            .to_owned()
    };
    eprintln!(
        "sparse.bin (64 MiB): {} KiB allocated on the source, {} KiB on the target",
        blocks(&src),
        blocks(&dst)
    );
    assert!(carriers_of(&src).is_empty() && carriers_of(&dst).is_empty());
}

/// Import `parts` (plus an end-of-archive marker) into a fresh volume; it must be refused naming
/// `path`, and leave no volume, no carrier and nothing at `escape` on the host.
/// The stream refused on both paths into a volume: the engine's archive endpoint and, where
/// this process may take it (root, local engine), the file-system fast path.
async fn assert_refused(docker: &Docker, what: &str, parts: Vec<Vec<u8>>, path: &str) {
    assert_refused_via(docker, what, parts.clone(), path, VolumeAccess::Archive).await;
    if rustix::process::geteuid().is_root() {
        assert_refused_via(docker, what, parts, path, VolumeAccess::FileSystem).await;
    }
}

async fn assert_refused_via(
    docker: &Docker,
    what: &str,
    parts: Vec<Vec<u8>>,
    path: &str,
    access: VolumeAccess,
) {
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("hostile"));
    let mut data = [tar_dir(b"./"), tar_file(b"ok.bin", &vec![7u8; 3 << 20])].concat();
    data.extend(parts.concat());
    data.extend(tar_end());
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    let err = volume::import_volume_with(
        docker,
        &target,
        byte_stream(data, 64 << 10),
        no_progress(),
        access,
    )
    .await
    .expect_err(what);
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{what}: {err}");
    assert!(
        err.message.contains(&format!("{path:?}")),
        "{what}: the error names {path:?}: {err}"
    );
    assert!(
        err.message
            .contains("nothing was written outside the volume"),
        "{err}"
    );
    assert!(!volume_exists(&name), "{what}: the volume was left behind");
    assert!(carriers_of(&name).is_empty(), "{what}: a carrier was left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_streams_are_refused_by_name_and_leave_nothing_behind() {
    let Some(docker) = engine().await else { return };
    volume::ensure_carrier_image(&docker).await.unwrap();
    let escape = unique("escape");
    let host_tmp = format!("/tmp/{escape}");
    let abs = format!("/tmp/{escape}");
    let dotdot = format!("../../../../../../../../tmp/{escape}");
    let cases: Vec<(&str, Vec<Vec<u8>>, String)> = vec![
        (
            "absolute path",
            vec![tar_file(abs.as_bytes(), b"pwned")],
            abs.clone(),
        ),
        (
            "dot-dot path",
            vec![tar_file(dotdot.as_bytes(), b"pwned")],
            dotdot.clone(),
        ),
        (
            "write through a symlink to an absolute path",
            vec![
                raw_header(b"s", b'2', 0, b"/tmp"),
                tar_file(format!("s/{escape}").as_bytes(), b"pwned"),
            ],
            format!("s/{escape}"),
        ),
        (
            "write through a symlink",
            vec![
                tar_dir(b"d"),
                raw_header(b"s", b'2', 0, b"d"),
                tar_file(b"s/x", b"pwned"),
            ],
            "s/x".into(),
        ),
        (
            "write through a symlink leaving by way of another symlink",
            vec![
                tar_dir(b"d"),
                raw_header(b"d/up", b'2', 0, b".."),
                raw_header(b"d/out", b'2', 0, b"up/../tmp"),
                tar_file(format!("d/out/{escape}").as_bytes(), b"pwned"),
            ],
            format!("d/out/{escape}"),
        ),
        (
            "hard link to a host file",
            vec![raw_header(b"h", b'1', 0, b"/etc/passwd")],
            "h".into(),
        ),
        (
            "hard link out by dot-dot",
            vec![raw_header(b"h", b'1', 0, b"../../../../etc/passwd")],
            "h".into(),
        ),
        (
            "character device",
            vec![raw_header(b"null", b'3', 0, b"")],
            "null".into(),
        ),
        (
            "block device",
            vec![raw_header(b"sda", b'4', 0, b"")],
            "sda".into(),
        ),
        (
            "oversized PAX header",
            vec![
                pax_header(&pax_record("comment", &vec![b'a'; 100_000])),
                tar_file(b"f", b""),
            ],
            "PaxHeaders/x".into(),
        ),
        (
            "absurd size",
            vec![
                pax_header(&pax_record("size", b"9000000000000000000")),
                tar_file(b"huge", b""),
            ],
            "huge".into(),
        ),
        (
            "PAX path trick",
            vec![
                pax_header(&pax_record("path", dotdot.as_bytes())),
                tar_file(b"harmless", b"pwned"),
            ],
            dotdot.clone(),
        ),
    ];
    for (what, parts, path) in cases {
        assert_refused(&docker, what, parts, &path).await;
    }
    assert!(
        !std::path::Path::new(&host_tmp).exists(),
        "something was written on the host"
    );
    let leaked = docker_ok(&["run", "--rm", "--network", "none", IMAGE, "ls", "/tmp"]);
    assert!(!leaked.contains(&escape));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_stream_leaves_no_volume() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("failing"));
    let good = [tar_dir(b"./"), tar_file(b"a", &vec![1u8; 1 << 20])].concat();
    let items: Vec<Result<bytes::Bytes, RuntimeError>> = vec![
        Ok(good.into()),
        Err(RuntimeError::new(
            RuntimeErrorKind::Unreachable,
            "the source host went away",
        )),
    ];
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    let err = volume::import_volume(
        &docker,
        &target,
        futures_util::stream::iter(items).boxed(),
        no_progress(),
    )
    .await
    .expect_err("a failing source fails the import");
    assert_eq!(err.kind, RuntimeErrorKind::Unreachable, "{err}");
    assert!(err.message.contains("the source host went away"), "{err}");
    assert!(!volume_exists(&name));
    assert!(carriers_of(&name).is_empty());

    // A stream that stops early (no end-of-archive marker) is refused the same way.
    let cut = [tar_dir(b"./"), tar_file(b"a", b"x")].concat();
    let err = volume::import_volume(&docker, &target, byte_stream(cut, 100), no_progress())
        .await
        .expect_err("a truncated stream fails the import");
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
    assert!(err.message.contains("end-of-archive"), "{err}");
    assert!(!volume_exists(&name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_volume_is_replaced_unless_a_container_uses_it() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("existing"));
    docker_ok(&["volume", "create", "--label", "old=yes", &name]);
    sh(
        &[(&name, "/v")],
        "echo stale > /v/stale && echo keep > /v/keep",
    );

    // In use by a (stopped) container: a conflict, and the volume is untouched.
    let user = docker_ok(&[
        "create",
        "--network",
        "none",
        "-v",
        &format!("{name}:/x"),
        IMAGE,
        "true",
    ]);
    cleanup.container(&user);
    let data = [tar_dir(b"./"), tar_file(b"new", b"fresh"), tar_end()].concat();
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    let err = volume::import_volume(
        &docker,
        &target,
        byte_stream(data.clone(), 512),
        no_progress(),
    )
    .await
    .expect_err("a volume in use is not replaced");
    assert_eq!(err.kind, RuntimeErrorKind::Conflict, "{err}");
    let listing = String::from_utf8(sh(&[(&name, "/v")], "ls /v")).unwrap();
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["keep", "stale"]
    );

    // Once nothing uses it, it is replaced: only the imported content, with the new labels.
    docker_ok(&["rm", &user]);
    let m = volume::import_volume(&docker, &target, byte_stream(data, 512), no_progress())
        .await
        .expect("import over an existing volume");
    let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, [".", "new"]);
    let listing = String::from_utf8(sh(&[(&name, "/v")], "ls /v; cat /v/new")).unwrap();
    assert_eq!(
        listing.split_whitespace().collect::<Vec<_>>(),
        ["new", "fresh"]
    );
    let labels_now = docker.inspect_volume(&name).await.unwrap().labels;
    assert_eq!(labels_now.get("old"), None);
    assert_eq!(
        labels_now
            .get("com.docker.compose.project")
            .map(String::as_str),
        Some("voltest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_refuse_what_cannot_be_moved_and_clean_up() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();

    // A missing volume is not found, and not created as a side effect.
    let missing = cleanup.volume(&unique("missing"));
    let err = match volume::export_volume(&docker, &missing).await {
        Ok(_) => panic!("exporting a missing volume succeeded"),
        Err(e) => e,
    };
    assert_eq!(err.kind, RuntimeErrorKind::NotFound, "{err}");
    assert!(!volume_exists(&missing));

    // A device node in the volume: the stream fails naming it, the manifest slot holds the
    // error, and the carrier goes away even though the engine still had 50 MB to send after it.
    let fifo = cleanup.volume(&unique("device"));
    docker_ok(&["volume", "create", &fifo]);
    sh(
        &[(&fifo, "/v")],
        "mknod /v/0-null c 1 3 && head -c 50000000 /dev/urandom > /v/big",
    );
    let export = volume::export_volume(&docker, &fifo)
        .await
        .expect("export starts");
    let items: Vec<_> =
        tokio::time::timeout(std::time::Duration::from_secs(120), export.stream.collect())
            .await
            .expect("a refused export ends promptly");
    let err = items
        .into_iter()
        .find_map(Result::err)
        .expect("the stream fails");
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
    assert!(err.message.contains("\"0-null\""), "{err}");
    assert!(err.message.contains("character device"), "{err}");
    assert!(export.manifest.take().is_err());
    assert!(carriers_of(&fifo).is_empty());

    // An export dropped half way: its carrier goes away and the manifest is not available.
    let big = cleanup.volume(&unique("dropped"));
    docker_ok(&["volume", "create", &big]);
    sh(&[(&big, "/v")], "head -c 20000000 /dev/urandom > /v/r");
    let mut export = volume::export_volume(&docker, &big)
        .await
        .expect("export starts");
    export
        .stream
        .next()
        .await
        .expect("a first chunk")
        .expect("ok");
    assert_eq!(carriers_of(&big).len(), 1);
    drop(export.stream);
    assert!(export.manifest.take().is_err());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !carriers_of(&big).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the carrier was not removed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Removing: a missing volume is fine, an existing one goes away.
    volume::remove_volume(&docker, &missing)
        .await
        .expect("missing is fine");
    volume::remove_volume(&docker, &big).await.expect("remove");
    assert!(!volume_exists(&big));

    // The carrier image is ours, local and empty.
    let image = docker.inspect_image(CARRIER_IMAGE).await.unwrap();
    assert!(image.size.unwrap_or(0) < 4096, "{:?}", image.size);
}

/// An export dropped while its runtime shuts down (a cancelled transfer) still removes its
/// carrier.
#[test]
fn a_dropped_export_removes_its_carrier_even_when_its_runtime_ends() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(docker) = runtime.block_on(engine()) else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("rtdrop"));
    docker_ok(&["volume", "create", &name]);
    sh(&[(&name, "/v")], "head -c 20000000 /dev/urandom > /v/r");
    let export = runtime.block_on(async {
        let mut export = volume::export_volume(&docker, &name).await.expect("export");
        export.stream.next().await.expect("a chunk").expect("ok");
        export
    });
    assert_eq!(carriers_of(&name).len(), 1);
    drop(runtime);
    drop(export);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !carriers_of(&name).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the carrier was not removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A venv-like tree with an absolute interpreter link, links out of the volume (absolute and
/// relative), a dangling link and a FIFO, as applications leave them.
const FILL_WILD: &str = r#"
set -e
cd /v
mkdir -p venv/bin venv/lib/python3.12/site-packages/pkg spool
ln -s /usr/bin/python3 venv/bin/python
ln -s python venv/bin/python3
echo 'print(1)' > venv/lib/python3.12/site-packages/pkg/__init__.py
ln -s /var/log/app log
ln -s ../../etc/passwd outside
mkfifo spool/mail.fifo
chmod 0620 spool/mail.fifo
chown 8:12 spool/mail.fifo
touch -h -d "2005-06-07 08:09:10" log spool/mail.fifo
"#;

/// Links and FIFOs as busybox sees them: type, mode, owner, mtime and target, sorted.
const LIST_WILD: &str = r#"
set -e
cd /v
find . -print0 | sort -z | xargs -0 stat -c '%n|%F|%a|%u|%g|%Y|%N'
for l in venv/bin/python venv/bin/python3 log outside; do echo "$l -> $(readlink $l)"; done
ls -lAnR --full-time . | grep -v "^total"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_point_anywhere_and_fifos_survive_verbatim() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let src = cleanup.volume(&unique("wild-src"));
    let dst = cleanup.volume(&unique("wild-dst"));
    docker_ok(&["volume", "create", &src]);
    sh(&[(&src, "/v")], FILL_WILD);

    let export = volume::export_volume(&docker, &src).await.expect("export");
    let target = VolumeTarget {
        name: dst.clone(),
        labels: labels(),
        expected_bytes: Some(4096),
    };
    let imported = volume::import_volume(&docker, &target, export.stream, no_progress())
        .await
        .expect("import of links and a FIFO");
    let exported = export.manifest.take().expect("manifest");
    assert_eq!(exported.first_difference(&imported), None);
    assert_eq!(exported, imported);
    let get = |p: &str| {
        exported
            .entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} in the manifest"))
    };
    assert_eq!(
        get("venv/bin/python").kind,
        EntryKind::Symlink {
            target: "/usr/bin/python3".into()
        }
    );
    let fifo = get("spool/mail.fifo");
    assert_eq!(fifo.kind, EntryKind::Fifo);
    assert_eq!((fifo.mode, fifo.uid, fifo.gid), (0o620, 8, 12));
    assert_eq!(
        imported.outside_links(),
        vec![
            ("log".to_owned(), "/var/log/app".to_owned()),
            ("outside".to_owned(), "../../etc/passwd".to_owned()),
            ("venv/bin/python".to_owned(), "/usr/bin/python3".to_owned()),
        ]
    );

    // Outside dockmesh's code: busybox sees the same tree in both volumes.
    let before = String::from_utf8(sh(&[(&src, "/v")], LIST_WILD)).unwrap();
    let after = String::from_utf8(sh(&[(&dst, "/v")], LIST_WILD)).unwrap();
    assert_eq!(before, after);
    assert!(
        after.contains("venv/bin/python -> /usr/bin/python3"),
        "{after}"
    );
    assert!(after.contains("log -> /var/log/app"), "{after}");
    assert!(after.contains("outside -> ../../etc/passwd"), "{after}");
    assert!(
        after.contains("./spool/mail.fifo|fifo|620|8|12|"),
        "{after}"
    );
    // Never followed: nothing was written where the links point.
    let host_side = String::from_utf8(sh(
        &[(&dst, "/v")],
        "test ! -e /var/log/app && echo not-created",
    ))
    .unwrap();
    assert_eq!(host_side.trim(), "not-created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_larger_than_announced_is_refused_before_it_fills_the_disk() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("oversized"));
    // The source announced 1 MB; the stream claims an 80 MiB file (over 1 MB + the 64 MiB
    // margin) and would go on sending it.
    let announced = 1_000_000u64;
    let claimed = 80u64 << 20;
    let head = [
        tar_dir(b"./"),
        tar_file(b"small", &vec![7u8; 1000]),
        raw_header(b"huge", b'0', claimed, b""),
    ]
    .concat();
    let pulled = Arc::new(Mutex::new(0u64));
    let data = {
        let pulled = pulled.clone();
        let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
        futures_util::stream::iter(
            std::iter::once(bytes::Bytes::from(head))
                .chain(std::iter::repeat_n(chunk, (claimed >> 20) as usize)),
        )
        .map(move |c| {
            *pulled.lock().unwrap() += c.len() as u64;
            Ok::<_, RuntimeError>(c)
        })
        .boxed()
    };
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: Some(announced),
    };
    let err = volume::import_volume(&docker, &target, data, no_progress())
        .await
        .expect_err("more than announced is refused");
    assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
    assert!(err.message.contains("\"huge\""), "{err}");
    let limit = announced + volume::import_margin(announced);
    assert!(err.message.contains(&limit.to_string()), "{err}");
    assert!(
        *pulled.lock().unwrap() < 4 << 20,
        "the stream was read on after the refusal"
    );
    assert!(!volume_exists(&name));
    assert!(carriers_of(&name).is_empty());

    // Within the margin it goes through.
    let data = [
        tar_dir(b"./"),
        tar_file(b"small", &vec![7u8; 3000]),
        tar_end(),
    ]
    .concat();
    let target = VolumeTarget {
        expected_bytes: Some(1000),
        ..target
    };
    volume::import_volume(&docker, &target, byte_stream(data, 700), no_progress())
        .await
        .expect("within the margin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_is_bounded_by_the_targets_disk_whatever_the_source_announced() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("endless"));
    // A file claimed at 15 TiB (under the 16 TiB a file may be, over what any disk here
    // holds) whose zeros would go on and on: announced by nobody, or absurdly by the source.
    let claimed = 15u64 << 40;
    for announced in [None, Some(u64::MAX / 4)] {
        let head = [
            tar_dir(b"./"),
            tar_file(b"small", &vec![7u8; 1000]),
            raw_header(b"huge", b'0', claimed, b""),
        ]
        .concat();
        let pulled = Arc::new(Mutex::new(0u64));
        let data = {
            let pulled = pulled.clone();
            let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
            // Bounded only so that a test that fails ends.
            futures_util::stream::iter(
                std::iter::once(bytes::Bytes::from(head)).chain(std::iter::repeat_n(chunk, 256)),
            )
            .map(move |c| {
                *pulled.lock().unwrap() += c.len() as u64;
                Ok::<_, RuntimeError>(c)
            })
            .boxed()
        };
        let target = VolumeTarget {
            name: name.clone(),
            labels: labels(),
            expected_bytes: announced,
        };
        let err = volume::import_volume(&docker, &target, data, no_progress())
            .await
            .expect_err("more than the disk holds is refused");
        assert_eq!(err.kind, RuntimeErrorKind::Integrity, "{err}");
        assert!(err.message.contains("\"huge\""), "{err}");
        assert!(err.message.contains("has free"), "{err}");
        assert!(
            err.message
                .contains(&format!("reserve of {} bytes", volume::IMPORT_DISK_RESERVE)),
            "{err}"
        );
        assert!(
            *pulled.lock().unwrap() < 4 << 20,
            "{announced:?}: the stream was read on after the refusal"
        );
        assert!(!volume_exists(&name), "{announced:?}: nothing is imported");
        assert!(carriers_of(&name).is_empty());
    }
    // Nothing but zeros (what an endless zstd stream of zeros decodes to): an empty archive
    // and then padding past the limit, refused without reading on.
    let pulled = Arc::new(Mutex::new(0u64));
    let zeros = {
        let pulled = pulled.clone();
        let chunk = bytes::Bytes::from(vec![0u8; 1 << 20]);
        futures_util::stream::iter(std::iter::repeat_n(chunk, 256))
            .map(move |c| {
                *pulled.lock().unwrap() += c.len() as u64;
                Ok::<_, RuntimeError>(c)
            })
            .boxed()
    };
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    let err = volume::import_volume(&docker, &target, zeros, no_progress())
        .await
        .expect_err("endless zeros are refused");
    assert!(
        err.message
            .contains("padding after the end-of-archive marker"),
        "{err}"
    );
    assert!(
        *pulled.lock().unwrap() < 4 << 20,
        "read on after the refusal"
    );
    assert!(!volume_exists(&name), "nothing is imported");
    // A normal import is unaffected.
    let data = [
        tar_dir(b"./"),
        tar_file(b"small", &vec![7u8; 3000]),
        tar_end(),
    ]
    .concat();
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    volume::import_volume(&docker, &target, byte_stream(data, 700), no_progress())
        .await
        .expect("a normal import");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_import_leaves_another_transfers_carrier_alone() {
    let Some(docker) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let name = cleanup.volume(&unique("shared"));
    // Import A: its stream stops half way until released, so its carrier is alive meanwhile.
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let first = [tar_dir(b"./"), tar_file(b"a", b"from A")].concat();
    let rest = [tar_file(b"b", b"also A"), tar_end()].concat();
    let data_a = futures_util::stream::iter([Ok::<_, RuntimeError>(bytes::Bytes::from(first))])
        .chain(futures_util::stream::once(async move {
            let _ = held.await;
            Ok(bytes::Bytes::from(rest))
        }))
        .boxed();
    let target = VolumeTarget {
        name: name.clone(),
        labels: labels(),
        expected_bytes: None,
    };
    let a = {
        let (docker, target) = (docker.clone(), target.clone());
        tokio::spawn(
            async move { volume::import_volume(&docker, &target, data_a, no_progress()).await },
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let carrier_a = loop {
        if let [id] = carriers_of(&name).as_slice() {
            break id.clone();
        }
        assert!(std::time::Instant::now() < deadline, "A never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Import B into the same name is refused (A holds the volume's import carrier) and touches
    // nothing of A.
    let data_b = [tar_dir(b"./"), tar_file(b"x", b"from B"), tar_end()].concat();
    let err = volume::import_volume(&docker, &target, byte_stream(data_b, 512), no_progress())
        .await
        .expect_err("B cannot replace a volume A is writing");
    assert_eq!(err.kind, RuntimeErrorKind::Conflict, "{err}");
    assert_eq!(carriers_of(&name), vec![carrier_a]);
    // Removing the volume (what a failed import does) spares A's carrier too.
    let err = volume::remove_volume(&docker, &name)
        .await
        .expect_err("in use by A");
    assert_eq!(err.kind, RuntimeErrorKind::Conflict, "{err}");
    assert_eq!(carriers_of(&name).len(), 1);

    release.send(()).unwrap();
    let manifest = a.await.unwrap().expect("A completes");
    let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, [".", "a", "b"]);
    assert!(carriers_of(&name).is_empty());
}
