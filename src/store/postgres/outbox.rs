// SPDX-License-Identifier: GPL-3.0-or-later
//! The outbox and the delivery records on the PostgreSQL store (tables `outbox` and
//! `deliveries`, migrations 9 and 10; see [`crate::store::outbox`]).
//!
//! Staging locks the chain head first, as every appending transaction does (one lock
//! order): stagers of all nodes are serialised, so the outbox lookup that follows sees
//! every row staged before.

use deadpool_postgres::{Object, Transaction};
use tokio_postgres::Row;

use super::{
    append_after, decode_cert, lock_head, pg, quarantine_expiry, set_head, timeout_columns,
    timeout_state, to_i64, tracking_forward,
};
use crate::message::time::Instant;
use crate::store::outbox::{intent_is_live, notice_outcome, refused_events, timeout_event};
use crate::store::{
    DeliveryMark, DueNotice, Effect, LogEvent, Outbound, Refused, Staged, StoreError, TrackingState,
};

const COLUMNS: &str = "key, message_id, mail_from, rcpt_to, data, created_at, injected_at";

fn row(r: &Row) -> Outbound {
    let rcpt: String = r.get(3);
    Outbound {
        key: r.get(0),
        message_id: r.get(1),
        mail_from: r.get(2),
        rcpt_to: rcpt.split('\n').map(str::to_string).collect(),
        data: r.get(4),
        created_at: Instant::from_unix(r.get(5)),
        injected_at: r.get::<_, Option<i64>>(6).map(Instant::from_unix),
    }
}

pub(super) async fn get(c: &Object, key: &str) -> Result<Option<Outbound>, StoreError> {
    Ok(c.query_opt(
        &format!("SELECT {COLUMNS} FROM outbox WHERE key = $1"),
        &[&key],
    )
    .await
    .map_err(pg(&format!("read outbox \"{key}\"")))?
    .as_ref()
    .map(row))
}

type Head = (i64, Vec<u8>);

/// Closes the log request `event.pec_id` with the reply `event.related_ids[0]` at
/// `event.at`; false, and nothing written, when it was answered already.
pub(super) async fn close_log_request(
    tx: &Transaction<'_>,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let reply_id = event.related_ids.first().cloned().unwrap_or_default();
    let n = tx
        .execute(
            "UPDATE log_requests SET reply_id = $2, replied_at = $3
             WHERE id = $1 AND reply_id IS NULL",
            &[&event.pec_id, &reply_id, &event.at.unix()],
        )
        .await
        .map_err(pg(&format!("close log request \"{}\"", event.pec_id)))?;
    Ok(n > 0)
}

async fn append(tx: &Transaction<'_>, head: &mut Head, event: &LogEvent) -> Result<(), StoreError> {
    *head = append_after(tx, event, std::mem::take(head)).await?;
    Ok(())
}

pub(super) async fn stage(
    tx: &Transaction<'_>,
    out: &Outbound,
    effect: &Effect,
) -> Result<Staged, StoreError> {
    let mut head = lock_head(tx).await?;
    if let Some(existing) = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM outbox WHERE key = $1"),
            &[&out.key],
        )
        .await
        .map_err(pg(&format!("read outbox \"{}\"", out.key)))?
    {
        return Ok(Staged::Existing(row(&existing)));
    }
    let claimed = match effect {
        Effect::Log(events) => {
            for e in events {
                append(tx, &mut head, e).await?;
            }
            true
        }
        Effect::Acceptance {
            pec_id,
            receipt_id,
            at,
        } => close_acceptance(tx, &mut head, pec_id, receipt_id, *at).await?,
        Effect::DeliveryNotice { recipient, event } => {
            claim_notice(tx, &mut head, recipient, event).await?
        }
        Effect::TakenInCharge {
            recipients,
            event,
            tracking,
        } => {
            let pec_id = &event.pec_id;
            append(tx, &mut head, event).await?;
            for r in recipients {
                tx.execute(
                    "INSERT INTO verified (pec_id, recipient, at) VALUES ($1, $2, $3)
                     ON CONFLICT DO NOTHING",
                    &[pec_id, &r.to_ascii_lowercase(), &event.at.unix()],
                )
                .await
                .map_err(pg(&format!("record \"{r}\" verified for \"{pec_id}\"")))?;
                if *tracking {
                    tracking_forward(tx, pec_id, r, TrackingState::TakenInCharge).await?;
                }
            }
            true
        }
        Effect::Refused(r) => {
            refused(tx, &mut head, r).await?;
            true
        }
        Effect::Timeout { due, notice_id, at } => {
            timeout_notice(tx, &mut head, due, notice_id, *at).await?
        }
        Effect::LogReply(event) => {
            let closed = close_log_request(tx, event).await?;
            if closed {
                append(tx, &mut head, event).await?;
            }
            closed
        }
        Effect::Tracking { updates, event } => {
            // Only for recipients it settles (see the SQLite store).
            let mut moved = false;
            for (r, state) in updates {
                moved |= tracking_forward(tx, &event.pec_id, r, *state).await?;
            }
            if moved {
                append(tx, &mut head, event).await?;
            }
            moved
        }
    };
    if !claimed {
        return Ok(Staged::Claimed);
    }
    set_head(tx, &head).await?;
    tx.execute(
        "INSERT INTO outbox (key, message_id, mail_from, rcpt_to, data, created_at,
                             attempted_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
        &[
            &out.key,
            &out.message_id,
            &out.mail_from,
            &out.rcpt_to.join("\n"),
            &out.data,
            &out.created_at.unix(),
        ],
    )
    .await
    .map_err(pg(&format!("stage outbox \"{}\"", out.key)))?;
    Ok(Staged::New)
}

/// The (pec_id, recipient) claim of a delivery notice, its event and, for our own
/// envelope, its tracking row closed (see the SQLite store); false when taken. The insert on
/// the key decides: a concurrent claim from another node waits for this transaction and
/// then finds the key taken. The caller holds the chain head.
pub(super) async fn claim_notice(
    tx: &Transaction<'_>,
    head: &mut Head,
    recipient: &str,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let pec_id = &event.pec_id;
    let notice_id = event.related_ids.first().cloned().unwrap_or_default();
    let inserted = tx
        .execute(
            "INSERT INTO delivery_notices (pec_id, recipient, kind, notice_id, at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                pec_id,
                &recipient.to_ascii_lowercase(),
                &event.kind.label(),
                &notice_id,
                &event.at.unix(),
            ],
        )
        .await
        .map_err(pg(&format!("claim delivery notice of \"{pec_id}\"")))?;
    if inserted == 0 {
        return Ok(false);
    }
    append(tx, head, event).await?;
    if let Some(state) = notice_outcome(event) {
        tracking_forward(tx, pec_id, recipient, state).await?;
    }
    Ok(true)
}

/// See [`crate::store::Store::acceptance_emitted`]; the caller holds the chain head.
pub(super) async fn close_acceptance(
    tx: &Transaction<'_>,
    head: &mut Head,
    pec_id: &str,
    receipt_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    let row = tx
        .query_opt(
            "UPDATE pending_acceptance
             SET state = 'emitted', receipt_id = $2, emitted_at = $3
             WHERE pec_id = $1 AND state = 'pending'
             RETURNING seq, queue_id, provider, cert",
            &[&pec_id, &receipt_id, &at.unix()],
        )
        .await
        .map_err(pg(&format!("close pending acceptance \"{pec_id}\"")))?;
    let Some(row) = row else {
        return Ok(false);
    };
    let cert = decode_cert(row.get(0), row.get(3))?;
    let (queue_id, provider): (Option<String>, String) = (row.get(1), row.get(2));
    for event in crate::store::outbox::acceptance_events(
        pec_id,
        receipt_id,
        at,
        &cert,
        &provider,
        queue_id.as_deref(),
    ) {
        append(tx, head, &event).await?;
    }
    Ok(true)
}

pub(super) async fn injected(
    tx: &Transaction<'_>,
    key: &str,
    at: Instant,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE outbox SET injected_at = $2, attempted_at = $2
         WHERE key = $1 AND injected_at IS NULL",
        &[&key, &at.unix()],
    )
    .await
    .map_err(pg(&format!("mark outbox \"{key}\" injected")))?;
    Ok(())
}

/// `FOR UPDATE SKIP LOCKED`: two nodes sweeping at once take different rows.
pub(super) async fn claim_unsent(
    tx: &Transaction<'_>,
    before: Instant,
    now: Instant,
    limit: usize,
) -> Result<Vec<Outbound>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM outbox
                 WHERE injected_at IS NULL AND attempted_at < $1
                 ORDER BY attempted_at, key LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            &[&before.unix(), &to_i64(limit)],
        )
        .await
        .map_err(pg("read unsent outbox rows"))?;
    let rows: Vec<Outbound> = rows.iter().map(row).collect();
    for r in &rows {
        tx.execute(
            "UPDATE outbox SET attempted_at = $2 WHERE key = $1",
            &[&r.key, &now.unix()],
        )
        .await
        .map_err(pg(&format!("claim outbox \"{}\"", r.key)))?;
    }
    Ok(rows)
}

/// See [`crate::store::Store::begin_deliveries`]. The insert takes a free slot in one
/// statement; an existing row is locked (`FOR UPDATE`) before it is judged and taken over,
/// so two nodes never both take it.
pub(super) async fn begin_deliveries(
    tx: &Transaction<'_>,
    message_id: &str,
    recipients: &[String],
    owner: &str,
    at: Instant,
) -> Result<Vec<Option<DeliveryMark>>, StoreError> {
    let mut out = Vec::with_capacity(recipients.len());
    for r in recipients {
        let r = r.to_ascii_lowercase();
        let inserted = tx
            .execute(
                "INSERT INTO deliveries (message_id, recipient, done, at, owner)
                 VALUES ($1, $2, 0, $3, $4) ON CONFLICT DO NOTHING",
                &[&message_id, &r, &at.unix(), &owner],
            )
            .await
            .map_err(pg(&format!("record delivery intent of \"{message_id}\"")))?;
        if inserted > 0 {
            out.push(None);
            continue;
        }
        let row = tx
            .query_one(
                "SELECT done, owner, at FROM deliveries
                 WHERE message_id = $1 AND recipient = $2 FOR UPDATE",
                &[&message_id, &r],
            )
            .await
            .map_err(pg(&format!("read delivery of \"{message_id}\"")))?;
        let (done, holder, taken): (i64, Option<String>, i64) =
            (row.get(0), row.get(1), row.get(2));
        let mark = if done != 0 {
            DeliveryMark::Done
        } else if intent_is_live(holder.as_deref(), Instant::from_unix(taken), owner, at) {
            DeliveryMark::Busy
        } else {
            tx.execute(
                "UPDATE deliveries SET owner = $3, at = $4 WHERE message_id = $1 AND recipient = $2",
                &[&message_id, &r, &owner, &at.unix()],
            )
            .await
            .map_err(pg(&format!("take over delivery intent of \"{message_id}\"")))?;
            DeliveryMark::Intent
        };
        out.push(Some(mark));
    }
    Ok(out)
}

pub(super) async fn deliveries_done(
    tx: &Transaction<'_>,
    message_id: &str,
    recipients: &[String],
    at: Instant,
) -> Result<(), StoreError> {
    for r in recipients {
        tx.execute(
            "INSERT INTO deliveries (message_id, recipient, done, at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (message_id, recipient) DO UPDATE SET done = 1, at = excluded.at",
            &[&message_id, &r.to_ascii_lowercase(), &at.unix()],
        )
        .await
        .map_err(pg(&format!("record delivery of \"{message_id}\"")))?;
    }
    Ok(())
}

pub(super) async fn purge(tx: &Transaction<'_>, before: Instant) -> Result<u64, StoreError> {
    let a = tx
        .execute(
            "DELETE FROM outbox WHERE injected_at IS NOT NULL AND injected_at < $1",
            &[&before.unix()],
        )
        .await
        .map_err(pg("purge the outbox"))?;
    let b = tx
        .execute("DELETE FROM deliveries WHERE at < $1", &[&before.unix()])
        .await
        .map_err(pg("purge the delivery records"))?;
    Ok(a + b)
}

/// Puts `message` in quarantine for `pec_id` from `at`, for [`RETENTION_MONTHS`].
pub(super) async fn quarantine(
    tx: &Transaction<'_>,
    pec_id: &str,
    at: Instant,
    reason: &str,
    message: &[u8],
) -> Result<(), StoreError> {
    let expires_at = quarantine_expiry(pec_id, at)?;
    tx.execute(
        "INSERT INTO quarantine (pec_id, at, reason, message, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[&pec_id, &at.unix(), &reason, &message, &expires_at.unix()],
    )
    .await
    .map_err(pg(&format!("quarantine \"{pec_id}\"")))?;
    Ok(())
}

/// The records of a refused submission and its quarantined message (see
/// [`crate::store::Store::record_refused`]); the caller holds the chain head.
pub(super) async fn refused(
    tx: &Transaction<'_>,
    head: &mut Head,
    refused: &Refused,
) -> Result<(), StoreError> {
    let pec_id = &refused.pec_id;
    let events = refused_events(refused);
    append(tx, head, &events[0]).await?;
    if let Some(message) = &refused.quarantine {
        quarantine(tx, pec_id, refused.at, &refused.reason, message).await?;
    }
    for e in &events[1..] {
        append(tx, head, e).await?;
    }
    Ok(())
}

/// The timer notice `notice_id` for `due` recorded on its tracking row and logged; false,
/// and nothing written, when the row has that notice already (or is gone). The caller
/// holds the chain head.
async fn timeout_notice(
    tx: &Transaction<'_>,
    head: &mut Head,
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
                "UPDATE tracking SET {id} = $3, state = {state}
                 WHERE pec_id = $1 AND recipient = $2 AND {id} IS NULL"
            ),
            &[pec_id, recipient, &notice_id],
        )
        .await
        .map_err(pg(&format!(
            "record notice for \"{recipient}\" of \"{pec_id}\""
        )))?;
    if updated == 0 {
        return Ok(false);
    }
    append(tx, head, &timeout_event(due, notice_id, at)).await?;
    Ok(true)
}
