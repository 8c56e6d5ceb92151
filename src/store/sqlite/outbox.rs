//! The outbox and the delivery records on the SQLite store (tables `outbox` and
//! `deliveries`, migration 9, and `outbox_data`, the bytes, migration 12; see
//! [`crate::store::outbox`]). Each function runs in the
//! caller's transaction.

use std::io::Write;

use rusqlite::{params, Connection, OptionalExtension};

use super::{db, insert_event, tracking_forward};
use crate::message::build::Certification;
use crate::message::time::Instant;
use crate::store::{DeliveryMark, Effect, LogEvent, Outbound, Staged, StoreError, TrackingState};

/// The row and its bytes (in `outbox_data`; rows staged before migration 12 had them in
/// `outbox.data`, which the migration moved and emptied).
const COLUMNS: &str = "o.key, o.message_id, o.mail_from, o.rcpt_to, COALESCE(d.data, o.data), \
                       o.created_at, o.injected_at";
const FROM: &str = "outbox o LEFT JOIN outbox_data d ON d.key = o.key";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Outbound> {
    let rcpt: String = r.get(3)?;
    Ok(Outbound {
        key: r.get(0)?,
        message_id: r.get(1)?,
        mail_from: r.get(2)?,
        rcpt_to: rcpt.split('\n').map(str::to_string).collect(),
        data: r.get(4)?,
        created_at: Instant::from_unix(r.get(5)?),
        injected_at: r.get::<_, Option<i64>>(6)?.map(Instant::from_unix),
    })
}

/// The outbox row `key`.
pub(super) fn get(conn: &Connection, key: &str) -> Result<Option<Outbound>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM {FROM} WHERE o.key = ?1"),
        params![key],
        row,
    )
    .optional()
    .map_err(db(&format!("read outbox \"{key}\"")))
}

/// See [`crate::store::Store::stage_outbound`]; `tx` is an immediate transaction, so the
/// lookup and the insert cannot interleave with another stager's.
pub(super) fn stage(
    tx: &Connection,
    out: &Outbound,
    effect: &Effect,
) -> Result<Staged, StoreError> {
    if let Some(existing) = get(tx, &out.key)? {
        return Ok(Staged::Existing(existing));
    }
    let claimed = match effect {
        Effect::Log(events) => {
            for e in events {
                insert_event(tx, e)?;
            }
            true
        }
        Effect::Acceptance {
            pec_id,
            receipt_id,
            at,
        } => close_acceptance(tx, pec_id, receipt_id, *at)?,
        Effect::DeliveryNotice { recipient, event } => claim_notice(tx, recipient, event)?,
        Effect::TakenInCharge {
            recipients,
            event,
            tracking,
        } => {
            verified(tx, recipients, event)?;
            if *tracking {
                for r in recipients {
                    tracking_forward(tx, &event.pec_id, r, TrackingState::TakenInCharge)?;
                }
            }
            true
        }
    };
    if !claimed {
        return Ok(Staged::Claimed);
    }
    let what = format!("stage outbox \"{}\"", out.key);
    tx.execute(
        "INSERT INTO outbox (key, message_id, mail_from, rcpt_to, data, created_at,
                             attempted_at)
         VALUES (?1, ?2, ?3, ?4, X'', ?5, ?5)",
        params![
            out.key,
            out.message_id,
            out.mail_from,
            out.rcpt_to.join("\n"),
            out.created_at.unix()
        ],
    )
    .map_err(db(&what))?;
    // The bytes: a zeroblob as the record's last column (SQLite keeps it a length, not a
    // buffer), then written in place through the blob interface. Bound as a parameter,
    // they would be copied by SQLite and again into the record.
    let len = i64::try_from(out.data.len())
        .map_err(|_| StoreError::Database(format!("{what}: message too large")))?;
    tx.execute(
        "INSERT INTO outbox_data (key, data) VALUES (?1, zeroblob(?2))",
        params![out.key, len],
    )
    .map_err(db(&what))?;
    let mut blob = tx
        .blob_open(
            rusqlite::MAIN_DB,
            "outbox_data",
            "data",
            tx.last_insert_rowid(),
            false,
        )
        .map_err(db(&what))?;
    blob.write_all(&out.data)
        .map_err(|e| StoreError::Database(format!("{what}: {e}")))?;
    blob.close().map_err(db(&what))?;
    Ok(Staged::New)
}

pub(super) fn injected(tx: &Connection, key: &str, at: Instant) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE outbox SET injected_at = ?2, attempted_at = ?2
         WHERE key = ?1 AND injected_at IS NULL",
        params![key, at.unix()],
    )
    .map_err(db(&format!("mark outbox \"{key}\" injected")))?;
    Ok(())
}

pub(super) fn claim_unsent(
    tx: &Connection,
    before: Instant,
    now: Instant,
    limit: usize,
) -> Result<Vec<Outbound>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {COLUMNS} FROM {FROM}
                 WHERE o.injected_at IS NULL AND o.attempted_at < ?1
                 ORDER BY o.attempted_at, o.key LIMIT ?2"
            ))
            .map_err(db("prepare outbox sweep"))?;
        let rows = stmt
            .query_map(params![before.unix(), limit], row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(db("read unsent outbox rows"))?;
        rows
    };
    for r in &rows {
        tx.execute(
            "UPDATE outbox SET attempted_at = ?2 WHERE key = ?1",
            params![r.key, now.unix()],
        )
        .map_err(db(&format!("claim outbox \"{}\"", r.key)))?;
    }
    Ok(rows)
}

pub(super) fn begin_deliveries(
    tx: &Connection,
    message_id: &str,
    recipients: &[String],
    at: Instant,
) -> Result<Vec<Option<DeliveryMark>>, StoreError> {
    let mut out = Vec::with_capacity(recipients.len());
    for r in recipients {
        let r = r.to_ascii_lowercase();
        let done: Option<i64> = tx
            .query_row(
                "SELECT done FROM deliveries WHERE message_id = ?1 AND recipient = ?2",
                params![message_id, r],
                |row| row.get(0),
            )
            .optional()
            .map_err(db(&format!("read delivery of \"{message_id}\"")))?;
        match done {
            Some(d) => out.push(Some(if d != 0 {
                DeliveryMark::Done
            } else {
                DeliveryMark::Intent
            })),
            None => {
                tx.execute(
                    "INSERT OR IGNORE INTO deliveries (message_id, recipient, done, at)
                     VALUES (?1, ?2, 0, ?3)",
                    params![message_id, r, at.unix()],
                )
                .map_err(db(&format!("record delivery intent of \"{message_id}\"")))?;
                out.push(None);
            }
        }
    }
    Ok(out)
}

pub(super) fn deliveries_done(
    tx: &Connection,
    message_id: &str,
    recipients: &[String],
    at: Instant,
) -> Result<(), StoreError> {
    for r in recipients {
        tx.execute(
            "INSERT INTO deliveries (message_id, recipient, done, at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (message_id, recipient) DO UPDATE SET done = 1, at = excluded.at",
            params![message_id, r.to_ascii_lowercase(), at.unix()],
        )
        .map_err(db(&format!("record delivery of \"{message_id}\"")))?;
    }
    Ok(())
}

pub(super) fn purge(tx: &Connection, before: Instant) -> Result<u64, StoreError> {
    tx.execute(
        "DELETE FROM outbox_data WHERE key IN
           (SELECT key FROM outbox WHERE injected_at IS NOT NULL AND injected_at < ?1)",
        params![before.unix()],
    )
    .map_err(db("purge the outbox"))?;
    let a = tx
        .execute(
            "DELETE FROM outbox WHERE injected_at IS NOT NULL AND injected_at < ?1",
            params![before.unix()],
        )
        .map_err(db("purge the outbox"))?;
    let b = tx
        .execute(
            "DELETE FROM deliveries WHERE at < ?1",
            params![before.unix()],
        )
        .map_err(db("purge the delivery records"))?;
    Ok((a + b) as u64)
}

/// Closes the pending acceptance of `pec_id` and logs the transport envelope and the
/// acceptance (see [`Effect::Acceptance`]); false when it was not pending.
pub(super) fn close_acceptance(
    tx: &Connection,
    pec_id: &str,
    receipt_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    let updated = tx
        .execute(
            "UPDATE pending_acceptance
             SET state = 'emitted', receipt_id = ?2, emitted_at = ?3
             WHERE pec_id = ?1 AND state = 'pending'",
            params![pec_id, receipt_id, at.unix()],
        )
        .map_err(db(&format!("close pending acceptance \"{pec_id}\"")))?;
    if updated == 0 {
        return Ok(false);
    }
    let (rowid, queue_id, provider, cert): (i64, Option<String>, String, String) = tx
        .query_row(
            "SELECT rowid, queue_id, provider, cert FROM pending_acceptance WHERE pec_id = ?1",
            params![pec_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(db(&format!("read pending acceptance \"{pec_id}\"")))?;
    let cert: Certification = serde_json::from_str(&cert).map_err(|e| {
        StoreError::Corrupt(format!(
            "pending_acceptance row {rowid}: certification: {e}"
        ))
    })?;
    for event in crate::store::outbox::acceptance_events(
        pec_id,
        receipt_id,
        at,
        &cert,
        &provider,
        queue_id.as_deref(),
    ) {
        insert_event(tx, &event)?;
    }
    Ok(true)
}

/// The (pec_id, recipient) claim of a delivery notice and its event; false when taken.
pub(super) fn claim_notice(
    tx: &Connection,
    recipient: &str,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let pec_id = &event.pec_id;
    let notice_id = event.related_ids.first().cloned().unwrap_or_default();
    let inserted = tx
        .execute(
            "INSERT OR IGNORE INTO delivery_notices (pec_id, recipient, kind, notice_id, at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                pec_id,
                recipient.to_ascii_lowercase(),
                event.kind.label(),
                notice_id,
                event.at.unix()
            ],
        )
        .map_err(db(&format!("claim delivery notice of \"{pec_id}\"")))?;
    if inserted == 0 {
        return Ok(false);
    }
    insert_event(tx, event)?;
    Ok(true)
}

/// `event.pec_id` verified for `recipients`, and `event`.
pub(super) fn verified(
    tx: &Connection,
    recipients: &[String],
    event: &LogEvent,
) -> Result<(), StoreError> {
    let pec_id = &event.pec_id;
    insert_event(tx, event)?;
    let mut stmt = tx
        .prepare("INSERT OR IGNORE INTO verified (pec_id, recipient, at) VALUES (?1, ?2, ?3)")
        .map_err(db("prepare verified insert"))?;
    for r in recipients {
        stmt.execute(params![pec_id, r.to_ascii_lowercase(), event.at.unix()])
            .map_err(db(&format!("record \"{r}\" verified for \"{pec_id}\"")))?;
    }
    Ok(())
}
