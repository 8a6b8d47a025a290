//! Signed agent binaries as the server reads them: an arbitrary `.release.json` dropped in the
//! binaries directory beside a binary signed for real, an arbitrary file name asked for on
//! the binaries path, an arbitrary public key PEM, and the statement a signature covers.
//!
//! Properties: nothing panics; the directory scan serves the genuine binary whatever lies
//! beside it, and serves only metadata whose signature verifies with the release key and whose
//! size matches its file; a served path is a plain file of the directory; a statement reads
//! back to the version, platform, size and SHA-256 it was made of (so a signature cannot be
//! moved to other values); a public key that parses prints as PEM that parses to the same key.
//!
//! `cargo +nightly fuzz run -s none -a release_statement`
#![no_main]

use dockmesh_http::channel::agent_binaries::{
    AgentBinaries, META_SUFFIX, ReleaseMeta, SigningKey, VerifyingKey, parse_public, public_pem,
    sign_file, statement,
};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

const GENUINE: &str = "dockmesh-linux-x86_64";
const HOSTILE: &str = "hostile";

struct Fixture {
    dir: tempfile::TempDir,
    key: VerifyingKey,
    genuine: ReleaseMeta,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let signing = SigningKey::from_bytes(&[7; 32]);
        let binary = dir.path().join(GENUINE);
        std::fs::write(&binary, b"#!/bin/sh\necho 1.2.3\n").expect("a binary");
        let genuine = sign_file(&signing, &binary, "1.2.3", "linux", "x86_64").expect("it signs");
        Fixture {
            dir,
            key: signing.verifying_key(),
            genuine,
        }
    })
}

fn scan_with(meta: &[u8], binary_len: usize) {
    let f = fixture();
    let dir = f.dir.path();
    std::fs::write(dir.join(format!("{HOSTILE}{META_SUFFIX}")), meta).expect("the metadata");
    std::fs::write(dir.join(HOSTILE), vec![0u8; binary_len]).expect("a binary");
    let binaries = AgentBinaries::new(dir.to_owned(), f.key);
    let scan = binaries.scan();
    assert!(scan.served.contains(&f.genuine), "{:?}", scan.refused);
    for m in &scan.served {
        m.verify(&f.key)
            .expect("a served binary's signature verifies");
        let len = std::fs::metadata(dir.join(&m.file))
            .expect("its file")
            .len();
        assert_eq!(len, m.size);
    }
    assert_eq!(scan.served.len() + scan.refused.len(), 2);
}

fn served_path(name: &str) {
    let f = fixture();
    let binaries = AgentBinaries::new(f.dir.path().to_owned(), f.key);
    if let Some(p) = binaries.served_path(name) {
        assert_eq!(p.parent(), Some(f.dir.path()), "{p:?}");
        assert_eq!(p.file_name().and_then(|n| n.to_str()), Some(name));
    }
}

/// The statement's lines are its fields: nothing a field holds can shift them.
fn reads_back(meta: &ReleaseMeta) {
    let s = meta.statement();
    let text = String::from_utf8(s).expect("a statement of strings is UTF-8");
    let lines: Vec<&str> = text.split('\n').collect();
    let fields = [
        "dockmesh-release-v1".to_owned(),
        meta.version.clone(),
        meta.os.clone(),
        meta.arch.clone(),
        meta.size.to_string(),
        meta.sha256.to_ascii_lowercase(),
        String::new(),
    ];
    if lines != fields {
        // A statement whose fields cannot be read back must never verify, even when signed.
        let signing = SigningKey::from_bytes(&[7; 32]);
        let mut signed = meta.clone();
        use ed25519_dalek::Signer;
        signed.signature = hex::encode(signing.sign(&signed.statement()).to_bytes());
        assert!(
            signed.verify(&signing.verifying_key()).is_err(),
            "a statement that does not read back verifies: {text:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => scan_with(rest, usize::from(mode >> 2) * 37),
        1 => served_path(&String::from_utf8_lossy(rest)),
        2 => {
            if let Ok(meta) = serde_json::from_slice::<ReleaseMeta>(rest) {
                reads_back(&meta);
                assert!(
                    meta.verify(&fixture().key).is_err()
                        || meta.statement() == fixture().genuine.statement()
                );
            }
            let text = String::from_utf8_lossy(rest);
            let _ = statement(&text, &text, &text, rest.len() as u64, &text);
        }
        _ => {
            if let Ok(key) = parse_public(&String::from_utf8_lossy(rest), "fuzz") {
                let again = parse_public(&public_pem(&key), "again").expect("a printed key parses");
                assert_eq!(again, key);
            }
        }
    }
    let _ = Path::new("");
});
