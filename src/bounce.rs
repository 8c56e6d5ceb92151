// SPDX-License-Identifier: GPL-3.0-or-later
//! Bounces of our transport envelopes (the providers' manuals; spec §5.2 "standard SMTP/DSN
//! handling"): when an MTA refuses one of our envelopes at `RCPT` or `DATA`, our Postfix
//! writes a bounce; when it bounces it later, a DSN comes back from outside. The delivery
//! status notification (RFC 3464) goes to the envelope's sender, one of our mailboxes:
//! Postfix's own bounces straight to the delivery point (Postfix does not pass the mail it
//! generates through the content filter), the others through the reception point. Both
//! roles hand it here. Instead of the report (or a busta di anomalia wrapping it), the
//! sender gets a signed avviso di mancata consegna (spec §3.7) per certified recipient the
//! report says failed, carrying the remote reply, and the tracking row closes (failed) in the
//! same transaction; a recipient whose outcome is decided already gets nothing.
//!
//! What the notice certifies is built from our own record of the envelope
//! ([`crate::store::Store::envelope_certification`]), never from the report: the report
//! only names which of the envelope's certified recipients failed and why. A report is
//! taken only when all of these hold, else it is ordinary mail:
//!
//! * the null reverse path (`MAIL FROM:<>`), as every bounce has;
//! * `multipart/report; report-type=delivery-status` with a `message/delivery-status` part;
//! * the returned message (`message/rfc822` or `text/rfc822-headers`) is one of our
//!   transport envelopes: `X-Trasporto: posta-certificata` and the Message-ID of an envelope
//!   in our records;
//! * every local recipient of the report is that envelope's sender;
//! * at least one failed recipient is a certified recipient of that envelope.
//!
//! Failures about recipients that are not certified recipients of the envelope (esterno,
//! or unknown to it) certify nothing: the report is then also delivered the ordinary way,
//! so the sender still reads about them.
//!
//! Codes (NOTA 12 through [`crate::message::codes`]): `5.1.1`, `5.1.3`, `5.1.6` →
//! `no-dest`; `5.1.2` and `5.4.4` (Postfix: "Host or domain name not found") →
//! `no-dominio`; anything else → `altro`.

use mail_parser::{MessageParser, MimeHeaders};
use tracing::{info, warn};

use crate::issuing::{IssueError, Issuing};
use crate::message::build::Certification;
use crate::message::codes::non_delivery_reason;
use crate::message::ids::unbracketed;
use crate::message::kind::{MessageKind, RecipientType};
use crate::message::mime::{fields, normalize_crlf, split_header_body};
use crate::message::time::Instant;
use crate::store::outbox::bounce_key;
use crate::store::{Effect, EventKind, LogEvent, TrackingState};

/// Most per-recipient groups read from one report.
pub const MAX_RECIPIENTS: usize = 1000;

/// A delivery status notification about one of what look like our transport envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Message-ID of the returned envelope, without angle brackets.
    pub envelope_id: String,
    /// `Reporting-MTA`, without its type (`dns;`).
    pub reporting_mta: Option<String>,
    /// The recipients whose `Action` is `failed`.
    pub failed: Vec<Failure>,
}

/// One failed recipient of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `Final-Recipient` (else `Original-Recipient`), without its type, lower case.
    pub recipient: String,
    /// `Status` (an enhanced status code, `5.1.1`).
    pub status: Option<String>,
    /// `Remote-MTA`, without its type.
    pub remote_mta: Option<String>,
    /// `Diagnostic-Code`, without its type: the remote reply.
    pub diagnostic: Option<String>,
}

impl Failure {
    /// The remote reply as the notice shows it: `host: reply`, or what the report says.
    pub fn remote_reply(&self) -> String {
        let reply = self
            .diagnostic
            .clone()
            .or_else(|| self.status.clone())
            .unwrap_or_else(|| "failed".into());
        match &self.remote_mta {
            Some(host) => format!("{host}: {reply}"),
            None => reply,
        }
    }
}

/// A delivery status notification, whatever message it returns (a transport envelope, or
/// a REM dispatch relayed to an ordinary address, [`crate::access::nonerds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawReport {
    /// The returned message (`message/rfc822`) or its header (`text/rfc822-headers`).
    pub returned: Vec<u8>,
    /// `Reporting-MTA`, without its type.
    pub reporting_mta: Option<String>,
    /// The recipients whose `Action` is `failed`.
    pub failed: Vec<Failure>,
}

/// The report in `data` about a returned transport envelope, if it is one; `None` for
/// anything else (which stays ordinary mail).
pub fn parse(data: &[u8]) -> Option<Report> {
    let r = parse_report(data)?;
    Some(Report {
        envelope_id: returned_envelope(&r.returned)?,
        reporting_mta: r.reporting_mta,
        failed: r.failed,
    })
}

/// The delivery status notification in `data`, whatever it returns; `None` when it is
/// not one (with a status part and a returned message).
pub fn parse_report(data: &[u8]) -> Option<RawReport> {
    let message = MessageParser::default().parse(data)?;
    let ct = message.content_type()?;
    let report_type = ct.attribute("report-type").unwrap_or("");
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        || !report_type.eq_ignore_ascii_case("delivery-status")
    {
        return None;
    }
    let mut status: Option<&[u8]> = None;
    let mut returned: Option<&[u8]> = None;
    for part in message.parts.iter().skip(1) {
        let Some(ct) = part.content_type() else {
            continue;
        };
        let sub = ct.subtype().unwrap_or("").to_ascii_lowercase();
        match (ct.ctype().to_ascii_lowercase().as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                status.get_or_insert(part.contents());
            }
            ("message", "rfc822" | "global") | ("text", "rfc822-headers") => {
                returned.get_or_insert(part.contents());
            }
            _ => {}
        }
    }
    let returned = returned?.to_vec();
    let (reporting_mta, failed) = status_fields(status?);
    Some(RawReport {
        returned,
        reporting_mta,
        failed,
    })
}

/// The unfolded, trimmed value of header field `name` of the returned message `returned`.
pub fn returned_field(returned: &[u8], name: &str) -> Option<String> {
    let raw = normalize_crlf(returned);
    let (header, _) = split_header_body(&raw);
    let fields = fields(header).ok()?;
    fields
        .iter()
        .find(|f| f.is(name))
        .map(|f| f.unfolded().trim().to_string())
}

/// The Message-ID of the returned message when it is a transport envelope.
fn returned_envelope(returned: &[u8]) -> Option<String> {
    let raw = normalize_crlf(returned);
    let (header, _) = split_header_body(&raw);
    let fields = fields(header).ok()?;
    let value = |name: &str| {
        fields
            .iter()
            .find(|f| f.is(name))
            .map(|f| f.unfolded().trim().to_string())
    };
    if !value("X-Trasporto")?.eq_ignore_ascii_case("posta-certificata") {
        return None;
    }
    let id = value("Message-ID")?;
    let id = unbracketed(&id).trim().to_string();
    (!id.is_empty()).then_some(id)
}

/// Removes the type of a typed field (`rfc822; a@b` → `a@b`).
fn untyped(value: &str) -> String {
    value
        .split_once(';')
        .map_or(value, |(_, v)| v)
        .trim()
        .to_string()
}

/// `Reporting-MTA` and the failed recipients of a `message/delivery-status` body: groups
/// of header fields separated by empty lines, the first per message, the others per
/// recipient (RFC 3464 §2.1).
fn status_fields(body: &[u8]) -> (Option<String>, Vec<Failure>) {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut groups = text
        .split("\n\n")
        .map(parse_group)
        .filter(|g| !g.is_empty());
    let reporting = groups
        .next()
        .and_then(|g| lookup(&g, "reporting-mta"))
        .map(|v| untyped(&v));
    let failed = groups
        .take(MAX_RECIPIENTS)
        .filter(|g| lookup(g, "action").is_some_and(|a| a.trim().eq_ignore_ascii_case("failed")))
        .filter_map(|g| {
            let recipient = lookup(&g, "final-recipient")
                .or_else(|| lookup(&g, "original-recipient"))
                .map(|v| untyped(&v).trim_matches(['<', '>']).to_ascii_lowercase())
                .filter(|r| r.contains('@'))?;
            Some(Failure {
                recipient,
                status: lookup(&g, "status").map(|s| s.trim().to_string()),
                remote_mta: lookup(&g, "remote-mta").map(|v| untyped(&v)),
                diagnostic: lookup(&g, "diagnostic-code").map(|v| untyped(&v)),
            })
        })
        .collect();
    (reporting, failed)
}

/// One group's fields, names lower case, folded lines joined.
fn parse_group(group: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in group.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn lookup(group: &[(String, String)], name: &str) -> Option<String> {
    group
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// A bounce of one of our envelopes, judged against our records ([`judge`]).
#[derive(Debug, Clone)]
pub struct Bounced {
    /// Our record of the envelope.
    pub cert: Certification,
    pub reporting_mta: Option<String>,
    /// The failed recipients that are certified recipients of the envelope.
    pub failed: Vec<Failure>,
    /// The report also names failures the envelope does not certify.
    pub uncertified: bool,
}

/// The bounce of one of our envelopes in a transaction from `mail_from` to our mailboxes
/// `local` carrying `data`, when it is one (see the module documentation); `None`:
/// ordinary mail.
pub async fn judge(
    kit: &Issuing,
    mail_from: &str,
    local: &[String],
    data: &[u8],
) -> Result<Option<Bounced>, IssueError> {
    if !mail_from.is_empty() || local.is_empty() {
        return Ok(None);
    }
    let Some(report) = crate::issuing::blocking_borrowed(|| parse(data)) else {
        return Ok(None);
    };
    let id = report.envelope_id.clone();
    let Some(cert) = kit.store(move |s| s.envelope_certification(&id)).await? else {
        return Ok(None);
    };
    if !local
        .iter()
        .all(|r| r.trim().eq_ignore_ascii_case(cert.mittente.trim()))
    {
        return Ok(None);
    }
    let certified = |a: &str| {
        cert.destinatari.iter().any(|d| {
            d.tipo == RecipientType::Certificato && d.address.trim().eq_ignore_ascii_case(a)
        })
    };
    let (failed, other): (Vec<Failure>, Vec<Failure>) = report
        .failed
        .into_iter()
        .partition(|f| certified(&f.recipient));
    if failed.is_empty() {
        return Ok(None);
    }
    Ok(Some(Bounced {
        cert,
        reporting_mta: report.reporting_mta,
        failed,
        uncertified: !other.is_empty(),
    }))
}

/// One avviso di mancata consegna per failed recipient of `b`, built from our record of
/// the envelope, each staged with its tracking row marked failed in one transaction; a
/// recipient whose outcome is decided already gets none. `client` (who handed the report
/// over) and `queue_id` go to the legal log. Returns the Message-IDs of the notices that
/// stand for the failures (a retry finds the ones staged before).
pub async fn notify(
    kit: &Issuing,
    b: &Bounced,
    client: Option<&str>,
    queue_id: Option<&str>,
    now: Instant,
) -> Result<Vec<String>, IssueError> {
    let provider = kit.issuer.provider_name.clone();
    let mut notices = Vec::new();
    for f in &b.failed {
        let code = f.status.as_deref().filter(|s| s.starts_with("5."));
        let (errore, coded) = non_delivery_reason(code, &provider);
        let reply: String = f
            .remote_reply()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        let esteso = format!("{coded} ({reply})");
        let (c, r, e) = (b.cert.clone(), f.recipient.clone(), esteso.clone());
        let notice = kit
            .build(move |bd| bd.non_delivery(&c, now, &r, errore, &e))
            .await?;
        let event = LogEvent {
            pec_id: b.cert.identificativo.clone(),
            at: now,
            kind: EventKind::Issued(MessageKind::NonDelivery),
            sender: b.cert.mittente.clone(),
            recipients: vec![(f.recipient.clone(), RecipientType::Certificato)],
            subject: b.cert.oggetto.clone(),
            related_ids: vec![notice.message_id.clone()],
            provider: provider.clone(),
            queue_id: queue_id.map(str::to_string),
            outcome: "failed".into(),
            reason: Some(format!(
                "{esteso}; rapporto di mancata consegna (DSN) di {}, ricevuto da {}",
                b.reporting_mta.as_deref().unwrap_or("-"),
                client.unwrap_or("-")
            )),
        };
        let effect = Effect::Tracking {
            updates: vec![(f.recipient.clone(), TrackingState::Failed)],
            event,
        };
        let key = bounce_key(&b.cert.identificativo, &f.recipient);
        let queue_id = queue_id.unwrap_or("-");
        match kit.emit(key, notice, effect, now).await?.message_id() {
            Some(id) => {
                warn!(queue_id, msgid = %b.cert.identificativo, notice = %id,
                    "bounce: our envelope bounced for {} ({reply}): mancata consegna sent to {}",
                    f.recipient, b.cert.mittente);
                notices.push(id.to_string());
            }
            None => info!(queue_id, msgid = %b.cert.identificativo,
                "bounce: our envelope bounced for {}, who has an outcome already: no notice",
                f.recipient),
        }
    }
    Ok(notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bounce as Postfix writes it after a 550 at RCPT (headers returned).
    pub fn postfix_bounce(envelope_id: &str, headers_only: bool) -> Vec<u8> {
        let returned = format!(
            "Received: by mx.pec.example.it (Postfix)\r\nFrom: \"Per conto di: alice@pec.example.it\" <posta-certificata@pec.example.it>\r\n\
             To: bob@pec.example.org\r\nSubject: POSTA CERTIFICATA: prova\r\nMessage-ID: <{envelope_id}>\r\n\
             X-Trasporto: posta-certificata\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
        );
        let (ct, part) = if headers_only {
            (
                "text/rfc822-headers",
                returned.split("\r\n\r\n").next().unwrap().to_string() + "\r\n",
            )
        } else {
            ("message/rfc822", returned)
        };
        format!(
            "From: MAILER-DAEMON@mx.pec.example.it (Mail Delivery System)\r\n\
             To: alice@pec.example.it\r\nSubject: Undelivered Mail Returned to Sender\r\n\
             MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"B1\"\r\n\r\n--B1\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n\
             --B1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.pec.example.it\r\n\
             X-Postfix-Queue-ID: 4ABC\r\nArrival-Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\r\n\
             Final-Recipient: rfc822; Bob@pec.example.org\r\nOriginal-Recipient: rfc822;bob@pec.example.org\r\n\
             Action: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.pec.example.org\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 <bob@pec.example.org>: Recipient address\r\n rejected: User unknown\r\n\r\n\
             Final-Recipient: rfc822; carol@pec.example.org\r\nAction: delayed\r\nStatus: 4.4.1\r\n\r\n\
             --B1\r\nContent-Type: {ct}\r\n\r\n{part}\r\n--B1--\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn a_postfix_bounce_names_the_envelope_and_the_failed_recipient() {
        for headers_only in [false, true] {
            let r = parse(&postfix_bounce("opec.1.2@pec.example.it", headers_only)).unwrap();
            assert_eq!(r.envelope_id, "opec.1.2@pec.example.it");
            assert_eq!(r.reporting_mta.as_deref(), Some("mx.pec.example.it"));
            assert_eq!(r.failed.len(), 1, "the delayed one is not a failure");
            let f = &r.failed[0];
            assert_eq!(f.recipient, "bob@pec.example.org");
            assert_eq!(f.status.as_deref(), Some("5.1.1"));
            assert_eq!(
                f.remote_reply(),
                "mx.pec.example.org: 550 5.1.1 <bob@pec.example.org>: Recipient address rejected: User unknown"
            );
        }
    }

    #[test]
    fn anything_else_is_not_a_report_about_an_envelope() {
        let b = String::from_utf8(postfix_bounce("x@y", false)).unwrap();
        // Not a report, another report type, an ordinary returned message.
        assert_eq!(parse(b"Subject: hi\r\n\r\nbody\r\n"), None);
        assert_eq!(
            parse(
                b.replace(
                    "report-type=delivery-status",
                    "report-type=disposition-notification"
                )
                .as_bytes()
            ),
            None
        );
        assert_eq!(
            parse(
                b.replace("X-Trasporto: posta-certificata", "X-Other: 1")
                    .as_bytes()
            ),
            None
        );
        assert_eq!(
            parse(
                b.replace(
                    "Content-Type: message/delivery-status",
                    "Content-Type: text/plain"
                )
                .as_bytes()
            ),
            None
        );
        // Garbage never panics.
        for junk in [
            &b""[..],
            b"\r\n\r\n",
            b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n--",
        ] {
            assert_eq!(parse(junk), None);
        }
        // A thousand and one recipients: at most MAX_RECIPIENTS are read.
        let many: String = (0..MAX_RECIPIENTS + 1)
            .map(|i| {
                format!(
                    "Final-Recipient: rfc822; u{i}@x.it\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
                )
            })
            .collect();
        let big = b.replace(
            "Final-Recipient: rfc822; carol@pec.example.org",
            &format!("{many}Final-Recipient: rfc822; carol@pec.example.org"),
        );
        assert_eq!(parse(big.as_bytes()).unwrap().failed.len(), MAX_RECIPIENTS);
    }
}
