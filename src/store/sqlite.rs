// SPDX-License-Identifier: GPL-3.0-or-later
//! SQLite implementation of [`super::Store`] (WAL mode).
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

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};

use super::codec::{
    decode_policy, forward_from, parse_state, policy_columns, quarantine_expiry, state_str,
    timeout_columns, timeout_state,
};
use super::{
    Accepted, ArrivalNotice, DueNotice, LogEvent, LogQuery, LoggedEvent, MailboxPolicy, Refused,
    Store, StoreError, StoredIndex, TimeoutClaim, Tracking, TrackingState,
};
use crate::message::build::Certification;
use crate::message::kind::RecipientType;
use crate::message::time::Instant;

mod legal;
mod ops;
mod outbox;
mod requests;
mod schema;
use schema::{LEGAL_LOG_MIGRATION, MIGRATIONS};

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f` returns `Ok`
    /// (and rolled back otherwise).
    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&format!("{what}: begin")))?;
        let value = f(&tx)?;
        tx.commit().map_err(db(&format!("{what}: commit")))?;
        Ok(value)
    }
}

/// Connection settings; `journal_mode` returns a row, hence `query_row`.
fn configure(conn: &Connection) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("set busy timeout: {e}"))?;
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
            legal::chain_existing(&tx)?;
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

/// Appends one event row, chained (the one insert path of the legal log: every method
/// that writes an event calls it inside its transaction). See [`legal::append_event`].
fn insert_event(tx: &Connection, event: &LogEvent) -> Result<(), StoreError> {
    legal::append_event(tx, event).map(|_| ())
}

fn is_constraint_violation(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation)
}

impl Store for SqliteStore {
    /// The rule: `login` may send as `address` when the `senders` table maps that pair;
    /// a login with no mapping at all may send only as the address equal to the login
    /// (ASCII case-insensitive). A mapping therefore replaces the default: a login with
    /// mappings that does not list itself cannot send as itself. Addresses are compared in
    /// lower case; logins exactly.
    fn sender_allowed(&self, login: &str, address: &str) -> Result<bool, StoreError> {
        let address = address.to_ascii_lowercase();
        let conn = self.lock();
        let (mapped, any): (bool, bool) = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM senders WHERE login = ?1 AND address = ?2),
                        EXISTS (SELECT 1 FROM senders WHERE login = ?1)",
                params![login, address],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db(&format!("sender check for login \"{login}\"")))?;
        Ok(mapped || (!any && login.eq_ignore_ascii_case(&address)))
    }

    /// Idempotent: mapping a pair twice is not an error.
    fn allow_sender(&self, login: &str, address: &str) -> Result<(), StoreError> {
        let address = address.to_ascii_lowercase();
        self.write("allow sender", |tx| {
            tx.execute(
                "INSERT OR IGNORE INTO senders (login, address) VALUES (?1, ?2)",
                params![login, address],
            )
            .map_err(db(&format!(
                "allow login \"{login}\" to send as \"{address}\""
            )))?;
            Ok(())
        })
    }

    fn record_accepted(&self, accepted: &Accepted) -> Result<(), StoreError> {
        let cert = serde_json::to_string(&accepted.cert)
            .map_err(|e| StoreError::Database(format!("encode certification: {e}")))?;
        let pec_id = &accepted.pec_id;
        self.write("record accepted", |tx| {
            // The transport envelope is logged once Postfix has queued it (see
            // Store::record_accepted), with the acceptance.
            // A recipient listed twice is tracked once.
            let mut track = tx
                .prepare(
                    "INSERT OR IGNORE INTO tracking (pec_id, recipient, sent_at, state)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(db("prepare tracking insert"))?;
            for d in &accepted.cert.destinatari {
                if d.tipo != RecipientType::Certificato {
                    continue;
                }
                track
                    .execute(params![
                        pec_id,
                        d.address,
                        accepted.at.unix(),
                        state_str(TrackingState::Sent)
                    ])
                    .map_err(db(&format!(
                        "track recipient \"{}\" of \"{pec_id}\"",
                        d.address
                    )))?;
            }
            // Last, so that a duplicate pec_id fails after the other writes and the test of
            // the one-transaction property sees them rolled back.
            tx.execute(
                "INSERT INTO pending_acceptance (pec_id, queue_id, at, login, provider, cert)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    pec_id,
                    accepted.queue_id,
                    accepted.at.unix(),
                    accepted.login,
                    accepted.provider,
                    cert,
                ],
            )
            .map_err(|e| {
                if is_constraint_violation(&e) {
                    StoreError::Database(format!("pec_id \"{pec_id}\" is already recorded"))
                } else {
                    db(&format!("record pending acceptance \"{pec_id}\""))(e)
                }
            })?;
            Ok(())
        })
    }

    fn pending_acceptance(&self, pec_id: &str) -> Result<Option<Accepted>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT rowid, queue_id, at, login, provider, cert FROM pending_acceptance
                 WHERE pec_id = ?1 AND state = 'pending'",
                params![pec_id],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(db(&format!("read pending acceptance \"{pec_id}\"")))?;
        let Some((rowid, queue_id, at, login, provider, cert)) = row else {
            return Ok(None);
        };
        let cert: Certification = serde_json::from_str(&cert).map_err(|e| {
            StoreError::Corrupt(format!(
                "pending_acceptance row {rowid}: certification: {e}"
            ))
        })?;
        Ok(Some(Accepted {
            pec_id: pec_id.to_string(),
            queue_id,
            at: Instant::from_unix(at),
            cert,
            login,
            provider,
        }))
    }

    fn acceptance_emitted(
        &self,
        pec_id: &str,
        receipt_id: &str,
        at: Instant,
    ) -> Result<bool, StoreError> {
        self.write("acceptance emitted", |tx| {
            outbox::close_acceptance(tx, pec_id, receipt_id, at)
        })
    }

    /// The outcome is `virus` for [`MessageKind::NonAcceptanceVirus`], `refused` otherwise.
    /// With a quarantined message, a `quarantine` row (expiring 30 calendar months after
    /// `at`) and a [`EventKind::Quarantined`] event are added in the same transaction.
    fn record_refused(&self, refused: &Refused) -> Result<(), StoreError> {
        self.write("record refused", |tx| outbox::refused(tx, refused))
    }

    fn log(&self, event: &LogEvent) -> Result<(), StoreError> {
        self.write("log", |tx| insert_event(tx, event))
    }

    fn events_for(&self, pec_id: &str) -> Result<Vec<LogEvent>, StoreError> {
        let rows = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {} FROM events WHERE pec_id = ?1 ORDER BY at, id",
                    legal::COLUMNS
                ))
                .map_err(db("prepare events query"))?;
            let rows = stmt
                .query_map(params![pec_id], legal::read_row)
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(db(&format!("read events of \"{pec_id}\"")))?;
            rows
        };
        rows.into_iter().map(|(r, _)| r.event()).collect()
    }

    fn tracking_for(&self, pec_id: &str) -> Result<Vec<Tracking>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT rowid, recipient, sent_at, state FROM tracking
                 WHERE pec_id = ?1 ORDER BY rowid",
            )
            .map_err(db("prepare tracking query"))?;
        let rows = stmt
            .query_map(params![pec_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db(&format!("read tracking of \"{pec_id}\"")))?;
        rows.into_iter()
            .map(|(rowid, recipient, sent_at, state)| {
                let state = parse_state(&state).ok_or_else(|| {
                    StoreError::Corrupt(format!("tracking row {rowid}: unknown state \"{state}\""))
                })?;
                Ok(Tracking {
                    pec_id: pec_id.to_string(),
                    recipient,
                    sent_at: Instant::from_unix(sent_at),
                    state,
                })
            })
            .collect()
    }

    fn quarantined(&self, pec_id: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT message FROM quarantine WHERE pec_id = ?1 ORDER BY id")
            .map_err(db("prepare quarantine query"))?;
        stmt.query_map(params![pec_id], |r| r.get::<_, Vec<u8>>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db(&format!("read quarantine of \"{pec_id}\"")))
    }

    fn record_verified(
        &self,
        pec_id: &str,
        recipients: &[String],
        event: &LogEvent,
    ) -> Result<(), StoreError> {
        self.write("record verified", |tx| {
            insert_event(tx, event)?;
            let mut stmt = tx
                .prepare(
                    "INSERT OR IGNORE INTO verified (pec_id, recipient, at) VALUES (?1, ?2, ?3)",
                )
                .map_err(db("prepare verified insert"))?;
            for r in recipients {
                stmt.execute(params![pec_id, r.to_ascii_lowercase(), event.at.unix()])
                    .map_err(db(&format!("record \"{r}\" verified for \"{pec_id}\"")))?;
            }
            Ok(())
        })
    }

    fn claim_timeouts(&self, claim: &TimeoutClaim) -> Result<Vec<DueNotice>, StoreError> {
        let (claimed, id, states) = timeout_columns(claim.which);
        // Only envelopes whose acceptance was emitted: the milter writes the tracking rows
        // before Postfix has queued anything (spec §5.4: the timers start at dispatch).
        let select = format!(
            "SELECT t.rowid, t.pec_id, t.recipient, t.sent_at, p.rowid, p.queue_id,
                    p.provider, p.cert
             FROM tracking t JOIN pending_acceptance p ON p.pec_id = t.pec_id
             WHERE p.state = 'emitted' AND t.state IN ({states}) AND t.sent_at <= ?1
               AND t.{id} IS NULL AND (t.{claimed} IS NULL OR t.{claimed} < ?2)
             ORDER BY t.sent_at, t.rowid LIMIT ?3"
        );
        let update = format!(
            "UPDATE tracking SET {claimed} = ?2
             WHERE rowid = ?1 AND {id} IS NULL AND ({claimed} IS NULL OR {claimed} < ?3)"
        );
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        self.write("claim timer notices", |tx| {
            let rows = {
                let mut stmt = tx.prepare(&select).map_err(db("prepare due notices"))?;
                let rows = stmt
                    .query_map(
                        params![claim.sent_up_to.unix(), claim.stale_before.unix(), limit],
                        |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, i64>(4)?,
                                r.get::<_, Option<String>>(5)?,
                                r.get::<_, String>(6)?,
                                r.get::<_, String>(7)?,
                            ))
                        },
                    )
                    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                    .map_err(db("read due notices"))?;
                rows
            };
            let mut due = Vec::with_capacity(rows.len());
            for (rowid, pec_id, recipient, sent_at, prow, queue_id, provider, cert) in rows {
                let cert: Certification = serde_json::from_str(&cert).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "pending_acceptance row {prow}: certification: {e}"
                    ))
                })?;
                let n = tx
                    .execute(
                        &update,
                        params![rowid, claim.now.unix(), claim.stale_before.unix()],
                    )
                    .map_err(db(&format!(
                        "claim notice for \"{recipient}\" of \"{pec_id}\""
                    )))?;
                if n == 1 {
                    due.push(DueNotice {
                        which: claim.which,
                        pec_id,
                        recipient,
                        sent_at: Instant::from_unix(sent_at),
                        claimed_at: claim.now,
                        cert,
                        queue_id,
                        provider,
                    });
                }
            }
            Ok(due)
        })
    }

    fn release_timeout(&self, due: &DueNotice) -> Result<(), StoreError> {
        let (claimed, id, _) = timeout_columns(due.which);
        let (pec_id, recipient) = (&due.pec_id, &due.recipient);
        self.write("release timer notice", |tx| {
            tx.execute(
                &format!(
                    "UPDATE tracking SET {claimed} = NULL
                     WHERE pec_id = ?1 AND recipient = ?2 AND {claimed} = ?3 AND {id} IS NULL"
                ),
                params![pec_id, recipient, due.claimed_at.unix()],
            )
            .map_err(db(&format!(
                "release notice for \"{recipient}\" of \"{pec_id}\""
            )))?;
            Ok(())
        })
    }

    fn is_verified(&self, pec_id: &str, recipient: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM verified WHERE pec_id = ?1 AND recipient = ?2)",
            params![pec_id, recipient.to_ascii_lowercase()],
            |r| r.get(0),
        )
        .map_err(db(&format!("read verified \"{pec_id}\"")))
    }

    fn update_tracking(
        &self,
        pec_id: &str,
        recipient: &str,
        state: TrackingState,
    ) -> Result<bool, StoreError> {
        self.write("update tracking", |tx| {
            tracking_forward(tx, pec_id, recipient, state)
        })
    }

    fn record_quarantine(&self, event: &LogEvent, message: &[u8]) -> Result<(), StoreError> {
        let pec_id = &event.pec_id;
        self.write("record quarantine", |tx| {
            // The write transaction is immediate: no other writer between look and insert.
            let held = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM quarantine WHERE pec_id = ?1 AND message = ?2)",
                    params![pec_id, message],
                    |r| r.get::<_, bool>(0),
                )
                .map_err(db(&format!("read quarantine of \"{pec_id}\"")))?;
            if held {
                return Ok(());
            }
            let reason = event.reason.as_deref().unwrap_or_default();
            outbox::quarantine(tx, pec_id, event.at, reason, message)?;
            insert_event(tx, event)
        })
    }

    fn mailbox_policy(&self, mailbox: &str) -> Result<Option<MailboxPolicy>, StoreError> {
        let conn = self.lock();
        let row: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT policy, forward_to FROM mailbox_policy WHERE mailbox = ?1",
                params![mailbox.to_ascii_lowercase()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db(&format!("read policy of \"{mailbox}\"")))?;
        row.map(|(p, to)| decode_policy(mailbox, p, to)).transpose()
    }

    fn set_mailbox_policy(&self, mailbox: &str, policy: &MailboxPolicy) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let (label, forward_to) = policy_columns(policy);
        self.write("set mailbox policy", |tx| {
            tx.execute(
                "INSERT INTO mailbox_policy (mailbox, policy, forward_to) VALUES (?1, ?2, ?3)
                 ON CONFLICT (mailbox) DO UPDATE
                 SET policy = excluded.policy, forward_to = excluded.forward_to",
                params![mailbox, label, forward_to],
            )
            .map_err(db(&format!("set policy of \"{mailbox}\"")))?;
            Ok(())
        })
    }

    fn envelope_certification(&self, pec_id: &str) -> Result<Option<Certification>, StoreError> {
        let conn = self.lock();
        let row: Option<(i64, String)> = conn
            .query_row(
                "SELECT rowid, cert FROM pending_acceptance WHERE pec_id = ?1",
                params![pec_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db(&format!("read certification of \"{pec_id}\"")))?;
        row.map(|(rowid, cert)| {
            serde_json::from_str(&cert).map_err(|e| {
                StoreError::Corrupt(format!(
                    "pending_acceptance row {rowid}: certification: {e}"
                ))
            })
        })
        .transpose()
    }

    fn delivery_notice(&self, pec_id: &str, recipient: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT notice_id FROM delivery_notices WHERE pec_id = ?1 AND recipient = ?2",
            params![pec_id, recipient.to_ascii_lowercase()],
            |r| r.get(0),
        )
        .optional()
        .map_err(db(&format!("read delivery notice of \"{pec_id}\"")))
    }

    /// `INSERT OR IGNORE` on the (pec_id, recipient) key decides, inside the transaction
    /// that also appends the event: concurrent claims cannot both win.
    fn claim_delivery_notice(&self, recipient: &str, event: &LogEvent) -> Result<bool, StoreError> {
        self.write("claim delivery notice", |tx| {
            outbox::claim_notice(tx, recipient, event)
        })
    }

    fn set_arrival_notice(
        &self,
        mailbox: &str,
        notice: Option<&ArrivalNotice>,
    ) -> Result<(), StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        self.write("set arrival notice", |tx| {
            tx.execute(
                "DELETE FROM arrival_notices WHERE mailbox = ?1",
                params![mailbox],
            )
            .map_err(db(&format!("remove arrival notice of \"{mailbox}\"")))?;
            if let Some(n) = notice {
                let senders: Vec<String> =
                    n.senders.iter().map(|s| s.to_ascii_lowercase()).collect();
                let senders = serde_json::to_string(&senders)
                    .map_err(|e| StoreError::Database(format!("encode senders: {e}")))?;
                tx.execute(
                    "INSERT INTO arrival_notices (mailbox, notify, senders) VALUES (?1, ?2, ?3)",
                    params![mailbox, n.notify, senders],
                )
                .map_err(db(&format!("set arrival notice of \"{mailbox}\"")))?;
            }
            Ok(())
        })
    }

    fn arrival_notice(&self, mailbox: &str) -> Result<Option<ArrivalNotice>, StoreError> {
        let mailbox = mailbox.to_ascii_lowercase();
        let row: Option<(String, String)> = {
            let conn = self.lock();
            conn.query_row(
                "SELECT notify, senders FROM arrival_notices WHERE mailbox = ?1",
                params![mailbox],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db(&format!("read arrival notice of \"{mailbox}\"")))?
        };
        let Some((notify, senders)) = row else {
            return Ok(None);
        };
        let senders: Vec<String> = serde_json::from_str(&senders).map_err(|e| {
            StoreError::Corrupt(format!("arrival_notices row \"{mailbox}\": senders: {e}"))
        })?;
        Ok(Some(ArrivalNotice { notify, senders }))
    }

    fn stored_index(&self) -> Result<Option<StoredIndex>, StoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT ldif, providers, fetched_at, source FROM provider_index WHERE id = 1",
            [],
            |r| {
                Ok(StoredIndex {
                    ldif: r.get(0)?,
                    providers: usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    fetched_at: Instant::from_unix(r.get(2)?),
                    source: r.get(3)?,
                })
            },
        )
        .optional()
        .map_err(db("read the provider index"))
    }

    fn replace_index(&self, index: &StoredIndex) -> Result<(), StoreError> {
        self.write("replace the provider index", |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO provider_index (id, ldif, providers, fetched_at, source)
                 VALUES (1, ?1, ?2, ?3, ?4)",
                params![
                    index.ldif,
                    i64::try_from(index.providers).unwrap_or(i64::MAX),
                    index.fetched_at.unix(),
                    index.source
                ],
            )
            .map_err(db("replace the provider index"))?;
            Ok(())
        })
    }

    fn search_events(&self, query: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
        legal::search(&self.lock(), query)
    }

    fn record_receipt_received(
        &self,
        event: &LogEvent,
        updates: &[(String, TrackingState)],
    ) -> Result<usize, StoreError> {
        self.write("record a received receipt", |tx| {
            let mut moved = 0;
            for (recipient, state) in updates {
                moved += usize::from(tracking_forward(tx, &event.pec_id, recipient, *state)?);
            }
            insert_event(tx, &super::outbox::received_record(event, updates, moved))?;
            Ok(moved)
        })
    }

    fn claim_log_request(
        &self,
        request: &super::LogRequest,
        limit: u32,
        since: Instant,
        event: &LogEvent,
    ) -> Result<bool, StoreError> {
        self.write("claim a log request", |tx| {
            requests::claim(tx, request, limit, since, event)
        })
    }

    fn log_request(&self, id: &str) -> Result<Option<(super::LogRequest, bool)>, StoreError> {
        requests::get(&self.lock(), id)
    }

    fn log_request_answered(&self, event: &LogEvent) -> Result<bool, StoreError> {
        self.write("close a log request", |tx| requests::answered(tx, event))
    }

    fn stage_outbound(
        &self,
        out: &super::Outbound,
        effect: &super::Effect,
    ) -> Result<super::Staged, StoreError> {
        self.write("stage a generated message", |tx| {
            outbox::stage(tx, out, effect)
        })
    }

    fn outbound(&self, key: &str) -> Result<Option<super::Outbound>, StoreError> {
        outbox::get(&self.lock(), key)
    }

    fn outbound_injected(&self, key: &str, at: Instant) -> Result<(), StoreError> {
        self.write("mark a generated message injected", |tx| {
            outbox::injected(tx, key, at)
        })
    }

    fn claim_unsent(
        &self,
        attempted_before: Instant,
        now: Instant,
        limit: usize,
    ) -> Result<Vec<super::Outbound>, StoreError> {
        self.write("claim unsent generated messages", |tx| {
            outbox::claim_unsent(tx, attempted_before, now, limit)
        })
    }

    fn begin_deliveries(
        &self,
        message_id: &str,
        recipients: &[String],
        owner: &str,
        at: Instant,
    ) -> Result<Vec<Option<super::DeliveryMark>>, StoreError> {
        self.write("record delivery intents", |tx| {
            outbox::begin_deliveries(tx, message_id, recipients, owner, at)
        })
    }

    fn deliveries_done(
        &self,
        message_id: &str,
        recipients: &[String],
        at: Instant,
    ) -> Result<(), StoreError> {
        self.write("record deliveries", |tx| {
            outbox::deliveries_done(tx, message_id, recipients, at)
        })
    }

    fn purge_outbox(&self, before: Instant) -> Result<u64, StoreError> {
        self.write("purge the outbox", |tx| outbox::purge(tx, before))
    }
}

/// Moves the tracking row of `recipient` of `pec_id` forward to `state` (see
/// [`Store::update_tracking`]), in the caller's transaction.
fn tracking_forward(
    tx: &Connection,
    pec_id: &str,
    recipient: &str,
    state: TrackingState,
) -> Result<bool, StoreError> {
    let Some(from) = forward_from(state) else {
        return Ok(false);
    };
    let sql = format!(
        "UPDATE tracking SET state = ?3
         WHERE pec_id = ?1 AND lower(recipient) = lower(?2) AND state IN {from}"
    );
    let n = tx
        .execute(&sql, params![pec_id, recipient, state_str(state)])
        .map_err(db(&format!(
            "update tracking of \"{recipient}\" for \"{pec_id}\""
        )))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::kind::MessageKind;
    use crate::store::{EventKind, LogStore};
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
