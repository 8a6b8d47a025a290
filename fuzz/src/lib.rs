//! What several fuzz targets share.

use bytes::Bytes;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_docker::volume::{Layout, Limits, StreamError, TarTransform};
use std::path::Path;
use std::sync::OnceLock;

/// A temporary directory for this process's inputs, removed at exit.
pub fn scratch() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
        .path()
}

/// A current-thread runtime (with a blocking pool) for targets that call async code.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

/// What the tar checker made of a stream.
pub struct Outcome {
    /// Its verdict and manifest.
    pub result: Result<Option<VolumeManifest>, StreamError>,
    /// What it wrote out.
    pub output: Vec<u8>,
}

/// `input` (in `from` layout) pushed through the tar checker in pieces of `chunk` bytes,
/// written out in `to` layout, with its manifest.
pub fn check_tar(input: &[u8], from: Layout, to: Option<Layout>, chunk: usize) -> Outcome {
    let mut t = TarTransform::new(from, to, Limits::default()).with_manifest();
    let mut output = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        let pushed = t.push(Bytes::copy_from_slice(piece));
        while let Some(b) = t.pop() {
            output.extend_from_slice(&b);
        }
        if let Err(e) = pushed {
            return Outcome {
                result: Err(e),
                output,
            };
        }
    }
    let result = t.finish();
    while let Some(b) = t.pop() {
        output.extend_from_slice(&b);
    }
    Outcome { result, output }
}
