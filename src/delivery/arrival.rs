// SPDX-License-Identifier: GPL-3.0-or-later
//! Avviso di arrivo: the optional per-mailbox arrival notice (a service some providers
//! offer, not part of the technical rules). A short, unsigned, plain-text message to an
//! ordinary address: who sent a PEC message to the mailbox, its subject and when it was
//! delivered. Never the content.

use crate::message::mime::{encode_prefixed_subject, quoted_printable};
use crate::message::time::Instant;

/// The notice as sent: `From:` the provider's service address, `To:` `notify`.
pub fn arrival_notice(
    service_address: &str,
    notify: &str,
    mailbox: &str,
    sender: &str,
    subject: &str,
    at: Instant,
    message_id: &str,
) -> Vec<u8> {
    let t = at.legal();
    let text = format!(
        "Nella casella PEC {mailbox} è arrivato un nuovo messaggio.\r\n\
         \r\n\
         Mittente: {sender}\r\n\
         Oggetto: {subject}\r\n\
         Consegnato il {} alle ore {} ({})\r\n\
         \r\n\
         Il contenuto del messaggio è disponibile solo nella casella PEC.\r\n",
        t.giorno(),
        t.ora(),
        t.zona(),
        subject = subject.replace(['\r', '\n'], " "),
    );
    let mut out = String::new();
    out.push_str(&format!("From: {service_address}\r\n"));
    out.push_str(&format!("To: {notify}\r\n"));
    out.push_str(&format!(
        "Subject: {}\r\n",
        encode_prefixed_subject("AVVISO DI ARRIVO: ", subject)
    ));
    out.push_str(&format!("Date: {}\r\n", at.rfc5322()));
    out.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    out.push_str("Auto-Submitted: auto-generated\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str("Content-Type: text/plain; charset=UTF-8\r\n");
    out.push_str("Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&quoted_printable(text.as_bytes()));
    if !bytes.ends_with(b"\r\n") {
        bytes.extend_from_slice(b"\r\n");
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sender_subject_and_time_only() {
        let at = Instant::parse_cli("2025-06-03T08:11:12Z").unwrap();
        let m = arrival_notice(
            "posta-certificata@pec.example.it",
            "bob@gmail.example",
            "bob@pec.example.it",
            "alice@pec.example.it",
            "Contratto",
            at,
            "arr1@pec.example.it",
        );
        let s = String::from_utf8(m).unwrap();
        assert!(s.contains("To: bob@gmail.example\r\n"));
        assert!(s.contains("Subject: AVVISO DI ARRIVO: Contratto\r\n"));
        assert!(s.contains("Mittente: alice@pec.example.it"));
        assert!(s.contains("03/06/2025 alle ore 10:11:12 (+0200)"), "{s}");
        assert!(s.is_ascii());
    }
}
