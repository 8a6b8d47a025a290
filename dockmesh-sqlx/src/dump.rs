//! The logical export and import of tables: one JSON object per row and line, each column in
//! its canonical form (see [`crate::catalog`]). The same code is expanded for each backend.

use crate::catalog::{Kind, Table};
use crate::error::SqlStoreError;
use crate::ts::Ts;
use serde_json::{Map, Value};

/// Rows inserted per statement on import.
const BATCH: usize = 500;

/// Bytes of exported rows collected before they are handed to the file writer.
const CHUNK: usize = 256 * 1024;

/// Where a table export goes: memory, or chunks sent to a writer running off the async runtime
/// (the channel is bounded, so a slow disk slows the export instead of filling memory).
pub(crate) struct TableSink {
    buf: Vec<u8>,
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
}

impl TableSink {
    /// Collect everything in memory ([`TableSink::into_bytes`]).
    pub(crate) fn memory() -> TableSink {
        TableSink {
            buf: Vec::new(),
            tx: None,
        }
    }

    /// Send chunks to `tx`.
    pub(crate) fn channel(tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> TableSink {
        TableSink {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
        }
    }

    /// What a memory sink collected.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    async fn send(&mut self, at_least: usize, table: &Table) -> Result<(), SqlStoreError> {
        if let Some(tx) = &self.tx
            && self.buf.len() >= at_least
            && !self.buf.is_empty()
        {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            tx.send(chunk).await.map_err(|_| SqlStoreError::Io {
                what: format!("exporting table {}: writing rows", table.name),
                path: table.bundle_path().into(),
                safe: "The backup was not written; the database was not changed.",
                source: std::io::Error::other("the file writer stopped"),
            })?;
        }
        Ok(())
    }
}

/// A row of a bundle that cannot be imported.
pub(crate) fn bad_row(table: &Table, line: u64, reason: impl std::fmt::Display) -> SqlStoreError {
    SqlStoreError::RestoreRefused(format!(
        "{} line {line} cannot be restored: {reason}. The restore was rolled back; nothing was changed",
        table.bundle_path()
    ))
}

/// One column's value, checked against its kind, ready to bind.
pub(crate) enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Ts(Option<Ts>),
    Json(Value),
    Uuid(Option<uuid::Uuid>),
}

/// Check one line of a bundle's table export and turn it into cells in column order.
pub(crate) fn parse_row(
    table: &Table,
    line_no: u64,
    line: &str,
) -> Result<Vec<Cell>, SqlStoreError> {
    let obj: Map<String, Value> =
        serde_json::from_str(line).map_err(|e| bad_row(table, line_no, e))?;
    if obj.len() != table.columns.len() {
        return Err(bad_row(
            table,
            line_no,
            format!(
                "it has {} columns, the table has {}",
                obj.len(),
                table.columns.len()
            ),
        ));
    }
    let mut cells = Vec::with_capacity(table.columns.len());
    for (col, kind) in table.columns {
        let v = obj
            .get(*col)
            .ok_or_else(|| bad_row(table, line_no, format!("column {col} is missing")))?;
        let wrong = || {
            bad_row(
                table,
                line_no,
                format!("column {col} holds {v}, not a {kind:?}"),
            )
        };
        let cell = match (kind, v) {
            (Kind::Json, v) => Cell::Json(v.clone()),
            (Kind::Text, Value::Null) => Cell::Text(None),
            (Kind::Text, Value::String(s)) => Cell::Text(Some(s.clone())),
            (Kind::Int, Value::Null) => Cell::Int(None),
            (Kind::Int, Value::Number(n)) => Cell::Int(Some(n.as_i64().ok_or_else(wrong)?)),
            (Kind::Bool, Value::Null) => Cell::Bool(None),
            (Kind::Bool, Value::Bool(b)) => Cell::Bool(Some(*b)),
            (Kind::Ts, Value::Null) => Cell::Ts(None),
            (Kind::Ts, Value::String(s)) => Cell::Ts(Some(Ts::parse(s).map_err(|_| wrong())?)),
            (Kind::Uuid, Value::Null) => Cell::Uuid(None),
            (Kind::Uuid, Value::String(s)) => {
                Cell::Uuid(Some(uuid::Uuid::parse_str(s).map_err(|_| wrong())?))
            }
            _ => return Err(wrong()),
        };
        cells.push(cell);
    }
    Ok(cells)
}

macro_rules! backend_dump {
    ($m:ident, $db:ty) => {
        pub(crate) mod $m {
            use super::*;
            use futures_util::TryStreamExt;
            use sqlx::{QueryBuilder, Row};

            type Db = $db;
            type Conn = <Db as sqlx::Database>::Connection;

            fn db_err(what: String) -> impl FnOnce(sqlx::Error) -> SqlStoreError {
                move |source| SqlStoreError::Database {
                    what,
                    safe: "The backup was not written; the database was not changed.",
                    source,
                }
            }

            /// Write every row of `table` to `out`, one JSON object per line. Returns the count.
            pub(crate) async fn export_table(
                conn: &mut Conn,
                table: &Table,
                out: &mut TableSink,
            ) -> Result<u64, SqlStoreError> {
                let sql = format!(
                    "SELECT {} FROM {} ORDER BY {}",
                    table.column_list(),
                    table.name,
                    table.order_by
                );
                let what = format!("exporting table {}", table.name);
                let mut rows = sqlx::query::<Db>(sqlx::AssertSqlSafe(sql)).fetch(&mut *conn);
                let mut n = 0u64;
                while let Some(row) = rows.try_next().await.map_err(db_err(what.clone()))? {
                    let mut obj = Map::with_capacity(table.columns.len());
                    for (i, (col, kind)) in table.columns.iter().enumerate() {
                        let v = match kind {
                            Kind::Text => row
                                .try_get::<Option<String>, _>(i)
                                .map(|v| v.map(Value::String)),
                            Kind::Int => {
                                row.try_get::<Option<i64>, _>(i).map(|v| v.map(Value::from))
                            }
                            Kind::Bool => row
                                .try_get::<Option<bool>, _>(i)
                                .map(|v| v.map(Value::Bool)),
                            Kind::Ts => row
                                .try_get::<Option<Ts>, _>(i)
                                .map(|v| v.map(|t| Value::String(t.to_text()))),
                            Kind::Json => row
                                .try_get::<Option<sqlx::types::Json<Value>>, _>(i)
                                .map(|v| v.map(|j| j.0)),
                            Kind::Uuid => row
                                .try_get::<Option<uuid::Uuid>, _>(i)
                                .map(|v| v.map(|u| Value::String(u.hyphenated().to_string()))),
                        }
                        .map_err(db_err(format!("{what}, column {col}")))?;
                        obj.insert((*col).to_owned(), v.unwrap_or(Value::Null));
                    }
                    serde_json::to_writer(&mut out.buf, &obj).map_err(|e| SqlStoreError::Io {
                        what: format!("{what}: writing a row"),
                        path: table.bundle_path().into(),
                        safe: "The backup was not written; the database was not changed.",
                        source: e.into(),
                    })?;
                    out.buf.push(b'\n');
                    out.send(CHUNK, table).await?;
                    n += 1;
                }
                out.send(0, table).await?;
                Ok(n)
            }

            /// Insert parsed rows into `table` (which the caller emptied).
            pub(crate) async fn import_rows(
                conn: &mut Conn,
                table: &Table,
                rows: Vec<Vec<Cell>>,
            ) -> Result<u64, SqlStoreError> {
                let mut n = 0u64;
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let chunk: Vec<Vec<Cell>> = rows.by_ref().take(BATCH).collect();
                    let count = chunk.len() as u64;
                    let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
                        "INSERT INTO {} ({}) ",
                        table.name,
                        table.column_list()
                    ));
                    qb.push_values(chunk, |mut b, cells| {
                        for cell in cells {
                            match cell {
                                Cell::Text(v) => b.push_bind(v),
                                Cell::Int(v) => b.push_bind(v),
                                Cell::Bool(v) => b.push_bind(v),
                                Cell::Ts(v) => b.push_bind(v),
                                Cell::Json(v) => b.push_bind(sqlx::types::Json(v)),
                                Cell::Uuid(v) => b.push_bind(v),
                            };
                        }
                    });
                    qb.build().execute(&mut *conn).await.map_err(|source| {
                        SqlStoreError::Database {
                            what: format!("restoring table {}", table.name),
                            safe: "The restore was rolled back; nothing was changed.",
                            source,
                        }
                    })?;
                    n += count;
                }
                Ok(n)
            }

            /// Rows of `table`, or `None` when it does not exist.
            pub(crate) async fn count_rows(
                conn: &mut Conn,
                name: &str,
                exists_sql: &'static str,
            ) -> Result<Option<i64>, SqlStoreError> {
                let exists: bool = sqlx::query_scalar::<Db, bool>(exists_sql)
                    .bind(name)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(db_err(format!("looking for table {name}")))?;
                if !exists {
                    return Ok(None);
                }
                let n: i64 = sqlx::query_scalar::<Db, i64>(sqlx::AssertSqlSafe(format!(
                    "SELECT count(*) FROM {name}"
                )))
                .fetch_one(&mut *conn)
                .await
                .map_err(db_err(format!("counting the rows of {name}")))?;
                Ok(Some(n))
            }
        }
    };
}

backend_dump!(sqlite, sqlx::Sqlite);
backend_dump!(postgres, sqlx::Postgres);
