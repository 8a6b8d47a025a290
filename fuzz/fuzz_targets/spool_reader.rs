//! The agent's spool reader (`agent::spool::read_back`): what an import kept on disk gives back
//! after a restart, on an arbitrary `import.json` and arbitrary segment files (plain, zstd, zstd
//! cut anywhere, a record naming more or fewer bytes than the files hold, overlapping or gapped
//! segments, a directory named for another volume).
//!
//! Properties: it never panics; a spool it accepts yields exactly the bytes it announces,
//! without an error; when every segment's plain bytes are known, those bytes are each segment's
//! from its start up to where the next one takes over.
//!
//! `cargo +nightly fuzz run -s none -a spool_reader`
#![no_main]

use arbitrary::Arbitrary;
use dockmesh_fuzz::{runtime, scratch};
use dockmesh_http::agent::spool;
use futures_util::StreamExt;
use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};

#[derive(Debug, Arbitrary)]
struct Segment {
    /// Where it starts in the plain stream (small, so segments meet).
    start: u16,
    /// The record says zstd.
    zstd: bool,
    /// The file holds `content` compressed (else `content` itself).
    compress: bool,
    /// The bytes the record calls durable.
    durable: u16,
    /// The file is cut to this many bytes, when shorter.
    cut: u16,
    content: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// The record as raw bytes instead of the one built from the fields below.
    raw_record: Option<Vec<u8>>,
    volume: String,
    expected_bytes: Option<u64>,
    /// The directory is named for the volume (else for another one).
    named: bool,
    segments: Vec<Segment>,
}

/// What segment `s` holds on disk, and its plain bytes when they are known.
fn file_of(s: &Segment) -> (Vec<u8>, Option<Vec<u8>>) {
    let (mut file, known) = if s.compress {
        (
            zstd::bulk::compress(&s.content, 1).expect("zstd compresses"),
            s.zstd.then(|| s.content.clone()),
        )
    } else {
        (s.content.clone(), (!s.zstd).then(|| s.content.clone()))
    };
    let cut = usize::from(s.cut);
    if cut < file.len() {
        file.truncate(cut);
        if s.zstd {
            return (file, None);
        }
    }
    let known = known.map(|mut k| {
        if !s.zstd {
            k.truncate(file.len().min(usize::from(s.durable)));
        }
        k
    });
    // A zstd segment's durable part may cut its frame too.
    if s.zstd && usize::from(s.durable) < file.len() {
        return (file, None);
    }
    (file, known)
}

/// The plain stream the segments give back from byte 0, when every used segment's plain bytes
/// are known: each segment up to where the next takes over.
fn model(segments: &[(u64, Option<Vec<u8>>)]) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    for (i, (start, plain)) in segments.iter().enumerate() {
        if *start > out.len() as u64 {
            break;
        }
        let plain = plain.as_ref()?;
        let reach = start + plain.len() as u64;
        out.truncate(*start as usize);
        match segments.get(i + 1) {
            Some((next, _)) if *next >= *start && *next <= reach => {
                out.extend_from_slice(&plain[..(next - start) as usize]);
            }
            _ => {
                out.extend_from_slice(plain);
                break;
            }
        }
    }
    Some(out)
}

fn write(dir: &Path, input: &Input) -> Vec<(u64, Option<Vec<u8>>)> {
    std::fs::create_dir_all(dir).expect("the spool directory");
    let mut known = Vec::new();
    let mut segments = Vec::new();
    for (i, s) in input.segments.iter().enumerate() {
        let (file, plain) = file_of(s);
        std::fs::write(dir.join(format!("seg-{i}")), &file).expect("a segment file");
        segments.push(serde_json::json!({
            "start": s.start,
            "coding": if s.zstd { "zstd" } else { "plain" },
            "durable": s.durable,
        }));
        known.push((u64::from(s.start), plain));
    }
    let record = match &input.raw_record {
        Some(raw) => raw.clone(),
        None => serde_json::to_vec(&serde_json::json!({
            "target": {
                "name": input.volume,
                "labels": {},
                "expected_bytes": input.expected_bytes,
            },
            "segments": segments,
        }))
        .expect("a record"),
    };
    std::fs::write(dir.join("import.json"), record).expect("the record");
    known
}

fuzz_target!(|input: Input| {
    if input.volume.len() > 100 || input.segments.len() > 8 {
        return;
    }
    let name = if input.named {
        hex::encode(input.volume.as_bytes())
    } else {
        "6f74686572".to_owned()
    };
    let dir: PathBuf = scratch().join(if name.is_empty() {
        "empty".into()
    } else {
        name
    });
    let known = write(&dir, &input);
    runtime().block_on(async {
        if let Ok(back) = spool::read_back(&dir).await {
            assert!(input.named || back.target.name == "other");
            let mut got = Vec::new();
            let mut prefix = back.prefix;
            while let Some(chunk) = prefix.next().await {
                let chunk = chunk.expect("an accepted spool reads back without an error");
                got.extend_from_slice(&chunk);
            }
            assert_eq!(
                got.len() as u64,
                back.bytes,
                "the prefix is what was announced"
            );
            if input.raw_record.is_none()
                && let Some(expected) = model(&known)
            {
                assert_eq!(got, expected);
            }
        }
    });
    std::fs::remove_dir_all(&dir).expect("the spool directory is removed");
});
