//! Tests of the stream checker as a whole: legitimate streams go through unchanged in meaning,
//! each kind of hostile entry is refused by name, and no input can make it misbehave.

use super::*;
use bytes::Bytes;
use dockmesh_core::manifest::{EntryKind, VolumeManifest};
use proptest::prelude::*;
use tar::{EntryType, Header};

// ---------------------------------------------------------------------------------------------
// Building streams

/// A raw ustar header with the name and link written byte for byte (no validation at all).
fn raw_header(name: &[u8], typ: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = Header::new_ustar();
    let n = name.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h.as_mut_bytes()[156] = typ;
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    super::writer::pax_record(&mut out, key.as_bytes(), value);
    out
}

/// A PAX extension header with these records.
fn pax_header(records: &[u8]) -> Vec<u8> {
    let mut out = raw_header(b"PaxHeaders/x", b'x', records.len() as u64, b"");
    out.extend_from_slice(records);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// A regular file entry with its content and padding.
fn file(name: &[u8], content: &[u8]) -> Vec<u8> {
    let mut out = raw_header(name, b'0', content.len() as u64, b"");
    out.extend_from_slice(content);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

fn dir(name: &[u8]) -> Vec<u8> {
    raw_header(name, b'5', 0, b"")
}

fn end() -> Vec<u8> {
    vec![0; 1024]
}

fn stream(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Everything a transform produces for `input` pushed in chunks of `chunk` bytes.
struct Run {
    result: Result<Option<VolumeManifest>, StreamError>,
    output: Vec<u8>,
    /// The refusal (if any) came when the input ended, not while it was pushed.
    at_finish: bool,
}

fn run(input: &[u8], from: Layout, to: Option<Layout>, chunk: usize) -> Run {
    let mut t = TarTransform::new(from, to, Limits::default()).with_manifest();
    let mut output = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        if let Err(e) = t.push(Bytes::copy_from_slice(piece)) {
            while let Some(b) = t.pop() {
                output.extend_from_slice(&b);
            }
            return Run {
                result: Err(e),
                output,
                at_finish: false,
            };
        }
        while let Some(b) = t.pop() {
            output.extend_from_slice(&b);
        }
    }
    let result = t.finish();
    while let Some(b) = t.pop() {
        output.extend_from_slice(&b);
    }
    Run {
        at_finish: result.is_err(),
        result,
        output,
    }
}

fn accept(input: &[u8]) -> (VolumeManifest, Vec<u8>) {
    let r = run(input, Layout::Transfer, Some(Layout::Carrier), 4096);
    match r.result {
        Ok(m) => (m.expect("a manifest was asked for"), r.output),
        Err(e) => panic!("refused: {e}"),
    }
}

fn refuse(input: &[u8]) -> StreamError {
    match run(input, Layout::Transfer, Some(Layout::Carrier), 777).result {
        Ok(_) => panic!("accepted a hostile stream"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// A legitimate stream with every kind of entry

/// A stream with every kind of entry the checker accepts, written by the `tar` crate (GNU long
/// names) and by hand (PAX records), as tar tools and the engine write them.
fn every_kind() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let h = |typ: EntryType, mode: u32, uid: u64| {
        let mut h = Header::new_gnu();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_mtime(1_000_000_000);
        h.set_size(0);
        h
    };
    b.append_data(&mut h(EntryType::Directory, 0o700, 999), "./", &[][..])
        .unwrap();
    b.append_data(&mut h(EntryType::Directory, 0o755, 0), "d/", &[][..])
        .unwrap();
    b.append_data(&mut h(EntryType::Directory, 0o1777, 0), "d/empty/", &[][..])
        .unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut fh = h(EntryType::Regular, 0o4755, 123);
    fh.set_size(big.len() as u64);
    b.append_data(&mut fh, "d/big file", &big[..]).unwrap();
    let mut fh = h(EntryType::Regular, 0o644, 0);
    fh.set_size(5);
    b.append_data(&mut fh, "gr\u{fc}n 日本.txt", &b"hello"[..])
        .unwrap();
    let long = format!("d/{}", "long-name-".repeat(20));
    let mut fh = h(EntryType::Regular, 0o600, 0);
    fh.set_size(1);
    b.append_data(&mut fh, &long, &b"x"[..]).unwrap();
    b.append_link(&mut h(EntryType::Symlink, 0o777, 0), "link", "d/big file")
        .unwrap();
    b.append_link(&mut h(EntryType::Link, 0o4755, 123), "hard", "d/big file")
        .unwrap();
    let mut out = b.into_inner().unwrap();
    out.truncate(out.len() - 1024);
    // A non-UTF-8 name with a newline, and large owner ids, through PAX records.
    let records = [
        pax_record("path", b"odd\xff\nname"),
        pax_record("uid", b"3000000"),
        pax_record("gid", b"4000000"),
        pax_record("mtime", b"1234567890.5"),
        pax_record("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
    ]
    .concat();
    out.extend(pax_header(&records));
    out.extend(file(b"ignored", b"pax"));
    out.extend(end());
    out
}

#[test]
fn a_stream_with_every_kind_of_entry_is_accepted_with_its_manifest() {
    let input = every_kind();
    let (m, _) = accept(&input);
    let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    let long = format!("d/{}", "long-name-".repeat(20));
    let mut want = vec![
        ".",
        "d",
        "d/big file",
        "d/empty",
        long.as_str(),
        "gr\u{fc}n 日本.txt",
        "hard",
        "link",
        "odd%FF\nname",
    ];
    want.sort();
    assert_eq!(paths, want);
    let get = |p: &str| m.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(get(".").mode, 0o700);
    assert_eq!((get(".").uid, get(".").gid), (999, 1000));
    assert_eq!(get("d/empty").mode, 0o1777);
    let big = get("d/big file");
    assert_eq!((big.size, big.mode, big.uid), (300_000, 0o4755, 123));
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        big.sha256.as_deref(),
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&content)).as_str())
    );
    assert_eq!(
        get("link").kind,
        EntryKind::Symlink {
            target: "d/big file".into()
        }
    );
    assert_eq!(
        get("hard").kind,
        EntryKind::HardLink {
            target: "d/big file".into()
        }
    );
    let odd = get("odd%FF\nname");
    assert_eq!(
        (odd.uid, odd.gid, odd.mtime),
        (3_000_000, 4_000_000, 1_234_567_890)
    );
}

#[test]
fn the_output_means_the_same_as_the_input_in_both_layouts() {
    let input = every_kind();
    let (m, carrier) = accept(&input);
    // The carrier form names everything under v/ and reads back to the same manifest.
    let back = run(&carrier, Layout::Carrier, Some(Layout::Transfer), 1000);
    let transfer = back.output;
    assert_eq!(back.result.unwrap().unwrap(), m);
    let again = run(&transfer, Layout::Transfer, Some(Layout::Transfer), 3);
    assert_eq!(again.result.unwrap().unwrap(), m);
    assert_eq!(
        again.output, transfer,
        "the canonical form is a fixed point"
    );

    // An independent reader (the tar crate) sees the same names, links, owners and content.
    let mut archive = tar::Archive::new(&carrier[..]);
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path_bytes().into_owned();
        assert!(name.starts_with(b"v/"), "{name:?}");
        if name == b"v/hard" {
            assert_eq!(entry.link_name_bytes().unwrap().as_ref(), b"v/d/big file");
        }
        if name == b"v/link" {
            assert_eq!(entry.link_name_bytes().unwrap().as_ref(), b"d/big file");
        }
        if name == b"v/odd\xff\nname" {
            assert_eq!(
                entry.header().uid().unwrap(),
                3_000_000,
                "read from the PAX record"
            );
            let pax: Vec<(String, Vec<u8>)> = entry
                .pax_extensions()
                .unwrap()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    (e.key().unwrap().to_owned(), e.value_bytes().to_vec())
                })
                .collect();
            assert!(pax.contains(&("uid".into(), b"3000000".to_vec())));
            assert!(pax.contains(&("mtime".into(), b"1234567890.500000000".to_vec())));
            assert!(pax.contains(&(
                "SCHILY.xattr.security.capability".into(),
                b"\x01\x00\x00\x02".to_vec()
            )));
        }
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        if name == b"v/d/big file" {
            assert_eq!(content.len(), 300_000);
        }
        names.push(name);
    }
    assert_eq!(names.len(), 9);
    assert_eq!(names[0], b"v/");
    assert!(transfer.starts_with(b"./\0"));
}

#[test]
fn chunking_does_not_change_anything() {
    let input = every_kind();
    let whole = run(&input, Layout::Transfer, Some(Layout::Carrier), input.len());
    for chunk in [1, 7, 511, 512, 513, 100_000] {
        let r = run(&input, Layout::Transfer, Some(Layout::Carrier), chunk);
        assert_eq!(r.output, whole.output, "chunks of {chunk}");
        assert_eq!(r.result, whole.result, "chunks of {chunk}");
    }
}

#[test]
fn an_empty_volume_is_just_its_root() {
    let (m, out) = accept(&stream(&[dir(b"./"), end()]));
    assert_eq!(m.entries.len(), 1);
    assert_eq!(m.entries[0].path, ".");
    assert_eq!(out.len(), 512 * 3);
}

// ---------------------------------------------------------------------------------------------
// Hostile streams: each is refused, naming the entry

/// Refused with `reason` (its debug form starts with it), naming `path`.
fn check_refused(parts: &[Vec<u8>], path: &str, reason: &str) {
    let mut all = vec![dir(b"./"), file(b"ok", b"fine")];
    all.extend_from_slice(parts);
    all.push(end());
    let input = stream(&all);
    let r = run(&input, Layout::Transfer, Some(Layout::Carrier), 300);
    let e = r.result.expect_err("a hostile stream is refused");
    assert_eq!(e.entry_path(), Some(path), "{e}");
    let got = format!("{:?}", e.refusal().unwrap());
    assert!(got.starts_with(reason), "{path}: got {got}, want {reason}");
    assert!(e.to_string().contains(&format!("{path:?}")), "{e}");
    // Nothing of the refused entry (nor anything after it) reached the output: what was passed
    // on is a prefix of the output of the entries before it. Only a link found to leave the
    // volume by way of other links, when the stream ends, was passed on before the refusal.
    if !r.at_finish {
        // The output of the longest run of leading parts that is accepted on its own.
        let before = (0..parts.len())
            .rev()
            .find_map(|k| {
                let mut t =
                    TarTransform::new(Layout::Transfer, Some(Layout::Carrier), Limits::default());
                let mut head = vec![dir(b"./"), file(b"ok", b"fine")];
                head.extend_from_slice(&parts[..k]);
                t.push(Bytes::from(stream(&head))).ok()?;
                let mut out = Vec::new();
                while let Some(b) = t.pop() {
                    out.extend_from_slice(&b);
                }
                Some(out)
            })
            .unwrap();
        assert!(
            before.starts_with(&r.output),
            "{path}: output after the refusal"
        );
    }
    assert_eq!(r.output.len() % 512, 0);
}

#[test]
fn absolute_paths_and_dot_dot_are_refused() {
    check_refused(&[file(b"/etc/passwd", b"x")], "/etc/passwd", "AbsolutePath");
    check_refused(&[file(b"../escape", b"x")], "../escape", "ParentTraversal");
    check_refused(
        &[dir(b"d/"), file(b"d/../../x", b"x")],
        "d/../../x",
        "ParentTraversal",
    );
    check_refused(&[file(b"./../x", b"x")], "./../x", "ParentTraversal");
}

#[test]
fn hard_links_outside_and_writing_through_links_are_refused() {
    check_refused(
        &[raw_header(b"h", b'1', 0, b"/etc/shadow")],
        "h",
        "HardLinkOutside",
    );
    check_refused(
        &[raw_header(b"h", b'1', 0, b"../x")],
        "h",
        "HardLinkOutside",
    );
    check_refused(
        &[raw_header(b"h", b'1', 0, b"nothing")],
        "h",
        "HardLinkTarget",
    );
    // Writing through a link is refused, wherever the link points.
    check_refused(
        &[
            dir(b"d/"),
            raw_header(b"s", b'2', 0, b"d"),
            file(b"s/x", b"x"),
        ],
        "s/x",
        "BadParent",
    );
    check_refused(
        &[
            raw_header(b"etc", b'2', 0, b"/etc"),
            file(b"etc/passwd", b"x"),
        ],
        "etc/passwd",
        "BadParent",
    );
    check_refused(
        &[raw_header(b"up", b'2', 0, b".."), dir(b"up/x/")],
        "up/x/",
        "BadParent",
    );
    check_refused(&[raw_header(b"s", b'2', 0, b"")], "s", "EmptySymlink");
}

#[test]
fn outside_links_fifos_and_extended_attributes_are_carried_in_the_manifest() {
    let input = stream(&[
        dir(b"./"),
        dir(b"venv/"),
        dir(b"venv/bin/"),
        raw_header(b"venv/bin/python", b'2', 0, b"/usr/bin/python3"),
        raw_header(b"venv/bin/python3", b'2', 0, b"python"),
        raw_header(b"log", b'2', 0, b"../../var/log/app"),
        raw_header(b"spool", b'6', 0, b""),
        pax_header(
            &[
                pax_record("SCHILY.xattr.user.origin", b"hi"),
                pax_record("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
            ]
            .concat(),
        ),
        file(b"ping", b"x"),
        end(),
    ]);
    let (m, out) = accept(&input);
    let get = |p: &str| m.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(
        get("venv/bin/python").kind,
        EntryKind::Symlink {
            target: "/usr/bin/python3".into()
        }
    );
    assert_eq!(get("spool").kind, EntryKind::Fifo);
    assert_eq!(
        m.outside_links(),
        vec![
            ("log".to_owned(), "../../var/log/app".to_owned()),
            ("venv/bin/python".to_owned(), "/usr/bin/python3".to_owned()),
        ]
    );
    let xattrs: Vec<(&str, &str)> = get("ping")
        .xattrs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        xattrs,
        vec![("security.capability", "01000002"), ("user.origin", "6869")]
    );
    // The output carries the links verbatim and the FIFO as a FIFO, and reads back the same.
    let mut archive = tar::Archive::new(&out[..]);
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        seen.push((name, entry.header().entry_type(), link));
    }
    assert!(seen.contains(&(
        "v/venv/bin/python".into(),
        EntryType::Symlink,
        Some("/usr/bin/python3".into())
    )));
    assert!(seen.contains(&("v/spool".into(), EntryType::Fifo, None)));
    let back = run(&out, Layout::Carrier, None, 100);
    assert_eq!(back.result.unwrap().unwrap(), m);
    // Losing an extended attribute on the way is a difference verification sees.
    let lost = run(
        &stream(&[
            dir(b"./"),
            dir(b"venv/"),
            dir(b"venv/bin/"),
            raw_header(b"venv/bin/python", b'2', 0, b"/usr/bin/python3"),
            raw_header(b"venv/bin/python3", b'2', 0, b"python"),
            raw_header(b"log", b'2', 0, b"../../var/log/app"),
            raw_header(b"spool", b'6', 0, b""),
            pax_header(&pax_record(
                "SCHILY.xattr.security.capability",
                b"\x01\x00\x00\x02",
            )),
            file(b"ping", b"x"),
            end(),
        ]),
        Layout::Transfer,
        None,
        512,
    );
    let lost = lost.result.unwrap().unwrap();
    assert_ne!(lost.digest(), m.digest());
    assert!(m.first_difference(&lost).unwrap().contains("\"ping\""));
}

#[test]
fn device_nodes_are_refused_and_fifos_carried() {
    check_refused(&[raw_header(b"null", b'3', 0, b"")], "null", "SpecialFile");
    check_refused(&[raw_header(b"sda", b'4', 0, b"")], "sda", "SpecialFile");
    check_refused(&[raw_header(b"old", 0, 0, b"")], "old", "SpecialFile");
    check_refused(
        &[raw_header(b"pipe", b'6', 3, b""), vec![0; 512]],
        "pipe",
        "ContentOnHeaderOnly",
    );
    accept(&stream(&[
        dir(b"./"),
        raw_header(b"pipe", b'6', 0, b""),
        end(),
    ]));
}

#[test]
fn a_64_kib_pax_header_of_distinct_keys_is_read() {
    // About 8 000 records: a quadratic duplicate check would compare 32 million pairs.
    let mut records = Vec::new();
    let mut i = 0u32;
    loop {
        let r = pax_record(&format!("k{i:x}"), b"");
        if records.len() + r.len() > 64 * 1024 {
            break;
        }
        records.extend(r);
        i += 1;
    }
    assert!(i > 7000, "{i} records");
    let (m, _) = accept(&stream(&[
        dir(b"./"),
        pax_header(&records),
        file(b"f", b"x"),
        end(),
    ]));
    assert_eq!(m.entries.len(), 2);
    // And one repeated key among them is still found.
    let mut dup: Vec<u8> = (0..7000)
        .flat_map(|j| pax_record(&format!("k{j:x}"), b""))
        .collect();
    dup.extend(pax_record("k0", b""));
    check_refused(
        &[pax_header(&dup), file(b"f", b"x")],
        "PaxHeaders/x",
        "Ambiguous",
    );
}

#[test]
fn a_stream_of_long_names_stops_at_the_path_budget() {
    let limits = Limits {
        max_path_bytes: 1 << 20,
        ..Limits::default()
    };
    let mut t = TarTransform::new(Layout::Transfer, Some(Layout::Carrier), limits);
    t.push(Bytes::from(dir(b"./"))).unwrap();
    let mut n = 0u32;
    let err = loop {
        let name = format!("{n:0>255}");
        let entry = [
            pax_header(&pax_record("path", name.as_bytes())),
            file(b"x", b""),
        ]
        .concat();
        match t.push(Bytes::from(entry)) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        while t.pop().is_some() {}
        assert!(n < 100_000, "the budget never tripped");
    };
    assert!(n > 3000, "{n}");
    assert!(
        matches!(err.refusal(), Some(Refusal::PathBudget { limit }) if *limit == 1 << 20),
        "{err}"
    );
    assert!(
        err.to_string().contains("path budget of 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn oversized_headers_and_absurd_sizes_are_refused() {
    let big = vec![b'a'; 70_000];
    check_refused(
        &[pax_header(&pax_record("comment", &big)), file(b"f", b"")],
        "PaxHeaders/x",
        "HeaderTooLarge",
    );
    let mut long = raw_header(b"././@LongLink", b'L', 100_000, b"");
    long.extend(vec![b'n'; 100_352]);
    check_refused(&[long], "././@LongLink", "HeaderTooLarge");
    check_refused(
        &[
            pax_header(&pax_record("size", b"9223372036854775807")),
            file(b"huge", b""),
        ],
        "huge",
        "TooLarge",
    );
    let mut h = Header::new_ustar();
    h.as_old_mut().name[..4].copy_from_slice(b"huge");
    h.set_entry_type(EntryType::Regular);
    h.set_size(1 << 60); // base-256
    h.set_cksum();
    check_refused(&[h.as_bytes().to_vec()], "huge", "TooLarge");
    check_refused(
        &[
            pax_header(&pax_record("uid", b"4294967295")),
            file(b"f", b""),
        ],
        "f",
        "OwnerOutOfRange",
    );
    let long_name = vec![b'n'; 300];
    check_refused(
        &[pax_header(&pax_record("path", &long_name)), file(b"f", b"")],
        std::str::from_utf8(&long_name).unwrap(),
        "NameTooLong",
    );
}

#[test]
fn pax_path_tricks_are_refused() {
    // The ustar name looks harmless; the PAX path, which readers use, is not.
    check_refused(
        &[
            pax_header(&pax_record("path", b"../evil")),
            file(b"harmless", b"x"),
        ],
        "../evil",
        "ParentTraversal",
    );
    check_refused(
        &[
            pax_header(&pax_record("linkpath", b"/etc/passwd")),
            raw_header(b"h", b'1', 0, b"ok"),
        ],
        "h",
        "HardLinkOutside",
    );
    // Two records for one key, or a PAX path and a GNU long name: readers disagree on which wins.
    check_refused(
        &[
            pax_header(&[pax_record("path", b"a"), pax_record("path", b"../b")].concat()),
            file(b"x", b""),
        ],
        "PaxHeaders/x",
        "Ambiguous",
    );
    let mut gnu = raw_header(b"././@LongLink", b'L', 6, b"");
    gnu.extend(b"other\0");
    gnu.resize(1024, 0);
    check_refused(
        &[
            gnu,
            pax_header(&pax_record("path", b"mine")),
            file(b"x", b""),
        ],
        "other",
        "Ambiguous",
    );
    check_refused(
        &[pax_header(&pax_record("path", b"")), file(b"x", b"")],
        "PaxHeaders/x",
        "Ambiguous",
    );
    check_refused(
        &[
            pax_header(&pax_record("GNU.sparse.map", b"0,1")),
            file(b"sparse", b""),
        ],
        "sparse",
        "Sparse",
    );
    check_refused(&[raw_header(b"g", b'g', 0, b"")], "g", "Ambiguous");
    check_refused(
        &[
            raw_header(b"two", b'x', 0, b""),
            raw_header(b"three", b'x', 0, b""),
        ],
        "three",
        "Ambiguous",
    );
}

#[test]
fn extended_attributes_other_than_user_and_capabilities_are_refused() {
    check_refused(
        &[
            pax_header(&pax_record("SCHILY.xattr.trusted.overlay.opaque", b"y")),
            file(b"f", b""),
        ],
        "f",
        "Xattr",
    );
    check_refused(
        &[
            pax_header(&pax_record(
                "SCHILY.xattr.security.selinux",
                b"unconfined_u",
            )),
            dir(b"d/"),
        ],
        "d/",
        "Xattr",
    );
    let records = [
        pax_record("SCHILY.xattr.user.note", b"kept"),
        pax_record("SCHILY.xattr.security.capability", b"\x01"),
    ]
    .concat();
    let (_, out) = accept(&stream(&[
        dir(b"./"),
        pax_header(&records),
        file(b"f", b"x"),
        end(),
    ]));
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("SCHILY.xattr.user.note=kept"),
        "user.* is carried"
    );
    assert!(text.contains("SCHILY.xattr.security.capability="));
}

#[test]
fn content_hidden_behind_a_header_only_entry_is_refused() {
    // Readers that honour the size of a directory would skip the next block as its content;
    // readers that do not (Go's) would extract it. Either way it is refused.
    let mut hidden = dir(b"d/");
    hidden[124..136].copy_from_slice(b"00000001000\0");
    let mut h = Header::from_byte_slice(&hidden).clone();
    h.set_cksum();
    check_refused(
        &[h.as_bytes().to_vec(), file(b"/etc/cron.d/x", b"")],
        "d/",
        "ContentOnHeaderOnly",
    );
}

#[test]
fn duplicates_misplaced_roots_and_missing_parents_are_refused() {
    check_refused(&[file(b"ok", b"again")], "ok", "Duplicate");
    check_refused(&[dir(b"./")], "./", "RootFirst");
    check_refused(&[file(b"nodir/x", b"")], "nodir/x", "BadParent");
    let e = refuse(&stream(&[file(b"first", b""), end()]));
    assert_eq!(e.refusal(), Some(&Refusal::RootFirst));
}

#[test]
fn malformed_and_truncated_streams_are_refused() {
    let mut bad = file(b"f", b"x");
    bad[0] = b'g'; // checksum no longer matches
    let e = refuse(&stream(&[dir(b"./"), bad, end()]));
    assert!(
        matches!(e, StreamError::Malformed { offset: 512, .. }),
        "{e}"
    );

    let e = refuse(&stream(&[dir(b"./"), end(), file(b"after", b"x")]));
    assert!(matches!(e, StreamError::Malformed { .. }), "{e}");

    let e = refuse(&stream(&[dir(b"./"), file(b"f", b"x")]));
    assert!(matches!(e, StreamError::Truncated { .. }), "{e}");

    let mut cut = stream(&[dir(b"./"), file(b"f", &[1; 2000])]);
    cut.truncate(1500);
    let e = refuse(&cut);
    assert!(matches!(e, StreamError::Truncated { .. }), "{e}");

    let mut star = dir(b"./");
    star[508..512].copy_from_slice(b"tar\0");
    let mut h = Header::from_byte_slice(&star).clone();
    h.set_cksum();
    let e = refuse(&stream(&[h.as_bytes().to_vec(), end()]));
    assert!(matches!(e, StreamError::Malformed { .. }), "{e}");

    let mut v7 = dir(b"./");
    v7[257..265].fill(0);
    let mut h = Header::from_byte_slice(&v7).clone();
    h.set_cksum();
    let e = refuse(&stream(&[h.as_bytes().to_vec(), end()]));
    assert!(matches!(e, StreamError::Malformed { .. }), "{e}");
}

#[test]
fn a_refused_checker_takes_no_more_input() {
    let mut t = TarTransform::new(Layout::Transfer, Some(Layout::Carrier), Limits::default());
    assert!(t.push(Bytes::from(file(b"/abs", b""))).is_err());
    assert_eq!(t.push(Bytes::from(end())), Err(StreamError::Closed));
    assert_eq!(t.finish(), Err(StreamError::Closed));
    assert!(t.pop().is_none());
}

// ---------------------------------------------------------------------------------------------
// Properties

/// A random legitimate tree: names from an alphabet with spaces, `%`, non-ASCII and invalid
/// UTF-8, each entry under an earlier directory.
fn tree() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::collection::vec(
        prop::sample::select(vec![b'a', b'b', b' ', b'%', b'.', b'\n', 0xc3, 0xa9, 0xff]),
        1..12,
    );
    let entry = (
        0u8..4,
        name,
        prop::collection::vec(any::<u8>(), 0..1500),
        0u32..0o7777,
        0u64..5_000_000,
    );
    prop::collection::vec(entry, 0..25).prop_map(|entries| {
        let mut dirs: Vec<Vec<u8>> = vec![Vec::new()];
        let mut files: Vec<Vec<u8>> = Vec::new();
        let mut used = std::collections::HashSet::new();
        let mut out = dir(b"./");
        for (i, (kind, name, content, mode, uid)) in entries.into_iter().enumerate() {
            if name == b"." || name == b".." {
                continue;
            }
            let parent = dirs[i % dirs.len()].clone();
            let path = if parent.is_empty() {
                name
            } else {
                [parent.as_slice(), b"/", &name].concat()
            };
            if !used.insert(path.clone()) {
                continue;
            }
            let mut records = [
                pax_record("path", &path),
                pax_record("uid", uid.to_string().as_bytes()),
            ]
            .concat();
            let header = |typ, size, link: &[u8]| {
                let mut h = raw_header(b"placeholder", typ, size, link);
                h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
                let mut hh = Header::from_byte_slice(&h).clone();
                hh.set_cksum();
                hh.as_bytes().to_vec()
            };
            match kind {
                0 => {
                    out.extend(pax_header(&records));
                    out.extend(header(b'5', 0, b""));
                    dirs.push(path);
                }
                1 => {
                    out.extend(pax_header(&records));
                    out.extend(header(b'0', content.len() as u64, b""));
                    out.extend(&content);
                    out.resize(out.len().next_multiple_of(512), 0);
                    files.push(path);
                }
                2 if !files.is_empty() => {
                    let target = files[content.len() % files.len()].clone();
                    records.extend(pax_record("linkpath", &target));
                    out.extend(pax_header(&records));
                    out.extend(header(b'1', 0, b""));
                }
                _ => {
                    let target = if content.is_empty() {
                        b"x".to_vec()
                    } else {
                        content[..content.len().min(3)]
                            .iter()
                            .map(|b| b'a' + b % 3)
                            .collect()
                    };
                    out.extend(pax_header(&records));
                    out.extend(header(b'2', 0, &target));
                }
            }
        }
        out.extend(end());
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Legitimate trees are accepted whatever the chunking, and their canonical form reads back
    /// to the same manifest in both layouts.
    #[test]
    fn legitimate_trees_round_trip(input in tree(), chunk in 1usize..2000) {
        let whole = run(&input, Layout::Transfer, Some(Layout::Carrier), input.len());
        let manifest = whole.result.clone().map_err(|e| TestCaseError::fail(e.to_string()))?.unwrap();
        let split = run(&input, Layout::Transfer, Some(Layout::Carrier), chunk);
        prop_assert_eq!(&split.output, &whole.output);
        prop_assert_eq!(&split.result, &whole.result);
        let back = run(&whole.output, Layout::Carrier, Some(Layout::Transfer), chunk);
        prop_assert_eq!(back.result.unwrap().unwrap(), manifest.clone());
        let again = run(&back.output, Layout::Transfer, None, chunk);
        prop_assert_eq!(again.result.unwrap().unwrap(), manifest);
        prop_assert!(again.output.is_empty());
    }

    /// Whatever the bytes: no panic, the same verdict for any chunking, and when accepted, an
    /// output whose every entry (read by an independent reader) is a plain file, directory or
    /// link under `v/`, which the checker accepts again with the same manifest.
    #[test]
    fn any_input_is_handled_safely(
        base in tree(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        chunk in 1usize..1500,
    ) {
        let mut input = base;
        for (at, byte) in flips {
            let i = at.index(input.len());
            input[i] = byte;
        }
        if do_cut {
            input.truncate(cut.index(input.len() + 1));
        }
        let whole = run(&input, Layout::Transfer, Some(Layout::Carrier), input.len().max(1));
        let split = run(&input, Layout::Transfer, Some(Layout::Carrier), chunk);
        prop_assert_eq!(&split.result, &whole.result);
        if let Ok(manifest) = whole.result {
            prop_assert_eq!(&split.output, &whole.output);
            check_output_is_safe(&whole.output);
            let again = run(&whole.output, Layout::Carrier, None, chunk);
            prop_assert_eq!(again.result.unwrap(), manifest);
        }
    }
}

/// Every entry of `output`, read by the `tar` crate, is a file, directory, link or FIFO named
/// under `v/` without `..`, whose parent is a directory that came earlier (so nothing is written
/// through a link, wherever links point), and every hard link names an earlier path under `v/`.
fn check_output_is_safe(output: &[u8]) {
    let mut archive = tar::Archive::new(output);
    let mut dirs: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    for entry in archive.entries().expect("readable") {
        let entry = entry.expect("readable entry");
        let name = entry.path_bytes().into_owned();
        assert!(name == b"v/" || name.starts_with(b"v/"), "{name:?}");
        assert!(!name.split(|&b| b == b'/').any(|c| c == b".."), "{name:?}");
        let typ = entry.header().entry_type();
        assert!(
            matches!(
                typ,
                EntryType::Regular
                    | EntryType::Directory
                    | EntryType::Symlink
                    | EntryType::Link
                    | EntryType::Fifo
            ),
            "{typ:?}"
        );
        let trimmed = name.strip_suffix(b"/").unwrap_or(&name).to_vec();
        if trimmed != b"v" {
            let parent = &trimmed[..trimmed.iter().rposition(|&b| b == b'/').unwrap()];
            assert!(dirs.contains(parent), "{name:?}: parent not a directory");
        }
        if typ == EntryType::Directory {
            dirs.insert(trimmed);
        }
        if typ == EntryType::Link {
            let link = entry.link_name_bytes().unwrap();
            assert!(link.starts_with(b"v/"), "{link:?}");
            assert!(!link.split(|&b| b == b'/').any(|c| c == b".."), "{link:?}");
        }
    }
}
