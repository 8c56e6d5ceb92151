// SPDX-License-Identifier: GPL-3.0-or-later
//! The store's shared query layer: every query and every multi-step operation of the
//! store is written once here, against [`Conn`] (a connection or a transaction that runs
//! SQL and returns rows of plain [`Cell`]s), and [`Backend`] (where those connections and
//! transactions come from). The two backends supply only these: [`super::sqlite`] on
//! rusqlite (one file, `BEGIN IMMEDIATE` write transactions), [`super::postgres`] on
//! tokio-postgres (several nodes, row locks). Adding a query touches the trait and this
//! layer, nothing else.
//!
//! The SQL is written once in the syntax both dialects accept: `$N` parameters (the
//! SQLite backend binds them as `?N`, same numbers), `ON CONFLICT` instead of `INSERT OR
//! …`, `"only"` quoted. The few real differences are named by [`Dialect`]: the implicit
//! `rowid` (SQLite) against the `seq` identity column (PostgreSQL); the row locks
//! (`FOR UPDATE`, `SKIP LOCKED`), which only PostgreSQL needs, SQLite's write transaction
//! holding the whole file; the chain head (a locked row on PostgreSQL, the last record on
//! SQLite); the outbox's bytes (a side table written through SQLite's blob interface).

use super::StoreError;

mod legal;
mod outbox;
mod rem;
mod store;

pub use legal::{append_event, chain_row, lock_head, Head};

/// Which SQL dialect a [`Conn`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The column that orders the rows of `tracking` and `pending_acceptance` in insertion
    /// order.
    pub fn seq(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "seq",
        }
    }

    /// `lock` (a `FOR UPDATE …` clause) on PostgreSQL, nothing on SQLite, whose write
    /// transaction holds the whole database.
    pub fn lock(self, lock: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => lock,
        }
    }
}

/// One parameter value, typed (PostgreSQL wants a NULL's type).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::Text(v.as_deref())
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(Some(v))
    }
}
impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Blob(Some(v))
    }
}
impl<'a> From<&'a Option<Vec<u8>>> for Arg<'a> {
    fn from(v: &'a Option<Vec<u8>>) -> Self {
        Arg::Blob(v.as_deref())
    }
}

/// The parameters of one statement.
macro_rules! args {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::Arg::from($v)),*] };
}
pub(crate) use args;

/// One column value of a result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Cell>);

/// A Rust value read from a [`Cell`].
pub trait FromCell: Sized {
    fn from_cell(cell: Cell) -> Option<Self>;
}

impl FromCell for i64 {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Int(v) => Some(v),
            _ => None,
        }
    }
}
impl FromCell for bool {
    /// SQLite has no booleans: 0 is false, any other integer true.
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Bool(v) => Some(v),
            Cell::Int(v) => Some(v != 0),
            _ => None,
        }
    }
}
impl FromCell for String {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Text(v) => Some(v),
            _ => None,
        }
    }
}
impl FromCell for Vec<u8> {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Blob(v) => Some(v),
            _ => None,
        }
    }
}
impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

impl Row {
    /// Column `i` as a `T`; a missing column or another type is a corrupt row.
    pub fn get<T: FromCell>(&self, i: usize) -> Result<T, StoreError> {
        let cell = self.0.get(i).cloned().unwrap_or(Cell::Null);
        // The cell is shown only in the error (formatting every column read was a
        // measurable share of the store's CPU).
        T::from_cell(cell).ok_or_else(|| {
            let shown = format!("{:.40?}", self.0.get(i).unwrap_or(&Cell::Null));
            StoreError::Corrupt(format!(
                "column {i}: unexpected {shown} (want {})",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A driver's error: its message, and whether a uniqueness constraint refused the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    pub message: String,
    pub conflict: bool,
}

/// A connection, or a transaction on one: runs SQL written with `$N` parameters.
pub trait Conn {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; returns how many rows it changed.
    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError>;
    /// Runs a query (or a statement with `RETURNING`); returns its rows.
    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError>;
    /// SQLite only: inserts the row `(key, data)` into `table` (columns `key`, `data`)
    /// and writes the bytes in place through the blob interface, without copying them
    /// through a bound parameter.
    fn insert_blob(&self, table: &str, key: &str, data: &[u8]) -> Result<(), DbError>;
}

/// Where the connections come from: the one thing a backend is besides its [`Conn`].
pub trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// Runs `f` on a connection, outside a write transaction.
    fn read<T>(&self, f: impl FnOnce(&dyn Conn) -> Result<T, StoreError>) -> Result<T, StoreError>;
    /// Runs `f` in one write transaction, committed when `f` returns `Ok` (rolled back
    /// otherwise); `what` names it in errors.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;
    /// Which store this is, for messages.
    fn describe(&self) -> String;
}

fn fail(what: &str, e: DbError) -> StoreError {
    StoreError::Database(format!("{what}: {}", e.message))
}

/// Runs a statement; `what` names it in errors.
pub fn exec(c: &dyn Conn, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
    c.execute(sql, args).map_err(|e| fail(what, e))
}

/// Runs a statement; a uniqueness conflict is the error `conflict` says.
pub fn exec_unique(
    c: &dyn Conn,
    what: &str,
    sql: &str,
    args: &[Arg<'_>],
    conflict: impl FnOnce() -> String,
) -> Result<u64, StoreError> {
    c.execute(sql, args).map_err(|e| {
        if e.conflict {
            StoreError::Database(conflict())
        } else {
            fail(what, e)
        }
    })
}

/// Every row of a query.
pub fn all(c: &dyn Conn, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
    c.query(sql, args).map_err(|e| fail(what, e))
}

/// The first row of a query, if any.
pub fn opt(
    c: &dyn Conn,
    what: &str,
    sql: &str,
    args: &[Arg<'_>],
) -> Result<Option<Row>, StoreError> {
    Ok(all(c, what, sql, args)?.into_iter().next())
}

/// The one row of a query (an aggregate, `EXISTS`).
pub fn one(c: &dyn Conn, what: &str, sql: &str, args: &[Arg<'_>]) -> Result<Row, StoreError> {
    opt(c, what, sql, args)?
        .ok_or_else(|| StoreError::Database(format!("{what}: the query returned no row")))
}

/// `n` as an SQL integer (saturating).
pub fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
