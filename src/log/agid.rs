// SPDX-License-Identifier: GPL-3.0-or-later
//! The statistics AgID asks providers for, per period (`pec stats agid`): domains,
//! mailboxes, messages out (acceptance receipts issued), messages in (presa in carico
//! issued), viruses in and out, and the outages with their type and minutes, plus the
//! availability against the rule of 99.8 % per four months. Computed from the legal log and
//! the outages recorded by `pec suspend` / `pec resume`; pure, so that it is tested alone.

use std::collections::BTreeSet;

use crate::message::kind::MessageKind;
use crate::message::time::Instant;
use crate::store::{EventKind, LogEvent, Outage, OutageKind};

/// The availability the rules ask for, per four months, in percent.
pub const SLA_PERCENT: f64 = 99.8;

/// One outage as reported: clipped to the period.
#[derive(Debug, Clone, PartialEq)]
pub struct OutageRow {
    pub start: Instant,
    pub kind: OutageKind,
    /// Minutes inside the period (an open outage counts up to the period's end).
    pub minutes: i64,
    pub reason: String,
}

/// The statistics of one period `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgidStats {
    pub from: Instant,
    pub to: Instant,
    pub domains: usize,
    /// Mailboxes of our domains that sent or received a message in the period.
    pub mailboxes: usize,
    /// Acceptance receipts issued.
    pub messages_out: u64,
    /// Presa in carico receipts issued.
    pub messages_in: u64,
    /// Infected transport envelopes received from other providers.
    pub viruses_in: u64,
    /// Infected submissions refused by the access point.
    pub viruses_out: u64,
    pub outages: Vec<OutageRow>,
    /// Percent of the period without an unplanned outage (planned, announced outages are
    /// not counted as unavailability).
    pub availability: f64,
}

impl AgidStats {
    /// Whether the availability meets [`SLA_PERCENT`].
    pub fn sla_respected(&self) -> bool {
        self.availability >= SLA_PERCENT
    }

    /// The CSV: a header line and the period's line, a blank line, then a header line and
    /// one line per outage.
    pub fn csv(&self) -> String {
        let yes = |b: bool| if b { "si" } else { "no" };
        let mut out = String::from(
            "periodo_da,periodo_a,domini,caselle,messaggi_inviati,messaggi_ricevuti,\
             virus_ricevuti,virus_inviati,disponibilita_percento,sla_rispettato\r\n",
        );
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{}\r\n",
            self.from.rfc3339(),
            self.to.rfc3339(),
            self.domains,
            self.mailboxes,
            self.messages_out,
            self.messages_in,
            self.viruses_in,
            self.viruses_out,
            self.availability,
            yes(self.sla_respected())
        ));
        out.push_str("\r\ndata,tipo,minuti,sla_rispettato,motivo\r\n");
        for o in &self.outages {
            let kind = match o.kind {
                OutageKind::Planned => "programmato",
                OutageKind::Incident => "incidente",
                OutageKind::Malfunction => "malfunzionamento",
            };
            out.push_str(&format!(
                "{},{},{},{},\"{}\"\r\n",
                o.start.rfc3339(),
                kind,
                o.minutes,
                yes(self.sla_respected()),
                o.reason.replace('"', "\"\"").replace(['\r', '\n'], " ")
            ));
        }
        out
    }
}

/// Computes the statistics of `[from, to)` from the legal-log `events` of the period, the
/// `outages` that overlap it and the provider's `domains`.
pub fn compute(
    events: &[LogEvent],
    outages: &[Outage],
    domains: &[String],
    from: Instant,
    to: Instant,
) -> AgidStats {
    let ours = |a: &str| {
        a.rsplit_once('@')
            .is_some_and(|(_, d)| domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
    };
    let mut mailboxes = BTreeSet::new();
    let (mut out, mut inn) = (0, 0);
    let (mut vin, mut vout) = (BTreeSet::new(), BTreeSet::new());
    for e in events.iter().filter(|e| e.at >= from && e.at < to) {
        match e.kind {
            EventKind::Issued(MessageKind::Acceptance) => {
                out += 1;
                if ours(&e.sender) {
                    mailboxes.insert(e.sender.to_ascii_lowercase());
                }
            }
            EventKind::Issued(MessageKind::TakeCharge) => {
                inn += 1;
                for (r, _) in e.recipients.iter().filter(|(r, _)| ours(r)) {
                    mailboxes.insert(r.to_ascii_lowercase());
                }
            }
            EventKind::Issued(MessageKind::VirusDetection | MessageKind::NonDeliveryVirus) => {
                vin.insert(e.pec_id.clone());
            }
            EventKind::Issued(MessageKind::NonAcceptanceVirus) => {
                vout.insert(e.pec_id.clone());
            }
            _ => {}
        }
    }
    let period = (to.unix() - from.unix()).max(0);
    let mut down = 0;
    let rows: Vec<OutageRow> = outages
        .iter()
        .filter_map(|o| {
            let start = o.start.unix().max(from.unix());
            let end = o.end.map_or(to.unix(), Instant::unix).min(to.unix());
            (end >= start).then(|| {
                if o.kind != OutageKind::Planned {
                    down += end - start;
                }
                OutageRow {
                    start: o.start,
                    kind: o.kind,
                    minutes: (end - start + 59) / 60,
                    reason: o.reason.clone(),
                }
            })
        })
        .collect();
    let availability = if period == 0 {
        100.0
    } else {
        100.0 * (period - down) as f64 / period as f64
    };
    AgidStats {
        from,
        to,
        domains: domains.len(),
        mailboxes: mailboxes.len(),
        messages_out: out,
        messages_in: inn,
        viruses_in: vin.len() as u64,
        viruses_out: vout.len() as u64,
        outages: rows,
        availability,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::kind::RecipientType;

    fn at(s: &str) -> Instant {
        Instant::parse_cli(s).unwrap()
    }

    fn event(kind: EventKind, when: &str, sender: &str, rcpt: &str, id: &str) -> LogEvent {
        LogEvent {
            pec_id: id.into(),
            at: at(when),
            kind,
            sender: sender.into(),
            recipients: vec![(rcpt.into(), RecipientType::Certificato)],
            subject: String::new(),
            related_ids: Vec::new(),
            provider: "P".into(),
            queue_id: None,
            outcome: "ok".into(),
            reason: None,
        }
    }

    #[test]
    fn counts_from_the_log_and_the_outages() {
        let domains = vec!["pec.example.it".to_string()];
        let events = vec![
            event(
                EventKind::Issued(MessageKind::Acceptance),
                "2026-02-01T10:00:00Z",
                "Alice@pec.example.it",
                "x@other.it",
                "a",
            ),
            event(
                EventKind::Issued(MessageKind::Acceptance),
                "2026-02-01T11:00:00Z",
                "alice@pec.example.it",
                "y@other.it",
                "b",
            ),
            event(
                EventKind::Issued(MessageKind::TakeCharge),
                "2026-02-02T10:00:00Z",
                "x@other.it",
                "bob@pec.example.it",
                "c",
            ),
            event(
                EventKind::Issued(MessageKind::VirusDetection),
                "2026-02-03T10:00:00Z",
                "x@other.it",
                "bob@pec.example.it",
                "d",
            ),
            event(
                EventKind::Issued(MessageKind::NonDeliveryVirus),
                "2026-02-03T10:00:00Z",
                "x@other.it",
                "bob@pec.example.it",
                "d",
            ),
            event(
                EventKind::Issued(MessageKind::NonAcceptanceVirus),
                "2026-02-04T10:00:00Z",
                "alice@pec.example.it",
                "x@other.it",
                "e",
            ),
            // Outside the period: not counted.
            event(
                EventKind::Issued(MessageKind::Acceptance),
                "2026-06-01T10:00:00Z",
                "carol@pec.example.it",
                "x@other.it",
                "f",
            ),
        ];
        let outages = vec![
            Outage {
                kind: OutageKind::Incident,
                reason: "disco".into(),
                start: at("2026-03-01T10:00:00Z"),
                end: Some(at("2026-03-01T12:00:00Z")),
            },
            Outage {
                kind: OutageKind::Planned,
                reason: "aggiornamento".into(),
                start: at("2026-03-02T10:00:00Z"),
                end: Some(at("2026-03-02T18:00:00Z")),
            },
        ];
        let (from, to) = (at("2026-01-01T00:00:00Z"), at("2026-05-01T00:00:00Z"));
        let s = compute(&events, &outages, &domains, from, to);
        assert_eq!((s.domains, s.mailboxes), (1, 2));
        assert_eq!((s.messages_out, s.messages_in), (2, 1));
        assert_eq!((s.viruses_in, s.viruses_out), (1, 1));
        assert_eq!(s.outages.len(), 2);
        assert_eq!(s.outages[0].minutes, 120);
        assert_eq!(s.outages[1].minutes, 480);
        // 120 unplanned minutes over 120 days: 99.93 %, within 99.8 %.
        assert!(
            (s.availability - 99.9306).abs() < 0.001,
            "{}",
            s.availability
        );
        assert!(s.sla_respected());
        let csv = s.csv();
        assert!(csv.contains(",1,2,2,1,1,1,99.931,si\r\n"), "{csv}");
        assert!(
            csv.contains("2026-03-01T10:00:00Z,incidente,120,si,\"disco\"\r\n"),
            "{csv}"
        );
        assert!(
            csv.contains("2026-03-02T10:00:00Z,programmato,480,si,"),
            "{csv}"
        );
    }

    #[test]
    fn an_open_outage_counts_to_the_end_and_can_break_the_sla() {
        let outages = vec![Outage {
            kind: OutageKind::Malfunction,
            reason: "rete \"lenta\"".into(),
            start: at("2026-04-20T00:00:00Z"),
            end: None,
        }];
        let (from, to) = (at("2026-01-01T00:00:00Z"), at("2026-05-01T00:00:00Z"));
        let s = compute(&[], &outages, &[], from, to);
        assert_eq!(s.outages[0].minutes, 11 * 24 * 60);
        assert!(!s.sla_respected(), "{}", s.availability);
        assert!(s
            .csv()
            .contains("malfunzionamento,15840,no,\"rete \"\"lenta\"\"\"\r\n"));
        // An empty period is fully available.
        let s = compute(&[], &outages, &[], from, from);
        assert!(s.outages.is_empty() && s.sla_respected());
    }
}
