//! Every table a backup holds, with the logical kind of each column.
//!
//! The kinds are what make a bundle backend-neutral: a `Ts` column is `TIMESTAMPTZ` on
//! PostgreSQL and fixed-width text on SQLite, a `Uuid` column is `UUID` or a 16-byte blob, a
//! `Json` column is `JSONB` or text; in a bundle each is one canonical JSON value. A test checks
//! that this catalog names exactly the columns of the live schema on both backends.
//!
//! `_sqlx_migrations` is not exported (its checksums belong to one backend's SQL; the manifest
//! carries the schema version instead) and neither is `schema_notes` (rebuilt from the binary).

/// The logical kind of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Int,
    Bool,
    Ts,
    Json,
    Uuid,
}

/// One table.
#[derive(Debug)]
pub(crate) struct Table {
    /// Its name.
    pub name: &'static str,
    /// The schema version that creates it.
    pub since: i64,
    /// The order rows are exported in (a unique key, so exports are deterministic).
    pub order_by: &'static str,
    /// Its columns.
    pub columns: &'static [(&'static str, Kind)],
    /// Whether the migration that creates it also seeds rows (replaced on import).
    pub seeded: bool,
}

use Kind::*;

/// Every exported table, in an order that respects foreign keys (parents first).
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "agents",
        since: 1,
        order_by: "id",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("version", Text),
            ("commit_sha", Text),
            ("protocol_version", Int),
            ("arch", Text),
            ("docker_version", Text),
            ("last_seen", Ts),
            ("connection", Text),
            ("upgrade", Json),
        ],
        seeded: false,
    },
    Table {
        name: "tokens",
        since: 1,
        order_by: "hash",
        columns: &[
            ("hash", Text),
            ("kind", Text),
            ("name", Text),
            ("created_at", Ts),
            ("expires_at", Ts),
            ("one_time", Bool),
            ("used_at", Ts),
        ],
        seeded: false,
    },
    Table {
        name: "token_scopes",
        since: 8,
        order_by: "hash",
        columns: &[("hash", Text), ("scope", Text)],
        seeded: false,
    },
    Table {
        name: "stacks",
        since: 1,
        order_by: "name",
        columns: &[
            ("name", Text),
            ("compose", Text),
            ("env", Text),
            ("host", Text),
            ("updated_at", Ts),
        ],
        seeded: false,
    },
    Table {
        name: "deploys",
        since: 1,
        order_by: "id",
        columns: &[
            ("id", Int),
            ("stack", Text),
            ("at", Ts),
            ("host", Text),
            ("action", Text),
            ("actor", Text),
        ],
        seeded: false,
    },
    Table {
        name: "rollout",
        since: 1,
        order_by: "id",
        columns: &[("id", Int), ("policy", Json), ("state", Json)],
        seeded: false,
    },
    Table {
        name: "leases",
        since: 1,
        order_by: "name",
        columns: &[("name", Text), ("owner", Text), ("held_until", Ts)],
        seeded: false,
    },
    Table {
        name: "lease_fences",
        since: 5,
        order_by: "name",
        columns: &[("name", Text), ("token", Int)],
        seeded: false,
    },
    Table {
        name: "migrations",
        since: 2,
        order_by: "id",
        columns: &[
            ("id", Uuid),
            ("stack", Text),
            ("source", Text),
            ("target", Text),
            ("requested_at", Ts),
            ("requested_by", Text),
            ("retention", Text),
            ("active", Bool),
            ("event_count", Int),
        ],
        seeded: false,
    },
    Table {
        name: "migration_events",
        since: 2,
        order_by: "migration_id, seq",
        columns: &[
            ("migration_id", Uuid),
            ("seq", Int),
            ("kind", Text),
            ("at", Ts),
            ("body", Json),
        ],
        seeded: false,
    },
    Table {
        name: "drains",
        since: 2,
        order_by: "id",
        columns: &[
            ("id", Uuid),
            ("created_at", Ts),
            ("plan", Json),
            ("migrations", Json),
        ],
        seeded: false,
    },
    Table {
        name: "drain_states",
        since: 6,
        order_by: "id",
        columns: &[("id", Uuid), ("state", Json)],
        seeded: false,
    },
    Table {
        name: "cordons",
        since: 6,
        order_by: "host",
        columns: &[("host", Text), ("cordoned_at", Ts), ("cordoned_by", Text)],
        seeded: false,
    },
    Table {
        name: "releases",
        since: 7,
        order_by: "stack, rev",
        columns: &[
            ("stack", Text),
            ("rev", Int),
            ("at", Ts),
            ("host", Text),
            ("compose", Text),
            ("env", Text),
            ("images", Json),
            ("outcome", Text),
            ("detail", Text),
            ("from_rev", Int),
            ("actor", Text),
        ],
        seeded: false,
    },
    Table {
        name: "stack_upgrades",
        since: 9,
        order_by: "stack",
        columns: &[("stack", Text), ("rev", Int), ("run", Json)],
        seeded: false,
    },
    Table {
        name: "audit_log",
        since: 3,
        order_by: "seq",
        columns: &[
            ("seq", Int),
            ("at", Ts),
            ("actor", Text),
            ("action", Text),
            ("target", Text),
            ("detail", Json),
            ("prev_hash", Text),
            ("hash", Text),
        ],
        seeded: false,
    },
    Table {
        name: "audit_head",
        since: 3,
        order_by: "id",
        columns: &[("id", Int), ("seq", Int), ("hash", Text)],
        seeded: true,
    },
];

/// The tables that exist at schema version `version`.
pub(crate) fn tables_at(version: i64) -> impl Iterator<Item = &'static Table> {
    TABLES.iter().filter(move |t| t.since <= version)
}

/// The table called `name`.
pub(crate) fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

impl Table {
    /// `col1, col2, …`
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The path of its export inside a bundle.
    pub fn bundle_path(&self) -> String {
        format!("database/{}.jsonl", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Pool, SqlStore};
    use crate::target::DbTarget;
    use sqlx::Connection;
    use std::collections::BTreeMap;

    /// Tables that are deliberately not exported. (`audit_anchor` is a MAC under the source's
    /// key, which a bundle does not carry: a restore anchors the restored chain with its own.)
    const NOT_EXPORTED: &[&str] = &[
        "_sqlx_migrations",
        "schema_notes",
        "sqlite_sequence",
        "audit_anchor",
    ];

    async fn live_columns(store: &SqlStore) -> BTreeMap<String, Vec<String>> {
        let rows: Vec<(String, String)> = match &store.pool {
            Pool::Sqlite(p) => sqlx::query_as(
                "SELECT m.name, c.name FROM sqlite_master m JOIN pragma_table_info(m.name) c \
                 WHERE m.type = 'table' ORDER BY m.name, c.cid",
            )
            .fetch_all(p)
            .await
            .unwrap(),
            Pool::Postgres(p) => sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position",
            )
            .fetch_all(p)
            .await
            .unwrap(),
        };
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (t, c) in rows {
            out.entry(t).or_default().push(c);
        }
        out
    }

    async fn check(store: &SqlStore) {
        let live = live_columns(store).await;
        for (t, cols) in &live {
            if NOT_EXPORTED.contains(&t.as_str()) {
                continue;
            }
            let table = table(t).unwrap_or_else(|| panic!("table {t} is missing from the catalog"));
            let mut want: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
            let mut have: Vec<&str> = cols.iter().map(String::as_str).collect();
            want.sort_unstable();
            have.sort_unstable();
            assert_eq!(want, have, "columns of {t} ({})", store.backend());
        }
        for t in TABLES {
            assert!(live.contains_key(t.name), "catalog table {} exists", t.name);
        }
    }

    #[tokio::test]
    async fn the_catalog_matches_the_sqlite_schema() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&DbTarget::sqlite_in(dir.path()))
            .await
            .unwrap();
        check(&store).await;
        store.close().await;
    }

    #[tokio::test]
    async fn the_catalog_matches_the_postgres_schema() {
        let Some(admin) = std::env::var("DOCKMESH_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var("DOCKMESH_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "DOCKMESH_TEST_POSTGRES_URL is not set but DOCKMESH_REQUIRE_SERVICES=1"
            );
            eprintln!(
                "the_catalog_matches_the_postgres_schema: skipped: DOCKMESH_TEST_POSTGRES_URL is not set"
            );
            return;
        };
        let name = format!("dockmesh_catalog_{}", uuid::Uuid::now_v7().simple());
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        let cut = admin.rfind('/').unwrap();
        let url = format!("{}/{}", &admin[..cut], name);
        let store = SqlStore::open_url(&url).await.unwrap();
        check(&store).await;
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        let _ = c.close().await;
    }
}
