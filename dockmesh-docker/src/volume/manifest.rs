//! Building a [`VolumeManifest`] from checked entries as their content flows.

use super::policy::{Checked, CheckedKind};
use dockmesh_core::manifest::{EntryKind, ManifestEntry, VolumeManifest};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// A path (or link target) as the manifest writes it: UTF-8 kept as it is, every byte of an
/// invalid UTF-8 sequence as `%XX`, and a literal `%` as `%25`, so that distinct byte strings
/// always give distinct strings.
pub fn escape_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' {
                out.push_str("%25");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The manifest path of a checked entry: `.` for the root.
fn manifest_path(path: &[u8]) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        escape_path(path)
    }
}

/// Collects manifest entries and hashes file content.
#[derive(Default)]
pub(crate) struct ManifestBuilder {
    entries: Vec<ManifestEntry>,
    hashing: Option<Sha256>,
}

impl ManifestBuilder {
    pub(crate) fn entry(&mut self, e: &Checked) {
        let (kind, size) = match &e.kind {
            CheckedKind::File { size } => (EntryKind::File, *size),
            CheckedKind::Dir => (EntryKind::Dir, 0),
            CheckedKind::Symlink { target } => (
                EntryKind::Symlink {
                    target: escape_path(target),
                },
                0,
            ),
            CheckedKind::HardLink { target } => (
                EntryKind::HardLink {
                    target: manifest_path(target),
                },
                0,
            ),
            CheckedKind::Fifo => (EntryKind::Fifo, 0),
        };
        let is_file = matches!(kind, EntryKind::File);
        self.entries.push(ManifestEntry {
            path: manifest_path(&e.path),
            kind,
            size,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime.secs,
            sha256: None,
            xattrs: e
                .xattrs
                .iter()
                .map(|(k, v)| (escape_path(k), hex::encode(v)))
                .collect(),
        });
        self.hashing = is_file.then(Sha256::new);
    }

    pub(crate) fn data(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.hashing {
            h.update(bytes);
        }
    }

    /// The last entry, a regular file, has this SHA-256, which was computed elsewhere.
    pub(crate) fn entry_hashed(&mut self, digest: &[u8]) {
        self.hashing = None;
        if let Some(last) = self.entries.last_mut() {
            last.sha256 = Some(hex::encode(digest));
        }
    }

    pub(crate) fn entry_end(&mut self) {
        if let Some(h) = self.hashing.take()
            && let Some(last) = self.entries.last_mut()
        {
            last.sha256 = Some(hex::encode(h.finalize()));
        }
    }

    pub(crate) fn finish(self) -> VolumeManifest {
        VolumeManifest::new(self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_utf8_and_marks_the_rest() {
        assert_eq!(escape_path(b"plain name"), "plain name");
        assert_eq!(escape_path("gr\u{fc}n/日本".as_bytes()), "gr\u{fc}n/日本");
        assert_eq!(escape_path(b"100%"), "100%25");
        assert_eq!(escape_path(b"bad\xff\xfe."), "bad%FF%FE.");
        assert_eq!(escape_path(b"%FF"), "%25FF");
        assert_ne!(escape_path(b"\xff"), escape_path(b"%FF"));
    }
}
