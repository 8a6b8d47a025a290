//! Lossless export and import of named volumes as tar streams, with manifests.
//!
//! # How
//!
//! No helper image is pulled and no tool inside a stack's images is needed. The volume is
//! mounted at `/v` of a *carrier* container that is created but never started, from a tiny local
//! image made from an empty tar ([`CARRIER_IMAGE`], built on first use with the engine's image
//! import, so it works on an engine without a registry). The engine's archive endpoints do the
//! file system work: `GET /containers/{id}/archive?path=/v` reads the volume as a tar stream and
//! `PUT /containers/{id}/archive?path=/` extracts one into it. The carrier is removed when the
//! transfer ends, whether it succeeded or not.
//!
//! Every stream passes through a [`TarTransform`]: an incremental tar reader (push based, so it
//! runs inline on the async stream without a blocking thread, and bounded in memory: content
//! bytes are handed on in the chunks they arrived in) followed by the entry checker and a writer
//! that emits every accepted entry again in one canonical POSIX pax form. An export rewrites the
//! engine's `v/…` names into the [`Layout::Transfer`] form (`./` and relative paths) and
//! computes the [`VolumeManifest`](dockmesh_core::manifest::VolumeManifest) as the bytes flow;
//! an import checks the incoming stream and hands the engine only headers written here, named
//! `v/…` ([`Layout::Carrier`]). The root entry carries
//! the volume root's own owner, mode and mtime; extracting at `/` with the `v/` prefix is what
//! makes the engine apply them (it skips metadata of an entry named `.`).
//!
//! The `PUT` leaves `copyUIDGID` unset: with it the engine would chown every entry to the
//! container's user (moby `daemon/archive_tarcopyoptions_unix.go`, and moby/moby#41727 for the
//! CLI side); without it a root engine `lchown`s each entry to its header's uid/gid, sets modes
//! after owners (so setuid bits stay), and sets mtimes, directories' last; hard links are
//! created with `link(2)` to the earlier path. The round-trip test checks all of that on the
//! engine. A rootless engine cannot set owners outside its id mapping; the read-back then
//! differs and the caller's verification names the entry.
//!
//! After the import the volume is read back through the same endpoint and its manifest computed
//! from what the engine actually stored: that is what [`import_volume`] returns, for the caller
//! to compare with the export's manifest.
//!
//! # The file-system fast path
//!
//! With [`VolumeAccess::FileSystem`] (what [`DockerRuntime`](crate::DockerRuntime) uses when
//! the engine is reached through a Unix socket and the process runs as root, unless
//! [`DockerConfig::volume_fast_path`](crate::DockerConfig::volume_fast_path) is off), a volume
//! of the `local` driver without options is read and written in its directory on this host
//! instead of through the archive endpoints. The carrier is still created (it holds the volume
//! and claims the import), the stream passes through the same [`TarTransform`] and the import is
//! read back and its manifest computed from the directory into the same manifest builder (each
//! file is read back while the import goes on, as soon as it is written, and a walk after the
//! final sync checks that each is still as it was read). It is faster (no engine tar on either
//! side, the disk written and the files read back while the stream comes), and it keeps what the archive path cannot: nanosecond
//! modification times, `user.*` extended attributes and the holes of sparse files. The logs
//! say which path each transfer took (`path = "file system"` or `"engine archive"`).
//!
//! The two paths mix: an export of either kind imports through either. One case fails
//! verification instead of losing data: a `user.*` attribute read by a fast-path export cannot be
//! read back through the engine on an archive-path import, so that import's manifest differs and
//! the difference is named.
//!
//! # What is moved exactly
//!
//! Regular files (content, size), directories (also empty ones), symbolic links (never
//! followed, target kept byte for byte, wherever it points: absolute links such as a
//! virtualenv's `bin/python -> /usr/bin/python3` and links out of the volume such as
//! `log -> ../../var/log/app` are data, listed by
//! [`VolumeManifest::outside_links`](dockmesh_core::manifest::VolumeManifest::outside_links) for
//! the transfer report), FIFOs (a mail spool's), hard links (as links to the first path of the inode),
//! permission bits including setuid, setgid and sticky, numeric owner uid/gid, modification
//! times in whole seconds, names with any bytes but `/` and NUL (spaces, non-ASCII, invalid
//! UTF-8), large files (sizes over 8 GiB through PAX records), and the `security.capability`
//! extended attribute (the only one the engine's archive reader exports). Every extended
//! attribute a stream carries is in the manifest too, so its loss fails verification.
//!
//! Not kept on the archive path, because the engine's archive endpoint does not carry them
//! (the fast path keeps sub-second times, `user.*` attributes and holes; neither path keeps
//! access and change times): sub-second parts of
//! modification times (the engine truncates them to seconds on export, so both manifests agree),
//! access and change times, extended attributes other than `security.capability`, and the holes
//! of sparse files (their content is moved exactly, the zeros are written out on the target).
//! Unix sockets in a volume are skipped by the engine. Device nodes are refused.
//!
//! # What a stream must look like
//!
//! Refused, with an error that names the entry, before the entry reaches the engine:
//! absolute paths, `..` components, empty or `.` components, paths or names over the
//! [`Limits`], entries whose parent is not a directory that came earlier (so nothing is ever
//! written through a symbolic link, wherever it points), the same path twice, a stream that
//! does not start with its root directory, empty symbolic links, hard links to anything but a
//! regular file earlier in the stream, device nodes, sparse and other non-portable entry types, content on directories or links, PAX
//! global headers, repeated or contradicting extension headers (a GNU long name *and* a PAX
//! path), extension headers over the limit, absurd sizes and owner ids, extended attributes
//! other than `user.*` and `security.capability`, bad checksums, and anything after the
//! end-of-archive marker but zeros; and on an import that was told the source's size
//! ([`VolumeTarget::expected_bytes`](dockmesh_core::ports::VolumeTarget::expected_bytes)),
//! regular files adding up to more than that plus [`import_margin`]; and on any import whose
//! volume's disk is on this machine, regular files adding up to more than it has free less
//! [`IMPORT_DISK_RESERVE`], whatever the source announced.
//!
//! Memory: content is never collected, so a 1 GiB volume needs no more memory than an empty
//! one; what grows is the manifest and the set of paths seen, about 200 bytes per entry, the
//! latter bounded by [`Limits::max_path_bytes`].

mod carrier;
mod engine;
mod error;
mod fs;
mod manifest;
mod policy;
mod reader;
#[cfg(test)]
mod tests;
mod transform;
mod writer;

pub use carrier::{CARRIER_IMAGE, CARRIER_LABEL, ensure_carrier_image};
pub use engine::{
    IMPORT_DISK_RESERVE, VolumeAccess, export_volume, export_volume_with, import_margin,
    import_volume, import_volume_with, remove_volume,
};
pub use error::{Refusal, StreamError};
pub use manifest::escape_path;
pub use policy::Layout;
pub use transform::TarTransform;

/// Bounds on what a tar stream may contain. The defaults fit any volume a Linux file system can
/// hold; they exist so that a hostile stream cannot make the checker use unbounded memory
/// (the entry count bounds the manifest, the path budget the set of paths seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest path (or link target) in bytes. Default 4096 (Linux `PATH_MAX`).
    pub max_path: usize,
    /// Longest path component in bytes. Default 255 (Linux `NAME_MAX`).
    pub max_name: usize,
    /// Largest PAX or GNU long-name extension header. Default 64 KiB.
    pub max_extension: u64,
    /// Largest regular file. Default 16 TiB (the ext4 limit).
    pub max_entry_size: u64,
    /// Most entries in one stream. Default 50 million.
    pub max_entries: u64,
    /// Most bytes of paths the checker remembers (every accepted path, plus 48 bytes of
    /// bookkeeping each), so that long names cannot grow its memory past this budget where the
    /// entry count alone would allow `max_entries × max_path`. Default 1 GiB (about 8 million
    /// entries with 80-byte paths).
    pub max_path_bytes: u64,
    /// Most zero bytes accepted after the end-of-archive marker. Default 1 MiB.
    pub max_trailing: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_path: 4096,
            max_name: 255,
            max_extension: 64 * 1024,
            max_entry_size: 16 << 40,
            max_entries: 50_000_000,
            max_path_bytes: 1 << 30,
            max_trailing: 1 << 20,
        }
    }
}
