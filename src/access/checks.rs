// SPDX-License-Identifier: GPL-3.0-or-later
//! The formal checks of the access point (spec §5.1), as a pure function: the submission in,
//! the first failed rule out. The reason is written for the sender: it goes into the
//! non-acceptance notice and its daticert `errore-esteso`, in Italian.

use std::collections::BTreeSet;

use crate::message::build::OriginalInfo;
use crate::message::mime;

/// Limits and policy of the formal checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size × number of recipients may not exceed this (spec §5.1 item 7).
    pub max_total_size: u64,
    pub max_recipients: usize,
}

impl Default for Limits {
    /// The values of the seed providers' manuals: 100 MB and 500 recipients.
    fn default() -> Self {
        Limits {
            max_total_size: 100_000_000,
            max_recipients: 500,
        }
    }
}

/// What the checks look at: the SMTP envelope, the SASL login and the whole message.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub mail_from: &'a str,
    pub rcpt_to: &'a [String],
    pub message: &'a [u8],
    /// Whether the authenticated login may send as `mail_from` (looked up in the store).
    pub sender_authorised: bool,
}

/// The first formal rule the submission breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule (for logs and tests).
    pub rule: Rule,
    /// The reason, in Italian, for the sender.
    pub reason: String,
}

/// The rules, in the order they are checked (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    Syntax,
    From,
    To,
    SenderMismatch,
    SenderNotAuthorised,
    Recipients,
    Bcc,
    TooManyRecipients,
    TotalSize,
}

fn violation(rule: Rule, reason: impl Into<String>) -> Violation {
    Violation {
        rule,
        reason: reason.into(),
    }
}

/// Header fields RFC 5322 §3.6 allows at most once.
const SINGLE_FIELDS: [&str; 9] = [
    "Date",
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "Subject",
];

/// Runs the checks in order; `Ok` carries the parsed header for the envelope.
pub fn check(input: &Input<'_>, limits: &Limits) -> Result<OriginalInfo, Violation> {
    let raw = mime::normalize_crlf(input.message);
    let (header, _) = mime::split_header_body(&raw);

    // 1. Syntactically valid RFC 5322.
    if header.is_empty() {
        return Err(violation(Rule::Syntax, "messaggio privo di intestazioni"));
    }
    if header.iter().any(|b| *b >= 0x80 || *b == 0) {
        return Err(violation(
            Rule::Syntax,
            "intestazioni con caratteri non ASCII non codificati (RFC 5322, RFC 2047)",
        ));
    }
    let fields = mime::fields(header).map_err(|e| {
        violation(
            Rule::Syntax,
            format!("intestazioni non conformi a RFC 5322: {e}"),
        )
    })?;
    for name in SINGLE_FIELDS {
        let n = fields.iter().filter(|f| f.is(name)).count();
        if n > 1 && name != "From" && name != "To" && name != "Bcc" {
            return Err(violation(
                Rule::Syntax,
                format!("campo {name} presente {n} volte (RFC 5322 ne ammette uno)"),
            ));
        }
    }
    if !fields.iter().any(|f| f.is("Date")) {
        return Err(violation(Rule::Syntax, "campo Date assente (RFC 5322)"));
    }
    let info = OriginalInfo::parse(&raw)
        .map_err(|e| violation(Rule::Syntax, format!("intestazioni illeggibili: {e}")))?;

    // 2. Exactly one From with a valid address.
    if info.from_fields != 1 || info.from.len() != 1 || !valid_address(&info.from[0]) {
        return Err(violation(
            Rule::From,
            "il messaggio deve contenere un solo campo From con un solo indirizzo valido",
        ));
    }
    // 3. A To with one or more valid addresses.
    let to_fields = fields.iter().filter(|f| f.is("To")).count();
    if to_fields != 1 || info.to.is_empty() || !info.to.iter().all(|a| valid_address(a)) {
        return Err(violation(
            Rule::To,
            "il messaggio deve contenere un campo To con almeno un indirizzo valido",
        ));
    }
    if !info.cc.iter().all(|a| valid_address(a)) {
        return Err(violation(
            Rule::To,
            "il campo Cc contiene indirizzi non validi",
        ));
    }
    // 4. MAIL FROM = From, and it belongs to the authenticated user.
    if !same_address(input.mail_from, &info.from[0]) {
        return Err(violation(
            Rule::SenderMismatch,
            format!(
                "mittente della busta ({}) diverso dall'indirizzo del campo From ({})",
                input.mail_from, info.from[0]
            ),
        ));
    }
    if !input.sender_authorised {
        return Err(violation(
            Rule::SenderNotAuthorised,
            format!(
                "il mittente {} non corrisponde all'utente autenticato",
                input.mail_from
            ),
        ));
    }
    // 5. RCPT TO = To ∪ Cc.
    let header_rcpt: BTreeSet<String> = info
        .to
        .iter()
        .chain(&info.cc)
        .map(|a| canonical(a))
        .collect();
    let envelope_rcpt: BTreeSet<String> = input.rcpt_to.iter().map(|a| canonical(a)).collect();
    if let Some(extra) = envelope_rcpt.difference(&header_rcpt).next() {
        return Err(violation(
            Rule::Recipients,
            format!("destinatario di busta non presente negli header To/Cc: {extra}"),
        ));
    }
    if let Some(missing) = header_rcpt.difference(&envelope_rcpt).next() {
        return Err(violation(
            Rule::Recipients,
            format!("destinatario degli header To/Cc non presente nella busta: {missing}"),
        ));
    }
    // 6. No Bcc. Behind Postfix this rarely fires: cleanup(8) strips Bcc before milters see
    // the header, and a blind recipient is then caught by rule 5 (it is in RCPT TO only).
    if fields
        .iter()
        .any(|f| f.is("Bcc") && !f.unfolded().is_empty())
    {
        return Err(violation(
            Rule::Bcc,
            "presenza di destinatari in copia nascosta (campo Bcc)",
        ));
    }
    // 7. Recipients and size × recipients within the limits.
    if envelope_rcpt.len() > limits.max_recipients {
        return Err(violation(
            Rule::TooManyRecipients,
            format!(
                "numero di destinatari ({}) superiore al limite di {}",
                envelope_rcpt.len(),
                limits.max_recipients
            ),
        ));
    }
    let total = (input.message.len() as u64).saturating_mul(envelope_rcpt.len() as u64);
    if total > limits.max_total_size {
        return Err(violation(
            Rule::TotalSize,
            format!(
                "dimensione del messaggio per numero di destinatari ({total} byte) superiore al limite di {} byte",
                limits.max_total_size
            ),
        ));
    }
    Ok(info)
}

/// A recipient's canonical form: local part as written, domain lower-cased.
fn canonical(address: &str) -> String {
    let a = address.trim().trim_start_matches('<').trim_end_matches('>');
    match a.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_ascii_lowercase()),
        None => a.to_string(),
    }
}

fn same_address(a: &str, b: &str) -> bool {
    canonical(a).eq_ignore_ascii_case(&canonical(b))
}

/// A plausible addr-spec: one `@`, non-empty local part and a dotted domain, no spaces.
fn valid_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && a.is_ascii()
                && !a.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "From: Alice <alice@pec.example.it>\r\nTo: bob@pec.example.net\r\nCc: carol@example.com\r\nSubject: prova\r\nDate: Tue, 3 Jun 2025 10:11:09 +0200\r\nMessage-ID: <1@client>\r\n\r\nciao\r\n";

    fn rcpt(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn run(
        msg: &str,
        from: &str,
        to: &[&str],
        authorised: bool,
    ) -> Result<OriginalInfo, Violation> {
        let rcpt = rcpt(to);
        check(
            &Input {
                mail_from: from,
                rcpt_to: &rcpt,
                message: msg.as_bytes(),
                sender_authorised: authorised,
            },
            &Limits::default(),
        )
    }

    fn rule(r: Result<OriginalInfo, Violation>) -> Rule {
        r.expect_err("must be refused").rule
    }

    #[test]
    fn a_correct_submission_passes() {
        let info = run(
            OK,
            "alice@pec.example.it",
            &["bob@pec.example.net", "carol@EXAMPLE.com"],
            true,
        )
        .unwrap();
        assert_eq!(info.subject, "prova");
    }

    #[test]
    fn each_rule_refuses_with_a_reason() {
        let both = ["bob@pec.example.net", "carol@example.com"];
        assert_eq!(
            rule(run("no header at all", "alice@pec.example.it", &both, true)),
            Rule::Syntax
        );
        assert_eq!(
            rule(run(
                &OK.replace("Date: Tue, 3 Jun 2025 10:11:09 +0200\r\n", ""),
                "alice@pec.example.it",
                &both,
                true
            )),
            Rule::Syntax
        );
        assert_eq!(
            rule(run(
                &OK.replace("Subject: prova", "Subject: perch\u{e9}"),
                "alice@pec.example.it",
                &both,
                true
            )),
            Rule::Syntax
        );
        assert_eq!(
            rule(run(
                &OK.replace("Subject: prova\r\n", "Subject: a\r\nSubject: b\r\n"),
                "alice@pec.example.it",
                &both,
                true
            )),
            Rule::Syntax
        );
        assert_eq!(
            rule(run(
                &format!("From: mallory@pec.example.it\r\n{OK}"),
                "alice@pec.example.it",
                &both,
                true
            )),
            Rule::From
        );
        assert_eq!(
            rule(run(
                &OK.replace("To: bob@pec.example.net\r\n", ""),
                "alice@pec.example.it",
                &["carol@example.com"],
                true
            )),
            Rule::To
        );
        let r = run(OK, "mallory@pec.example.it", &both, true).unwrap_err();
        assert_eq!(r.rule, Rule::SenderMismatch);
        assert!(r.reason.contains("mallory@pec.example.it"), "{}", r.reason);
        assert_eq!(
            rule(run(OK, "alice@pec.example.it", &both, false)),
            Rule::SenderNotAuthorised
        );
        let r = run(
            OK,
            "alice@pec.example.it",
            &[
                "bob@pec.example.net",
                "carol@example.com",
                "eve@pec.example.net",
            ],
            true,
        )
        .unwrap_err();
        assert_eq!(r.rule, Rule::Recipients);
        assert!(r.reason.contains("eve@pec.example.net"));
        assert_eq!(
            rule(run(
                OK,
                "alice@pec.example.it",
                &["bob@pec.example.net"],
                true
            )),
            Rule::Recipients
        );
        assert_eq!(
            rule(run(
                &OK.replace("Subject:", "Bcc: eve@pec.example.net\r\nSubject:"),
                "alice@pec.example.it",
                &both,
                true
            )),
            Rule::Bcc
        );
    }

    #[test]
    fn an_empty_bcc_is_allowed_and_domains_compare_case_insensitively() {
        let msg = OK.replace("Subject:", "Bcc:\r\nSubject:");
        run(
            &msg,
            "Alice@PEC.example.it",
            &["bob@PEC.EXAMPLE.NET", "carol@example.com"],
            true,
        )
        .unwrap();
    }

    #[test]
    fn limits() {
        let rcpt = rcpt(&["bob@pec.example.net", "carol@example.com"]);
        let input = Input {
            mail_from: "alice@pec.example.it",
            rcpt_to: &rcpt,
            message: OK.as_bytes(),
            sender_authorised: true,
        };
        let small = Limits {
            max_total_size: (OK.len() * 2 - 1) as u64,
            ..Limits::default()
        };
        assert_eq!(check(&input, &small).unwrap_err().rule, Rule::TotalSize);
        let few = Limits {
            max_recipients: 1,
            ..Limits::default()
        };
        assert_eq!(
            check(&input, &few).unwrap_err().rule,
            Rule::TooManyRecipients
        );
        let exact = Limits {
            max_total_size: (OK.len() * 2) as u64,
            ..Limits::default()
        };
        check(&input, &exact).unwrap();
    }
}
