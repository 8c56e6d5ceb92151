// SPDX-License-Identifier: GPL-3.0-or-later
//! SQLite backend of the store (WAL mode): the connection and its transactions under the
//! shared query layer ([`super::sql`]), the schema and its migrations.
//!
//! One database file serves every `pec` process of a host. Within a process the connection
//! sits behind a mutex (a rusqlite `Connection` is `Send` but not `Sync`); between processes
//! SQLite's file locks and the busy timeout serialise the writers. Every write is one
//! `BEGIN IMMEDIATE` transaction: the write lock is taken up front, so a transaction never
//! has to upgrade a read lock (which fails at once with `SQLITE_BUSY` in WAL mode instead of
//! waiting).
//!
//! Durability: `synchronous=FULL`. In WAL mode `NORMAL` keeps the file consistent but may
//! lose the last commits on power loss; the legal log and the pending acceptance receipts
//! must survive it, so every commit syncs the WAL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};

use super::chain::{COLUMNS, GENESIS};
use super::sql::{self, chain_row, Arg, Backend, Cell, Conn, DbError, Dialect, Row};
use super::StoreError;

mod schema;
use schema::{LEGAL_LOG_MIGRATION, MIGRATIONS};

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (the store's queries, a few shapes each).
const STATEMENT_CACHE: usize = 128;

/// The SQLite store. Open one per process (or several: they share the file safely).
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if needed) the database at `path`, switches it to WAL mode and
    /// brings the schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display();
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Database(format!("open \"{shown}\": {e}")))?;
        configure(&conn).map_err(|e| StoreError::Database(format!("open \"{shown}\": {e}")))?;
        migrate(&mut conn).map_err(|e| match e {
            StoreError::Database(m) => StoreError::Database(format!("open \"{shown}\": {m}")),
            other => other,
        })?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the database (the number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        current_version(&self.lock()).map_err(db("read schema version"))
    }

    /// The connection. A panic while it was held unwound through a `Transaction`, whose drop
    /// rolled back, so a poisoned lock still guards a usable connection.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for SqliteStore {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn read<T>(&self, f: impl FnOnce(&dyn Conn) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&Lite(&self.lock()))
    }

    /// One `BEGIN IMMEDIATE` transaction.
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&format!("{what}: begin")))?;
        let value = f(&Lite(&tx))?;
        tx.commit().map_err(db(&format!("{what}: commit")))?;
        Ok(value)
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}

/// A connection (or a transaction: it dereferences to one) as a [`Conn`].
struct Lite<'a>(&'a Connection);

/// The shared layer's `$N` parameters as SQLite's `?N` (same numbers, so a parameter
/// used twice is bound once). `$` inside a quoted literal or identifier is left alone.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        match (quote, ch) {
            (None, '\'' | '"') => quote = Some(ch),
            (Some(q), _) if q == ch => quote = None,
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            _ => {}
        }
        out.push(ch);
    }
    out
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Arg::Int(Some(v)) => ValueRef::Integer(v),
            Arg::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Arg::Blob(Some(v)) => ValueRef::Blob(v),
            Arg::Int(None) | Arg::Text(None) | Arg::Blob(None) => ValueRef::Null,
        }))
    }
}

fn lite_error(e: rusqlite::Error) -> DbError {
    DbError {
        conflict: e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation),
        message: e.to_string(),
    }
}

fn cell(v: ValueRef<'_>) -> Result<Cell, DbError> {
    Ok(match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(i) => Cell::Int(i),
        ValueRef::Text(t) => Cell::Text(String::from_utf8(t.to_vec()).map_err(|e| DbError {
            message: format!("text column: {e}"),
            conflict: false,
        })?),
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
        ValueRef::Real(r) => {
            return Err(DbError {
                message: format!("unexpected real value {r}"),
                conflict: false,
            })
        }
    })
}

impl Conn for Lite<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        let mut stmt = self
            .0
            .prepare_cached(&sqlite_sql(sql))
            .map_err(lite_error)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(args))
            .map_err(lite_error)?;
        Ok(n as u64)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        let mut stmt = self
            .0
            .prepare_cached(&sqlite_sql(sql))
            .map_err(lite_error)?;
        let width = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args))
            .map_err(lite_error)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(lite_error)? {
            let cells = (0..width)
                .map(|i| cell(r.get_ref(i).map_err(lite_error)?))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Row(cells));
        }
        Ok(out)
    }

    /// A zeroblob as the record's last column (SQLite keeps it a length, not a buffer),
    /// then the bytes written in place through the blob interface. Bound as a parameter,
    /// they would be copied by SQLite and again into the record.
    fn insert_blob(&self, table: &str, key: &str, data: &[u8]) -> Result<(), DbError> {
        let len = i64::try_from(data.len()).map_err(|_| DbError {
            message: "too large".into(),
            conflict: false,
        })?;
        // Cached like every other statement (a few tables only).
        self.0
            .prepare_cached(&format!(
                "INSERT INTO {table} (key, data) VALUES (?1, zeroblob(?2))"
            ))
            .and_then(|mut stmt| stmt.execute(params![key, len]))
            .map_err(lite_error)?;
        let mut blob = self
            .0
            .blob_open(
                rusqlite::MAIN_DB,
                table,
                "data",
                self.0.last_insert_rowid(),
                false,
            )
            .map_err(lite_error)?;
        blob.write_all(data).map_err(|e| DbError {
            message: e.to_string(),
            conflict: false,
        })?;
        blob.close().map_err(lite_error)
    }
}

/// Connection settings; `journal_mode` returns a row, hence `query_row`.
fn configure(conn: &Connection) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("set busy timeout: {e}"))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode = wal_mode(conn).map_err(|e| format!("set journal mode: {e}"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("journal mode is \"{mode}\", expected \"wal\""));
    }
    // A 64 MiB page cache: the legal log's indexes (sender, recipients, date) are
    // written at random positions, and the default 2 MB cache thrashes at millions of rows.
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA cache_size=-65536;")
        .map_err(|e| format!("set synchronous, foreign keys and cache size: {e}"))
}

/// Switches the file to WAL and returns the resulting mode. On a new file the switch needs
/// an exclusive lock, and SQLite answers `SQLITE_BUSY` at once, without the busy handler,
/// when another connection is setting the file up at the same moment; so retry for as long
/// as the busy timeout. WAL mode is persistent: later opens find it already set.
fn wal_mode(conn: &Connection) -> rusqlite::Result<String> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)) {
            Err(e)
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

/// Applies the migrations the database lacks, each in its own immediate transaction (so
/// that two processes opening a new file at once do not both apply one).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len();
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index + 1;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("migrate: begin"))?;
        tx.execute_batch(
            "-- One row per applied migration.
             CREATE TABLE IF NOT EXISTS schema_version (
                 version    INTEGER PRIMARY KEY,  -- migration number, from 1
                 applied_at INTEGER NOT NULL      -- unix seconds
             ) STRICT;",
        )
        .map_err(db("migrate: create schema_version"))?;
        let current = current_version(&tx).map_err(db("migrate: read schema version"))?;
        if current as usize > known {
            return Err(StoreError::Database(format!(
                "database schema version {current} is newer than this program's ({known})"
            )));
        }
        if current as usize >= version {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(db(&format!("migrate: apply version {version}")))?;
        if version == LEGAL_LOG_MIGRATION {
            chain_existing(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, unixepoch())",
            params![version as i64],
        )
        .map_err(db(&format!("migrate: record version {version}")))?;
        tx.commit()
            .map_err(db(&format!("migrate: commit version {version}")))?;
    }
    Ok(())
}

fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
}

/// Maps a rusqlite error to [`StoreError::Database`] with what we were doing.
fn db(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Database(format!("{context}: {e}"))
}

/// Migration to version 2: chains the rows written before it, in id order. The UPDATE
/// trigger is dropped and re-created around it, in the migration's transaction.
fn chain_existing(tx: &Connection) -> Result<(), StoreError> {
    let what = "migrate: chain existing records";
    tx.execute_batch("DROP TRIGGER events_append_only;")
        .map_err(db(what))?;
    let c = Lite(tx);
    let rows = sql::all(
        &c,
        what,
        &format!("SELECT {COLUMNS} FROM events ORDER BY id"),
        &[],
    )?;
    let mut prev = GENESIS.to_vec();
    for row in &rows {
        let (mut record, _) = chain_row(row)?;
        record.prev_hash = prev;
        let hash = record.hash();
        tx.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            params![record.prev_hash, &hash[..], record.id],
        )
        .map_err(db(what))?;
        prev = hash.to_vec();
    }
    tx.execute_batch(
        "CREATE TRIGGER events_append_only BEFORE UPDATE ON events
         BEGIN
             SELECT RAISE(ABORT, 'the legal log is append-only');
         END;",
    )
    .map_err(db(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::kind::MessageKind;
    use crate::message::time::Instant;
    use crate::store::{EventKind, LogEvent, LogQuery, LogStore, Refused, Store, TrackingState};
    use chrono::{TimeZone, Utc};

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Instant {
        Instant::from_utc(Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap())
    }

    /// A version-1 database (before the timers) with a tracking row is brought to the
    /// current version and its row works with the timer methods.
    #[test]
    fn a_version_1_database_is_upgraded_with_its_tracking_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pec.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,
                                              applied_at INTEGER NOT NULL) STRICT;
                 INSERT INTO schema_version VALUES (1, 0);
                 INSERT INTO tracking VALUES ('id1@x', 'bob@pec.example.net', 1000, 'sent');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        assert!(store
            .update_tracking("id1@x", "Bob@PEC.example.net", TrackingState::TakenInCharge)
            .unwrap());
        assert_eq!(
            store.tracking_for("id1@x").unwrap()[0].state,
            TrackingState::TakenInCharge
        );
        assert_eq!(store.stored_index().unwrap(), None);
    }

    #[test]
    fn reopening_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pec.db");
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as u32);
        store
            .allow_sender("mario", "mario.rossi@pec.example.it")
            .unwrap();
        // Mark the applied rows so that a re-run would show.
        store
            .lock()
            .execute("UPDATE schema_version SET applied_at = 42", [])
            .unwrap();
        drop(store);

        let again = SqliteStore::open(&path).unwrap();
        let rows: Vec<(i64, i64)> = {
            let conn = again.lock();
            let mut stmt = conn
                .prepare("SELECT version, applied_at FROM schema_version ORDER BY version")
                .unwrap();
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            rows
        };
        let want: Vec<(i64, i64)> = (1..=MIGRATIONS.len() as i64).map(|v| (v, 42)).collect();
        assert_eq!(rows, want);
        assert!(again
            .sender_allowed("mario", "mario.rossi@pec.example.it")
            .unwrap());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pec.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .lock()
            .execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
                params![MIGRATIONS.len() as i64 + 1],
            )
            .unwrap();
        drop(store);
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("is newer than this program's"), "{err}");
    }

    #[test]
    fn the_database_is_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
        let conn = store.lock();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
    }

    #[test]
    fn the_legal_log_cannot_be_updated() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
        store
            .log(&LogEvent {
                pec_id: "x".into(),
                at: Instant::from_unix(0),
                kind: EventKind::RejectedInSmtp,
                sender: "a@b.it".into(),
                recipients: Vec::new(),
                subject: String::new(),
                related_ids: Vec::new(),
                provider: "P".into(),
                queue_id: None,
                outcome: "refused".into(),
                reason: None,
            })
            .unwrap();
        let err = store
            .lock()
            .execute("UPDATE events SET outcome = 'ok'", [])
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    #[test]
    fn quarantine_expires_thirty_calendar_months_later() {
        use crate::message::build::Certification;
        use crate::message::kind::ReceiptType;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
        let at = utc(2021, 8, 31, 9, 15, 0);
        store
            .record_refused(&Refused {
                auth_at: None,
                pec_id: "opec.1@pec.example.it".into(),
                queue_id: None,
                at,
                cert: Certification {
                    mittente: "a@pec.example.it".into(),
                    destinatari: Vec::new(),
                    risposte: "a@pec.example.it".into(),
                    oggetto: "s".into(),
                    identificativo: "opec.1@pec.example.it".into(),
                    msgid: None,
                    requested: ReceiptType::Completa,
                    to: Vec::new(),
                    cc: Vec::new(),
                },
                kind: MessageKind::NonAcceptanceVirus,
                reason: "Eicar-Test-Signature".into(),
                notice_id: "n@pec.example.it".into(),
                quarantine: Some(b"infected".to_vec()),
                provider: "P".into(),
                login: None,
            })
            .unwrap();
        let (stored_at, expires): (i64, i64) = store
            .lock()
            .query_row("SELECT at, expires_at FROM quarantine", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(stored_at, at.unix());
        assert_eq!(expires, utc(2024, 2, 29, 9, 15, 0).unix());
    }

    #[test]
    fn a_malformed_row_is_reported_as_corrupt_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("pec.db")).unwrap();
        store
            .lock()
            .execute(
                "INSERT INTO events (id, pec_id, at, kind, sender, recipients, subject,
                                     related_ids, provider, outcome)
                 VALUES (7, 'x', 0, 'Accettazione', 's', 'not json', '', '[]', 'P', 'ok')",
                [],
            )
            .unwrap();
        match store.events_for("x") {
            Err(StoreError::Corrupt(m)) => {
                assert!(m.starts_with("events row 7: recipients"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn migration_2_chains_and_indexes_the_records_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pec.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,
                                              applied_at INTEGER NOT NULL) STRICT;",
            )
            .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO schema_version VALUES (1, 0);
                 INSERT INTO events (pec_id, at, kind, sender, recipients, subject,
                                     related_ids, provider, outcome)
                 VALUES ('a', 10, 'BustaTrasporto', 'Mario@x.it',
                         '[{\"address\":\"Anna@y.it\",\"tipo\":\"certificato\"}]',
                         's', '[]', 'P', 'ok'),
                        ('a', 11, 'Accettazione', 'Mario@x.it', '[]', 's', '[]', 'P', 'ok');",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let report = store.verify_chain(None, None).unwrap();
        assert_eq!(report.records, 2);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let found = store
            .search_events(&LogQuery {
                recipient: Some("anna@y.it".into()),
                ..LogQuery::default()
            })
            .unwrap();
        assert_eq!(found.len(), 1);
        // New records chain onto the migrated ones; updates are still refused.
        store.log(&found[0].event).unwrap();
        assert!(store.verify_chain(None, None).unwrap().problems.is_empty());
        assert!(store
            .lock()
            .execute("UPDATE events SET outcome = 'x'", [])
            .is_err());
    }
}
