// SPDX-License-Identifier: GPL-3.0-or-later
//! The REM records on both backends (schema version 16): the ERDS evidences, kept beside
//! their legal-log records, and the sender identities of the mailboxes with their audit
//! rows; the REM waits of the timers (version 18). Called by the [`crate::store::Store`] implementation in [`super::store`].

use super::legal::{append, lock_head, Head};
use super::{all, args, exec, exec_unique, opt, to_i64, Conn, Row};
use crate::message::time::Instant;
use crate::store::rem::{attributes_json, decode_attributes};
use crate::store::{
    EventKind, Evidence, EvidenceDirection, IdentityChange, LogEvent, RemDue, RemWait,
    RemWaitClaim, RemWaitKind, RemWaitState, SenderIdentity, StoreError, StoredEvidence,
};

/// The `rem_evidences` columns [`evidence_row`] reads.
const EVIDENCE_COLUMNS: &str =
    "evidence_id, message_id, event, reason, recipient, issuer, at, direction, xml, sha256, \
     event_id";

fn evidence_row(r: &Row) -> Result<StoredEvidence, StoreError> {
    let id: String = r.get(0)?;
    let direction: String = r.get(7)?;
    let evidence = Evidence {
        message_id: r.get(1)?,
        event: r.get(2)?,
        reason: r.get(3)?,
        recipient: r.get(4)?,
        issuer: r.get(5)?,
        at: Instant::from_unix(r.get(6)?),
        direction: EvidenceDirection::parse(&direction).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "evidence \"{id}\": unknown direction \"{direction}\""
            ))
        })?,
        xml: r.get(8)?,
        id,
    };
    let sha256: Vec<u8> = r.get(9)?;
    if sha256 != evidence.sha256() {
        return Err(StoreError::Corrupt(format!(
            "evidence \"{}\": its bytes do not match the SHA-256 stored with them",
            evidence.id
        )));
    }
    Ok(StoredEvidence {
        evidence,
        sha256,
        event_id: r.get(10)?,
    })
}

/// [`crate::store::Store::record_evidence`] in the caller's transaction. The chain head
/// is taken first: on PostgreSQL it serialises this with every other append, so two nodes
/// recording the same evidence at once record it once.
pub fn record(c: &dyn Conn, evidence: &Evidence, event: &LogEvent) -> Result<bool, StoreError> {
    let mut head = lock_head(c)?;
    let recorded = record_in(c, &mut head, evidence, event)?;
    Ok(recorded)
}

/// [`record`] for a caller that holds the chain head (and sets it when done): the outbox
/// staging of a REM message ([`crate::store::Effect::WithEvidences`]), an acceptance with
/// its evidence.
pub fn record_in(
    c: &dyn Conn,
    head: &mut Head,
    evidence: &Evidence,
    event: &LogEvent,
) -> Result<bool, StoreError> {
    if event.kind != EventKind::RemEvidence(evidence.direction) {
        return Err(StoreError::Database(format!(
            "evidence \"{}\": its log record is a {} record, not a {} one",
            evidence.id,
            event.kind.label(),
            EventKind::RemEvidence(evidence.direction).label()
        )));
    }
    let sha256 = evidence.sha256();
    let what = format!("record evidence \"{}\"", evidence.id);
    if let Some(r) = opt(
        c,
        &what,
        "SELECT sha256, xml FROM rem_evidences WHERE evidence_id = $1",
        args![&evidence.id],
    )? {
        let (stored, xml): (Vec<u8>, Vec<u8>) = (r.get(0)?, r.get(1)?);
        return if stored == sha256 && xml == evidence.xml {
            Ok(false)
        } else {
            Err(StoreError::EvidenceConflict(evidence.id.clone()))
        };
    }
    append(c, head, event)?;
    // Beside its record: the head is the record just appended.
    exec_unique(
        c,
        &what,
        &format!(
            "INSERT INTO rem_evidences ({EVIDENCE_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ),
        args![
            &evidence.id,
            &evidence.message_id,
            &evidence.event,
            &evidence.reason,
            &evidence.recipient,
            &evidence.issuer,
            evidence.at.unix(),
            evidence.direction.as_str(),
            &evidence.xml,
            &sha256[..],
            head.0,
        ],
        || format!("evidence \"{}\" is already recorded", evidence.id),
    )?;
    Ok(true)
}

/// The evidence `id`.
pub fn get(c: &dyn Conn, id: &str) -> Result<Option<StoredEvidence>, StoreError> {
    opt(
        c,
        &format!("read evidence \"{id}\""),
        &format!("SELECT {EVIDENCE_COLUMNS} FROM rem_evidences WHERE evidence_id = $1"),
        args![id],
    )?
    .as_ref()
    .map(evidence_row)
    .transpose()
}

/// The evidences about `message_id`, by record id.
pub fn for_message(c: &dyn Conn, message_id: &str) -> Result<Vec<StoredEvidence>, StoreError> {
    all(
        c,
        &format!("read the evidences of \"{message_id}\""),
        &format!(
            "SELECT {EVIDENCE_COLUMNS} FROM rem_evidences WHERE message_id = $1
             ORDER BY event_id"
        ),
        args![message_id],
    )?
    .iter()
    .map(evidence_row)
    .collect()
}

/// The audit row of one identity change.
fn audit(
    c: &dyn Conn,
    mailbox: &str,
    action: &str,
    at: Instant,
    by: &str,
    value: Option<&str>,
) -> Result<(), StoreError> {
    exec(
        c,
        &format!("audit the sender identity of \"{mailbox}\""),
        "INSERT INTO sender_identity_changes (mailbox, action, at, changed_by, value)
         VALUES ($1, $2, $3, $4, $5)",
        args![mailbox, action, at.unix(), by, value],
    )
    .map(drop)
}

/// [`crate::store::Store::set_sender_identity`] in the caller's transaction.
pub fn set_identity(
    c: &dyn Conn,
    mailbox: &str,
    identity: &SenderIdentity,
) -> Result<(), StoreError> {
    let mailbox = mailbox.to_ascii_lowercase();
    let attributes = attributes_json(&identity.attributes)?;
    exec(
        c,
        &format!("set the sender identity of \"{mailbox}\""),
        "INSERT INTO sender_identities (mailbox, attributes, level, policy, proofing, set_at,
                                        set_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (mailbox) DO UPDATE SET attributes = $2, level = $3, policy = $4,
             proofing = $5, set_at = $6, set_by = $7",
        args![
            &mailbox,
            &attributes,
            &identity.level,
            &identity.policy,
            &identity.proofing,
            identity.set_at.unix(),
            &identity.set_by,
        ],
    )?;
    let value = serde_json::json!({
        "attributes": identity.attributes,
        "level": identity.level,
        "policy": identity.policy,
        "proofing": identity.proofing,
    })
    .to_string();
    audit(
        c,
        &mailbox,
        "set",
        identity.set_at,
        &identity.set_by,
        Some(&value),
    )
}

/// The sender identity of `mailbox`.
pub fn identity(c: &dyn Conn, mailbox: &str) -> Result<Option<SenderIdentity>, StoreError> {
    let mailbox = mailbox.to_ascii_lowercase();
    opt(
        c,
        &format!("read the sender identity of \"{mailbox}\""),
        "SELECT attributes, level, policy, proofing, set_at, set_by FROM sender_identities
         WHERE mailbox = $1",
        args![&mailbox],
    )?
    .map(|r| {
        Ok(SenderIdentity {
            attributes: decode_attributes(&mailbox, &r.get::<String>(0)?)?,
            level: r.get(1)?,
            policy: r.get(2)?,
            proofing: r.get(3)?,
            set_at: Instant::from_unix(r.get(4)?),
            set_by: r.get(5)?,
        })
    })
    .transpose()
}

/// [`crate::store::Store::clear_sender_identity`] in the caller's transaction.
pub fn clear_identity(
    c: &dyn Conn,
    mailbox: &str,
    at: Instant,
    by: &str,
) -> Result<bool, StoreError> {
    let mailbox = mailbox.to_ascii_lowercase();
    let n = exec(
        c,
        &format!("clear the sender identity of \"{mailbox}\""),
        "DELETE FROM sender_identities WHERE mailbox = $1",
        args![&mailbox],
    )?;
    if n == 0 {
        return Ok(false);
    }
    audit(c, &mailbox, "clear", at, by, None)?;
    Ok(true)
}

/// The audit rows of `mailbox`, oldest first.
pub fn identity_changes(c: &dyn Conn, mailbox: &str) -> Result<Vec<IdentityChange>, StoreError> {
    let mailbox = mailbox.to_ascii_lowercase();
    all(
        c,
        &format!("read the sender identity changes of \"{mailbox}\""),
        "SELECT action, at, changed_by FROM sender_identity_changes WHERE mailbox = $1
         ORDER BY id",
        args![&mailbox],
    )?
    .iter()
    .map(|r| {
        Ok(IdentityChange {
            action: r.get(0)?,
            at: Instant::from_unix(r.get(1)?),
            by: r.get(2)?,
        })
    })
    .collect()
}

/// [`crate::store::Effect::RemWaits`]: begins `waits` (a wait begun already is left as it
/// is), in the caller's transaction.
pub fn start_waits(c: &dyn Conn, waits: &[RemWait]) -> Result<(), StoreError> {
    for w in waits {
        exec(
            c,
            &format!(
                "begin the {} wait of \"{}\" for \"{}\"",
                w.which.as_str(),
                w.message_id,
                w.recipient
            ),
            "INSERT INTO rem_waits (message_id, recipient, which, started_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            args![
                &w.message_id,
                &w.recipient.to_ascii_lowercase(),
                w.which.as_str(),
                w.started_at.unix()
            ],
        )?;
    }
    Ok(())
}

/// [`crate::store::Effect::RemOutcome`] in the caller's transaction: the delivery point's
/// one outcome of (`message_id`, `recipient`), and its consignment wait closed; false when
/// the outcome was decided already.
pub fn outcome(
    c: &dyn Conn,
    message_id: &str,
    recipient: &str,
    kind: &str,
    notice_id: &str,
    at: Instant,
) -> Result<bool, StoreError> {
    if !super::outbox::decide_outcome(c, message_id, recipient, kind, notice_id, at)? {
        return Ok(false);
    }
    exec(
        c,
        &format!("close the consignment wait of \"{message_id}\" for \"{recipient}\""),
        "UPDATE rem_waits SET settled_at = $4, notice_id = $3
         WHERE message_id = $1 AND recipient = $2 AND which = 'consignment'
           AND settled_at IS NULL",
        args![
            message_id,
            &recipient.to_ascii_lowercase(),
            notice_id,
            at.unix()
        ],
    )?;
    Ok(true)
}

/// Closes the open wait `id` at `at`, with the notice that closed it if any; false when
/// it was closed already.
pub fn close_wait(
    c: &dyn Conn,
    id: i64,
    notice_id: Option<&str>,
    at: Instant,
) -> Result<bool, StoreError> {
    let n = exec(
        c,
        &format!("close rem wait {id}"),
        "UPDATE rem_waits SET settled_at = $2, notice_id = $3
         WHERE id = $1 AND settled_at IS NULL",
        args![id, at.unix(), notice_id],
    )?;
    Ok(n == 1)
}

/// [`crate::store::Store::claim_rem_waits`] in the caller's write transaction.
pub fn claim_waits(c: &dyn Conn, claim: &RemWaitClaim) -> Result<Vec<RemDue>, StoreError> {
    let which = claim.which.as_str();
    if claim.which == RemWaitKind::Consignment {
        // Decided at the delivery point (or by an earlier pass): nothing is due.
        exec(
            c,
            "close the consignment waits whose outcome is known",
            "UPDATE rem_waits SET settled_at = $2,
                 notice_id = (SELECT d.notice_id FROM delivery_notices d
                              WHERE d.pec_id = rem_waits.message_id
                                AND d.recipient = rem_waits.recipient)
             WHERE which = 'consignment' AND settled_at IS NULL AND started_at <= $1
               AND EXISTS (SELECT 1 FROM delivery_notices d
                           WHERE d.pec_id = rem_waits.message_id
                             AND d.recipient = rem_waits.recipient)",
            args![claim.started_up_to.unix(), claim.now.unix()],
        )?;
    }
    let lock = c.dialect().lock("FOR UPDATE SKIP LOCKED");
    let rows = all(
        c,
        "read due rem waits",
        &format!(
            "SELECT id, message_id, recipient, started_at FROM rem_waits
             WHERE which = $1 AND settled_at IS NULL AND started_at <= $2
               AND (claimed_at IS NULL OR claimed_at < $3)
             ORDER BY started_at, id LIMIT $4 {lock}"
        ),
        args![
            which,
            claim.started_up_to.unix(),
            claim.stale_before.unix(),
            to_i64(claim.limit)
        ],
    )?;
    let mut due = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = r.get(0)?;
        let n = exec(
            c,
            &format!("claim rem wait {id}"),
            "UPDATE rem_waits SET claimed_at = $2
             WHERE id = $1 AND settled_at IS NULL AND (claimed_at IS NULL OR claimed_at < $3)",
            args![id, claim.now.unix(), claim.stale_before.unix()],
        )?;
        if n == 1 {
            due.push(RemDue {
                id,
                wait: RemWait {
                    which: claim.which,
                    message_id: r.get(1)?,
                    recipient: r.get(2)?,
                    started_at: Instant::from_unix(r.get(3)?),
                },
                claimed_at: claim.now,
            });
        }
    }
    Ok(due)
}

/// [`crate::store::Store::release_rem_wait`] in the caller's transaction.
pub fn release_wait(c: &dyn Conn, due: &RemDue) -> Result<(), StoreError> {
    exec(
        c,
        &format!("release rem wait {}", due.id),
        "UPDATE rem_waits SET claimed_at = NULL
         WHERE id = $1 AND claimed_at = $2 AND settled_at IS NULL",
        args![due.id, due.claimed_at.unix()],
    )
    .map(drop)
}

/// [`crate::store::Store::rem_waits_for`].
pub fn waits_for(c: &dyn Conn, message_id: &str) -> Result<Vec<RemWaitState>, StoreError> {
    all(
        c,
        &format!("read the rem waits of \"{message_id}\""),
        "SELECT which, message_id, recipient, started_at, notice_id, settled_at FROM rem_waits
         WHERE message_id = $1 ORDER BY id",
        args![message_id],
    )?
    .iter()
    .map(|r| {
        let which: String = r.get(0)?;
        Ok(RemWaitState {
            wait: RemWait {
                which: RemWaitKind::parse(&which).ok_or_else(|| {
                    StoreError::Corrupt(format!("rem wait: unknown kind \"{which}\""))
                })?,
                message_id: r.get(1)?,
                recipient: r.get(2)?,
                started_at: Instant::from_unix(r.get(3)?),
            },
            notice_id: r.get(4)?,
            settled_at: r.get::<Option<i64>>(5)?.map(Instant::from_unix),
        })
    })
    .collect()
}
