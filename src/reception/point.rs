// SPDX-License-Identifier: GPL-3.0-or-later
//! The reception point proper (punto di ricezione, spec §5.2), for the local recipients
//! of a transaction the after-queue filter ([`super::AfterQueue`]) dispatched here: a
//! valid transport envelope is checked against what it is asked to certify, scanned, and
//! taken in charge or reported for a virus; a receipt from another provider is judged
//! against our own records, logged, and delivered or consumed; anything else is wrapped
//! in an anomaly envelope or forwarded by mailbox policy.

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{one_line, AfterQueue, AfterQueueError, Local};
use crate::antivirus::ScanVerdict;
use crate::index::ProviderInfo;
use crate::issuing::Emitted;
use crate::message::build::{Certification, Generated, OriginalInfo};
use crate::message::classify::PecMessage;
use crate::message::ids::unbracketed;
use crate::message::kind::{MessageKind, RecipientType, Ricevuta};
use crate::message::time::Instant;
use crate::smtp::Transaction;
use crate::store::outbox::{anomaly_key, take_charge_key, virus_key, virus_non_delivery_key};
use crate::store::{Effect, EventKind, LogEvent, MailboxPolicy, TrackingState};

impl AfterQueue {
    /// A valid transport envelope for `local`: antivirus, then presa in carico and delivery,
    /// or quarantine, presa in carico and virus notices.
    pub(super) async fn envelope(
        &self,
        tx: &Transaction,
        m: &PecMessage,
        provider: &ProviderInfo,
        local: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let pec_id = m.daticert.identificativo.clone();
        let cert = Certification::of_verified_envelope(&m.daticert, &m.verified.content)
            .unwrap_or_else(|| Certification::from_envelope(&m.daticert, Vec::new(), Vec::new()));
        let ours = provider
            .mail_receipt
            .eq_ignore_ascii_case(&self.reception.mail_receipt);

        if let ScanVerdict::Infected(virus) = self.reception.antivirus.scan(&tx.data).await? {
            // The quarantine first, once: a retry of the same queue file (or the same
            // envelope handed over again) finds the message held and records nothing.
            let event = self.event(
                &cert,
                &pec_id,
                EventKind::Quarantined,
                Vec::new(),
                tx,
                &provider.name,
                "virus",
                Some(&virus),
                now,
            );
            let data = tx.data.clone();
            // Recorded once: a retry (or another node) finds these bytes held already.
            self.kit
                .store(move |s| s.record_quarantine(&event, &data))
                .await?;
            // Every valid transport envelope is taken in charge (spec §5.2, §3.5 [RT]): the
            // virus is the second phase. The presa in carico records no verification (the
            // delivery point never delivers these bytes) and moves no tracking row: the
            // rilevazione virus that follows decides the outcome.
            let why = format!("messaggio infetto ({virus}): non consegnato");
            let (receipt, event) = self
                .take_charge(tx, &cert, &pec_id, local, provider, Some(&why), now)
                .await?;
            self.emit(
                take_charge_key(&pec_id, local),
                receipt,
                Effect::Log(vec![event]),
                now,
            )
            .await?;
            let mut notices = Vec::new();
            for r in local {
                let (c, r2, v, to) = (
                    cert.clone(),
                    r.clone(),
                    virus.clone(),
                    provider.mail_receipt.clone(),
                );
                let notice = self
                    .build(move |b| b.virus_detection(&c, now, &r2, &v, &to))
                    .await?;
                let event = self.event(
                    &cert,
                    &pec_id,
                    EventKind::Issued(MessageKind::VirusDetection),
                    vec![notice.message_id.clone()],
                    tx,
                    &provider.name,
                    "virus",
                    Some(&virus),
                    now,
                );
                let emitted = self
                    .emit(virus_key(&pec_id, r), notice, Effect::Log(vec![event]), now)
                    .await?;
                notices.extend(emitted.message_id().map(str::to_string));
            }
            warn!(queue_id, msgid = %pec_id, virus = %virus, "reception: virus in a transport envelope: not delivered, quarantined");
            if ours {
                // Our own rilevazione virus goes to our mailReceipt on the no-filter port
                // and never comes back through here: act on it now.
                for r in local {
                    self.virus_for_our_user(tx, &cert, r, &virus, now).await?;
                }
            }
            return Ok(Local::Virus {
                pec_id,
                virus,
                notices,
            });
        }

        // A retry after a crash (we took the envelope in charge, then died before Postfix
        // read our 250), or the same envelope handed over twice by the sender's provider
        // after its own crash: the recipients already taken in charge get no second presa
        // in carico; the envelope is passed on again (the delivery point emits no second
        // delivery receipt either).
        let (id, all) = (pec_id.clone(), local.to_vec());
        let fresh: Vec<String> = self
            .kit
            .store(move |s| {
                let mut fresh = Vec::new();
                for r in all {
                    if !s.is_verified(&id, &r)? {
                        fresh.push(r);
                    }
                }
                Ok(fresh)
            })
            .await?;
        if fresh.is_empty() {
            info!(queue_id, msgid = %pec_id, "reception: transport envelope already taken in charge: no second presa in carico, passed on again");
            self.pass_on(tx, local).await?;
            passed_on.extend(local.iter().cloned());
            return Ok(Local::AlreadyTakenInCharge { pec_id });
        }
        let (all_local, local) = (local, &fresh[..]);

        let (receipt, event) = self
            .take_charge(tx, &cert, &pec_id, local, provider, None, now)
            .await?;
        let effect = Effect::TakenInCharge {
            recipients: local.to_vec(),
            event,
            tracking: ours,
        };
        let receipt_id = receipt.message_id.clone();
        let emitted = self
            .emit(take_charge_key(&pec_id, local), receipt, effect, now)
            .await?;
        if !matches!(emitted, Emitted::New(_)) {
            // A concurrent delivery of the same envelope took it in charge first.
            info!(queue_id, msgid = %pec_id, "reception: transport envelope taken in charge by a concurrent delivery: no second presa in carico");
        } else if ours {
            info!(queue_id, msgid = %pec_id, "reception: same provider: our presa in carico recorded directly");
        }
        info!(queue_id, msgid = %pec_id, receipt = %receipt_id, to = %provider.mail_receipt, "reception: transport envelope taken in charge");
        self.pass_on(tx, all_local).await?;
        passed_on.extend(all_local.iter().cloned());
        Ok(Local::TakenInCharge {
            pec_id,
            receipt_id,
            to: provider.mail_receipt.clone(),
        })
    }

    /// Checks a valid transport envelope against our records before anything is taken in
    /// charge: `Some(reason)` when it must be treated as not valid PEC (anomaly or refusal
    /// by policy, never a presa in carico):
    ///
    /// * a local RCPT that is not among the daticert `destinatari` (the SMTP envelope is not
    ///   signed: a relay, or anyone replaying the envelope, could address it to somebody
    ///   else; the To/Cc headers and `postacert.eml` were checked against the daticert by
    ///   the classification);
    /// * an envelope of another provider whose `identificativo` is one of our own envelopes'
    ///   (our receipts, the tracking and the delivery point key on it).
    pub(super) async fn envelope_problem(
        &self,
        m: &PecMessage,
        provider: &ProviderInfo,
        local: &[String],
    ) -> Result<Option<String>, AfterQueueError> {
        let d = &m.daticert;
        let stranger: Vec<&String> = local
            .iter()
            .filter(|r| {
                !d.destinatari
                    .iter()
                    .any(|x| x.address.trim().eq_ignore_ascii_case(r))
            })
            .collect();
        if !stranger.is_empty() {
            return Ok(Some(format!(
                "destinatario non presente nei dati di certificazione: {}",
                stranger
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let ours = provider
            .mail_receipt
            .eq_ignore_ascii_case(&self.reception.mail_receipt);
        if !ours {
            let id = d.identificativo.clone();
            if self
                .kit
                .store(move |s| s.envelope_certification(&id))
                .await?
                .is_some()
            {
                return Ok(Some(format!(
                    "identificativo {} di un messaggio di questo gestore in una busta firmata da {}",
                    d.identificativo, provider.name
                )));
            }
        }
        Ok(None)
    }

    /// Judges a receipt from another provider against our own records (see
    /// [`Correlation`]): our envelope's certification data and its tracking rows.
    pub(super) async fn correlate(
        &self,
        kind: Ricevuta,
        m: &PecMessage,
    ) -> Result<Correlation, AfterQueueError> {
        let d = &m.daticert;
        let about: Vec<String> = match kind {
            Ricevuta::PresaInCarico => d.ricezione.clone(),
            _ => d.consegna.iter().cloned().collect(),
        };
        let id = d.identificativo.clone();
        let (envelope, tracking) = self
            .kit
            .store(move |s| {
                let envelope = s.envelope_certification(&id)?;
                let tracking = match envelope {
                    Some(_) => s.tracking_for(&id)?,
                    None => Vec::new(),
                };
                Ok((envelope, tracking))
            })
            .await?;
        let mut found = Correlation {
            envelope,
            about,
            ..Correlation::default()
        };
        let Some(c) = &found.envelope else {
            found.why_not = Some("not one of our envelopes".into());
            return Ok(found);
        };
        let provider = m.verified.provider.as_ref();
        let why_not = (|| {
            if !matches!(
                kind,
                Ricevuta::PresaInCarico
                    | Ricevuta::AvvenutaConsegna
                    | Ricevuta::ErroreConsegna
                    | Ricevuta::RilevazioneVirus
            ) {
                return Some(format!(
                    "a {} is never another provider's to send",
                    kind.as_str()
                ));
            }
            if m.riferimento_message_id
                .as_ref()
                .is_some_and(|r| unbracketed(r) != unbracketed(&c.riferimento()))
            {
                return Some("X-Riferimento-Message-ID of another message".into());
            }
            if found.about.is_empty() {
                return Some("about no recipient".into());
            }
            let certified = |a: &str| {
                c.destinatari.iter().any(|x| {
                    x.tipo == RecipientType::Certificato && x.address.eq_ignore_ascii_case(a)
                })
            };
            if let Some(r) = found.about.iter().find(|a| !certified(a)) {
                return Some(format!("{r} is not a certified recipient of the envelope"));
            }
            let managed = |a: &str| {
                let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                provider.is_some_and(|p| p.manages(domain))
            };
            found
                .about
                .iter()
                .find(|a| !managed(a))
                .map(|r| format!("{r} is not managed by the signer's provider"))
        })();
        if why_not.is_some() {
            found.why_not = why_not;
            return Ok(found);
        }
        found.correlated = true;
        // Still waiting for what the receipt reports: no presa in carico yet, or no
        // outcome yet (the 24 h notice is an outcome: tracking stops there, spec §5.4).
        let waiting = |state: TrackingState| match kind {
            Ricevuta::PresaInCarico => state == TrackingState::Sent,
            _ => state.rank() < TrackingState::Delivered.rank(),
        };
        found.late = !found.about.iter().any(|a| {
            tracking
                .iter()
                .any(|t| t.recipient.eq_ignore_ascii_case(a) && waiting(t.state))
        });
        Ok(found)
    }

    /// Whether the receipt may go to every local recipient as it is: consumed when it is a
    /// presa in carico or rilevazione virus for our `mailReceipt`, delivered to the person
    /// it is addressed to only when that is the sender it names (our record's sender when
    /// the envelope is ours, else the daticert `mittente`). `Some(reason)` otherwise: a
    /// receipt replayed or redirected to a third party is not valid PEC for that mailbox.
    pub(super) fn receipt_problem(
        &self,
        kind: Ricevuta,
        m: &PecMessage,
        found: &Correlation,
        local: &[String],
    ) -> Option<String> {
        let sender = found
            .envelope
            .as_ref()
            .map_or(m.daticert.mittente.trim(), |c| c.mittente.as_str());
        let stranger: Vec<&str> = local
            .iter()
            .filter(|r| !(self.consumable(kind, r) || r.eq_ignore_ascii_case(sender)))
            .map(String::as_str)
            .collect();
        (!stranger.is_empty()).then(|| {
            format!(
                "{} indirizzata a {}, non al mittente {sender} del messaggio originale",
                kind.as_str(),
                stranger.join(", ")
            )
        })
    }

    /// A presa in carico or rilevazione virus for our `mailReceipt`: consumed, never
    /// delivered.
    fn consumable(&self, kind: Ricevuta, rcpt: &str) -> bool {
        matches!(kind, Ricevuta::PresaInCarico | Ricevuta::RilevazioneVirus)
            && rcpt.eq_ignore_ascii_case(&self.reception.mail_receipt)
    }

    /// A valid receipt or notice for `local` (each recipient checked by
    /// [`AfterQueue::receipt_problem`]): logged, our tracking rows moved when it correlates
    /// and they still wait for it, delivered to the sender, consumed when addressed to our
    /// `mailReceipt`. A rilevazione virus about a recipient still waiting gives our user the
    /// mancata consegna per virus, built from our own record of the envelope.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn receipt(
        &self,
        tx: &Transaction,
        kind: Ricevuta,
        m: &PecMessage,
        found: Correlation,
        local: &[String],
        now: Instant,
        passed_on: &mut Vec<String>,
    ) -> Result<Local, AfterQueueError> {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        let d = &m.daticert;
        let pec_id = d.identificativo.clone();
        if let Some(why) = &found.why_not {
            warn!(
                queue_id,
                msgid = %pec_id,
                riferimento = m.riferimento_message_id.as_deref().unwrap_or("-"),
                "reception: {} about {:?} does not correlate ({why}): tracking left alone, nothing generated",
                kind.as_str(),
                found.about
            );
        } else if found.late {
            info!(queue_id, msgid = %pec_id, "reception: {} about {:?}, who have their outcome already: moves nothing, generates nothing", kind.as_str(), found.about);
        }
        let (consumed, persons): (Vec<String>, Vec<String>) = local
            .iter()
            .cloned()
            .partition(|r| self.consumable(kind, r));
        // What the receipt moves, in the transaction that logs it; a rilevazione virus moves
        // its rows with the notice it gives our user (below), so that a recipient whose
        // outcome is decided gets neither.
        let updates: Vec<(String, TrackingState)> = match kind {
            _ if !found.correlated => Vec::new(),
            Ricevuta::PresaInCarico => found
                .about
                .iter()
                .map(|r| (r.clone(), TrackingState::TakenInCharge))
                .collect(),
            Ricevuta::AvvenutaConsegna => found
                .about
                .iter()
                .map(|r| (r.clone(), TrackingState::Delivered))
                .collect(),
            Ricevuta::ErroreConsegna => found
                .about
                .iter()
                .map(|r| (r.clone(), TrackingState::Failed))
                .collect(),
            _ => Vec::new(),
        };
        let mut event = self.received_event(tx, kind, m, &found, &consumed, &persons, now);
        // A presa in carico or rilevazione virus goes to a provider's mailReceipt and is
        // consumed: kept signed, byte-exact, beside its record, within the size bound.
        let kept = match kind {
            Ricevuta::PresaInCarico | Ricevuta::RilevazioneVirus => {
                if tx.data.len() <= self.kept_receipt_max {
                    Some(tx.data.clone())
                } else {
                    let note = format!(
                        "non conservata: {} byte oltre il limite di {} byte, sha-256 {}",
                        tx.data.len(),
                        self.kept_receipt_max,
                        hex::encode(Sha256::digest(&tx.data))
                    );
                    warn!(queue_id, msgid = %pec_id, size = tx.data.len(), "reception: {} larger than reception.kept_receipt_max_size: logged, not kept", kind.as_str());
                    event.reason = Some(match event.reason.take() {
                        Some(r) => format!("{r}; {note}"),
                        None => note,
                    });
                    None
                }
            }
            _ => None,
        };
        let tracking_updated = self
            .kit
            .store(move |s| s.record_receipt_received(&event, &updates, kept.as_deref()))
            .await?;
        info!(
            queue_id,
            msgid = %pec_id,
            riferimento = m.riferimento_message_id.as_deref().unwrap_or("-"),
            tracking_updated,
            outcome = found.outcome(),
            "reception: {} received",
            kind.as_str()
        );

        let mut notices = Vec::new();
        if let (Ricevuta::RilevazioneVirus, true, Some(cert)) =
            (kind, found.correlated, &found.envelope)
        {
            let virus = d
                .errore_esteso
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "virus".into());
            for r in &found.about {
                notices.extend(self.virus_for_our_user(tx, cert, r, &virus, now).await?);
            }
        }

        if !persons.is_empty() {
            self.pass_on(tx, &persons).await?;
            passed_on.extend(persons);
        }
        Ok(Local::Receipt {
            kind,
            pec_id,
            consumed: !consumed.is_empty(),
            tracking_updated,
            notices,
        })
    }

    /// Logs what the reception point did with mail that is not valid PEC for `local`
    /// (refused in SMTP for a virus or by policy, forwarded by policy): about the
    /// message's own Message-ID (a new id when it has none).
    pub(super) async fn log_not_pec(
        &self,
        tx: &Transaction,
        local: &[String],
        kind: EventKind,
        outcome: &str,
        reason: &str,
        now: Instant,
    ) -> Result<(), AfterQueueError> {
        let info = OriginalInfo::parse(&tx.data).unwrap_or_default();
        let event = LogEvent {
            pec_id: info
                .message_id
                .clone()
                .unwrap_or_else(|| self.kit.ids.next_id(now)),
            at: now,
            kind,
            sender: tx.mail_from.clone(),
            recipients: local
                .iter()
                .map(|r| (r.clone(), crate::message::kind::RecipientType::Certificato))
                .collect(),
            subject: info.subject,
            related_ids: Vec::new(),
            provider: String::new(),
            queue_id: tx.queue_id.clone(),
            outcome: outcome.to_string(),
            reason: Some(reason.to_string()),
        };
        self.kit.store(move |s| s.log(&event)).await?;
        Ok(())
    }

    /// The [`EventKind::Received`] record of a receipt from another provider: about the
    /// envelope of its daticert (`envelope`: our certification data when it correlates
    /// with one of our envelopes), the receipt's Message-ID as the related id, the outcome
    /// `correlated` or `uncorrelated`, and in the reason whom it is about, whether it was
    /// consumed or delivered, and the provider's error text.
    #[allow(clippy::too_many_arguments)]
    fn received_event(
        &self,
        tx: &Transaction,
        kind: Ricevuta,
        m: &PecMessage,
        found: &Correlation,
        consumed: &[String],
        persons: &[String],
        now: Instant,
    ) -> LogEvent {
        let d = &m.daticert;
        // Our record of the envelope, when the receipt correlates with it; the receipt's
        // own words otherwise (its record then says "uncorrelated").
        let envelope = found.envelope.as_ref().filter(|_| found.correlated);
        let recipients = match envelope {
            Some(c) => &c.destinatari,
            None => &d.destinatari,
        };
        let mut reason = Vec::new();
        if !found.about.is_empty() {
            reason.push(format!("riguarda {}", found.about.join(", ")));
        }
        if let Some(why) = &found.why_not {
            reason.push(format!("non correlata: {why}"));
        }
        if let Some(c) = envelope {
            if !c.mittente.eq_ignore_ascii_case(d.mittente.trim()) {
                reason.push(format!("mittente dichiarato: {}", d.mittente));
            }
        }
        if !consumed.is_empty() {
            reason.push("consumata".to_string());
        }
        if !persons.is_empty() {
            reason.push(format!("consegnata a {}", persons.join(", ")));
        }
        if let Some(e) = &d.errore_esteso {
            reason.push(format!("errore: {e}"));
        }
        LogEvent {
            pec_id: d.identificativo.clone(),
            at: now,
            kind: EventKind::Received(kind),
            sender: envelope.map_or_else(|| d.mittente.clone(), |c| c.mittente.clone()),
            recipients: recipients
                .iter()
                .map(|x| (x.address.clone(), x.tipo))
                .collect(),
            subject: envelope.map_or_else(
                || d.oggetto.clone().unwrap_or_default(),
                |c| c.oggetto.clone(),
            ),
            related_ids: m.message_id.iter().cloned().collect(),
            provider: m
                .verified
                .provider
                .as_ref()
                .map_or_else(|| d.gestore_emittente.clone(), |p| p.name.clone()),
            queue_id: tx.queue_id.clone(),
            outcome: found.outcome().into(),
            reason: (!reason.is_empty()).then(|| reason.join("; ")),
        }
    }

    /// Avviso di mancata consegna per virus (spec §3.9) to our user about `recipient`, built
    /// from `cert`, our own record of the envelope, and the tracking row marked failed, in
    /// one transaction. Returns the notice's Message-ID; `None` when the recipient has its
    /// outcome already (nothing sent, nothing recorded).
    async fn virus_for_our_user(
        &self,
        tx: &Transaction,
        cert: &Certification,
        recipient: &str,
        virus: &str,
        now: Instant,
    ) -> Result<Option<String>, AfterQueueError> {
        let (c, r, v) = (cert.clone(), recipient.to_string(), virus.to_string());
        let notice = self
            .build(move |b| b.non_delivery_virus(&c, now, &r, &v))
            .await?;
        let provider = self.kit.issuer.provider_name.clone();
        let event = self.event(
            cert,
            &cert.identificativo,
            EventKind::Issued(MessageKind::NonDeliveryVirus),
            vec![notice.message_id.clone()],
            tx,
            &provider,
            "virus",
            Some(virus),
            now,
        );
        // The tracking row failed, the event and the notice: one transaction, once per
        // (envelope, recipient) whichever way the virus became known.
        let effect = Effect::Tracking {
            updates: vec![(recipient.to_string(), TrackingState::Failed)],
            event,
        };
        let key = virus_non_delivery_key(&cert.identificativo, recipient);
        let Some(notice_id) = self
            .emit(key, notice, effect, now)
            .await?
            .message_id()
            .map(str::to_string)
        else {
            info!(
                queue_id = tx.queue_id.as_deref().unwrap_or("-"),
                msgid = %cert.identificativo,
                "reception: virus reported for {recipient}, who has an outcome already: no notice"
            );
            return Ok(None);
        };
        warn!(
            queue_id = tx.queue_id.as_deref().unwrap_or("-"),
            msgid = %cert.identificativo,
            notice = %notice_id,
            "reception: virus reported for {recipient}: mancata consegna per virus sent to {}",
            cert.mittente
        );
        Ok(Some(notice_id))
    }

    /// The presa in carico of envelope `pec_id` for `local` (spec §3.5), to the sending
    /// provider's `mailReceipt`, and its legal-log record (`reason` when there is one).
    #[allow(clippy::too_many_arguments)]
    async fn take_charge(
        &self,
        tx: &Transaction,
        cert: &Certification,
        pec_id: &str,
        local: &[String],
        provider: &ProviderInfo,
        reason: Option<&str>,
        now: Instant,
    ) -> Result<(Generated, LogEvent), AfterQueueError> {
        let (c, taken, to) = (cert.clone(), local.to_vec(), provider.mail_receipt.clone());
        let receipt = self
            .build(move |b| b.take_charge(&c, now, &taken, &to))
            .await?;
        let event = self.event(
            cert,
            pec_id,
            EventKind::Issued(MessageKind::TakeCharge),
            vec![receipt.message_id.clone()],
            tx,
            &provider.name,
            "ok",
            reason,
            now,
        );
        Ok((receipt, event))
    }

    /// Not valid PEC: anomaly envelope or forward, per policy (refusals were handled
    /// before). No presa in carico, no delivery receipt.
    pub(super) async fn not_pec(
        &self,
        tx: &Transaction,
        reason: String,
        policies: Vec<(String, MailboxPolicy)>,
        now: Instant,
    ) -> Result<Local, AfterQueueError> {
        let queue_id = tx.queue_id.as_deref().unwrap_or("-");
        // The anomaly policy wraps the message: in the REM ReceivedFromNonERDS for our REM
        // mailboxes, in the busta di anomalia for the others (and for a message that cannot
        // be carried as REM).
        let (rem_wrapped, mut wrapped): (Vec<String>, Vec<String>) = policies
            .iter()
            .filter(|(_, p)| *p == MailboxPolicy::Anomaly)
            .map(|(r, _)| r.clone())
            .partition(|r| self.rem_mailbox(r));
        let mut received_from_non_erds = None;
        if !rem_wrapped.is_empty() {
            match self
                .received_from_non_erds(tx, &rem_wrapped, &reason, now)
                .await?
            {
                Some(id) => received_from_non_erds = Some(id),
                None => wrapped.extend(rem_wrapped),
            }
        }
        let mut anomaly = None;
        if !wrapped.is_empty() {
            let (data, from, rcpts, why) = (
                tx.data.clone(),
                tx.mail_from.clone(),
                wrapped.clone(),
                reason.clone(),
            );
            let env = self
                .build(move |b| b.anomaly_envelope(&data, &from, &rcpts, now, &why))
                .await?;
            let event = LogEvent {
                pec_id: env.message_id.clone(),
                at: now,
                kind: EventKind::Issued(MessageKind::AnomalyEnvelope),
                sender: tx.mail_from.clone(),
                recipients: wrapped
                    .iter()
                    .map(|r| (r.clone(), crate::message::kind::RecipientType::Certificato))
                    .collect(),
                subject: String::new(),
                related_ids: vec![env.message_id.clone()],
                provider: self.kit.issuer.provider_name.clone(),
                queue_id: tx.queue_id.clone(),
                outcome: "anomaly".into(),
                reason: Some(reason.clone()),
            };
            // Keyed by the queue file, the bytes and the recipients: a Postfix retry of
            // the same queue file finds the staged envelope and builds none.
            let key = anomaly_key(tx.queue_id.as_deref(), &tx.data, &wrapped);
            let built_id = env.message_id.clone();
            let emitted = self.emit(key, env, Effect::Log(vec![event]), now).await?;
            let id = emitted.message_id().map_or(built_id, str::to_string);
            info!(queue_id, anomaly = %id, "reception: not valid PEC ({reason}): anomaly envelope for {wrapped:?}");
            anomaly = Some(id);
        }
        let mut forwarded = Vec::new();
        for (r, p) in &policies {
            match p {
                MailboxPolicy::Discard => {
                    let why = format!("{reason}; scartato per la casella {r}");
                    self.log_not_pec(
                        tx,
                        std::slice::from_ref(r),
                        EventKind::Discarded,
                        "discarded",
                        &why,
                        now,
                    )
                    .await?;
                    info!(
                        queue_id,
                        "reception: not valid PEC ({reason}): discarded for {r}"
                    );
                }
                MailboxPolicy::Folder(folder) => {
                    let to = MailboxPolicy::folder_address(r, folder);
                    self.pass_on(tx, std::slice::from_ref(&to)).await?;
                    let why =
                        format!("{reason}; consegnato nella cartella {folder} della casella {r}");
                    self.log_not_pec(
                        tx,
                        std::slice::from_ref(r),
                        EventKind::Filed,
                        "filed",
                        &why,
                        now,
                    )
                    .await?;
                    info!(
                        queue_id,
                        "reception: not valid PEC ({reason}): {r} files it into {folder}"
                    );
                }
                _ => {}
            }
            if let MailboxPolicy::Forward(to) = p {
                if !forwarded.contains(to) {
                    self.pass_on(tx, std::slice::from_ref(to)).await?;
                    let why = format!("{reason}; inoltrato a {to} per la casella {r}");
                    self.log_not_pec(
                        tx,
                        std::slice::from_ref(r),
                        EventKind::Forwarded,
                        "forwarded",
                        &why,
                        now,
                    )
                    .await?;
                    info!(
                        queue_id,
                        "reception: not valid PEC ({reason}): {r} forwards to {to}"
                    );
                    forwarded.push(to.clone());
                }
            }
        }
        Ok(Local::NotPec {
            reason,
            anomaly,
            forwarded,
            received_from_non_erds,
        })
    }

    /// A legal-log record about envelope `pec_id`.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        cert: &Certification,
        pec_id: &str,
        kind: EventKind,
        related_ids: Vec<String>,
        tx: &Transaction,
        provider: &str,
        outcome: &str,
        reason: Option<&str>,
        at: Instant,
    ) -> LogEvent {
        LogEvent {
            pec_id: pec_id.to_string(),
            at,
            kind,
            sender: cert.mittente.clone(),
            recipients: cert
                .destinatari
                .iter()
                .map(|d| (d.address.clone(), d.tipo))
                .collect(),
            subject: cert.oggetto.clone(),
            related_ids,
            provider: provider.to_string(),
            queue_id: tx.queue_id.clone(),
            outcome: outcome.to_string(),
            reason: reason.map(str::to_string),
        }
    }
}

/// What a receipt from another provider is about, judged against our own records
/// ([`AfterQueue::correlate`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Correlation {
    /// Our certification data of the envelope named by the daticert `identificativo`, when
    /// it is one of ours.
    envelope: Option<Certification>,
    /// The recipients the receipt speaks of (daticert `ricezione` or `consegna`).
    about: Vec<String>,
    /// The receipt is about our envelope (identificativo and `X-Riferimento-Message-ID`),
    /// its type is one another provider may send us about it, and every recipient it speaks
    /// of is a certified recipient of that envelope in a domain the signer manages.
    correlated: bool,
    /// Correlated, but no recipient it speaks of is still waiting for what it reports.
    late: bool,
    /// Why it does not correlate, for the log.
    why_not: Option<String>,
}

impl Correlation {
    /// The legal-log outcome of the received receipt.
    fn outcome(&self) -> &'static str {
        match (self.correlated, self.late) {
            (false, _) => "uncorrelated",
            (true, true) => "late",
            (true, false) => "correlated",
        }
    }
}
