// SPDX-License-Identifier: GPL-3.0-or-later
//! The delivery point's REM path (issue 20, ETSI EN 319 532-4 C.4.6, R-REMS side): when
//! `[rem] enabled`, a REM dispatch handed over by Postfix goes to Dovecot as every message
//! does ([`super::DeliveryPoint`]: unchanged, once per recipient), and each recipient our
//! records say we took it in for gets its consignment outcome, once:
//!
//! * Dovecot holds it → ContentConsignment (RD01);
//! * Dovecot refuses it for good → ContentConsignmentFailure with the reason of
//!   [`crate::rem::codes::consignment_failure`] (quota RD04, unknown or disabled mailbox
//!   RD21, …), and 250 to Postfix (the evidence stands for the bounce);
//! * Dovecot 4xx or unreachable → 4xx, nothing issued.
//!
//! Who is due an outcome comes from our records only, never from the message's words: the
//! dispatch's evidence (byte for byte) must be one we recorded as a SubmissionAcceptance
//! (received from the peer and judged by the reception point, or issued by us for our own
//! dispatch), the original it carries must match the digest that evidence states, and the
//! recipient must be one we relay-accepted it for (our RelayAcceptance evidence), or, for
//! our own dispatch, one of its recipients. Anything else is delivered without evidence.
//!
//! The outcome is the delivery point's one decision per (message, recipient), the PEC
//! receipt's ([`crate::store::Effect::RemOutcome`], the same claim as a ricevuta di
//! consegna): its evidence (from our records, signed XAdES, stamped B-T before staging,
//! [`crate::rem::issue::issue_consignment`]) goes in a REM receipt straight to the sender's
//! address (as the AgID kit shows), staged once with the evidence, its legal-log record
//! and the recipient's consignment wait closed, in one transaction. A dispatch handed over
//! again finds the outcome decided and issues nothing; a TSA failure is a 4xx for that
//! recipient, nothing recorded (Postfix retries; the mailbox is not written twice,
//! [`super::dedup`]). The consignment wait's timer ([`crate::timers`], RD03) takes the
//! same claim.

use tracing::{error, info, warn};

use super::{without_detail, DeliveryPoint};
use crate::config::RemSettings;
use crate::issuing::{blocking_borrowed, Emitted, IssueError, Issuing};
use crate::message::kind::RecipientType;
use crate::message::time::Instant;
use crate::rem::codes::{consignment_failure, Event, Reason};
use crate::rem::compose::Submission;
use crate::rem::evidence::Evidence;
use crate::rem::issue::{issue_consignment, ConsignmentInput, RemIssueError};
use crate::rem::message::MessageType;
use crate::smtp::lmtp::{Reply, Transaction};
use crate::store::outbox::delivery_key;
use crate::store::{Effect, EvidenceDirection, Outbound, StoredEvidence};

/// What the delivery point needs for REM.
#[derive(Debug, Clone)]
pub struct RemDelivery {
    pub settings: RemSettings,
    /// Our domains (`provider.domains`): a recipient of our own dispatch gets a
    /// consignment evidence only when its mailbox is ours (an ordinary address delivered
    /// through this proxy got RelayToNonERDS: it is no REM mailbox).
    pub domains: Vec<String>,
}

impl RemDelivery {
    fn is_ours(&self, address: &str) -> bool {
        address
            .rsplit_once('@')
            .is_some_and(|(_, d)| self.domains.iter().any(|o| o.eq_ignore_ascii_case(d)))
    }
}

/// The evidence our consignment evidences about one recipient are about, from our records.
#[derive(Debug, Clone)]
pub struct About {
    /// Our RelayAcceptance of a peer's dispatch naming the recipient, or our
    /// SubmissionAcceptance of our own dispatch.
    pub evidence: Evidence,
    /// 1-based position of the recipient among its recipients.
    pub position: u32,
}

impl About {
    /// The recipient's address as the evidence names it (the mailbox, without any
    /// `+detail` of the delivery): the key of its outcome and of its consignment wait.
    pub fn recipient(&self) -> &str {
        self.evidence
            .recipients
            .get((self.position as usize).wrapping_sub(1))
            .and_then(address)
            .unwrap_or_default()
    }
}

fn address(u: &crate::rem::evidence::UserDetails) -> Option<&str> {
    u.identifier.as_ref().map(|i| i.value.as_str())
}

/// The 1-based position of `recipient` (or its mailbox without `+detail`) among `ev`'s.
fn position_in(ev: &Evidence, recipient: &str) -> Option<u32> {
    let bare = without_detail(recipient);
    ev.recipients
        .iter()
        .position(|u| {
            address(u)
                .is_some_and(|a| a.eq_ignore_ascii_case(recipient) || a.eq_ignore_ascii_case(&bare))
        })
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// What our records say `recipient` of REM message `message_id` was taken in for, among
/// `stored` (its evidences): our SubmissionAcceptance naming the recipient (our own
/// dispatch), else our RelayAcceptance referring to it. `None`: not ours to consign.
pub fn about(stored: &[StoredEvidence], recipient: &str) -> Option<About> {
    let ours = |event: Event| {
        stored.iter().filter(move |s| {
            s.evidence.direction == EvidenceDirection::Issued && s.evidence.event == event.uri()
        })
    };
    for s in ours(Event::SubmissionAcceptance) {
        let Ok(ev) = Evidence::parse(&s.evidence.xml) else {
            continue;
        };
        if let Some(position) = position_in(&ev, recipient) {
            return Some(About {
                evidence: ev,
                position,
            });
        }
    }
    for s in ours(Event::RelayAcceptance) {
        let Ok(ev) = Evidence::parse(&s.evidence.xml) else {
            continue;
        };
        let Some(position) = position_in(&ev, recipient) else {
            continue;
        };
        if ev
            .relay_info
            .as_ref()
            .is_some_and(|r| r.refers_to.contains(&position))
        {
            return Some(About {
                evidence: ev,
                position,
            });
        }
    }
    None
}

/// One consignment outcome to issue and send.
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    /// What it is about; the recipient is the one [`About::recipient`] names.
    pub about: &'a About,
    /// ContentConsignment or ContentConsignmentFailure.
    pub event: Event,
    pub code: &'static str,
    pub at: Instant,
    pub queue_id: Option<&'a str>,
}

/// Issues the consignment evidence of `o`, composes its REM receipt to the sender the
/// evidence names and emits it once with the evidence, deciding the recipient's outcome
/// ([`Effect::RemOutcome`], keyed as the PEC delivery notice). [`Emitted::Claimed`]
/// when the outcome was decided before. A TSA failure is an error, nothing recorded.
pub async fn emit_outcome(
    kit: &Issuing,
    settings: &RemSettings,
    o: Outcome<'_>,
) -> Result<Emitted, RemIssueError> {
    let about = &o.about.evidence;
    let message_id = about.message_id.clone().unwrap_or_default();
    let reason = Reason::by_code(o.code)
        .filter(|r| r.allowed_with(o.event))
        .ok_or_else(|| IssueError::Task(format!("reason {} with {}", o.code, o.event)))?;
    let issued = issue_consignment(
        kit,
        settings.evidence_tsa.as_ref(),
        ConsignmentInput {
            about: about.clone(),
            event: o.event,
            reason,
            recipient: o.about.position,
            event_time: o.at,
            policies: settings.policies.clone(),
            provider: settings.provider_name.clone(),
        },
    )
    .await?;
    let sub = Submission::from_evidence(about, settings.policies.clone());
    let relay_date =
        (about.event == Event::RelayAcceptance).then(|| Instant::from_utc(about.event_time));
    let regarding = crate::rem::issue::Regarding {
        other_provider: Some(settings.provider_name.clone()),
        recipient: Some(o.about.recipient().to_string()),
        relay_date,
    };
    let composed = crate::rem::issue::compose_receipt(
        kit,
        &settings.provider_name,
        &sub,
        &issued,
        o.code,
        regarding,
        o.at,
    )
    .await
    .map_err(|e| IssueError::Task(format!("composing the rem receipt: {e}")))?;
    let recipients = sub
        .recipients
        .iter()
        .map(|r| (r.clone(), RecipientType::Esterno))
        .collect();
    let stored = issued.stored(&sub.sender, recipients, o.queue_id);
    let effect = Effect::WithEvidences {
        effect: Box::new(Effect::RemOutcome {
            message_id: message_id.clone(),
            recipient: o.about.recipient().to_string(),
            kind: o.event.name().to_string(),
            notice_id: composed.message_id.clone(),
            at: o.at,
        }),
        evidences: vec![stored],
    };
    let out = Outbound {
        key: delivery_key(&message_id, o.about.recipient()),
        data: composed.to_bytes(),
        message_id: composed.message_id,
        mail_from: composed.mail_from,
        rcpt_to: composed.rcpt_to,
        created_at: o.at,
        injected_at: None,
    };
    Ok(kit.emit_outbound(out, effect).await?)
}

/// A REM dispatch being delivered, as our records know it.
struct Known {
    message_id: String,
    /// `about[i]` for `tx.rcpt_to[i]`: `None` when no outcome is due for it.
    about: Vec<Option<About>>,
}

impl DeliveryPoint {
    /// The REM path of [`DeliveryPoint::deliver`] (see the module documentation).
    pub(super) async fn rem_deliver(&self, rem: &RemDelivery, tx: &Transaction) -> Vec<Reply> {
        let shown = super::envelope_id(&tx.data).unwrap_or_else(|| "-".into());
        let known = match self.rem_known(rem, tx).await {
            Ok(k) => k,
            Err(e) => return self.tempfail_all(tx, &shown, &e.to_string()),
        };
        let replies = match self.open_mailboxes(tx, &shown).await {
            Ok(r) => r,
            Err(e) => return self.tempfail_all(tx, &shown, &e.to_string()),
        };
        let Some(k) = known else {
            for (r, reply) in tx.rcpt_to.iter().zip(&replies) {
                info!(msgid = %shown, rcpt = %r, reply = %reply.line(), "delivery point: rem message proxied, no evidence due");
            }
            return replies;
        };
        let at = self.kit.clock.now();
        let queue_id = crate::metrics::received_queue_id(&tx.data);
        let mut out = Vec::with_capacity(replies.len());
        for ((rcpt, reply), about) in tx.rcpt_to.iter().zip(replies).zip(&k.about) {
            let Some(about) = about.as_ref().filter(|_| reply.class() != 4) else {
                info!(msgid = %k.message_id, rcpt = %rcpt, reply = %reply.line(), "delivery point: rem dispatch proxied, no evidence");
                out.push(reply);
                continue;
            };
            // The outcome is the mailbox's, as the evidence names it.
            let named = about.recipient().to_string();
            let (id, r) = (k.message_id.clone(), named.clone());
            let decided = match self.kit.store(move |s| s.delivery_notice(&id, &r)).await {
                Ok(d) => d,
                Err(e) => {
                    error!(msgid = %k.message_id, rcpt = %rcpt, "delivery point: tempfail: {e}");
                    out.push(Reply::new(451, "4.3.0 Store unavailable, try again later"));
                    continue;
                }
            };
            let delivered = reply.class() == 2;
            let (event, code) = if delivered {
                (Event::ContentConsignment, "RD01")
            } else {
                (
                    Event::ContentConsignmentFailure,
                    consignment_failure(reply.enhanced()),
                )
            };
            let emitted = match decided {
                Some(_) => Ok(Emitted::Claimed),
                None => {
                    emit_outcome(
                        &self.kit,
                        &rem.settings,
                        Outcome {
                            about,
                            event,
                            code,
                            at,
                            queue_id: queue_id.as_deref(),
                        },
                    )
                    .await
                }
            };
            let answer = match emitted {
                Ok(Emitted::New(id)) | Ok(Emitted::Existing(id)) => {
                    info!(msgid = %k.message_id, rcpt = %rcpt, dovecot = %reply.line(), receipt = %id, code, "delivery point: rem consignment evidence emitted");
                    if delivered {
                        reply
                    } else {
                        Reply::new(
                            250,
                            format!(
                                "2.0.0 <{rcpt}> Non-delivery evidence sent ({code}, {})",
                                reply.line()
                            ),
                        )
                    }
                }
                Ok(Emitted::Claimed) => {
                    info!(msgid = %k.message_id, rcpt = %rcpt, dovecot = %reply.line(), "delivery point: rem consignment outcome decided before, none sent");
                    if delivered {
                        reply
                    } else {
                        Reply::new(250, format!("2.0.0 <{rcpt}> Non-delivery already notified"))
                    }
                }
                Err(RemIssueError::Task(e @ IssueError::Staged(_))) => {
                    // Staged with its records: the outbox sweep sends it.
                    warn!(msgid = %k.message_id, rcpt = %rcpt, "delivery point: rem consignment evidence staged, not injected: {e}");
                    if delivered {
                        reply
                    } else {
                        Reply::new(250, format!("2.0.0 <{rcpt}> Non-delivery evidence staged"))
                    }
                }
                Err(e) => {
                    error!(msgid = %k.message_id, rcpt = %rcpt, dovecot = %reply.line(), "delivery point: tempfail: {e}");
                    Reply::new(451, "4.3.0 Cannot issue the REM evidence, try again later")
                }
            };
            out.push(answer);
        }
        out
    }

    /// The dispatch `tx` carries, checked against our records; `None` when it is not a
    /// dispatch of ours to consign (a receipt, or a message our records do not know).
    async fn rem_known(
        &self,
        rem: &RemDelivery,
        tx: &Transaction,
    ) -> Result<Option<Known>, IssueError> {
        let read = blocking_borrowed(|| -> Result<(String, Vec<u8>), String> {
            let m = crate::rem::message::parse(&tx.data).map_err(|e| e.to_string())?;
            if m.message_type != MessageType::Dispatch {
                return Err("not a dispatch".into());
            }
            let section = m.evidences.first().ok_or("no evidence")?;
            let ev = Evidence::parse(&section.body).map_err(|e| e.to_string())?;
            // The original carried is the one the evidence states.
            m.check_digest().map_err(|e| e.to_string())?;
            let stated = ev
                .user_content
                .as_ref()
                .and_then(|u| u.parts.first())
                .and_then(|p| p.digest_value.as_deref());
            if stated.is_none() || stated != m.rem.digest_value.as_deref() {
                return Err("the evidence states another digest".into());
            }
            let id = ev.message_id.ok_or("no message identifier")?;
            Ok((id, section.body.clone()))
        });
        let (message_id, xml) = match read {
            Ok(r) => r,
            Err(why) => {
                info!("delivery point: rem message without consignment evidence ({why})");
                return Ok(None);
            }
        };
        let id = message_id.clone();
        let stored = self.kit.store(move |s| s.evidences_for(&id)).await?;
        // The dispatch's own evidence, byte for byte, as we recorded it: received from the
        // peer (judged valid by the reception point) or issued by us.
        let recorded = stored.iter().any(|s| {
            s.evidence.event == Event::SubmissionAcceptance.uri() && s.evidence.xml == xml
        });
        if !recorded {
            warn!(msgid = %message_id, "delivery point: a rem dispatch our records do not hold: no evidence");
            return Ok(None);
        }
        let about: Vec<Option<About>> = tx
            .rcpt_to
            .iter()
            .map(|r| {
                about(&stored, r)
                    .filter(|a| a.evidence.event != Event::SubmissionAcceptance || rem.is_ours(r))
            })
            .collect();
        if about.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Known { message_id, about }))
    }
}
