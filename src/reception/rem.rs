// SPDX-License-Identifier: GPL-3.0-or-later
//! The reception point's REM path (issue 20, ETSI EN 319 532-4 C.4.5.2, R-REMS side): the
//! after-queue filter sends here every REM message ([`crate::rem::message::is_rem`]) for
//! local recipients when `[rem] enabled`, before any PEC classification.
//!
//! * A peer's REM dispatch is judged ([`crate::rem::judge::judge_message`]: S/MIME chain
//!   to `[rem] anchors`, evidence XAdES-B-T to `[rem] tsa_anchors`, digest, the signer a REM
//!   service granted on the Trusted List at the signing time). Valid: the RelayAcceptance
//!   evidence (digest and identifiers copied from the dispatch's evidence,
//!   `RelayEvidenceRefersTo` the local recipients) in a RelayAcceptance REM receipt to the
//!   sending REMS, and the dispatch delivered unchanged; a local recipient whose mailbox
//!   was retired gets a RelayRejection RB21 instead; malware: quarantined, RelayRejection
//!   RB03, not delivered. Not valid but signed by a granted REM service: a RelayRejection
//!   with the verdict's reason ([`crate::rem::judge::Verdict::rejection`]), and the
//!   message handled as mail that is not valid PEC (mailbox policy). A signature that
//!   does not verify to a granted REM service of the Trusted List (bad signature, unknown
//!   CA, signer not granted at the signing time): nothing is sent to the sender it claims
//!   (no backscatter) and nothing certified; logged, and handled as mail from outside an
//!   ERDS ([`RemLocal::Unverified`]). Our own dispatch to our own recipients
//!   is delivered without relay evidences (C.4.5.2 note 2: no relay takes place).
//! * A REM receipt to our service address (`rem-service@` one of our domains, or the
//!   issuer's service address) is judged and correlated with our records
//!   ([`AfterQueue::rem_correlate`]: our SubmissionAcceptance evidence of that message
//!   identifier and digest, and the signer the REM service of the Trusted List serving the
//!   domain of the recipients it speaks of, by the MX check of [`crate::rem::dns`]): its
//!   evidence is stored as received; a RelayRejection is answered to our sender with a
//!   RelayFailure of the same reason, built from our records. Unknown, signed by another
//!   provider, or not valid: logged and consumed, never certified. The first outcome of a
//!   recipient stands ([`crate::rem::outcome`]): a later one is logged and consumed.
//! * A REM receipt to one of our users (a ContentConsignment goes straight to the sender):
//!   when valid and addressed to the sender its evidence names, correlated as above and
//!   delivered once through the outbox with its evidence stored; else the mailbox policy.
//! * Mail from outside any ERDS for a REM mailbox whose policy wraps it: our
//!   ReceivedFromNonERDS REM message ([`AfterQueue::received_from_non_erds`], called by the
//!   one home of the mailbox policy, `not_pec`).
//!
//! Every message goes once through the outbox with its evidences in the same transaction
//! ([`Effect::WithEvidences`]), keyed by the dispatch and its recipients: the same
//! dispatch handed over again builds nothing (the outbox row is looked up before any time
//! stamp is asked for). A TSA failure is a temporary failure (4xx), nothing recorded.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::{AfterQueue, AfterQueueError, Local};
use crate::antivirus::ScanVerdict;
use crate::config::{Protocol, RemSettings};
use crate::crypto::ChainPolicy;
use crate::issuing::{blocking, blocking_borrowed, Emitted, IssueError};
use crate::message::ids::rem_id;
use crate::message::kind::RecipientType;
use crate::message::time::Instant;
use crate::rem::codes::{Event, Reason};
use crate::rem::compose::EvidenceAttachment;
use crate::rem::compose::{self, Composed, Composer, Provider, Receipt};
use crate::rem::dns::{self, MxLookup, PeerRouting};
use crate::rem::evidence::Evidence;
use crate::rem::issue::{self, EvidenceInput, Issued, RelayInput};
use crate::rem::judge::{judge_message, Failure, Inputs, Trust, Verdict};
use crate::rem::message::{self, DigestAlgorithm, MessageType, RemMessage};
use crate::rem::outcome;
use crate::rem::trust::PeersHandle;
use crate::smtp::Transaction;
use crate::store::outbox::{
    rem_non_erds_key, rem_receipt_key, rem_relay_failure_key, rem_relay_key,
};
use crate::store::{
    Effect, EventKind, EvidenceDirection, LogEvent, MailboxPolicy, Outbound, RemWait, RemWaitKind,
};

/// What the reception point needs for REM.
pub struct RemReception {
    pub settings: RemSettings,
    /// `[rem] anchors`: the REM PKI (the S/MIME signer and the evidences' signer).
    pub chain: ChainPolicy,
    /// `[rem] tsa_anchors`: PEM files, each tried on its own.
    pub tsa_anchors: Vec<PathBuf>,
    /// The REM services of the accepted Trusted Lists; `None`: no peer is trusted, every
    /// peer's message is refused (RB06).
    pub peers: Option<Arc<PeersHandle>>,
    /// The MX check ([`crate::rem::dns`]) that says which REM service of the Trusted List
    /// serves a recipient's domain: a peer's receipt about our dispatch counts only when
    /// signed by that service. `None`: no peer's receipt is correlated.
    pub mx: Option<Arc<dyn MxLookup>>,
}

/// What the REM path did for the local recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemLocal {
    /// A peer's valid dispatch: the RelayAcceptance receipt (`acceptance`, for
    /// `delivered`) and the RelayRejection RB21 one (`rejection`, for `unknown`), `None`
    /// when there was nothing to answer; `replay` when both were emitted before (nothing
    /// built anew).
    Relayed {
        message_id: String,
        acceptance: Option<String>,
        rejection: Option<String>,
        delivered: Vec<String>,
        unknown: Vec<String>,
        replay: bool,
    },
    /// Our own dispatch to our own recipients: delivered, no relay evidence.
    Own {
        message_id: String,
        delivered: Vec<String>,
    },
    /// A dispatch whose signature verified to a granted REM service (or ours) but that is
    /// not valid: the RelayRejection receipt `rejection` with reason `code` (`None` when it
    /// could not be referred to the dispatch: no readable evidence), and what the mailbox
    /// policy did with the message.
    Rejected {
        message_id: Option<String>,
        code: &'static str,
        rejection: Option<String>,
        handled: Box<Local>,
    },
    /// A REM receipt to our service address: consumed. `correlated` with our dispatch
    /// `message_id` (its evidence stored), `failure` the RelayFailure sent to our sender.
    Receipt {
        event: Option<Event>,
        message_id: Option<String>,
        correlated: bool,
        failure: Option<String>,
        /// Correlated, but the outcome it states for its recipients was decided before (a
        /// second ContentConsignment, the same receipt again): nothing new.
        replay: bool,
    },
    /// A valid REM receipt to our users: delivered unchanged.
    Delivered { event: Event, to: Vec<String> },
    /// A REM message whose signature did not verify to a granted REM service of the
    /// Trusted List (bad signature, unknown CA, signer not granted then): nobody vouches
    /// for its sender, so nothing is sent to it (no backscatter) and nothing is certified
    /// about it; `why` the failure, the message handled as mail from outside any ERDS
    /// (the mailbox policy).
    Unverified {
        message_id: Option<String>,
        code: &'static str,
        why: String,
        handled: Box<Local>,
    },
}

/// The address of `From` (`"Name" <a@b>` or `a@b`).
fn address_of(from: &str) -> Option<String> {
    let s = from.trim();
    let a = match (s.rfind('<'), s.rfind('>')) {
        (Some(i), Some(j)) if i < j => &s[i + 1..j],
        _ => s,
    };
    let a = a.trim();
    (a.contains('@') && !a.contains(char::is_whitespace)).then(|| a.to_string())
}

/// The address of an evidence's user (its `mailto` identifier).
fn user_address(u: &crate::rem::evidence::UserDetails) -> Option<String> {
    u.identifier.as_ref().map(|i| i.value.clone())
}

/// The digest of the original an evidence states.
fn digest_of(ev: &Evidence) -> Option<&str> {
    ev.user_content
        .as_ref()
        .and_then(|u| u.parts.first())
        .and_then(|p| p.digest_value.as_deref())
}

/// The intended recipients an evidence names, in order.
fn recipients_of(ev: &Evidence) -> Vec<String> {
    ev.recipients
        .iter()
        .map(|u| user_address(u).unwrap_or_default())
        .collect()
}

/// 1-based positions of `which` among `all` (case-insensitive).
fn positions(all: &[String], which: &[String]) -> Vec<u32> {
    let mut p: Vec<u32> = which
        .iter()
        .filter_map(|w| all.iter().position(|a| a.eq_ignore_ascii_case(w)))
        .filter_map(|i| u32::try_from(i + 1).ok())
        .collect();
    p.sort_unstable();
    p.dedup();
    p
}

/// The REM data of the message `ev` is about, from the evidence alone (our records for our
/// own dispatch; the dispatch's evidence for a peer's): what the receipt's headers and
/// introduction state.
fn submission_of(ev: &Evidence, policies: Vec<String>) -> compose::Submission {
    compose::Submission::from_evidence(ev, policies)
}

/// The store's row of a peer's evidence (its signature verified by the judge) and its
/// legal-log record; `issuer` the peer's provider.
fn received_row(
    model: &Evidence,
    xml: &[u8],
    issuer: &str,
    queue_id: Option<&str>,
) -> (crate::store::Evidence, LogEvent) {
    // The one recipient it is about, when one (what the timers ask: rem::outcome).
    let named = outcome::named_recipients(model);
    let recipient = match named.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    };
    let row = crate::store::Evidence {
        id: model.evidence_id.clone(),
        message_id: model.message_id.clone().unwrap_or_default(),
        event: model.event.uri(),
        reason: model.reason().map(|r| r.uri()),
        recipient,
        issuer: issuer.to_string(),
        at: Instant::from_utc(model.event_time),
        direction: EvidenceDirection::Received,
        xml: xml.to_vec(),
    };
    let subject = model
        .general_info
        .as_ref()
        .and_then(|g| g.subject.clone())
        .unwrap_or_default();
    let sender = user_address(&model.sender).unwrap_or_default();
    let event = row.log_event(&sender, recipient_list(model), &subject, issuer, queue_id);
    (row, event)
}

fn recipient_list(ev: &Evidence) -> Vec<(String, RecipientType)> {
    recipients_of(ev)
        .into_iter()
        .map(|r| (r, RecipientType::Esterno))
        .collect()
}

/// The peer's provider: its Trusted List name, else the evidence's issuer, else the
/// signer's subject.
fn peer_name(v: &Verdict, ev: Option<&Evidence>) -> String {
    if let Trust::Granted { provider, .. } = &v.trust {
        return provider.clone();
    }
    ev.and_then(|e| e.issuer.first())
        .and_then(|a| a.value())
        .map(str::to_string)
        .or_else(|| v.signer.as_ref().map(|s| s.subject.clone()))
        .unwrap_or_default()
}

fn reason_by_code(code: &str) -> Result<&'static Reason, AfterQueueError> {
    Reason::by_code(code).ok_or_else(|| {
        AfterQueueError::Issue(IssueError::Task(format!("unknown reason code {code}")))
    })
}

/// The outbox row of a composed REM message.
fn outbound(key: String, m: Composed, at: Instant) -> Outbound {
    Outbound {
        key,
        data: m.to_bytes(),
        message_id: m.message_id,
        mail_from: m.mail_from,
        rcpt_to: m.rcpt_to,
        created_at: at,
        injected_at: None,
    }
}

/// One REM receipt to emit: its evidence and where it goes.
struct ToSend<'a> {
    key: String,
    about: &'a Evidence,
    event: Event,
    code: &'static str,
    refers_to: Vec<u32>,
    /// The submission data its headers state.
    sub: compose::Submission,
    /// `To` as written and the SMTP recipient.
    to: String,
    rcpt_to: String,
    other_provider: String,
    /// Evidences stored with it besides ours (the peer's, received).
    also: Vec<(crate::store::Evidence, LogEvent)>,
}

/// What [`AfterQueue::rem_correlate`] found.
enum RemCorrelation {
    /// Our SubmissionAcceptance evidence of the dispatch, and the recipients of ours the
    /// receipt speaks of.
    Ours {
        ours: Box<Evidence>,
        named: Vec<String>,
    },
    /// Nothing of ours to certify anything from: why (logged).
    Not(String),
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

impl AfterQueue {
    /// Whether our mailbox `recipient` is a REM mailbox: `[rem] enabled` and its domain goes
    /// as REM by the rule the access point routes with ([`RemSettings::protocol_for`], our
    /// own domains speaking REM): its override, else `mode` (`auto` and `rem`: REM).
    pub(super) fn rem_mailbox(&self, recipient: &str) -> bool {
        self.rem.as_ref().is_some_and(|r| {
            r.settings.protocol_for(&domain_of(recipient), || true) == Protocol::Rem
        })
    }

    /// Mail from outside any ERDS (ordinary mail, or a REM message nobody verified vouches
    /// for) for our REM mailboxes `to` whose policy wraps it: the REM dispatch of type
    /// ReceivedFromNonERDS carrying it (EN 319 532-4 TUC3, the REM busta di anomalia) with
    /// our signed, time-stamped ReceivedFromNonERDS evidence (RF04), emitted once with the
    /// evidence (keyed by the original's `Message-ID` and the recipients: the same message
    /// again builds nothing, no time stamp asked). Its REM message identifier; `None` when
    /// the message cannot be carried as REM (the caller wraps it in the anomaly envelope).
    /// A TSA failure is a temporary failure, nothing recorded.
    pub(super) async fn received_from_non_erds(
        &self,
        tx: &Transaction,
        to: &[String],
        reason: &str,
        now: Instant,
    ) -> Result<Option<String>, AfterQueueError> {
        let Some(rem) = self.rem.clone() else {
            return Ok(None);
        };
        let original_id = crate::message::build::OriginalInfo::parse(&tx.data)
            .ok()
            .and_then(|i| i.message_id);
        let key = rem_non_erds_key(original_id.as_deref(), &tx.data, to);
        let k = key.clone();
        if let Some(o) = self.kit.store(move |s| s.outbound(&k)).await? {
            info!(key = %key, "reception: received from non-erds emitted before: none built");
            return Ok(Some(o.message_id));
        }
        let message_id = rem_id(now, &self.kit.issuer.service_address);
        let original = match compose::prepare_original(&tx.data, &message_id) {
            Ok(o) => o,
            Err(e) => {
                warn!(
                    queue_id = tx.queue_id.as_deref().unwrap_or("-"),
                    "reception: mail from outside an erds cannot be carried as rem ({e}): anomaly envelope"
                );
                return Ok(None);
            }
        };
        let policies = rem.settings.policies.clone();
        let digest = DigestAlgorithm::Sha256;
        let mut sub = compose::Submission::from_original(&original, policies.clone(), digest)
            .unwrap_or_else(|_| compose::Submission {
                message_id: message_id.clone(),
                ua_message_identifier: original_id.clone(),
                sender: tx.mail_from.clone(),
                from: format!("<{}>", tx.mail_from),
                to: None,
                cc: None,
                in_reply_to: None,
                recipients: Vec::new(),
                subject: String::new(),
                policies: policies.clone(),
                digest,
                digest_value: digest.digest_value(&original),
            });
        sub.recipients = to.to_vec();
        let input = EvidenceInput {
            event: Event::ReceivedFromNonERDS,
            reason: reason_by_code("RF04")?,
            message_id: message_id.clone(),
            event_time: now,
            submission_time: Some(now),
            sender: sub.sender.clone(),
            identity: None,
            authentication: None,
            recipients: to.to_vec(),
            refers_to_recipient: None,
            ua_message_id: sub.ua_message_identifier.clone(),
            digest: Some(sub.digest_value.clone()),
            subject: sub.subject.clone(),
            policies,
            provider: rem.settings.provider_name.clone(),
        };
        let issued = issue::issue(&self.kit, rem.settings.evidence_tsa.as_ref(), input)
            .await
            .map_err(|e| AfterQueueError::Rem(e.to_string()))?;
        let provider = Provider {
            name: rem.settings.provider_name.clone(),
            service_address: self.kit.issuer.service_address.clone(),
        };
        let signer = self.kit.signer.clone();
        let (xml, evidence_id, s) = (issued.xml.clone(), issued.id().to_string(), sub.clone());
        let composed = blocking(move || {
            Composer {
                provider: &provider,
                signer: &*signer,
            }
            .received_from_non_erds(
                &original,
                &s,
                &EvidenceAttachment {
                    event: Event::ReceivedFromNonERDS,
                    xml: &xml,
                },
                &evidence_id,
                now,
            )
        })
        .await?
        .map_err(|e| AfterQueueError::Rem(format!("composing the rem message: {e}")))?;
        let recipients = to
            .iter()
            .map(|r| (r.clone(), RecipientType::Certificato))
            .collect();
        let stored = issued.stored(&sub.sender, recipients, tx.queue_id.as_deref());
        // The PEC event of the same meaning (the busta di anomalia), with the reason.
        let event = LogEvent {
            pec_id: message_id.clone(),
            at: now,
            kind: EventKind::Issued(crate::message::kind::MessageKind::AnomalyEnvelope),
            sender: tx.mail_from.clone(),
            recipients: to
                .iter()
                .map(|r| (r.clone(), RecipientType::Certificato))
                .collect(),
            subject: sub.subject.clone(),
            related_ids: vec![message_id.clone(), issued.id().to_string()],
            provider: self.kit.issuer.provider_name.clone(),
            queue_id: tx.queue_id.clone(),
            outcome: "received_from_non_erds".into(),
            reason: Some(reason.to_string()),
        };
        let mut out = outbound(key, composed, now);
        // Bounces of it come back to us, never to the outside sender.
        out.mail_from = self.kit.issuer.service_address.clone();
        let effect = Effect::WithEvidences {
            effect: Box::new(Effect::Log(vec![event])),
            evidences: vec![stored],
        };
        let emitted = self.kit.emit_outbound(out, effect).await?;
        let id = emitted.message_id().map_or(message_id, str::to_string);
        info!(queue_id = tx.queue_id.as_deref().unwrap_or("-"), rem = %id, "reception: from outside an erds ({reason}): received from non-erds for {to:?}");
        Ok(Some(id))
    }

    /// Whether `address` is our REM service address.
    fn is_service_address(&self, address: &str) -> bool {
        address.eq_ignore_ascii_case(&self.kit.issuer.service_address)
            || address.split_once('@').is_some_and(|(l, d)| {
                l.eq_ignore_ascii_case("rem-service") && self.reception.is_local(&format!("x@{d}"))
            })
    }

    /// The REM path for `local` (see the module documentation); `remote` are passed on
    /// unchanged once nothing can refuse the transaction any more.
    pub(super) async fn rem(
        &self,
        rem: &RemReception,
        tx: &Transaction,
        local: &[String],
        remote: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        // No Trusted List view yet (pec serve starting on a store that holds none): every
        // peer would be judged untrusted; Postfix retries once the first refresh loaded one.
        if rem.peers.as_ref().is_some_and(|p| !p.is_loaded()) {
            return Err(AfterQueueError::Rem(
                "the trusted lists are not loaded yet".into(),
            ));
        }
        let peers = rem.peers.as_ref().map(|p| p.current());
        let mut verdict = blocking_borrowed(|| {
            judge_message(
                &tx.data,
                &Inputs {
                    chain: &rem.chain,
                    tsa_anchors: &rem.tsa_anchors,
                    peers: peers.as_deref(),
                    at: now,
                },
            )
        });
        // Our own signature needs no Trusted List entry.
        let own = verdict
            .signer
            .as_ref()
            .is_some_and(|s| s.der == self.kit.signer.certificate_der());
        if own {
            verdict
                .failures
                .retain(|f| !matches!(f, Failure::NotTrusted(_)));
        }
        // The first rule, and no backscatter: a signed REM answer goes only to a sending
        // REMS whose signature verified (chain to `[rem] anchors`) to a REM service granted
        // on the Trusted List at the signing time, or to ourselves. Anything else may name
        // anybody as its sender.
        let answerable =
            own || (verdict.signer.is_some() && matches!(verdict.trust, Trust::Granted { .. }));
        let parsed: Option<RemMessage> = message::parse(&tx.data).ok();
        let first_evidence = parsed.as_ref().and_then(|m| {
            let s = m.evidences.first()?;
            Some((Evidence::parse(&s.body).ok()?, s.body.clone()))
        });
        let kind = parsed.as_ref().map(|m| m.message_type);
        match (kind, verdict.rejection()) {
            (Some(MessageType::Dispatch), None) if own => {
                self.pass_on(tx, remote).await?;
                passed_on.extend(remote.iter().cloned());
                self.pass_on(tx, local).await?;
                passed_on.extend(local.iter().cloned());
                let message_id = first_evidence
                    .and_then(|(e, _)| e.message_id)
                    .unwrap_or_default();
                info!(msgid = %message_id, "reception: our own rem dispatch delivered (no relay)");
                Ok(Local::Rem(RemLocal::Own {
                    message_id,
                    delivered: local.to_vec(),
                }))
            }
            (Some(MessageType::Dispatch), None) => {
                let (ev, xml) = first_evidence.ok_or_else(|| {
                    AfterQueueError::Issue(IssueError::Task(
                        "a valid dispatch without its evidence".into(),
                    ))
                })?;
                let m = parsed.as_ref().map(|m| m.rem.applicable_policies.clone());
                self.rem_dispatch(
                    rem, tx, &verdict, &ev, &xml, m, local, remote, now, passed_on,
                )
                .await
            }
            (Some(MessageType::Dispatch), Some(r)) | (None, Some(r)) => {
                let code = r.code;
                let why = verdict
                    .first_failure()
                    .map(|f| f.to_string())
                    .unwrap_or_default();
                if !answerable {
                    let message_id = first_evidence.and_then(|(e, _)| e.message_id);
                    return self
                        .rem_unverified(tx, message_id, code, why, local, remote, now, passed_on)
                        .await;
                }
                self.rem_rejected(
                    rem,
                    tx,
                    &verdict,
                    first_evidence,
                    parsed.as_ref(),
                    code,
                    why,
                    local,
                    remote,
                    now,
                    passed_on,
                )
                .await
            }
            (Some(MessageType::Receipt), rejection) => {
                let (service, users): (Vec<String>, Vec<String>) = local
                    .iter()
                    .cloned()
                    .partition(|r| self.is_service_address(r));
                let valid = rejection.is_none();
                let mut why = verdict
                    .first_failure()
                    .map(|f| f.to_string())
                    .unwrap_or_default();
                // Users: a valid receipt goes to the sender its evidence names; to anybody
                // else (a receipt replayed or redirected) and when not valid, the mailbox
                // policy decides (and may refuse).
                let sender = first_evidence
                    .as_ref()
                    .and_then(|(e, _)| user_address(&e.sender));
                let (deliver, others): (Vec<String>, Vec<String>) =
                    users.into_iter().partition(|r| {
                        valid && sender.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(r))
                    });
                if valid && !others.is_empty() {
                    why = format!(
                        "ricevuta REM indirizzata a {}, non al mittente {} del messaggio",
                        others.join(", "),
                        sender.as_deref().unwrap_or("-")
                    );
                }
                let policies = match others.is_empty() {
                    true => Vec::new(),
                    false => self.policies(&others).await?,
                };
                if !others.is_empty() {
                    self.refusals(tx, &others, &policies, &why, now).await?;
                }
                self.pass_on(tx, remote).await?;
                passed_on.extend(remote.iter().cloned());
                let mut outcome = None;
                let users_evidence = first_evidence.clone().filter(|_| valid);
                if !service.is_empty() {
                    outcome = Some(
                        self.rem_receipt(
                            rem,
                            tx,
                            &verdict,
                            valid,
                            &why,
                            first_evidence,
                            &service,
                            now,
                        )
                        .await?,
                    );
                }
                if !deliver.is_empty() {
                    let event = parsed
                        .as_ref()
                        .map_or(Event::SubmissionAcceptance, |m| m.event);
                    let to_users = match (&users_evidence, own) {
                        // Ours (our own delivery point's receipt to our own sender): no
                        // relay took place, nothing to correlate.
                        (_, true) => {
                            self.pass_on(tx, &deliver).await?;
                            RemLocal::Delivered {
                                event,
                                to: deliver.clone(),
                            }
                        }
                        (Some((ev, xml)), false) => {
                            self.rem_receipt_to_users(rem, tx, &verdict, ev, xml, &deliver, now)
                                .await?
                        }
                        (None, false) => {
                            return Err(AfterQueueError::Issue(IssueError::Task(
                                "a valid rem receipt without its evidence".into(),
                            )))
                        }
                    };
                    if matches!(to_users, RemLocal::Delivered { .. }) {
                        passed_on.extend(deliver.iter().cloned());
                    }
                    outcome = match outcome {
                        // Delivered beats consumed in what the filter reports.
                        Some(o) if !matches!(to_users, RemLocal::Delivered { .. }) => Some(o),
                        _ => Some(to_users),
                    };
                }
                if !others.is_empty() {
                    let handled = self
                        .not_pec(
                            tx,
                            format!("messaggio REM non valido: {why}"),
                            policies,
                            now,
                        )
                        .await?;
                    if outcome.is_none() {
                        return Ok(handled);
                    }
                }
                Ok(Local::Rem(outcome.unwrap_or(RemLocal::Receipt {
                    event: None,
                    message_id: None,
                    correlated: false,
                    failure: None,
                    replay: false,
                })))
            }
            (None, None) => Err(AfterQueueError::Issue(IssueError::Task(
                "a rem message judged valid that cannot be read".into(),
            ))),
        }
    }

    /// Refuses the transaction (before anything is injected) when the message is infected
    /// or a policy of `local` refuses mail that is not valid, as the PEC path does.
    async fn refusals(
        &self,
        tx: &Transaction,
        local: &[String],
        policies: &[(String, MailboxPolicy)],
        reason: &str,
        now: Instant,
    ) -> Result<(), AfterQueueError> {
        if let ScanVerdict::Infected(virus) = self.reception.antivirus.scan(&tx.data).await? {
            self.log_not_pec(tx, local, EventKind::RejectedInSmtp, "virus", &virus, now)
                .await?;
            return Err(AfterQueueError::Infected(virus));
        }
        if policies.iter().any(|(_, p)| *p == MailboxPolicy::Refuse) {
            self.log_not_pec(tx, local, EventKind::RejectedInSmtp, "refused", reason, now)
                .await?;
            return Err(AfterQueueError::Refused(reason.to_string()));
        }
        Ok(())
    }

    /// A peer's valid dispatch.
    #[allow(clippy::too_many_arguments)]
    async fn rem_dispatch(
        &self,
        rem: &RemReception,
        tx: &Transaction,
        verdict: &Verdict,
        ev: &Evidence,
        xml: &[u8],
        policies: Option<Vec<String>>,
        local: &[String],
        remote: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let message_id = ev.message_id.clone().unwrap_or_default();
        let intended = recipients_of(ev);
        // A local recipient the dispatch is not addressed to: not delivered as REM (the
        // SMTP envelope is not signed), the mailbox policy decides.
        let (ours, strangers): (Vec<String>, Vec<String>) = local
            .iter()
            .cloned()
            .partition(|r| intended.iter().any(|i| i.eq_ignore_ascii_case(r)));
        let stranger_policies = match strangers.is_empty() {
            true => Vec::new(),
            false => self.policies(&strangers).await?,
        };
        let why =
            format!("destinatario non presente tra i destinatari del messaggio REM {message_id}");
        if !strangers.is_empty() {
            self.refusals(tx, &strangers, &stranger_policies, &why, now)
                .await?;
        }
        let peer = peer_name(verdict, Some(ev));
        let received = received_row(ev, xml, &peer, tx.queue_id.as_deref());
        // Malware (RB03): quarantined, refused for every local recipient it names, not
        // delivered (as a PEC envelope with a virus, spec §5.2: the answer, no delivery).
        if let ScanVerdict::Infected(virus) = self.reception.antivirus.scan(&tx.data).await? {
            let event = LogEvent {
                pec_id: message_id.clone(),
                at: now,
                kind: EventKind::Quarantined,
                sender: user_address(&ev.sender).unwrap_or_default(),
                recipients: recipient_list(ev),
                subject: ev
                    .general_info
                    .as_ref()
                    .and_then(|g| g.subject.clone())
                    .unwrap_or_default(),
                related_ids: Vec::new(),
                provider: peer.clone(),
                queue_id: tx.queue_id.clone(),
                outcome: "virus".into(),
                reason: Some(virus.clone()),
            };
            let data = tx.data.clone();
            self.kit
                .store(move |s| s.record_quarantine(&event, &data))
                .await?;
            let mut rejection = None;
            if !ours.is_empty() {
                let to = self.sending_rems(tx)?;
                let pols = policies
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| rem.settings.policies.clone());
                let send = ToSend {
                    key: rem_relay_key(&message_id, "RelayRejection.RB03", &ours),
                    about: ev,
                    event: Event::RelayRejection,
                    code: "RB03",
                    refers_to: positions(&intended, &ours),
                    sub: submission_of(ev, pols),
                    to: format!("<{to}>"),
                    rcpt_to: to.clone(),
                    other_provider: peer.clone(),
                    also: vec![received],
                };
                rejection = self.send_relay(rem, tx, send, now).await?.0;
            }
            self.pass_on(tx, remote).await?;
            passed_on.extend(remote.iter().cloned());
            warn!(msgid = %message_id, virus = %virus, "reception: virus in a rem dispatch: quarantined, relay rejection RB03");
            return Ok(Local::Rem(RemLocal::Rejected {
                message_id: Some(message_id.clone()),
                code: "RB03",
                rejection,
                handled: Box::new(Local::Virus {
                    pec_id: message_id,
                    virus,
                    notices: Vec::new(),
                }),
            }));
        }
        // Unknown to us: a retired mailbox (RB21).
        let all = ours.clone();
        let retired: Vec<bool> = self
            .kit
            .store(move |s| {
                all.iter()
                    .map(|r| Ok(s.retired_mailbox(r)?.is_some()))
                    .collect()
            })
            .await?;
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for (r, gone) in ours.into_iter().zip(retired) {
            if gone {
                unknown.push(r);
            } else {
                known.push(r);
            }
        }
        let to = self.sending_rems(tx)?;
        let pols = policies
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| rem.settings.policies.clone());
        let (mut acceptance, mut rejection, mut replay) =
            (None, None, !(known.is_empty() && unknown.is_empty()));
        for (list, event, code, slot) in [
            (&known, Event::RelayAcceptance, "RB01", &mut acceptance),
            (&unknown, Event::RelayRejection, "RB21", &mut rejection),
        ] {
            if list.is_empty() {
                continue;
            }
            let send = ToSend {
                key: rem_relay_key(&message_id, &format!("{}.{code}", event.name()), list),
                about: ev,
                event,
                code,
                refers_to: positions(&intended, list),
                sub: submission_of(ev, pols.clone()),
                to: format!("<{to}>"),
                rcpt_to: to.clone(),
                other_provider: peer.clone(),
                also: vec![received.clone()],
            };
            let (id, new) = self.send_relay(rem, tx, send, now).await?;
            replay &= !new;
            *slot = id;
        }
        self.pass_on(tx, remote).await?;
        passed_on.extend(remote.iter().cloned());
        if !known.is_empty() {
            self.pass_on(tx, &known).await?;
            passed_on.extend(known.iter().cloned());
        }
        if !strangers.is_empty() {
            self.not_pec(tx, why, stranger_policies, now).await?;
        }
        info!(msgid = %message_id, from = %peer, delivered = ?known, unknown = ?unknown, replay, "reception: rem dispatch relayed");
        Ok(Local::Rem(RemLocal::Relayed {
            message_id,
            acceptance,
            rejection,
            delivered: known,
            unknown,
            replay,
        }))
    }

    /// The sending REMS of a dispatch: the address of its `From` (`rem-service@` its
    /// domain, as the kit shows), else the SMTP reverse path.
    fn sending_rems(&self, tx: &Transaction) -> Result<String, AfterQueueError> {
        let from = crate::message::build::OriginalInfo::parse(&tx.data)
            .ok()
            .and_then(|i| i.from.into_iter().next())
            .and_then(|f| address_of(&f));
        from.or_else(|| (!tx.mail_from.is_empty()).then(|| tx.mail_from.clone()))
            .ok_or_else(|| AfterQueueError::Refused("a rem message without sender".into()))
    }

    /// A REM message nobody verified vouches for ([`RemLocal::Unverified`]): no answer to
    /// the sender it claims, nothing certified; logged, then the mailbox policy as for any
    /// mail from outside an ERDS.
    #[allow(clippy::too_many_arguments)]
    async fn rem_unverified(
        &self,
        tx: &Transaction,
        message_id: Option<String>,
        code: &'static str,
        why: String,
        local: &[String],
        remote: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let reason_text = format!(
            "messaggio REM la cui firma non è di un gestore REM accreditato ({code}: {why}): \
             nessuna risposta al mittente dichiarato"
        );
        warn!(
            queue_id = tx.queue_id.as_deref().unwrap_or("-"),
            msgid = message_id.as_deref().unwrap_or("-"),
            mail_from = %tx.mail_from,
            "reception: rem message not verified ({code}: {why}): no answer to its claimed sender, handled as mail from outside an ERDS"
        );
        let policies = self.policies(local).await?;
        self.refusals(tx, local, &policies, &reason_text, now)
            .await?;
        self.pass_on(tx, remote).await?;
        passed_on.extend(remote.iter().cloned());
        let handled = self.not_pec(tx, reason_text, policies, now).await?;
        Ok(Local::Rem(RemLocal::Unverified {
            message_id,
            code,
            why,
            handled: Box::new(handled),
        }))
    }

    /// A verified dispatch that is not valid: RelayRejection (when it can be referred to
    /// the dispatch), then the mailbox policy.
    #[allow(clippy::too_many_arguments)]
    async fn rem_rejected(
        &self,
        rem: &RemReception,
        tx: &Transaction,
        verdict: &Verdict,
        first: Option<(Evidence, Vec<u8>)>,
        parsed: Option<&RemMessage>,
        code: &'static str,
        why: String,
        local: &[String],
        remote: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let reason_text = format!("messaggio REM non valido ({code}): {why}");
        let policies = self.policies(local).await?;
        let mut rejection = None;
        let mut message_id = None;
        // The rejection first: the answer to the sending REMS is due whatever the policy.
        if let Some((ev, _)) = first.as_ref().filter(|(e, _)| e.message_id.is_some()) {
            let intended = recipients_of(ev);
            let about: Vec<String> = local
                .iter()
                .filter(|r| intended.iter().any(|i| i.eq_ignore_ascii_case(r)))
                .cloned()
                .collect();
            let id = ev.message_id.clone().unwrap_or_default();
            message_id = Some(id.clone());
            if !about.is_empty() {
                let to = self.sending_rems(tx)?;
                let pols = parsed
                    .map(|m| m.rem.applicable_policies.clone())
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| rem.settings.policies.clone());
                let send = ToSend {
                    // Keyed by the reason too: a forged message naming a dispatch's identifier
                    // cannot use up the key of another answer about it.
                    key: rem_relay_key(&id, &format!("RelayRejection.{code}"), &about),
                    about: ev,
                    event: Event::RelayRejection,
                    code,
                    refers_to: positions(&intended, &about),
                    sub: submission_of(ev, pols),
                    to: format!("<{to}>"),
                    rcpt_to: to.clone(),
                    other_provider: peer_name(verdict, Some(ev)),
                    // Not valid: the peer's evidence is not kept as received.
                    also: Vec::new(),
                };
                rejection = self.send_relay(rem, tx, send, now).await?.0;
            }
        } else {
            warn!(
                queue_id = tx.queue_id.as_deref().unwrap_or("-"),
                "reception: rem message not valid ({code}: {why}) without a readable evidence: no relay rejection can refer to it"
            );
        }
        self.refusals(tx, local, &policies, &reason_text, now)
            .await?;
        self.pass_on(tx, remote).await?;
        passed_on.extend(remote.iter().cloned());
        let handled = self.not_pec(tx, reason_text, policies, now).await?;
        Ok(Local::Rem(RemLocal::Rejected {
            message_id,
            code,
            rejection,
            handled: Box::new(handled),
        }))
    }

    /// Which dispatch of ours a peer's receipt (its signature verified, `verdict` valid) is
    /// about: our SubmissionAcceptance evidence of that message identifier stating the same
    /// digest of the original, the recipients of ours it speaks of, and signed by the REM
    /// service of the Trusted List that serves each of their domains (the MX check of
    /// [`crate::rem::dns`]: the access point does not record the peer it routed to, so the
    /// signer is checked against the services whose `smtp` supply points serve the domain
    /// now). Another granted provider's receipt about our dispatch is not correlated. A DNS
    /// failure that may pass is a temporary failure.
    async fn rem_correlate(
        &self,
        rem: &RemReception,
        verdict: &Verdict,
        ev: &Evidence,
    ) -> Result<RemCorrelation, AfterQueueError> {
        let message_id = ev.message_id.clone().unwrap_or_default();
        let id = message_id.clone();
        let ours = self
            .kit
            .store(move |s| {
                Ok(s.evidences_for(&id)?.into_iter().find(|e| {
                    e.evidence.direction == EvidenceDirection::Issued
                        && e.evidence.event == Event::SubmissionAcceptance.uri()
                }))
            })
            .await?;
        // Ours, and about the same original: the digest it states is the one we took.
        let ours = ours
            .and_then(|s| Evidence::parse(&s.evidence.xml).ok())
            .filter(|o| digest_of(o).is_some() && digest_of(o) == digest_of(ev));
        let Some(ours) = ours else {
            return Ok(RemCorrelation::Not(format!(
                "ricevuta REM su un messaggio sconosciuto: {message_id}"
            )));
        };
        let ours_list = recipients_of(&ours);
        let named: Vec<String> = outcome::named_recipients(ev)
            .into_iter()
            .filter(|n| ours_list.iter().any(|o| o.eq_ignore_ascii_case(n)))
            .collect();
        if named.is_empty() {
            return Ok(RemCorrelation::Not(format!(
                "ricevuta REM su {message_id} che non nomina alcun destinatario del messaggio"
            )));
        }
        let Trust::Granted {
            territory,
            provider,
            service,
        } = &verdict.trust
        else {
            return Ok(RemCorrelation::Not(format!(
                "ricevuta REM su {message_id} non firmata da un servizio REM accreditato"
            )));
        };
        let (Some(mx), Some(peers)) = (&rem.mx, &rem.peers) else {
            return Ok(RemCorrelation::Not(format!(
                "ricevuta REM su {message_id}: nessuna verifica MX del dominio del destinatario"
            )));
        };
        let peers = peers.current();
        let mut domains: Vec<String> = named.iter().map(|n| domain_of(n)).collect();
        domains.sort();
        domains.dedup();
        for d in &domains {
            let answer = match mx.mx(d).await {
                Ok(a) => a,
                Err(e) if e.is_temporary() => return Err(AfterQueueError::Rem(e.to_string())),
                Err(e) => {
                    return Ok(RemCorrelation::Not(format!(
                        "ricevuta REM su {message_id}: dominio {d}: {e}"
                    )))
                }
            };
            let serves = match dns::decide_among(&answer, peers.all(), |p| {
                p.service.supply_points.as_slice()
            }) {
                PeerRouting::Served { services, .. } => services.iter().any(|p| {
                    p.territory == *territory
                        && p.provider == *provider
                        && p.service.name == *service
                }),
                _ => false,
            };
            if !serves {
                return Ok(RemCorrelation::Not(format!(
                    "ricevuta REM su {message_id} firmata da {provider} ({service}), che non \
                     serve il dominio {d} del destinatario"
                )));
            }
        }
        Ok(RemCorrelation::Ours {
            ours: Box::new(ours),
            named,
        })
    }

    /// Whether the outcome `ev` states was decided before for every recipient it names, by
    /// another evidence (the first outcome stands): a RelayAcceptance / RelayRejection
    /// after the relay was decided, a ContentConsignment (Failure) after the consignment.
    async fn decided_before(
        &self,
        ev: &Evidence,
        named: &[String],
    ) -> Result<bool, AfterQueueError> {
        let (id, event, evidence_id) = (
            ev.message_id.clone().unwrap_or_default(),
            ev.event,
            ev.evidence_id.clone(),
        );
        let named = named.to_vec();
        Ok(self
            .kit
            .store(move |s| {
                let stored = s.evidences_for(&id)?;
                Ok(named.iter().all(|r| {
                    let o = outcome::of(&stored, r);
                    let slot = if outcome::is_relay_outcome(event) {
                        o.relay
                    } else if outcome::is_consignment_outcome(event) {
                        o.consignment
                    } else {
                        None
                    };
                    slot.is_some_and(|d| d.evidence_id != evidence_id)
                }))
            })
            .await?)
    }

    /// A REM receipt to our service address: judged, correlated, stored, answered.
    #[allow(clippy::too_many_arguments)]
    async fn rem_receipt(
        &self,
        rem: &RemReception,
        tx: &Transaction,
        verdict: &Verdict,
        valid: bool,
        why: &str,
        first: Option<(Evidence, Vec<u8>)>,
        service: &[String],
        now: Instant,
    ) -> Result<RemLocal, AfterQueueError> {
        let event = verdict.event;
        let Some((ev, xml)) = first.filter(|_| valid) else {
            self.log_not_pec(
                tx,
                service,
                EventKind::Discarded,
                "discarded",
                &format!("ricevuta REM non valida: {why}"),
                now,
            )
            .await?;
            warn!(
                queue_id = tx.queue_id.as_deref().unwrap_or("-"),
                "reception: rem receipt not valid ({why}): consumed"
            );
            return Ok(RemLocal::Receipt {
                event,
                message_id: None,
                correlated: false,
                failure: None,
                replay: false,
            });
        };
        let message_id = ev.message_id.clone().unwrap_or_default();
        let (ours, named) = match self.rem_correlate(rem, verdict, &ev).await? {
            RemCorrelation::Ours { ours, named } => (*ours, named),
            RemCorrelation::Not(reason) => {
                self.log_not_pec(
                    tx,
                    service,
                    EventKind::Discarded,
                    "uncorrelated",
                    &reason,
                    now,
                )
                .await?;
                warn!(msgid = %message_id, "reception: rem receipt not correlated ({reason}): consumed");
                return Ok(RemLocal::Receipt {
                    event,
                    message_id: Some(message_id),
                    correlated: false,
                    failure: None,
                    replay: false,
                });
            }
        };
        let peer = peer_name(verdict, Some(&ev));
        if self.decided_before(&ev, &named).await? {
            let reason = format!(
                "ricevuta REM {} su {message_id} per {}: esito già deciso, nessun effetto",
                ev.event,
                named.join(", ")
            );
            self.log_not_pec(tx, service, EventKind::Discarded, "replay", &reason, now)
                .await?;
            warn!(msgid = %message_id, "reception: {reason}");
            return Ok(RemLocal::Receipt {
                event,
                message_id: Some(message_id),
                correlated: true,
                failure: None,
                replay: true,
            });
        }
        let received = received_row(&ev, &xml, &peer, tx.queue_id.as_deref());
        let (failure, replay) = if ev.event == Event::RelayRejection {
            let code = ev.reason().map_or("RB02", |r| r.code);
            let ours_list = recipients_of(&ours);
            let refers_to = positions(&ours_list, &named);
            let sub = submission_of(&ours, rem.settings.policies.clone());
            let send = ToSend {
                key: rem_relay_failure_key(&message_id, &ev.evidence_id),
                about: &ours,
                event: Event::RelayFailure,
                code,
                refers_to,
                to: sub.from.clone(),
                rcpt_to: sub.sender.clone(),
                sub,
                other_provider: peer.clone(),
                also: vec![received],
            };
            let (id, new) = self.send_relay(rem, tx, send, now).await?;
            info!(msgid = %message_id, code, "reception: relay rejection from {peer}: relay failure to our sender");
            (id, !new)
        } else {
            let (row, event) = received;
            let recorded = self
                .kit
                .store(move |s| s.record_evidence(&row, &event))
                .await?;
            info!(msgid = %message_id, recorded, "reception: rem receipt from {peer} correlated: evidence stored, consumed");
            (None, !recorded)
        };
        Ok(RemLocal::Receipt {
            event,
            message_id: Some(message_id),
            correlated: true,
            failure,
            replay,
        })
    }

    /// A valid REM receipt from a peer addressed to `to` (the sender its evidence names;
    /// a ContentConsignment goes straight there, as the kit shows): correlated with our
    /// dispatch like a receipt to our service address, then passed on once through the
    /// outbox with the peer's evidence stored in the same transaction (keyed by the
    /// dispatch and its recipients: a second consignment outcome for them is a replay,
    /// never delivered). Not correlated, or decided before: logged and consumed.
    #[allow(clippy::too_many_arguments)]
    async fn rem_receipt_to_users(
        &self,
        rem: &RemReception,
        tx: &Transaction,
        verdict: &Verdict,
        ev: &Evidence,
        xml: &[u8],
        to: &[String],
        now: Instant,
    ) -> Result<RemLocal, AfterQueueError> {
        let message_id = ev.message_id.clone().unwrap_or_default();
        let consumed = |correlated, replay| RemLocal::Receipt {
            event: Some(ev.event),
            message_id: Some(message_id.clone()),
            correlated,
            failure: None,
            replay,
        };
        let named = match self.rem_correlate(rem, verdict, ev).await? {
            RemCorrelation::Ours { named, .. } => named,
            RemCorrelation::Not(reason) => {
                self.log_not_pec(tx, to, EventKind::Discarded, "uncorrelated", &reason, now)
                    .await?;
                warn!(msgid = %message_id, "reception: rem receipt to {to:?} not correlated ({reason}): consumed");
                return Ok(consumed(false, false));
            }
        };
        if self.decided_before(ev, &named).await? {
            let reason = format!(
                "ricevuta REM {} su {message_id} per {}: esito già deciso, non consegnata",
                ev.event,
                named.join(", ")
            );
            self.log_not_pec(tx, to, EventKind::Discarded, "replay", &reason, now)
                .await?;
            warn!(msgid = %message_id, "reception: {reason}");
            return Ok(consumed(true, true));
        }
        let peer = peer_name(verdict, Some(ev));
        let received = received_row(ev, xml, &peer, tx.queue_id.as_deref());
        let class = if outcome::is_consignment_outcome(ev.event) {
            "consignment".to_string()
        } else {
            format!("{}.{}", ev.event.name(), ev.evidence_id)
        };
        let header_id = crate::message::build::OriginalInfo::parse(&tx.data)
            .ok()
            .and_then(|i| i.message_id)
            .unwrap_or_else(|| ev.evidence_id.clone());
        let out = Outbound {
            key: rem_receipt_key(&message_id, &class, &named),
            data: tx.data.to_vec(),
            message_id: header_id,
            mail_from: tx.mail_from.clone(),
            rcpt_to: to.to_vec(),
            created_at: now,
            injected_at: None,
        };
        let effect = Effect::WithEvidences {
            effect: Box::new(Effect::Log(Vec::new())),
            evidences: vec![received],
        };
        match self.kit.emit_outbound(out, effect).await? {
            Emitted::New(_) => {
                info!(msgid = %message_id, to = ?to, "reception: rem receipt {} from {peer} correlated: evidence stored, delivered", ev.event);
                Ok(RemLocal::Delivered {
                    event: ev.event,
                    to: to.to_vec(),
                })
            }
            _ => {
                info!(msgid = %message_id, "reception: rem receipt {} for {named:?} delivered before: nothing new", ev.event);
                Ok(consumed(true, true))
            }
        }
    }

    /// Issues the evidence of `send`, composes its REM receipt and emits it once with the
    /// evidences: the Message-ID and whether it is new. A receipt staged already under the
    /// key is not built again (no time stamp asked for).
    async fn send_relay(
        &self,
        rem: &RemReception,
        tx: &Transaction,
        send: ToSend<'_>,
        now: Instant,
    ) -> Result<(Option<String>, bool), AfterQueueError> {
        let key = send.key.clone();
        let k = key.clone();
        if let Some(o) = self.kit.store(move |s| s.outbound(&k)).await? {
            info!(key = %key, "reception: rem receipt emitted before: none built");
            return Ok((Some(o.message_id), false));
        }
        let input = RelayInput {
            about: send.about.clone(),
            event: send.event,
            reason: reason_by_code(send.code)?,
            refers_to: send.refers_to.clone(),
            event_time: now,
            policies: rem.settings.policies.clone(),
            provider: rem.settings.provider_name.clone(),
        };
        let issued = issue::issue_relay(&self.kit, rem.settings.evidence_tsa.as_ref(), input)
            .await
            .map_err(|e| AfterQueueError::Rem(e.to_string()))?;
        let composed = self.compose_relay(rem, &send, &issued, now).await?;
        let sender = send.sub.sender.clone();
        let (ours, event) =
            issued.stored(&sender, recipient_list(send.about), tx.queue_id.as_deref());
        let mut evidences = send.also;
        evidences.push((ours, event));
        // Relay-accepted: the consignment wait of each recipient begins (EN 319 532-4
        // Annex D; the delivery point's outcome closes it, else the timers' RD03).
        let waits = match send.event {
            Event::RelayAcceptance => {
                let all = recipients_of(send.about);
                send.refers_to
                    .iter()
                    .filter_map(|&n| all.get((n as usize).checked_sub(1)?))
                    .map(|r| RemWait {
                        which: RemWaitKind::Consignment,
                        message_id: issued.model.message_id.clone().unwrap_or_default(),
                        recipient: r.clone(),
                        started_at: now,
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        let effect = Effect::WithEvidences {
            effect: Box::new(Effect::RemWaits {
                effect: Box::new(Effect::Log(Vec::new())),
                waits,
            }),
            evidences,
        };
        let emitted = self
            .kit
            .emit_outbound(outbound(key, composed, now), effect)
            .await?;
        let new = matches!(emitted, Emitted::New(_));
        Ok((emitted.message_id().map(str::to_string), new))
    }

    async fn compose_relay(
        &self,
        rem: &RemReception,
        send: &ToSend<'_>,
        issued: &Issued,
        now: Instant,
    ) -> Result<Composed, AfterQueueError> {
        let provider = Provider {
            name: rem.settings.provider_name.clone(),
            service_address: self.kit.issuer.service_address.clone(),
        };
        let message_id = rem_id(now, &self.kit.issuer.service_address);
        let signer = self.kit.signer.clone();
        let (sub, xml, event, code, evidence_id, to, rcpt_to, other) = (
            send.sub.clone(),
            issued.xml.clone(),
            send.event,
            send.code,
            issued.id().to_string(),
            send.to.clone(),
            send.rcpt_to.clone(),
            send.other_provider.clone(),
        );
        blocking(move || {
            let r = Receipt {
                event,
                code,
                message_id: &message_id,
                evidence_id: &evidence_id,
                to: &to,
                rcpt_to: &rcpt_to,
                other_provider: Some(&other),
                recipient: None,
                relay_date: Some(now),
            };
            Composer {
                provider: &provider,
                signer: &*signer,
            }
            .receipt(&sub, &r, &xml, &[], now)
        })
        .await?
        .map_err(|e| AfterQueueError::Rem(format!("composing the rem receipt: {e}")))
    }
}
