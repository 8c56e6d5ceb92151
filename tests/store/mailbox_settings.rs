// SPDX-License-Identifier: GPL-3.0-or-later
//! Per-mailbox settings, retired addresses, the daily-quota count and the provider-wide
//! suspension (issue 21 points 2 and 3), on SQLite and on PostgreSQL.

use crate::backends;
use backends::Backend;

use pec::message::build::Certification;
use pec::message::daticert::Destinatario;
use pec::message::kind::{ReceiptType, RecipientType};
use pec::message::time::Instant;
use pec::store::{
    Accepted, EventKind, LogEvent, LogQuery, MailboxSettings, MailboxState, Outage, OutageKind,
    Retired,
};

fn at(s: &str) -> Instant {
    Instant::parse_cli(s).unwrap()
}

both!(settings_default_round_trip_and_are_per_mailbox);
fn settings_default_round_trip_and_are_per_mailbox(backend: &Backend) {
    let store = &*backend.store;
    assert_eq!(
        store.mailbox_settings("a@pec.example.it").unwrap(),
        MailboxSettings::default()
    );
    let s = MailboxSettings {
        receipt_type: Some(ReceiptType::Breve),
        max_recipients: Some(10),
        max_total_size: Some(5_000_000),
        daily_quota: Some(200),
        state: MailboxState::ReadOnly,
    };
    store.set_mailbox_settings("A@PEC.example.it", &s).unwrap();
    assert_eq!(store.mailbox_settings("a@pec.EXAMPLE.it").unwrap(), s);
    assert_eq!(
        store.mailbox_settings("b@pec.example.it").unwrap(),
        MailboxSettings::default()
    );
    // Replaced as a whole, back to the defaults too; survives a reopen.
    let t = MailboxSettings {
        receipt_type: Some(ReceiptType::Sintetica),
        state: MailboxState::Suspended,
        ..MailboxSettings::default()
    };
    store.set_mailbox_settings("a@pec.example.it", &t).unwrap();
    assert_eq!(
        backend
            .reopen()
            .mailbox_settings("a@pec.example.it")
            .unwrap(),
        t
    );
    store
        .set_mailbox_settings("a@pec.example.it", &MailboxSettings::default())
        .unwrap();
    assert_eq!(
        store.mailbox_settings("a@pec.example.it").unwrap(),
        MailboxSettings::default()
    );
}

both!(a_retired_address_keeps_its_first_holder);
fn a_retired_address_keeps_its_first_holder(backend: &Backend) {
    let store = &*backend.store;
    assert_eq!(store.retired_mailbox("old@pec.example.it").unwrap(), None);
    let r = Retired {
        mailbox: "Old@pec.example.it".into(),
        holder: "RSSMRA80A01H501U".into(),
        at: at("2026-03-01T10:00:00Z"),
    };
    assert!(store.retire_mailbox(&r).unwrap());
    let again = Retired {
        holder: "BNCLGU70B02F205X".into(),
        ..r.clone()
    };
    assert!(!store.retire_mailbox(&again).unwrap());
    let got = backend
        .reopen()
        .retired_mailbox("OLD@pec.example.it")
        .unwrap()
        .unwrap();
    assert_eq!(got.mailbox, "old@pec.example.it");
    assert_eq!(got.holder, "RSSMRA80A01H501U");
    assert_eq!(got.at, r.at);
}

fn accepted(pec_id: &str, sender: &str, at: Instant) -> Accepted {
    Accepted {
        auth_at: None,
        pec_id: pec_id.into(),
        queue_id: None,
        at,
        cert: Certification {
            mittente: sender.into(),
            destinatari: vec![Destinatario {
                address: "x@pec.altro.it".into(),
                tipo: RecipientType::Certificato,
            }],
            risposte: sender.into(),
            oggetto: "s".into(),
            identificativo: pec_id.into(),
            msgid: None,
            requested: ReceiptType::Completa,
            to: vec!["x@pec.altro.it".into()],
            cc: Vec::new(),
        },
        login: sender.into(),
        provider: "P".into(),
    }
}

both!(acceptances_are_counted_per_sender_since_an_instant);
fn acceptances_are_counted_per_sender_since_an_instant(backend: &Backend) {
    let store = &*backend.store;
    let t0 = at("2026-03-01T10:00:00Z");
    for (i, (sender, dt)) in [
        ("alice@pec.example.it", 0),
        ("Alice@PEC.example.it", 3600),
        ("alice@pec.example.it", 7200),
        ("bob@pec.example.it", 7200),
    ]
    .into_iter()
    .enumerate()
    {
        let a = accepted(
            &format!("id{i}@pec.example.it"),
            sender,
            Instant::from_unix(t0.unix() + dt),
        );
        store.record_accepted(&a).unwrap();
    }
    assert_eq!(store.accepted_since("ALICE@pec.example.it", t0).unwrap(), 3);
    assert_eq!(
        store
            .accepted_since("alice@pec.example.it", Instant::from_unix(t0.unix() + 1))
            .unwrap(),
        2
    );
    assert_eq!(store.accepted_since("bob@pec.example.it", t0).unwrap(), 1);
    assert_eq!(store.accepted_since("carol@pec.example.it", t0).unwrap(), 0);
}

fn service_event(kind: EventKind, when: Instant) -> LogEvent {
    LogEvent {
        pec_id: String::new(),
        at: when,
        kind,
        sender: String::new(),
        recipients: Vec::new(),
        subject: String::new(),
        related_ids: Vec::new(),
        provider: "P".into(),
        queue_id: None,
        outcome: "ok".into(),
        reason: Some("incident: disco pieno".into()),
    }
}

both!(a_suspension_is_one_open_outage_logged_at_both_ends);
fn a_suspension_is_one_open_outage_logged_at_both_ends(backend: &Backend) {
    let store = &*backend.store;
    let (t0, t1) = (at("2026-03-01T10:00:00Z"), at("2026-03-01T10:45:00Z"));
    assert_eq!(store.provider_suspension().unwrap(), None);
    // Resuming what is not suspended records nothing.
    assert_eq!(
        store
            .resume_provider(&service_event(EventKind::ProviderResumed, t0))
            .unwrap(),
        None
    );
    let outage = Outage {
        kind: OutageKind::Incident,
        reason: "disco pieno".into(),
        start: t0,
        end: None,
    };
    let ev = service_event(EventKind::ProviderSuspended, t0);
    assert!(store.suspend_provider(&outage, &ev).unwrap());
    // A second suspension while one is open: refused, nothing logged.
    assert!(!backend.reopen().suspend_provider(&outage, &ev).unwrap());
    assert_eq!(store.provider_suspension().unwrap(), Some(outage.clone()));
    let closed = store
        .resume_provider(&service_event(EventKind::ProviderResumed, t1))
        .unwrap()
        .unwrap();
    assert_eq!(closed.end, Some(t1));
    assert_eq!(store.provider_suspension().unwrap(), None);
    let logged: Vec<EventKind> = store
        .search_events(&LogQuery::default())
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind)
        .collect();
    assert_eq!(
        logged,
        vec![EventKind::ProviderSuspended, EventKind::ProviderResumed]
    );
    assert!(backend
        .store
        .verify_chain(None, None)
        .unwrap()
        .problems
        .is_empty());
    // A new one may start once the first is closed; outages() sees those overlapping.
    let planned = Outage {
        kind: OutageKind::Planned,
        reason: "aggiornamento".into(),
        start: at("2026-03-05T22:00:00Z"),
        end: None,
    };
    assert!(store
        .suspend_provider(
            &planned,
            &service_event(EventKind::ProviderSuspended, planned.start)
        )
        .unwrap());
    let all = store
        .outages(at("2026-03-01T00:00:00Z"), at("2026-04-01T00:00:00Z"))
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], closed);
    assert_eq!(all[1], planned);
    // Only the open one overlaps a later period; none before the first.
    let later = store
        .outages(at("2026-03-10T00:00:00Z"), at("2026-03-11T00:00:00Z"))
        .unwrap();
    assert_eq!(later, vec![planned]);
    assert!(store
        .outages(at("2026-02-01T00:00:00Z"), t0)
        .unwrap()
        .is_empty());
}

both!(discard_and_folder_policies_round_trip);
fn discard_and_folder_policies_round_trip(backend: &Backend) {
    use pec::store::MailboxPolicy;
    let store = &*backend.store;
    store
        .set_mailbox_policy("a@pec.example.it", &MailboxPolicy::Discard)
        .unwrap();
    assert_eq!(
        store.mailbox_policy("A@pec.example.it").unwrap(),
        Some(MailboxPolicy::Discard)
    );
    let folder = MailboxPolicy::Folder("Posta-ordinaria".into());
    store
        .set_mailbox_policy("a@pec.example.it", &folder)
        .unwrap();
    assert_eq!(
        backend.reopen().mailbox_policy("a@pec.example.it").unwrap(),
        Some(folder)
    );
    let fwd = MailboxPolicy::Forward("a.rossi@example.org".into());
    store.set_mailbox_policy("a@pec.example.it", &fwd).unwrap();
    assert_eq!(store.mailbox_policy("a@pec.example.it").unwrap(), Some(fwd));
}
