//! The tar writer's round trip: an arbitrary tree (files, directories, symbolic and hard links,
//! FIFOs, long and non-UTF-8 names, large ids and times, extended attributes) written as a
//! transfer stream by an independent tar writer, taken in by the checker and written out
//! again in the engine-facing carrier form by dockmesh's writer, then read back.
//!
//! Properties: a stream of a tree the checker accepts has the tree's manifest (every entry's
//! path, kind, size, content hash, mode, owner, time and extended attributes); the carrier
//! output it writes is accepted again with the same manifest; a tree of ordinary names, ids and
//! times is always accepted.
//!
//! `cargo +nightly fuzz run -s none -a tar_roundtrip`
#![no_main]

use arbitrary::Arbitrary;
use dockmesh_core::manifest::{EntryKind, ManifestEntry, VolumeManifest};
use dockmesh_docker::volume::{Layout, escape_path};
use dockmesh_fuzz::check_tar as run;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Arbitrary)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    /// A hard link to the n-th regular file written before it.
    HardLink(u8),
    Fifo,
}

#[derive(Debug, Arbitrary)]
struct Node {
    /// The n-th directory written before it holds it.
    parent: u8,
    name: Vec<u8>,
    kind: Kind,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Arbitrary)]
struct Tree {
    chunk: u16,
    nodes: Vec<Node>,
}

fn plain_name(name: &[u8]) -> bool {
    (1..=40).contains(&name.len()) && name.iter().all(|b| b.is_ascii_alphanumeric())
}

fuzz_target!(|tree: Tree| {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut expected = Vec::new();
    let mut ordinary = true;

    let mut root = tar::Header::new_gnu();
    root.set_entry_type(tar::EntryType::Directory);
    root.set_mode(0o755);
    root.set_size(0);
    root.set_mtime(0);
    if tar.append_data(&mut root, "./", &[][..]).is_err() {
        return;
    }
    expected.push(ManifestEntry {
        path: ".".into(),
        kind: EntryKind::Dir,
        size: 0,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        sha256: None,
        xattrs: BTreeMap::new(),
    });

    for node in tree.nodes.iter().take(32) {
        let name = &node.name;
        if name.is_empty()
            || name.len() > 255
            || name.contains(&b'/')
            || name.contains(&0)
            || name == b"."
            || name == b".."
        {
            continue;
        }
        let parent = &dirs[usize::from(node.parent) % dirs.len()];
        let mut path = parent.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        if path.len() > 1024 || seen.contains(&path) {
            continue;
        }
        // Linux has no owner id 2³²−1 (it means "no change" to chown).
        ordinary &= plain_name(name)
            && node.xattrs.is_empty()
            && node.uid < u32::MAX
            && node.gid < u32::MAX;
        let mut h = tar::Header::new_gnu();
        h.set_mode(u32::from(node.mode) & 0o7777);
        h.set_uid(u64::from(node.uid));
        h.set_gid(u64::from(node.gid));
        h.set_mtime(u64::from(node.mtime));
        h.set_size(0);
        let mut content: &[u8] = &[];
        let (kind, size, sha256) = match &node.kind {
            Kind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                content = data;
                (
                    EntryKind::File,
                    data.len() as u64,
                    Some(hex::encode(Sha256::digest(data))),
                )
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                (EntryKind::Dir, 0, None)
            }
            Kind::Symlink(target) => {
                // Written literally (the tar crate's path writer would normalise it), so at
                // most what a header holds.
                if target.is_empty() || target.contains(&0) || target.len() > 100 {
                    continue;
                }
                h.set_entry_type(tar::EntryType::Symlink);
                if h.set_link_name_literal(target).is_err()
                    || tar.append_data(&mut h, probe_path(&path), &[][..]).is_err()
                {
                    return;
                }
                ordinary &= plain_name(target);
                expected.push(entry(
                    &path,
                    EntryKind::Symlink {
                        target: escape_path(target),
                    },
                    0,
                    None,
                    node,
                ));
                seen.insert(path);
                continue;
            }
            Kind::HardLink(n) => {
                if files.is_empty() {
                    continue;
                }
                let target = files[usize::from(*n) % files.len()].clone();
                h.set_entry_type(tar::EntryType::Link);
                if tar
                    .append_link(&mut h, probe_path(&path), probe_path(&target))
                    .is_err()
                {
                    return;
                }
                expected.push(entry(
                    &path,
                    EntryKind::HardLink {
                        target: escape_path(&target),
                    },
                    0,
                    None,
                    node,
                ));
                seen.insert(path);
                continue;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                (EntryKind::Fifo, 0, None)
            }
        };
        if !node.xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> = node
                .xattrs
                .iter()
                .filter_map(|(k, v)| {
                    std::str::from_utf8(k)
                        .ok()
                        .map(|k| (format!("SCHILY.xattr.{k}"), &v[..]))
                })
                .collect();
            if tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .is_err()
            {
                return;
            }
        }
        if tar.append_data(&mut h, probe_path(&path), content).is_err() {
            return;
        }
        let mut e = entry(&path, kind.clone(), size, sha256, node);
        for (k, v) in &node.xattrs {
            if std::str::from_utf8(k).is_ok() {
                e.xattrs.insert(escape_path(k), hex::encode(v));
            }
        }
        expected.push(e);
        if matches!(kind, EntryKind::Dir) {
            dirs.push(path.clone());
        }
        if matches!(kind, EntryKind::File) {
            files.push(path.clone());
        }
        seen.insert(path);
    }
    let Ok(stream) = tar.into_inner() else {
        return;
    };
    let chunk = usize::from(tree.chunk) + 1;
    let first = run(&stream, Layout::Transfer, Some(Layout::Carrier), chunk);
    match first.result {
        Ok(Some(manifest)) => {
            let expected = VolumeManifest::new(expected);
            if let Some(d) = expected.first_difference(&manifest) {
                panic!("the manifest is not the tree's: {d}\n{expected:#?}\n{manifest:#?}");
            }
            let again = run(&first.output, Layout::Carrier, None, chunk);
            assert_eq!(
                again.result,
                Ok(Some(manifest)),
                "the carrier output reads back the same"
            );
        }
        Ok(None) => panic!("a manifest was asked for"),
        Err(e) => assert!(!ordinary, "an ordinary tree is refused: {e}"),
    }
});

fn probe_path(bytes: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(bytes))
}

fn entry(
    path: &[u8],
    kind: EntryKind,
    size: u64,
    sha256: Option<String>,
    node: &Node,
) -> ManifestEntry {
    ManifestEntry {
        path: escape_path(path),
        kind,
        size,
        mode: u32::from(node.mode) & 0o7777,
        uid: u64::from(node.uid),
        gid: u64::from(node.gid),
        mtime: i64::from(node.mtime),
        sha256,
        xattrs: BTreeMap::new(),
    }
}
