//! Signed agent binaries: the release key (ed25519), the statement a signature covers, the
//! metadata file beside each binary, and the directory the server serves agent binaries from.
//!
//! `dockmesh release keygen` makes a key pair; the operator keeps the private key and gives the
//! server the public one, which every agent trusts from its enrollment on. `dockmesh release
//! sign --key K BINARY…` writes `BINARY.release.json` beside each binary: version, platform,
//! size, SHA-256 and the signature over the [`statement`] of all of them. The signature binds
//! the version and platform as well as the bytes, so a signed binary cannot be passed off as
//! another version or for another platform.
//!
//! The server serves a binary only when its metadata's signature verifies with the release key
//! and its size matches; before an order names it, its SHA-256 is computed again. An agent
//! checks size, SHA-256 and signature of what it downloaded before anything is replaced.

use dockmesh_core::rollout::UpgradeOrder;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The suffix of a binary's metadata file: `dockmesh-linux-x86_64` has
/// `dockmesh-linux-x86_64.release.json`.
pub const META_SUFFIX: &str = ".release.json";

/// The largest agent binary served or accepted (1 GiB).
pub const MAX_BINARY: u64 = 1 << 30;

/// Where the server serves agent binaries, under its API listener (`…/{file}`).
pub const BINARIES_PATH: &str = "/api/v1/agent-binaries";

/// Why a release key, signature or binary was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A key file is not an ed25519 key in PEM.
    #[error("{what} is not an ed25519 {kind} key in PEM: {problem}")]
    Key {
        /// Which key.
        what: String,
        /// `private` or `public`.
        kind: &'static str,
        /// The parser's words.
        problem: String,
    },
    /// The signature is not hex of 64 bytes, or does not verify.
    #[error(
        "the release signature of {what} does not verify with the release key {key}: the binary, \
         its version or its platform is not what was signed"
    )]
    BadSignature {
        /// What was checked.
        what: String,
        /// The key's fingerprint.
        key: String,
    },
    /// The size differs from the signed one.
    #[error("{what} is {got} bytes, the release says {expected}")]
    Size {
        /// What was checked.
        what: String,
        /// Bytes found.
        got: u64,
        /// Bytes signed.
        expected: u64,
    },
    /// The SHA-256 differs from the signed one.
    #[error("the SHA-256 of {what} is {got}, the release says {expected}")]
    Checksum {
        /// What was checked.
        what: String,
        /// Found.
        got: String,
        /// Signed.
        expected: String,
    },
    /// A version, platform or SHA-256 that no release of dockmesh has: signed, it would make
    /// a statement whose lines do not read back to its fields.
    #[error("{what}: {problem}")]
    Field {
        /// What was checked.
        what: String,
        /// Which field and what is wrong with it.
        problem: String,
    },
    /// A metadata file is not understood.
    #[error("{path}: not a release metadata file: {problem}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReleaseError + '_ {
    move |source| ReleaseError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One signed binary, as written beside it in `<file>.release.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseMeta {
    /// The binary's file name (in the same directory).
    pub file: String,
    /// The version it reports (`dockmesh --version`).
    pub version: String,
    /// Its operating system (`linux`).
    pub os: String,
    /// Its CPU architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
    /// The ed25519 signature of [`statement`], hex.
    pub signature: String,
}

impl ReleaseMeta {
    /// The statement its signature covers.
    pub fn statement(&self) -> Vec<u8> {
        statement(&self.version, &self.os, &self.arch, self.size, &self.sha256)
    }

    /// Check its fields ([`check_fields`]) and its signature with `key`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), ReleaseError> {
        let what = format!("{} ({})", self.file, self.version.escape_debug());
        check_fields(&self.version, &self.os, &self.arch, &self.sha256, &what)?;
        verify(
            key,
            &self.statement(),
            &self.signature,
            &format!("{} ({})", self.file, self.version),
        )
    }

    /// The order that sends an agent this binary; `binary` is its path on the API listener.
    pub fn order(&self) -> UpgradeOrder {
        UpgradeOrder {
            version: self.version.clone(),
            binary: format!("{BINARIES_PATH}/{}", self.file),
            size: self.size,
            sha256: self.sha256.clone(),
            signature: Some(self.signature.clone()),
            allow_downgrade: false,
        }
    }
}

/// What a release signature covers: a fixed context line, then version, os, arch, size and
/// SHA-256 (lowercase hex), one per line.
pub fn statement(version: &str, os: &str, arch: &str, size: u64, sha256: &str) -> Vec<u8> {
    format!(
        "dockmesh-release-v1\n{version}\n{os}\n{arch}\n{size}\n{}\n",
        sha256.to_ascii_lowercase()
    )
    .into_bytes()
}

/// Check the fields a [`statement`] is made of, so that its lines read back to them: a version,
/// an operating system and an architecture of printable ASCII without spaces (at most 64
/// characters, as an agent accepts in an order), and a SHA-256 of 64 hex digits. `what` names
/// the binary in the error.
pub fn check_fields(
    version: &str,
    os: &str,
    arch: &str,
    sha256: &str,
    what: &str,
) -> Result<(), ReleaseError> {
    let refuse = |problem: String| ReleaseError::Field {
        what: what.to_owned(),
        problem,
    };
    for (name, value) in [
        ("version", version),
        ("operating system", os),
        ("architecture", arch),
    ] {
        if value.is_empty() || value.len() > 64 || !value.chars().all(|c| c.is_ascii_graphic()) {
            return Err(refuse(format!(
                "the {name} {value:?} is not 1 to 64 printable ASCII characters without spaces"
            )));
        }
    }
    if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refuse(format!(
            "the SHA-256 {:?} is not 64 hex digits",
            sha256.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

/// Check `signature_hex` over `statement` with `key`; `what` names the binary in the error.
pub fn verify(
    key: &VerifyingKey,
    statement: &[u8],
    signature_hex: &str,
    what: &str,
) -> Result<(), ReleaseError> {
    let bad = || ReleaseError::BadSignature {
        what: what.to_owned(),
        key: fingerprint(key),
    };
    let bytes: [u8; 64] = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    key.verify_strict(statement, &Signature::from_bytes(&bytes))
        .map_err(|_| bad())
}

/// A new release key pair: (private key as PKCS#8 PEM, public key as SPKI PEM).
pub fn keygen() -> Result<(String, String), ReleaseError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ReleaseError::Key {
        what: "a new key".into(),
        kind: "private",
        problem: format!("no random bytes: {e}"),
    })?;
    let key = SigningKey::from_bytes(&secret);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| ReleaseError::Key {
            what: "a new key".into(),
            kind: "private",
            problem: e.to_string(),
        })?
        .to_string();
    Ok((private, public_pem(&key.verifying_key())))
}

/// A public key as SPKI PEM.
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("an ed25519 public key encodes")
}

/// Read a private release key (PKCS#8 PEM); `what` names it in errors.
pub fn parse_private(pem: &str, what: &str) -> Result<SigningKey, ReleaseError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| ReleaseError::Key {
        what: what.to_owned(),
        kind: "private",
        problem: e.to_string(),
    })
}

/// Read a public release key (SPKI PEM); `what` names it in errors.
pub fn parse_public(pem: &str, what: &str) -> Result<VerifyingKey, ReleaseError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| ReleaseError::Key {
        what: what.to_owned(),
        kind: "public",
        problem: e.to_string(),
    })
}

/// A short name for a public key: the first 16 hex digits of the SHA-256 of its 32 bytes.
pub fn fingerprint(key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..8])
}

/// Size and SHA-256 (hex) of a file, read in chunks.
pub fn digest_file(path: &Path) -> Result<(u64, String), ReleaseError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Sign `binary` as `version` for `os`/`arch` and write its metadata beside it; returns it.
pub fn sign_file(
    key: &SigningKey,
    binary: &Path,
    version: &str,
    os: &str,
    arch: &str,
) -> Result<ReleaseMeta, ReleaseError> {
    let file = binary
        .file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| ReleaseError::Meta {
            path: binary.to_owned(),
            problem: "the binary's file name is not UTF-8".into(),
        })?
        .to_owned();
    let (size, sha256) = digest_file(binary)?;
    check_fields(version, os, arch, &sha256, &binary.display().to_string())?;
    let sig = key.sign(&statement(version, os, arch, size, &sha256));
    let meta = ReleaseMeta {
        file,
        version: version.to_owned(),
        os: os.to_owned(),
        arch: arch.to_owned(),
        size,
        sha256,
        signature: hex::encode(sig.to_bytes()),
    };
    let path = meta_path(binary);
    let bytes = serde_json::to_vec_pretty(&meta).expect("release metadata serialises");
    crate::channel::files::write_atomic(&path, &bytes, crate::channel::files::FileMode::Shared)
        .map_err(|e| match e {
            crate::channel::files::FilesError::Io { path, source, .. } => {
                ReleaseError::Io { path, source }
            }
        })?;
    Ok(meta)
}

/// The metadata file of `binary`.
pub fn meta_path(binary: &Path) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(META_SUFFIX);
    PathBuf::from(name)
}

/// The agent binaries a server serves: every binary of a directory whose metadata verifies
/// with the release key and whose size matches. Read again at each use, so binaries dropped
/// into the directory are served without a restart.
#[derive(Debug, Clone)]
pub struct AgentBinaries {
    dir: PathBuf,
    key: VerifyingKey,
}

/// A directory's binaries: those served, and why others are not.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// The binaries that verify.
    pub served: Vec<ReleaseMeta>,
    /// The others, each with its reason.
    pub refused: Vec<String>,
}

impl AgentBinaries {
    /// Binaries in `dir`, trusted when signed by `key`.
    pub fn new(dir: PathBuf, key: VerifyingKey) -> AgentBinaries {
        AgentBinaries { dir, key }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The release key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Read the directory: each `*.release.json`, checked (file name, signature, size).
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                scan.refused
                    .push(format!("{}: cannot be read: {e}", self.dir.display()));
                return scan;
            }
        };
        for path in meta_files(entries) {
            match self.check(&path) {
                Ok(meta) => scan.served.push(meta),
                Err(e) => scan.refused.push(e.to_string()),
            }
        }
        scan
    }

    fn check(&self, path: &Path) -> Result<ReleaseMeta, ReleaseError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let meta: ReleaseMeta = serde_json::from_slice(&bytes).map_err(|e| ReleaseError::Meta {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        let expected = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(META_SUFFIX));
        if expected != Some(meta.file.as_str()) || !safe_file_name(&meta.file) {
            return Err(ReleaseError::Meta {
                path: path.to_owned(),
                problem: format!(
                    "it names the file {:?}, not the binary beside it",
                    meta.file
                ),
            });
        }
        if meta.size > MAX_BINARY {
            return Err(ReleaseError::Meta {
                path: path.to_owned(),
                problem: format!("a binary of {} bytes is over the limit", meta.size),
            });
        }
        meta.verify(&self.key)?;
        let binary = self.dir.join(&meta.file);
        let len = std::fs::metadata(&binary).map_err(io(&binary))?.len();
        if len != meta.size {
            return Err(ReleaseError::Size {
                what: binary.display().to_string(),
                got: len,
                expected: meta.size,
            });
        }
        Ok(meta)
    }

    /// The binary of `version` for `os`/`arch`, its SHA-256 checked again now.
    pub fn find(&self, version: &str, os: &str, arch: &str) -> Result<ReleaseMeta, String> {
        let scan = self.scan();
        let Some(meta) = scan
            .served
            .into_iter()
            .find(|m| m.version == version && m.os == os && m.arch == arch)
        else {
            let mut msg = format!(
                "the server has no signed agent binary of version {version} for {os}/{arch} in {}",
                self.dir.display()
            );
            if !scan.refused.is_empty() {
                msg.push_str(&format!(" (refused there: {})", scan.refused.join("; ")));
            }
            return Err(msg);
        };
        let path = self.dir.join(&meta.file);
        let (size, sha256) = digest_file(&path).map_err(|e| e.to_string())?;
        if size != meta.size || sha256 != meta.sha256 {
            return Err(ReleaseError::Checksum {
                what: path.display().to_string(),
                got: sha256,
                expected: meta.sha256,
            }
            .to_string());
        }
        Ok(meta)
    }

    /// The path of a served binary by its file name; `None` for any name that is not one.
    pub fn served_path(&self, file: &str) -> Option<PathBuf> {
        if !safe_file_name(file) {
            return None;
        }
        let meta = self.dir.join(format!("{file}{META_SUFFIX}"));
        self.check(&meta).ok().map(|m| self.dir.join(m.file))
    }
}

/// The metadata files (`*.release.json`) among a directory's entries, sorted.
pub fn meta_files(entries: std::fs::ReadDir) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(META_SUFFIX))
        })
        .collect();
    paths.sort();
    paths
}

/// A plain file name: no separator, not `.` or `..`, no control characters.
fn safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, SigningKey, VerifyingKey) {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = keygen().unwrap();
        let key = parse_private(&private, "k").unwrap();
        let public = parse_public(&public, "p").unwrap();
        assert_eq!(key.verifying_key(), public);
        (dir, key, public)
    }

    #[test]
    fn a_signed_binary_is_served_and_its_order_carries_what_was_signed() {
        let (dir, key, public) = setup();
        let bin = dir.path().join("dockmesh-linux-x86_64");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").unwrap();
        let meta = sign_file(&key, &bin, "1.2.3", "linux", "x86_64").unwrap();
        let binaries = AgentBinaries::new(dir.path().to_owned(), public);
        let found = binaries.find("1.2.3", "linux", "x86_64").unwrap();
        assert_eq!(found, meta);
        let order = found.order();
        assert_eq!(order.binary, "/api/v1/agent-binaries/dockmesh-linux-x86_64");
        assert_eq!(order.size, 18);
        assert_eq!(
            order.sha256,
            hex::encode(Sha256::digest(b"#!/bin/sh\necho hi\n"))
        );
        verify(
            &public,
            &statement("1.2.3", "linux", "x86_64", order.size, &order.sha256),
            order.signature.as_deref().unwrap(),
            "x",
        )
        .unwrap();
        assert!(binaries.find("1.2.4", "linux", "x86_64").is_err());
        assert!(binaries.find("1.2.3", "linux", "aarch64").is_err());
        assert_eq!(binaries.served_path("dockmesh-linux-x86_64"), Some(bin));
        assert_eq!(binaries.served_path("../etc/passwd"), None);
        assert_eq!(binaries.served_path("nothing"), None);
    }

    #[test]
    fn the_signature_binds_version_platform_size_and_checksum() {
        let (dir, key, public) = setup();
        let bin = dir.path().join("b");
        std::fs::write(&bin, b"binary").unwrap();
        let meta = sign_file(&key, &bin, "1.0.0", "linux", "x86_64").unwrap();
        meta.verify(&public).unwrap();
        let changes: [fn(&mut ReleaseMeta); 6] = [
            |m| m.version = "1.0.1".into(),
            |m| m.os = "freebsd".into(),
            |m| m.arch = "aarch64".into(),
            |m| m.size += 1,
            |m| m.sha256 = "00".repeat(32),
            |m| m.signature = "zz".into(),
        ];
        for change in changes {
            let mut m = meta.clone();
            change(&mut m);
            let err = m.verify(&public).unwrap_err();
            assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err}");
        }
        let (_, _, other) = setup();
        assert!(meta.verify(&other).is_err(), "another key refuses it");
    }

    #[test]
    fn fields_that_would_shift_the_statements_lines_are_neither_signed_nor_served() {
        let (dir, key, public) = setup();
        let sha = "ab".repeat(32);
        // A line break moves a field's end: two different releases, one statement.
        let one = statement("1.2.3\nlinux", "x86_64", "x86_64", 5, &sha);
        let two = statement("1.2.3", "linux\nx86_64", "x86_64", 5, &sha);
        assert_eq!(one, two, "why the fields are checked");
        let meta = ReleaseMeta {
            file: "shifted".into(),
            version: "1.2.3\nlinux".into(),
            os: "x86_64".into(),
            arch: "x86_64".into(),
            size: 5,
            sha256: sha.clone(),
            signature: hex::encode(key.sign(&one).to_bytes()),
        };
        let err = meta.verify(&public).unwrap_err();
        assert!(matches!(err, ReleaseError::Field { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "shifted (1.2.3\\nlinux): the version \"1.2.3\\nlinux\" is not 1 to 64 printable \
             ASCII characters without spaces"
        );
        std::fs::write(dir.path().join("shifted"), b"small").unwrap();
        std::fs::write(
            dir.path().join(format!("shifted{META_SUFFIX}")),
            serde_json::to_vec(&meta).unwrap(),
        )
        .unwrap();
        let scan = AgentBinaries::new(dir.path().to_owned(), public).scan();
        assert!(scan.served.is_empty(), "{:?}", scan.served);
        assert_eq!(scan.refused.len(), 1);
        assert!(
            scan.refused[0].contains("the version"),
            "{:?}",
            scan.refused
        );

        let bin = dir.path().join("b");
        std::fs::write(&bin, b"binary").unwrap();
        for (version, os, arch) in [
            ("1.0.0\nlinux", "linux", "x86_64"),
            ("1.0.0", "", "x86_64"),
            ("1.0.0", "linux", "x86 64"),
        ] {
            let err = sign_file(&key, &bin, version, os, arch).unwrap_err();
            assert!(matches!(err, ReleaseError::Field { .. }), "{err}");
        }
        assert!(!meta_path(&bin).exists(), "nothing was signed");
        let mut upper = sign_file(&key, &bin, "1.0.0", "linux", "x86_64").unwrap();
        upper.sha256 = "zz".repeat(32);
        let err = upper.verify(&public).unwrap_err();
        assert!(err.to_string().contains("is not 64 hex digits"), "{err}");
    }

    #[test]
    fn tampered_or_foreign_binaries_are_not_served() {
        let (dir, key, public) = setup();
        let binaries = AgentBinaries::new(dir.path().to_owned(), public);
        // Changed after signing, same size: the scan passes on size, the order refuses it.
        let bin = dir.path().join("a");
        std::fs::write(&bin, b"aaaa").unwrap();
        sign_file(&key, &bin, "1.0.0", "linux", "x86_64").unwrap();
        std::fs::write(&bin, b"aaab").unwrap();
        let err = binaries.find("1.0.0", "linux", "x86_64").unwrap_err();
        assert!(err.contains("SHA-256"), "{err}");
        // Another size: not served at all.
        std::fs::write(&bin, b"aaaaa").unwrap();
        let scan = binaries.scan();
        assert!(scan.served.is_empty());
        assert!(scan.refused[0].contains("5 bytes"), "{:?}", scan.refused);
        // Signed by another key.
        let (_, stranger, _) = setup();
        let b = dir.path().join("b");
        std::fs::write(&b, b"b").unwrap();
        sign_file(&stranger, &b, "1.0.0", "linux", "x86_64").unwrap();
        assert!(binaries.served_path("b").is_none());
        // Metadata naming another file.
        std::fs::write(
            dir.path().join(format!("c{META_SUFFIX}")),
            std::fs::read(meta_path(&b)).unwrap(),
        )
        .unwrap();
        assert!(
            binaries
                .scan()
                .refused
                .iter()
                .any(|r| r.contains("names the file"))
        );
        // Not JSON.
        std::fs::write(dir.path().join(format!("d{META_SUFFIX}")), b"{").unwrap();
        let err = binaries.find("1.0.0", "linux", "x86_64").unwrap_err();
        assert!(err.contains("not a release metadata file"), "{err}");
    }

    proptest::proptest! {
        /// A signature verifies for exactly what was signed: any other version, platform, size
        /// or checksum is refused.
        #[test]
        fn a_signature_covers_exactly_its_statement(
            version in "[0-9a-z.+-]{1,20}",
            os in "[a-z]{1,8}",
            arch in "[a-z0-9_]{1,10}",
            size in 1u64..MAX_BINARY,
            sha in "[0-9a-f]{64}",
            field in 0usize..5,
            other in "[0-9a-z]{1,8}",
        ) {
            let (private, public) = keygen().unwrap();
            let key = parse_private(&private, "k").unwrap();
            let public = parse_public(&public, "p").unwrap();
            let sig = hex::encode(key.sign(&statement(&version, &os, &arch, size, &sha)).to_bytes());
            proptest::prop_assert!(verify(&public, &statement(&version, &os, &arch, size, &sha), &sig, "x").is_ok());
            let (mut v, mut o, mut a, mut z, mut h) =
                (version.clone(), os.clone(), arch.clone(), size, sha.clone());
            match field {
                0 => v = format!("{v}{other}"),
                1 => o = format!("{o}{other}"),
                2 => a = format!("{a}{other}"),
                3 => z = size + 1 + other.len() as u64,
                _ => h = format!("{}{}", &sha[..63], if sha.ends_with('0') { '1' } else { '0' }),
            }
            proptest::prop_assert!(verify(&public, &statement(&v, &o, &a, z, &h), &sig, "x").is_err());
        }
    }

    #[test]
    fn a_fingerprint_names_one_key_in_16_hex_digits() {
        let (_d1, _, a) = setup();
        let (_d2, _, b) = setup();
        let fp = fingerprint(&a);
        assert_eq!(fp.len(), 16);
        assert!(fp.chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
        assert_eq!(fingerprint(&a), fp);
        assert_ne!(fingerprint(&b), fp);
    }

    #[test]
    fn a_binary_over_the_size_limit_is_refused_and_one_at_the_limit_is_read() {
        let (dir, key, public) = setup();
        let binaries = AgentBinaries::new(dir.path().to_owned(), public);
        assert_eq!(binaries.key(), &public);
        let write = |name: &str, size: u64| {
            let sha = "ab".repeat(32);
            let sig = key.sign(&statement("1.0.0", "linux", "x86_64", size, &sha));
            let meta = ReleaseMeta {
                file: name.into(),
                version: "1.0.0".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                size,
                sha256: sha,
                signature: hex::encode(sig.to_bytes()),
            };
            std::fs::write(dir.path().join(name), b"small").unwrap();
            std::fs::write(
                dir.path().join(format!("{name}{META_SUFFIX}")),
                serde_json::to_vec(&meta).unwrap(),
            )
            .unwrap();
        };
        write("over", MAX_BINARY + 1);
        write("at", MAX_BINARY);
        let refused = binaries.scan().refused;
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused.iter().any(|r| r.contains("over the limit")),
            "{refused:?}"
        );
        // At the limit, the size is not refused as such: the file beside it is what differs.
        assert!(
            refused
                .iter()
                .any(|r| r.contains(&format!("{MAX_BINARY}")) && r.contains("5 bytes")),
            "{refused:?}"
        );
    }

    #[test]
    fn keys_in_the_wrong_shape_are_named() {
        let err = parse_private("not a key", "release.key").unwrap_err();
        assert!(err.to_string().contains("release.key"), "{err}");
        let (private, public) = keygen().unwrap();
        assert!(parse_public(&private, "x").is_err());
        assert!(parse_private(&public, "x").is_err());
    }
}
