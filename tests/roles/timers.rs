// SPDX-License-Identifier: GPL-3.0-or-later
//! The 12 h / 24 h timers (spec §5.4) against the SQLite store (and the in-memory double),
//! with a recording injector and time driven by the test (no sleeping).

use crate::pem;

use pem::{issuer, pki};

use std::path::Path;
use std::sync::Arc;

use crate::backends;
use backends::Backend;
use pec::crypto::Signer;
use pec::doubles::{RecordingInjector, TestStore};
use pec::index::{ProviderInfo, TrustSet};
use pec::message::build::{Certification, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::{RecipientType, Ricevuta, Timeout, Tipo};
use pec::message::time::{FixedClock, Instant};
use pec::smtp::InjectError;
use pec::store::{Accepted, EventKind, SqliteStore, Store, TimeoutClaim, TrackingState};
use pec::timers::{Report, Timers, CLAIM_LEASE};

const PEC_ID: &str = "opec1.20250603101112.1.1.test@pec.example.it";
const SENDER: &str = "alice@pec.example.it";
const BOB: &str = "bob@pec.example.net";
const DAN: &str = "dan@pec.example.net";
const HOUR: i64 = 3600;

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

/// `seconds` after dispatch.
fn plus(seconds: i64) -> Instant {
    Instant::from_unix(at().unix() + seconds)
}

fn trust() -> TrustSet {
    let mut t = TrustSet::new();
    t.add(
        pki().signer.certificate_der().to_vec(),
        Some(ProviderInfo {
            name: issuer().provider_name,
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        }),
    );
    t
}

/// An envelope with two certified recipients and an external one.
fn accepted() -> Accepted {
    let original = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/originals/contratto.eml"),
    )
    .unwrap();
    let info = OriginalInfo::parse(&original).unwrap();
    let cert = Certification::for_submission(
        &info,
        SENDER,
        &[
            (BOB.into(), RecipientType::Certificato),
            (DAN.into(), RecipientType::Certificato),
            ("carol@example.com".into(), RecipientType::Esterno),
        ],
        PEC_ID,
    );
    Accepted {
        auth_at: None,
        pec_id: PEC_ID.into(),
        queue_id: Some("4AccessQ1".into()),
        at: at(),
        cert,
        login: SENDER.into(),
        provider: issuer().provider_name,
    }
}

/// Records the envelope and closes its pending acceptance (Postfix queued it).
fn dispatched(store: &dyn Store) {
    store.record_accepted(&accepted()).unwrap();
    assert!(store
        .acceptance_emitted(PEC_ID, "opec1.receipt.1@pec.example.it", at())
        .unwrap());
}

struct Rig {
    store: Arc<dyn Store>,
    injector: Arc<RecordingInjector>,
    timers: Timers,
}

fn rig(store: Arc<dyn Store>) -> Rig {
    let injector = Arc::new(RecordingInjector::new());
    let signer: Arc<dyn Signer> = pki().signer.clone();
    let timers = Timers::new(
        store.clone(),
        injector.clone(),
        issuer(),
        signer,
        Arc::new(SequentialIds::new("opec1.notice", "pec.example.it")),
        Arc::new(FixedClock::new(at())),
    );
    Rig {
        store,
        injector,
        timers,
    }
}

fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.path().join("pec.db")).unwrap())
}

/// (which, recipient) of each notice of a pass, sorted.
fn sent(report: &Report) -> Vec<(Timeout, String)> {
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let mut v: Vec<_> = report
        .sent
        .iter()
        .map(|s| {
            assert_eq!(s.pec_id, PEC_ID);
            (s.which, s.recipient.clone())
        })
        .collect();
    v.sort_by_key(|(w, r)| (*w == Timeout::Hours24, r.clone()));
    v
}

/// Checks the last `n` injected messages are valid signed notices of kind `which`, to the
/// sender, one per recipient in `recipients`, with the right errore-esteso code.
fn check_notices(rig: &Rig, which: Timeout, recipients: &[&str], when: Instant) {
    let all = rig.injector.messages();
    let got = &all[all.len() - recipients.len()..];
    let mut seen = Vec::new();
    for m in got {
        assert_eq!(m.mail_from, "posta-certificata@pec.example.it");
        assert_eq!(m.rcpt_to, vec![SENDER.to_string()]);
        let text = String::from_utf8_lossy(&m.message);
        assert!(
            text.contains("X-Ricevuta: preavviso-errore-consegna"),
            "{text}"
        );
        assert!(text.contains("Subject: AVVISO DI MANCATA CONSEGNA PER SUP. TEMPO MASSIMO: "));
        match classify(&m.message, &trust(), when) {
            Classification::Receipt(Ricevuta::PreavvisoErroreConsegna, p) => {
                assert_eq!(p.daticert.tipo, Tipo::PreavvisoErroreConsegna);
                assert_eq!(p.daticert.identificativo, PEC_ID);
                let code = p.daticert.errore_esteso.clone().unwrap_or_default();
                match which {
                    Timeout::Hours12 => assert!(code.starts_with("4.4.7 - "), "{code}"),
                    Timeout::Hours24 => assert!(code.starts_with("5.4.1 - "), "{code}"),
                }
                assert_eq!(
                    p.daticert.data,
                    pec::message::daticert::DataCert::from_instant(when)
                );
                seen.push(p.daticert.consegna.clone().unwrap_or_default());
            }
            other => panic!("notice classified as {other:?}"),
        }
        // The original is never attached to these notices.
        assert!(!text.contains("postacert.eml"));
    }
    seen.sort();
    assert_eq!(seen, recipients);
}

fn state(store: &dyn Store, recipient: &str) -> TrackingState {
    store
        .tracking_for(PEC_ID)
        .unwrap()
        .into_iter()
        .find(|t| t.recipient == recipient)
        .unwrap()
        .state
}

fn logged(store: &dyn Store, which: Timeout) -> usize {
    store
        .events_for(PEC_ID)
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::Issued(pec::message::kind::MessageKind::Timeout(which)))
        .count()
}

async fn neither_gives_both_notices(store: Arc<dyn Store>) {
    let r = rig(store);
    dispatched(&*r.store);
    // Nothing before 12 h.
    assert_eq!(
        sent(&r.timers.run_once(plus(12 * HOUR - 1)).await.unwrap()),
        vec![]
    );
    // 12 h: one preavviso per certified recipient; the external one is not tracked.
    let t12 = plus(12 * HOUR);
    let report = r.timers.run_once(t12).await.unwrap();
    assert_eq!(
        sent(&report),
        vec![
            (Timeout::Hours12, BOB.into()),
            (Timeout::Hours12, DAN.into())
        ]
    );
    check_notices(&r, Timeout::Hours12, &[BOB, DAN], t12);
    assert_eq!(logged(&*r.store, Timeout::Hours12), 2);
    // Once.
    assert_eq!(
        sent(&r.timers.run_once(plus(13 * HOUR)).await.unwrap()),
        vec![]
    );
    // The 24 h one not before 22 h.
    assert_eq!(
        sent(&r.timers.run_once(plus(22 * HOUR)).await.unwrap()),
        vec![]
    );
    let t24 = plus(24 * HOUR);
    let report = r.timers.run_once(t24).await.unwrap();
    assert_eq!(
        sent(&report),
        vec![
            (Timeout::Hours24, BOB.into()),
            (Timeout::Hours24, DAN.into())
        ]
    );
    check_notices(&r, Timeout::Hours24, &[BOB, DAN], t24);
    assert_eq!(logged(&*r.store, Timeout::Hours24), 2);
    // Tracking stopped.
    assert_eq!(state(&*r.store, BOB), TrackingState::Failed);
    assert_eq!(
        sent(&r.timers.run_once(plus(48 * HOUR)).await.unwrap()),
        vec![]
    );
    assert_eq!(r.injector.messages().len(), 4);
}

#[tokio::test]
async fn no_take_charge_and_no_delivery_gives_the_12h_then_the_24h_notice_once_each() {
    let dir = tempfile::tempdir().unwrap();
    neither_gives_both_notices(sqlite(&dir)).await;
}

#[tokio::test]
async fn the_memory_double_behaves_like_sqlite() {
    neither_gives_both_notices(Arc::new(TestStore::new())).await;
}

#[tokio::test]
async fn take_charge_within_12h_but_no_delivery_gives_only_the_24h_notice() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(sqlite(&dir));
    dispatched(&*r.store);
    assert!(r
        .store
        .update_tracking(PEC_ID, "BOB@pec.example.net", TrackingState::TakenInCharge)
        .unwrap());
    let report = r.timers.run_once(plus(12 * HOUR + 60)).await.unwrap();
    assert_eq!(sent(&report), vec![(Timeout::Hours12, DAN.into())]);
    let report = r.timers.run_once(plus(24 * HOUR)).await.unwrap();
    assert_eq!(
        sent(&report),
        vec![
            (Timeout::Hours24, BOB.into()),
            (Timeout::Hours24, DAN.into())
        ]
    );
}

#[tokio::test]
async fn delivery_between_12h_and_24h_gives_only_the_12h_notice() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(sqlite(&dir));
    dispatched(&*r.store);
    let report = r.timers.run_once(plus(12 * HOUR)).await.unwrap();
    assert_eq!(report.count(Timeout::Hours12), 2);
    for who in [BOB, DAN] {
        assert!(r
            .store
            .update_tracking(PEC_ID, who, TrackingState::Delivered)
            .unwrap());
    }
    assert_eq!(
        sent(&r.timers.run_once(plus(25 * HOUR)).await.unwrap()),
        vec![]
    );
}

#[tokio::test]
async fn a_non_delivery_notice_stops_the_24h_timer() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(sqlite(&dir));
    dispatched(&*r.store);
    assert!(r
        .store
        .update_tracking(PEC_ID, DAN, TrackingState::Failed)
        .unwrap());
    let report = r.timers.run_once(plus(25 * HOUR)).await.unwrap();
    assert_eq!(sent(&report), vec![(Timeout::Hours24, BOB.into())]);
}

#[tokio::test]
async fn tracking_states_only_move_forward() {
    let store = TestStore::new();
    dispatched(&store);
    let dir = tempfile::tempdir().unwrap();
    let sq = sqlite(&dir);
    dispatched(&*sq);
    for s in [&store as &dyn Store, &*sq] {
        assert!(s
            .update_tracking(PEC_ID, BOB, TrackingState::Delivered)
            .unwrap());
        assert!(!s
            .update_tracking(PEC_ID, BOB, TrackingState::TakenInCharge)
            .unwrap());
        assert!(!s
            .update_tracking(PEC_ID, BOB, TrackingState::Failed)
            .unwrap());
        assert!(!s.update_tracking(PEC_ID, BOB, TrackingState::Sent).unwrap());
        assert!(!s
            .update_tracking(PEC_ID, "nobody@x.it", TrackingState::Failed)
            .unwrap());
        assert_eq!(state(s, BOB), TrackingState::Delivered);
        assert_eq!(state(s, DAN), TrackingState::Sent);
    }
}

#[tokio::test]
async fn nothing_is_due_for_an_envelope_postfix_never_queued() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(sqlite(&dir));
    // The milter recorded it, but the acceptance was never emitted.
    r.store.record_accepted(&accepted()).unwrap();
    assert_eq!(
        sent(&r.timers.run_once(plus(30 * HOUR)).await.unwrap()),
        vec![]
    );
    assert!(r.injector.messages().is_empty());
}

#[tokio::test]
async fn a_restart_in_the_middle_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    {
        let r = rig(sqlite(&dir));
        dispatched(&*r.store);
        assert_eq!(
            r.timers
                .run_once(plus(13 * HOUR))
                .await
                .unwrap()
                .count(Timeout::Hours12),
            2
        );
    }
    // A new process on the same file.
    let r = rig(sqlite(&dir));
    assert_eq!(
        sent(&r.timers.run_once(plus(14 * HOUR)).await.unwrap()),
        vec![]
    );
    let report = r.timers.run_once(plus(25 * HOUR)).await.unwrap();
    assert_eq!(report.count(Timeout::Hours24), 2);
    assert_eq!(report.count(Timeout::Hours12), 0);
    check_notices(&r, Timeout::Hours24, &[BOB, DAN], plus(25 * HOUR));
    assert_eq!(r.injector.messages().len(), 2);
}

#[tokio::test]
async fn two_processes_on_one_store_send_each_notice_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = rig(sqlite(&dir));
    let b = rig(sqlite(&dir));
    dispatched(&*a.store);
    let (ra, rb) = tokio::join!(
        a.timers.run_once(plus(13 * HOUR)),
        b.timers.run_once(plus(13 * HOUR))
    );
    let total = ra.unwrap().sent.len() + rb.unwrap().sent.len();
    assert_eq!(total, 2);
    assert_eq!(a.injector.messages().len() + b.injector.messages().len(), 2);
    assert_eq!(logged(&*a.store, Timeout::Hours12), 2);
}

/// A notice is staged with its record before it is injected: when the injection fails,
/// the next pass builds none (the row has its notice), the outbox sweep injects the staged
/// bytes, once.
#[tokio::test]
async fn a_failed_injection_leaves_the_staged_notice_to_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(sqlite(&dir));
    dispatched(&*r.store);
    *r.injector.fail_with.lock().unwrap() = Some(InjectError::Temporary {
        addr: "127.0.0.1:10027".into(),
        reason: "connection refused".into(),
    });
    let report = r.timers.run_once(plus(13 * HOUR)).await.unwrap();
    assert!(report.sent.is_empty());
    assert_eq!(report.failed.len(), 2);
    assert_eq!(
        logged(&*r.store, Timeout::Hours12),
        2,
        "staged with its record"
    );
    *r.injector.fail_with.lock().unwrap() = None;
    let report = r.timers.run_once(plus(13 * HOUR + 60)).await.unwrap();
    assert_eq!(report.count(Timeout::Hours12), 0, "none built again");
    assert!(r.injector.messages().is_empty());
    let clock = FixedClock::new(plus(13 * HOUR + 60));
    let sent = pec::outbox::sweep_once(&r.store, &*r.injector, &clock)
        .await
        .unwrap();
    assert_eq!(sent, 2);
    assert_eq!(r.injector.messages().len(), 2);
    assert_eq!(
        pec::outbox::sweep_once(&r.store, &*r.injector, &clock)
            .await
            .unwrap(),
        0
    );
    assert_eq!(logged(&*r.store, Timeout::Hours12), 2);
}

#[tokio::test]
async fn a_claim_left_by_a_crashed_process_is_taken_over_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig(sqlite(&dir));
    dispatched(&*r.store);
    let now = plus(13 * HOUR);
    // A process claims and dies before sending.
    let claimed = r
        .store
        .claim_timeouts(&TimeoutClaim {
            which: Timeout::Hours12,
            sent_up_to: plus(HOUR),
            now,
            stale_before: Instant::from_unix(now.unix() - CLAIM_LEASE),
            limit: 10,
        })
        .unwrap();
    assert_eq!(claimed.len(), 2);
    // Within the lease nothing is sent…
    assert_eq!(
        sent(&r.timers.run_once(plus(13 * HOUR + 60)).await.unwrap()),
        vec![]
    );
    // …after it, the notices go out.
    let later = Instant::from_unix(now.unix() + CLAIM_LEASE + 1);
    assert_eq!(
        r.timers
            .run_once(later)
            .await
            .unwrap()
            .count(Timeout::Hours12),
        2
    );
}

#[tokio::test]
async fn postgres_gives_the_12h_then_the_24h_notice_once_each() {
    let Some(b) = Backend::postgres("timers_both_notices") else {
        return;
    };
    neither_gives_both_notices(b.store.clone()).await;
}

/// Two nodes on one PostgreSQL store claim the same due rows at once: each notice goes out
/// once, from one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_send_each_notice_once() {
    let Some(backend) = Backend::postgres("timers_two_nodes") else {
        return;
    };
    let a = rig(backend.store.clone());
    let b = rig(backend.reopen());
    dispatched(&*a.store);
    let (ra, rb) = tokio::join!(
        a.timers.run_once(plus(13 * HOUR)),
        b.timers.run_once(plus(13 * HOUR))
    );
    let total = ra.unwrap().sent.len() + rb.unwrap().sent.len();
    assert_eq!(total, 2);
    assert_eq!(a.injector.messages().len() + b.injector.messages().len(), 2);
    assert_eq!(logged(&*b.store, Timeout::Hours12), 2);
    let (ra, rb) = tokio::join!(
        a.timers.run_once(plus(25 * HOUR)),
        b.timers.run_once(plus(25 * HOUR))
    );
    assert_eq!(
        ra.unwrap().count(Timeout::Hours24) + rb.unwrap().count(Timeout::Hours24),
        2
    );
    assert_eq!(logged(&*a.store, Timeout::Hours24), 2);
}
