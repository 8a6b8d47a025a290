//! Reading a bundle into a staging directory and checking every file, every row and the audit
//! chain against its manifest, before anything is changed.

use super::*;
use crate::catalog::{self, Table};
use crate::dump::{self, Cell};
use crate::error::{BundleError, SqlStoreError};
use crate::schema::{self, Backend};
use crate::store::{self};
use dockmesh_core::audit::{AuditEntry, AuditEvent, ChainVerifier};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Component, Path};

/// A bundle read and verified into a staging directory.
pub(super) struct Verified {
    pub(super) manifest: Manifest,
    /// Parsed rows per table, in catalog order.
    pub(super) rows: Vec<(&'static Table, Vec<Vec<Cell>>)>,
    pub(super) audit_entries: u64,
}

pub(super) fn unreadable(
    bundle: &Path,
    file: Option<&str>,
    detail: impl std::fmt::Display,
) -> SqlStoreError {
    SqlStoreError::Bundle(BundleError::Unreadable {
        bundle: bundle.to_owned(),
        file: file.map(str::to_owned),
        detail: detail.to_string(),
    })
}

pub(super) fn mismatch(bundle: &Path, file: &str, detail: impl std::fmt::Display) -> SqlStoreError {
    SqlStoreError::Bundle(BundleError::Mismatch {
        bundle: bundle.to_owned(),
        file: file.to_owned(),
        detail: detail.to_string(),
    })
}

pub(super) fn unexpected(
    bundle: &Path,
    file: &str,
    detail: impl std::fmt::Display,
) -> SqlStoreError {
    SqlStoreError::Bundle(BundleError::Unexpected {
        bundle: bundle.to_owned(),
        file: file.to_owned(),
        detail: detail.to_string(),
    })
}

/// Check an entry path: relative, no `..`, under a known top-level name. Returns it `/`-joined.
pub(super) fn safe_entry_path(
    bundle: &Path,
    raw: &Path,
    is_dir: bool,
) -> Result<String, SqlStoreError> {
    let shown = raw.to_string_lossy().into_owned();
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(unexpected(
                    bundle,
                    &shown,
                    "an absolute path or one that climbs out with `..`",
                ));
            }
        }
    }
    let rel = parts.join("/");
    let ok = match parts.first().map(String::as_str) {
        Some(MANIFEST) => parts.len() == 1 && !is_dir,
        Some("database") => {
            is_dir && parts.len() == 1
                || parts.len() == 2
                    && !is_dir
                    && parts[1]
                        .strip_suffix(".jsonl")
                        .is_some_and(|t| catalog::table(t).is_some())
        }
        Some(top) => BUNDLED_DIRS.contains(&top),
        None => false,
    };
    if !ok {
        return Err(unexpected(
            bundle,
            &shown,
            "not a manifest, table export, stacks/ or ca/ entry",
        ));
    }
    Ok(rel)
}

/// Read the whole bundle into `staging`, checking it against its manifest.
pub(super) fn read_bundle(bundle: &Path, staging: &Path) -> Result<Manifest, SqlStoreError> {
    let file =
        File::open(bundle).map_err(|e| unreadable(bundle, None, format!("cannot open it: {e}")))?;
    let decoder = zstd::Decoder::new(BufReader::new(file))
        .map_err(|e| unreadable(bundle, None, format!("not a zstd stream: {e}")))?;
    let mut archive = tar::Archive::new(decoder);
    let mut seen: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut last: Option<String> = None;
    {
        let entries = archive.entries().map_err(|e| unreadable(bundle, None, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| unreadable(bundle, last.as_deref(), e))?;
            let kind = entry.header().entry_type();
            let raw = entry
                .path()
                .map_err(|e| unreadable(bundle, last.as_deref(), e))?
                .into_owned();
            let is_dir = kind.is_dir();
            if !(is_dir || kind.is_file()) {
                return Err(unexpected(
                    bundle,
                    &raw.to_string_lossy(),
                    format!("an entry of type {kind:?}: only files and directories are allowed"),
                ));
            }
            let rel = safe_entry_path(bundle, &raw, is_dir)?;
            last = Some(rel.clone());
            let dest = staging.join(&rel);
            if is_dir {
                fs::create_dir_all(&dest).map_err(|e| unreadable(bundle, Some(&rel), e))?;
                continue;
            }
            if seen.contains_key(&rel) {
                return Err(unexpected(bundle, &rel, "it appears twice"));
            }
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(|e| unreadable(bundle, Some(&rel), e))?;
            }
            let mode = entry.header().mode().unwrap_or(0o644);
            let out = File::create(&dest).map_err(|e| unreadable(bundle, Some(&rel), e))?;
            let mut w = HashingWriter {
                inner: BufWriter::new(out),
                hasher: Sha256::new(),
                size: 0,
            };
            io::copy(&mut entry, &mut w).map_err(|e| unreadable(bundle, Some(&rel), e))?;
            w.flush().map_err(|e| unreadable(bundle, Some(&rel), e))?;
            let _ = set_mode(&dest, mode);
            seen.insert(rel, (w.size, hex::encode(w.hasher.finalize())));
        }
    }
    // Read the compressed stream to its very end so that the zstd checksum is checked too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        unreadable(
            bundle,
            None,
            format!(
                "after the last file ({}): {e}",
                last.as_deref().unwrap_or("none")
            ),
        )
    })?;

    let Some(_) = seen.get(MANIFEST) else {
        return Err(unreadable(
            bundle,
            Some(MANIFEST),
            "manifest.json is missing: the bundle is truncated or is not a dockmesh bundle",
        ));
    };
    let manifest_text =
        fs::read(staging.join(MANIFEST)).map_err(|e| unreadable(bundle, Some(MANIFEST), e))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_text)
        .map_err(|e| mismatch(bundle, MANIFEST, format!("is not a valid manifest: {e}")))?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(mismatch(
            bundle,
            MANIFEST,
            format!(
                "declares bundle format {}, this binary reads format {BUNDLE_FORMAT}",
                manifest.format
            ),
        ));
    }
    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            return Err(mismatch(
                bundle,
                MANIFEST,
                format!("lists {} twice", f.path),
            ));
        }
        match seen.get(&f.path) {
            None => {
                return Err(mismatch(
                    bundle,
                    &f.path,
                    "is listed in the manifest but missing from the bundle (truncated?)",
                ));
            }
            Some((size, _)) if *size != f.size => {
                return Err(mismatch(
                    bundle,
                    &f.path,
                    format!("has {size} bytes, the manifest says {}", f.size),
                ));
            }
            Some((_, sha)) if *sha != f.sha256 => {
                return Err(mismatch(
                    bundle,
                    &f.path,
                    format!("has SHA-256 {sha}, the manifest says {}", f.sha256),
                ));
            }
            Some(_) => {}
        }
    }
    for path in seen.keys() {
        if path != MANIFEST && !listed.contains(path.as_str()) {
            return Err(unexpected(bundle, path, "it is not listed in the manifest"));
        }
    }
    Ok(manifest)
}

/// Verify a bundle completely (files, rows, audit chain) into `staging`.
pub(super) fn verify_bundle(bundle: &Path, staging: &Path) -> Result<Verified, SqlStoreError> {
    let manifest = read_bundle(bundle, staging)?;
    let binary = schema::binary_version(Backend::Sqlite);
    if manifest.schema_version > binary {
        return Err(SqlStoreError::Bundle(BundleError::Newer {
            bundle: bundle.to_owned(),
            bundle_version: manifest.schema_version,
            binary_version: binary,
            made_by: manifest.dockmesh_version.clone(),
        }));
    }
    let known = schema::known_migrations(Backend::Sqlite);
    if !known.iter().any(|k| k.version == manifest.schema_version) {
        return Err(mismatch(
            bundle,
            MANIFEST,
            format!(
                "declares schema version {}, which no migration has",
                manifest.schema_version
            ),
        ));
    }
    let mut rows = Vec::new();
    for t in catalog::tables_at(manifest.schema_version) {
        let path = t.bundle_path();
        let Some(expected) = manifest.tables.get(t.name) else {
            return Err(mismatch(
                bundle,
                MANIFEST,
                format!("does not list table {}", t.name),
            ));
        };
        let f = File::open(staging.join(&path)).map_err(|_| {
            mismatch(
                bundle,
                &path,
                "is missing: every table of the schema must be in the bundle",
            )
        })?;
        let mut parsed = Vec::new();
        for (i, line) in BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| unreadable(bundle, Some(&path), e))?;
            parsed.push(dump::parse_row(t, i as u64 + 1, &line)?);
        }
        if parsed.len() as u64 != *expected {
            return Err(mismatch(
                bundle,
                &path,
                format!("holds {} rows, the manifest says {expected}", parsed.len()),
            ));
        }
        rows.push((t, parsed));
    }
    for name in manifest.tables.keys() {
        if !catalog::tables_at(manifest.schema_version).any(|t| t.name == name) {
            return Err(mismatch(
                bundle,
                MANIFEST,
                format!(
                    "lists table {name}, which schema version {} does not have",
                    manifest.schema_version
                ),
            ));
        }
    }
    let audit_entries = verify_bundle_chain(bundle, &rows)?;
    Ok(Verified {
        manifest,
        rows,
        audit_entries,
    })
}

/// Walk the audit chain held by a bundle (and compare it with the recorded head).
pub(super) fn verify_bundle_chain(
    bundle: &Path,
    rows: &[(&'static Table, Vec<Vec<Cell>>)],
) -> Result<u64, SqlStoreError> {
    let Some((_, log)) = rows.iter().find(|(t, _)| t.name == "audit_log") else {
        return Ok(0);
    };
    let path = "database/audit_log.jsonl";
    let mut v = ChainVerifier::default();
    let mut last = (0u64, dockmesh_core::audit::GENESIS_HASH.to_owned());
    for (i, r) in log.iter().enumerate() {
        let entry = entry_from_cells(r).ok_or_else(|| {
            mismatch(
                bundle,
                path,
                format!("line {} is not an audit entry", i + 1),
            )
        })?;
        if !v.push(&entry) {
            let b = v
                .finish()
                .first_broken
                .expect("a refused entry is a broken link");
            return Err(mismatch(
                bundle,
                path,
                format!(
                    "holds an audit chain broken at entry {}: {}",
                    b.seq, b.reason
                ),
            ));
        }
        last = (entry.seq, entry.hash);
    }
    let head = rows
        .iter()
        .find(|(t, _)| t.name == "audit_head")
        .and_then(|(_, r)| r.first())
        .and_then(|cells| match (&cells[1], &cells[2]) {
            (Cell::Int(Some(s)), Cell::Text(Some(h))) => Some((*s, h.clone())),
            _ => None,
        });
    if let Some(b) = store::head_mismatch(head, &last) {
        return Err(mismatch(
            bundle,
            "database/audit_head.jsonl",
            format!(
                "does not match the audit chain at entry {}: {}",
                b.seq, b.reason
            ),
        ));
    }
    Ok(v.finish().entries_checked)
}

pub(super) fn entry_from_cells(c: &[Cell]) -> Option<AuditEntry> {
    match c {
        [
            Cell::Int(Some(seq)),
            Cell::Ts(Some(at)),
            Cell::Text(Some(actor)),
            Cell::Text(Some(action)),
            Cell::Text(Some(target)),
            Cell::Json(detail),
            Cell::Text(Some(prev_hash)),
            Cell::Text(Some(hash)),
        ] => Some(AuditEntry {
            seq: u64::try_from(*seq).ok()?,
            event: AuditEvent {
                at: at.0,
                actor: actor.clone(),
                action: action.clone(),
                target: target.clone(),
                detail: serde_json::from_value(detail.clone()).ok()?,
            },
            prev_hash: prev_hash.clone(),
            hash: hash.clone(),
        }),
        _ => None,
    }
}
