//! The manifest of a volume's content: what an export and an import compute while the tar
//! stream flows, and what must be equal on both sides before a transfer counts as verified.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The kind of a volume entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed) and where it points.
    Symlink {
        /// The link target, exactly as stored.
        target: String,
    },
    /// A hard link to another entry of the same volume.
    HardLink {
        /// Path of the entry it links to.
        target: String,
    },
    /// A named pipe (FIFO): no content, only its metadata.
    Fifo,
}

/// One entry of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the volume root, `/`-separated, without a leading `./`. Bytes that are not
    /// UTF-8 are written as `%XX`; a literal `%` as `%25`.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Content size in bytes (0 for anything but files).
    pub size: u64,
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner user id.
    pub uid: u64,
    /// Owner group id.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// SHA-256 of the content, hex, for regular files.
    pub sha256: Option<String>,
    /// The extended attributes carried with the entry: name (escaped like `path`) → value as
    /// lowercase hex. Empty ones are left out of the serialized form, so manifests (and their
    /// digests) of entries without extended attributes are what they were before this field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// The manifest of a volume: its entries sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeManifest {
    /// Entries sorted by path.
    pub entries: Vec<ManifestEntry>,
}

impl VolumeManifest {
    /// Build a manifest from entries in any order.
    pub fn new(mut entries: Vec<ManifestEntry>) -> Self {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        VolumeManifest { entries }
    }

    /// Total content bytes of the regular files.
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// One SHA-256 over a canonical encoding of every entry: equal manifests have equal digests.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for e in &self.entries {
            let line = serde_json::to_string(e).expect("manifest entries serialize");
            h.update((line.len() as u64).to_be_bytes());
            h.update(line.as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The symbolic links whose target is absolute or leads out of the volume, read lexically
    /// from the link's directory (`..` above the root), as `(path, target)` in path order. They
    /// are carried verbatim and never followed; on the target host they point at whatever is
    /// there, which is what a transfer report should tell the operator.
    pub fn outside_links(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::Symlink { target } if link_leaves(&e.path, target) => {
                    Some((e.path.clone(), target.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The first difference between `self` (the source) and `other` (the target), in words, or
    /// `None` when they are equal.
    pub fn first_difference(&self, other: &VolumeManifest) -> Option<String> {
        let mut a = self.entries.iter().peekable();
        let mut b = other.entries.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return None,
                (Some(x), None) => return Some(format!("{:?} is missing on the target", x.path)),
                (None, Some(y)) => {
                    return Some(format!("{:?} exists only on the target", y.path));
                }
                (Some(x), Some(y)) => {
                    if x.path < y.path {
                        return Some(format!("{:?} is missing on the target", x.path));
                    }
                    if y.path < x.path {
                        return Some(format!("{:?} exists only on the target", y.path));
                    }
                    if x != y {
                        return Some(describe_change(x, y));
                    }
                    a.next();
                    b.next();
                }
            }
        }
    }
}

/// Whether a link at `path` to `target` is absolute or climbs above the volume root.
fn link_leaves(path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    let mut depth = path.split('/').count().saturating_sub(1);
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

fn describe_change(x: &ManifestEntry, y: &ManifestEntry) -> String {
    let p = &x.path;
    if x.kind != y.kind {
        format!(
            "{p:?} is {:?} on the source but {:?} on the target",
            x.kind, y.kind
        )
    } else if x.size != y.size {
        format!(
            "{p:?} has {} bytes on the source but {} on the target",
            x.size, y.size
        )
    } else if x.sha256 != y.sha256 {
        format!("{p:?} has different content on the target")
    } else if x.mode != y.mode {
        format!(
            "{p:?} has mode {:o} on the source but {:o} on the target",
            x.mode, y.mode
        )
    } else if (x.uid, x.gid) != (y.uid, y.gid) {
        format!(
            "{p:?} is owned by {}:{} on the source but {}:{} on the target",
            x.uid, x.gid, y.uid, y.gid
        )
    } else if x.xattrs != y.xattrs {
        let names = |e: &ManifestEntry| e.xattrs.keys().cloned().collect::<Vec<_>>().join(", ");
        format!(
            "{p:?} has extended attributes [{}] on the source but [{}] on the target (or their \
             values differ)",
            names(x),
            names(y)
        )
    } else {
        format!(
            "{p:?} has mtime {} on the source but {} on the target",
            x.mtime, y.mtime
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, sha: &str) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: EntryKind::File,
            size: 3,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            sha256: Some(sha.into()),
            xattrs: BTreeMap::new(),
        }
    }

    fn link(path: &str, target: &str) -> ManifestEntry {
        ManifestEntry {
            kind: EntryKind::Symlink {
                target: target.into(),
            },
            size: 0,
            sha256: None,
            ..file(path, "")
        }
    }

    #[test]
    fn outside_links_are_absolute_or_climb_above_the_root() {
        let m = VolumeManifest::new(vec![
            link("venv/bin/python", "/usr/bin/python3"),
            link("log", "../var/log/app"),
            link("a/b/up", "../../x"),
            link("a/b/out", "../../../x"),
            link("a/inside", "b/../b"),
            link("here", "."),
        ]);
        assert_eq!(
            m.outside_links(),
            vec![
                ("a/b/out".to_owned(), "../../../x".to_owned()),
                ("log".to_owned(), "../var/log/app".to_owned()),
                ("venv/bin/python".to_owned(), "/usr/bin/python3".to_owned()),
            ]
        );
    }

    #[test]
    fn extended_attributes_count_and_absent_ones_keep_the_old_digest() {
        let plain = VolumeManifest::new(vec![file("a", "1")]);
        // The serialized form of an entry without xattrs has no `xattrs` key: old digests hold.
        let line = serde_json::to_string(&plain.entries[0]).unwrap();
        assert!(!line.contains("xattrs"), "{line}");
        let old: ManifestEntry = serde_json::from_str(&line).unwrap();
        assert!(old.xattrs.is_empty());
        let mut with = plain.clone();
        with.entries[0]
            .xattrs
            .insert("user.origin".into(), "6869".into());
        assert_ne!(plain.digest(), with.digest());
        assert!(
            with.first_difference(&plain)
                .unwrap()
                .contains("extended attributes")
        );
    }

    #[test]
    fn equal_manifests_have_equal_digests_and_no_difference() {
        let a = VolumeManifest::new(vec![file("b", "1"), file("a", "2")]);
        let b = VolumeManifest::new(vec![file("a", "2"), file("b", "1")]);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.first_difference(&b), None);
    }

    #[test]
    fn differences_are_named() {
        let a = VolumeManifest::new(vec![file("a", "1"), file("b", "1")]);
        let b = VolumeManifest::new(vec![file("a", "2")]);
        assert_ne!(a.digest(), b.digest());
        assert_eq!(
            a.first_difference(&b).unwrap(),
            "\"a\" has different content on the target"
        );
        let c = VolumeManifest::new(vec![file("a", "1")]);
        assert_eq!(
            a.first_difference(&c).unwrap(),
            "\"b\" is missing on the target"
        );
        assert_eq!(
            c.first_difference(&a).unwrap(),
            "\"b\" exists only on the target"
        );
        let mut d = c.clone();
        d.entries[0].mode = 0o600;
        assert!(c.first_difference(&d).unwrap().contains("mode 644"));
    }
}
