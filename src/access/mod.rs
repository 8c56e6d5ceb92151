// SPDX-License-Identifier: GPL-3.0-or-later
//! Access point (punto di accesso, spec §5.1): formal checks, antivirus, and the decision to
//! wrap the submission into the signed transport envelope or refuse it with a signed
//! non-acceptance notice. `milter.rs` is the thin indymilter adapter; the PEC rules live
//! here.
//!
//! Failure rule: every internal error (store, HSM, antivirus, index, injection) is a
//! temporary failure, so the client retries and nothing unwrapped is ever accepted.

use std::sync::Arc;

use tracing::{error, info, warn};

use crate::antivirus::{Antivirus, ScanVerdict};
use crate::index::IndexHandle;
use crate::issuing::{blocking, IssueError, Issuing};
use crate::log::request::{self as log_request, Recognised, RequestSettings};
use crate::message::build::{Builder, Certification, Generated, OriginalInfo};
use crate::message::kind::{MessageKind, RecipientType};
use crate::message::time::Instant;
use crate::store::outbox::non_acceptance_key;
use crate::store::{
    Accepted, Effect, EventKind, LogEvent, LogRequest, MailboxSettings, MailboxState, Refused,
};

pub mod acceptance;
pub mod attachments;
pub mod checks;
pub mod milter;
pub mod rem;
pub mod testfiles;
pub mod zip;

pub use attachments::{AttachmentPolicy, Bounds};
pub use checks::{Limits, Rule, Violation};

/// Access-point policy beyond the formal limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub limits: Limits,
    /// Above this size the message is rejected in SMTP, without a notice (spec §3.3).
    pub hard_size_limit: u64,
    /// Also reject a refused submission in SMTP (5.7.x) after its notice is queued, instead
    /// of discarding it silently (the signed notice is the answer either way).
    pub reject_in_smtp: bool,
    /// Blocked attachments, macros, what cannot be scanned ([`attachments`]).
    pub attachments: AttachmentPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            limits: Limits::default(),
            hard_size_limit: 150_000_000,
            reject_in_smtp: false,
            attachments: AttachmentPolicy::default(),
        }
    }
}

/// One submission as the milter saw it at end of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    /// Postfix queue id (`{i}`).
    pub queue_id: Option<String>,
    /// SASL login (`{auth_authen}`).
    pub login: Option<String>,
    /// When the SMTP session authenticated with `login`: the instant the milter first saw
    /// the login in this connection. Postfix passes milters no time of the AUTH command
    /// itself; the login arrives with the first MAIL FROM after it, so this is that
    /// command's instant (the AUTH precedes it in the same session).
    pub auth_at: Option<Instant>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message, CRLF, header and body.
    pub message: Vec<u8>,
    /// Its size as received (larger than `message` when the milter stopped collecting an
    /// oversize body).
    pub size: u64,
}

/// An SMTP reply for the milter to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: &'static str,
    pub xcode: &'static str,
    pub text: String,
}

/// What to do with the submission.
#[derive(Debug)]
pub enum Decision {
    /// Replace the queued message with this transport envelope (same SMTP envelope) and
    /// accept it. The acceptance receipt follows after queue.
    Wrap(Box<Generated>),
    /// Replace the queued message with this REM dispatch (same SMTP envelope) and accept
    /// it; the SubmissionAcceptance REM receipt follows after queue ([`rem::after_queue`]).
    Dispatch(Box<crate::rem::compose::Composed>),
    /// The non-acceptance notice is queued: discard the original, or reject it with this
    /// reply when the policy says so.
    Refused(Option<Reply>),
    /// Reject in SMTP, no notice (far over the size limit, no authentication).
    Reject(Reply),
    /// Temporary failure: the client retries.
    Tempfail(Reply),
    /// An owner's request for their log extract ([`crate::log::request`]), recorded with
    /// this id: accept the message unwrapped, marked with
    /// [`crate::log::request::REQUEST_HEADER`]; the after-queue filter answers it.
    LogRequest(String),
}

/// Everything the access point depends on, each behind its trait.
pub struct AccessPoint {
    pub policy: Policy,
    /// Store, reinjection, identity, signer, ids and clock: the issuing kit every role
    /// shares.
    pub kit: Issuing,
    pub index: Arc<IndexHandle>,
    pub antivirus: Arc<dyn Antivirus>,
    /// Owner self-service (`log.request_*`); `None`: disabled.
    pub log_requests: Option<RequestSettings>,
    /// REM (`[rem]`, issue 20); `None`: PEC only.
    pub rem: Option<Arc<rem::RemAccess>>,
}

/// The quota window: 24 hours, in seconds.
const DAY: i64 = 24 * 3600;

/// The provider's limits with the mailbox's overrides.
pub fn settings_limits(provider: &Limits, settings: &MailboxSettings) -> Limits {
    let mut limits = provider.clone();
    if let Some(n) = settings.max_recipients {
        limits.max_recipients = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(n) = settings.max_total_size {
        limits.max_total_size = n;
    }
    limits
}

/// The reply while the service is suspended (`pec suspend`): a temporary failure whose
/// text says so, so that clients retry and users read why.
pub fn suspended_reply(reason: &str) -> Reply {
    Reply {
        code: "451",
        xcode: "4.3.2",
        text: format!(
            "PEC: servizio temporaneamente sospeso ({}); riprovare piu' tardi",
            reason.replace(['\r', '\n'], " ")
        ),
    }
}

fn tempfail(text: impl Into<String>) -> Decision {
    Decision::Tempfail(Reply {
        code: "451",
        xcode: "4.3.0",
        text: text.into(),
    })
}

impl AccessPoint {
    /// Runs blocking work (store, HSM) off the async threads; any failure becomes the
    /// tempfail to answer, `what` naming the unavailable part in the reply.
    async fn blocking<T, E>(
        self: &Arc<Self>,
        what: &str,
        f: impl FnOnce(&AccessPoint) -> Result<T, E> + Send + 'static,
    ) -> Result<T, Decision>
    where
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let this = Arc::clone(self);
        match blocking(move || f(&this)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                warn!(part = what, error = %e, "access point: a part is unavailable: tempfail");
                Err(tempfail(format!("PEC: {what} non disponibile")))
            }
            Err(e) => {
                error!(part = what, error = %e, "access point: internal error: tempfail");
                Err(tempfail("PEC: errore interno"))
            }
        }
    }

    fn builder(&self) -> Builder<'_> {
        Builder {
            issuer: &self.kit.issuer,
            signer: self.kit.signer.as_ref(),
            ids: self.kit.ids.as_ref(),
        }
    }

    /// Decides what happens to one submission (spec §5.1).
    pub async fn decide(self: &Arc<Self>, mut s: Submission) -> Decision {
        let qid = s.queue_id.clone().unwrap_or_default();
        if s.size > self.policy.hard_size_limit {
            warn!(queue_id = %qid, size = s.size, "submission far over the size limit: rejected in smtp");
            return Decision::Reject(Reply {
                code: "552",
                xcode: "5.3.4",
                text: format!(
                    "PEC: messaggio troppo grande (limite {} byte)",
                    self.policy.hard_size_limit
                ),
            });
        }
        let Some(login) = s.login.clone().filter(|l| !l.is_empty()) else {
            return Decision::Reject(Reply {
                code: "530",
                xcode: "5.7.0",
                text: "PEC: autenticazione richiesta".into(),
            });
        };
        let at = self.kit.clock.now();

        // Read on every transaction: the provider's suspension, the sender mapping, the
        // sending mailbox's settings and retirement.
        let (login2, from2) = (login.clone(), s.mail_from.clone());
        let (suspension, authorised, settings, retired) = match self
            .blocking("archivio", move |ap| {
                let store = &ap.kit.store;
                Ok::<_, crate::store::StoreError>((
                    store.provider_suspension()?,
                    store.sender_allowed(&login2, &from2)?,
                    store.mailbox_settings(&from2)?,
                    store.retired_mailbox(&from2)?,
                ))
            })
            .await
        {
            Ok(a) => a,
            Err(d) => return d,
        };
        if let Some(outage) = suspension {
            info!(queue_id = %qid, reason = %outage.reason, "service suspended: tempfail");
            return Decision::Tempfail(suspended_reply(&outage.reason));
        }
        let pec_id = self.kit.ids.next_id(at);
        tracing::Span::current().record("msgid", pec_id.as_str());

        if let Some(settings) = &self.log_requests {
            match settings.recognise(&s.mail_from, &s.rcpt_to) {
                Recognised::No => {}
                Recognised::Request(address) => {
                    return self.log_request(&s, authorised, address, at, pec_id).await;
                }
                Recognised::Misaddressed => {
                    info!(queue_id = %qid, pec_id = %pec_id, "log request misaddressed: rejected in smtp");
                    return Decision::Reject(Reply {
                        code: "550",
                        xcode: "5.1.1",
                        text: format!(
                            "PEC: l'indirizzo {}@<dominio> accetta solo richieste di estratto \
                             del registro della propria casella, senza altri destinatari",
                            settings.local_part
                        ),
                    });
                }
            }
        }

        // REM: decided on the recipients and the sender's identity, before the checks so
        // that a refusal on the REM path is a SubmissionRejection.
        let rem_sender = match self.rem_path(&s, at).await {
            Ok(r) => r,
            Err(d) => return d,
        };

        let input = checks::Input {
            mail_from: &s.mail_from,
            rcpt_to: &s.rcpt_to,
            message: &s.message,
            sender_authorised: authorised,
        };
        let checked = checks::check(&input, &settings_limits(&self.policy.limits, &settings));
        // Certification data: from the checked header, or as much of it as can be read
        // when the header itself is what failed.
        let mut info = match &checked {
            Ok(info) => info.clone(),
            Err(_) => OriginalInfo::parse(&s.message).unwrap_or_default(),
        };
        // Ordinary mail clients cannot set X-TipoRicevuta: the mailbox's default applies.
        if info.tipo_ricevuta.is_none() {
            info.tipo_ricevuta = settings.receipt_type;
        }
        let recipients: Vec<(String, RecipientType)> = s
            .rcpt_to
            .iter()
            .map(|r| (r.clone(), self.index.recipient_type(r)))
            .collect();
        let cert = Certification::for_submission(&info, &s.mail_from, &recipients, &pec_id);

        if let Err(v) = &checked {
            if v.rule == Rule::SenderNotAuthorised {
                // No certified sender exists to notify: the reverse path is not the
                // user's. Reject in SMTP, as `reject_sender_login_mismatch` would.
                info!(queue_id = %qid, pec_id = %pec_id, reason = %v.reason, "sender not authorised: rejected in smtp");
                return Decision::Reject(Reply {
                    code: "550",
                    xcode: "5.7.1",
                    text: format!("PEC: {}", v.reason),
                });
            }
        }
        // The sending mailbox may not send (state, retired) or is over its daily quota:
        // a non-acceptance notice, before the formal checks' own reasons.
        let mailbox_refusal = match (settings.state, &retired) {
            (_, Some(_)) => Some("casella cessata: l'invio non e' consentito".to_string()),
            (MailboxState::Suspended, None) => {
                Some("casella sospesa: l'invio non e' consentito".to_string())
            }
            (MailboxState::ReadOnly, None) => {
                Some("casella in sola lettura: l'invio non e' consentito".to_string())
            }
            (MailboxState::Active, None) => None,
        };
        let mailbox_refusal = match (mailbox_refusal, settings.daily_quota) {
            (Some(r), _) => Some(r),
            (None, None) => None,
            (None, Some(quota)) => {
                let (from2, since) = (s.mail_from.clone(), Instant::from_unix(at.unix() - DAY));
                match self
                    .blocking("archivio", move |ap| {
                        ap.kit.store.accepted_since(&from2, since)
                    })
                    .await
                {
                    Ok(n) if n >= quota => Some(format!(
                        "superato il limite di {quota} messaggi nelle 24 ore per la casella"
                    )),
                    Ok(_) => None,
                    Err(d) => return d,
                }
            }
        };
        if let Some(reason) = mailbox_refusal {
            info!(queue_id = %qid, pec_id = %pec_id, reason = %reason, "submission refused by the mailbox's settings");
            return self
                .refuse_on(
                    rem_sender.as_ref(),
                    &s,
                    (cert, &info.subject),
                    at,
                    (MessageKind::NonAcceptance, true),
                    reason,
                    None,
                )
                .await;
        }
        if let Err(v) = checked {
            info!(queue_id = %qid, pec_id = %pec_id, rule = ?v.rule, reason = %v.reason, "submission refused");
            let policy = matches!(v.rule, Rule::TooManyRecipients | Rule::TotalSize);
            return self
                .refuse_on(
                    rem_sender.as_ref(),
                    &s,
                    (cert, &info.subject),
                    at,
                    (MessageKind::NonAcceptance, policy),
                    v.reason,
                    None,
                )
                .await;
        }

        match self.antivirus.scan(&s.message).await {
            Ok(ScanVerdict::Clean) => {}
            Ok(ScanVerdict::Infected(name)) => {
                info!(queue_id = %qid, pec_id = %pec_id, virus = %name, "submission infected");
                return self
                    .refuse_on(
                        rem_sender.as_ref(),
                        &s,
                        (cert, &info.subject),
                        at,
                        (MessageKind::NonAcceptanceVirus, false),
                        name,
                        Some(s.message.clone()),
                    )
                    .await;
            }
            Err(e) => {
                warn!(queue_id = %qid, error = %e, "antivirus unavailable: tempfail");
                return tempfail("PEC: antivirus non disponibile");
            }
        }

        // The attachment policy, after the antivirus: a virus anywhere, nested parts and
        // archives included, is a virus (its notice, its quarantine), not a blocked file.
        // The walk is bounded CPU work: off the async threads, the message moved there
        // and back.
        let policy = self.policy.attachments.clone();
        let message = std::mem::take(&mut s.message);
        let (message, inspection) = match blocking(move || {
            let inspection = attachments::inspect(&message, &policy);
            (message, inspection)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                error!(queue_id = %qid, error = %e, "attachment checks failed: tempfail");
                return tempfail("PEC: errore interno");
            }
        };
        s.message = message;
        if let Some(blocked) = inspection.blocked {
            info!(queue_id = %qid, pec_id = %pec_id, attachment = %blocked.path, reason = ?blocked.reason, "submission refused: attachment not allowed");
            return self
                .refuse_on(
                    rem_sender.as_ref(),
                    &s,
                    (cert, &info.subject),
                    at,
                    (MessageKind::NonAcceptance, true),
                    blocked.reason(),
                    None,
                )
                .await;
        }
        let cautions = inspection.cautions;
        if !cautions.is_empty() {
            let kinds: Vec<&str> = cautions.iter().map(|c| c.kind.as_str()).collect();
            info!(queue_id = %qid, pec_id = %pec_id, cautions = ?kinds, "attachments accepted with a warning");
        }

        if let Some(sender) = &rem_sender {
            return self.rem_accept(&mut s, sender, cert, login, at).await;
        }

        // Accepted: build and sign the envelope, then record it with one instant.
        // The message is not needed after this: moved, not copied.
        let (message, cert2) = (std::mem::take(&mut s.message), cert.clone());
        let envelope = match self
            .blocking("firma", move |ap| {
                ap.builder()
                    .transport_envelope_with(&message, &cert2, at, &cautions)
            })
            .await
        {
            Ok(g) => g,
            Err(d) => return d,
        };
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
        info!(queue_id = %qid, pec_id = %pec_id, "submission accepted: wrapped in the transport envelope");
        Decision::Wrap(Box::new(envelope))
    }

    /// A refusal on the path the submission is on: PEC ([`AccessPoint::refuse`]) or REM
    /// ([`AccessPoint::rem_refuse`], its reason code from the kind and whether the
    /// provider's policy refused it, [`rem::rejection_code`]).
    #[allow(clippy::too_many_arguments)]
    async fn refuse_on(
        self: &Arc<Self>,
        rem_sender: Option<&rem::RemSender>,
        s: &Submission,
        (cert, subject): (Certification, &str),
        at: Instant,
        (kind, policy): (MessageKind, bool),
        reason: String,
        quarantine: Option<Vec<u8>>,
    ) -> Decision {
        match rem_sender {
            None => self.refuse(s, cert, at, kind, reason, quarantine).await,
            Some(_) => {
                let code = rem::rejection_code(kind, policy);
                self.rem_refuse(s, cert, subject, at, kind, code, reason, quarantine)
                    .await
            }
        }
    }

    /// Refusal: build and sign the notice, then emit it through the outbox
    /// ([`Issuing::emit`], key [`non_acceptance_key`]): one store transaction records
    /// the refusal's legal-log events, the quarantined message and the notice's bytes
    /// ([`Effect::Refused`]), then the notice is injected. The notice and its record are
    /// never one without the other. Once staged the refusal stands: when the injection
    /// fails the outbox sweep sends the staged notice, and the client gets the refusal,
    /// not a 4xx (a retry would be a new submission, with a notice of its own). A client
    /// that retries after a 4xx given before staging is a new submission (new PEC msgid),
    /// so no key could make it find the first one; nothing was recorded for that one.
    async fn refuse(
        self: &Arc<Self>,
        s: &Submission,
        cert: Certification,
        at: Instant,
        kind: MessageKind,
        reason: String,
        quarantine: Option<Vec<u8>>,
    ) -> Decision {
        let (cert2, reason2) = (cert.clone(), reason.clone());
        let notice = match self
            .blocking("firma", move |ap| {
                if kind == MessageKind::NonAcceptanceVirus {
                    ap.builder().non_acceptance_virus(&cert2, at, &reason2)
                } else {
                    ap.builder().non_acceptance(&cert2, at, &reason2)
                }
            })
            .await
        {
            Ok(g) => g,
            Err(d) => return d,
        };
        let pec_id = cert.identificativo.clone();
        let refused = Refused {
            pec_id: pec_id.clone(),
            queue_id: s.queue_id.clone(),
            at,
            cert,
            kind,
            reason: reason.clone(),
            notice_id: notice.message_id.clone(),
            quarantine,
            provider: self.kit.issuer.provider_name.clone(),
            login: s.login.clone(),
            auth_at: s.auth_at,
        };
        let notice_id = notice.message_id.clone();
        let effect = Effect::Refused(Box::new(refused));
        match self
            .kit
            .emit(non_acceptance_key(&pec_id), notice, effect, at)
            .await
        {
            Ok(_) => {}
            Err(IssueError::Staged(e)) => {
                warn!(pec_id = %pec_id, notice = %notice_id, "non-acceptance notice staged, not injected (the outbox sweep sends it): {e}");
            }
            Err(e) => {
                warn!(pec_id = %pec_id, error = %e, "access point: the refusal could not be recorded: tempfail");
                return tempfail("PEC: archivio non disponibile");
            }
        }
        self.refused(kind, format!("PEC: messaggio non accettato: {reason}"))
    }

    /// A refusal whose notice (PEC) or rejection receipt (REM) is staged: the client gets
    /// `text` in a 550 when `reject_in_smtp`, else the message is discarded.
    fn refused(&self, kind: MessageKind, text: String) -> Decision {
        if self.policy.reject_in_smtp {
            Decision::Refused(Some(Reply {
                code: "550",
                xcode: if kind == MessageKind::NonAcceptanceVirus {
                    "5.7.1"
                } else {
                    "5.7.0"
                },
                text,
            }))
        } else {
            Decision::Refused(None)
        }
    }

    /// An owner's request for their log extract (see [`crate::log::request`]): the
    /// period is read, the rate limit applied and the request recorded with its event in
    /// one store transaction. Over the limit: 450 4.7.1, nothing queued.
    async fn log_request(
        self: &Arc<Self>,
        s: &Submission,
        authorised: bool,
        address: String,
        at: Instant,
        pec_id: String,
    ) -> Decision {
        let qid = s.queue_id.clone().unwrap_or_default();
        if !authorised {
            info!(queue_id = %qid, "log request from a sender the login may not use: rejected in smtp");
            return Decision::Reject(Reply {
                code: "550",
                xcode: "5.7.1",
                text: format!(
                    "PEC: il mittente {} non corrisponde all'utente autenticato",
                    s.mail_from
                ),
            });
        }
        let subject = OriginalInfo::parse(&s.message)
            .map(|i| i.subject)
            .unwrap_or_default();
        let period = log_request::period_of_message(&subject, &s.message, at);
        let request = LogRequest {
            id: pec_id.clone(),
            owner: s.mail_from.to_lowercase(),
            address,
            at,
            period,
            subject,
            queue_id: s.queue_id.clone(),
        };
        let Some(settings) = self.log_requests.clone() else {
            return tempfail("PEC: servizio non configurato");
        };
        let window = i64::try_from(settings.window.as_secs()).unwrap_or(i64::MAX);
        let since = Instant::from_unix(at.unix().saturating_sub(window));
        let event = log_request::request_event(&request, &self.kit.issuer.provider_name);
        let r2 = request.clone();
        let accepted = match self
            .blocking("archivio", move |ap| {
                ap.kit
                    .store
                    .claim_log_request(&r2, settings.limit, since, &event)
            })
            .await
        {
            Ok(a) => a,
            Err(d) => return d,
        };
        if !accepted {
            info!(queue_id = %qid, owner = %request.owner, "log request over the rate limit: 450");
            return Decision::Tempfail(Reply {
                code: "450",
                xcode: "4.7.1",
                text: format!(
                    "PEC: raggiunto il limite di {} richieste di estratto del registro ogni {} \
                     minuti; riprovare piu' tardi",
                    settings.limit,
                    settings.window.as_secs() / 60
                ),
            });
        }
        info!(queue_id = %qid, request = %pec_id, owner = %request.owner, period_ok = request.period.is_ok(), "log request accepted");
        Decision::LogRequest(pec_id)
    }

    /// Logs a submission rejected in SMTP without a notice.
    pub fn log_rejected(&self, s: &Submission, reply: &Reply) {
        let at = self.kit.clock.now();
        let event = LogEvent {
            pec_id: self.kit.ids.next_id(at),
            at,
            kind: EventKind::RejectedInSmtp,
            sender: s.mail_from.clone(),
            recipients: s
                .rcpt_to
                .iter()
                .map(|r| (r.clone(), self.index.recipient_type(r)))
                .collect(),
            subject: OriginalInfo::parse(&s.message)
                .map(|i| i.subject)
                .unwrap_or_default(),
            related_ids: Vec::new(),
            provider: self.kit.issuer.provider_name.clone(),
            queue_id: s.queue_id.clone(),
            outcome: "rejected".into(),
            reason: Some(format!("{} {} {}", reply.code, reply.xcode, reply.text)),
        };
        if let Err(e) = self.kit.store.log(&event) {
            warn!(error = %e, "cannot log an smtp rejection");
        }
    }
}
