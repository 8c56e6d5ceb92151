// SPDX-License-Identifier: GPL-3.0-or-later
//! The legal log's own operations on the SQLite store: the chained insert every event goes
//! through, search, chain verification, seal storage and the retention purge. The seal's
//! signing and time-stamping, and the CLI, live in [`crate::log`].

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{db, SqliteStore};
use crate::message::time::Instant;
pub(super) use crate::store::chain::COLUMNS;
use crate::store::chain::{self, ChainRecord, Verifier, GENESIS};
use crate::store::ledger::LogStore;
use crate::store::Health;
use crate::store::{
    Export, LogEvent, LogQuery, LoggedEvent, PurgeReport, SealRecord, StoreError, VerifyReport,
};

/// One stored row: its chain record and the stored hash (`None` for a row written before
/// version 2 and not yet chained, which cannot happen after migration).
pub(super) fn read_row(r: &Row<'_>) -> rusqlite::Result<(ChainRecord, Option<Vec<u8>>)> {
    Ok((
        ChainRecord {
            id: r.get(0)?,
            pec_id: r.get(1)?,
            at: r.get(2)?,
            kind: r.get(3)?,
            receipt_type: r.get(4)?,
            sender: r.get(5)?,
            recipients: r.get(6)?,
            subject: r.get(7)?,
            related_ids: r.get(8)?,
            provider: r.get(9)?,
            queue_id: r.get(10)?,
            outcome: r.get(11)?,
            reason: r.get(12)?,
            prev_hash: r.get::<_, Option<Vec<u8>>>(13)?.unwrap_or_default(),
        },
        r.get(14)?,
    ))
}

/// The id and hash the next record chains to (see [`chain::tail`]).
fn tail(tx: &Connection) -> Result<(i64, Vec<u8>), StoreError> {
    let last: Option<(i64, Option<Vec<u8>>)> = tx
        .query_row(
            "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db("read the last log record"))?;
    chain::tail(last, anchor(tx)?)
}

/// The purge anchor: id and hash of the last purged record.
fn anchor(conn: &Connection) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    conn.query_row(
        "SELECT last_id, last_hash FROM chain_anchor WHERE only = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(db("read the chain anchor"))
}

/// Appends one event: the next id, the previous record's hash, this record's hash, and its
/// recipients in the search side table, all in the caller's transaction (which must be
/// `BEGIN IMMEDIATE`, so that no other writer can chain to the same tail). Returns the id.
///
/// This is the only way events enter the log: every insert path (present and future)
/// must call it.
pub(crate) fn append_event(tx: &Connection, event: &LogEvent) -> Result<i64, StoreError> {
    let tail = tail(tx)?;
    append_after(tx, event, tail).map(|(id, _)| id)
}

/// [`append_event`] after a known tail (`(id, hash)` of the last record), for batches;
/// returns the new tail.
fn append_after(
    tx: &Connection,
    event: &LogEvent,
    tail: (i64, Vec<u8>),
) -> Result<(i64, Vec<u8>), StoreError> {
    let record = ChainRecord::next(event, tail)?;
    let hash = record.hash();
    let what = || format!("log {} event for \"{}\"", record.kind, event.pec_id);
    let err = |e: rusqlite::Error| db(&what())(e);
    tx.prepare_cached(
        "INSERT INTO events (id, pec_id, at, kind, receipt_type, sender, recipients, subject,
                             related_ids, provider, queue_id, outcome, reason, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            record.id,
            record.pec_id,
            record.at,
            record.kind,
            record.receipt_type,
            record.sender,
            record.recipients,
            record.subject,
            record.related_ids,
            record.provider,
            record.queue_id,
            record.outcome,
            record.reason,
            record.prev_hash,
            &hash[..],
        ])
    })
    .map_err(err)?;
    let mut side = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO event_recipients (address, at, event_id) VALUES (?1, ?2, ?3)",
        )
        .map_err(err)?;
    for (address, _) in &event.recipients {
        side.execute(params![address.to_lowercase(), record.at, record.id])
            .map_err(err)?;
    }
    Ok((record.id, hash.to_vec()))
}

/// Migration to version 2: chains the rows written before it, in id order. The UPDATE
/// trigger is dropped and re-created around it, in the migration's transaction.
pub(super) fn chain_existing(tx: &Connection) -> Result<(), StoreError> {
    tx.execute_batch("DROP TRIGGER events_append_only;")
        .map_err(db("migrate: chain existing records"))?;
    let rows = {
        let mut stmt = tx
            .prepare(&format!("SELECT {COLUMNS} FROM events ORDER BY id"))
            .map_err(db("migrate: chain existing records"))?;
        let rows = stmt
            .query_map([], read_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db("migrate: chain existing records"))?;
        rows
    };
    let mut prev = GENESIS.to_vec();
    for (mut record, _) in rows {
        record.prev_hash = prev;
        let hash = record.hash();
        tx.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            params![record.prev_hash, &hash[..], record.id],
        )
        .map_err(db("migrate: chain existing records"))?;
        prev = hash.to_vec();
    }
    tx.execute_batch(
        "CREATE TRIGGER events_append_only BEFORE UPDATE ON events
         BEGIN
             SELECT RAISE(ABORT, 'the legal log is append-only');
         END;",
    )
    .map_err(db("migrate: chain existing records"))
}

/// `pec log search`: the mailbox, sender and recipient criteria go through the indexes
/// (`events_sender_at`, `event_recipients`), the date range narrows them; the rest filters.
pub(super) fn search(conn: &Connection, q: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |v: rusqlite::types::Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    use rusqlite::types::Value;
    let from = q.from.map_or(i64::MIN, Instant::unix);
    let to = q.to.map_or(i64::MAX, Instant::unix);
    let (f, t) = (arg(Value::Integer(from)), arg(Value::Integer(to)));
    clauses.push(format!("at >= {f} AND at < {t}"));
    let by_recipient = |a: &str| {
        format!(
            "id IN (SELECT event_id FROM event_recipients WHERE address = {a} \
             AND at >= {f} AND at < {t})"
        )
    };
    if let Some(m) = &q.mailbox {
        let a = arg(Value::Text(m.to_lowercase()));
        clauses.push(format!(
            "id IN (SELECT id FROM events WHERE lower(sender) = {a} AND at >= {f} AND at < {t} \
             UNION ALL SELECT event_id FROM event_recipients WHERE address = {a} \
             AND at >= {f} AND at < {t})"
        ));
    }
    if let Some(s) = &q.sender {
        let a = arg(Value::Text(s.to_lowercase()));
        clauses.push(format!("lower(sender) = {a}"));
    }
    if let Some(r) = &q.recipient {
        let a = arg(Value::Text(r.to_lowercase()));
        clauses.push(by_recipient(&a));
    }
    if let Some(k) = &q.kind {
        let a = arg(Value::Text(k.clone()));
        clauses.push(format!("kind = {a}"));
    }
    if let Some(s) = &q.subject {
        let a = arg(Value::Text(s.clone()));
        clauses.push(format!("instr(lower(subject), lower({a})) > 0"));
    }
    if let Some(p) = &q.pec_id {
        let a = arg(Value::Text(p.clone()));
        clauses.push(format!("pec_id = {a}"));
    }
    let limit = q.limit.map_or(-1, |l| l as i64);
    let l = arg(Value::Integer(limit));
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {} ORDER BY id LIMIT {l}",
        clauses.join(" AND ")
    );
    let mut stmt = conn.prepare(&sql).map_err(db("prepare log search"))?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args.iter()), read_row)
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(db("log search"))?;
    // The subject filter above lower-cases ASCII only; refine with Unicode case folding.
    let events = rows
        .into_iter()
        .map(|(r, h)| r.logged(h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(events.into_iter().filter(|e| q.matches(&e.event)).collect())
}

impl LogStore for SqliteStore {
    /// Verifies the hash chain over the records with `from <= at < to` (the whole log by
    /// default): each record's hash is recomputed and each `prev_hash` compared with the
    /// previous record's hash (or the purge anchor). Every mismatch is reported with the
    /// id where it shows: an altered record at its own id, a deleted one at the id after
    /// the gap, an inserted or swapped one at its id and the next.
    fn verify_chain(
        &self,
        from: Option<Instant>,
        to: Option<Instant>,
    ) -> Result<VerifyReport, StoreError> {
        let conn = self.lock();
        let (from, to) = (
            from.map_or(i64::MIN, Instant::unix),
            to.map_or(i64::MAX, Instant::unix),
        );
        // The chain is in id order; a date range selects the ids from the first record in
        // range to the last one, and every record in between is checked.
        let (first, last): (Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT MIN(id), MAX(id) FROM events WHERE at >= ?1 AND at < ?2",
                params![from, to],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db("verify: range"))?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(VerifyReport::default());
        };
        let before: Option<(i64, Option<Vec<u8>>)> = conn
            .query_row(
                "SELECT id, hash FROM events WHERE id < ?1 ORDER BY id DESC LIMIT 1",
                params![first],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db("verify: previous record"))?;
        let mut verifier = Verifier::after(before, anchor(&conn)?);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM events WHERE id >= ?1 AND id <= ?2 ORDER BY id"
            ))
            .map_err(db("verify: read records"))?;
        let mut rows = stmt
            .query(params![first, last])
            .map_err(db("verify: read records"))?;
        while let Some(row) = rows.next().map_err(db("verify: read records"))? {
            let (record, stored) = read_row(row).map_err(db("verify: read records"))?;
            verifier.check(&record, stored);
        }
        Ok(verifier.report())
    }

    /// The canonical export of the records with `from_at <= at < to_at`, in id order (see
    /// [`crate::store::chain`]), with their count and first and last ids.
    fn export_range(&self, from_at: i64, to_at: i64) -> Result<Export, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM events WHERE at >= ?1 AND at < ?2 ORDER BY id"
            ))
            .map_err(db("export: read records"))?;
        let mut rows = stmt
            .query(params![from_at, to_at])
            .map_err(db("export: read records"))?;
        let mut export = Export::default();
        while let Some(row) = rows.next().map_err(db("export: read records"))? {
            let (record, hash) = read_row(row).map_err(db("export: read records"))?;
            chain::export(&mut export, &record, hash.as_deref());
        }
        Ok(export)
    }

    /// Claims the sealing of `day` for `owner`: true when no one holds it, or the holder's
    /// claim is older than an hour, or the day is sealed already (false then too).
    fn claim_seal(&self, day: &str, owner: &str, now: Instant) -> Result<bool, StoreError> {
        self.write("claim seal", |tx| {
            let sealed: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM seals WHERE day = ?1)",
                    params![day],
                    |r| r.get(0),
                )
                .map_err(db("claim seal"))?;
            if sealed {
                return Ok(false);
            }
            let n = tx
                .execute(
                    "INSERT INTO seal_claims (day, owner, claimed_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (day) DO UPDATE SET owner = ?2, claimed_at = ?3
                     WHERE claimed_at < ?3 - 3600",
                    params![day, owner, now.unix()],
                )
                .map_err(db("claim seal"))?;
            Ok(n == 1)
        })
    }

    /// Releases a claim (after a failed attempt), so that another try may start at once.
    fn release_seal_claim(&self, day: &str) -> Result<(), StoreError> {
        self.write("release seal claim", |tx| {
            tx.execute("DELETE FROM seal_claims WHERE day = ?1", params![day])
                .map_err(db("release seal claim"))?;
            Ok(())
        })
    }

    /// Stores a seal; sealing a day twice is an error.
    fn insert_seal(&self, seal: &SealRecord) -> Result<(), StoreError> {
        self.write("store seal", |tx| {
            tx.execute(
                "INSERT INTO seals (day, from_at, to_at, count, first_id, last_id,
                                    export_sha256, signature, tst, tsa_url, sealed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    seal.day,
                    seal.from_at,
                    seal.to_at,
                    seal.count,
                    seal.first_id,
                    seal.last_id,
                    seal.export_sha256,
                    seal.signature,
                    seal.tst,
                    seal.tsa_url,
                    seal.sealed_at
                ],
            )
            .map_err(|e| {
                if super::is_constraint_violation(&e) {
                    StoreError::Database(format!("day {} is already sealed", seal.day))
                } else {
                    db(&format!("store seal of {}", seal.day))(e)
                }
            })?;
            tx.execute("DELETE FROM seal_claims WHERE day = ?1", params![seal.day])
                .map_err(db("store seal"))?;
            Ok(())
        })
    }

    fn add_seal_stamp(&self, day: &str, tst: &[u8], tsa_url: &str) -> Result<bool, StoreError> {
        self.write("add seal stamp", |tx| {
            let n = tx
                .execute(
                    "UPDATE seals SET tst = ?2, tsa_url = ?3 WHERE day = ?1 AND tst IS NULL",
                    params![day, tst, tsa_url],
                )
                .map_err(db("add seal stamp"))?;
            Ok(n == 1)
        })
    }

    /// The seals whose day overlaps `from_at <= t < to_at`, by day.
    fn seals(&self, from_at: i64, to_at: i64) -> Result<Vec<SealRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(
                "SELECT day, from_at, to_at, count, first_id, last_id, export_sha256, signature,
                        tst, tsa_url, sealed_at
                 FROM seals WHERE to_at > ?1 AND from_at < ?2 ORDER BY from_at",
            )
            .map_err(db("read seals"))?;
        let rows = stmt
            .query_map(params![from_at, to_at], |r| {
                Ok(SealRecord {
                    day: r.get(0)?,
                    from_at: r.get(1)?,
                    to_at: r.get(2)?,
                    count: r.get(3)?,
                    first_id: r.get(4)?,
                    last_id: r.get(5)?,
                    export_sha256: r.get(6)?,
                    signature: r.get(7)?,
                    tst: r.get(8)?,
                    tsa_url: r.get(9)?,
                    sealed_at: r.get(10)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db("read seals"))?;
        Ok(rows)
    }

    /// Appends many events in one transaction (bulk loads and benchmarks); each goes
    /// through the same chained insert as [`crate::store::Store::log`].
    fn log_batch(&self, events: &[LogEvent]) -> Result<(), StoreError> {
        self.write("log batch", |tx| {
            let mut last = tail(tx)?;
            for e in events {
                last = append_after(tx, e, last)?;
            }
            Ok(())
        })
    }

    /// Retention (spec §8): deletes the records older than `log_cutoff` whose day is sealed,
    /// and the seals of the days wholly before it, keeping the chain verifiable (the hash
    /// of the last deleted record becomes the anchor); deletes the quarantined messages
    /// stored before `quarantine_cutoff`. Records are deleted as an id prefix, so the chain
    /// never has holes: a late record of an old day stays until everything before it goes.
    /// The purge is logged as an [`EventKind::Purged`] event in the same transaction.
    fn purge(
        &self,
        log_cutoff: Instant,
        quarantine_cutoff: Instant,
        now: Instant,
        provider: &str,
    ) -> Result<PurgeReport, StoreError> {
        self.write("purge", |tx| {
            let mut report = PurgeReport::default();
            // The first unsealed day before the cutoff bounds the purge: records are
            // deleted only under a seal.
            let unsealed: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT e.at, e.id FROM events e
                     WHERE e.at < ?1 AND NOT EXISTS
                        (SELECT 1 FROM seals s WHERE s.from_at <= e.at AND e.at < s.to_at)
                     ORDER BY e.at LIMIT 1",
                    params![log_cutoff.unix()],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(db("purge: find unsealed records"))?;
            let boundary = match &unsealed {
                Some((at, id)) => {
                    report.stopped_at = Some(chain::unsealed(*id, *at));
                    *at
                }
                None => log_cutoff.unix(),
            };
            // The longest id prefix wholly before the boundary.
            let keep_from: Option<i64> = tx
                .query_row(
                    "SELECT MIN(id) FROM events WHERE at >= ?1",
                    params![boundary],
                    |r| r.get(0),
                )
                .map_err(db("purge: find boundary"))?;
            let last: Option<(i64, Vec<u8>)> = tx
                .query_row(
                    "SELECT id, hash FROM events WHERE id < ?1 ORDER BY id DESC LIMIT 1",
                    params![keep_from.unwrap_or(i64::MAX)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db("purge: find last record"))?;
            if let Some((last_id, last_hash)) = last {
                tx.execute(
                    "DELETE FROM event_recipients WHERE event_id <= ?1",
                    params![last_id],
                )
                .map_err(db("purge: delete recipients"))?;
                report.events = tx
                    .execute("DELETE FROM events WHERE id <= ?1", params![last_id])
                    .map_err(db("purge: delete records"))? as u64;
                tx.execute(
                    "INSERT INTO chain_anchor (only, last_id, last_hash, purged_at)
                     VALUES (1, ?1, ?2, ?3)
                     ON CONFLICT (only) DO UPDATE SET last_id = ?1, last_hash = ?2,
                                                      purged_at = ?3",
                    params![last_id, last_hash, now.unix()],
                )
                .map_err(db("purge: store anchor"))?;
                report.anchor_id = Some(last_id);
            }
            // Seals of the days wholly before the boundary, none of whose records are
            // left.
            report.seals = tx
                .execute(
                    "DELETE FROM seals WHERE to_at <= ?1
                     AND NOT EXISTS (SELECT 1 FROM events e
                                     WHERE e.at >= seals.from_at AND e.at < seals.to_at)",
                    params![boundary],
                )
                .map_err(db("purge: delete seals"))? as u64;
            report.quarantined = tx
                .execute(
                    "DELETE FROM quarantine WHERE at < ?1",
                    params![quarantine_cutoff.unix()],
                )
                .map_err(db("purge: delete quarantine"))? as u64;
            if let Some(event) =
                chain::purge_event(&report, boundary, quarantine_cutoff, now, provider)
            {
                append_event(tx, &event)?;
            }
            Ok(report)
        })
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path().display())
    }
    fn health(&self) -> Result<Health, StoreError> {
        SqliteStore::health(self)
    }
    fn extra_domains(&self) -> Result<Vec<String>, StoreError> {
        SqliteStore::extra_domains(self)
    }
    fn add_domain(&self, domain: &str, at: i64) -> Result<bool, StoreError> {
        SqliteStore::add_domain(self, domain, at)
    }
    fn remove_domain(&self, domain: &str) -> Result<bool, StoreError> {
        SqliteStore::remove_domain(self, domain)
    }
}
