//! A hostile backup bundle given to `restore` (a dry run into a database that does not exist:
//! the whole verification, nothing written): the `.tar.zst` as it is, a tar stream compressed
//! here, or a list of files whose manifest is fixed up here (sizes, SHA-256, row counts), so
//! that row parsing and the audit chain are reached without forging hashes.
//!
//! Properties: it never panics; a bundle it accepts reports the tables and row counts its
//! manifest lists; whatever it refuses is a bundle error or a refusal, never an I/O error of the
//! database it was not allowed to touch.
//!
//! `cargo +nightly fuzz run -s none -a backup_bundle`
#![no_main]

use dockmesh_fuzz::{runtime, scratch};
use dockmesh_sqlx::backup::{Manifest, RestoreOptions, restore};
use dockmesh_sqlx::{DbTarget, SqlStoreError};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use std::io::Write;

fn zstd_of(tar: &[u8]) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 1).expect("an encoder");
    enc.include_checksum(true).expect("a checksum");
    enc.write_all(tar).expect("compressed");
    enc.finish().expect("compressed")
}

/// A tar of `files` (path, content), the manifest first, with `manifest.json` rewritten to list
/// every other file with its size and SHA-256 and every table export with its line count (the
/// rest of the manifest as given). `None` when a path cannot be written in a tar header.
fn fixed_up(files: &[(&[u8], &[u8])]) -> Option<Vec<u8>> {
    let mut listed = Vec::new();
    let mut tables = serde_json::Map::new();
    for (path, content) in files {
        let path = std::str::from_utf8(path).ok()?;
        if path == "manifest.json" {
            continue;
        }
        listed.push(serde_json::json!({
            "path": path,
            "size": content.len(),
            "sha256": hex::encode(Sha256::digest(content)),
        }));
        if let Some(table) = path
            .strip_prefix("database/")
            .and_then(|t| t.strip_suffix(".jsonl"))
        {
            let rows = content
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            tables.insert(table.to_owned(), rows.into());
        }
    }
    let given = files
        .iter()
        .find(|(p, _)| *p == b"manifest.json")
        .map_or(&b"{}"[..], |(_, c)| c);
    let manifest = match serde_json::from_slice::<serde_json::Value>(given) {
        Ok(serde_json::Value::Object(mut m)) => {
            m.insert("files".into(), listed.into());
            m.insert("tables".into(), tables.into());
            serde_json::to_vec(&m).expect("JSON")
        }
        _ => given.to_vec(),
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut append = |path: &str, content: &[u8]| -> Option<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(content.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, content).ok()
    };
    append("manifest.json", &manifest)?;
    for (path, content) in files {
        if *path != b"manifest.json" {
            append(std::str::from_utf8(path).ok()?, content)?;
        }
    }
    tar.into_inner().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bundle = match mode % 3 {
        0 => rest.to_vec(),
        1 => zstd_of(rest),
        _ => {
            // `path NUL content NUL path NUL content …`
            let parts: Vec<&[u8]> = rest.split(|&b| b == 0).collect();
            let files: Vec<(&[u8], &[u8])> = parts
                .chunks(2)
                .map(|p| (p[0], p.get(1).copied().unwrap_or_default()))
                .collect();
            match fixed_up(&files) {
                Some(tar) => zstd_of(&tar),
                None => return,
            }
        }
    };
    let path = scratch().join("bundle.tar.zst");
    std::fs::write(&path, &bundle).expect("the bundle is written");
    let target = DbTarget::Sqlite {
        path: scratch().join("absent").join("dockmesh.db"),
    };
    let options = RestoreOptions {
        dry_run: true,
        force: false,
    };
    let result = runtime().block_on(restore(&path, &target, None, options));
    match result {
        Ok(report) => {
            let manifest: &Manifest = &report.manifest;
            assert_eq!(
                report.tables, manifest.tables,
                "the rows restored are the rows listed"
            );
            assert!(report.dry_run);
        }
        Err(SqlStoreError::Bundle(_) | SqlStoreError::RestoreRefused(_)) => {}
        Err(other) => panic!("a bundle refused with {other:?}"),
    }
    assert!(
        !scratch().join("absent").exists(),
        "a dry run created the database's directory"
    );
});
