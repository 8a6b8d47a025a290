//! Writing accepted entries out again: one POSIX pax header (a ustar block, preceded by a PAX
//! extension header only when a value does not fit the ustar fields) per entry.
//!
//! Whatever arrived, only these headers leave: the engine never sees the bytes of the incoming
//! headers, so it cannot read them differently from the checker.

use super::policy::{Checked, CheckedKind, Layout};
use super::reader::{BLOCK, Mtime, ZERO_BLOCK, padding};
use tar::{EntryType, Header};

const MAX_OCTAL_8: u64 = 0o7_777_777;
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// Append one PAX record (`"%d %s=%s\n"`, the length counting the whole record).
pub(crate) fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    loop {
        let next = len.to_string().len() + body;
        if next == len {
            break;
        }
        len = next;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// A PAX time, exact to the nanosecond.
pub(crate) fn format_pax_time(t: Mtime) -> String {
    if t.nanos == 0 {
        t.secs.to_string()
    } else if t.secs >= 0 {
        format!("{}.{:09}", t.secs, t.nanos)
    } else {
        // secs + nanos/1e9 < 0: write it as -(|secs + 1|).(1e9 - nanos)
        format!("-{}.{:09}", -(t.secs + 1) as u64, 1_000_000_000 - t.nanos)
    }
}

fn write_field(field: &mut [u8], bytes: &[u8]) {
    let n = bytes.len().min(field.len());
    field[..n].copy_from_slice(&bytes[..n]);
}

/// Append the header block(s) of `e`, named for `layout`.
pub(crate) fn encode_header(e: &Checked, layout: Layout, out: &mut Vec<u8>) {
    let mut name = if e.path.is_empty() {
        layout.root().to_vec()
    } else {
        [layout.prefix(), &e.path].concat()
    };
    let (typ, size, link) = match &e.kind {
        CheckedKind::File { size } => (EntryType::Regular, *size, Vec::new()),
        CheckedKind::Dir => {
            if !e.path.is_empty() {
                name.push(b'/');
            }
            (EntryType::Directory, 0, Vec::new())
        }
        CheckedKind::Symlink { target } => (EntryType::Symlink, 0, target.clone()),
        CheckedKind::HardLink { target } => {
            (EntryType::Link, 0, [layout.prefix(), target].concat())
        }
        CheckedKind::Fifo => (EntryType::Fifo, 0, Vec::new()),
    };

    let mut records = Vec::new();
    if name.len() > 100 {
        pax_record(&mut records, b"path", &name);
    }
    if link.len() > 100 {
        pax_record(&mut records, b"linkpath", &link);
    }
    if size > MAX_OCTAL_12 {
        pax_record(&mut records, b"size", size.to_string().as_bytes());
    }
    if e.uid > MAX_OCTAL_8 {
        pax_record(&mut records, b"uid", e.uid.to_string().as_bytes());
    }
    if e.gid > MAX_OCTAL_8 {
        pax_record(&mut records, b"gid", e.gid.to_string().as_bytes());
    }
    let mtime_fits = e.mtime.nanos == 0 && (0..=MAX_OCTAL_12 as i64).contains(&e.mtime.secs);
    if !mtime_fits {
        pax_record(&mut records, b"mtime", format_pax_time(e.mtime).as_bytes());
    }
    for (key, value) in &e.xattrs {
        pax_record(
            &mut records,
            &[b"SCHILY.xattr.", key.as_slice()].concat(),
            value,
        );
    }

    if !records.is_empty() {
        let mut h = Header::new_ustar();
        write_field(&mut h.as_old_mut().name, b"././@PaxHeader");
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(records.len() as u64);
        h.set_entry_type(EntryType::XHeader);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&records);
        out.extend_from_slice(&ZERO_BLOCK[..padding(records.len() as u64) as usize]);
    }

    let mut h = Header::new_ustar();
    write_field(&mut h.as_old_mut().name, &name);
    write_field(&mut h.as_old_mut().linkname, &link);
    h.set_mode(e.mode & 0o7777);
    h.set_uid(if e.uid > MAX_OCTAL_8 { 0 } else { e.uid });
    h.set_gid(if e.gid > MAX_OCTAL_8 { 0 } else { e.gid });
    h.set_size(if size > MAX_OCTAL_12 { 0 } else { size });
    h.set_mtime(if mtime_fits { e.mtime.secs as u64 } else { 0 });
    h.set_entry_type(typ);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    debug_assert_eq!(out.len() % BLOCK, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"abc");
        assert_eq!(out, b"12 path=abc\n");
        for n in 0..1200 {
            let mut out = Vec::new();
            pax_record(&mut out, b"k", &vec![b'v'; n]);
            let len: usize = std::str::from_utf8(out.split(|&b| b == b' ').next().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, out.len(), "value of {n} bytes");
        }
    }

    #[test]
    fn pax_times_round_trip() {
        for (secs, nanos) in [
            (0, 0),
            (5, 1),
            (-1, 500_000_000),
            (-2, 1),
            (i64::MAX, 999_999_999),
        ] {
            let t = Mtime { secs, nanos };
            assert_eq!(
                super::super::reader::parse_pax_time(format_pax_time(t).as_bytes()),
                Some(t),
                "{t:?}"
            );
        }
    }
}
