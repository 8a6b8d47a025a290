//! The stream checker: tar bytes in, checked and re-written tar bytes out, and the manifest.

use super::Limits;
use super::error::StreamError;
use super::manifest::ManifestBuilder;
use super::policy::{CheckedKind, Checker, Layout};
use super::reader::{Event, Reader, ZERO_BLOCK, padding};
use super::writer::encode_header;
use bytes::Bytes;
use dockmesh_core::manifest::VolumeManifest;
use std::collections::VecDeque;

/// Reads a tar stream pushed in chunk by chunk, checks every entry (see the module
/// documentation for the rules), and writes the accepted entries out again in one canonical
/// form, named for the output [`Layout`]. Optionally computes the [`VolumeManifest`] (SHA-256 of
/// every regular file) on the way.
///
/// Memory stays bounded by the limits whatever the input: content bytes are passed on as the
/// same [`Bytes`] they arrived in, never collected. The output of an entry is produced only once
/// the entry has been accepted, and a refused entry produces none, so a consumer that stops at
/// the first error has only ever seen accepted entries. The end-of-archive marker is produced by
/// [`TarTransform::finish`] only, once the whole input has been accepted.
///
/// ```
/// use dockmesh_docker::volume::{Layout, Limits, TarTransform};
/// let mut t = TarTransform::new(Layout::Transfer, Some(Layout::Carrier), Limits::default());
/// // A stream whose only entry is an absolute path is refused, naming the entry.
/// let mut h = tar::Header::new_ustar();
/// h.set_path("etc/passwd").unwrap();
/// h.as_old_mut().name[..11].copy_from_slice(b"/etc/passwd");
/// h.set_size(0);
/// h.set_entry_type(tar::EntryType::Regular);
/// h.set_cksum();
/// let err = t.push(bytes::Bytes::copy_from_slice(h.as_bytes())).unwrap_err();
/// assert_eq!(err.entry_path(), Some("/etc/passwd"));
/// ```
pub struct TarTransform {
    input: Layout,
    reader: Reader,
    checker: Checker,
    manifest: Option<ManifestBuilder>,
    output: Option<Layout>,
    out: VecDeque<Bytes>,
    out_pad: u64,
    failed: bool,
}

impl std::fmt::Debug for TarTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarTransform")
            .field("bytes_in", &self.reader.offset())
            .field("output", &self.output)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TarTransform {
    /// A checker for a stream named in `input` layout, writing it out named in `output` layout
    /// (or writing nothing when `output` is `None`).
    pub fn new(input: Layout, output: Option<Layout>, limits: Limits) -> Self {
        TarTransform {
            input,
            reader: Reader::new(limits),
            checker: Checker::new(input, limits),
            manifest: None,
            output,
            out: VecDeque::new(),
            out_pad: 0,
            failed: false,
        }
    }

    /// Also compute the manifest (hashing every regular file's content).
    pub fn with_manifest(mut self) -> Self {
        self.manifest = Some(ManifestBuilder::default());
        self
    }

    /// Refuse the stream at the header of the regular file that takes the sum of the files'
    /// sizes over `limit` bytes, before any of its content is passed on
    /// ([`Refusal::LargerThanAnnounced`](super::Refusal::LargerThanAnnounced)).
    pub fn with_content_limit(mut self, limit: u64) -> Self {
        self.checker.limit_content(limit);
        self
    }

    /// Refuse the stream at the header of the regular file that takes the sum of the files'
    /// sizes over `free` less `reserve` bytes: what the disk the volume is written to holds
    /// ([`Refusal::LargerThanDiskAllows`](super::Refusal::LargerThanDiskAllows)).
    pub fn with_disk_limit(mut self, free: u64, reserve: u64) -> Self {
        self.checker.limit_disk(free, reserve);
        self
    }

    /// Bytes of input consumed so far.
    pub fn bytes_in(&self) -> u64 {
        self.reader.offset()
    }

    /// Push the next chunk of input. After an error, the checker takes no more input and
    /// whatever output the chunk produced is dropped.
    pub fn push(&mut self, chunk: Bytes) -> Result<(), StreamError> {
        if self.failed {
            return Err(StreamError::Closed);
        }
        let TarTransform {
            reader,
            checker,
            manifest,
            output,
            out,
            out_pad,
            ..
        } = self;
        let result = reader.feed(chunk, &mut |event| {
            match event {
                Event::Entry(raw) => {
                    let checked = checker.check(raw)?;
                    if let Some(m) = manifest.as_mut() {
                        m.entry(&checked);
                    }
                    if let Some(layout) = *output {
                        let mut header = Vec::with_capacity(1024);
                        encode_header(&checked, layout, &mut header);
                        out.push_back(header.into());
                        *out_pad = match checked.kind {
                            CheckedKind::File { size } => padding(size),
                            _ => 0,
                        };
                    }
                }
                Event::Data(bytes) => {
                    if let Some(m) = manifest.as_mut() {
                        m.data(&bytes);
                    }
                    if output.is_some() {
                        out.push_back(bytes);
                    }
                }
                Event::EntryEnd => {
                    if let Some(m) = manifest.as_mut() {
                        m.entry_end();
                    }
                    if output.is_some() && *out_pad > 0 {
                        out.push_back(Bytes::from_static(&ZERO_BLOCK[..*out_pad as usize]));
                        *out_pad = 0;
                    }
                }
            }
            Ok(())
        });
        if result.is_err() {
            self.failed = true;
            self.out.clear();
        }
        result.map_err(|e| relative(e, self.input))
    }

    /// The next piece of output, if any is ready.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.out.pop_front()
    }

    /// The input is over. Checks that it ended properly and that every link stays inside the
    /// volume, queues the end-of-archive marker, and returns the manifest when asked for one.
    pub fn finish(&mut self) -> Result<Option<VolumeManifest>, StreamError> {
        if self.failed {
            return Err(StreamError::Closed);
        }
        let result = self.reader.finish().and_then(|()| self.checker.finish());
        if let Err(e) = result {
            self.failed = true;
            self.out.clear();
            return Err(relative(e, self.input));
        }
        if self.output.is_some() {
            self.out.push_back(Bytes::from_static(&ZERO_BLOCK));
            self.out.push_back(Bytes::from_static(&ZERO_BLOCK));
        }
        self.failed = true;
        Ok(self.manifest.take().map(ManifestBuilder::finish))
    }
}

/// Name a refused entry relative to the volume root: the carrier's `v/` prefix means nothing to
/// the person reading the error.
fn relative(e: StreamError, input: Layout) -> StreamError {
    match e {
        StreamError::Refused {
            path,
            offset,
            reason,
        } if input == Layout::Carrier => {
            let path = match path.as_str() {
                "v" | "v/" => ".".to_owned(),
                p => p.strip_prefix("v/").unwrap_or(p).to_owned(),
            };
            StreamError::Refused {
                path,
                offset,
                reason,
            }
        }
        other => other,
    }
}
