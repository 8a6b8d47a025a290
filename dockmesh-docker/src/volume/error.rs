//! Why a tar stream is refused.

/// A tar stream was refused by the checker. Nothing that follows the refused entry is passed on,
/// and the refused entry itself never is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// One entry is refused: it could write outside the volume, or it is something a volume moved
    /// by dockmesh must not carry.
    #[error("tar entry {path:?} (header at byte {offset}) refused: {reason}")]
    Refused {
        /// The entry's path as written in the stream (bytes that are not UTF-8 as `%XX`).
        path: String,
        /// Byte offset of the entry's first header block in the stream.
        offset: u64,
        /// Why.
        reason: Refusal,
    },
    /// The bytes are not a tar stream of a kind dockmesh accepts.
    #[error("malformed tar stream at byte {offset}: {what}")]
    Malformed {
        /// Byte offset of the offending block.
        offset: u64,
        /// What is wrong, in words.
        what: String,
    },
    /// The stream ended before its end-of-archive marker, so it may be missing entries.
    #[error("the tar stream ended at byte {offset} before its end-of-archive marker ({what})")]
    Truncated {
        /// Bytes read in all.
        offset: u64,
        /// Where the stream stopped.
        what: &'static str,
    },
    /// The checker was used again after it refused the stream or after it finished.
    #[error("the tar stream checker takes no more input: it refused the stream or has finished")]
    Closed,
}

impl StreamError {
    /// The path of the refused entry, when one entry is to blame.
    pub fn entry_path(&self) -> Option<&str> {
        match self {
            StreamError::Refused { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Why the entry was refused, when one entry is to blame.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            StreamError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Why one entry of a tar stream is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The path starts with `/`.
    #[error("its path is absolute")]
    AbsolutePath,
    /// The path has a `..` component.
    #[error("its path contains a `..` component")]
    ParentTraversal,
    /// The path is empty or has an empty or `.` component (`a//b`, `a/./b`).
    #[error("its path is empty or has an empty or `.` component")]
    NonCanonicalPath,
    /// The path is not below the directory the stream must be rooted at.
    #[error("its path is not inside the stream's root directory {root:?}")]
    OutsideRoot {
        /// The expected root.
        root: String,
    },
    /// The whole path is too long.
    #[error("its path is {len} bytes long (the limit is {limit})")]
    PathTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// One component of the path is too long.
    #[error("a component of its path is {len} bytes long (the limit is {limit})")]
    NameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A symbolic link whose target is absolute or leads out of the volume. No longer
    /// produced: such links are carried verbatim (see the module documentation).
    #[error("it is a symbolic link to {target:?}, which points outside the volume")]
    SymlinkOutside {
        /// The link's target.
        target: String,
    },
    /// A symbolic link with an empty target.
    #[error("it is a symbolic link with an empty target")]
    EmptySymlink,
    /// A hard link whose target is absolute or leads out of the volume.
    #[error("it is a hard link to {target:?}, which is outside the volume")]
    HardLinkOutside {
        /// The link's target.
        target: String,
    },
    /// A hard link to something that is not a regular file that came earlier in the stream.
    #[error("it is a hard link to {target:?}, which is not a regular file earlier in the stream")]
    HardLinkTarget {
        /// The link's target.
        target: String,
    },
    /// A device node or another kind of entry a volume must not carry.
    #[error(
        "it is a {kind}; only regular files, directories, symbolic links, hard links and FIFOs \
         are moved"
    )]
    SpecialFile {
        /// What it is.
        kind: &'static str,
    },
    /// A sparse-file entry (GNU or PAX sparse headers).
    #[error("it uses sparse-file headers, which are not accepted")]
    Sparse,
    /// The parent directory is not a directory that came earlier in the stream.
    #[error("its parent {parent:?} is {what}")]
    BadParent {
        /// The parent path.
        parent: String,
        /// What the parent is instead.
        what: &'static str,
    },
    /// The same path appears twice.
    #[error("its path appears twice in the stream")]
    Duplicate,
    /// The first entry is not the root directory, or the root is not a directory.
    #[error("the stream must start with its root directory, and only once")]
    RootFirst,
    /// A regular file or a name that ends with `/`, a directory without the slash is fine.
    #[error("it is not a directory but its name ends with `/`")]
    TrailingSlash,
    /// The content size is over the limit.
    #[error("its size of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The size in the header.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A header-only entry (directory, link) claims content.
    #[error("it is a {kind} but its header claims {size} bytes of content")]
    ContentOnHeaderOnly {
        /// What it is.
        kind: &'static str,
        /// The size in the header.
        size: u64,
    },
    /// A PAX or GNU extension header is over the limit.
    #[error("its {what} extension header is {size} bytes (the limit is {limit})")]
    HeaderTooLarge {
        /// Which extension.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Extension headers that readers would interpret differently.
    #[error("its headers are ambiguous: {what}")]
    Ambiguous {
        /// What is ambiguous.
        what: &'static str,
    },
    /// An owner id outside what Linux supports.
    #[error("its owner id {id} is out of range")]
    OwnerOutOfRange {
        /// The id.
        id: u64,
    },
    /// An extended attribute outside what a volume export carries.
    #[error(
        "it carries the extended attribute {name:?}; only `user.*` and `security.capability` \
         are accepted"
    )]
    Xattr {
        /// The attribute's name.
        name: String,
    },
    /// More entries than the limit.
    #[error("the stream has more than {limit} entries")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The paths of the stream would take more memory than the checker's budget.
    #[error(
        "the paths of the stream take more than the checker's path budget of {limit} bytes \
         (Limits::max_path_bytes)"
    )]
    PathBudget {
        /// The budget in bytes.
        limit: u64,
    },
    /// The regular files of the stream add up to more than the size its source announced,
    /// plus the margin.
    #[error(
        "with it the stream's file content goes over {limit} bytes, the size the source \
         announced plus a margin"
    )]
    LargerThanAnnounced {
        /// The most content accepted, in bytes.
        limit: u64,
    },
    /// The regular files of the stream add up to more than the disk they are written to has
    /// free, less a reserve.
    #[error(
        "with it the stream's file content goes over {limit} bytes, what this host's disk has \
         free ({free} bytes) less a reserve of {reserve} bytes"
    )]
    LargerThanDiskAllows {
        /// The most content accepted, in bytes.
        limit: u64,
        /// The bytes free on the disk when the import started.
        free: u64,
        /// The bytes kept free.
        reserve: u64,
    },
}
