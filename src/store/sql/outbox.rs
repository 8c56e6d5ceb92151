// SPDX-License-Identifier: GPL-3.0-or-later
//! The multi-step writes of the store on both backends, each in the caller's write
//! transaction: the outbox and the delivery records (see [`crate::store::outbox`]), the
//! exactly-once claims (acceptance receipts, delivery notices, timer notices, owner
//! requests), quarantine and tracking. Every one that appends to the legal log takes the
//! chain head first ([`lock_head`]): on PostgreSQL this serialises the writers of all
//! nodes (one lock order), so a lookup that follows sees every row committed before.

use super::legal::{append, lock_head, Head};
use super::{all, args, exec, exec_unique, one, opt, to_i64, Conn, Dialect, Row};
use crate::message::kind::RecipientType;
use crate::message::time::Instant;
use crate::store::codec::{
    decode_cert, decode_period, forward_from, period_columns, quarantine_expiry, state_str,
    timeout_columns, timeout_state,
};
use crate::store::outbox::{
    acceptance_events, intent_is_live, notice_outcome, rate_limited, refused_events, timeout_event,
    with_login,
};
use crate::store::{Accepted, RecipientProtocol};
use crate::store::{
    DeliveryMark, DueNotice, Effect, LogEvent, LogRequest, Outbound, Refused, Staged, StoreError,
    TimeoutClaim, TrackingState,
};

/// The outbox columns and where they come from: on SQLite the bytes are in `outbox_data`
/// (rows staged before its migration 11 had them in `outbox.data`, which the migration
/// moved and emptied).
fn outbox_source(d: Dialect) -> (&'static str, &'static str) {
    match d {
        Dialect::Sqlite => (
            "o.key, o.message_id, o.mail_from, o.rcpt_to, COALESCE(d.data, o.data), \
             o.created_at, o.injected_at",
            "outbox o LEFT JOIN outbox_data d ON d.key = o.key",
        ),
        Dialect::Postgres => (
            "o.key, o.message_id, o.mail_from, o.rcpt_to, o.data, o.created_at, o.injected_at",
            "outbox o",
        ),
    }
}

fn outbound_row(r: &Row) -> Result<Outbound, StoreError> {
    let rcpt: String = r.get(3)?;
    Ok(Outbound {
        key: r.get(0)?,
        message_id: r.get(1)?,
        mail_from: r.get(2)?,
        rcpt_to: rcpt.split('\n').map(str::to_string).collect(),
        data: r.get(4)?,
        created_at: Instant::from_unix(r.get(5)?),
        injected_at: r.get::<Option<i64>>(6)?.map(Instant::from_unix),
    })
}

/// The outbox row `key`.
pub fn get(c: &dyn Conn, key: &str) -> Result<Option<Outbound>, StoreError> {
    let (columns, from) = outbox_source(c.dialect());
    opt(
        c,
        &format!("read outbox \"{key}\""),
        &format!("SELECT {columns} FROM {from} WHERE o.key = $1"),
        args![key],
    )?
    .map(|r| outbound_row(&r))
    .transpose()
}

/// See [`crate::store::Store::stage_outbound`]. The chain head is taken first, so the
/// lookup and the insert cannot interleave with another stager's.
pub fn stage(c: &dyn Conn, out: &Outbound, effect: &Effect) -> Result<Staged, StoreError> {
    let mut head = lock_head(c)?;
    let staged = stage_locked(c, &mut head, out, effect)?;
    Ok(staged)
}

/// [`stage`] with the chain head held by the caller ([`append`] moves it).
fn stage_locked(
    c: &dyn Conn,
    head: &mut Head,
    out: &Outbound,
    effect: &Effect,
) -> Result<Staged, StoreError> {
    if let Some(existing) = get(c, &out.key)? {
        return Ok(Staged::Existing(existing));
    }
    let claimed = claim(c, head, effect)?;
    if !claimed {
        return Ok(Staged::Claimed);
    }
    let what = format!("stage outbox \"{}\"", out.key);
    let rcpt_to = out.rcpt_to.join("\n");
    match c.dialect() {
        Dialect::Postgres => exec(
            c,
            &what,
            "INSERT INTO outbox (key, message_id, mail_from, rcpt_to, data, created_at,
                                 attempted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
            args![
                &out.key,
                &out.message_id,
                &out.mail_from,
                &rcpt_to,
                &out.data,
                out.created_at.unix()
            ],
        )?,
        // The bytes go to `outbox_data`, written in place (see [`Conn::insert_blob`]).
        Dialect::Sqlite => {
            let n = exec(
                c,
                &what,
                "INSERT INTO outbox (key, message_id, mail_from, rcpt_to, data, created_at,
                                     attempted_at)
                 VALUES ($1, $2, $3, $4, X'', $5, $5)",
                args![
                    &out.key,
                    &out.message_id,
                    &out.mail_from,
                    &rcpt_to,
                    out.created_at.unix()
                ],
            )?;
            c.insert_blob("outbox_data", &out.key, &out.data)
                .map_err(|e| StoreError::Database(format!("{what}: {}", e.message)))?;
            n
        }
    };
    Ok(Staged::New)
}

/// The rows of [`crate::store::Store::record_accepted_routed`] in the transaction of `c`: the tracking
/// rows, the sender, the authentication time, the protocols and the pending acceptance
/// (also staged with a split submission's REM dispatch, [`Effect::Accepted`]).
pub fn accepted_rows(
    c: &dyn Conn,
    accepted: &Accepted,
    protocols: &[(String, RecipientProtocol)],
) -> Result<(), StoreError> {
    let cert = serde_json::to_string(&accepted.cert)
        .map_err(|e| StoreError::Database(format!("encode certification: {e}")))?;
    let pec_id = &accepted.pec_id;
    // The transport envelope is logged once Postfix has queued it (see
    // Store::record_accepted), with the acceptance.
    // A recipient listed twice is tracked once.
    for d in &accepted.cert.destinatari {
        if d.tipo != RecipientType::Certificato {
            continue;
        }
        exec(
            c,
            &format!("track recipient \"{}\" of \"{pec_id}\"", d.address),
            "INSERT INTO tracking (pec_id, recipient, sent_at, state)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            args![
                pec_id,
                &d.address,
                accepted.at.unix(),
                state_str(TrackingState::Sent)
            ],
        )?;
    }
    // The protocol of each recipient (REM), decided once by the access point.
    for (recipient, protocol) in protocols {
        exec(
            c,
            &format!("record the protocol of \"{recipient}\" of \"{pec_id}\""),
            "INSERT INTO recipient_protocols (pec_id, recipient, protocol)
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            args![pec_id, &recipient.to_ascii_lowercase(), protocol.as_str()],
        )?;
    }
    // The sender, for the daily quota (Store::accepted_since).
    exec(
        c,
        &format!("record the sender of \"{pec_id}\""),
        "INSERT INTO acceptance_senders (pec_id, sender, at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        args![
            pec_id,
            &accepted.cert.mittente.to_ascii_lowercase(),
            accepted.at.unix()
        ],
    )?;
    if let Some(auth_at) = accepted.auth_at {
        exec(
            c,
            &format!("record the authentication time of \"{pec_id}\""),
            "INSERT INTO acceptance_auth (pec_id, auth_at) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            args![pec_id, auth_at.unix()],
        )?;
    }
    // Last, so that a duplicate pec_id fails after the other writes and the test of
    // the one-transaction property sees them rolled back.
    exec_unique(
        c,
        &format!("record pending acceptance \"{pec_id}\""),
        "INSERT INTO pending_acceptance (pec_id, queue_id, at, login, provider, cert)
             VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            pec_id,
            &accepted.queue_id,
            accepted.at.unix(),
            &accepted.login,
            &accepted.provider,
            &cert,
        ],
        || format!("pec_id \"{pec_id}\" is already recorded"),
    )
    .map(drop)
}

/// Takes the claim of `effect` and appends its records; false when it was taken already.
/// The caller holds the chain head.
fn claim(c: &dyn Conn, head: &mut Head, effect: &Effect) -> Result<bool, StoreError> {
    Ok(match effect {
        Effect::Log(events) => {
            for e in events {
                append(c, head, e)?;
            }
            true
        }
        Effect::Acceptance {
            pec_id,
            receipt_id,
            at,
        } => close_acceptance(c, head, pec_id, receipt_id, *at)?,
        Effect::DeliveryNotice { recipient, event } => claim_notice(c, head, recipient, event)?,
        Effect::TakenInCharge {
            recipients,
            event,
            tracking,
        } => {
            verified(c, head, &event.pec_id, recipients, event)?;
            if *tracking {
                for r in recipients {
                    tracking_forward(c, &event.pec_id, r, TrackingState::TakenInCharge)?;
                }
            }
            true
        }
        Effect::Refused(r) => {
            refused(c, head, r)?;
            true
        }
        Effect::Timeout { due, notice_id, at } => timeout_notice(c, head, due, notice_id, *at)?,
        Effect::LogReply(event) => request_answered(c, head, event)?,
        Effect::Accepted {
            accepted,
            protocols,
        } => {
            accepted_rows(c, accepted, protocols)?;
            true
        }
        Effect::Tracking { updates, event } => {
            // The notice exists only for recipients it settles: a recipient with an outcome
            // already (or no recipient of ours) gets no second one.
            let mut moved = false;
            for (r, state) in updates {
                moved |= tracking_forward(c, &event.pec_id, r, *state)?;
            }
            if moved {
                append(c, head, event)?;
            }
            moved
        }
        Effect::RemWaits { effect, waits } => {
            let claimed = claim(c, head, effect)?;
            if claimed {
                super::rem::start_waits(c, waits)?;
            }
            claimed
        }
        Effect::RemOutcome {
            message_id,
            recipient,
            kind,
            notice_id,
            at,
        } => super::rem::outcome(c, message_id, recipient, kind, notice_id, *at)?,
        Effect::RemWaitNotice { due, notice_id, at } => {
            super::rem::close_wait(c, due.id, Some(notice_id), *at)?
        }
        Effect::Also { effect, staged } => {
            let claimed = claim(c, head, effect)?;
            if claimed {
                for (out, effect) in staged {
                    stage_locked(c, head, out, effect)?;
                }
            }
            claimed
        }
        Effect::WithEvidences { effect, evidences } => {
            let claimed = claim(c, head, effect)?;
            if claimed {
                for (evidence, event) in evidences {
                    super::rem::record_in(c, head, evidence, event)?;
                }
            }
            claimed
        }
    })
}

/// The (pec_id, recipient) claim of a delivery notice, its event and, for our own
/// envelope, its tracking row closed; false when taken. The insert on the key decides: a
/// concurrent claim (from another node) waits for this transaction and then finds the key
/// taken. The caller holds the chain head.
pub fn claim_notice(
    c: &dyn Conn,
    head: &mut Head,
    recipient: &str,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let pec_id = &event.pec_id;
    let notice_id = event.related_ids.first().cloned().unwrap_or_default();
    if !decide_outcome(
        c,
        pec_id,
        recipient,
        event.kind.label(),
        &notice_id,
        event.at,
    )? {
        return Ok(false);
    }
    append(c, head, event)?;
    // Our own envelope to our own mailbox (same provider): the notice is the outcome the
    // sender's tracking row waits for, decided here (no receipt comes back through the
    // reception point for it). Another provider's envelope has no tracking row here.
    if let Some(state) = notice_outcome(event) {
        tracking_forward(c, pec_id, recipient, state)?;
    }
    Ok(true)
}

/// The one outcome of (`pec_id`, `recipient`) at the delivery point, PEC notice or REM
/// consignment evidence (`kind` its label, `notice_id` the message that states it): false
/// when one was decided already. The insert on the key decides: a concurrent claim (from
/// another node) waits for this transaction and then finds the key taken.
pub fn decide_outcome(
    c: &dyn Conn,
    pec_id: &str,
    recipient: &str,
    kind: &str,
    notice_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    let inserted = exec(
        c,
        &format!("claim delivery notice of \"{pec_id}\""),
        "INSERT INTO delivery_notices (pec_id, recipient, kind, notice_id, at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        args![
            pec_id,
            &recipient.to_ascii_lowercase(),
            kind,
            notice_id,
            at.unix()
        ],
    )?;
    Ok(inserted == 1)
}

/// Closes the pending acceptance of `pec_id` and logs the transport envelope and the
/// acceptance (see [`Effect::Acceptance`]); false when it was not pending. The caller
/// holds the chain head.
pub fn close_acceptance(
    c: &dyn Conn,
    head: &mut Head,
    pec_id: &str,
    receipt_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    let seq = c.dialect().seq();
    let Some(row) = opt(
        c,
        &format!("close pending acceptance \"{pec_id}\""),
        &format!(
            "UPDATE pending_acceptance
             SET state = 'emitted', receipt_id = $2, emitted_at = $3
             WHERE pec_id = $1 AND state = 'pending'
             RETURNING {seq}, queue_id, provider, cert, login"
        ),
        args![pec_id, receipt_id, at.unix()],
    )?
    else {
        return Ok(false);
    };
    let cert = decode_cert(row.get(0)?, &row.get::<String>(3)?)?;
    let (queue_id, provider, login): (Option<String>, String, String) =
        (row.get(1)?, row.get(2)?, row.get(4)?);
    let auth_at = auth_at(c, pec_id)?;
    for event in acceptance_events(
        pec_id,
        receipt_id,
        at,
        &cert,
        &provider,
        queue_id.as_deref(),
        with_login(None, Some(&login), auth_at),
    ) {
        append(c, head, &event)?;
    }
    Ok(true)
}

/// When the session of the accepted submission `pec_id` authenticated, if recorded
/// (schema version 16; none for submissions accepted before it).
pub fn auth_at(c: &dyn Conn, pec_id: &str) -> Result<Option<Instant>, StoreError> {
    Ok(opt(
        c,
        &format!("read the authentication time of \"{pec_id}\""),
        "SELECT auth_at FROM acceptance_auth WHERE pec_id = $1",
        args![pec_id],
    )?
    .map(|r| r.get(0))
    .transpose()?
    .map(Instant::from_unix))
}

pub fn injected(c: &dyn Conn, key: &str, at: Instant) -> Result<(), StoreError> {
    exec(
        c,
        &format!("mark outbox \"{key}\" injected"),
        "UPDATE outbox SET injected_at = $2, attempted_at = $2
         WHERE key = $1 AND injected_at IS NULL",
        args![key, at.unix()],
    )
    .map(drop)
}

/// See [`crate::store::Store::claim_unsent`]. On PostgreSQL the rows are locked
/// `FOR UPDATE SKIP LOCKED`: two nodes sweeping at once take different rows.
pub fn claim_unsent(
    c: &dyn Conn,
    before: Instant,
    now: Instant,
    limit: usize,
) -> Result<Vec<Outbound>, StoreError> {
    let (columns, from) = outbox_source(c.dialect());
    let lock = c.dialect().lock("FOR UPDATE SKIP LOCKED");
    let rows = all(
        c,
        "read unsent outbox rows",
        &format!(
            "SELECT {columns} FROM {from}
             WHERE o.injected_at IS NULL AND o.attempted_at < $1
             ORDER BY o.attempted_at, o.key LIMIT $2 {lock}"
        ),
        args![before.unix(), to_i64(limit)],
    )?
    .iter()
    .map(outbound_row)
    .collect::<Result<Vec<_>, _>>()?;
    for r in &rows {
        exec(
            c,
            &format!("claim outbox \"{}\"", r.key),
            "UPDATE outbox SET attempted_at = $2 WHERE key = $1",
            args![&r.key, now.unix()],
        )?;
    }
    Ok(rows)
}

/// See [`crate::store::Store::begin_deliveries`]. The insert takes a free slot in one
/// statement; an existing row is locked (PostgreSQL: `FOR UPDATE`; SQLite: the write
/// transaction) before it is judged and taken over, so two nodes never both take it.
pub fn begin_deliveries(
    c: &dyn Conn,
    message_id: &str,
    recipients: &[String],
    owner: &str,
    at: Instant,
) -> Result<Vec<Option<DeliveryMark>>, StoreError> {
    let lock = c.dialect().lock("FOR UPDATE");
    let mut out = Vec::with_capacity(recipients.len());
    for r in recipients {
        let r = r.to_ascii_lowercase();
        let inserted = exec(
            c,
            &format!("record delivery intent of \"{message_id}\""),
            "INSERT INTO deliveries (message_id, recipient, done, at, owner)
             VALUES ($1, $2, 0, $3, $4) ON CONFLICT DO NOTHING",
            args![message_id, &r, at.unix(), owner],
        )?;
        if inserted > 0 {
            out.push(None);
            continue;
        }
        let row = one(
            c,
            &format!("read delivery of \"{message_id}\""),
            &format!(
                "SELECT done, owner, at FROM deliveries
                 WHERE message_id = $1 AND recipient = $2 {lock}"
            ),
            args![message_id, &r],
        )?;
        let (done, holder, taken): (i64, Option<String>, i64) =
            (row.get(0)?, row.get(1)?, row.get(2)?);
        let mark = if done != 0 {
            DeliveryMark::Done
        } else if intent_is_live(holder.as_deref(), Instant::from_unix(taken), owner, at) {
            DeliveryMark::Busy
        } else {
            exec(
                c,
                &format!("take over delivery intent of \"{message_id}\""),
                "UPDATE deliveries SET owner = $3, at = $4
                 WHERE message_id = $1 AND recipient = $2",
                args![message_id, &r, owner, at.unix()],
            )?;
            DeliveryMark::Intent
        };
        out.push(Some(mark));
    }
    Ok(out)
}

pub fn deliveries_done(
    c: &dyn Conn,
    message_id: &str,
    recipients: &[String],
    at: Instant,
) -> Result<(), StoreError> {
    for r in recipients {
        exec(
            c,
            &format!("record delivery of \"{message_id}\""),
            "INSERT INTO deliveries (message_id, recipient, done, at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (message_id, recipient) DO UPDATE SET done = 1, at = excluded.at",
            args![message_id, &r.to_ascii_lowercase(), at.unix()],
        )?;
    }
    Ok(())
}

/// See [`crate::store::Store::purge_outbox`].
pub fn purge(c: &dyn Conn, before: Instant) -> Result<u64, StoreError> {
    let before = before.unix();
    if c.dialect() == Dialect::Sqlite {
        exec(
            c,
            "purge the outbox",
            "DELETE FROM outbox_data WHERE key IN
               (SELECT key FROM outbox WHERE injected_at IS NOT NULL AND injected_at < $1)",
            args![before],
        )?;
    }
    let a = exec(
        c,
        "purge the outbox",
        "DELETE FROM outbox WHERE injected_at IS NOT NULL AND injected_at < $1",
        args![before],
    )?;
    let b = exec(
        c,
        "purge the delivery records",
        "DELETE FROM deliveries WHERE at < $1",
        args![before],
    )?;
    Ok(a + b)
}

/// Puts `message` in quarantine for `pec_id` from `at`, for
/// [`crate::store::RETENTION_MONTHS`].
pub fn quarantine(
    c: &dyn Conn,
    pec_id: &str,
    at: Instant,
    reason: &str,
    message: &[u8],
) -> Result<(), StoreError> {
    let expires_at = quarantine_expiry(pec_id, at)?;
    exec(
        c,
        &format!("quarantine \"{pec_id}\""),
        "INSERT INTO quarantine (pec_id, at, reason, message, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        args![pec_id, at.unix(), reason, message, expires_at.unix()],
    )
    .map(drop)
}

/// The records of a refused submission and its quarantined message (see
/// [`crate::store::Store::record_refused`]); the caller holds the chain head.
pub fn refused(c: &dyn Conn, head: &mut Head, refused: &Refused) -> Result<(), StoreError> {
    let events = refused_events(refused);
    append(c, head, &events[0])?;
    if let Some(message) = &refused.quarantine {
        quarantine(c, &refused.pec_id, refused.at, &refused.reason, message)?;
    }
    for e in &events[1..] {
        append(c, head, e)?;
    }
    Ok(())
}

/// `event`, and `pec_id` verified for `recipients` (see
/// [`crate::store::Store::record_verified`]); the caller holds the chain head.
pub fn verified(
    c: &dyn Conn,
    head: &mut Head,
    pec_id: &str,
    recipients: &[String],
    event: &LogEvent,
) -> Result<(), StoreError> {
    append(c, head, event)?;
    for r in recipients {
        exec(
            c,
            &format!("record \"{r}\" verified for \"{pec_id}\""),
            "INSERT INTO verified (pec_id, recipient, at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            args![pec_id, &r.to_ascii_lowercase(), event.at.unix()],
        )?;
    }
    Ok(())
}

/// The timer notice `notice_id` for `due` recorded on its tracking row (after the 24 h
/// notice tracking stops, unless an outcome arrived meanwhile) and logged; false, and
/// nothing written, when the row has that notice already (or is gone). The caller holds
/// the chain head.
fn timeout_notice(
    c: &dyn Conn,
    head: &mut Head,
    due: &DueNotice,
    notice_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    let (_, id, _) = timeout_columns(due.which);
    let state = timeout_state(due.which);
    let (pec_id, recipient) = (&due.pec_id, &due.recipient);
    let updated = exec(
        c,
        &format!("record notice for \"{recipient}\" of \"{pec_id}\""),
        &format!(
            "UPDATE tracking SET {id} = $3, state = {state}
             WHERE pec_id = $1 AND recipient = $2 AND {id} IS NULL"
        ),
        args![pec_id, recipient, notice_id],
    )?;
    if updated == 0 {
        return Ok(false);
    }
    append(c, head, &timeout_event(due, notice_id, at))?;
    Ok(true)
}

/// Moves the tracking row of `recipient` of `pec_id` forward to `state` (see
/// [`crate::store::Store::update_tracking`]), in the caller's transaction.
pub fn tracking_forward(
    c: &dyn Conn,
    pec_id: &str,
    recipient: &str,
    state: TrackingState,
) -> Result<bool, StoreError> {
    let Some(from) = forward_from(state) else {
        return Ok(false);
    };
    let n = exec(
        c,
        &format!("update tracking of \"{recipient}\" for \"{pec_id}\""),
        &format!(
            "UPDATE tracking SET state = $3
             WHERE pec_id = $1 AND lower(recipient) = lower($2) AND state IN {from}"
        ),
        args![pec_id, recipient, state_str(state)],
    )?;
    Ok(n > 0)
}

/// See [`crate::store::Store::claim_timeouts`]. On PostgreSQL the due rows are locked
/// `FOR UPDATE SKIP LOCKED`: two nodes claiming at once get disjoint rows, and the
/// conditional update re-checks each.
pub fn claim_timeouts(c: &dyn Conn, claim: &TimeoutClaim) -> Result<Vec<DueNotice>, StoreError> {
    let (claimed, id, states) = timeout_columns(claim.which);
    let seq = c.dialect().seq();
    let lock = c.dialect().lock("FOR UPDATE OF t SKIP LOCKED");
    // Only envelopes whose acceptance was emitted: the milter writes the tracking rows
    // before Postfix has queued anything (spec §5.4: the timers start at dispatch).
    let rows = all(
        c,
        "read due notices",
        &format!(
            "SELECT t.{seq}, t.pec_id, t.recipient, t.sent_at, p.{seq}, p.queue_id,
                    p.provider, p.cert
             FROM tracking t JOIN pending_acceptance p ON p.pec_id = t.pec_id
             WHERE p.state = 'emitted' AND t.state IN ({states}) AND t.sent_at <= $1
               AND t.{id} IS NULL AND (t.{claimed} IS NULL OR t.{claimed} < $2)
             ORDER BY t.sent_at, t.{seq} LIMIT $3 {lock}"
        ),
        args![
            claim.sent_up_to.unix(),
            claim.stale_before.unix(),
            to_i64(claim.limit)
        ],
    )?;
    let update = format!(
        "UPDATE tracking SET {claimed} = $2
         WHERE {seq} = $1 AND {id} IS NULL AND ({claimed} IS NULL OR {claimed} < $3)"
    );
    let mut due = Vec::with_capacity(rows.len());
    for r in rows {
        let (row, pec_id, recipient): (i64, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let cert = decode_cert(r.get(4)?, &r.get::<String>(7)?)?;
        let n = exec(
            c,
            &format!("claim notice for \"{recipient}\" of \"{pec_id}\""),
            &update,
            args![row, claim.now.unix(), claim.stale_before.unix()],
        )?;
        if n == 1 {
            due.push(DueNotice {
                which: claim.which,
                pec_id,
                recipient,
                sent_at: Instant::from_unix(r.get(3)?),
                claimed_at: claim.now,
                cert,
                queue_id: r.get(5)?,
                provider: r.get(6)?,
            });
        }
    }
    Ok(due)
}

/// See [`crate::store::Store::claim_log_request`]. Two claims for one owner at once take
/// turns (PostgreSQL: an advisory lock on the owner; SQLite: the write transaction), so
/// that both cannot pass the count.
pub fn claim_log_request(
    c: &dyn Conn,
    request: &LogRequest,
    limit: u32,
    since: Instant,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let owner = request.owner.to_lowercase();
    if c.dialect() == Dialect::Postgres {
        exec(
            c,
            "lock the owner's log requests",
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            args![&owner],
        )?;
    }
    let recent: i64 = one(
        c,
        "count recent log requests",
        "SELECT count(*) FROM log_requests WHERE owner = $1 AND at >= $2",
        args![&owner, since.unix()],
    )?
    .get(0)?;
    let mut head = lock_head(c)?;
    if recent >= i64::from(limit) {
        append(c, &mut head, &rate_limited(event, recent, limit, since))?;
        return Ok(false);
    }
    let (from_at, to_at, problem) = period_columns(&request.period);
    exec(
        c,
        &format!("record log request \"{}\"", request.id),
        "INSERT INTO log_requests (id, owner, address, at, from_at, to_at, problem, subject,
                                   queue_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        args![
            &request.id,
            &owner,
            &request.address,
            request.at.unix(),
            from_at,
            to_at,
            &problem,
            &request.subject,
            &request.queue_id,
        ],
    )?;
    let mut accepted = event.clone();
    accepted.outcome = "accepted".into();
    append(c, &mut head, &accepted)?;
    Ok(true)
}

/// See [`crate::store::Store::log_request`].
pub fn log_request(c: &dyn Conn, id: &str) -> Result<Option<(LogRequest, bool)>, StoreError> {
    let Some(r) = opt(
        c,
        &format!("read log request \"{id}\""),
        "SELECT owner, address, at, from_at, to_at, problem, subject, queue_id, reply_id
         FROM log_requests WHERE id = $1",
        args![id],
    )?
    else {
        return Ok(None);
    };
    let period = decode_period(id, (r.get(3)?, r.get(4)?, r.get(5)?))?;
    let reply_id: Option<String> = r.get(8)?;
    Ok(Some((
        LogRequest {
            id: id.to_string(),
            owner: r.get(0)?,
            address: r.get(1)?,
            at: Instant::from_unix(r.get(2)?),
            period,
            subject: r.get(6)?,
            queue_id: r.get(7)?,
        },
        reply_id.is_some(),
    )))
}

/// Closes the log request `event.pec_id` with the reply `event.related_ids[0]` at
/// `event.at` and logs `event`; false, and nothing written, when it was answered already.
/// The caller holds the chain head.
pub fn request_answered(
    c: &dyn Conn,
    head: &mut Head,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let reply_id = event.related_ids.first().cloned().unwrap_or_default();
    let n = exec(
        c,
        &format!("close log request \"{}\"", event.pec_id),
        "UPDATE log_requests SET reply_id = $2, replied_at = $3
         WHERE id = $1 AND reply_id IS NULL",
        args![&event.pec_id, &reply_id, event.at.unix()],
    )?;
    if n == 0 {
        return Ok(false);
    }
    append(c, head, event)?;
    Ok(true)
}
