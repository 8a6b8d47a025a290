//! The schema guard: may this binary use this database?
//!
//! From the binary's known migrations and the database's applied ones, [`check`] decides:
//! - up to date, or migrations pending (from → to, the list) — [`SchemaStatus`];
//! - refuse ([`SchemaRefusal`]): the database is newer than this binary; it holds a migration this
//!   binary does not know; an applied migration's checksum differs from the binary's; or a known
//!   migration was skipped (a gap) while a later one was applied.
//!
//! A refusal changes nothing: the caller must not migrate or serve. [`irreversible_between`]
//! answers whether a schema downgrade from one version to another would cross a migration that
//! cannot be reverted.
//!
//! Versions are unique on each side (they are the migration table's primary key). Inputs may be
//! in any order.
//!
//! ```
//! use dockmesh_core::schema::{check, AppliedMigration, KnownMigration, SchemaStatus};
//!
//! let known = [
//!     KnownMigration::new(1, "hosts", [1u8; 4], true),
//!     KnownMigration::new(2, "stacks", [2u8; 4], false),
//! ];
//! let applied = [AppliedMigration::new(1, [1u8; 4])];
//! let SchemaStatus::Pending { from, to, migrations } = check(&known, &applied).unwrap() else {
//!     panic!()
//! };
//! assert_eq!((from, to, migrations.len()), (Some(1), 2, 1));
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;

/// A migration's checksum (bytes; displayed and serialized as lowercase hex).
///
/// With a precision, `Display` truncates: `format!("{c:.12}")` prints the first 12 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checksum(Vec<u8>);

impl Checksum {
    /// A checksum from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// A checksum from hex digits (either case).
    pub fn from_hex(hex: &str) -> Result<Self, hex::FromHexError> {
        hex::decode(hex).map(Self)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The first 12 hex digits, followed by `…` when there are more.
    fn short(&self) -> String {
        let hex = hex::encode(&self.0);
        if hex.len() > 12 {
            format!("{}…", &hex[..12])
        } else {
            hex
        }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&hex::encode(&self.0))
    }
}

impl<const N: usize> From<[u8; N]> for Checksum {
    fn from(bytes: [u8; N]) -> Self {
        Self(bytes.to_vec())
    }
}

impl From<Vec<u8>> for Checksum {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for Checksum {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl Serialize for Checksum {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Checksum {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A migration this binary carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownMigration {
    /// Its version (unique, increasing in the order migrations apply).
    pub version: i64,
    /// What it does, in words.
    pub description: String,
    /// The checksum of its script.
    pub checksum: Checksum,
    /// Whether it has a down script that undoes it.
    pub reversible: bool,
}

impl KnownMigration {
    /// A known migration.
    pub fn new(
        version: i64,
        description: impl Into<String>,
        checksum: impl Into<Checksum>,
        reversible: bool,
    ) -> Self {
        Self {
            version,
            description: description.into(),
            checksum: checksum.into(),
            reversible,
        }
    }
}

/// A migration the database records as applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedMigration {
    /// Its version.
    pub version: i64,
    /// The checksum of the script that was run.
    pub checksum: Checksum,
}

impl AppliedMigration {
    /// An applied migration.
    pub fn new(version: i64, checksum: impl Into<Checksum>) -> Self {
        Self {
            version,
            checksum: checksum.into(),
        }
    }
}

/// The database may be used by this binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SchemaStatus {
    /// Every known migration is applied.
    UpToDate {
        /// The schema version (`None`: no migration known and none applied).
        version: Option<i64>,
    },
    /// Known migrations remain to apply, all after the last applied one.
    Pending {
        /// The current schema version (`None`: an empty database).
        from: Option<i64>,
        /// The version after the pending migrations.
        to: i64,
        /// The migrations to apply, in order.
        migrations: Vec<KnownMigration>,
    },
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UpToDate { version: None } => {
                f.write_str("up to date: no migration is known and none is applied")
            }
            Self::UpToDate { version: Some(v) } => write!(f, "up to date at schema version {v}"),
            Self::Pending {
                from,
                to,
                migrations,
            } => {
                let from = from.map_or_else(|| "an empty database".to_owned(), |v| v.to_string());
                let n = migrations.len();
                let list = migrations
                    .iter()
                    .map(|m| format!("{} {}", m.version, m.description))
                    .collect::<Vec<_>>()
                    .join(", ");
                let s = if n == 1 { "" } else { "s" };
                write!(f, "{n} migration{s} pending, schema {from} → {to}: {list}")
            }
        }
    }
}

/// The database must not be used (nor migrated) by this binary. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaRefusal {
    /// The database was migrated by a newer binary.
    #[error(
        "the database schema is at version {database}, newer than this binary knows ({}): it \
         was migrated by a newer dockmesh. Nothing was changed. Restore the backup taken before \
         that upgrade, or install a dockmesh at least as new as the one that migrated it",
        binary_words(*.binary)
    )]
    NewerThanBinary {
        /// The database's latest applied migration.
        database: i64,
        /// This binary's latest known migration.
        binary: Option<i64>,
    },
    /// The database holds migrations this binary does not know, below its latest known one.
    #[error(
        "the database has applied {} that this binary does not know, although the binary \
         knows later ones (up to {binary}): it was migrated by a different build. Nothing was \
         changed. Use the build that migrated it, or restore the backup taken before",
        versions_words("migration", .versions)
    )]
    UnknownApplied {
        /// The unknown applied versions, ascending.
        versions: Vec<i64>,
        /// This binary's latest known migration.
        binary: i64,
    },
    /// An applied migration's checksum differs from the binary's script of the same version.
    #[error(
        "migration {version} ({description}) was applied from a script with checksum {} but this \
         binary's script has {}: it was changed after it ran. Nothing was changed. Use a binary \
         whose migration {version} is the one that ran, or restore a backup",
        .applied.short(), .expected.short()
    )]
    Modified {
        /// The migration's version (the lowest modified one).
        version: i64,
        /// The binary's description of it.
        description: String,
        /// The binary's checksum.
        expected: Checksum,
        /// The checksum recorded when it was applied.
        applied: Checksum,
    },
    /// Known migrations were skipped while a later one was applied.
    #[error(
        "{} {} never applied, although later migration {latest_applied} was: the database \
         was migrated out of order. Nothing was changed. Restore a backup taken before, or \
         migrate a copy of the database with the same binary from the start",
        versions_words("known migration", .missing),
        if .missing.len() == 1 { "was" } else { "were" }
    )]
    Gap {
        /// The skipped known versions, ascending.
        missing: Vec<i64>,
        /// The database's latest applied migration.
        latest_applied: i64,
    },
}

/// What the binary knows, for [`SchemaRefusal::NewerThanBinary`].
fn binary_words(binary: Option<i64>) -> String {
    match binary {
        Some(v) => format!("its latest migration is {v}"),
        None => "it knows no migration".to_owned(),
    }
}

/// `migration 3` / `migrations 3, 4`.
fn versions_words(noun: &str, versions: &[i64]) -> String {
    let list = versions
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let s = if versions.len() == 1 { "" } else { "s" };
    format!("{noun}{s} {list}")
}

/// Decide whether this binary may use the database, and what it must apply first.
///
/// Checks, in order: newer than the binary, unknown applied migrations, modified checksums
/// (the lowest version is named), gaps; otherwise up to date or pending.
pub fn check(
    known: &[KnownMigration],
    applied: &[AppliedMigration],
) -> Result<SchemaStatus, SchemaRefusal> {
    let known: BTreeMap<i64, &KnownMigration> = known.iter().map(|m| (m.version, m)).collect();
    let applied: BTreeMap<i64, &AppliedMigration> =
        applied.iter().map(|m| (m.version, m)).collect();
    let latest_known = known.keys().next_back().copied();
    let latest_applied = applied.keys().next_back().copied();

    let Some(latest_applied) = latest_applied else {
        return Ok(match latest_known {
            None => SchemaStatus::UpToDate { version: None },
            Some(to) => SchemaStatus::Pending {
                from: None,
                to,
                migrations: known.values().map(|m| (*m).clone()).collect(),
            },
        });
    };
    if latest_known.is_none_or(|k| latest_applied > k) {
        return Err(SchemaRefusal::NewerThanBinary {
            database: latest_applied,
            binary: latest_known,
        });
    }
    let binary = latest_known.unwrap_or_default();

    let unknown: Vec<i64> = applied
        .keys()
        .filter(|v| !known.contains_key(v))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Err(SchemaRefusal::UnknownApplied {
            versions: unknown,
            binary,
        });
    }

    if let Some((k, a)) = applied
        .values()
        .map(|a| (known[&a.version], a))
        .find(|(k, a)| k.checksum != a.checksum)
    {
        return Err(SchemaRefusal::Modified {
            version: k.version,
            description: k.description.clone(),
            expected: k.checksum.clone(),
            applied: a.checksum.clone(),
        });
    }

    let missing: Vec<i64> = known
        .range(..latest_applied)
        .map(|(v, _)| *v)
        .filter(|v| !applied.contains_key(v))
        .collect();
    if !missing.is_empty() {
        return Err(SchemaRefusal::Gap {
            missing,
            latest_applied,
        });
    }

    let pending: Vec<KnownMigration> = known
        .range(latest_applied + 1..)
        .map(|(_, m)| (*m).clone())
        .collect();
    Ok(if pending.is_empty() {
        SchemaStatus::UpToDate {
            version: Some(latest_applied),
        }
    } else {
        SchemaStatus::Pending {
            from: Some(latest_applied),
            to: binary,
            migrations: pending,
        }
    })
}

/// The irreversible migrations a schema downgrade from version `from` to version `to` would have
/// to undo: every known migration with `to < version <= from` that is not reversible, ascending.
///
/// Empty when the downgrade crosses none (or when `from <= to`: nothing to undo). A non-empty
/// answer means the downgrade cannot be done by down scripts: restore the backup taken before
/// the upgrade instead.
pub fn irreversible_between(known: &[KnownMigration], from: i64, to: i64) -> Vec<&KnownMigration> {
    let mut crossed: Vec<&KnownMigration> = known
        .iter()
        .filter(|m| to < m.version && m.version <= from && !m.reversible)
        .collect();
    crossed.sort_by_key(|m| m.version);
    crossed
}

#[cfg(test)]
mod tests;
