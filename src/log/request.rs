// SPDX-License-Identifier: GPL-3.0-or-later
//! Owner self-service (spec §8: "users may request log extracts"): a mailbox owner sends,
//! from their normal mail client through the authenticated access point, a message to the
//! service address of their own domain (`log.request_address`, default
//! `registro@<domain>`) naming a period; the provider answers with a signed PEC message
//! carrying the CSV trace of that owner's messages in the period, and nothing of anyone
//! else.
//!
//! The flow follows the acceptance receipts' rule that a milter's accept does not prove
//! the message was queued (design §1):
//!
//! 1. the access point recognises the submission (every recipient is the service address
//!    of the sender's own domain; the login may send as the sender), reads the period,
//!    and in one store transaction applies the rate limit and records the request with its
//!    [`EventKind::LogRequest`] event; it then accepts the message unwrapped, marked with
//!    [`REQUEST_HEADER`] (any such field the client wrote is removed first). Over the limit
//!    it answers 450 4.7.1 (the client shows the text; nothing is queued);
//! 2. the after-queue filter, seeing the marked message with a pending request, builds the
//!    reply, injects it, closes the request with its [`EventKind::LogExtract`] event, and
//!    consumes the request message (it is never delivered nor relayed).
//!
//! The reply. [UNVERIFIED] the technical rules say nothing of how extracts reach the owner
//! (the seed providers offer a web download). We send a busta di trasporto whose
//! certified sender is the service address the request went to, so that it is a PEC
//! message like any other: it verifies with `pec verify` and with the mail client's
//! S/MIME check, and its daticert certifies sender, recipient and instant. Its
//! `postacert.eml` is a plain message with a short text and the CSV attachment (the
//! columns of `pec log export`). No acceptance or delivery receipt is issued for it: the
//! certified sender is the provider itself, and the reply does not pass the reception
//! point. A request whose period cannot be read gets a reply of the same form explaining
//! the accepted forms, without a CSV.
//!
//! Only the owner's own trace: the records where the owner is the sender or a recipient;
//! in records where the owner is only a recipient, the other recipients are left out of
//! the extract (the record's hash still identifies the full record in the register).
//!
//! Period forms (subject first; the body's text when the subject names none), case and
//! separators forgiving, Italian legal days (Europe/Rome):
//!
//! * a month: `2026-11`, `11/2026`, `novembre 2026`, `nov 2026`;
//! * a day: `2026-11-05`, `05/11/2026`, `5.11.2026`;
//! * a range, both ends included: two of the above, e.g. `2026-11-01 2026-11-23`,
//!   `dal 01/11/2026 al 23/11/2026`, `2026-09..2026-11`.
//!
//! At most [`MAX_PERIOD_DAYS`] days per request.
//!
//! Filters (the subject only; the manuals' web consoles offer the same, [`Filters`]):
//!
//! * `inviati` / `ricevuti` (also `sent` / `received`): only the messages the owner sent,
//!   or only those the owner received;
//! * a correspondent: an address (`bob@pec.example.org`, or `con:`, `da:`, `a:` before
//!   it; `da:` also means received, `a:` sent): only the records exchanged with it;
//! * words of the subject: `oggetto:fattura` or `oggetto:"fattura 2026"`: only the
//!   records whose subject contains them (case-insensitive);
//! * `PDF`: the extract comes as a PDF document as well as the CSV.
//!
//! Filter text is taken out of the subject before the period is read, so an
//! `oggetto:"rata 2026-10"` never names a period.

use std::time::Duration;

use chrono::{Days, Months, NaiveDate};
use mail_parser::MessageParser;

use super::pdf::to_pdf;
use super::{day_bounds, legal_day, to_csv};
use crate::message::build::{BuildError, Builder, Certification, Generated, OriginalInfo};
use crate::message::kind::RecipientType;
use crate::message::mime;
use crate::message::time::Instant;
use crate::store::{EventKind, LogEvent, LogQuery, LogRequest, LoggedEvent, Store, StoreError};

/// The header field the access point adds to an accepted request: its id.
pub const REQUEST_HEADER: &str = "X-PEC-Richiesta-Registro";

/// Longest period one request may name.
pub const MAX_PERIOD_DAYS: i64 = 366;

/// The owner self-service settings (`[log]` `request_*` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSettings {
    /// Local part of the service address (`log.request_address`, default `registro`);
    /// empty disables the service.
    pub local_part: String,
    /// Our PEC domains (`provider.domains`): the service address exists in each.
    pub domains: Vec<String>,
    /// Requests accepted per owner within `window` (`log.request_limit`).
    pub limit: u32,
    /// `log.request_window`.
    pub window: Duration,
    /// At most this many records in one extract (`log.request_max_records`); the reply
    /// says when the period held more.
    pub max_records: usize,
}

impl RequestSettings {
    /// The service address of `mailbox`'s domain, when that domain is one of ours.
    pub fn address_for(&self, mailbox: &str) -> Option<String> {
        if self.local_part.is_empty() {
            return None;
        }
        let (_, domain) = mailbox.rsplit_once('@')?;
        self.domains
            .iter()
            .find(|d| d.eq_ignore_ascii_case(domain))
            .map(|d| format!("{}@{}", self.local_part, d.to_ascii_lowercase()))
    }

    /// Whether `address` is the service address of one of our domains.
    pub fn is_service_address(&self, address: &str) -> bool {
        self.address_for(address)
            .is_some_and(|a| a.eq_ignore_ascii_case(address.trim()))
    }

    /// How the submission relates to the service: see [`Recognised`].
    pub fn recognise(&self, mail_from: &str, rcpt_to: &[String]) -> Recognised {
        let any = rcpt_to.iter().any(|r| self.is_service_address(r));
        if !any {
            return Recognised::No;
        }
        match self.address_for(mail_from) {
            Some(own) if rcpt_to.iter().all(|r| r.trim().eq_ignore_ascii_case(&own)) => {
                Recognised::Request(own)
            }
            _ => Recognised::Misaddressed,
        }
    }
}

/// What a submission is for the self-service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognised {
    /// No recipient is a service address: an ordinary PEC submission.
    No,
    /// Every recipient is the service address of the sender's own domain (this one).
    Request(String),
    /// A service address among other recipients, or another domain's: refused in SMTP.
    Misaddressed,
}

/// One unit of a period: a day or a month.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day(NaiveDate),
    Month(NaiveDate),
}

impl Unit {
    fn first_day(self) -> NaiveDate {
        match self {
            Unit::Day(d) | Unit::Month(d) => d,
        }
    }
    /// The day after the unit's last day.
    fn end_day(self) -> Option<NaiveDate> {
        match self {
            Unit::Day(d) => d.checked_add_days(Days::new(1)),
            Unit::Month(d) => d.checked_add_months(Months::new(1)),
        }
    }
}

const MONTHS: [[&str; 2]; 12] = [
    ["gennaio", "january"],
    ["febbraio", "february"],
    ["marzo", "march"],
    ["aprile", "april"],
    ["maggio", "may"],
    ["giugno", "june"],
    ["luglio", "july"],
    ["agosto", "august"],
    ["settembre", "september"],
    ["ottobre", "october"],
    ["novembre", "november"],
    ["dicembre", "december"],
];

/// The month (1..=12) a word names: Italian or English, whole or its first three letters.
fn month_name(word: &str) -> Option<u32> {
    let w = word.to_lowercase();
    if w.chars().count() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|names| {
            names
                .iter()
                .any(|n| *n == w || (w.len() == 3 && n.starts_with(&w)))
        })
        .map(|i| i as u32 + 1)
}

fn year(s: &str) -> Option<i32> {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
        .filter(|y| (1970..=9999).contains(y))
}

fn small(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// A word that looks like a date: `Ok(Some(unit))`, `Err` when it has a date's shape but
/// names no real day or month, `Ok(None)` when it is not a date at all.
fn date_word(word: &str) -> Result<Option<Unit>, String> {
    if !word
        .bytes()
        .all(|b| b.is_ascii_digit() || b"-/.".contains(&b))
    {
        return Ok(None);
    }
    let parts: Vec<&str> = word.split(['-', '/', '.']).collect();
    let bad = || format!("data non valida: \"{word}\"");
    let unit = match parts.as_slice() {
        [y, m, d] if year(y).is_some() && small(m).is_some() && small(d).is_some() => {
            NaiveDate::from_ymd_opt(
                year(y).unwrap_or(0),
                small(m).unwrap_or(0),
                small(d).unwrap_or(0),
            )
            .map(Unit::Day)
            .ok_or_else(bad)?
        }
        [d, m, y] if year(y).is_some() && small(m).is_some() && small(d).is_some() => {
            NaiveDate::from_ymd_opt(
                year(y).unwrap_or(0),
                small(m).unwrap_or(0),
                small(d).unwrap_or(0),
            )
            .map(Unit::Day)
            .ok_or_else(bad)?
        }
        [y, m] if year(y).is_some() && small(m).is_some() => {
            NaiveDate::from_ymd_opt(year(y).unwrap_or(0), small(m).unwrap_or(0), 1)
                .map(Unit::Month)
                .ok_or_else(bad)?
        }
        [m, y] if year(y).is_some() && small(m).is_some() => {
            NaiveDate::from_ymd_opt(year(y).unwrap_or(0), small(m).unwrap_or(0), 1)
                .map(Unit::Month)
                .ok_or_else(bad)?
        }
        _ => return Ok(None),
    };
    Ok(Some(unit))
}

/// The first two period units named in `text`.
fn units(text: &str) -> Result<Vec<Unit>, String> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || ",;:()[]<>\"'«»".contains(c))
        .flat_map(|w| w.split(".."))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == '-' || c == '/'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() && found.len() < 2 {
        let w = words[i];
        if let Some(u) = date_word(w)? {
            found.push(u);
        } else if let (Some(m), Some(y)) = (month_name(w), words.get(i + 1).and_then(|n| year(n))) {
            if let Some(d) = NaiveDate::from_ymd_opt(y, m, 1) {
                found.push(Unit::Month(d));
            }
            i += 1;
        }
        i += 1;
    }
    Ok(found)
}

/// Which of the owner's messages a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `inviati`: the owner is the sender.
    Sent,
    /// `ricevuti`: the owner is a recipient.
    Received,
}

/// What a request narrows its extract to, and whether it wants a PDF; read from the
/// subject by [`Filters::parse`]. [UNVERIFIED] the technical rules define no such
/// syntax: it is ours, in the words of the seed providers' consoles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub direction: Option<Direction>,
    /// The other party, lower case.
    pub correspondent: Option<String>,
    /// Text the record's subject must contain.
    pub subject: Option<String>,
    /// A PDF document besides the CSV.
    pub pdf: bool,
}

impl Filters {
    /// The filters of `subject` and the subject's remaining text (where the period is
    /// read). The owner's own address and the service address are no correspondent.
    pub fn parse(subject: &str) -> (Filters, String) {
        let mut f = Filters::default();
        let mut rest = String::new();
        let mut text = subject.trim();
        while !text.is_empty() {
            let end = text.find(char::is_whitespace).unwrap_or(text.len());
            let word = &text[..end];
            let lower = word.to_lowercase();
            let mut consumed = end;
            if let Some(value) = ["oggetto:", "subject:"].iter().find_map(|p| {
                text.get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &text[p.len()..])
            }) {
                // oggetto:"several words" or oggetto:word
                let (phrase, used) = match value.strip_prefix('"') {
                    Some(q) => match q.find('"') {
                        Some(close) => (&q[..close], close + 2),
                        None => (q, q.len() + 1),
                    },
                    None => {
                        let e = value.find(char::is_whitespace).unwrap_or(value.len());
                        (&value[..e], e)
                    }
                };
                let phrase = phrase.trim();
                if !phrase.is_empty() {
                    f.subject = Some(phrase.to_string());
                }
                consumed = text.len() - value.len() + used;
            } else if matches!(lower.as_str(), "inviati" | "inviate" | "spediti" | "sent") {
                f.direction = Some(Direction::Sent);
            } else if matches!(lower.as_str(), "ricevuti" | "ricevute" | "received") {
                f.direction = Some(Direction::Received);
            } else if lower == "pdf" {
                f.pdf = true;
            } else if let Some((dir, addr)) = correspondent(&lower) {
                if f.correspondent.is_none() {
                    f.correspondent = Some(addr);
                    if dir.is_some() {
                        f.direction = dir;
                    }
                }
            } else {
                rest.push_str(word);
                rest.push(' ');
            }
            text = text[consumed.min(text.len())..].trim_start();
        }
        (f, rest.trim_end().to_string())
    }

    /// Whether any filter narrows the extract.
    pub fn narrows(&self) -> bool {
        self.direction.is_some() || self.correspondent.is_some() || self.subject.is_some()
    }

    /// The filters in words, for the reply and the legal log (`None` without any).
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        match self.direction {
            Some(Direction::Sent) => parts.push("messaggi inviati".to_string()),
            Some(Direction::Received) => parts.push("messaggi ricevuti".to_string()),
            None => {}
        }
        if let Some(c) = &self.correspondent {
            parts.push(format!("con {c}"));
        }
        if let Some(s) = &self.subject {
            parts.push(format!("oggetto contenente \"{s}\""));
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// A word naming a correspondent: `[con:|da:|a:|from:|to:]local@domain` → the direction
/// its prefix implies and the address.
fn correspondent(word: &str) -> Option<(Option<Direction>, String)> {
    let word = word.trim_matches(|c: char| "<>,;()[]\"'".contains(c));
    let (dir, addr) = match word.split_once(':') {
        Some(("da" | "from", a)) => (Some(Direction::Received), a),
        Some(("a" | "to", a)) => (Some(Direction::Sent), a),
        Some(("con" | "with", a)) => (None, a),
        Some(_) => return None,
        None => (None, word),
    };
    let addr = addr.trim_matches(|c: char| "<>".contains(c));
    let (local, domain) = addr.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !domain.contains('@'))
        .then(|| (dir, addr.to_string()))
}

/// The period named in `text`, `[from, to)` in unix-second instants: `Ok(None)` when the
/// text names no date. `now` bounds it: a period starting after today is an error.
pub fn parse_period(text: &str, now: Instant) -> Result<Option<(Instant, Instant)>, String> {
    let found = units(text)?;
    let (first, last) = match found.as_slice() {
        [] => return Ok(None),
        [one] => (*one, *one),
        [a, b, ..] => (*a, *b),
    };
    let start = first.first_day();
    let end = last
        .end_day()
        .ok_or_else(|| "data fuori dall'intervallo ammesso".to_string())?;
    if end <= start {
        return Err(format!(
            "la fine del periodo ({}) precede l'inizio ({})",
            last.first_day().format("%d/%m/%Y"),
            start.format("%d/%m/%Y")
        ));
    }
    if start > legal_day(now) {
        return Err(format!(
            "il periodo inizia il {}, nel futuro",
            start.format("%d/%m/%Y")
        ));
    }
    let days = (end - start).num_days();
    if days > MAX_PERIOD_DAYS {
        return Err(format!(
            "il periodo copre {days} giorni; il massimo per una richiesta è {MAX_PERIOD_DAYS}"
        ));
    }
    Ok(Some((
        Instant::from_unix(day_bounds(start).0),
        Instant::from_unix(day_bounds(end).0),
    )))
}

/// The period a request message names: its subject first, else its body's text (the first
/// text part, at most its first 4000 characters).
pub fn period_of_message(
    subject: &str,
    message: &[u8],
    now: Instant,
) -> Result<(Instant, Instant), String> {
    if let Some(p) = parse_period(&Filters::parse(subject).1, now)? {
        return Ok(p);
    }
    let body = MessageParser::default()
        .parse(message)
        .and_then(|m| {
            m.body_text(0)
                .map(|t| t.chars().take(4000).collect::<String>())
        })
        .unwrap_or_default();
    parse_period(&body, now)?.ok_or_else(|| "nessun periodo indicato".to_string())
}

/// The owner's view of records: those where `owner` is the sender or a recipient; where
/// the owner is only a recipient, the other recipients are left out.
pub fn owner_view(events: Vec<LoggedEvent>, owner: &str) -> Vec<LoggedEvent> {
    events
        .into_iter()
        .filter_map(|mut e| {
            let is_sender = e.event.sender.eq_ignore_ascii_case(owner);
            let mine = |a: &str| a.eq_ignore_ascii_case(owner);
            if !is_sender {
                if !e.event.recipients.iter().any(|(a, _)| mine(a)) {
                    return None;
                }
                e.event.recipients.retain(|(a, _)| mine(a));
            }
            Some(e)
        })
        .collect()
}

/// The owner's records in `[from, to)` that `filters` keep, at most `max`; true when
/// there were more.
pub fn owner_records(
    store: &dyn Store,
    owner: &str,
    filters: &Filters,
    (from, to): (Instant, Instant),
    max: usize,
) -> Result<(Vec<LoggedEvent>, bool), StoreError> {
    let base = LogQuery {
        from: Some(from),
        to: Some(to),
        subject: filters.subject.clone(),
        limit: Some(max.saturating_add(1)),
        ..LogQuery::default()
    };
    let owner = owner.to_ascii_lowercase();
    let sent = |peer: Option<String>| LogQuery {
        sender: Some(owner.clone()),
        recipient: peer,
        ..base.clone()
    };
    let received = |peer: Option<String>| LogQuery {
        sender: peer,
        recipient: Some(owner.clone()),
        ..base.clone()
    };
    let peer = filters.correspondent.clone();
    let queries = match (filters.direction, &peer) {
        (Some(Direction::Sent), _) => vec![sent(peer)],
        (Some(Direction::Received), _) => vec![received(peer)],
        (None, Some(_)) => vec![sent(peer.clone()), received(peer)],
        (None, None) => vec![LogQuery {
            mailbox: Some(owner.clone()),
            ..base.clone()
        }],
    };
    let mut found = Vec::new();
    for q in &queries {
        found.extend(store.search_events(q)?);
    }
    // Two searches may both hold a record (the owner writing to themselves): once each,
    // in log order.
    found.sort_by_key(|e| e.id);
    found.dedup_by_key(|e| e.id);
    let mut events = owner_view(found, &owner);
    let more = events.len() > max;
    events.truncate(max);
    Ok((events, more))
}

/// What the reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyContent {
    /// The extract: the CSV, its record count and whether the period held more.
    Extract {
        csv: String,
        /// The same records as a PDF document, when the request asked for one.
        pdf: Option<Vec<u8>>,
        records: usize,
        truncated: bool,
        /// The request's filters in words (see [`Filters::describe`]).
        filters: Option<String>,
    },
    /// The period could not be read: why.
    BadPeriod(String),
}

fn date(at: Instant) -> String {
    at.legal().giorno()
}

/// The help text on the accepted forms (also in the bad-period reply).
pub fn help_text(address: &str, settings: &RequestSettings) -> Vec<String> {
    vec![
        format!(
            "Per ricevere l'estratto del registro dei messaggi della propria casella, inviare un \
             messaggio a {address} indicando nell'oggetto (o nel testo) il periodo, per esempio:"
        ),
        "  2026-11  oppure  novembre 2026             (un mese)".into(),
        "  2026-11-05  oppure  05/11/2026             (un giorno)".into(),
        "  2026-11-01 2026-11-23                      (dal primo al secondo giorno, inclusi)"
            .into(),
        "  dal 01/11/2026 al 23/11/2026".into(),
        "Nell'oggetto si possono aggiungere filtri: inviati oppure ricevuti; un \
         corrispondente (per esempio da:mario@pec.esempio.it, a:mario@pec.esempio.it o solo \
         l'indirizzo); parole dell'oggetto (oggetto:fattura oppure oggetto:\"rata di marzo\"); \
         PDF per ricevere l'estratto anche in PDF oltre che in CSV. Per esempio: \
         \"2026-11 inviati a:mario@pec.esempio.it PDF\"."
            .into(),
        format!(
            "Il periodo copre al più {MAX_PERIOD_DAYS} giorni; sono accettate al più {} \
             richieste ogni {} minuti.",
            settings.limit,
            settings.window.as_secs() / 60
        ),
    ]
}

/// Builds the signed reply to `request`: a busta di trasporto from the service address to
/// the owner (see the module documentation), PEC msgid `reply_id`, at `at`.
pub fn build_reply(
    builder: &Builder<'_>,
    settings: &RequestSettings,
    request: &LogRequest,
    content: &ReplyContent,
    reply_id: &str,
    at: Instant,
) -> Result<Generated, BuildError> {
    let address = &request.address;
    let mut text: Vec<String> = Vec::new();
    let (subject, attachments) = match (content, &request.period) {
        (
            ReplyContent::Extract {
                csv,
                pdf,
                records,
                truncated,
                filters,
            },
            Ok((from, to)),
        ) => {
            let last = Instant::from_unix(to.unix() - 1);
            let period = format!("{} - {}", date(*from), date(last));
            text.push(format!(
                "Estratto del registro dei messaggi della casella {} dal {} al {} (ora legale \
                 italiana), richiesto il {}.",
                request.owner,
                date(*from),
                date(last),
                date(request.at)
            ));
            if let Some(f) = filters {
                text.push(format!("Filtri richiesti: {f}."));
            }
            text.push(format!(
                "Il file allegato (CSV{}) contiene {records} registrazioni: ogni evento dei \
                 messaggi inviati o ricevuti dalla casella, con l'impronta (hash) della \
                 registrazione nel registro.",
                if pdf.is_some() {
                    ", e lo stesso in PDF"
                } else {
                    ""
                }
            ));
            if *truncated {
                text.push(format!(
                    "Il periodo contiene più di {records} registrazioni: l'estratto è parziale. \
                     Richiedere un periodo più breve per le successive."
                ));
            }
            let name = format!(
                "registro-{}-{}-{}",
                request.owner.replace(['@', '/'], "_"),
                legal_day(*from).format("%Y%m%d"),
                legal_day(last).format("%Y%m%d")
            );
            let mut files = vec![Attachment {
                name: format!("{name}.csv"),
                content_type: "text/csv; charset=\"utf-8\"",
                bytes: csv.as_bytes().to_vec(),
            }];
            if let Some(pdf) = pdf {
                files.push(Attachment {
                    name: format!("{name}.pdf"),
                    content_type: "application/pdf",
                    bytes: pdf.clone(),
                });
            }
            (
                format!("Estratto del registro dei messaggi: {period}"),
                files,
            )
        }
        (ReplyContent::BadPeriod(why), _) | (_, Err(why)) => {
            text.push(format!(
                "La richiesta \"{}\" del {} non è stata soddisfatta: {why}.",
                request.subject,
                date(request.at)
            ));
            text.extend(help_text(address, settings));
            (
                "Richiesta di estratto del registro non valida".to_string(),
                Vec::new(),
            )
        }
    };
    text.push(format!("Identificativo della richiesta: {}", request.id));
    let inner = inner_message(
        address,
        &request.owner,
        &subject,
        &text,
        &attachments,
        reply_id,
        at,
    );
    let info = OriginalInfo::parse(&inner)?;
    let cert = Certification::for_submission(
        &info,
        address,
        &[(request.owner.clone(), RecipientType::Certificato)],
        reply_id,
    );
    builder.transport_envelope(&inner, &cert, at)
}

/// A file the reply carries.
struct Attachment {
    name: String,
    content_type: &'static str,
    bytes: Vec<u8>,
}

/// The plain message carried in `postacert.eml`: text, and the files of the extract.
fn inner_message(
    from: &str,
    to: &str,
    subject: &str,
    text: &[String],
    attachments: &[Attachment],
    reply_id: &str,
    at: Instant,
) -> Vec<u8> {
    let mut body_text = text.join("\r\n\r\n");
    body_text.push_str("\r\n");
    let qp = mime::quoted_printable(body_text.as_bytes());
    let encoded: Vec<Vec<u8>> = attachments
        .iter()
        .map(|a| mime::base64_lines(&a.bytes))
        .collect();
    let parts: Vec<&[u8]> = std::iter::once(qp.as_slice())
        .chain(encoded.iter().map(Vec::as_slice))
        .collect();
    let b = mime::boundary(&parts);
    let size: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(size + 1024);
    let header = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {}\r\nDate: {}\r\nMessage-ID: <{}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n",
        mime::encode_text_header("Subject", subject),
        at.rfc5322(),
        reply_id.replacen('@', ".estratto@", 1),
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(
        format!(
            "--{b}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n\
             Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&qp);
    out.extend_from_slice(b"\r\n");
    for (a, body) in attachments.iter().zip(&encoded) {
        out.extend_from_slice(
            format!(
                "--{b}\r\nContent-Type: {}; {}\r\n\
                 Content-Disposition: attachment; {}\r\nContent-Transfer-Encoding: base64\r\n\r\n",
                a.content_type,
                mime::encode_param("name", &a.name),
                mime::encode_param("filename", &a.name)
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    out
}

/// The extract of `events` for `request`: the CSV, and the PDF when its filters ask for
/// one (generated at `now`).
pub fn extract(
    events: &[LoggedEvent],
    truncated: bool,
    request: &LogRequest,
    filters: &Filters,
    now: Instant,
) -> ReplyContent {
    let pdf = filters.pdf.then(|| {
        let title = format!("Registro dei messaggi di {}", request.owner);
        to_pdf(events, &title, now)
    });
    ReplyContent::Extract {
        csv: to_csv(events),
        pdf,
        records: events.len(),
        truncated,
        filters: filters.describe(),
    }
}

/// The [`EventKind::LogRequest`] event of `request` (its outcome is set by the store).
pub fn request_event(request: &LogRequest, provider: &str) -> LogEvent {
    LogEvent {
        pec_id: request.id.clone(),
        at: request.at,
        kind: EventKind::LogRequest,
        sender: request.owner.clone(),
        recipients: vec![(request.address.clone(), RecipientType::Certificato)],
        subject: request.subject.clone(),
        related_ids: Vec::new(),
        provider: provider.to_string(),
        queue_id: request.queue_id.clone(),
        outcome: "accepted".into(),
        reason: match &request.period {
            Ok((f, t)) => {
                let filters = Filters::parse(&request.subject).0;
                Some(format!(
                    "periodo {} - {}{}{}",
                    date(*f),
                    date(Instant::from_unix(t.unix() - 1)),
                    filters
                        .describe()
                        .map(|d| format!("; {d}"))
                        .unwrap_or_default(),
                    if filters.pdf { "; PDF" } else { "" }
                ))
            }
            Err(why) => Some(format!("periodo non valido: {why}")),
        },
    }
}

/// The [`EventKind::LogExtract`] event: the reply `reply_id` to `request` was sent at `at`.
pub fn extract_event(
    request: &LogRequest,
    content: &ReplyContent,
    reply_id: &str,
    provider: &str,
    queue_id: Option<String>,
    at: Instant,
) -> LogEvent {
    let (outcome, reason) = match content {
        ReplyContent::Extract {
            records,
            truncated,
            pdf,
            ..
        } => (
            "ok",
            Some(format!(
                "{records} registrazioni{}{}",
                if *truncated {
                    " (estratto parziale)"
                } else {
                    ""
                },
                if pdf.is_some() { ", CSV e PDF" } else { "" }
            )),
        ),
        ReplyContent::BadPeriod(why) => ("bad-period", Some(why.clone())),
    };
    LogEvent {
        pec_id: request.id.clone(),
        at,
        kind: EventKind::LogExtract,
        sender: request.address.clone(),
        recipients: vec![(request.owner.clone(), RecipientType::Certificato)],
        subject: request.subject.clone(),
        related_ids: vec![reply_id.to_string()],
        provider: provider.to_string(),
        queue_id,
        outcome: outcome.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::parse_cli("2026-11-23T09:00:00Z").unwrap()
    }

    fn days(text: &str) -> Option<(String, String)> {
        parse_period(text, now()).unwrap().map(|(f, t)| {
            (
                legal_day(f).to_string(),
                legal_day(Instant::from_unix(t.unix() - 1)).to_string(),
            )
        })
    }

    fn pair(a: &str, b: &str) -> Option<(String, String)> {
        Some((a.to_string(), b.to_string()))
    }

    #[test]
    fn period_forms() {
        assert_eq!(days("2026-11"), pair("2026-11-01", "2026-11-30"));
        assert_eq!(days("Registro 11/2026"), pair("2026-11-01", "2026-11-30"));
        assert_eq!(days("NOVEMBRE 2026"), pair("2026-11-01", "2026-11-30"));
        assert_eq!(
            days("registro di feb 2024"),
            pair("2024-02-01", "2024-02-29")
        );
        assert_eq!(days("2026-11-05"), pair("2026-11-05", "2026-11-05"));
        assert_eq!(days("5.11.2026"), pair("2026-11-05", "2026-11-05"));
        assert_eq!(
            days("2026-11-01 2026-11-23"),
            pair("2026-11-01", "2026-11-23")
        );
        assert_eq!(
            days("dal 01/11/2026 al 23/11/2026."),
            pair("2026-11-01", "2026-11-23")
        );
        assert_eq!(days("2026-09..2026-11"), pair("2026-09-01", "2026-11-30"));
        assert_eq!(
            days("(2026-10-30, 2026-11-02)"),
            pair("2026-10-30", "2026-11-02")
        );
        assert_eq!(days("registro per favore"), None);
        assert_eq!(days(""), None);
    }

    #[test]
    fn bad_periods_say_why() {
        let err = |t: &str| parse_period(t, now()).unwrap_err();
        assert!(err("2026-13").contains("2026-13"), "{}", err("2026-13"));
        assert!(err("31/02/2026").contains("31/02/2026"));
        assert!(err("2026-11-23 2026-11-01").contains("precede"));
        assert!(err("2027-01").contains("futuro"));
        assert!(err("2024-01 2026-11").contains("366"));
    }

    #[test]
    fn a_period_is_made_of_italian_legal_days() {
        let (f, t) = parse_period("2026-11", now()).unwrap().unwrap();
        // 1 November 00:00 CET = 31 October 23:00 UTC; 1 December 00:00 CET likewise.
        assert_eq!(f.rfc3339(), "2026-10-31T23:00:00Z");
        assert_eq!(t.rfc3339(), "2026-11-30T23:00:00Z");
    }

    #[test]
    fn the_body_is_read_when_the_subject_names_no_period() {
        let msg = b"From: a@pec.example.it\r\nTo: registro@pec.example.it\r\nSubject: registro\r\n\r\nBuongiorno,\r\nvorrei il registro dal 2026-11-01 al 2026-11-03.\r\n";
        let (f, t) = period_of_message("registro", msg, now()).unwrap();
        assert_eq!(legal_day(f).to_string(), "2026-11-01");
        assert_eq!(t.unix() - f.unix(), 3 * 86_400);
        assert_eq!(
            period_of_message("", b"Subject: x\r\n\r\nciao\r\n", now()).unwrap_err(),
            "nessun periodo indicato"
        );
    }

    #[test]
    fn filters_are_read_from_the_subject_and_leave_the_period() {
        let (f, rest) = Filters::parse(
            "Registro 2026-11 inviati a:Bob@PEC.example.org oggetto:\"rata 2026-10\" pdf",
        );
        assert_eq!(rest, "Registro 2026-11");
        assert_eq!(f.direction, Some(Direction::Sent));
        assert_eq!(f.correspondent.as_deref(), Some("bob@pec.example.org"));
        assert_eq!(f.subject.as_deref(), Some("rata 2026-10"));
        assert!(f.pdf);
        assert_eq!(
            f.describe().unwrap(),
            "messaggi inviati, con bob@pec.example.org, oggetto contenente \"rata 2026-10\""
        );
        // The quoted subject never names the period.
        assert_eq!(
            days(&rest),
            pair("2026-11-01", "2026-11-30"),
            "period from {rest}"
        );
        let msg = b"Subject: x\r\n\r\n\r\n";
        let (f2, _) = period_of_message("oggetto:\"2026-10\" 2026-11-05", msg, now()).unwrap();
        assert_eq!(legal_day(f2).to_string(), "2026-11-05");

        let (f, rest) =
            Filters::parse("da:<carol@pec.example.it> RICEVUTI oggetto:Fattura novembre 2026");
        assert_eq!(f.direction, Some(Direction::Received));
        assert_eq!(f.correspondent.as_deref(), Some("carol@pec.example.it"));
        assert_eq!(f.subject.as_deref(), Some("Fattura"));
        assert!(!f.pdf);
        assert_eq!(rest, "novembre 2026");

        // Nothing to filter: the subject is the rest, whole.
        let (f, rest) = Filters::parse("registro 05/11/2026");
        assert_eq!(f, Filters::default());
        assert!(!f.narrows());
        assert_eq!(rest, "registro 05/11/2026");
        // An unclosed quote takes the rest; an empty phrase is no filter; odd bytes never
        // panic.
        assert_eq!(
            Filters::parse("oggetto:\"senza fine").0.subject.as_deref(),
            Some("senza fine")
        );
        assert_eq!(Filters::parse("oggetto:\"\" x").0.subject, None);
        for odd in [
            "\u{212a}ggetto:x",
            "oggetto:",
            "a:",
            "da:@",
            "x@y",
            "@@",
            "\"",
            "ö:ö@ö.ö",
        ] {
            let _ = Filters::parse(odd);
        }
        assert_eq!(Filters::parse("a:").0.correspondent, None);
        assert_eq!(Filters::parse("x@y").0.correspondent, None);
    }

    #[test]
    fn recognition() {
        let s = RequestSettings {
            local_part: "registro".into(),
            domains: vec!["pec.example.it".into(), "PEC.example.org".into()],
            limit: 3,
            window: Duration::from_secs(3600),
            max_records: 10,
        };
        let r = |from: &str, to: &[&str]| {
            s.recognise(from, &to.iter().map(|t| t.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            r("alice@pec.example.it", &["Registro@PEC.example.it"]),
            Recognised::Request("registro@pec.example.it".into())
        );
        assert_eq!(
            r("bob@pec.example.org", &["registro@pec.example.org"]),
            Recognised::Request("registro@pec.example.org".into())
        );
        assert_eq!(
            r("alice@pec.example.it", &["bob@pec.example.it"]),
            Recognised::No
        );
        assert_eq!(
            r(
                "alice@pec.example.it",
                &["registro@pec.example.it", "bob@pec.example.it"]
            ),
            Recognised::Misaddressed
        );
        assert_eq!(
            r("alice@pec.example.it", &["registro@pec.example.org"]),
            Recognised::Misaddressed
        );
        let off = RequestSettings {
            local_part: String::new(),
            ..s.clone()
        };
        assert_eq!(
            off.recognise("alice@pec.example.it", &["registro@pec.example.it".into()]),
            Recognised::No
        );
    }
}
