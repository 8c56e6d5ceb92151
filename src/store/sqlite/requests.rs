// SPDX-License-Identifier: GPL-3.0-or-later
//! Owner self-service requests on the SQLite store (table `log_requests`, migration 7): the
//! access point's rate-limited claim, the after-queue lookup and the close. Each event is
//! appended to the legal log in the transaction that decides it.

use rusqlite::{params, Connection, OptionalExtension};

use super::{db, insert_event};
use crate::message::time::Instant;
use crate::store::codec::{decode_period, period_columns};
use crate::store::outbox::rate_limited;
use crate::store::{LogEvent, LogRequest, StoreError};

/// See [`crate::store::Store::claim_log_request`]; `tx` is an immediate transaction, so two
/// concurrent claims of one owner cannot both pass the count.
pub(super) fn claim(
    tx: &Connection,
    request: &LogRequest,
    limit: u32,
    since: Instant,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    let owner = request.owner.to_lowercase();
    let recent: i64 = tx
        .query_row(
            "SELECT count(*) FROM log_requests WHERE owner = ?1 AND at >= ?2",
            params![owner, since.unix()],
            |r| r.get(0),
        )
        .map_err(db("count recent log requests"))?;
    if recent >= i64::from(limit) {
        insert_event(tx, &rate_limited(event, recent, limit, since))?;
        return Ok(false);
    }
    let (from_at, to_at, problem) = period_columns(&request.period);
    tx.execute(
        "INSERT INTO log_requests (id, owner, address, at, from_at, to_at, problem, subject,
                                   queue_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            request.id,
            owner,
            request.address,
            request.at.unix(),
            from_at,
            to_at,
            problem,
            request.subject,
            request.queue_id,
        ],
    )
    .map_err(db(&format!("record log request \"{}\"", request.id)))?;
    let mut accepted = event.clone();
    accepted.outcome = "accepted".into();
    insert_event(tx, &accepted)?;
    Ok(true)
}

/// See [`crate::store::Store::log_request`].
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<(LogRequest, bool)>, StoreError> {
    type Row = (
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<String>,
        String,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = conn
        .query_row(
            "SELECT owner, address, at, from_at, to_at, problem, subject, queue_id, reply_id
             FROM log_requests WHERE id = ?1",
            params![id],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ))
            },
        )
        .optional()
        .map_err(db(&format!("read log request \"{id}\"")))?;
    let Some((owner, address, at, from_at, to_at, problem, subject, queue_id, reply_id)) = row
    else {
        return Ok(None);
    };
    let period = decode_period(id, (from_at, to_at, problem))?;
    Ok(Some((
        LogRequest {
            id: id.to_string(),
            owner,
            address,
            at: Instant::from_unix(at),
            period,
            subject,
            queue_id,
        },
        reply_id.is_some(),
    )))
}

/// See [`crate::store::Store::log_request_answered`].
pub(super) fn answered(tx: &Connection, event: &LogEvent) -> Result<bool, StoreError> {
    let reply_id = event.related_ids.first().cloned().unwrap_or_default();
    let n = tx
        .execute(
            "UPDATE log_requests SET reply_id = ?2, replied_at = ?3
             WHERE id = ?1 AND reply_id IS NULL",
            params![event.pec_id, reply_id, event.at.unix()],
        )
        .map_err(db(&format!("close log request \"{}\"", event.pec_id)))?;
    if n == 0 {
        return Ok(false);
    }
    insert_event(tx, event)?;
    Ok(true)
}
