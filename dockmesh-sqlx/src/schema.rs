//! The schema migrations this binary carries, what each declares about itself, and the
//! decision whether a database may be opened.
//!
//! SQLite and PostgreSQL each have their own migration directory (`migrations/sqlite`,
//! `migrations/postgres`), embedded with `sqlx::migrate!`. Both hold the same versions. The
//! first line of every migration file declares whether it can be undone without a restore:
//!
//! ```sql
//! -- dockmesh: reversible
//! -- dockmesh: irreversible: <why, and what going back needs>
//! ```
//!
//! A test refuses a migration without that line. Each open records these declarations in the
//! `schema_notes` table, so that an older binary that meets a newer database can still name the
//! irreversible migrations it does not know.

use dockmesh_core::schema::{self as guard, AppliedMigration, KnownMigration};
use sqlx::migrate::{Migration, Migrator};
use std::collections::BTreeMap;

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// SQLite: a file (the embedded default).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

pub(crate) static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
pub(crate) static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The embedded migrator of a backend.
pub(crate) fn migrator(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE_MIGRATOR,
        Backend::Postgres => &POSTGRES_MIGRATOR,
    }
}

/// What a migration file declares about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationInfo {
    /// Its version (the number its file name starts with).
    pub version: i64,
    /// Its description (the rest of the file name).
    pub description: String,
    /// Whether a downgrade across it can do without a restore.
    pub reversible: bool,
    /// For an irreversible migration, why and what going back needs.
    pub note: String,
}

/// Parse the `-- dockmesh: reversible` / `-- dockmesh: irreversible: …` header of a migration.
pub fn parse_header(sql: &str) -> Result<(bool, String), String> {
    let first = sql.lines().next().unwrap_or("").trim();
    let Some(rest) = first.strip_prefix("-- dockmesh:") else {
        return Err(
            "its first line must be `-- dockmesh: reversible` or `-- dockmesh: irreversible: <why>`"
                .into(),
        );
    };
    let rest = rest.trim();
    if rest == "reversible" {
        return Ok((true, String::new()));
    }
    if let Some(why) = rest.strip_prefix("irreversible:") {
        let why = why.trim();
        if why.is_empty() {
            return Err("an irreversible migration must say why after `irreversible:`".into());
        }
        return Ok((false, why.to_owned()));
    }
    Err(format!(
        "unknown declaration {rest:?}: expected `reversible` or `irreversible: <why>`"
    ))
}

fn info_of(m: &Migration) -> MigrationInfo {
    let (reversible, note) = parse_header(m.sql.as_str()).unwrap_or_else(|e| {
        // Every embedded migration is checked by a test; an unparsable header is treated as
        // irreversible, the safe reading.
        (false, format!("the migration does not declare itself: {e}"))
    });
    MigrationInfo {
        version: m.version,
        description: m.description.to_string(),
        reversible,
        note,
    }
}

/// The migrations this binary knows for a backend, in version order.
pub fn known_migrations(backend: Backend) -> Vec<MigrationInfo> {
    migrator(backend).iter().map(info_of).collect()
}

/// The newest schema version this binary knows.
pub fn binary_version(backend: Backend) -> i64 {
    migrator(backend)
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

pub(crate) fn known_for_guard(backend: Backend) -> Vec<KnownMigration> {
    migrator(backend)
        .iter()
        .map(|m| {
            let info = info_of(m);
            KnownMigration::new(
                m.version,
                info.description,
                m.checksum.to_vec(),
                info.reversible,
            )
        })
        .collect()
}

/// A row of `_sqlx_migrations`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct AppliedRow {
    pub version: i64,
    pub description: String,
    pub success: bool,
    pub checksum: Vec<u8>,
}

/// Where a database stands against this binary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchemaReport {
    /// The backend.
    pub backend: Backend,
    /// The newest schema version applied to the database (0 for an empty database).
    pub database_version: i64,
    /// The newest schema version this binary knows.
    pub binary_version: i64,
    /// The verdict.
    pub status: SchemaStatus,
    /// For a refusal: what happened, what was kept safe and what to do.
    pub refusal: Option<String>,
    /// Irreversible migrations between the two versions (in either direction), with what they
    /// declare. A downgrade across one of them needs a restore from a backup.
    pub irreversible_between: Vec<MigrationInfo>,
}

/// The verdict of the schema guard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SchemaStatus {
    /// Every migration the binary knows is applied, and nothing else.
    UpToDate,
    /// These migrations are not applied yet; opening (or `dockmesh db migrate`) applies them.
    Pending {
        /// Their versions, in order.
        versions: Vec<i64>,
    },
    /// The database was migrated by a newer dockmesh: it has migrations this binary does not know.
    RefusedNewer {
        /// The versions this binary does not know.
        unknown: Vec<i64>,
    },
    /// The database has applied migrations this binary does not know, below its newest known one
    /// (a different build migrated it).
    RefusedUnknown {
        /// The unknown versions.
        versions: Vec<i64>,
    },
    /// An applied migration differs from the one this binary carries (its checksum changed).
    RefusedModified {
        /// The version whose checksum differs.
        version: i64,
    },
    /// A migration older than the newest applied one is missing from the database.
    RefusedGap {
        /// The versions missing below the newest applied one.
        missing: Vec<i64>,
    },
    /// Refused for a reason this binary has no finer name for (see the report's refusal text).
    RefusedOther,
    /// A migration started and did not finish (sqlx marked it failed).
    RefusedDirty {
        /// The version left half-applied.
        version: i64,
    },
}

impl SchemaStatus {
    /// True for the refusals.
    pub fn is_refused(&self) -> bool {
        !matches!(self, SchemaStatus::UpToDate | SchemaStatus::Pending { .. })
    }
}

impl SchemaReport {
    /// Decide from what the database has applied (and, for versions this binary does not know,
    /// what the database's `schema_notes` say about them).
    pub(crate) fn decide(
        backend: Backend,
        applied: &[AppliedRow],
        notes: &BTreeMap<i64, MigrationInfo>,
    ) -> SchemaReport {
        let binary = binary_version(backend);
        let database = applied.iter().map(|a| a.version).max().unwrap_or(0);
        let mut refusal = None;
        let status = if let Some(dirty) = applied.iter().find(|a| !a.success) {
            refusal = Some(format!(
                "schema migration {v} of the database started and did not finish (the database is at \
                 schema version {database}, this binary at {binary}). Nothing was changed. Restore the \
                 backup taken before the upgrade",
                v = dirty.version
            ));
            SchemaStatus::RefusedDirty {
                version: dirty.version,
            }
        } else {
            let applied_for_guard: Vec<AppliedMigration> = applied
                .iter()
                .map(|a| AppliedMigration::new(a.version, a.checksum.clone()))
                .collect();
            let known = known_for_guard(backend);
            match guard::check(&known, &applied_for_guard) {
                Ok(guard::SchemaStatus::UpToDate { .. }) => SchemaStatus::UpToDate,
                Ok(guard::SchemaStatus::Pending { migrations, .. }) => SchemaStatus::Pending {
                    versions: migrations.iter().map(|m| m.version).collect(),
                },
                Err(e) => {
                    refusal = Some(e.to_string());
                    match e {
                        guard::SchemaRefusal::NewerThanBinary { .. } => {
                            SchemaStatus::RefusedNewer {
                                unknown: applied
                                    .iter()
                                    .map(|a| a.version)
                                    .filter(|v| !known.iter().any(|k| k.version == *v))
                                    .collect(),
                            }
                        }
                        guard::SchemaRefusal::UnknownApplied { versions, .. } => {
                            SchemaStatus::RefusedUnknown { versions }
                        }
                        guard::SchemaRefusal::Modified { version, .. } => {
                            SchemaStatus::RefusedModified { version }
                        }
                        guard::SchemaRefusal::Gap { missing, .. } => {
                            SchemaStatus::RefusedGap { missing }
                        }
                        other => {
                            refusal = Some(other.to_string());
                            SchemaStatus::RefusedOther
                        }
                    }
                }
            }
        };
        // Every migration either side knows: the binary's own, and for versions it does not
        // know, what the database's notes say.
        let mut all: BTreeMap<i64, KnownMigration> = notes
            .values()
            .map(|n| {
                (
                    n.version,
                    KnownMigration::new(n.version, n.description.clone(), Vec::new(), n.reversible),
                )
            })
            .collect();
        let mut infos: BTreeMap<i64, MigrationInfo> = notes.clone();
        for k in known_migrations(backend) {
            all.insert(
                k.version,
                KnownMigration::new(k.version, k.description.clone(), Vec::new(), k.reversible),
            );
            infos.insert(k.version, k);
        }
        // An applied migration neither this binary nor the database's notes describe: assume
        // the worst (it cannot be undone).
        for a in applied {
            if let std::collections::btree_map::Entry::Vacant(slot) = all.entry(a.version) {
                slot.insert(KnownMigration::new(
                    a.version,
                    a.description.clone(),
                    Vec::new(),
                    false,
                ));
                infos.insert(
                    a.version,
                    MigrationInfo {
                        version: a.version,
                        description: a.description.clone(),
                        reversible: false,
                        note: "applied by another dockmesh that did not record whether it can be \
                               undone: assume it cannot"
                            .into(),
                    },
                );
            }
        }
        let all: Vec<KnownMigration> = all.into_values().collect();
        let (hi, lo) = (database.max(binary), database.min(binary));
        let irreversible_between = guard::irreversible_between(&all, hi, lo)
            .into_iter()
            .filter_map(|m| infos.get(&m.version).cloned())
            .collect();
        SchemaReport {
            backend,
            database_version: database,
            binary_version: binary,
            status,
            refusal,
            irreversible_between,
        }
    }

    /// The refusal as an error, when the verdict is one.
    pub fn refusal(&self) -> Option<crate::SchemaRefusal> {
        if self.status.is_refused() {
            Some(crate::SchemaRefusal {
                report: self.clone(),
            })
        } else {
            None
        }
    }

    /// One human line per fact, as `dockmesh db status` prints it.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            format!("backend: {}", self.backend),
            format!("database schema version: {}", self.database_version),
            format!("binary schema version: {}", self.binary_version),
        ];
        out.push(match &self.status {
            SchemaStatus::UpToDate => "status: up to date".to_owned(),
            SchemaStatus::Pending { versions } => format!(
                "status: pending: {} -> {} (migrations {}); `dockmesh db migrate` applies them",
                self.database_version,
                self.binary_version,
                join(versions)
            ),
            SchemaStatus::RefusedNewer { unknown } => format!(
                "status: refused: the database is newer than this binary (it has {} unknown to it)",
                plural("migration", unknown)
            ),
            SchemaStatus::RefusedUnknown { versions } => format!(
                "status: refused: the database has applied {} that this binary does not know",
                plural("migration", versions)
            ),
            SchemaStatus::RefusedOther => format!(
                "status: refused: {}",
                self.refusal.as_deref().unwrap_or("the schema guard refused the database")
            ),
            SchemaStatus::RefusedModified { version } => format!(
                "status: refused: applied migration {version} differs from the one this binary carries"
            ),
            SchemaStatus::RefusedGap { missing } => format!(
                "status: refused: migrations {} are missing below the newest applied one",
                join(missing)
            ),
            SchemaStatus::RefusedDirty { version } => {
                format!("status: refused: migration {version} started and did not finish")
            }
        });
        if self.irreversible_between.is_empty() {
            out.push(format!(
                "irreversible migrations between {} and {}: none",
                self.database_version.min(self.binary_version),
                self.database_version.max(self.binary_version)
            ));
        } else {
            out.push(format!(
                "irreversible migrations between {} and {} (going back across them needs a restore):",
                self.database_version.min(self.binary_version),
                self.database_version.max(self.binary_version)
            ));
            for m in &self.irreversible_between {
                out.push(format!("  {} {}: {}", m.version, m.description, m.note));
            }
        }
        out
    }
}

fn plural(noun: &str, v: &[i64]) -> String {
    format!("{noun}{} {}", if v.len() == 1 { "" } else { "s" }, join(v))
}

fn join(v: &[i64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_migration_declares_itself() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for m in migrator(backend).iter() {
                if let Err(e) = parse_header(m.sql.as_str()) {
                    panic!("{backend} migration {} {}: {e}", m.version, m.description);
                }
            }
        }
    }

    #[test]
    fn both_backends_carry_the_same_versions_and_declarations() {
        let strip = |v: Vec<MigrationInfo>| v;
        assert_eq!(
            strip(known_migrations(Backend::Sqlite)),
            strip(known_migrations(Backend::Postgres))
        );
        assert!(binary_version(Backend::Sqlite) >= 3);
    }

    #[test]
    fn headers_parse() {
        let check = |sql: &str, expected: Result<(bool, &str), ()>| {
            let got = parse_header(sql);
            match expected {
                Ok((r, n)) => assert_eq!(got, Ok((r, n.to_owned())), "{sql}"),
                Err(()) => assert!(got.is_err(), "{sql} should be refused"),
            }
        };
        check(
            "-- dockmesh: reversible\nCREATE TABLE x (a INT);",
            Ok((true, "")),
        );
        check(
            "-- dockmesh: irreversible: drops a column\nALTER TABLE x DROP a;",
            Ok((false, "drops a column")),
        );
        check("-- dockmesh: irreversible:\n", Err(()));
        check("-- dockmesh: maybe\n", Err(()));
        check("CREATE TABLE x (a INT);", Err(()));
    }
}
