// SPDX-License-Identifier: GPL-3.0-or-later
//! The outbox and the delivery records on the SQLite store (tables `outbox` and
//! `deliveries`, migrations 9 and 10, and `outbox_data`, the bytes, migration 11; see
//! [`crate::store::outbox`]). Each function runs in the
//! caller's transaction.

use std::io::Write;

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    db, insert_event, quarantine_expiry, requests, timeout_columns, timeout_state, tracking_forward,
};
use crate::message::build::Certification;
use crate::message::time::Instant;
use crate::store::outbox::{intent_is_live, notice_outcome, refused_events, timeout_event};
use crate::store::{
    DeliveryMark, DueNotice, Effect, LogEvent, Outbound, Refused, Staged, StoreError, TrackingState,
};

/// The row and its bytes (in `outbox_data`; rows staged before migration 11 had them in
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
        Effect::Refused(r) => {
            refused(tx, r)?;
            true
        }
        Effect::Timeout { due, notice_id, at } => timeout_notice(tx, due, notice_id, *at)?,
        Effect::LogReply(event) => requests::answered(tx, event)?,
        Effect::Tracking { updates, event } => {
            // The notice exists only for recipients it settles: a recipient with an outcome
            // already (or no recipient of ours) gets no second one.
            let mut moved = false;
            for (r, state) in updates {
                moved |= tracking_forward(tx, &event.pec_id, r, *state)?;
            }
            if moved {
                insert_event(tx, event)?;
            }
            moved
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

/// See [`crate::store::Store::begin_deliveries`]; `tx` is an immediate transaction, so
/// the lookup and the takeover cannot interleave with another node's.
pub(super) fn begin_deliveries(
    tx: &Connection,
    message_id: &str,
    recipients: &[String],
    owner: &str,
    at: Instant,
) -> Result<Vec<Option<DeliveryMark>>, StoreError> {
    let mut out = Vec::with_capacity(recipients.len());
    for r in recipients {
        let r = r.to_ascii_lowercase();
        let found: Option<(i64, Option<String>, i64)> = tx
            .query_row(
                "SELECT done, owner, at FROM deliveries WHERE message_id = ?1 AND recipient = ?2",
                params![message_id, r],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(db(&format!("read delivery of \"{message_id}\"")))?;
        let mark = match found {
            Some((done, _, _)) if done != 0 => Some(DeliveryMark::Done),
            Some((_, holder, taken))
                if intent_is_live(holder.as_deref(), Instant::from_unix(taken), owner, at) =>
            {
                Some(DeliveryMark::Busy)
            }
            Some(_) => {
                tx.execute(
                    "UPDATE deliveries SET owner = ?3, at = ?4
                     WHERE message_id = ?1 AND recipient = ?2",
                    params![message_id, r, owner, at.unix()],
                )
                .map_err(db(&format!(
                    "take over delivery intent of \"{message_id}\""
                )))?;
                Some(DeliveryMark::Intent)
            }
            None => {
                tx.execute(
                    "INSERT INTO deliveries (message_id, recipient, done, at, owner)
                     VALUES (?1, ?2, 0, ?3, ?4)",
                    params![message_id, r, at.unix(), owner],
                )
                .map_err(db(&format!("record delivery intent of \"{message_id}\"")))?;
                None
            }
        };
        out.push(mark);
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
    // Our own envelope to our own mailbox (same provider): the notice is the outcome the
    // sender's tracking row waits for, decided here (no receipt comes back through the
    // reception point for it). Another provider's envelope has no tracking row here.
    if let Some(state) = notice_outcome(event) {
        tracking_forward(tx, pec_id, recipient, state)?;
    }
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

/// Puts `message` in quarantine for `pec_id` from `at`, for [`RETENTION_MONTHS`].
pub(super) fn quarantine(
    tx: &Connection,
    pec_id: &str,
    at: Instant,
    reason: &str,
    message: &[u8],
) -> Result<(), StoreError> {
    let expires_at = quarantine_expiry(pec_id, at)?;
    tx.execute(
        "INSERT INTO quarantine (pec_id, at, reason, message, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![pec_id, at.unix(), reason, message, expires_at.unix()],
    )
    .map_err(db(&format!("quarantine \"{pec_id}\"")))?;
    Ok(())
}

/// The records of a refused submission and its quarantined message (see
/// [`crate::store::Store::record_refused`]).
pub(super) fn refused(tx: &Connection, refused: &Refused) -> Result<(), StoreError> {
    let pec_id = &refused.pec_id;
    let events = refused_events(refused);
    insert_event(tx, &events[0])?;
    if let Some(message) = &refused.quarantine {
        quarantine(tx, pec_id, refused.at, &refused.reason, message)?;
    }
    for e in &events[1..] {
        insert_event(tx, e)?;
    }
    Ok(())
}

/// The timer notice `notice_id` for `due` recorded on its tracking row (after the 24 h
/// notice tracking stops, unless an outcome arrived meanwhile) and logged; false, and
/// nothing written, when the row has that notice already (or is gone).
pub(super) fn timeout_notice(
    tx: &Connection,
    due: &DueNotice,
    notice_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    let (_, id, _) = timeout_columns(due.which);
    let state = timeout_state(due.which);
    let (pec_id, recipient) = (&due.pec_id, &due.recipient);
    let updated = tx
        .execute(
            &format!(
                "UPDATE tracking SET {id} = ?3, state = {state}
                 WHERE pec_id = ?1 AND recipient = ?2 AND {id} IS NULL"
            ),
            params![pec_id, recipient, notice_id],
        )
        .map_err(db(&format!(
            "record notice for \"{recipient}\" of \"{pec_id}\""
        )))?;
    if updated == 0 {
        return Ok(false);
    }
    insert_event(tx, &timeout_event(due, notice_id, at))?;
    Ok(true)
}
