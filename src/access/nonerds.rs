// SPDX-License-Identifier: GPL-3.0-or-later
//! A REM dispatch relayed to ordinary addresses, outside any ERDS (issue 20; EN 319 532-4
//! events F.1 RelayToNonERDS and F.2 RelayToNonERDSFailure).
//!
//! The access point decides once which recipients are ordinary addresses
//! ([`super::rem::RemAccess::route`], [`RecipientProtocol::NonErds`]) and records it with
//! the acceptance. The dispatch goes to them as it is (Postfix delivers it like any mail);
//! the REM receipts follow from our own records:
//!
//! * [`after_queue`]: once our dispatch is queued (the after-queue filter sees it), one
//!   RelayToNonERDS evidence (RF01) about all its ordinary addresses
//!   (`RelayEvidenceRefersTo`), in a REM receipt to the sender, once (outbox key
//!   [`relay_to_non_erds_key`]). The SubmissionAcceptance receipt of the same dispatch is
//!   emitted just before it ([`super::acceptance::after_queue`]). The dispatch of a split
//!   submission does not pass the filter: its RelayToNonERDS receipt is staged with it, in
//!   the same transaction (`relay_receipt`, `AccessPoint::split_accept`), under
//!   the same key.
//! * [`judge`] and [`notify`]: a delivery status notification (RFC 3464) that comes back to
//!   the sender for one of those addresses (Postfix's own bounce, handed to the delivery
//!   point; a remote MTA's, through the reception point) is read with [`crate::bounce`];
//!   the returned message must be our dispatch (`REM-MessageType: dispatch` and the
//!   Message-ID of one of our submissions), every local recipient its sender, and a failed
//!   recipient one of its ordinary addresses. Each such recipient gets one
//!   RelayToNonERDSFailure evidence in a REM receipt to the sender (outbox key
//!   [`relay_to_non_erds_failure_key`]): RF02 (external system unreachable) for a routing
//!   or network status (`x.4.x`: host not found, connection refused or timed out until the
//!   queue lifetime ran out), RF03 (rejected by the external system) for any other. The
//!   report is then consumed, unless it also names failures that are not ordinary
//!   addresses of that dispatch.
//!
//! Every evidence is built from the SubmissionAcceptance evidence we issued for the
//! dispatch (read back from the dispatch we queued, or from the store for a bounce),
//! signed and stamped ([`crate::rem::issue::issue_relay`]); a TSA failure fails the step
//! temporarily (the filter's or LMTP's 4xx), nothing staged.

use tracing::{info, warn};

use super::rem::{outbound, read_own_dispatch, reason};
use crate::bounce::{self, Failure};
use crate::config::RemSettings;
use crate::issuing::{blocking_borrowed, Emitted, IssueError, Issuing};
use crate::message::ids::unbracketed;
use crate::message::kind::RecipientType;
use crate::message::time::Instant;
use crate::rem::codes::Event;
use crate::rem::compose;
use crate::rem::evidence::Evidence;
use crate::rem::issue::{self, Issued, RelayInput};
use crate::rem::message::DigestAlgorithm;
use crate::smtp::Transaction;
use crate::store::outbox::{relay_to_non_erds_failure_key, relay_to_non_erds_key};
use crate::store::{Effect, EvidenceDirection, Outbound, RecipientProtocol};

fn task(e: impl std::fmt::Display) -> IssueError {
    IssueError::Task(e.to_string())
}

/// The ordinary addresses of submission `pec_id`, as recorded at acceptance.
async fn non_erds(kit: &Issuing, pec_id: &str) -> Result<Vec<String>, IssueError> {
    let id = pec_id.to_string();
    let protocols = kit.store(move |s| s.recipient_protocols(&id)).await?;
    Ok(protocols
        .into_iter()
        .filter(|(_, p)| *p == RecipientProtocol::NonErds)
        .map(|(r, _)| r)
        .collect())
}

/// 1-based positions of `addresses` among the recipients `about` names.
fn positions(about: &Evidence, addresses: &[String]) -> Vec<u32> {
    about
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.identifier
                .as_ref()
                .is_some_and(|i| addresses.iter().any(|a| a.eq_ignore_ascii_case(&i.value)))
        })
        .filter_map(|(i, _)| u32::try_from(i + 1).ok())
        .collect()
}

/// The recipients of `about`, for the legal log (outside PEC).
fn log_recipients(about: &Evidence) -> Vec<(String, RecipientType)> {
    about
        .recipients
        .iter()
        .filter_map(|r| r.identifier.as_ref())
        .map(|i| (i.value.clone(), RecipientType::Esterno))
        .collect()
}

fn relay_input(
    settings: &RemSettings,
    about: Evidence,
    event: Event,
    code: &str,
    refers_to: Vec<u32>,
    at: Instant,
) -> Result<RelayInput, IssueError> {
    Ok(RelayInput {
        about,
        event,
        reason: reason(code).map_err(IssueError::Task)?,
        refers_to,
        event_time: at,
        policies: settings.policies.clone(),
        provider: settings.provider_name.clone(),
    })
}

/// Issues the relay evidence of `input` and emits it in a REM receipt about `sub` to its
/// sender under `key`, stored with it. `None`: emitted before (nothing new).
#[allow(clippy::too_many_arguments)]
async fn emit(
    kit: &Issuing,
    settings: &RemSettings,
    key: String,
    sub: &compose::Submission,
    input: RelayInput,
    code: &'static str,
    queue_id: Option<&str>,
    at: Instant,
) -> Result<Option<String>, IssueError> {
    // A retry finds the receipt staged: no evidence is built (nor time stamp asked for).
    let k = key.clone();
    if let Some(o) = kit.store(move |s| s.outbound(&k)).await? {
        info!(key = %key, receipt = %o.message_id, "rem: relay to non-erds receipt emitted before: none sent");
        return Ok(None);
    }
    let (out, effect) = staged(kit, settings, key, sub, input, code, queue_id, at).await?;
    match kit.emit_outbound(out, effect).await? {
        Emitted::New(id) => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// The relay evidence of `input` issued (signed, stamped: a TSA failure is an error,
/// nothing built) and its REM receipt about `sub` to its sender, as the outbox row `key`
/// and the effect that stores the evidence with it.
#[allow(clippy::too_many_arguments)]
async fn staged(
    kit: &Issuing,
    settings: &RemSettings,
    key: String,
    sub: &compose::Submission,
    input: RelayInput,
    code: &'static str,
    queue_id: Option<&str>,
    at: Instant,
) -> Result<(Outbound, Effect), IssueError> {
    let recipients = log_recipients(&input.about);
    let issued: Issued = issue::issue_relay(kit, settings.evidence_tsa.as_ref(), input)
        .await
        .map_err(task)?;
    let receipt = crate::rem::issue::compose_receipt(
        kit,
        &settings.provider_name,
        sub,
        &issued,
        code,
        crate::rem::issue::Regarding::default(),
        at,
    )
    .await
    .map_err(IssueError::Task)?;
    let stored = issued.stored(&sub.sender, recipients, queue_id);
    let effect = Effect::WithEvidences {
        effect: Box::new(Effect::Log(Vec::new())),
        evidences: vec![stored],
    };
    Ok((outbound(key, receipt, at), effect))
}

/// The RelayToNonERDS REM receipt (RF01) of a dispatch `pec_id` about `sub` whose
/// SubmissionAcceptance evidence is `about`, to its ordinary `addresses`, built to be
/// staged with the dispatch itself (a split submission,
/// [`super::AccessPoint::split_accept`]): the outbox row (key [`relay_to_non_erds_key`],
/// the one [`after_queue`] would use) and the effect that stores its evidence. The
/// evidence is issued here, before any transaction: a TSA failure is an error and nothing
/// is built.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn relay_receipt(
    kit: &Issuing,
    settings: &RemSettings,
    pec_id: &str,
    sub: &compose::Submission,
    about: Evidence,
    addresses: &[String],
    queue_id: Option<&str>,
    at: Instant,
) -> Result<(Outbound, Effect), IssueError> {
    let refers_to = positions(&about, addresses);
    let input = relay_input(
        settings,
        about,
        Event::RelayToNonERDS,
        "RF01",
        refers_to,
        at,
    )?;
    staged(
        kit,
        settings,
        relay_to_non_erds_key(pec_id),
        sub,
        input,
        "RF01",
        queue_id,
        at,
    )
    .await
}

/// After queue: the RelayToNonERDS REM receipt of our dispatch `tx` when it has ordinary
/// addresses, once (see the module documentation). Returns the receipt's Message-ID when
/// one was sent now; `None` for anything else (not our dispatch, no ordinary address, sent
/// before).
pub async fn after_queue(
    kit: &Issuing,
    settings: &RemSettings,
    tx: &Transaction,
) -> Result<Option<String>, IssueError> {
    if !crate::rem::message::is_rem(&tx.data) {
        return Ok(None);
    }
    let Some(pec_id) = crate::message::ids::envelope_id(&tx.data) else {
        return Ok(None);
    };
    let addresses = non_erds(kit, &pec_id).await?;
    if addresses.is_empty() {
        return Ok(None);
    }
    let (sub, sa) = match read_own_dispatch(kit, tx, &pec_id).await? {
        Ok(r) => r,
        Err(e) => {
            // Recorded as ours with ordinary addresses, but not our dispatch as the milter
            // wrote it: something is wrong here; retried until looked at.
            warn!(msgid = %pec_id, "after queue: our rem dispatch cannot be read back: {e}");
            return Err(IssueError::Task(format!(
                "rem dispatch \"{pec_id}\" cannot be read back: {e}"
            )));
        }
    };
    let at = kit.clock.now();
    let refers_to = positions(&sa.model, &addresses);
    let input = relay_input(
        settings,
        sa.model,
        Event::RelayToNonERDS,
        "RF01",
        refers_to,
        at,
    )?;
    let key = relay_to_non_erds_key(&pec_id);
    let sent = emit(
        kit,
        settings,
        key,
        &sub,
        input,
        "RF01",
        tx.queue_id.as_deref(),
        at,
    )
    .await?;
    if let Some(id) = &sent {
        info!(
            queue_id = tx.queue_id.as_deref().unwrap_or("-"),
            msgid = %pec_id,
            receipt = %id,
            to = ?addresses,
            "after queue: rem dispatch relayed to ordinary addresses: relay to non-erds receipt injected"
        );
    }
    Ok(sent)
}

/// A bounce of our dispatch relayed to ordinary addresses, judged against our records.
#[derive(Debug, Clone)]
pub struct RelayBounce {
    /// The dispatch (our submission's identifier).
    pub pec_id: String,
    /// Its sender, our mailbox.
    pub sender: String,
    /// Our SubmissionAcceptance evidence of the dispatch.
    pub about: Evidence,
    pub reporting_mta: Option<String>,
    /// The failed recipients that are ordinary addresses of the dispatch.
    pub failed: Vec<Failure>,
    /// The report also names failures that are not.
    pub other: bool,
}

/// The RelayToNonERDSFailure reason of a failed delivery's status: RF02 for a routing or
/// network status (`x.4.x`), RF03 for any other.
pub fn failure_code(f: &Failure) -> &'static str {
    match f.status.as_deref().map(|s| s.split('.').nth(1)) {
        Some(Some("4")) => "RF02",
        _ => "RF03",
    }
}

/// The bounce of our dispatch to ordinary addresses in a transaction from `mail_from` to
/// our mailboxes `local` carrying `data`, when it is one (see the module documentation);
/// `None`: something else.
pub async fn judge(
    kit: &Issuing,
    mail_from: &str,
    local: &[String],
    data: &[u8],
) -> Result<Option<RelayBounce>, IssueError> {
    if !mail_from.is_empty() || local.is_empty() {
        return Ok(None);
    }
    let Some(report) = blocking_borrowed(|| bounce::parse_report(data)) else {
        return Ok(None);
    };
    let dispatch = bounce::returned_field(&report.returned, "REM-MessageType")
        .is_some_and(|t| t.eq_ignore_ascii_case(crate::rem::message::MESSAGE_TYPE_DISPATCH));
    let Some(pec_id) = bounce::returned_field(&report.returned, "Message-ID")
        .map(|id| unbracketed(&id).trim().to_string())
        .filter(|id| dispatch && !id.is_empty())
    else {
        return Ok(None);
    };
    let addresses = non_erds(kit, &pec_id).await?;
    if addresses.is_empty() {
        return Ok(None);
    }
    let id = pec_id.clone();
    let Some(cert) = kit.store(move |s| s.envelope_certification(&id)).await? else {
        return Ok(None);
    };
    if !local
        .iter()
        .all(|r| r.trim().eq_ignore_ascii_case(cert.mittente.trim()))
    {
        return Ok(None);
    }
    let (failed, other): (Vec<Failure>, Vec<Failure>) = report.failed.into_iter().partition(|f| {
        addresses
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&f.recipient))
    });
    if failed.is_empty() {
        return Ok(None);
    }
    // Our SubmissionAcceptance of the dispatch: what every evidence about it copies.
    let id = pec_id.clone();
    let stored = kit.store(move |s| s.evidences_for(&id)).await?;
    let sa = Event::SubmissionAcceptance.uri();
    let Some(row) = stored
        .iter()
        .find(|e| e.evidence.direction == EvidenceDirection::Issued && e.evidence.event == sa)
    else {
        warn!(msgid = %pec_id, "bounce of our rem dispatch: its submission acceptance is not stored: ordinary mail");
        return Ok(None);
    };
    let about = Evidence::parse(&row.evidence.xml).map_err(task)?;
    Ok(Some(RelayBounce {
        pec_id,
        sender: cert.mittente,
        about,
        reporting_mta: report.reporting_mta,
        failed,
        other: !other.is_empty(),
    }))
}

/// The submission data of the receipts about `b`, from our evidence of the dispatch.
fn submission(settings: &RemSettings, b: &RelayBounce) -> compose::Submission {
    let a = &b.about;
    let recipients: Vec<String> = a
        .recipients
        .iter()
        .filter_map(|r| r.identifier.as_ref().map(|i| i.value.clone()))
        .collect();
    let content = a.user_content.as_ref();
    compose::Submission {
        message_id: b.pec_id.clone(),
        ua_message_identifier: content.and_then(|c| c.app_layer_identifier.clone()),
        sender: b.sender.clone(),
        from: format!("<{}>", b.sender),
        to: Some(recipients.join(", ")),
        cc: None,
        in_reply_to: None,
        recipients,
        subject: a
            .general_info
            .as_ref()
            .and_then(|g| g.subject.clone())
            .unwrap_or_default(),
        policies: settings.policies.clone(),
        digest: DigestAlgorithm::Sha256,
        digest_value: content
            .and_then(|c| c.parts.first())
            .and_then(|p| p.digest_value.clone())
            .unwrap_or_default(),
    }
}

/// One RelayToNonERDSFailure REM receipt per failed ordinary address of `b`, to the
/// sender, once each. `client` (who handed the report over) and `queue_id` go to the log.
/// Returns the Message-IDs of the receipts sent now.
pub async fn notify(
    kit: &Issuing,
    settings: &RemSettings,
    b: &RelayBounce,
    client: Option<&str>,
    queue_id: Option<&str>,
    now: Instant,
) -> Result<Vec<String>, IssueError> {
    let sub = submission(settings, b);
    let mut sent = Vec::new();
    for f in &b.failed {
        let code = failure_code(f);
        let refers_to = positions(&b.about, std::slice::from_ref(&f.recipient));
        let input = relay_input(
            settings,
            b.about.clone(),
            Event::RelayToNonERDSFailure,
            code,
            refers_to,
            now,
        )?;
        let key = relay_to_non_erds_failure_key(&b.pec_id, &f.recipient);
        match emit(kit, settings, key, &sub, input, code, queue_id, now).await? {
            Some(id) => {
                warn!(queue_id = queue_id.unwrap_or("-"), msgid = %b.pec_id, receipt = %id,
                    "bounce: our rem dispatch to the ordinary address {} failed ({code}, {}; report of {} from {}): relay to non-erds failure sent to {}",
                    f.recipient, f.remote_reply(), b.reporting_mta.as_deref().unwrap_or("-"),
                    client.unwrap_or("-"), b.sender);
                sent.push(id);
            }
            None => info!(queue_id = queue_id.unwrap_or("-"), msgid = %b.pec_id,
                "bounce: our rem dispatch to {} failed, answered before: nothing sent", f.recipient),
        }
    }
    Ok(sent)
}

/// What [`on_bounce`] did with a bounce of our dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The dispatch.
    pub pec_id: String,
    /// The RelayToNonERDSFailure receipts sent now.
    pub receipts: Vec<String>,
    /// The report is consumed: every failure it names was answered (else it goes on as
    /// ordinary mail too).
    pub consumed: bool,
}

/// The hook of the reception point and the delivery point: [`judge`] and [`notify`] on a
/// transaction (reverse path, data, queue id) to our mailboxes `local`, `client` handing it
/// over. `None`: not a bounce of
/// our dispatch to ordinary addresses, carry on.
pub async fn on_bounce(
    kit: &Issuing,
    settings: &RemSettings,
    (mail_from, data, queue_id): (&str, &[u8], Option<&str>),
    local: &[String],
    client: Option<&str>,
) -> Result<Option<Handled>, IssueError> {
    let Some(b) = judge(kit, mail_from, local, data).await? else {
        return Ok(None);
    };
    let now = kit.clock.now();
    let receipts = notify(kit, settings, &b, client, queue_id, now).await?;
    Ok(Some(Handled {
        pec_id: b.pec_id,
        receipts,
        consumed: !b.other,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: Option<&str>) -> Failure {
        Failure {
            recipient: "x@example.com".into(),
            status: status.map(str::to_string),
            remote_mta: None,
            diagnostic: None,
        }
    }

    #[test]
    fn a_network_status_is_unreachable_any_other_a_rejection() {
        assert_eq!(failure_code(&failure(Some("5.4.4"))), "RF02");
        assert_eq!(failure_code(&failure(Some("4.4.1"))), "RF02");
        assert_eq!(failure_code(&failure(Some("5.4.7"))), "RF02");
        assert_eq!(failure_code(&failure(Some("5.1.1"))), "RF03");
        assert_eq!(failure_code(&failure(Some("5.7.1"))), "RF03");
        assert_eq!(failure_code(&failure(None)), "RF03");
    }
}
