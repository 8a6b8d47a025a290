//! An export from the directory: the walk written as a tar stream named in [`Layout::Carrier`].

use super::super::policy::{Checked, CheckedKind, Layout};
use super::super::reader::{ZERO_BLOCK, padding};
use super::super::writer::encode_header;
use super::CHUNK;
use super::walk::{Visit, WalkError, at, read_sized, walk};
use bytes::{Bytes, BytesMut};
use dockmesh_core::ports::{RuntimeError, RuntimeErrorKind};
use futures_util::stream::{self, BoxStream, StreamExt};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The volume's directory as a tar stream named in [`Layout::Carrier`], read on a blocking
/// thread and handed on in chunks of about 256 KiB through a small channel (so at most a few
/// MiB are in flight, whatever the volume's size). Dropping the stream stops the walk.
pub(crate) fn read_tree(
    root: PathBuf,
    volume: &str,
) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, RuntimeError>>(8);
    let volume = volume.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut out = Out {
            tx,
            buf: BytesMut::with_capacity(CHUNK * 2),
        };
        let failure = match walk(&root, &mut out).and_then(|()| out.end()) {
            Ok(()) | Err(WalkError::Closed) => return,
            Err(e) => walk_failure(&volume, e),
        };
        let _ = out.tx.blocking_send(Err(failure));
    });
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// What stopped a walk of `volume`'s directory, for its caller.
pub(super) fn walk_failure(volume: &str, e: WalkError) -> RuntimeError {
    match e {
        WalkError::Io(path, e) => RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!(
                "reading volume {volume} from its directory failed at {}: {e}",
                path.display()
            ),
        )
        .with_source(e),
        WalkError::Refused(e) => super::super::engine::export_refused(volume, e),
        WalkError::Closed => RuntimeError::new(
            RuntimeErrorKind::Engine,
            format!("reading volume {volume} from its directory stopped"),
        ),
    }
}

pub(super) struct Out {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, RuntimeError>>,
    buf: BytesMut,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), WalkError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// The end-of-archive marker, and what is left in the buffer.
    fn end(&mut self) -> Result<(), WalkError> {
        self.put(&ZERO_BLOCK)?;
        self.put(&ZERO_BLOCK)?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), WalkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| WalkError::Closed)
    }

    /// Read exactly `size` bytes of `file` into the stream, then its padding.
    fn content(&mut self, path: &Path, size: u64) -> Result<(), WalkError> {
        read_sized(path, size, |file, want| {
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let n = file.read(&mut self.buf[start..]).map_err(at(path))?;
            self.buf.truncate(start + n);
            if self.buf.len() >= CHUNK {
                self.flush()?;
            }
            Ok(n)
        })?;
        self.put(&ZERO_BLOCK[..padding(size) as usize])
    }
}

impl Visit for Out {
    /// The entry's header, then a regular file's content.
    fn entry(&mut self, path: &Path, _: &fs::Metadata, entry: Checked) -> Result<(), WalkError> {
        let mut header = Vec::with_capacity(1024);
        encode_header(&entry, Layout::Carrier, &mut header);
        self.put(&header)?;
        if let CheckedKind::File { size } = entry.kind {
            self.content(path, size)?;
        }
        Ok(())
    }
}
