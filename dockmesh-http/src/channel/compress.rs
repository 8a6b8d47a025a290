//! zstd on the wire for volume streams (`content-encoding: zstd`).
//!
//! The server asks for a compressed export with `accept-encoding: zstd` and sends a compressed
//! import with `content-encoding: zstd`; the agent answers or reads accordingly. Both ends code
//! the stream as it flows, one step at a time: each step takes what the coder can consume of
//! the current input chunk and yields at most [`OUT_CHUNK`] bytes, so memory stays bounded
//! whatever the ratio (a small compressed chunk that expands to gigabytes is yielded in
//! [`OUT_CHUNK`] pieces as the reader asks for them). A compressed stream that ends in the
//! middle of its frame is an error, never a short volume.

use bytes::Bytes;
use dockmesh_core::ports::{ByteStream, RuntimeError, RuntimeErrorKind};
use futures_util::StreamExt;
use zstd::stream::raw::{Decoder, Encoder, InBuffer, Operation, OutBuffer};

/// The content coding's name in `accept-encoding` / `content-encoding`.
pub const ZSTD: &str = "zstd";

/// The compression level: 1, zstd's fastest standard level (hundreds of MB/s per core), so the
/// wire rather than the CPU stays the limit.
pub const LEVEL: i32 = 1;

/// The most output one step yields.
pub const OUT_CHUNK: usize = 128 << 10;

/// Whether a header value (`accept-encoding` or `content-encoding`) names zstd.
pub fn names_zstd(value: Option<&axum::http::HeaderValue>) -> bool {
    value.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').any(|c| {
            c.split(';')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case(ZSTD))
        })
    })
}

enum Kind {
    Encode(Encoder<'static>),
    Decode(Decoder<'static>),
}

struct Coder {
    kind: Kind,
    input: ByteStream,
    chunk: Bytes,
    pos: usize,
    /// The last step filled its output: the coder may hold more.
    more_out: bool,
    /// The decoder has just finished a frame (its hint was 0, and nothing was read or
    /// written since).
    frame_end: bool,
    /// The input has ended.
    ended: bool,
    /// Nothing more to yield.
    done: bool,
    /// A frame cut short at the end of the input ends the output quietly (a prefix kept on
    /// disk, read back).
    prefix: bool,
}

fn coding_error(what: &str, e: std::io::Error) -> RuntimeError {
    RuntimeError::new(
        RuntimeErrorKind::Integrity,
        format!("the zstd {what} of a volume stream failed: {e}"),
    )
}

impl Coder {
    fn new(kind: Kind, input: ByteStream) -> Coder {
        Coder {
            kind,
            input,
            chunk: Bytes::new(),
            pos: 0,
            more_out: false,
            frame_end: true,
            ended: false,
            done: false,
            prefix: false,
        }
    }

    fn what(&self) -> &'static str {
        match self.kind {
            Kind::Encode(_) => "compression",
            Kind::Decode(_) => "decompression",
        }
    }

    /// One coding step over the current chunk; the output it produced.
    fn run(&mut self) -> Result<Vec<u8>, RuntimeError> {
        let mut out: Vec<u8> = Vec::with_capacity(OUT_CHUNK);
        let mut ob = OutBuffer::around(&mut out);
        let mut ib = InBuffer::around(&self.chunk[self.pos..]);
        let hint = match &mut self.kind {
            Kind::Encode(e) => e.run(&mut ib, &mut ob),
            Kind::Decode(d) => d.run(&mut ib, &mut ob),
        }
        .map_err(|e| coding_error(self.what(), e))?;
        let produced = ob.pos();
        let consumed = ib.pos();
        self.pos += consumed;
        if hint == 0 {
            self.frame_end = true;
        } else if consumed > 0 || produced > 0 {
            self.frame_end = false;
        }
        self.more_out = produced == OUT_CHUNK;
        Ok(out)
    }

    /// The encoder's epilogue, one step.
    fn finish(&mut self) -> Result<(Vec<u8>, bool), RuntimeError> {
        let mut out: Vec<u8> = Vec::with_capacity(OUT_CHUNK);
        let mut ob = OutBuffer::around(&mut out);
        let left = match &mut self.kind {
            Kind::Encode(e) => e.finish(&mut ob, true),
            Kind::Decode(_) => Ok(0),
        }
        .map_err(|e| coding_error(self.what(), e))?;
        Ok((out, left == 0))
    }

    async fn step(&mut self) -> Option<Result<Bytes, RuntimeError>> {
        loop {
            if self.done {
                return None;
            }
            if self.pos < self.chunk.len() || self.more_out {
                match self.run() {
                    Ok(out) if out.is_empty() => continue,
                    Ok(out) => return Some(Ok(Bytes::from(out))),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if self.ended {
                match &self.kind {
                    Kind::Decode(_) => {
                        self.done = true;
                        if !self.frame_end && !self.prefix {
                            return Some(Err(RuntimeError::new(
                                RuntimeErrorKind::Integrity,
                                "the compressed volume stream ended in the middle of its frame",
                            )));
                        }
                        return None;
                    }
                    Kind::Encode(_) => match self.finish() {
                        Ok((out, finished)) => {
                            self.done = finished;
                            if !out.is_empty() {
                                return Some(Ok(Bytes::from(out)));
                            }
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    },
                }
                continue;
            }
            match self.input.next().await {
                Some(Ok(b)) => {
                    self.chunk = b;
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => self.ended = true,
            }
        }
    }
}

fn coded(coder: Coder) -> ByteStream {
    futures_util::stream::unfold(coder, |mut c| async move {
        let item = c.step().await?;
        Some((item, c))
    })
    .boxed()
}

/// `stream` compressed with zstd at `level`.
pub fn encode(stream: ByteStream, level: i32) -> Result<ByteStream, RuntimeError> {
    let enc = Encoder::new(level).map_err(|e| coding_error("compression", e))?;
    Ok(coded(Coder::new(Kind::Encode(enc), stream)))
}

/// `stream` (one zstd frame or more, back to back) decompressed.
pub fn decode(stream: ByteStream) -> Result<ByteStream, RuntimeError> {
    let dec = Decoder::new().map_err(|e| coding_error("decompression", e))?;
    Ok(coded(Coder::new(Kind::Decode(dec), stream)))
}

/// What `stream`, the start of a zstd stream possibly cut in the middle of a frame, decodes
/// to: everything its complete blocks hold, and no error for the cut.
pub fn decode_prefix(stream: ByteStream) -> Result<ByteStream, RuntimeError> {
    let dec = Decoder::new().map_err(|e| coding_error("decompression", e))?;
    let mut coder = Coder::new(Kind::Decode(dec), stream);
    coder.prefix = true;
    Ok(coded(coder))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks(data: &[u8], sizes: &[usize]) -> ByteStream {
        let mut out = Vec::new();
        let mut rest = data;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].clamp(1, rest.len());
            out.push(Ok(Bytes::copy_from_slice(&rest[..n])));
            rest = &rest[n..];
            i += 1;
        }
        futures_util::stream::iter(out).boxed()
    }

    async fn collect(s: ByteStream) -> Result<Vec<u8>, RuntimeError> {
        let mut v = Vec::new();
        let mut s = s;
        while let Some(b) = s.next().await {
            v.extend_from_slice(&b?);
        }
        Ok(v)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        #[test]
        fn a_stream_survives_compression_in_any_chunking(
            data in proptest::collection::vec(any::<u8>(), 0..200_000),
            repeat in 0usize..4,
            sizes in proptest::collection::vec(1usize..70_000, 1..5),
            back in proptest::collection::vec(1usize..70_000, 1..5),
        ) {
            // Some of it compressible, some not.
            let mut input = data.clone();
            for _ in 0..repeat { input.extend_from_slice(&data[..data.len() / 2]); }
            let out = block_on(async {
                let z = collect(encode(chunks(&input, &sizes), LEVEL).unwrap()).await.unwrap();
                collect(decode(chunks(&z, &back)).unwrap()).await
            }).unwrap();
            prop_assert_eq!(out, input);
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_short_stream() {
        let input: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        block_on(async {
            let z = collect(encode(chunks(&input, &[65536]), LEVEL).unwrap())
                .await
                .unwrap();
            assert!(z.len() < input.len() / 2, "text-like data compresses");
            for cut in [1, z.len() / 2, z.len() - 1] {
                let err = collect(decode(chunks(&z[..cut], &[4096])).unwrap())
                    .await
                    .unwrap_err();
                assert_eq!(err.kind, RuntimeErrorKind::Integrity, "cut at {cut}");
            }
            // Garbage is refused too, naming what failed.
            let err = collect(decode(chunks(b"not zstd at all", &[5])).unwrap())
                .await
                .unwrap_err();
            assert_eq!(err.kind, RuntimeErrorKind::Integrity);
            assert!(
                err.message.contains("zstd decompression"),
                "{}",
                err.message
            );
            // A whole frame followed by the start of a second one is cut short too.
            let mut two = z.clone();
            two.extend_from_slice(&z[..6]);
            let err = collect(decode(chunks(&two, &[4096])).unwrap())
                .await
                .unwrap_err();
            assert_eq!(err.kind, RuntimeErrorKind::Integrity);
            // Two whole frames back to back are two streams' worth.
            let mut both = z.clone();
            both.extend_from_slice(&z);
            let out = collect(decode(chunks(&both, &[4096])).unwrap())
                .await
                .unwrap();
            assert_eq!(out.len(), 2 * input.len());
        });
    }

    #[test]
    fn a_prefix_decodes_to_a_prefix_as_long_as_its_complete_blocks() {
        // 4 MiB of text: many blocks of at most 128 KiB each.
        let input: Vec<u8> = (0..500_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        block_on(async {
            let z = collect(encode(chunks(&input, &[65536]), LEVEL).unwrap())
                .await
                .unwrap();
            let mut last = 0;
            for cut in [0, 1, z.len() / 3, z.len() / 2, z.len() - 1, z.len()] {
                let out = collect(decode_prefix(chunks(&z[..cut], &[4096])).unwrap())
                    .await
                    .unwrap();
                assert_eq!(out, input[..out.len()], "cut at {cut}: not a prefix");
                assert!(out.len() >= last, "a longer cut gave less");
                last = out.len();
            }
            assert_eq!(last, input.len(), "the whole frame gives all");
            let half = collect(decode_prefix(chunks(&z[..z.len() / 2], &[4096])).unwrap())
                .await
                .unwrap();
            assert!(
                half.len() > input.len() / 4,
                "{} of {}",
                half.len(),
                input.len()
            );
            // Garbage is still an error.
            let err = collect(decode_prefix(chunks(b"not zstd at all", &[5])).unwrap())
                .await
                .unwrap_err();
            assert_eq!(err.kind, RuntimeErrorKind::Integrity);
        });
    }

    #[test]
    fn an_expanding_frame_is_yielded_in_bounded_pieces() {
        // 64 MiB of zeros compress to a few KiB; decoding yields it OUT_CHUNK at a time.
        let zeros = vec![0u8; 64 << 20];
        block_on(async {
            let z = collect(encode(chunks(&zeros, &[1 << 20]), LEVEL).unwrap())
                .await
                .unwrap();
            assert!(z.len() < 64 << 10, "{}", z.len());
            let mut s = decode(chunks(&z, &[z.len()])).unwrap();
            let mut total = 0;
            while let Some(b) = s.next().await {
                let b = b.unwrap();
                assert!(b.len() <= OUT_CHUNK);
                total += b.len();
            }
            assert_eq!(total, zeros.len());
        });
    }

    #[test]
    fn the_coding_is_named_in_headers() {
        use axum::http::HeaderValue;
        assert!(names_zstd(Some(&HeaderValue::from_static("zstd"))));
        assert!(names_zstd(Some(&HeaderValue::from_static(
            "gzip, zstd;q=0.5"
        ))));
        assert!(names_zstd(Some(&HeaderValue::from_static("ZSTD"))));
        assert!(!names_zstd(Some(&HeaderValue::from_static("gzip"))));
        assert!(!names_zstd(Some(&HeaderValue::from_static("zstdx"))));
        assert!(!names_zstd(None));
    }
}
