// SPDX-License-Identifier: GPL-3.0-or-later
//! The ricevuta di accettazione (spec §3.2), after queue: the access point's receipt,
//! emitted by the after-queue filter ([`crate::reception::AfterQueue`]) the first time it
//! sees one of our transport envelopes, because a milter's accept does not prove that
//! Postfix queued the message (design §1). It is built with the pending record's
//! certification data and **its** instant, and staged with the claim that closes the
//! pending acceptance and logs the transport envelope and the acceptance
//! ([`crate::store::Effect::Acceptance`]): a retry, or a concurrent delivery of the same
//! envelope, builds nothing.

use tracing::{info, warn};

use crate::issuing::{Emitted, IssueError, Issuing};
use crate::smtp::Transaction;
use crate::store::outbox::acceptance_key;
use crate::store::Effect;

/// The acceptance receipt of our own envelope `msgid` seen queued in `tx`, once: `None`
/// when `msgid` has no pending acceptance (not ours, or emitted already).
/// `local` tells our own recipients (a REM dispatch to them is not relayed: their wait is
/// the consignment one).
pub async fn after_queue(
    kit: &Issuing,
    tx: &Transaction,
    msgid: Option<&str>,
    local: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<(String, String)>, IssueError> {
    let pending = match msgid {
        Some(id) => {
            let id = id.to_string();
            kit.store(move |s| s.pending_acceptance(&id)).await?
        }
        None => None,
    };
    let Some(accepted) = pending else {
        return Ok(None);
    };
    if crate::rem::message::is_rem(&tx.data) {
        return super::rem::after_queue(kit, tx, accepted, local).await;
    }

    let pec_id = accepted.pec_id.clone();
    let receipt = kit
        .build(move |b| b.acceptance(&accepted.cert, accepted.at))
        .await?;
    let queue_id = tx.queue_id.as_deref().unwrap_or("-");
    let at = kit.clock.now();
    let receipt_id = receipt.message_id.clone();
    let effect = Effect::Acceptance {
        pec_id: pec_id.clone(),
        receipt_id: receipt_id.clone(),
        at,
    };
    match kit
        .emit(acceptance_key(&pec_id), receipt, effect, at)
        .await?
    {
        Emitted::New(_) => info!(
            queue_id,
            msgid = %pec_id,
            receipt = %receipt_id,
            "after queue: acceptance receipt injected"
        ),
        other => {
            warn!(
                queue_id,
                msgid = %pec_id,
                receipt = other.message_id().unwrap_or("-"),
                "after queue: acceptance already emitted by a concurrent delivery: none sent"
            );
            return Ok(None);
        }
    }
    Ok(Some((pec_id, receipt_id)))
}
