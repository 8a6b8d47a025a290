//! The zstd coding of volume streams on the wire (`channel::compress`), on arbitrary bytes in
//! arbitrary chunks.
//!
//! Properties: decoding hostile bytes never panics and stays bounded (every piece is at most
//! `OUT_CHUNK`; the target stops reading after 8 MiB of output); the verdict and the output do
//! not depend on how the input is chunked; the input compressed and decoded again is the input;
//! any prefix of that compressed stream decodes (as a spool's last segment is read back) to a
//! prefix of the input, without an error, and as a whole stream (as an import reads it) to an
//! error unless it is the whole.
//!
//! `cargo +nightly fuzz run -s none -a zstd_stream`
#![no_main]

use bytes::Bytes;
use dockmesh_core::ports::{ByteStream, RuntimeError};
use dockmesh_http::channel::compress::{self, OUT_CHUNK};
use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;

/// Most output bytes read from one decoded stream.
const READ_LIMIT: usize = 8 << 20;

fn chunked(data: &[u8], chunk: usize) -> ByteStream {
    let pieces: Vec<Result<Bytes, RuntimeError>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(pieces).boxed()
}

/// The output of `s` (cut at [`READ_LIMIT`]) and how it ended.
fn drain(mut s: ByteStream) -> (Vec<u8>, Result<(), String>) {
    let mut out = Vec::new();
    async {
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => {
                    assert!(b.len() <= OUT_CHUNK, "a piece of {} bytes", b.len());
                    assert!(!b.is_empty(), "an empty piece");
                    out.extend_from_slice(&b);
                    if out.len() > READ_LIMIT {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.message),
            }
        }
        Ok(())
    }
    .now_or_never()
    .map(|r| (out.clone(), r))
    .expect("an in-memory stream is always ready")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector) * 13 + 1;

    // Hostile compressed bytes, as an agent reads an import's body.
    let whole = drain(compress::decode(chunked(input, input.len())).unwrap());
    let split = drain(compress::decode(chunked(input, chunk)).unwrap());
    if whole.0.len() <= READ_LIMIT && split.0.len() <= READ_LIMIT {
        assert_eq!(whole.1.is_ok(), split.1.is_ok(), "{whole:?} {split:?}");
        if whole.1.is_ok() {
            assert_eq!(whole.0, split.0);
        }
    }
    let prefix = drain(compress::decode_prefix(chunked(input, chunk)).unwrap());
    if let (Ok(()), Ok(())) = (&whole.1, &prefix.1) {
        assert_eq!(whole.0, prefix.0);
    }

    // The input as plain data: coded, then decoded again.
    let coded = drain(compress::encode(chunked(input, chunk), compress::LEVEL).unwrap());
    assert_eq!(coded.1, Ok(()));
    let back = drain(compress::decode(chunked(&coded.0, chunk)).unwrap());
    assert_eq!(back.1, Ok(()));
    assert_eq!(back.0, input);

    // A cut of the coded stream: a prefix of the input, quietly, when read as a spool's
    // segment; an error when read as a whole stream (unless nothing was cut).
    let cut = usize::from(selector) * coded.0.len() / 256;
    let part = &coded.0[..cut];
    let kept = drain(compress::decode_prefix(chunked(part, chunk)).unwrap());
    assert_eq!(kept.1, Ok(()));
    assert!(input.starts_with(&kept.0));
    let strict = drain(compress::decode(chunked(part, chunk)).unwrap());
    if cut > 0 {
        assert!(strict.1.is_err(), "a cut frame decoded without an error");
    }
});
