// SPDX-License-Identifier: GPL-3.0-or-later
//! The access point's REM path (issue 20, ETSI EN 319 532-4): a submission whose every
//! recipient goes as REM ([`RemAccess::route`]) from a sender with an identity record is
//! accepted as a REM dispatch (the original prepared and carried with the signed
//! SubmissionAcceptance evidence, in place of the PEC transport envelope), or refused with
//! a SubmissionRejection REM receipt. The checks before are the PEC ones (authentication,
//! formal checks, antivirus, attachments); the records are the PEC ones plus the evidence.
//!
//! The SubmissionAcceptance receipt to the sender follows after queue, once
//! ([`after_queue`]), as the ricevuta di accettazione does: it carries the evidence of the
//! dispatch, read back from our own queued message and checked to be signed by us, and
//! stored with the receipt's outbox row and the acceptance's records in one transaction.
//!
//! Mixed submissions (PEC and REM recipients) go as PEC for now: the split of the lead's
//! design (a dispatch through the outbox for the REM recipients) is not done here.

use std::sync::Arc;

use tracing::{info, warn};

use super::{tempfail, AccessPoint, Decision, Submission};
use crate::config::{Protocol, RemMode, RemSettings};
use crate::issuing::{blocking, Emitted, IssueError, Issuing};
use crate::message::build::{Certification, OriginalInfo};
use crate::message::kind::{MessageKind, RecipientType};
use crate::message::time::Instant;
use crate::rem::codes::{Event, Reason};
use crate::rem::compose::{self, Composed, Composer, EvidenceAttachment, Provider, Receipt};
use crate::rem::dns::{self, MxLookup, PeerRouting};
use crate::rem::evidence::Evidence;
use crate::rem::issue::{self, Authentication, EvidenceInput, Issued};
use crate::rem::message::DigestAlgorithm;
use crate::rem::trust::PeersHandle;
use crate::smtp::Transaction;
use crate::store::outbox::{acceptance_key, non_acceptance_key};
use crate::store::{Accepted, Effect, Outbound, Refused, RemWait, RemWaitKind, SenderIdentity};

/// The authentication method the evidences name for the SMTP submission session.
pub const AUTH_METHOD: &str = "SMTP AUTH";

/// What the access point needs for REM.
pub struct RemAccess {
    pub settings: RemSettings,
    /// Our domains (`provider.domains`): we speak REM for them when `[rem] enabled`.
    pub domains: Vec<String>,
    /// The REM services of the accepted Trusted Lists; `None`: no peer is known to speak
    /// REM.
    pub peers: Option<Arc<PeersHandle>>,
    /// The MX check of a peer's domain; `None`: no peer is known to speak REM.
    pub mx: Option<Arc<dyn MxLookup>>,
}

/// How a submission goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Pec,
    /// Every recipient goes as REM; `forced`: a recipient domain is set to `rem` (by its
    /// override or `mode = "rem"`), so a sender without identity is refused, not sent PEC.
    Rem {
        forced: bool,
    },
    /// Recipients on both protocols (sent as PEC, see the module documentation).
    Mixed,
}

/// A submission on the REM path: the sender's identity record.
#[derive(Debug, Clone)]
pub struct RemSender {
    pub identity: Option<SenderIdentity>,
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

impl RemAccess {
    /// Whether `domain` speaks REM: one of ours, or served (every MX host) by a REM service
    /// of the Trusted Lists granted at `at`. A DNS failure that may pass is an error.
    async fn speaks_rem(&self, domain: &str, at: Instant) -> Result<bool, dns::DnsError> {
        if self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Ok(true);
        }
        let (Some(peers), Some(mx)) = (&self.peers, &self.mx) else {
            return Ok(false);
        };
        let peers = peers.current();
        let trusted: Vec<_> = peers.trusted_at(at).cloned().collect();
        if trusted.is_empty() {
            return Ok(false);
        }
        let answer = mx.mx(domain).await?;
        Ok(matches!(
            dns::decide_among(&answer, &trusted, |p| p.service.supply_points.as_slice()),
            PeerRouting::Served { .. }
        ))
    }

    /// The protocol of each recipient domain ([`RemSettings::protocol_for`]), the trust
    /// data asked only when the mode needs it.
    pub async fn route(&self, rcpt_to: &[String], at: Instant) -> Result<Route, dns::DnsError> {
        let mut domains: Vec<String> = rcpt_to.iter().map(|r| domain_of(r)).collect();
        domains.sort();
        domains.dedup();
        let (mut rem, mut pec, mut forced) = (0, 0, false);
        for d in &domains {
            let yes = self.settings.protocol_for(d, || true);
            let no = self.settings.protocol_for(d, || false);
            let p = if yes == no {
                forced |= yes == Protocol::Rem
                    && (self.settings.domains.contains_key(d)
                        || self.settings.mode == RemMode::Rem);
                yes
            } else if self.speaks_rem(d, at).await? {
                Protocol::Rem
            } else {
                Protocol::Pec
            };
            match p {
                Protocol::Rem => rem += 1,
                Protocol::Pec => pec += 1,
            }
        }
        Ok(match (rem, pec) {
            (0, _) => Route::Pec,
            (_, 0) => Route::Rem { forced },
            _ => Route::Mixed,
        })
    }
}

/// The SubmissionRejection reason of a PEC refusal kind and rule: malware RA03, the
/// provider's policy (mailbox state and quota, size, recipients, attachments, a sender
/// without identity) RA05, any other formal fault RA02.
pub fn rejection_code(kind: MessageKind, policy: bool) -> &'static str {
    match (kind, policy) {
        (MessageKind::NonAcceptanceVirus, _) => "RA03",
        (_, true) => "RA05",
        _ => "RA02",
    }
}

fn reason(code: &str) -> Result<&'static Reason, String> {
    Reason::by_code(code).ok_or_else(|| format!("unknown reason code {code}"))
}

/// The REM submission data of a refused message, from the certification data (the
/// message may be too broken for [`compose::Submission::from_original`]).
fn refused_submission(
    s: &Submission,
    cert: &Certification,
    subject: &str,
    policies: &[String],
) -> compose::Submission {
    let digest = DigestAlgorithm::Sha256;
    compose::Submission {
        message_id: cert.identificativo.clone(),
        ua_message_identifier: None,
        sender: s.mail_from.clone(),
        from: format!("<{}>", s.mail_from),
        to: Some(s.rcpt_to.join(", ")),
        cc: None,
        in_reply_to: None,
        recipients: s.rcpt_to.clone(),
        subject: subject.to_string(),
        policies: policies.to_vec(),
        digest,
        digest_value: digest.digest_value(&s.message),
    }
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

fn provider(settings: &RemSettings, kit: &Issuing) -> Provider {
    Provider {
        name: settings.provider_name.clone(),
        service_address: kit.issuer.service_address.clone(),
    }
}

impl AccessPoint {
    /// The REM path of `s` when `[rem]` is wired and routes it there: `Ok(None)` for PEC.
    pub(super) async fn rem_path(
        self: &Arc<Self>,
        s: &Submission,
        at: Instant,
    ) -> Result<Option<RemSender>, Decision> {
        let Some(rem) = &self.rem else {
            return Ok(None);
        };
        if !rem.settings.enabled {
            return Ok(None);
        }
        let route = match rem.route(&s.rcpt_to, at).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "access point: rem routing: dns unavailable: tempfail");
                return Err(tempfail("PEC: DNS non disponibile"));
            }
        };
        let forced = match route {
            Route::Pec => return Ok(None),
            Route::Mixed => {
                info!("submission to pec and rem recipients: sent as pec");
                return Ok(None);
            }
            Route::Rem { forced } => forced,
        };
        let from = s.mail_from.clone();
        let identity = self
            .blocking("archivio", move |ap| ap.kit.store.sender_identity(&from))
            .await?;
        match identity {
            Some(identity) => Ok(Some(RemSender {
                identity: Some(identity),
            })),
            None if forced => Ok(Some(RemSender { identity: None })),
            // `auto`: a sender without identity sends PEC.
            None => Ok(None),
        }
    }

    /// Accepts `s` on the REM path: the evidence, the dispatch, the acceptance record.
    pub(super) async fn rem_accept(
        self: &Arc<Self>,
        s: &mut Submission,
        sender: &RemSender,
        cert: Certification,
        login: String,
        at: Instant,
    ) -> Decision {
        let Some(rem) = self.rem.clone() else {
            return tempfail("PEC: errore interno");
        };
        let Some(identity) = sender.identity.clone() else {
            let subject = OriginalInfo::parse(&s.message)
                .map(|i| i.subject)
                .unwrap_or_default();
            return self
                .rem_refuse(
                    s,
                    cert,
                    &subject,
                    at,
                    MessageKind::NonAcceptance,
                    "RA05",
                    "mittente senza identita' verificata: l'invio REM non e' consentito"
                        .to_string(),
                    None,
                )
                .await;
        };
        let pec_id = cert.identificativo.clone();
        let policies = rem.settings.policies.clone();
        let message = std::mem::take(&mut s.message);
        let (id2, pol2) = (pec_id.clone(), policies.clone());
        let prepared = match blocking(move || {
            let prepared = compose::prepare_original(&message, &id2)?;
            let sub = compose::Submission::from_original(&prepared, pol2, DigestAlgorithm::Sha256)?;
            Ok::<_, compose::ComposeError>((prepared, sub, message))
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "access point: rem: internal error: tempfail");
                return tempfail("PEC: errore interno");
            }
        };
        let (original, sub) = match prepared {
            Ok((original, sub, message)) => {
                s.message = message;
                (original, sub)
            }
            Err(e) => {
                // The formal checks passed but the original cannot be carried: a format
                // the REM dispatch cannot take.
                info!(pec_id = %pec_id, error = %e, "rem submission refused: the original cannot be prepared");
                let subject = OriginalInfo::parse(&s.message)
                    .map(|i| i.subject)
                    .unwrap_or_default();
                return self
                    .rem_refuse(
                        s,
                        cert,
                        &subject,
                        at,
                        MessageKind::NonAcceptance,
                        "RA02",
                        e.to_string(),
                        None,
                    )
                    .await;
            }
        };
        let Ok(ra01) = reason("RA01") else {
            return tempfail("PEC: errore interno");
        };
        let input = EvidenceInput {
            event: Event::SubmissionAcceptance,
            reason: ra01,
            message_id: pec_id.clone(),
            event_time: at,
            submission_time: Some(at),
            sender: s.mail_from.clone(),
            identity: Some(identity),
            // Only the time the milter saw: none recorded, none stated.
            authentication: s.auth_at.map(|at| Authentication {
                at,
                method: AUTH_METHOD.to_string(),
            }),
            recipients: s.rcpt_to.clone(),
            refers_to_recipient: None,
            ua_message_id: sub.ua_message_identifier.clone(),
            digest: Some(sub.digest_value.clone()),
            subject: sub.subject.clone(),
            policies,
            provider: rem.settings.provider_name.clone(),
        };
        let issued = match issue::issue(&self.kit, rem.settings.evidence_tsa.as_ref(), input).await
        {
            Ok(i) => i,
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: rem evidence not issued: tempfail");
                return tempfail("PEC: marca temporale non disponibile");
            }
        };
        let provider = provider(&rem.settings, &self.kit);
        let signer = self.kit.signer.clone();
        let dispatch = match blocking(move || {
            Composer {
                provider: &provider,
                signer: &*signer,
            }
            .dispatch(
                &original,
                &sub,
                &EvidenceAttachment {
                    event: Event::SubmissionAcceptance,
                    xml: &issued.xml,
                },
                issued.id(),
                &[],
                None,
                at,
            )
        })
        .await
        {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                warn!(pec_id = %pec_id, error = %e, "access point: rem dispatch not composed: tempfail");
                return tempfail("PEC: firma non disponibile");
            }
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: rem: internal error: tempfail");
                return tempfail("PEC: errore interno");
            }
        };
        // No PEC receipt ever comes back for a REM dispatch: no PEC tracking row (its 12 h
        // and 24 h notices would state a PEC outcome that cannot happen). The REM
        // recipients are recorded as outside PEC; their REM outcomes come as evidences.
        let mut cert = cert;
        for d in &mut cert.destinatari {
            d.tipo = RecipientType::Esterno;
        }
        let accepted = Accepted {
            pec_id: pec_id.clone(),
            queue_id: s.queue_id.clone(),
            at,
            cert,
            login,
            auth_at: s.auth_at,
            provider: self.kit.issuer.provider_name.clone(),
        };
        if let Err(d) = self
            .blocking("archivio", move |ap| {
                ap.kit.store.record_accepted(&accepted)
            })
            .await
        {
            return d;
        }
        info!(pec_id = %pec_id, "submission accepted: rem dispatch");
        Decision::Dispatch(Box::new(dispatch))
    }

    /// Refuses `s` on the REM path: the SubmissionRejection evidence and REM receipt to the
    /// sender, emitted through the outbox with the PEC refusal's records and the evidence
    /// (one transaction). A TSA failure is a tempfail, nothing recorded.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn rem_refuse(
        self: &Arc<Self>,
        s: &Submission,
        cert: Certification,
        subject: &str,
        at: Instant,
        kind: MessageKind,
        code: &'static str,
        why: String,
        quarantine: Option<Vec<u8>>,
    ) -> Decision {
        let Some(rem) = self.rem.clone() else {
            return tempfail("PEC: errore interno");
        };
        let Ok(r) = reason(code) else {
            return tempfail("PEC: errore interno");
        };
        let pec_id = cert.identificativo.clone();
        let from = s.mail_from.clone();
        let identity = match self
            .blocking("archivio", move |ap| ap.kit.store.sender_identity(&from))
            .await
        {
            Ok(i) => i,
            Err(d) => return d,
        };
        let sub = refused_submission(s, &cert, subject, &rem.settings.policies);
        let input = EvidenceInput {
            event: Event::SubmissionRejection,
            reason: r,
            message_id: pec_id.clone(),
            event_time: at,
            submission_time: Some(at),
            sender: s.mail_from.clone(),
            identity,
            // Only the time the milter saw: none recorded, none stated.
            authentication: s.auth_at.map(|at| Authentication {
                at,
                method: AUTH_METHOD.to_string(),
            }),
            recipients: s.rcpt_to.clone(),
            refers_to_recipient: None,
            ua_message_id: None,
            digest: None,
            subject: subject.to_string(),
            policies: rem.settings.policies.clone(),
            provider: rem.settings.provider_name.clone(),
        };
        let issued = match issue::issue(&self.kit, rem.settings.evidence_tsa.as_ref(), input).await
        {
            Ok(i) => i,
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: rem evidence not issued: tempfail");
                return tempfail("PEC: marca temporale non disponibile");
            }
        };
        let receipt = match self.rem_receipt(&rem, &sub, &issued, code, at).await {
            Ok(r) => r,
            Err(d) => return d,
        };
        let recipients = cert
            .destinatari
            .iter()
            .map(|d| (d.address.clone(), d.tipo))
            .collect();
        let stored = issued.stored(&s.mail_from, recipients, s.queue_id.as_deref());
        let refused = Refused {
            pec_id: pec_id.clone(),
            queue_id: s.queue_id.clone(),
            at,
            cert,
            kind,
            reason: format!("{code} {why}"),
            notice_id: receipt.message_id.clone(),
            quarantine,
            provider: self.kit.issuer.provider_name.clone(),
            login: s.login.clone(),
            auth_at: s.auth_at,
        };
        let effect = Effect::WithEvidences {
            effect: Box::new(Effect::Refused(Box::new(refused))),
            evidences: vec![stored],
        };
        let out = outbound(non_acceptance_key(&pec_id), receipt, at);
        match self.kit.emit_outbound(out, effect).await {
            Ok(_) => {}
            Err(IssueError::Staged(e)) => {
                warn!(pec_id = %pec_id, "rem submission rejection staged, not injected (the outbox sweep sends it): {e}");
            }
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: the rem refusal could not be recorded: tempfail");
                return tempfail("PEC: archivio non disponibile");
            }
        }
        info!(pec_id = %pec_id, code, reason = %why, "rem submission refused: submission rejection sent");
        self.refused(kind, format!("REM: messaggio non accettato: {why}"))
    }

    async fn rem_receipt(
        self: &Arc<Self>,
        rem: &RemAccess,
        sub: &compose::Submission,
        issued: &Issued,
        code: &'static str,
        at: Instant,
    ) -> Result<Composed, Decision> {
        compose_receipt(
            &self.kit,
            &rem.settings.provider_name,
            sub,
            issued,
            code,
            at,
        )
        .await
        .map_err(|e| {
            warn!(error = %e, "access point: rem receipt not composed: tempfail");
            tempfail("PEC: firma non disponibile")
        })
    }
}

/// The REM receipt to the sender of `sub` carrying `issued` (its event, reason `code`).
async fn compose_receipt(
    kit: &Issuing,
    provider_name: &str,
    sub: &compose::Submission,
    issued: &Issued,
    code: &'static str,
    at: Instant,
) -> Result<Composed, String> {
    let provider = Provider {
        name: provider_name.to_string(),
        service_address: kit.issuer.service_address.clone(),
    };
    let message_id = crate::message::ids::rem_id(at, &kit.issuer.service_address);
    let (signer, sub, xml, event, evidence_id) = (
        kit.signer.clone(),
        sub.clone(),
        issued.xml.clone(),
        issued.model.event,
        issued.id().to_string(),
    );
    blocking(move || {
        let r = Receipt {
            event,
            code,
            message_id: &message_id,
            evidence_id: &evidence_id,
            to: &sub.from,
            rcpt_to: &sub.sender,
            other_provider: None,
            recipient: None,
            relay_date: None,
        };
        Composer {
            provider: &provider,
            signer: &*signer,
        }
        .receipt(&sub, &r, &xml, &[], at)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// After queue: the SubmissionAcceptance REM receipt of our own dispatch `tx` whose
/// acceptance `accepted` is pending, once. The evidence is the dispatch's, checked to be
/// ours (our signing certificate, the time stamp as [`crate::rem::xades::sign`] checked it,
/// the identifiers of this submission); it is stored with the receipt's outbox row and the
/// acceptance's records ([`Effect::WithEvidences`] around [`Effect::Acceptance`]).
///
/// The same transaction begins the REM waits of the dispatch (EN 319 532-4 Annex D): the
/// relay wait of each recipient of a peer, the consignment wait of each of our own
/// (`local`: no relay takes place for them).
pub async fn after_queue(
    kit: &Issuing,
    tx: &Transaction,
    accepted: Accepted,
    local: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Option<(String, String)>, IssueError> {
    let pec_id = accepted.pec_id.clone();
    let data = tx.data.clone();
    let cert_der = kit.signer.certificate_der().to_vec();
    let id2 = pec_id.clone();
    let read = blocking(move || -> Result<(compose::Submission, Issued), String> {
        let m = crate::rem::message::parse(&data).map_err(|e| e.to_string())?;
        let original = m
            .original
            .as_deref()
            .ok_or("the dispatch has no original")?;
        let digest = m.digest_algorithm().map_err(|e| e.to_string())?;
        let sub =
            compose::Submission::from_original(original, m.rem.applicable_policies.clone(), digest)
                .map_err(|e| e.to_string())?;
        let [section] = m.evidences.as_slice() else {
            return Err("the dispatch does not carry exactly one evidence".into());
        };
        crate::rem::xades::verify_own(&section.body, &cert_der, None).map_err(|e| e.to_string())?;
        let model = Evidence::parse(&section.body).map_err(|e| e.to_string())?;
        if model.event != Event::SubmissionAcceptance
            || model.message_id.as_deref() != Some(id2.as_str())
            || sub.message_id != id2
        {
            return Err("the evidence is not the submission acceptance of this dispatch".into());
        }
        Ok((
            sub,
            Issued {
                model,
                xml: section.body.clone(),
            },
        ))
    })
    .await?;
    let (sub, issued) = match read {
        Ok(r) => r,
        Err(e) => {
            // Our own dispatch as the milter wrote it: unreadable means something is wrong
            // here; retried (and the pending acceptance left open) until looked at.
            warn!(msgid = %pec_id, "after queue: our rem dispatch cannot be read back: {e}");
            return Err(IssueError::Task(format!(
                "rem dispatch \"{pec_id}\" cannot be read back: {e}"
            )));
        }
    };
    let provider_name = issued
        .model
        .issuer
        .first()
        .and_then(|a| a.value())
        .unwrap_or(&kit.issuer.provider_name)
        .to_string();
    let at = kit.clock.now();
    let receipt = compose_receipt(kit, &provider_name, &sub, &issued, "RA01", at)
        .await
        .map_err(IssueError::Task)?;
    let recipients = accepted
        .cert
        .destinatari
        .iter()
        .map(|d| (d.address.clone(), d.tipo))
        .collect();
    let stored = issued.stored(
        &accepted.cert.mittente,
        recipients,
        accepted.queue_id.as_deref(),
    );
    let receipt_id = receipt.message_id.clone();
    let waits = accepted
        .cert
        .destinatari
        .iter()
        .map(|d| RemWait {
            which: if local(&d.address) {
                RemWaitKind::Consignment
            } else {
                RemWaitKind::Relay
            },
            message_id: pec_id.clone(),
            recipient: d.address.clone(),
            started_at: at,
        })
        .collect();
    let effect = Effect::WithEvidences {
        effect: Box::new(Effect::RemWaits {
            effect: Box::new(Effect::Acceptance {
                pec_id: pec_id.clone(),
                receipt_id: receipt_id.clone(),
                at,
            }),
            waits,
        }),
        evidences: vec![stored],
    };
    let queue_id = tx.queue_id.as_deref().unwrap_or("-");
    match kit
        .emit_outbound(outbound(acceptance_key(&pec_id), receipt, at), effect)
        .await?
    {
        Emitted::New(_) => info!(
            queue_id,
            msgid = %pec_id,
            receipt = %receipt_id,
            "after queue: rem submission acceptance injected"
        ),
        other => {
            warn!(
                queue_id,
                msgid = %pec_id,
                receipt = other.message_id().unwrap_or("-"),
                "after queue: rem submission acceptance already emitted: none sent"
            );
            return Ok(None);
        }
    }
    Ok(Some((pec_id, receipt_id)))
}
