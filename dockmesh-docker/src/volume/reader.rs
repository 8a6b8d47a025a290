//! An incremental tar reader: bytes are pushed in as they arrive, entries come out, and memory
//! stays bounded (one header block plus at most one extension header of `Limits::max_extension`).
//!
//! It reads what the Docker engine writes (Go's `archive/tar`, POSIX pax) and what GNU tar
//! writes, and interprets every header the way Go's reader does, because that is the reader that
//! applies a stream to a volume. Where readers disagree (a GNU long name *and* a PAX path, a
//! directory whose header claims content, a repeated PAX record, STAR headers, sparse files,
//! global headers) the stream is refused rather than guessed at.

use super::Limits;
use super::error::{Refusal, StreamError};
use super::manifest::escape_path;
use bytes::{Buf, Bytes};
use std::collections::HashSet;

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;
/// A block of zeros: the end-of-archive marker and the padding source.
pub(crate) static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];

/// The kinds of entries that get past the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawKind {
    File,
    Dir,
    Symlink,
    HardLink,
    Fifo,
}

/// A modification time: whole seconds (floor) and nanoseconds in `0..1e9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// One entry with every extension header applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// Offset of the entry's first header (extension headers included).
    pub offset: u64,
    pub kind: RawKind,
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub size: u64,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: Mtime,
    /// Extended attributes (`SCHILY.xattr.*`), in stream order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What the reader hands on.
#[derive(Debug)]
pub(crate) enum Event {
    /// A new entry; its content (if any) follows as `Data`, then `EntryEnd`.
    Entry(RawEntry),
    /// Content bytes of the current entry.
    Data(Bytes),
    /// The current entry is complete.
    EntryEnd,
}

#[derive(Debug, Clone, Copy)]
enum ExtKind {
    Pax,
    LongName,
    LongLink,
}

impl ExtKind {
    fn what(self) -> &'static str {
        match self {
            ExtKind::Pax => "PAX",
            ExtKind::LongName => "GNU long name",
            ExtKind::LongLink => "GNU long link",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Extension { kind: ExtKind, size: u64 },
    Content { remaining: u64, pad: u64 },
    Skip { remaining: u64 },
    End,
}

#[derive(Debug, Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<Mtime>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse: bool,
}

#[derive(Debug, Default)]
struct Pending {
    start: Option<u64>,
    pax: Option<Pax>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pax.is_none() && self.long_name.is_none() && self.long_link.is_none()
    }
}

/// The reader's state between two pushes.
#[derive(Debug)]
pub(crate) struct Reader {
    limits: Limits,
    state: State,
    block: [u8; BLOCK],
    filled: usize,
    ext_buf: Vec<u8>,
    ext_name: Vec<u8>,
    pending: Pending,
    offset: u64,
    trailing: u64,
}

/// Zero bytes needed after `size` bytes of content to reach a block boundary.
pub(crate) fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl Reader {
    pub(crate) fn new(limits: Limits) -> Self {
        Reader {
            limits,
            state: State::Header,
            block: [0; BLOCK],
            filled: 0,
            ext_buf: Vec::new(),
            ext_name: Vec::new(),
            pending: Pending::default(),
            offset: 0,
            trailing: 0,
        }
    }

    /// Bytes consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Consume one chunk, handing every event to `sink` in order.
    pub(crate) fn feed(
        &mut self,
        mut chunk: Bytes,
        sink: &mut dyn FnMut(Event) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        while !chunk.is_empty() {
            match self.state {
                State::Header => {
                    let n = (BLOCK - self.filled).min(chunk.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&chunk[..n]);
                    self.filled += n;
                    self.offset += n as u64;
                    chunk.advance(n);
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.header(sink)?;
                    }
                }
                State::Extension { kind, size } => {
                    let want = (size - self.ext_buf.len() as u64) as usize;
                    let n = want.min(chunk.len());
                    self.ext_buf.extend_from_slice(&chunk[..n]);
                    self.offset += n as u64;
                    chunk.advance(n);
                    if self.ext_buf.len() as u64 == size {
                        self.extension_done(kind, size)?;
                    }
                }
                State::Content { remaining, pad } => {
                    let n = remaining.min(chunk.len() as u64) as usize;
                    let data = chunk.split_to(n);
                    self.offset += n as u64;
                    sink(Event::Data(data))?;
                    if remaining == n as u64 {
                        sink(Event::EntryEnd)?;
                        self.state = after(pad);
                    } else {
                        self.state = State::Content {
                            remaining: remaining - n as u64,
                            pad,
                        };
                    }
                }
                State::Skip { remaining } => {
                    let n = remaining.min(chunk.len() as u64) as usize;
                    chunk.advance(n);
                    self.offset += n as u64;
                    self.state = after(remaining - n as u64);
                }
                State::End => {
                    if let Some(i) = chunk.iter().position(|&b| b != 0) {
                        return Err(StreamError::Malformed {
                            offset: self.offset + i as u64,
                            what: "data after the end-of-archive marker".into(),
                        });
                    }
                    self.trailing += chunk.len() as u64;
                    self.offset += chunk.len() as u64;
                    chunk.clear();
                    if self.trailing > self.limits.max_trailing {
                        return Err(StreamError::Malformed {
                            offset: self.offset,
                            what: format!(
                                "more than {} bytes of padding after the end-of-archive marker",
                                self.limits.max_trailing
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The input is over: it must have ended after the end-of-archive marker.
    pub(crate) fn finish(&self) -> Result<(), StreamError> {
        let what = match self.state {
            State::End => return Ok(()),
            State::Header if self.filled == 0 && self.pending.is_empty() => "between two entries",
            State::Header => "inside a header",
            State::Extension { .. } => "inside an extension header",
            State::Content { .. } => "inside a file's content",
            State::Skip { .. } => "inside padding",
        };
        Err(StreamError::Truncated {
            offset: self.offset,
            what,
        })
    }

    fn header(
        &mut self,
        sink: &mut dyn FnMut(Event) -> Result<(), StreamError>,
    ) -> Result<(), StreamError> {
        let start = self.offset - BLOCK as u64;
        let block = self.block;
        let malformed = |what: String| StreamError::Malformed {
            offset: start,
            what,
        };
        if block == ZERO_BLOCK {
            if !self.pending.is_empty() {
                return Err(malformed(
                    "an extension header is followed by the end-of-archive marker".into(),
                ));
            }
            self.state = State::End;
            return Ok(());
        }
        if !checksum_ok(&block).map_err(|e| malformed(format!("checksum field: {e}")))? {
            return Err(malformed("header checksum mismatch".into()));
        }
        let header = tar::Header::from_byte_slice(&block);
        let prefix: &[u8] = if let Some(ustar) = header.as_ustar() {
            if &block[508..512] == b"tar\0" {
                return Err(malformed("STAR headers are not accepted".into()));
            }
            parse_string(&ustar.prefix)
        } else if header.as_gnu().is_some() {
            &[]
        } else {
            return Err(malformed(
                "not a POSIX ustar/pax or GNU tar header (old or unknown format)".into(),
            ));
        };
        let old = header.as_old();
        let own_name = {
            let name = parse_string(&old.name);
            if prefix.is_empty() {
                name.to_vec()
            } else {
                let mut joined = prefix.to_vec();
                joined.push(b'/');
                joined.extend_from_slice(name);
                joined
            }
        };
        let field = |name: &'static str, bytes: &[u8]| {
            parse_numeric(bytes).map_err(|e| malformed(format!("{name} field: {e}")))
        };
        let typeflag = block[156];
        let header_size = field("size", &old.size)?;

        let ext = match typeflag {
            b'x' => Some(ExtKind::Pax),
            b'L' => Some(ExtKind::LongName),
            b'K' => Some(ExtKind::LongLink),
            _ => None,
        };
        if let Some(kind) = ext {
            let refuse = |reason| StreamError::Refused {
                path: escape_path(&own_name),
                offset: start,
                reason,
            };
            let repeated = match kind {
                ExtKind::Pax => self.pending.pax.is_some(),
                ExtKind::LongName => self.pending.long_name.is_some(),
                ExtKind::LongLink => self.pending.long_link.is_some(),
            };
            if repeated {
                return Err(refuse(Refusal::Ambiguous {
                    what: "two extension headers of the same kind for one entry",
                }));
            }
            if header_size > self.limits.max_extension {
                return Err(refuse(Refusal::HeaderTooLarge {
                    what: kind.what(),
                    size: header_size,
                    limit: self.limits.max_extension,
                }));
            }
            self.pending.start.get_or_insert(start);
            self.ext_buf.clear();
            self.ext_name = own_name;
            self.state = State::Extension {
                kind,
                size: header_size,
            };
            if header_size == 0 {
                self.extension_done(kind, 0)?;
            }
            return Ok(());
        }

        let pending = std::mem::take(&mut self.pending);
        let offset = pending.start.unwrap_or(start);
        let pax = pending.pax.unwrap_or_default();
        let ambiguous_name = pending.long_name.is_some() && pax.path.is_some();
        let ambiguous_link = pending.long_link.is_some() && pax.linkpath.is_some();
        let name = pending.long_name.or(pax.path).unwrap_or(own_name);
        let link = pending
            .long_link
            .or(pax.linkpath)
            .unwrap_or_else(|| parse_string(&old.linkname).to_vec());
        let refuse = |reason| StreamError::Refused {
            path: escape_path(&name),
            offset,
            reason,
        };
        if ambiguous_name {
            return Err(refuse(Refusal::Ambiguous {
                what: "both a GNU long name and a PAX path",
            }));
        }
        if ambiguous_link {
            return Err(refuse(Refusal::Ambiguous {
                what: "both a GNU long link and a PAX linkpath",
            }));
        }
        if pax.sparse {
            return Err(refuse(Refusal::Sparse));
        }
        let kind = match typeflag {
            b'0' => RawKind::File,
            b'1' => RawKind::HardLink,
            b'2' => RawKind::Symlink,
            b'5' => RawKind::Dir,
            b'6' => RawKind::Fifo,
            b'S' => return Err(refuse(Refusal::Sparse)),
            b'g' => {
                return Err(refuse(Refusal::Ambiguous {
                    what: "PAX global headers are not accepted",
                }));
            }
            other => {
                return Err(refuse(Refusal::SpecialFile {
                    kind: special_kind(other),
                }));
            }
        };
        let size = pax.size.unwrap_or(header_size);
        let mode = field("mode", &old.mode)?;
        let uid = match pax.uid {
            Some(v) => v,
            None => field("uid", &old.uid)?,
        };
        let gid = match pax.gid {
            Some(v) => v,
            None => field("gid", &old.gid)?,
        };
        let mtime = match pax.mtime {
            Some(v) => v,
            None => Mtime {
                secs: field("mtime", &old.mtime)? as i64,
                nanos: 0,
            },
        };
        if kind != RawKind::File && size != 0 {
            return Err(refuse(Refusal::ContentOnHeaderOnly {
                kind: match kind {
                    RawKind::Dir => "directory",
                    RawKind::Symlink => "symbolic link",
                    RawKind::Fifo => "FIFO",
                    _ => "hard link",
                },
                size,
            }));
        }
        if size > self.limits.max_entry_size {
            return Err(refuse(Refusal::TooLarge {
                size,
                limit: self.limits.max_entry_size,
            }));
        }
        for id in [uid, gid] {
            if id >= u64::from(u32::MAX) {
                return Err(refuse(Refusal::OwnerOutOfRange { id }));
            }
        }
        sink(Event::Entry(RawEntry {
            offset,
            kind,
            name,
            link,
            size,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            mtime,
            xattrs: pax.xattrs,
        }))?;
        if size == 0 {
            sink(Event::EntryEnd)?;
            self.state = State::Header;
        } else {
            self.state = State::Content {
                remaining: size,
                pad: padding(size),
            };
        }
        Ok(())
    }

    fn extension_done(&mut self, kind: ExtKind, size: u64) -> Result<(), StreamError> {
        let offset = self.pending.start.unwrap_or(self.offset);
        let data = std::mem::take(&mut self.ext_buf);
        let refuse = |name: &[u8], reason| StreamError::Refused {
            path: escape_path(name),
            offset,
            reason,
        };
        match kind {
            ExtKind::Pax => {
                let pax = parse_pax(&data).map_err(|e| match e {
                    PaxError::Malformed(what) => StreamError::Malformed {
                        offset,
                        what: format!("PAX header: {what}"),
                    },
                    PaxError::Refused(reason) => refuse(&self.ext_name, reason),
                })?;
                self.pending.pax = Some(pax);
            }
            ExtKind::LongName | ExtKind::LongLink => {
                let value = parse_string(&data);
                if data[value.len()..].iter().any(|&b| b != 0) {
                    return Err(refuse(
                        value,
                        Refusal::Ambiguous {
                            what: "a GNU long name with bytes after its terminating NUL",
                        },
                    ));
                }
                if value.is_empty() {
                    return Err(refuse(
                        &self.ext_name,
                        Refusal::Ambiguous {
                            what: "an empty GNU long name",
                        },
                    ));
                }
                let value = value.to_vec();
                match kind {
                    ExtKind::LongName => self.pending.long_name = Some(value),
                    _ => self.pending.long_link = Some(value),
                }
            }
        }
        self.ext_buf = data;
        self.ext_buf.clear();
        if self.ext_buf.capacity() > 2 * BLOCK {
            self.ext_buf = Vec::new();
        }
        self.state = after(padding(size));
        Ok(())
    }
}

fn after(pad: u64) -> State {
    if pad == 0 {
        State::Header
    } else {
        State::Skip { remaining: pad }
    }
}

fn special_kind(typeflag: u8) -> &'static str {
    match typeflag {
        b'3' => "character device",
        b'4' => "block device",
        b'7' => "contiguous file",
        b'\0' => "pre-POSIX entry (type NUL)",
        b'D' => "GNU dump directory",
        b'M' => "multi-volume continuation",
        b'N' => "GNU old long name",
        b'V' => "volume label",
        _ => "entry of an unknown type",
    }
}

/// A string field: everything up to the first NUL (as Go's reader does).
pub(crate) fn parse_string(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(i) => &field[..i],
        None => field,
    }
}

/// A numeric field: octal padded with spaces or NULs, or positive base-256.
pub(crate) fn parse_numeric(field: &[u8]) -> Result<u64, &'static str> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err("negative base-256 number");
        }
        let mut x: u64 = 0;
        for (i, &c) in field.iter().enumerate() {
            let c = if i == 0 { c & 0x7f } else { c };
            if x >> 56 != 0 {
                return Err("base-256 number overflows");
            }
            x = (x << 8) | u64::from(c);
        }
        if x >> 63 != 0 {
            return Err("base-256 number overflows");
        }
        return Ok(x);
    }
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !pad(b)).unwrap_or(field.len());
    let end = field.iter().rposition(|b| !pad(b)).map_or(start, |i| i + 1);
    let digits = &field[start..end];
    if digits.is_empty() {
        return Ok(0);
    }
    if !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return Err("not an octal number");
    }
    let text = std::str::from_utf8(digits).map_err(|_| "not an octal number")?;
    u64::from_str_radix(text, 8).map_err(|_| "octal number overflows")
}

fn checksum_ok(block: &[u8; BLOCK]) -> Result<bool, &'static str> {
    let want = parse_numeric(&block[148..156])?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    Ok(want == unsigned || i64::try_from(want).is_ok_and(|w| w == signed))
}

enum PaxError {
    Malformed(&'static str),
    Refused(Refusal),
}

fn parse_decimal(value: &[u8]) -> Result<u64, PaxError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(PaxError::Malformed(
            "a number record is not a decimal number",
        ));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(PaxError::Malformed("a number record overflows"))
}

/// A PAX time: `[-]seconds[.fraction]`, as Go's `parsePAXTime` reads it.
pub(crate) fn parse_pax_time(value: &[u8]) -> Option<Mtime> {
    let (negative, value) = match value.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, value),
    };
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &[][..]),
    };
    if int.is_empty() || !int.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: i64 = std::str::from_utf8(int).ok()?.parse().ok()?;
    let mut nanos: u32 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
    }
    if !negative {
        Some(Mtime { secs, nanos })
    } else if nanos == 0 {
        Some(Mtime { secs: -secs, nanos })
    } else {
        Some(Mtime {
            secs: -secs - 1,
            nanos: 1_000_000_000 - nanos,
        })
    }
}

/// PAX records (`"%d %s=%s\n"`, the length counting the whole record), as Go reads them.
fn parse_pax(mut rest: &[u8]) -> Result<Pax, PaxError> {
    let mut pax = Pax::default();
    // A set: a 64 KiB header holds thousands of records, and comparing each with every earlier
    // one would take quadratic time.
    let mut keys: HashSet<&[u8]> = HashSet::new();
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or(PaxError::Malformed("a record has no length"))?;
        let len = &rest[..sp];
        if len.is_empty() || len.len() > 19 || !len.iter().all(u8::is_ascii_digit) {
            return Err(PaxError::Malformed(
                "a record length is not a decimal number",
            ));
        }
        let len: usize = std::str::from_utf8(len)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(PaxError::Malformed("a record length overflows"))?;
        if len < 5 || len > rest.len() || len <= sp + 1 {
            return Err(PaxError::Malformed("a record length is out of range"));
        }
        if rest[len - 1] != b'\n' {
            return Err(PaxError::Malformed("a record does not end with a newline"));
        }
        let record = &rest[sp + 1..len - 1];
        rest = &rest[len..];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or(PaxError::Malformed("a record has no `=`"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if key.is_empty() || key.contains(&0) {
            return Err(PaxError::Malformed("a record key is empty or has a NUL"));
        }
        if !keys.insert(key) {
            return Err(PaxError::Refused(Refusal::Ambiguous {
                what: "a PAX record appears twice",
            }));
        }
        let text_value = |what: &'static str| -> Result<Vec<u8>, PaxError> {
            if value.is_empty() {
                return Err(PaxError::Refused(Refusal::Ambiguous { what }));
            }
            if value.contains(&0) {
                return Err(PaxError::Malformed("a path record has a NUL"));
            }
            Ok(value.to_vec())
        };
        match key {
            b"path" => pax.path = Some(text_value("an empty PAX path")?),
            b"linkpath" => pax.linkpath = Some(text_value("an empty PAX linkpath")?),
            b"size" => pax.size = Some(parse_decimal(value)?),
            b"uid" => pax.uid = Some(parse_decimal(value)?),
            b"gid" => pax.gid = Some(parse_decimal(value)?),
            b"mtime" => {
                pax.mtime = Some(
                    parse_pax_time(value).ok_or(PaxError::Malformed("mtime is not a PAX time"))?,
                );
            }
            b"atime" | b"ctime" => {
                parse_pax_time(value).ok_or(PaxError::Malformed("a time is not a PAX time"))?;
            }
            b"uname" | b"gname" => {
                if value.contains(&0) {
                    return Err(PaxError::Malformed("an owner name record has a NUL"));
                }
            }
            _ => {
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    if name.is_empty() {
                        return Err(PaxError::Malformed("an extended attribute has no name"));
                    }
                    pax.xattrs.push((name.to_vec(), value.to_vec()));
                } else if key.starts_with(b"GNU.sparse.") {
                    pax.sparse = true;
                }
            }
        }
    }
    Ok(pax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields_read_like_go() {
        assert_eq!(parse_numeric(b"0000644\0"), Ok(0o644));
        assert_eq!(parse_numeric(b"  644 \0\0"), Ok(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Ok(0));
        assert_eq!(parse_numeric(b"        "), Ok(0));
        assert!(parse_numeric(b"0008\0\0\0\0").is_err());
        assert!(parse_numeric(b"12\x0034\0\0\0").is_err(), "an inner NUL");
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Ok(256)
        );
        assert!(parse_numeric(&[0xff; 12]).is_err(), "negative");
        assert!(
            parse_numeric(&[
                0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0
            ])
            .is_err(),
            "overflow"
        );
    }

    #[test]
    fn pax_times_read_like_go() {
        let t = |s: &str| parse_pax_time(s.as_bytes());
        assert_eq!(t("12"), Some(Mtime { secs: 12, nanos: 0 }));
        assert_eq!(
            t("12.5"),
            Some(Mtime {
                secs: 12,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            t("-1.25"),
            Some(Mtime {
                secs: -2,
                nanos: 750_000_000
            })
        );
        assert_eq!(t("-3"), Some(Mtime { secs: -3, nanos: 0 }));
        assert_eq!(
            t("1.1234567899"),
            Some(Mtime {
                secs: 1,
                nanos: 123_456_789
            })
        );
        assert_eq!(t(""), None);
        assert_eq!(t("1.x"), None);
        assert_eq!(t("+1"), None);
    }

    #[test]
    fn pax_records_are_length_prefixed_and_may_hold_newlines() {
        let rec = |k: &str, v: &[u8]| {
            let body = [k.as_bytes(), b"=", v, b"\n"].concat();
            let mut n = body.len() + 2;
            loop {
                let candidate = format!("{n} ").len() + body.len();
                if candidate == n {
                    break;
                }
                n = candidate;
            }
            [format!("{n} ").as_bytes(), &body].concat()
        };
        let data = [rec("path", b"a\nb"), rec("size", b"7")].concat();
        let Ok(pax) = parse_pax(&data) else {
            panic!("valid records")
        };
        assert_eq!(pax.path.as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(pax.size, Some(7));
        let twice = [rec("path", b"a"), rec("path", b"b")].concat();
        assert!(matches!(
            parse_pax(&twice),
            Err(PaxError::Refused(Refusal::Ambiguous { .. }))
        ));
        assert!(matches!(
            parse_pax(&rec("path", b"")),
            Err(PaxError::Refused(Refusal::Ambiguous { .. }))
        ));
        assert!(matches!(
            parse_pax(b"8 path=a\n"),
            Err(PaxError::Malformed(_))
        ));
        assert!(matches!(
            parse_pax(b"9 path=a\n"),
            Ok(Pax { path: Some(_), .. })
        ));
        assert!(matches!(
            parse_pax(&rec("GNU.sparse.map", b"0,1")),
            Ok(Pax { sparse: true, .. })
        ));
    }
}
