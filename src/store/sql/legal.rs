// SPDX-License-Identifier: GPL-3.0-or-later
//! The legal log on both backends: the chained insert every event goes through, search,
//! chain verification, export, seal storage, the retention purge, and the other
//! operations of [`LogStore`]. The seal's signing and time-stamping, and the CLI, live in
//! [`crate::log`].

use super::{all, args, exec, exec_unique, one, opt, to_i64, Arg, Backend, Conn, Dialect, Row};
use crate::message::time::Instant;
use crate::store::chain::{self, ChainRecord, Verifier, COLUMNS};
use crate::store::ledger::LogStore;
use crate::store::report::{
    Export, Health, KeptReceipt, LastSeal, PurgeReport, QuarantineEntry, QuarantineQuery,
    SealRecord, VerifyReport,
};
use crate::store::{LogEvent, LogQuery, LoggedEvent, StoreError};

/// The chain head: `(id, hash)` of the last record appended (or the purge anchor, or the
/// genesis).
pub type Head = (i64, Vec<u8>);

/// A stored record: its chain fields and its stored hash (`None` for a row written before
/// SQLite's version 2 and not yet chained, which cannot happen after migration).
pub type Stored = (ChainRecord, Option<Vec<u8>>);

/// One `events` row (selected with [`COLUMNS`]) as a [`Stored`] record.
pub fn chain_row(r: &Row) -> Result<Stored, StoreError> {
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
            prev_hash: r.get::<Option<Vec<u8>>>(13)?.unwrap_or_default(),
        },
        r.get(14)?,
    ))
}

fn chain_rows(rows: &[Row]) -> Result<Vec<Stored>, StoreError> {
    rows.iter().map(chain_row).collect()
}

/// The chain head, held until the transaction ends. On PostgreSQL the chain-head row is
/// locked (`FOR UPDATE`), so the appends of all nodes form one chain and every appending
/// transaction takes this lock first (one lock order). On SQLite the write transaction
/// (`BEGIN IMMEDIATE`) holds the file: the head is the last record, else the purge anchor.
pub fn lock_head(c: &dyn Conn) -> Result<Head, StoreError> {
    match c.dialect() {
        Dialect::Postgres => {
            let r = one(
                c,
                "lock the chain head",
                "SELECT last_id, last_hash FROM chain_head WHERE \"only\" = 1 FOR UPDATE",
                &[],
            )?;
            Ok((r.get(0)?, r.get(1)?))
        }
        Dialect::Sqlite => {
            let last = opt(
                c,
                "read the last log record",
                "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1",
                &[],
            )?
            .map(|r| Ok::<_, StoreError>((r.get(0)?, r.get(1)?)))
            .transpose()?;
            chain::tail(last, anchor(c)?)
        }
    }
}

/// The purge anchor: id and hash of the last purged record.
fn anchor(c: &dyn Conn) -> Result<Option<Head>, StoreError> {
    opt(
        c,
        "read the chain anchor",
        "SELECT last_id, last_hash FROM chain_anchor WHERE \"only\" = 1",
        &[],
    )?
    .map(|r| Ok((r.get(0)?, r.get(1)?)))
    .transpose()
}

/// Appends `event` after `head` (held by the caller, see [`lock_head`]) and moves `head`
/// to it: the next id, the previous record's hash, this record's hash, and its recipients
/// in the search side table, all in the caller's transaction. This is the only way events
/// enter the log: every insert path (present and future) must call it.
///
/// On PostgreSQL the record, its recipients and the chain-head row go in one statement
/// (data-modifying `WITH`): the head row is locked by every other appender meanwhile, on
/// every node, so each round trip between `pec` and the database while it is held costs
/// all of them (issue 22: measured by `benches/scale_out.sh`). On SQLite the head is the
/// last record.
pub fn append(c: &dyn Conn, head: &mut Head, event: &LogEvent) -> Result<(), StoreError> {
    let record = ChainRecord::next(event, std::mem::take(head))?;
    let hash = record.hash().to_vec();
    let what = format!("log {} event for \"{}\"", record.kind, event.pec_id);
    const INSERT: &str =
        "INSERT INTO events (id, pec_id, at, kind, receipt_type, sender, recipients, subject,
                             related_ids, provider, queue_id, outcome, reason, prev_hash, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";
    // Addresses hold no line break: one parameter carries them all (PostgreSQL).
    let addresses = event
        .recipients
        .iter()
        .map(|(address, _)| address.to_lowercase())
        .collect::<Vec<_>>()
        .join("\n");
    let mut args = args![
        record.id,
        &record.pec_id,
        record.at,
        &record.kind,
        &record.receipt_type,
        &record.sender,
        &record.recipients,
        &record.subject,
        &record.related_ids,
        &record.provider,
        &record.queue_id,
        &record.outcome,
        &record.reason,
        &record.prev_hash,
        &hash,
    ]
    .to_vec();
    match c.dialect() {
        Dialect::Postgres => {
            args.push(Arg::from(addresses.as_str()));
            exec(
                c,
                &what,
                &format!(
                    "WITH event AS ({INSERT}),
                          recipient AS (
                              INSERT INTO event_recipients (address, at, event_id)
                              SELECT DISTINCT a, $3::BIGINT, $1::BIGINT
                              FROM unnest(string_to_array($16, E'\\n')) AS a WHERE a <> ''
                              ON CONFLICT DO NOTHING)
                     UPDATE chain_head SET last_id = $1, last_hash = $15 WHERE \"only\" = 1"
                ),
                &args,
            )?;
        }
        Dialect::Sqlite => {
            exec(c, &what, INSERT, &args)?;
            for (address, _) in &event.recipients {
                exec(
                    c,
                    &what,
                    "INSERT INTO event_recipients (address, at, event_id) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    args![&address.to_lowercase(), record.at, record.id],
                )?;
            }
        }
    }
    *head = (record.id, hash);
    Ok(())
}

/// Appends one event in the caller's transaction: takes the head, chains, moves the head.
pub fn append_event(c: &dyn Conn, event: &LogEvent) -> Result<(), StoreError> {
    let mut head = lock_head(c)?;
    append(c, &mut head, event)?;
    Ok(())
}

/// `pec log search`: the mailbox, sender and recipient criteria go through the indexes
/// (`events_sender_at`, `event_recipients`), the date range narrows them; the rest filters.
pub fn search(c: &dyn Conn, q: &LogQuery) -> Result<Vec<LoggedEvent>, StoreError> {
    enum Value {
        Int(i64),
        Text(String),
    }
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut arg = |v: Value| {
        values.push(v);
        format!("${}", values.len())
    };
    let f = arg(Value::Int(q.from.map_or(i64::MIN, Instant::unix)));
    let t = arg(Value::Int(q.to.map_or(i64::MAX, Instant::unix)));
    let limit = arg(Value::Int(q.limit.map_or(i64::MAX, to_i64)));
    clauses.push(format!("at >= {f} AND at < {t}"));
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
        clauses.push(format!(
            "id IN (SELECT event_id FROM event_recipients WHERE address = {a} \
             AND at >= {f} AND at < {t})"
        ));
    }
    if let Some(k) = &q.kind {
        let a = arg(Value::Text(k.clone()));
        clauses.push(format!("kind = {a}"));
    }
    if let Some(s) = &q.subject {
        let a = arg(Value::Text(s.clone()));
        let position = match c.dialect() {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        };
        clauses.push(format!("{position}(lower(subject), lower({a})) > 0"));
    }
    if let Some(p) = &q.pec_id {
        let a = arg(Value::Text(p.clone()));
        clauses.push(format!("pec_id = {a}"));
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE {} ORDER BY id LIMIT {limit}",
        clauses.join(" AND ")
    );
    let args: Vec<super::Arg<'_>> = values
        .iter()
        .map(|v| match v {
            Value::Int(i) => (*i).into(),
            Value::Text(s) => s.into(),
        })
        .collect();
    // The subject filter above lower-cases ASCII only; refine with Unicode case folding.
    let events = chain_rows(&all(c, "log search", &sql, &args)?)?
        .into_iter()
        .map(|(r, h)| r.logged(h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(events.into_iter().filter(|e| q.matches(&e.event)).collect())
}

/// The seal columns, in [`SealRecord`]'s field order.
const SEAL_COLUMNS: &str = "day, from_at, to_at, count, first_id, last_id, export_sha256, \
                            signature, tst, tsa_url, sealed_at";

fn seal_row(r: &Row) -> Result<SealRecord, StoreError> {
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
}

/// Records read per query by the chain verification, so that a long log is not read
/// into memory at once.
const VERIFY_SLICE: i64 = 10_000;

/// The columns of a [`QuarantineEntry`], for [`quarantine_row`].
const QUARANTINE_COLUMNS: &str =
    "id, pec_id, at, reason, CAST(length(message) AS BIGINT), expires_at";

fn quarantine_row(r: &Row) -> Result<QuarantineEntry, StoreError> {
    Ok(QuarantineEntry {
        id: r.get(0)?,
        pec_id: r.get(1)?,
        at: r.get(2)?,
        reason: r.get(3)?,
        size: u64::try_from(r.get::<i64>(4)?).unwrap_or(0),
        expires_at: r.get(5)?,
    })
}

impl<B: Backend> LogStore for B {
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
        let (from, to) = (
            from.map_or(i64::MIN, Instant::unix),
            to.map_or(i64::MAX, Instant::unix),
        );
        self.read(|c| {
            // The chain is in id order; a date range selects the ids from the first record
            // in range to the last one, and every record in between is checked.
            let range = one(
                c,
                "verify: range",
                "SELECT MIN(id), MAX(id) FROM events WHERE at >= $1 AND at < $2",
                args![from, to],
            )?;
            let (Some(first), Some(last)) =
                (range.get::<Option<i64>>(0)?, range.get::<Option<i64>>(1)?)
            else {
                return Ok(VerifyReport::default());
            };
            let before = opt(
                c,
                "verify: previous record",
                "SELECT id, hash FROM events WHERE id < $1 ORDER BY id DESC LIMIT 1",
                args![first],
            )?
            .map(|r| Ok::<_, StoreError>((r.get(0)?, r.get(1)?)))
            .transpose()?;
            let mut verifier = Verifier::after(before, anchor(c)?);
            let sql =
                format!("SELECT {COLUMNS} FROM events WHERE id >= $1 AND id <= $2 ORDER BY id");
            let mut from_id = first;
            while from_id <= last {
                let to_id = from_id.saturating_add(VERIFY_SLICE).min(last);
                let rows = all(c, "verify: read records", &sql, args![from_id, to_id])?;
                for (record, stored) in chain_rows(&rows)? {
                    verifier.check(&record, stored);
                }
                if to_id == i64::MAX {
                    break;
                }
                from_id = to_id + 1;
            }
            Ok(verifier.report())
        })
    }

    /// The canonical export of the records with `from_at <= at < to_at`, in id order (see
    /// [`crate::store::chain`]), with their count and first and last ids.
    fn export_range(&self, from_at: i64, to_at: i64) -> Result<Export, StoreError> {
        self.read(|c| {
            let sql =
                format!("SELECT {COLUMNS} FROM events WHERE at >= $1 AND at < $2 ORDER BY id");
            let rows = all(c, "export: read records", &sql, args![from_at, to_at])?;
            let mut export = Export::default();
            for (record, hash) in chain_rows(&rows)? {
                chain::export(&mut export, &record, hash.as_deref());
            }
            Ok(export)
        })
    }

    /// Claims the sealing of `day` for `owner`: true when no one holds it, or the holder's
    /// claim is older than an hour, or the day is sealed already (false then too).
    fn claim_seal(&self, day: &str, owner: &str, now: Instant) -> Result<bool, StoreError> {
        self.write("claim seal", |c| {
            let sealed: bool = one(
                c,
                "claim seal",
                "SELECT EXISTS (SELECT 1 FROM seals WHERE day = $1)",
                args![day],
            )?
            .get(0)?;
            if sealed {
                return Ok(false);
            }
            let n = exec(
                c,
                "claim seal",
                "INSERT INTO seal_claims (day, owner, claimed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (day) DO UPDATE SET owner = $2, claimed_at = $3
                 WHERE seal_claims.claimed_at < $3 - 3600",
                args![day, owner, now.unix()],
            )?;
            Ok(n == 1)
        })
    }

    /// Releases a claim (after a failed attempt), so that another try may start at once.
    fn release_seal_claim(&self, day: &str) -> Result<(), StoreError> {
        self.write("release seal claim", |c| {
            exec(
                c,
                "release seal claim",
                "DELETE FROM seal_claims WHERE day = $1",
                args![day],
            )
            .map(drop)
        })
    }

    /// Stores a seal; sealing a day twice is an error.
    fn insert_seal(&self, seal: &SealRecord) -> Result<(), StoreError> {
        self.write("store seal", |c| {
            exec_unique(
                c,
                &format!("store seal of {}", seal.day),
                &format!(
                    "INSERT INTO seals ({SEAL_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ),
                args![
                    &seal.day,
                    seal.from_at,
                    seal.to_at,
                    seal.count,
                    seal.first_id,
                    seal.last_id,
                    &seal.export_sha256,
                    &seal.signature,
                    &seal.tst,
                    &seal.tsa_url,
                    seal.sealed_at,
                ],
                || format!("day {} is already sealed", seal.day),
            )?;
            exec(
                c,
                "store seal",
                "DELETE FROM seal_claims WHERE day = $1",
                args![&seal.day],
            )
            .map(drop)
        })
    }

    /// Adds the missing time stamp of a seal (schema version 13 allows only that change).
    fn add_seal_stamp(&self, day: &str, tst: &[u8], tsa_url: &str) -> Result<bool, StoreError> {
        self.write("add seal stamp", |c| {
            exec(
                c,
                "add seal stamp",
                "UPDATE seals SET tst = $2, tsa_url = $3 WHERE day = $1 AND tst IS NULL",
                args![day, tst, tsa_url],
            )
            .map(|n| n == 1)
        })
    }

    /// The seals whose day overlaps `from_at <= t < to_at`, by day.
    fn seals(&self, from_at: i64, to_at: i64) -> Result<Vec<SealRecord>, StoreError> {
        self.read(|c| {
            all(
                c,
                "read seals",
                &format!(
                    "SELECT {SEAL_COLUMNS} FROM seals WHERE to_at > $1 AND from_at < $2
                     ORDER BY from_at"
                ),
                args![from_at, to_at],
            )?
            .iter()
            .map(seal_row)
            .collect()
        })
    }

    /// Appends many events in one transaction (bulk loads and benchmarks); each goes
    /// through the same chained insert as [`crate::store::Store::log`].
    fn log_batch(&self, events: &[LogEvent]) -> Result<(), StoreError> {
        self.write("log batch", |c| {
            let mut head = lock_head(c)?;
            for e in events {
                append(c, &mut head, e)?;
            }
            Ok(())
        })
    }

    /// Retention (spec §8): deletes the records older than `log_cutoff` whose day is sealed,
    /// and the seals of the days wholly before it, keeping the chain verifiable (the hash
    /// of the last deleted record becomes the anchor); deletes the quarantined messages
    /// stored before `quarantine_cutoff`. Records are deleted as an id prefix, so the chain
    /// never has holes: a late record of an old day stays until everything before it goes.
    /// The purge is logged as an [`crate::store::EventKind::Purged`] event in the same
    /// transaction. The chain head is taken first, so purges and appends of every node are
    /// serialised.
    fn purge(
        &self,
        log_cutoff: Instant,
        quarantine_cutoff: Instant,
        now: Instant,
        provider: &str,
    ) -> Result<PurgeReport, StoreError> {
        self.write("purge", |c| {
            let mut head = lock_head(c)?;
            let mut report = PurgeReport::default();
            // The first unsealed day before the cutoff bounds the purge: records are
            // deleted only under a seal.
            let unsealed = opt(
                c,
                "purge: find unsealed records",
                "SELECT e.at, e.id FROM events e
                 WHERE e.at < $1 AND NOT EXISTS
                    (SELECT 1 FROM seals s WHERE s.from_at <= e.at AND e.at < s.to_at)
                 ORDER BY e.at LIMIT 1",
                args![log_cutoff.unix()],
            )?;
            let boundary = match unsealed {
                Some(r) => {
                    let (at, id): (i64, i64) = (r.get(0)?, r.get(1)?);
                    report.stopped_at = Some(chain::unsealed(id, at));
                    at
                }
                None => log_cutoff.unix(),
            };
            // The longest id prefix wholly before the boundary.
            let keep_from: Option<i64> = one(
                c,
                "purge: find boundary",
                "SELECT MIN(id) FROM events WHERE at >= $1",
                args![boundary],
            )?
            .get(0)?;
            let last = opt(
                c,
                "purge: find last record",
                "SELECT id, hash FROM events WHERE id < $1 ORDER BY id DESC LIMIT 1",
                args![keep_from.unwrap_or(i64::MAX)],
            )?;
            if let Some(r) = last {
                let (last_id, last_hash): (i64, Vec<u8>) = (r.get(0)?, r.get(1)?);
                exec(
                    c,
                    "purge: delete recipients",
                    "DELETE FROM event_recipients WHERE event_id <= $1",
                    args![last_id],
                )?;
                report.receipts = exec(
                    c,
                    "purge: delete kept receipts",
                    "DELETE FROM received_receipts WHERE event_id <= $1",
                    args![last_id],
                )?;
                report.evidences = exec(
                    c,
                    "purge: delete evidences",
                    "DELETE FROM rem_evidences WHERE event_id <= $1",
                    args![last_id],
                )?;
                report.events = exec(
                    c,
                    "purge: delete records",
                    "DELETE FROM events WHERE id <= $1",
                    args![last_id],
                )?;
                exec(
                    c,
                    "purge: store anchor",
                    "INSERT INTO chain_anchor (\"only\", last_id, last_hash, purged_at)
                     VALUES (1, $1, $2, $3)
                     ON CONFLICT (\"only\") DO UPDATE SET last_id = $1, last_hash = $2,
                                                      purged_at = $3",
                    args![last_id, &last_hash, now.unix()],
                )?;
                report.anchor_id = Some(last_id);
            }
            // Seals of the days wholly before the boundary, none of whose records are
            // left.
            report.seals = exec(
                c,
                "purge: delete seals",
                "DELETE FROM seals WHERE to_at <= $1
                 AND NOT EXISTS (SELECT 1 FROM events e
                                 WHERE e.at >= seals.from_at AND e.at < seals.to_at)",
                args![boundary],
            )?;
            report.quarantined = exec(
                c,
                "purge: delete quarantine",
                "DELETE FROM quarantine WHERE at < $1",
                args![quarantine_cutoff.unix()],
            )?;
            if let Some(event) =
                chain::purge_event(&report, boundary, quarantine_cutoff, now, provider)
            {
                append(c, &mut head, &event)?;
            }
            Ok(report)
        })
    }

    /// A SQLite store serves one host: nothing to share, always true.
    fn try_lease(
        &self,
        name: &str,
        owner: &str,
        now: Instant,
        seconds: i64,
    ) -> Result<bool, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            return Ok(true);
        }
        self.write("lease", |c| {
            let until = now.unix().saturating_add(seconds);
            let n = exec(
                c,
                &format!("take lease \"{name}\""),
                "INSERT INTO leases (name, owner, until) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET owner = $2, until = $3
                 WHERE leases.owner = $2 OR leases.until <= $4",
                args![name, owner, until, now.unix()],
            )?;
            Ok(n == 1)
        })
    }

    /// The receipts kept beside the records about `pec_id`, by record id.
    fn kept_receipts(&self, pec_id: &str) -> Result<Vec<KeptReceipt>, StoreError> {
        self.read(|c| {
            all(
                c,
                &format!("read the receipts kept for \"{pec_id}\""),
                "SELECT event_id, pec_id, kind, message_id, at, message FROM received_receipts
                 WHERE pec_id = $1 ORDER BY event_id",
                args![pec_id],
            )?
            .iter()
            .map(|r| {
                Ok(KeptReceipt {
                    event_id: r.get(0)?,
                    pec_id: r.get(1)?,
                    kind: r.get(2)?,
                    message_id: r.get(3)?,
                    at: r.get(4)?,
                    message: r.get(5)?,
                })
            })
            .collect()
        })
    }

    /// The quarantined messages matching `query`, by id (insertion order).
    fn quarantine_list(&self, query: &QuarantineQuery) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.read(|c| {
            all(
                c,
                "list the quarantine",
                &format!(
                    "SELECT {QUARANTINE_COLUMNS} FROM quarantine
                     WHERE (CAST($1 AS TEXT) IS NULL OR pec_id = $1) AND at >= $2 AND at < $3
                     ORDER BY id LIMIT $4"
                ),
                args![
                    query.pec_id.as_deref(),
                    query.from.unwrap_or(i64::MIN),
                    query.to.unwrap_or(i64::MAX),
                    query.limit.map_or(i64::MAX, to_i64),
                ],
            )?
            .iter()
            .map(quarantine_row)
            .collect()
        })
    }

    /// The quarantined message `id`, its bytes as stored.
    fn quarantine_message(
        &self,
        id: i64,
    ) -> Result<Option<(QuarantineEntry, Vec<u8>)>, StoreError> {
        self.read(|c| {
            opt(
                c,
                &format!("read quarantined message {id}"),
                &format!("SELECT {QUARANTINE_COLUMNS}, message FROM quarantine WHERE id = $1"),
                args![id],
            )?
            .map(|r| Ok((quarantine_row(&r)?, r.get(6)?)))
            .transpose()
        })
    }

    fn describe(&self) -> String {
        Backend::describe(self)
    }

    /// The health figures (a few indexed counts; cheap enough to sample every few seconds).
    fn health(&self) -> Result<Health, StoreError> {
        self.read(|c| {
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            let row = one(
                c,
                "health",
                "SELECT
                   (SELECT COUNT(*) FROM tracking
                     WHERE state IN ('sent', 'taken-in-charge') AND notice24_id IS NULL),
                   (SELECT COUNT(*) FROM quarantine),
                   (SELECT COUNT(*) FROM events),
                   (SELECT MIN(at) FROM events)",
                &[],
            )?;
            let last_seal = opt(
                c,
                "health: last seal",
                "SELECT day, from_at, sealed_at, tst IS NOT NULL FROM seals
                 ORDER BY day DESC LIMIT 1",
                &[],
            )?
            .map(|r| {
                Ok::<_, StoreError>(LastSeal {
                    day: r.get(0)?,
                    from_at: r.get(1)?,
                    sealed_at: r.get(2)?,
                    timestamped: r.get(3)?,
                })
            })
            .transpose()?;
            let index = opt(
                c,
                "health: index",
                "SELECT fetched_at, source, providers FROM provider_index WHERE id = 1",
                &[],
            )?
            .map(|r| Ok::<_, StoreError>((r.get(0)?, r.get(1)?, count(r.get(2)?))))
            .transpose()?;
            Ok(Health {
                pending_timers: count(row.get(0)?),
                quarantined: count(row.get(1)?),
                log_records: count(row.get(2)?),
                oldest_record_at: row.get(3)?,
                last_seal,
                index,
            })
        })
    }

    fn extra_domains(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            all(
                c,
                "domains",
                "SELECT domain FROM domains ORDER BY domain",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })
    }

    fn add_domain(&self, domain: &str, at: i64) -> Result<bool, StoreError> {
        let domain = domain.to_ascii_lowercase();
        self.write("add domain", |c| {
            let n = exec(
                c,
                "add domain",
                "INSERT INTO domains (domain, added_at) VALUES ($1, $2)
                 ON CONFLICT (domain) DO NOTHING",
                args![&domain, at],
            )?;
            Ok(n == 1)
        })
    }

    fn remove_domain(&self, domain: &str) -> Result<bool, StoreError> {
        let domain = domain.to_ascii_lowercase();
        self.write("remove domain", |c| {
            let n = exec(
                c,
                "remove domain",
                "DELETE FROM domains WHERE domain = $1",
                args![&domain],
            )?;
            Ok(n == 1)
        })
    }
}
