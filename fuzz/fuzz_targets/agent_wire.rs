//! The agent channel's messages as a peer sends them: event lines, an import's answer lines,
//! and the JSON bodies either end decodes (hello, reports, orders, refusals, errors, the
//! import's target header, the export's manifest, resume points, certificate requests).
//!
//! Properties: nothing panics; a line stream gives an item per non-blank line at most, in any
//! chunking the same items; an event stream ends only after a line over its limit or a broken
//! body, an import's answer at its first error; every message that decodes encodes and decodes
//! again to itself.
//!
//! `cargo +nightly fuzz run -s none -a agent_wire`
#![no_main]

use bytes::Bytes;
use dockmesh_core::HostId;
use dockmesh_core::manifest::VolumeManifest;
use dockmesh_core::ports::{HostEvent, RuntimeErrorKind, VolumeTarget};
use dockmesh_core::protocol::{self, Hello};
use dockmesh_core::rollout::UpgradeOrder;
use dockmesh_http::channel::wire::{
    self, ImportLine, Refusal, RenewalRequest, ResumePoint, WireError,
};
use futures_util::{FutureExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

fn body(
    data: &[u8],
    chunk: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(pieces)
}

fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
    f.now_or_never().expect("an in-memory body is always ready")
}

/// Decodes as `T`, and if it does, encodes and decodes again to the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).expect("a decoded message encodes");
        let again: T = serde_json::from_slice(&text).expect("an encoded message decodes");
        assert_eq!(again, value);
    }
}

fn events(data: &[u8], chunk: usize) -> Vec<Result<HostEvent, (RuntimeErrorKind, String)>> {
    let host = HostId::new("fuzz");
    ready(
        wire::event_lines(&host, body(data, chunk))
            .map(|r| r.map_err(|e| (e.kind, e.message)))
            .collect(),
    )
}

fn import_lines(data: &[u8], chunk: usize) -> Vec<Result<ImportLine, (RuntimeErrorKind, String)>> {
    ready(
        wire::import_lines(body(data, chunk))
            .map(|r| r.map_err(|e| (e.kind, e.message)))
            .collect(),
    )
}

fn lines_in(data: &[u8]) -> usize {
    data.split(|&b| b == b'\n').count()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector >> 4) * 5 + 1;
    match selector % 16 {
        0 => {
            let whole = events(input, input.len());
            assert_eq!(whole, events(input, chunk));
            assert!(whole.len() <= lines_in(input));
            for (i, item) in whole.iter().enumerate() {
                match item {
                    Ok(event) => {
                        let line = wire::event_line(event);
                        assert_eq!(line.last(), Some(&b'\n'));
                        assert_eq!(&events(&line, chunk)[..], &[Ok(event.clone())]);
                    }
                    Err((RuntimeErrorKind::Integrity, _)) => {}
                    Err((RuntimeErrorKind::Unreachable, _)) => {
                        assert_eq!(i + 1, whole.len(), "the stream ends at a broken line");
                    }
                    Err(other) => panic!("an event stream item {other:?}"),
                }
            }
        }
        1 => {
            let whole = import_lines(input, input.len());
            assert_eq!(whole, import_lines(input, chunk));
            assert!(whole.len() <= lines_in(input));
            for (i, item) in whole.iter().enumerate() {
                match item {
                    Ok(line) => {
                        let bytes = wire::import_line(line);
                        assert_eq!(&import_lines(&bytes, chunk)[..], &[Ok(line.clone())]);
                    }
                    Err(_) => assert_eq!(i + 1, whole.len(), "the answer ends at its error"),
                }
            }
        }
        2 => round_trip::<Hello>(input),
        3 => round_trip::<protocol::AgentReport>(input),
        4 => round_trip::<dockmesh_core::rollout::AgentReport>(input),
        5 => round_trip::<UpgradeOrder>(input),
        6 => round_trip::<Refusal>(input),
        7 => {
            round_trip::<WireError>(input);
            if let Ok(e) = serde_json::from_slice::<WireError>(input) {
                let back = WireError::of(&e.clone().into_runtime_error());
                assert_eq!(back.message, e.message);
            }
        }
        8 => {
            // The import's target as its header carries it: hex of JSON.
            if let Ok(json) = hex::decode(input) {
                round_trip::<VolumeTarget>(&json);
            }
            round_trip::<VolumeTarget>(input);
        }
        9 => round_trip::<VolumeManifest>(input),
        10 => round_trip::<ResumePoint>(input),
        11 => {
            if let Ok(r) = serde_json::from_slice::<RenewalRequest>(input) {
                let text = serde_json::to_vec(&r).expect("a decoded message encodes");
                let again: RenewalRequest = serde_json::from_slice(&text).expect("it decodes");
                assert_eq!(again.csr_pem, r.csr_pem);
            }
        }
        _ => {
            if let Some(v) = protocol::parse_alpn(input) {
                assert_eq!(protocol::alpn(v), input);
            }
        }
    }
});
