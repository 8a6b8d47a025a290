//! The rules an entry must follow to be written into a volume.
//!
//! Every entry's path is normalised and must stay inside the volume; it must come after its
//! parent directory and appear once; hard links must point at a regular file that came earlier.
//! Symbolic links are data: their target is kept byte for byte, wherever it points (a
//! virtualenv's `bin/python -> /usr/bin/python3`, `log -> /var/log/app`), and never followed.
//! Because the parent of every entry must be a real directory of the stream (never a symbolic
//! link) and every hard link names an earlier regular file, extracting an accepted stream never
//! goes through a link, so nothing can be written outside the volume, wherever links point.
//!
//! Memory: the checker remembers every path it has accepted (for duplicates, parents and hard
//! link targets), bounded by [`Limits::max_path_bytes`] and not only by the entry count, so a
//! stream of long names cannot grow it past the budget. Every check is linear in the length of
//! the entry's names; nothing is resolved through links.

use super::Limits;
use super::error::{Refusal, StreamError};
use super::manifest::escape_path;
use super::reader::{Mtime, RawEntry, RawKind};
use std::collections::HashMap;

/// How the entries of a tar stream are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Layout {
    /// dockmesh's transfer format (and `tar -C DIR .`): the root is `./`, other entries are
    /// relative to it, with or without a leading `./`. What an export produces and an import
    /// reads.
    Transfer,
    /// What the engine's archive endpoint reads and writes for the volume mounted at `/v` of a
    /// carrier container: the root is `v/`, every other entry starts with `v/`.
    Carrier,
}

impl Layout {
    /// The name of the root entry in this layout.
    pub(crate) fn root(self) -> &'static [u8] {
        match self {
            Layout::Transfer => b"./",
            Layout::Carrier => b"v/",
        }
    }

    /// What comes before the relative path of every other entry (and of hard link targets).
    pub(crate) fn prefix(self) -> &'static [u8] {
        match self {
            Layout::Transfer => b"",
            Layout::Carrier => b"v/",
        }
    }
}

/// What an accepted entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckedKind {
    File {
        size: u64,
    },
    Dir,
    /// The target exactly as stored.
    Symlink {
        target: Vec<u8>,
    },
    /// The normalised path of the regular file it links to.
    HardLink {
        target: Vec<u8>,
    },
    Fifo,
}

/// An accepted entry: its path relative to the volume root (empty for the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    pub path: Vec<u8>,
    pub kind: CheckedKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Mtime,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug)]
enum Node {
    Dir,
    File,
    /// A hard link or a FIFO: something that is neither a parent nor a hard link target.
    Other,
    Symlink,
}

/// What one remembered path costs besides its bytes (the map's entry and the box), counted
/// against [`Limits::max_path_bytes`].
pub(crate) const NODE_OVERHEAD: u64 = 48;

/// The entries seen so far and the rules for the next one.
#[derive(Debug)]
pub(crate) struct Checker {
    layout: Layout,
    limits: Limits,
    nodes: HashMap<Box<[u8]>, Node>,
    entries: u64,
    /// Bytes of the remembered paths, with [`NODE_OVERHEAD`] each.
    path_bytes: u64,
    /// Sum of the sizes of the regular files so far, and the most it may reach.
    content: u64,
    content_limit: Option<u64>,
    /// What the target's disk allows: (limit, free, reserve).
    disk_limit: Option<(u64, u64, u64)>,
}

fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|&b| b == b'/')
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => &[],
    }
}

impl Checker {
    pub(crate) fn new(layout: Layout, limits: Limits) -> Self {
        Checker {
            layout,
            limits,
            nodes: HashMap::new(),
            entries: 0,
            path_bytes: 0,
            content: 0,
            content_limit: None,
            disk_limit: None,
        }
    }

    /// Refuse the stream once the sizes of its regular files add up to more than `limit`.
    pub(crate) fn limit_content(&mut self, limit: u64) {
        self.content_limit = Some(limit);
    }

    /// Refuse the stream once the sizes of its regular files add up to more than `free` less
    /// `reserve`: what the disk it is written to holds.
    pub(crate) fn limit_disk(&mut self, free: u64, reserve: u64) {
        self.disk_limit = Some((free.saturating_sub(reserve), free, reserve));
    }

    /// The relative path of a name in this layout (empty for the root).
    fn normalize(&self, name: &[u8], dir: bool) -> Result<Vec<u8>, Refusal> {
        if name.first() == Some(&b'/') {
            return Err(Refusal::AbsolutePath);
        }
        let mut rest = name;
        if let Some(r) = rest.strip_suffix(b"/") {
            if !dir {
                return Err(Refusal::TrailingSlash);
            }
            rest = r;
        }
        match self.layout {
            Layout::Transfer => {
                if rest == b"." {
                    return Ok(Vec::new());
                }
                if let Some(r) = rest.strip_prefix(b"./") {
                    rest = r;
                }
            }
            Layout::Carrier => {
                if rest == b"v" {
                    return Ok(Vec::new());
                }
                if components(rest).any(|c| c == b"..") {
                    return Err(Refusal::ParentTraversal);
                }
                rest = rest
                    .strip_prefix(b"v/")
                    .ok_or(Refusal::OutsideRoot { root: "v/".into() })?;
            }
        }
        if components(rest).any(|c| c == b"..") {
            return Err(Refusal::ParentTraversal);
        }
        if rest.len() > self.limits.max_path {
            return Err(Refusal::PathTooLong {
                len: rest.len(),
                limit: self.limits.max_path,
            });
        }
        for c in components(rest) {
            if c.is_empty() || c == b"." {
                return Err(Refusal::NonCanonicalPath);
            }
            if c.len() > self.limits.max_name {
                return Err(Refusal::NameTooLong {
                    len: c.len(),
                    limit: self.limits.max_name,
                });
            }
        }
        Ok(rest.to_vec())
    }

    /// Accept or refuse the next entry.
    pub(crate) fn check(&mut self, raw: RawEntry) -> Result<Checked, StreamError> {
        let refuse = |reason| StreamError::Refused {
            path: escape_path(&raw.name),
            offset: raw.offset,
            reason,
        };
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(refuse(Refusal::TooManyEntries {
                limit: self.limits.max_entries,
            }));
        }
        let path = self
            .normalize(&raw.name, raw.kind == RawKind::Dir)
            .map_err(refuse)?;
        let cost = path.len() as u64 + NODE_OVERHEAD;
        if self.path_bytes + cost > self.limits.max_path_bytes {
            return Err(refuse(Refusal::PathBudget {
                limit: self.limits.max_path_bytes,
            }));
        }
        // The engine's export carries `security.capability` only; `user.*` is harmless. Other
        // namespaces (`trusted.*`, `security.selinux`, ACLs) could change what the data may do.
        if let Some((name, _)) = raw
            .xattrs
            .iter()
            .find(|(k, _)| !(k == b"security.capability" || k.starts_with(b"user.")))
        {
            return Err(refuse(Refusal::Xattr {
                name: escape_path(name),
            }));
        }
        if self.nodes.is_empty() || path.is_empty() {
            if !(self.nodes.is_empty() && path.is_empty() && raw.kind == RawKind::Dir) {
                return Err(refuse(Refusal::RootFirst));
            }
        } else {
            if self.nodes.contains_key(path.as_slice()) {
                return Err(refuse(Refusal::Duplicate));
            }
            let parent = parent(&path);
            let what = match self.nodes.get(parent) {
                Some(Node::Dir) => None,
                Some(Node::Symlink) => Some("a symbolic link"),
                Some(_) => Some("not a directory"),
                None => Some("missing (a directory must come before what it holds)"),
            };
            if let Some(what) = what {
                return Err(refuse(Refusal::BadParent {
                    parent: escape_path(parent),
                    what,
                }));
            }
        }
        let (kind, node) = match raw.kind {
            RawKind::File => {
                let content = self.content.saturating_add(raw.size);
                if let Some(limit) = self.content_limit
                    && content > limit
                {
                    return Err(refuse(Refusal::LargerThanAnnounced { limit }));
                }
                if let Some((limit, free, reserve)) = self.disk_limit
                    && content > limit
                {
                    return Err(refuse(Refusal::LargerThanDiskAllows {
                        limit,
                        free,
                        reserve,
                    }));
                }
                self.content = content;
                (CheckedKind::File { size: raw.size }, Node::File)
            }
            RawKind::Dir => (CheckedKind::Dir, Node::Dir),
            RawKind::Fifo => (CheckedKind::Fifo, Node::Other),
            RawKind::Symlink => {
                self.check_symlink(&raw.link).map_err(refuse)?;
                (
                    CheckedKind::Symlink {
                        target: raw.link.clone(),
                    },
                    Node::Symlink,
                )
            }
            RawKind::HardLink => {
                let target = self.normalize(&raw.link, false).map_err(|r| {
                    refuse(match r {
                        Refusal::AbsolutePath
                        | Refusal::ParentTraversal
                        | Refusal::OutsideRoot { .. } => Refusal::HardLinkOutside {
                            target: escape_path(&raw.link),
                        },
                        other => other,
                    })
                })?;
                if !matches!(self.nodes.get(target.as_slice()), Some(Node::File)) {
                    return Err(refuse(Refusal::HardLinkTarget {
                        target: escape_path(&raw.link),
                    }));
                }
                (CheckedKind::HardLink { target }, Node::Other)
            }
        };
        self.path_bytes += cost;
        self.nodes.insert(path.clone().into(), node);
        Ok(Checked {
            path,
            kind,
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            xattrs: raw.xattrs,
        })
    }

    /// A symbolic link's target is data: any bytes (wherever they point) but none, and no longer
    /// than a path may be.
    fn check_symlink(&self, target: &[u8]) -> Result<(), Refusal> {
        if target.is_empty() {
            return Err(Refusal::EmptySymlink);
        }
        if target.len() > self.limits.max_path {
            return Err(Refusal::PathTooLong {
                len: target.len(),
                limit: self.limits.max_path,
            });
        }
        Ok(())
    }

    /// The stream is complete: it must at least have had its root.
    pub(crate) fn finish(&self) -> Result<(), StreamError> {
        if self.nodes.is_empty() {
            return Err(StreamError::Refused {
                path: String::new(),
                offset: 0,
                reason: Refusal::RootFirst,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: RawKind, name: &str, link: &str) -> RawEntry {
        RawEntry {
            offset: 0,
            kind,
            name: name.as_bytes().to_vec(),
            link: link.as_bytes().to_vec(),
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: Mtime::default(),
            xattrs: Vec::new(),
        }
    }

    fn checker_with(entries: &[(RawKind, &str, &str)]) -> Checker {
        let mut c = Checker::new(Layout::Transfer, Limits::default());
        c.check(raw(RawKind::Dir, "./", "")).expect("root");
        for (kind, name, link) in entries {
            c.check(raw(*kind, name, link))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        c
    }

    /// One check per rule: the entry after the fixture is refused with `expected` (or accepted
    /// when `expected` is `None`).
    fn check(prior: &[(RawKind, &str, &str)], next: (RawKind, &str, &str), expected: Option<&str>) {
        let mut c = checker_with(prior);
        let got = c.check(raw(next.0, next.1, next.2)).err().map(|e| match e {
            StreamError::Refused { reason, .. } => format!("{reason:?}"),
            other => format!("{other:?}"),
        });
        match (expected, got) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert!(got.starts_with(want), "{next:?}: got {got}, want {want}")
            }
            (want, got) => panic!("{next:?}: got {got:?}, want {want:?}"),
        }
    }

    use RawKind::*;

    #[test]
    fn paths_must_stay_inside_and_be_canonical() {
        check(&[], (File, "a", ""), None);
        check(&[], (File, "./a", ""), None);
        check(&[], (File, "/etc/passwd", ""), Some("AbsolutePath"));
        check(&[], (File, "../x", ""), Some("ParentTraversal"));
        check(&[], (File, "./../x", ""), Some("ParentTraversal"));
        check(
            &[(Dir, "d/", "")],
            (File, "d/../../x", ""),
            Some("ParentTraversal"),
        );
        check(
            &[(Dir, "d/", "")],
            (File, "d//x", ""),
            Some("NonCanonicalPath"),
        );
        check(
            &[(Dir, "d/", "")],
            (File, "d/./x", ""),
            Some("NonCanonicalPath"),
        );
        check(&[], (File, "", ""), Some("NonCanonicalPath"));
        check(&[], (File, "a/", ""), Some("TrailingSlash"));
        let long = "x".repeat(256);
        check(&[], (File, &long, ""), Some("NameTooLong"));
        let deep = vec!["d"; 2100].join("/");
        check(&[], (File, &deep, ""), Some("PathTooLong"));
    }

    #[test]
    fn the_root_comes_first_and_once() {
        let mut c = Checker::new(Layout::Transfer, Limits::default());
        let e = c.check(raw(File, "a", "")).unwrap_err();
        assert_eq!(e.refusal(), Some(&Refusal::RootFirst));
        let mut c = Checker::new(Layout::Transfer, Limits::default());
        assert!(
            c.check(raw(File, ".", "")).is_err(),
            "a root that is not a directory"
        );
        check(&[], (Dir, ".", ""), Some("RootFirst"));
        assert!(
            Checker::new(Layout::Transfer, Limits::default())
                .finish()
                .is_err(),
            "an empty stream"
        );
    }

    #[test]
    fn parents_come_first_are_directories_and_paths_appear_once() {
        check(&[], (File, "d/x", ""), Some("BadParent"));
        check(&[(File, "f", "")], (File, "f/x", ""), Some("BadParent"));
        check(
            &[(Symlink, "s", "d"), (Dir, "d/", "")],
            (File, "s/x", ""),
            Some("BadParent"),
        );
        check(&[(File, "a", "")], (File, "./a", ""), Some("Duplicate"));
        check(&[(Dir, "d/", "")], (Dir, "d", ""), Some("Duplicate"));
    }

    #[test]
    fn symlinks_are_data_wherever_they_point() {
        check(&[], (Symlink, "s", "a/b"), None);
        check(&[(Dir, "d/", "")], (Symlink, "d/s", "../a"), None);
        check(&[], (Symlink, "python", "/usr/bin/python3"), None);
        check(&[], (Symlink, "s", ".."), None);
        check(&[], (Symlink, "log", "../var/log/app"), None);
        check(&[], (Symlink, "s", ""), Some("EmptySymlink"));
        let long = "x/".repeat(2049);
        check(&[], (Symlink, "s", &long), Some("PathTooLong"));
        // Never written through: an entry below a link is refused, wherever the link points.
        check(
            &[(Symlink, "log", "/var/log/app")],
            (File, "log/evil", ""),
            Some("BadParent"),
        );
        check(
            &[(Symlink, "up", "..")],
            (Dir, "up/x/", ""),
            Some("BadParent"),
        );
        let c = checker_with(&[
            (Dir, "d/", ""),
            (Symlink, "d/up", ".."),
            (Symlink, "d/s", "up/.."),
            (Symlink, "l1", "l2"),
            (Symlink, "l2", "l1"),
        ]);
        c.finish().expect("links are data");
    }

    #[test]
    fn fifos_are_carried_and_are_no_parents() {
        check(&[], (Fifo, "spool", ""), None);
        check(&[(Fifo, "p", "")], (File, "p/x", ""), Some("BadParent"));
        check(
            &[(Fifo, "p", "")],
            (HardLink, "h", "p"),
            Some("HardLinkTarget"),
        );
    }

    #[test]
    fn remembered_paths_stay_within_the_byte_budget() {
        // Long names, few entries: the entry count alone would not stop them.
        let limits = Limits {
            max_path_bytes: 64 * 1024,
            ..Limits::default()
        };
        let mut c = Checker::new(Layout::Transfer, limits);
        c.check(raw(Dir, "./", "")).unwrap();
        let mut accepted = 0u64;
        let err = loop {
            let name = format!("{accepted:0>250}");
            match c.check(raw(File, &name, "")) {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted < 10_000, "the budget never tripped");
        };
        assert_eq!(
            err.refusal(),
            Some(&Refusal::PathBudget { limit: 64 * 1024 })
        );
        assert!(err.to_string().contains("65536"), "{err}");
        assert!(c.path_bytes <= 64 * 1024);
        assert_eq!(
            accepted,
            (64 * 1024 - NODE_OVERHEAD) / (250 + NODE_OVERHEAD)
        );
    }

    #[test]
    fn content_over_the_announced_limit_is_refused_at_its_header() {
        let mut c = Checker::new(Layout::Transfer, Limits::default());
        c.limit_content(100);
        c.check(raw(Dir, "./", "")).unwrap();
        let sized = |name: &str, size| RawEntry {
            size,
            ..raw(File, name, "")
        };
        c.check(sized("a", 60)).unwrap();
        c.check(sized("b", 40)).unwrap();
        let e = c.check(sized("c", 1)).unwrap_err();
        assert_eq!(
            e.refusal(),
            Some(&Refusal::LargerThanAnnounced { limit: 100 })
        );
        assert_eq!(e.entry_path(), Some("c"));
    }

    #[test]
    fn content_over_what_the_disk_holds_is_refused_at_its_header_whatever_was_announced() {
        let mut c = Checker::new(Layout::Transfer, Limits::default());
        c.limit_content(u64::MAX / 2);
        c.limit_disk(130, 30);
        c.check(raw(Dir, "./", "")).unwrap();
        let sized = |name: &str, size| RawEntry {
            size,
            ..raw(File, name, "")
        };
        c.check(sized("a", 100)).unwrap();
        let e = c.check(sized("b", 1)).unwrap_err();
        assert_eq!(
            e.refusal(),
            Some(&Refusal::LargerThanDiskAllows {
                limit: 100,
                free: 130,
                reserve: 30
            })
        );
        assert_eq!(e.entry_path(), Some("b"));
        // A disk with less free than its reserve takes no content at all.
        let mut c = Checker::new(Layout::Transfer, Limits::default());
        c.limit_disk(10, 30);
        c.check(raw(Dir, "./", "")).unwrap();
        c.check(sized("empty", 0)).unwrap();
        assert!(c.check(sized("one", 1)).is_err());
    }

    #[test]
    fn hard_links_point_at_earlier_regular_files_inside() {
        check(&[(File, "f", "")], (HardLink, "h", "f"), None);
        check(&[(File, "f", "")], (HardLink, "h", "./f"), None);
        check(&[], (HardLink, "h", "/etc/passwd"), Some("HardLinkOutside"));
        check(&[], (HardLink, "h", "../x"), Some("HardLinkOutside"));
        check(&[], (HardLink, "h", "later"), Some("HardLinkTarget"));
        check(
            &[(Dir, "d/", "")],
            (HardLink, "h", "d"),
            Some("HardLinkTarget"),
        );
        check(
            &[(Symlink, "s", "x")],
            (HardLink, "h", "s"),
            Some("HardLinkTarget"),
        );
        check(
            &[(File, "f", ""), (HardLink, "h", "f")],
            (HardLink, "h2", "h"),
            Some("HardLinkTarget"),
        );
    }

    #[test]
    fn the_carrier_layout_is_rooted_at_v() {
        let mut c = Checker::new(Layout::Carrier, Limits::default());
        assert_eq!(c.check(raw(Dir, "v/", "")).expect("root").path, b"");
        assert_eq!(c.check(raw(File, "v/a", "")).expect("a").path, b"a");
        let f = c.check(raw(HardLink, "v/h", "v/a")).expect("link");
        assert_eq!(
            f.kind,
            CheckedKind::HardLink {
                target: b"a".to_vec()
            }
        );
        let e = c.check(raw(File, "w/a", "")).unwrap_err();
        assert!(matches!(e.refusal(), Some(Refusal::OutsideRoot { .. })));
        let e = c.check(raw(File, "v/../a", "")).unwrap_err();
        assert_eq!(e.refusal(), Some(&Refusal::ParentTraversal));
        let e = c.check(raw(HardLink, "v/h2", "a")).unwrap_err();
        assert!(matches!(e.refusal(), Some(Refusal::HardLinkOutside { .. })));
    }

    #[test]
    fn the_entry_count_is_bounded() {
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let mut c = Checker::new(Layout::Transfer, limits);
        c.check(raw(Dir, "./", "")).unwrap();
        c.check(raw(File, "a", "")).unwrap();
        let e = c.check(raw(File, "b", "")).unwrap_err();
        assert!(matches!(e.refusal(), Some(Refusal::TooManyEntries { .. })));
    }
}
