//! What both ends of the agent API agree on: the error body, header names, path encoding.

use axum::http;
use bytes::{Bytes, BytesMut};
use dockmesh_core::ports::{ByteStream, RuntimeError, RuntimeErrorKind};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The header of an export's answer naming the export, for fetching its manifest afterwards.
pub const EXPORT_ID: &str = "x-dockmesh-export-id";

/// The header of an import's request carrying its [`VolumeTarget`] as hex-encoded JSON (labels
/// may hold any text; header values may not).
///
/// [`VolumeTarget`]: dockmesh_core::ports::VolumeTarget
pub const VOLUME_TARGET: &str = "x-dockmesh-volume-target";

/// The header of an export's request asking for the stream from this byte on (the bytes
/// before it are read but not sent); the answer repeats it, so a server knows the agent did.
pub const EXPORT_FROM: &str = "x-dockmesh-export-from";

/// The header of an import's request that goes on with the import waiting at this byte.
pub const RESUME_AT: &str = "x-dockmesh-resume-at";

/// The header of an import's request asking it to answer at once with its progress as it goes:
/// one [`ImportLine`] per line (`application/x-ndjson`), its manifest or its error last. An
/// agent that predates it answers with the manifest alone, at the end.
pub const PROGRESS: &str = "x-dockmesh-progress";

/// The value of [`PROGRESS`] that asks for lines.
pub const PROGRESS_LINES: &str = "lines";

/// The longest line of an import's answer either end accepts (the manifest's line holds every
/// entry of the volume).
pub const IMPORT_LINE_LIMIT: usize = 64 << 20;

/// The largest HTTP/2 frame payload either end of the channel accepts (HTTP/2's default is
/// 16 KiB): a volume's stream then moves in pieces this large, and each piece is handed from
/// task to task and thread to thread once rather than in sixteen pieces.
pub const MAX_FRAME: u32 = 256 << 10;

/// How many bytes of one stream either end lets the other send ahead of what it has taken:
/// the most a transfer holds in flight on each hop.
pub const STREAM_WINDOW: u32 = 4 << 20;

/// How many bytes of all its streams together either end lets the other send ahead.
pub const CONNECTION_WINDOW: u32 = 8 << 20;

/// One line of an import's answer in lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportLine {
    /// The bytes of the plain stream the import has taken in, from the stream's start.
    Taken(u64),
    /// The import ended: the manifest of what the volume holds.
    Manifest(dockmesh_core::manifest::VolumeManifest),
    /// The import failed.
    Error(WireError),
}

/// One import line as its bytes (JSON and a newline).
pub fn import_line(line: &ImportLine) -> Bytes {
    json_line(line)
}

/// `value` as JSON and a newline.
fn json_line(value: &impl Serialize) -> Bytes {
    let mut out = serde_json::to_vec(value).expect("a wire message serialises");
    out.push(b'\n');
    Bytes::from(out)
}

/// The non-blank lines of `body`, each at most `limit` bytes.
fn text_lines<E>(
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    limit: usize,
) -> impl Stream<Item = Result<String, tokio_util::codec::LinesCodecError>> + Send + 'static
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tokio_util::codec::{FramedRead, LinesCodec};
    let reader = tokio_util::io::StreamReader::new(body.map(|r| r.map_err(std::io::Error::other)));
    FramedRead::new(reader, LinesCodec::new_with_max_length(limit))
        .filter(|line| futures_util::future::ready(!matches!(line, Ok(l) if l.trim().is_empty())))
}

/// The lines of an import's answer. A line over [`IMPORT_LINE_LIMIT`] or one not understood is
/// an [`RuntimeErrorKind::Engine`] error naming it, a broken body an
/// [`RuntimeErrorKind::Unreachable`] one; the lines end there.
pub fn import_lines<E>(
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> futures_util::stream::BoxStream<'static, Result<ImportLine, RuntimeError>>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tokio_util::codec::LinesCodecError;
    let mut failed = false;
    text_lines(body, IMPORT_LINE_LIMIT)
        .map(|line| match line {
            Ok(line) => serde_json::from_str::<ImportLine>(&line).map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Engine,
                    format!(
                        "a line of the import's answer is not understood ({e}): {}",
                        line.chars().take(200).collect::<String>()
                    ),
                )
            }),
            Err(LinesCodecError::MaxLineLengthExceeded) => Err(RuntimeError::new(
                RuntimeErrorKind::Engine,
                format!(
                    "a line of the import's answer is over {} MiB",
                    IMPORT_LINE_LIMIT >> 20
                ),
            )),
            Err(LinesCodecError::Io(e)) => Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!("the import's answer broke: {e}"),
            )),
        })
        .take_while(move |item| {
            let go = !failed;
            failed |= item.is_err();
            futures_util::future::ready(go)
        })
        .boxed()
}

/// Where an import waits (`GET /v1/volumes/{volume}/import` → `ResumePoint`; 404 when none does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The bytes of the stream the import took in.
    pub waiting_at: u64,
}

/// `stream` without its first `offset` bytes; an [`RuntimeErrorKind::Integrity`] error when it
/// ends before them.
pub fn skip_bytes(stream: ByteStream, offset: u64) -> ByteStream {
    futures_util::stream::unfold(Some((stream, offset)), move |state| async move {
        let (mut stream, mut left) = state?;
        loop {
            match stream.next().await {
                Some(Ok(chunk)) if left >= chunk.len() as u64 => left -= chunk.len() as u64,
                Some(Ok(chunk)) => {
                    let at = usize::try_from(left).expect("less than a chunk's length");
                    return Some((Ok(chunk.slice(at..)), Some((stream, 0))));
                }
                Some(Err(e)) => return Some((Err(e), Some((stream, left)))),
                None if left == 0 => return None,
                None => {
                    let e = RuntimeError::new(
                        RuntimeErrorKind::Integrity,
                        format!(
                            "the volume's stream ended {left} bytes before byte {offset}, \
                             where the transfer was to go on"
                        ),
                    );
                    return Some((Err(e), None));
                }
            }
        }
    })
    .boxed()
}

/// Where the server tells a refused agent why (`POST`, a [`Refusal`]), before it closes the
/// connection.
pub const REFUSED_PATH: &str = "/v1/refused";

/// Why the server refused an agent's connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// `protocol` (the agent's protocol is outside the server's window: upgrade it by hand),
    /// `not_admitted` (the agent was removed or is not known: enroll it again), `unavailable`
    /// (the server cannot decide now: retry); an unknown kind is read as permanent.
    pub kind: String,
    /// The server's reason, for the operator.
    pub reason: String,
}

impl Refusal {
    /// Refused for its protocol version.
    pub fn protocol(reason: &str) -> Refusal {
        Refusal {
            kind: "protocol".into(),
            reason: reason.into(),
        }
    }

    /// Not admitted now because the server cannot decide (its store does not answer).
    pub fn unavailable(reason: &str) -> Refusal {
        Refusal {
            kind: "unavailable".into(),
            reason: reason.into(),
        }
    }

    /// Whether the agent should try again later as it is.
    pub fn is_transient(&self) -> bool {
        self.kind == "unavailable"
    }

    /// Refused because the server does not admit it.
    pub fn not_admitted(reason: &str) -> Refusal {
        Refusal {
            kind: "not_admitted".into(),
            reason: reason.into(),
        }
    }
}

/// A [`RuntimeError`] as it travels: its kind and its message, with a non-2xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// The kind, snake case (`not_found`, `unreachable`, …). An unknown kind reads as `engine`.
    pub kind: String,
    /// What happened, for a person.
    pub message: String,
}

impl WireError {
    /// The error as it travels.
    pub fn of(e: &RuntimeError) -> WireError {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "engine".into());
        WireError {
            kind,
            message: e.message.clone(),
        }
    }

    /// The error rebuilt on the receiving end.
    pub fn into_runtime_error(self) -> RuntimeError {
        let kind = serde_json::from_value(serde_json::Value::String(self.kind))
            .unwrap_or(RuntimeErrorKind::Engine);
        RuntimeError::new(kind, self.message)
    }
}

/// The HTTP status an error of `kind` is answered with (the body says the kind exactly).
pub fn status_of(kind: RuntimeErrorKind) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        RuntimeErrorKind::Unreachable => S::BAD_GATEWAY,
        RuntimeErrorKind::NotFound => S::NOT_FOUND,
        RuntimeErrorKind::InvalidStack => S::UNPROCESSABLE_ENTITY,
        RuntimeErrorKind::Conflict => S::CONFLICT,
        RuntimeErrorKind::Unhealthy => S::SERVICE_UNAVAILABLE,
        RuntimeErrorKind::Integrity => S::UNPROCESSABLE_ENTITY,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

/// `s` as one path segment: every byte outside RFC 3986's unreserved set percent-encoded.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The most bytes [`coalesce`] joins into one chunk.
pub const COALESCE_BYTES: usize = 64 << 10;

/// `stream` with the chunks that are ready together joined, up to [`COALESCE_BYTES`] each, so a
/// source of many small chunks does not become as many HTTP/2 DATA frames. It never waits for
/// more data to fill a chunk: what is ready is sent.
pub fn coalesce(stream: ByteStream) -> ByteStream {
    Coalesce {
        inner: Some(stream),
        held: None,
    }
    .boxed()
}

struct Coalesce {
    inner: Option<ByteStream>,
    /// An error or the end, seen after data that was sent first.
    held: Option<Option<RuntimeError>>,
}

impl Stream for Coalesce {
    type Item = Result<Bytes, RuntimeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(held) = self.held.take() {
            self.inner = None;
            return Poll::Ready(held.map(Err));
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        loop {
            let size = first.as_ref().map_or(0, Bytes::len) + joined.len();
            if size >= COALESCE_BYTES {
                break;
            }
            match inner.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(b))) if first.is_none() => first = Some(b),
                Poll::Ready(Some(Ok(b))) => joined.extend_from_slice(&b),
                Poll::Ready(end_or_err) => {
                    let held = end_or_err.map(|r| r.expect_err("data is matched above"));
                    if first.is_none() {
                        self.inner = None;
                        return Poll::Ready(held.map(Err));
                    }
                    self.held = Some(held);
                    break;
                }
                Poll::Pending if first.is_none() => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        let first = first.expect("a chunk was read");
        if joined.is_empty() {
            return Poll::Ready(Some(Ok(first)));
        }
        let mut all = BytesMut::with_capacity(first.len() + joined.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&joined);
        Poll::Ready(Some(Ok(all.freeze())))
    }
}

/// Where the agent streams its host's events (`GET`): one [`HostEvent`] as JSON per line
/// (`application/x-ndjson`), for as long as the server holds the request open.
///
/// [`HostEvent`]: dockmesh_core::ports::HostEvent
pub const EVENTS_PATH: &str = "/v1/events";

/// The longest event line either end accepts.
pub const EVENT_LINE_LIMIT: usize = 64 << 10;

/// One event as its line (JSON and a newline).
pub fn event_line(event: &dockmesh_core::ports::HostEvent) -> Bytes {
    json_line(event)
}

/// The events in a stream of lines from host `host`. A line that is not an event is an
/// [`RuntimeErrorKind::Integrity`] item naming the problem, and the stream goes on; a line over
/// [`EVENT_LINE_LIMIT`] or a broken body is a [`RuntimeErrorKind::Unreachable`] item, and the
/// stream ends there.
pub fn event_lines<E>(
    host: &dockmesh_core::HostId,
    body: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
) -> dockmesh_core::ports::EventStream
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use tokio_util::codec::LinesCodecError;
    let host = host.clone();
    let mut broken = false;
    text_lines(body, EVENT_LINE_LIMIT)
        .map(move |line| match line {
            Ok(line) => serde_json::from_str(&line).map_err(|e| {
                RuntimeError::new(
                    RuntimeErrorKind::Integrity,
                    format!(
                        "host {host} sent an event that is not understood ({e}): {}",
                        line.chars().take(200).collect::<String>()
                    ),
                )
            }),
            Err(LinesCodecError::MaxLineLengthExceeded) => Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!(
                    "host {host} sent an event line over {} KiB; its event stream is closed",
                    EVENT_LINE_LIMIT >> 10
                ),
            )),
            Err(LinesCodecError::Io(e)) => Err(RuntimeError::new(
                RuntimeErrorKind::Unreachable,
                format!("the event stream of host {host} broke: {e}"),
            )),
        })
        .take_while(move |item| {
            let go = !broken;
            broken |= matches!(item, Err(e) if e.kind == RuntimeErrorKind::Unreachable);
            futures_util::future::ready(go)
        })
        .boxed()
}

// Renewing an agent's certificate (`crate::server::renew`, `crate::agent::renew`).

/// The agent's answer to `POST /v1/certificate/request`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewalRequest {
    /// A PKCS#10 request (PEM) for the agent's new, pending key.
    pub csr_pem: String,
}

/// The body of `PUT /v1/certificate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Renewed {
    /// The new certificate (PEM) for the pending key.
    pub cert_pem: String,
    /// The CA's certificate (PEM).
    pub ca_pem: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    fn ok(b: &'static [u8]) -> Result<Bytes, RuntimeError> {
        Ok(Bytes::from_static(b))
    }

    async fn collect(s: ByteStream) -> Vec<Result<Vec<u8>, String>> {
        s.map(|r| r.map(|b| b.to_vec()).map_err(|e| e.message))
            .collect()
            .await
    }

    #[tokio::test]
    async fn coalesce_joins_ready_chunks_and_keeps_an_error_after_the_data() {
        let s = stream::iter(vec![ok(b"ab"), ok(b"c"), ok(b"d")]).boxed();
        assert_eq!(collect(coalesce(s)).await, vec![Ok(b"abcd".to_vec())]);

        let err = RuntimeError::new(RuntimeErrorKind::Integrity, "broke");
        let s = stream::iter(vec![ok(b"ab"), ok(b"c"), Err(err), ok(b"never")]).boxed();
        assert_eq!(
            collect(coalesce(s)).await,
            vec![Ok(b"abc".to_vec()), Err("broke".into())],
            "the data before an error is sent, then the error, then nothing"
        );

        let empty = stream::iter(Vec::<Result<Bytes, RuntimeError>>::new()).boxed();
        assert!(collect(coalesce(empty)).await.is_empty());
    }

    #[tokio::test]
    async fn coalesce_bounds_its_chunks() {
        let chunk = vec![1u8; 1000];
        let n = 3 * COALESCE_BYTES / 1000;
        let s = stream::iter((0..n).map(move |_| Ok(Bytes::from(chunk.clone())))).boxed();
        let out = collect(coalesce(s)).await;
        assert!(out.len() >= 3);
        let sizes: Vec<usize> = out.into_iter().map(|c| c.unwrap().len()).collect();
        assert!(
            sizes.iter().all(|&s| s < COALESCE_BYTES + 1000),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), n * 1000);
    }

    #[test]
    fn errors_keep_their_kind_and_an_unknown_kind_is_engine() {
        for kind in [
            RuntimeErrorKind::Unreachable,
            RuntimeErrorKind::NotFound,
            RuntimeErrorKind::InvalidStack,
            RuntimeErrorKind::Conflict,
            RuntimeErrorKind::Unhealthy,
            RuntimeErrorKind::Integrity,
            RuntimeErrorKind::Engine,
        ] {
            let wire = WireError::of(&RuntimeError::new(kind, "m"));
            assert!(!status_of(kind).is_success());
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireError = serde_json::from_str(&json).unwrap();
            let e = back.into_runtime_error();
            assert_eq!((e.kind, e.message.as_str()), (kind, "m"));
        }
        let newer = WireError {
            kind: "quota_exceeded".into(),
            message: "m".into(),
        };
        assert_eq!(newer.into_runtime_error().kind, RuntimeErrorKind::Engine);
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("web_data-1.x~"), "web_data-1.x~");
        assert_eq!(segment("a b/c?d%"), "a%20b%2Fc%3Fd%25");
        assert_eq!(segment("é"), "%C3%A9");
    }

    fn host_event(n: i64) -> dockmesh_core::ports::HostEvent {
        dockmesh_core::ports::HostEvent {
            at: jiff::Timestamp::from_second(1_700_000_000 + n).unwrap(),
            stack: "shop".into(),
            service: None,
            container: format!("shop-db-{n}"),
            action: "die".into(),
            exit_code: Some(n),
        }
    }

    async fn events_of(
        chunks: Vec<Result<Bytes, std::io::Error>>,
    ) -> Vec<Result<i64, RuntimeError>> {
        event_lines(&"h".into(), stream::iter(chunks))
            .map(|r| r.map(|e| e.exit_code.unwrap()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn events_come_out_whole_however_the_lines_are_cut() {
        let mut all = Vec::new();
        for n in 0..5 {
            all.extend_from_slice(&event_line(&host_event(n)));
            all.extend_from_slice(b"\n");
        }
        for cut in [1, 3, 17, 64, all.len()] {
            let chunks = all
                .chunks(cut)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let got: Vec<i64> = events_of(chunks)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, [0, 1, 2, 3, 4], "pieces of {cut}");
        }
    }

    #[tokio::test]
    async fn a_line_not_understood_is_named_and_skipped() {
        let mut body = event_line(&host_event(1)).to_vec();
        body.extend_from_slice(b"{\"kind\": \"from the future\"}\n");
        body.extend_from_slice(&event_line(&host_event(2)));
        let got = events_of(vec![Ok(Bytes::from(body))]).await;
        assert_eq!(got.len(), 3);
        assert_eq!(*got[0].as_ref().unwrap(), 1);
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.kind, RuntimeErrorKind::Integrity);
        assert!(
            e.message
                .contains("host h sent an event that is not understood"),
            "{e}"
        );
        assert!(e.message.contains("from the future"), "{e}");
        assert_eq!(*got[2].as_ref().unwrap(), 2);
    }

    #[tokio::test]
    async fn an_endless_line_or_a_broken_body_ends_the_stream_with_the_reason() {
        let huge = vec![b'x'; EVENT_LINE_LIMIT + 10];
        let mut after = huge.clone();
        after.push(b'\n');
        after.extend_from_slice(&event_line(&host_event(1)));
        let got = events_of(vec![Ok(Bytes::from(after))]).await;
        assert_eq!(got.len(), 1, "nothing after the refused line");
        let e = got[0].as_ref().unwrap_err();
        assert_eq!(e.kind, RuntimeErrorKind::Unreachable);
        assert!(e.message.contains("over 64 KiB"), "{e}");

        let got = events_of(vec![
            Ok(event_line(&host_event(1))),
            Err(std::io::Error::other("connection reset")),
            Ok(event_line(&host_event(2))),
        ])
        .await;
        assert_eq!(got.len(), 2);
        assert_eq!(*got[0].as_ref().unwrap(), 1);
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.kind, RuntimeErrorKind::Unreachable);
        assert!(e.message.contains("connection reset"), "{e}");
    }

    async fn import_lines_of(
        chunks: Vec<Result<Bytes, std::io::Error>>,
    ) -> Vec<Result<ImportLine, RuntimeError>> {
        import_lines(stream::iter(chunks)).collect().await
    }

    #[tokio::test]
    async fn import_lines_come_out_whole_and_a_bad_one_ends_them() {
        let manifest = dockmesh_core::manifest::VolumeManifest::default();
        let mut all = Vec::new();
        all.extend_from_slice(&import_line(&ImportLine::Taken(7)));
        all.extend_from_slice(b"\n");
        all.extend_from_slice(&import_line(&ImportLine::Taken(1 << 40)));
        all.extend_from_slice(&import_line(&ImportLine::Manifest(manifest.clone())));
        for cut in [1, 5, all.len()] {
            let chunks = all
                .chunks(cut)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let got: Vec<ImportLine> = import_lines_of(chunks)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(
                got,
                [
                    ImportLine::Taken(7),
                    ImportLine::Taken(1 << 40),
                    ImportLine::Manifest(manifest.clone())
                ],
                "pieces of {cut}"
            );
        }
        let err = WireError::of(&RuntimeError::new(RuntimeErrorKind::Integrity, "bad tar"));
        let line = import_line(&ImportLine::Error(err.clone()));
        let got = import_lines_of(vec![Ok(line)]).await;
        assert_eq!(got.len(), 1);
        assert_eq!(*got[0].as_ref().unwrap(), ImportLine::Error(err));

        // A line not understood ends the lines, named; so does a broken body.
        let got = import_lines_of(vec![
            Ok(import_line(&ImportLine::Taken(1))),
            Ok(Bytes::from_static(b"{\"taken\": \"many\"}\n")),
            Ok(import_line(&ImportLine::Taken(2))),
        ])
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(*got[0].as_ref().unwrap(), ImportLine::Taken(1));
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.kind, RuntimeErrorKind::Engine);
        assert!(
            e.message.contains("not understood") && e.message.contains("many"),
            "{e}"
        );
        let got = import_lines_of(vec![
            Ok(import_line(&ImportLine::Taken(1))),
            Err(std::io::Error::other("connection reset")),
            Ok(import_line(&ImportLine::Taken(2))),
        ])
        .await;
        assert_eq!(got.len(), 2, "{got:?}");
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.kind, RuntimeErrorKind::Unreachable);
        assert!(e.message.contains("connection reset"), "{e}");
    }

    #[tokio::test]
    async fn skipping_leaves_out_exactly_the_first_bytes_or_says_the_stream_is_short() {
        let data: Vec<u8> = (0u8..40).collect();
        let chunks = || -> ByteStream {
            stream::iter(
                data.chunks(7)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect::<Vec<_>>(),
            )
            .boxed()
        };
        for offset in [0u64, 1, 6, 7, 8, 21, 39, 40] {
            let got: Vec<u8> = collect(skip_bytes(chunks(), offset))
                .await
                .into_iter()
                .flat_map(Result::unwrap)
                .collect();
            assert_eq!(got, data[offset as usize..], "from {offset}");
        }
        let got = collect(skip_bytes(chunks(), 45)).await;
        assert_eq!(got.len(), 1);
        let e = got[0].as_ref().unwrap_err();
        assert!(e.contains("ended 5 bytes before byte 45"), "{e}");
    }
}
