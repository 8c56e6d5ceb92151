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
//! Each recipient's protocol is decided once ([`RemAccess::route`]: REM, PEC, or an
//! ordinary address outside any ERDS) and recorded with the acceptance. Ordinary
//! addresses get the dispatch relayed, with the RelayToNonERDS evidences of
//! [`super::nonerds`]. A submission to both PEC and REM recipients is split
//! (`AccessPoint::split_accept`): the REM dispatch through the outbox, the PEC envelope
//! for the PEC recipients.

use std::sync::Arc;

use tracing::{info, warn};

use super::{tempfail, AccessPoint, Decision, Submission};
use crate::config::{Protocol, RemMode, RemSettings};
use crate::issuing::{blocking, Emitted, IssueError, Issuing};
use crate::message::build::{Certification, OriginalInfo};
use crate::message::kind::{MessageKind, RecipientType};
use crate::message::time::Instant;
use crate::rem::codes::{Event, Reason};
use crate::rem::compose::{self, Composed, Composer, EvidenceAttachment, Provider};
use crate::rem::dns::{self, MxLookup, PeerRouting};
use crate::rem::evidence::Evidence;
use crate::rem::issue::{self, Authentication, EvidenceInput, Issued};
use crate::rem::message::DigestAlgorithm;
use crate::rem::trust::PeersHandle;
use crate::smtp::Transaction;
use crate::store::outbox::{
    acceptance_key, non_acceptance_key, rem_acceptance_key, rem_dispatch_key,
};
use crate::store::{
    Accepted, Effect, Outbound, RecipientProtocol, Refused, RemWait, RemWaitKind, SenderIdentity,
};

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

/// How a submission goes: the protocol of each recipient ([`RemAccess::route`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// Every recipient, in order, with its protocol.
    pub recipients: Vec<(String, RecipientProtocol)>,
    /// A recipient domain is set to `rem` (by its override or `mode = "rem"`), so a sender
    /// without identity is refused, not sent PEC.
    pub forced: bool,
}

impl Routing {
    /// Whether every recipient goes as PEC.
    pub fn all_pec(&self) -> bool {
        self.recipients
            .iter()
            .all(|(_, p)| *p == RecipientProtocol::Pec)
    }

    /// Whether some recipients go as PEC and others on the REM path.
    pub fn mixed(&self) -> bool {
        !self.all_pec()
            && self
                .recipients
                .iter()
                .any(|(_, p)| *p == RecipientProtocol::Pec)
    }
}

/// What [`AccessPoint::build_dispatch`] gives.
enum Built {
    Ready(Box<(Composed, Issued, compose::Submission)>),
    /// The original cannot be carried (a SubmissionRejection RA02, or the PEC refusal of a
    /// split submission): why.
    Unpreparable(String),
    /// A temporary failure, said.
    Failed(Decision),
}

/// A submission on the REM path: the sender's identity record.
#[derive(Debug, Clone)]
pub struct RemSender {
    pub identity: Option<SenderIdentity>,
    /// The protocol of each recipient, recorded with the acceptance.
    pub protocols: Vec<(String, RecipientProtocol)>,
}

impl RemSender {
    /// The recipients on the REM path (REM providers and ordinary addresses).
    pub fn rem_recipients(&self) -> Vec<String> {
        self.protocols
            .iter()
            .filter(|(_, p)| *p != RecipientProtocol::Pec)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Whether some recipients go as PEC: the submission is split
    /// (`AccessPoint::split_accept`).
    pub fn mixed(&self) -> bool {
        self.protocols
            .iter()
            .any(|(_, p)| *p == RecipientProtocol::Pec)
    }
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
        let trusted: Vec<_> = peers.rem_baseline_at(at).cloned().collect();
        if trusted.is_empty() {
            return Ok(false);
        }
        let answer = mx.mx(domain).await?;
        Ok(matches!(
            dns::decide_among(&answer, &trusted, |p| p.service.supply_points.as_slice()),
            PeerRouting::Served { .. }
        ))
    }

    /// The protocol of each recipient (per domain, [`RemSettings::protocol_for`]), the
    /// trust data asked only when the mode needs it; `pec_domain`: whether a domain is in
    /// the PEC index.
    ///
    /// A domain set to `rem` by its override is a REM provider's (the operator says so).
    /// Otherwise a domain on the REM side that is neither ours, nor served by a granted REM
    /// peer (`RemAccess::speaks_rem`), nor (with `mode = "rem"`) in the PEC index is an
    /// ordinary address outside any ERDS: [`RecipientProtocol::NonErds`] (the dispatch is
    /// relayed to it and a RelayToNonERDS evidence goes to the sender, [`super::nonerds`]).
    /// In `auto` the same holds for a domain that does not speak REM and is not in the PEC
    /// index; a PEC domain stays PEC.
    pub async fn route(
        &self,
        rcpt_to: &[String],
        at: Instant,
        pec_domain: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Routing, dns::DnsError> {
        let mut decided: Vec<(String, RecipientProtocol)> = Vec::new();
        let mut forced = false;
        let mut recipients = Vec::with_capacity(rcpt_to.len());
        for r in rcpt_to {
            let d = domain_of(r);
            if let Some((_, p)) = decided.iter().find(|(x, _)| *x == d) {
                recipients.push((r.clone(), *p));
                continue;
            }
            let yes = self.settings.protocol_for(&d, || true);
            let no = self.settings.protocol_for(&d, || false);
            let overridden = self.settings.domains.contains_key(&d);
            let p = if yes == no {
                if yes == Protocol::Rem {
                    forced |= overridden || self.settings.mode == RemMode::Rem;
                    if overridden || pec_domain(&d) || self.speaks_rem(&d, at).await? {
                        RecipientProtocol::Rem
                    } else {
                        RecipientProtocol::NonErds
                    }
                } else {
                    RecipientProtocol::Pec
                }
            } else if self.speaks_rem(&d, at).await? {
                RecipientProtocol::Rem
            } else if pec_domain(&d) {
                RecipientProtocol::Pec
            } else {
                RecipientProtocol::NonErds
            };
            decided.push((d, p));
            recipients.push((r.clone(), p));
        }
        Ok(Routing { recipients, forced })
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

pub(crate) fn reason(code: &str) -> Result<&'static Reason, String> {
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
pub(crate) fn outbound(key: String, m: Composed, at: Instant) -> Outbound {
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

/// The key of the REM part of a split submission, stable across a client's retries of
/// the same submission (the staging is then idempotent, `AccessPoint::split_accept`):
/// a SHA-256 of the authenticated login, the envelope sender, the original's Message-ID
/// and the set of REM recipients (lower case, sorted, once each).
///
/// `None` when the original has no Message-ID: Postfix adds one before the milter only
/// for the clients of `local_header_rewrite_clients` (by default the machine's own
/// addresses, not authenticated remote clients) or with `always_add_missing_headers =
/// yes`, and mail clients always write one; without it two distinct submissions could not
/// be told from a retry, so the key is then the attempt's own identifier: a retry after a
/// failed rewrite sends the REM part again under a new identifier (a duplicate, never a
/// loss).
pub fn split_key(s: &Submission, rem_recipients: &[String]) -> Option<String> {
    use sha2::{Digest, Sha256};
    let id = OriginalInfo::parse(&s.message).ok()?.message_id?;
    let id = crate::message::ids::unbracketed(id.trim())
        .trim()
        .to_string();
    if id.is_empty() {
        return None;
    }
    let mut rcpts: Vec<String> = rem_recipients
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    rcpts.sort();
    rcpts.dedup();
    let mut h = Sha256::new();
    for part in [
        s.login.as_deref().unwrap_or_default(),
        &s.mail_from.to_ascii_lowercase(),
        &id,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for r in &rcpts {
        h.update(r.as_bytes());
        h.update([0]);
    }
    Some(format!("retry-{}", hex::encode(h.finalize())))
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
        let index = self.index.clone();
        let pec_domain =
            move |d: &str| index.recipient_type(&format!("x@{d}")) == RecipientType::Certificato;
        let routing = match rem.route(&s.rcpt_to, at, &pec_domain).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "access point: rem routing: dns unavailable: tempfail");
                return Err(tempfail("PEC: DNS non disponibile"));
            }
        };
        if routing.all_pec() {
            return Ok(None);
        }
        let from = s.mail_from.clone();
        let identity = self
            .blocking("archivio", move |ap| ap.kit.store.sender_identity(&from))
            .await?;
        match identity {
            // Mixed recipients too: split ([`AccessPoint::split_accept`]).
            Some(identity) => Ok(Some(RemSender {
                identity: Some(identity),
                protocols: routing.recipients,
            })),
            None if routing.forced => Ok(Some(RemSender {
                identity: None,
                protocols: routing.recipients,
            })),
            // `auto`: a sender without identity sends PEC (an ordinary address gets the
            // transport envelope, as without REM).
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
        let recipients = s.rcpt_to.clone();
        let dispatch = match self
            .build_dispatch(&rem, s, identity, &pec_id, recipients, at)
            .await
        {
            Built::Ready(b) => b.0,
            Built::Unpreparable(why) => {
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
                        why,
                        None,
                    )
                    .await;
            }
            Built::Failed(d) => return d,
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
        let protocols = sender.protocols.clone();
        if let Err(d) = self
            .blocking("archivio", move |ap| {
                ap.kit.store.record_accepted_routed(&accepted, &protocols)
            })
            .await
        {
            return d;
        }
        info!(pec_id = %pec_id, "submission accepted: rem dispatch");
        Decision::Dispatch(Box::new(dispatch))
    }

    /// The REM dispatch of `s` to `recipients` (all of its recipients, or the REM ones of
    /// a split submission): the original prepared, the SubmissionAcceptance evidence
    /// issued (signed, stamped) and the dispatch composed around it.
    async fn build_dispatch(
        self: &Arc<Self>,
        rem: &RemAccess,
        s: &Submission,
        identity: SenderIdentity,
        pec_id: &str,
        recipients: Vec<String>,
        at: Instant,
    ) -> Built {
        let policies = rem.settings.policies.clone();
        let message = s.message.clone();
        let (id2, pol2) = (pec_id.to_string(), policies.clone());
        let prepared = match blocking(move || {
            let prepared = compose::prepare_original(&message, &id2)?;
            let sub = compose::Submission::from_original(&prepared, pol2, DigestAlgorithm::Sha256)?;
            Ok::<_, compose::ComposeError>((prepared, sub))
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "access point: rem: internal error: tempfail");
                return Built::Failed(tempfail("PEC: errore interno"));
            }
        };
        let (original, mut sub) = match prepared {
            Ok(r) => r,
            Err(e) => {
                // The formal checks passed but the original cannot be carried: a format
                // the REM dispatch cannot take.
                info!(pec_id = %pec_id, error = %e, "rem submission refused: the original cannot be prepared");
                return Built::Unpreparable(e.to_string());
            }
        };
        // The dispatch goes to these recipients (the original's own To and Cc stay as
        // written).
        sub.recipients = recipients.clone();
        let Ok(ra01) = reason("RA01") else {
            return Built::Failed(tempfail("PEC: errore interno"));
        };
        let input = EvidenceInput {
            event: Event::SubmissionAcceptance,
            reason: ra01,
            message_id: pec_id.to_string(),
            event_time: at,
            submission_time: Some(at),
            sender: s.mail_from.clone(),
            identity: Some(identity),
            // Only the time the milter saw: none recorded, none stated.
            authentication: s.auth_at.map(|at| Authentication {
                at,
                method: AUTH_METHOD.to_string(),
            }),
            recipients,
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
                return Built::Failed(tempfail("PEC: marca temporale non disponibile"));
            }
        };
        let provider = provider(&rem.settings, &self.kit);
        let signer = self.kit.signer.clone();
        let (issued2, sub2) = (issued.clone(), sub.clone());
        let dispatch = match blocking(move || {
            Composer {
                provider: &provider,
                signer: &*signer,
            }
            .dispatch(
                &original,
                &sub2,
                &EvidenceAttachment {
                    event: Event::SubmissionAcceptance,
                    xml: &issued2.xml,
                },
                issued2.id(),
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
                return Built::Failed(tempfail("PEC: firma non disponibile"));
            }
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: rem: internal error: tempfail");
                return Built::Failed(tempfail("PEC: errore interno"));
            }
        };
        Built::Ready(Box::new((dispatch, issued, sub)))
    }

    /// Accepts a submission split between PEC and REM recipients (`sender.mixed()`): the
    /// REM dispatch to the REM recipients (SubmissionAcceptance evidence about them only)
    /// is staged through the outbox (key [`rem_dispatch_key`] of [`split_key`]) in one
    /// transaction with the PEC part's acceptance (`cert`, the PEC recipients only: its
    /// tracking rows and pending acceptance), the protocol of every recipient
    /// ([`Effect::Accepted`]), the dispatch's evidence, its SubmissionAcceptance REM
    /// receipt to the sender (key [`rem_acceptance_key`]) and, for ordinary addresses
    /// among them, the RelayToNonERDS receipt with its evidence
    /// ([`super::nonerds::relay_receipt`]; the dispatch does not pass the after-queue
    /// filter): [`Effect::Also`]. The staged dispatch is the REM part's "queued" moment, so
    /// its receipts are staged with it: never one without the others. Every evidence is
    /// issued (signed, stamped) before that transaction: a TSA failure is a tempfail with
    /// nothing staged. Then all are injected (the outbox sweep sends one that is not).
    ///
    /// The milter then replaces the queued message with `envelope` (the PEC transport
    /// envelope, for the PEC recipients) and removes the REM recipients
    /// ([`Decision::Split`]). When that fails the client gets a 4xx and retries the same
    /// submission: the retry (a new PEC identifier) finds the REM part staged under the
    /// same key and stages nothing for it ([`AccessPoint::split_retry`]). The PEC
    /// acceptance receipt, after queue, names only the PEC recipients. `full`: the
    /// certification data of every recipient (the PEC refusal when the original cannot be
    /// carried as REM).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn split_accept(
        self: &Arc<Self>,
        s: &Submission,
        sender: &RemSender,
        full: Certification,
        cert: Certification,
        envelope: Box<crate::message::build::Generated>,
        login: String,
        at: Instant,
    ) -> Decision {
        let (Some(rem), Some(identity)) = (self.rem.clone(), sender.identity.clone()) else {
            return tempfail("PEC: errore interno");
        };
        let pec_id = full.identificativo.clone();
        let rem_rcpts = sender.rem_recipients();
        let key =
            rem_dispatch_key(&split_key(s, &rem_rcpts).unwrap_or_else(|| format!("id-{pec_id}")));
        // A client's retry of a submission whose REM part is staged: nothing built again
        // (nor time stamp asked for).
        let k = key.clone();
        match self
            .blocking("archivio", move |ap| ap.kit.store.outbound(&k))
            .await
        {
            Ok(Some(staged)) => {
                return self
                    .split_retry(s, sender, cert, envelope, login, at, &staged)
                    .await
            }
            Ok(None) => {}
            Err(d) => return d,
        }
        let (dispatch, issued, sub) = match self
            .build_dispatch(&rem, s, identity, &pec_id, rem_rcpts.clone(), at)
            .await
        {
            Built::Ready(b) => *b,
            Built::Unpreparable(why) => {
                return self
                    .refuse(s, full, at, MessageKind::NonAcceptance, why, None)
                    .await
            }
            Built::Failed(d) => return d,
        };
        let receipt = match self.rem_receipt(&rem, &sub, &issued, "RA01", at).await {
            Ok(r) => r,
            Err(d) => return d,
        };
        // The REM waits of the dispatch (EN 319 532-4 Annex D) begin with its receipt, as
        // after queue ([`after_queue`]): relay for a peer's recipient, consignment for ours;
        // none for an ordinary address (RelayToNonERDS closes it).
        let waits = sender
            .protocols
            .iter()
            .filter(|(_, p)| *p == RecipientProtocol::Rem)
            .map(|(r, _)| {
                let ours = rem
                    .domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&domain_of(r)));
                RemWait {
                    which: if ours {
                        RemWaitKind::Consignment
                    } else {
                        RemWaitKind::Relay
                    },
                    message_id: pec_id.clone(),
                    recipient: r.clone(),
                    started_at: at,
                }
            })
            .collect();
        let mut also = vec![(
            outbound(rem_acceptance_key(&pec_id), receipt, at),
            Effect::RemWaits {
                effect: Box::new(Effect::Log(Vec::new())),
                waits,
            },
        )];
        let ordinary: Vec<String> = sender
            .protocols
            .iter()
            .filter(|(_, p)| *p == RecipientProtocol::NonErds)
            .map(|(r, _)| r.clone())
            .collect();
        if !ordinary.is_empty() {
            match super::nonerds::relay_receipt(
                &self.kit,
                &rem.settings,
                &pec_id,
                &sub,
                issued.model.clone(),
                &ordinary,
                s.queue_id.as_deref(),
                at,
            )
            .await
            {
                Ok(r) => also.push(r),
                Err(e) => {
                    warn!(pec_id = %pec_id, error = %e, "access point: relay to non-erds evidence not issued: tempfail");
                    return tempfail("PEC: marca temporale non disponibile");
                }
            }
        }
        let accepted = Accepted {
            pec_id: pec_id.clone(),
            queue_id: s.queue_id.clone(),
            at,
            cert: cert.clone(),
            login: login.clone(),
            auth_at: s.auth_at,
            provider: self.kit.issuer.provider_name.clone(),
        };
        let logged = rem_rcpts
            .iter()
            .map(|r| (r.clone(), RecipientType::Esterno))
            .collect();
        let stored = issued.stored(&s.mail_from, logged, s.queue_id.as_deref());
        let effect = Effect::Also {
            effect: Box::new(Effect::WithEvidences {
                effect: Box::new(Effect::Accepted {
                    accepted: Box::new(accepted),
                    protocols: sender.protocols.clone(),
                }),
                evidences: vec![stored],
            }),
            staged: also,
        };
        let out = outbound(key.clone(), dispatch, at);
        match self.kit.emit_outbound(out, effect).await {
            Ok(Emitted::New(_)) => {}
            Ok(Emitted::Existing(_)) => {
                // The same submission staged concurrently (a client that did not wait):
                // this one is its retry.
                let k = key.clone();
                return match self
                    .blocking("archivio", move |ap| ap.kit.store.outbound(&k))
                    .await
                {
                    Ok(Some(staged)) => {
                        self.split_retry(s, sender, cert, envelope, login, at, &staged)
                            .await
                    }
                    Ok(None) => tempfail("PEC: archivio non disponibile"),
                    Err(d) => d,
                };
            }
            Ok(Emitted::Claimed) => {
                warn!(pec_id = %pec_id, "access point: the split submission was not staged: tempfail");
                return tempfail("PEC: archivio non disponibile");
            }
            Err(IssueError::Staged(e)) => {
                warn!(pec_id = %pec_id, "rem dispatch of a split submission staged, not injected (the outbox sweep sends it): {e}");
            }
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: the split submission could not be recorded: tempfail");
                return tempfail("PEC: archivio non disponibile");
            }
        }
        info!(pec_id = %pec_id, rem = ?rem_rcpts, "submission accepted: split, rem dispatch and its receipts emitted, pec envelope for the others");
        Decision::Split {
            envelope,
            remove: rem_rcpts,
        }
    }

    /// A client's retry of a split submission whose REM part (the dispatch `staged` and
    /// its receipts) was staged by an earlier attempt that the client did not see
    /// accepted (the milter's rewrite failed): no second dispatch. The PEC part is a new
    /// submission, as a PEC retry is (the earlier attempt's envelope never reached the
    /// queue, so its pending acceptance stays open and gets no receipt): its acceptance
    /// is recorded under this attempt's identifier and the milter gets the same split.
    #[allow(clippy::too_many_arguments)]
    async fn split_retry(
        self: &Arc<Self>,
        s: &Submission,
        sender: &RemSender,
        cert: Certification,
        envelope: Box<crate::message::build::Generated>,
        login: String,
        at: Instant,
        staged: &Outbound,
    ) -> Decision {
        let pec_id = cert.identificativo.clone();
        let accepted = Accepted {
            pec_id: pec_id.clone(),
            queue_id: s.queue_id.clone(),
            at,
            cert,
            login,
            auth_at: s.auth_at,
            provider: self.kit.issuer.provider_name.clone(),
        };
        let protocols = sender.protocols.clone();
        if let Err(d) = self
            .blocking("archivio", move |ap| {
                ap.kit.store.record_accepted_routed(&accepted, &protocols)
            })
            .await
        {
            return d;
        }
        let remove = sender.rem_recipients();
        info!(pec_id = %pec_id, dispatch = %staged.message_id, rem = ?remove, "submission accepted: split, retried: its rem dispatch staged before, none staged now; pec envelope for the others");
        Decision::Split { envelope, remove }
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
        issue::compose_receipt(
            &self.kit,
            &rem.settings.provider_name,
            sub,
            issued,
            code,
            issue::Regarding::default(),
            at,
        )
        .await
        .map_err(|e| {
            warn!(error = %e, "access point: rem receipt not composed: tempfail");
            tempfail("PEC: firma non disponibile")
        })
    }
}

/// Our own dispatch `pec_id` in `tx`, read back: the submission data of its original and
/// its SubmissionAcceptance evidence, checked to be ours (our signing certificate, the
/// time stamp as [`crate::rem::xades::sign`] checked it, the identifiers of this
/// submission). `Ok(Err(why))`: it is not that.
pub(crate) async fn read_own_dispatch(
    kit: &Issuing,
    tx: &Transaction,
    pec_id: &str,
) -> Result<Result<(compose::Submission, Issued), String>, IssueError> {
    let data = tx.data.clone();
    let cert_der = kit.signer.certificate_der().to_vec();
    let id2 = pec_id.to_string();
    blocking(move || -> Result<(compose::Submission, Issued), String> {
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
    .await
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
    let read = read_own_dispatch(kit, tx, &pec_id).await?;
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
    let receipt = issue::compose_receipt(
        kit,
        &provider_name,
        &sub,
        &issued,
        "RA01",
        issue::Regarding::default(),
        at,
    )
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
