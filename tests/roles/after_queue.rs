// SPDX-License-Identifier: GPL-3.0-or-later
//! The after-queue filter end to end, in process: a client playing Postfix's
//! `content_filter` transport → the filter's SMTP server → `AfterQueue` → `SmtpInjector` →
//! a fake Postfix reinjection listener that records what it gets. The store is an
//! in-memory double; the signer is a PEM key of the test PKI.

use crate::pem;

use pem::{fixture, issuer, pki};

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pec::crypto::Signer;
use pec::doubles::{MarkerAntivirus, TestStore};
use pec::index::{IndexHandle, ProviderIndex, ProviderRecord};
use pec::index::{ProviderInfo, TrustSet};
use pec::message::build::{Builder, Certification, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::ids::SequentialIds;
use pec::message::kind::{MessageKind, RecipientType, Ricevuta, Tipo};
use pec::message::time::{FixedClock, Instant};
use pec::reception::AfterQueue;
use pec::reception::Reception;
use pec::smtp::{
    serve, ClientTimeouts, FilterHandler, FilterReply, InjectError, ServerOptions, SmtpInjector,
    Transaction,
};
use pec::store::{Accepted, EventKind, MailboxPolicy, Store};
use pec::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const PEC_ID: &str = "opec1.20250603101112.1.1.test@pec.example.it";
const SENDER: &str = "alice@pec.example.it";

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

fn later() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:15Z").unwrap()
}

fn certification() -> Certification {
    let info = OriginalInfo::parse(&fixture("contratto.eml")).unwrap();
    Certification::for_submission(
        &info,
        SENDER,
        &[
            ("bob@pec.example.net".into(), RecipientType::Certificato),
            ("carol@example.com".into(), RecipientType::Esterno),
        ],
        PEC_ID,
    )
}

/// The transport envelope our access point would have queued, and its pending acceptance.
fn envelope() -> (Vec<u8>, Vec<String>, Accepted) {
    let ids = SequentialIds::new("opec1.envelope", "pec.example.it");
    let iss = issuer();
    let builder = Builder {
        issuer: &iss,
        signer: &*pki().signer,
        ids: &ids,
    };
    let cert = certification();
    let env = builder
        .transport_envelope(&fixture("contratto.eml"), &cert, at())
        .unwrap();
    let accepted = Accepted {
        auth_at: None,
        pec_id: PEC_ID.into(),
        queue_id: Some("4AccessQ1".into()),
        at: at(),
        cert,
        login: SENDER.into(),
        provider: iss.provider_name.clone(),
    };
    (env.to_bytes(), env.rcpt_to, accepted)
}

/// What the store says the filter emitted: (PEC msgid, acceptance receipt id, instant) of
/// each acceptance logged.
trait Emitted {
    fn emitted(&self) -> Vec<(String, String, Instant)>;
}

impl Emitted for TestStore {
    fn emitted(&self) -> Vec<(String, String, Instant)> {
        self.all_events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Issued(MessageKind::Acceptance))
            .map(|e| (e.pec_id, e.related_ids[0].clone(), e.at))
            .collect()
    }
}

/// The fake Postfix reinjection listener: records every transaction, answers as told
/// (the scripted answers first, in order, then the default one).
struct Reinjection {
    answer: Mutex<FilterReply>,
    script: Mutex<VecDeque<FilterReply>>,
    got: Mutex<Vec<Transaction>>,
}

impl FilterHandler for Reinjection {
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        Box::pin(async move {
            self.got.lock().unwrap().push(tx.clone());
            let scripted = self.script.lock().unwrap().pop_front();
            scripted.unwrap_or_else(|| self.answer.lock().unwrap().clone())
        })
    }
}

/// A running SMTP server (stopped when dropped).
struct Running {
    addr: String,
    _stop: oneshot::Sender<()>,
}

async fn run(handler: Arc<dyn FilterHandler>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, rx) = oneshot::channel::<()>();
    let opts = ServerOptions {
        hostname: "test".into(),
        shutdown_grace: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    tokio::spawn(serve(listener, handler, opts, async move {
        let _ = rx.await;
    }));
    Running { addr, _stop: stop }
}

fn injector(addr: &str) -> SmtpInjector {
    SmtpInjector::new(addr.to_string(), "test".into()).with_timeouts(ClientTimeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(5),
        data_end: Duration::from_secs(10),
    })
}

/// The whole chain: Postfix (an `SmtpInjector`) → filter → reinjection listener.
struct Chain {
    store: Arc<TestStore>,
    listener: Arc<Reinjection>,
    _listener_srv: Running,
    filter: Running,
}

async fn chain(listener_answer: FilterReply, listener_up: bool) -> Chain {
    let listener = Arc::new(Reinjection {
        answer: Mutex::new(listener_answer),
        script: Mutex::new(VecDeque::new()),
        got: Mutex::new(Vec::new()),
    });
    let listener_srv = run(listener.clone()).await;
    let reinject_addr = if listener_up {
        listener_srv.addr.clone()
    } else {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap().to_string();
        drop(l);
        a
    };
    let store = Arc::new(TestStore::new());
    let signer: Arc<dyn Signer> = pki().signer.clone();
    let aq = AfterQueue::new(
        store.clone(),
        Arc::new(injector(&reinject_addr)),
        issuer(),
        signer,
        Arc::new(SequentialIds::new("opec1.receipt", "pec.example.it")),
        reception(),
    )
    .with_clock(Arc::new(FixedClock::new(later())));
    let filter = run(Arc::new(aq)).await;
    Chain {
        store,
        listener,
        _listener_srv: listener_srv,
        filter,
    }
}

impl Chain {
    /// Postfix delivering `data` to the filter.
    async fn deliver(
        &self,
        from: &str,
        rcpt: &[String],
        data: &[u8],
    ) -> Result<String, InjectError> {
        injector(&self.filter.addr).send(from, rcpt, data).await
    }
    fn got(&self) -> Vec<Transaction> {
        self.listener.got.lock().unwrap().clone()
    }
}

/// Reception settings: we are pec.example.it; the recipients of these tests are remote.
fn reception() -> Reception {
    Reception {
        chain: None,
        index: Arc::new(IndexHandle::new(ProviderIndex::from_records(vec![
            ProviderRecord {
                info: ProviderInfo {
                    name: issuer().provider_name,
                    mail_receipt: "ricevute@pec.example.it".into(),
                    managed_domains: vec!["pec.example.it".into()],
                },
                certificates: vec![pki().signer.certificate_der().to_vec()],
            },
        ]))),
        antivirus: Arc::new(MarkerAntivirus::eicar()),
        domains: vec!["pec.example.it".into()],
        mail_receipt: "ricevute@pec.example.it".into(),
        default_policy: MailboxPolicy::Anomaly,
    }
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

#[tokio::test]
async fn our_envelope_gets_its_acceptance_then_passes_on_and_a_retry_does_not_repeat_it() {
    let c = chain(FilterReply::Accept, true).await;
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();

    let reply = c.deliver(SENDER, &rcpt, &env).await.unwrap();
    assert!(reply.starts_with("250 2.0.0"), "{reply}");

    let got = c.got();
    assert_eq!(got.len(), 2, "acceptance, then the envelope");
    // 1. The acceptance receipt, to the sender, from the service address.
    let receipt = &got[0];
    assert_eq!(receipt.mail_from, "posta-certificata@pec.example.it");
    assert_eq!(receipt.rcpt_to, vec![SENDER.to_string()]);
    match classify(&receipt.data, &trust(), at()) {
        Classification::Receipt(Ricevuta::Accettazione, m) => {
            assert_eq!(m.daticert.tipo, Tipo::Accettazione);
            assert_eq!(m.daticert.identificativo, PEC_ID);
            // One instant per transaction: the envelope's.
            assert_eq!(
                m.daticert.data,
                pec::message::daticert::DataCert::from_instant(at())
            );
        }
        other => panic!("acceptance classified as {other:?}"),
    }
    // 2. The envelope, byte-identical, same envelope addresses.
    assert_eq!(got[1].mail_from, SENDER);
    assert_eq!(got[1].rcpt_to, rcpt);
    assert_eq!(got[1].data, env);

    // The store knows the acceptance went out, with the receipt's id.
    let emitted = c.store.emitted();
    assert_eq!(emitted.len(), 1);
    assert_eq!(emitted[0].0, PEC_ID);
    assert!(
        emitted[0].1.starts_with("opec1.receipt."),
        "{}",
        emitted[0].1
    );
    assert_eq!(emitted[0].2, later());
    assert!(c.store.pending_acceptance(PEC_ID).unwrap().is_none());

    // Postfix delivers the same envelope again: only the envelope goes on.
    c.deliver(SENDER, &rcpt, &env).await.unwrap();
    let got = c.got();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].data, env);
    assert_eq!(got[2].rcpt_to, rcpt);
    assert_eq!(c.store.emitted().len(), 1);
}

#[tokio::test]
async fn unknown_messages_pass_through_byte_identical() {
    let c = chain(FilterReply::Accept, true).await;
    let ordinary = fixture("ordinary.eml");
    // Remote recipients only: local ones get the reception point (tests/roles/reception.rs).
    let rcpt = vec![
        "bob@pec.example.net".to_string(),
        "x@example.org".to_string(),
    ];
    c.deliver("someone@example.org", &rcpt, &ordinary)
        .await
        .unwrap();
    // An envelope of ours without a pending acceptance (e.g. from another node's retry).
    let (env, env_rcpt, _) = envelope();
    c.deliver(SENDER, &env_rcpt, &env).await.unwrap();
    let got = c.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].mail_from, "someone@example.org");
    assert_eq!(got[0].rcpt_to, rcpt);
    // The client normalises line ends; the fixture is CRLF already.
    assert_eq!(
        got[0].data,
        pec::message::mime::normalize_crlf(&ordinary).into_owned()
    );
    assert_eq!(got[1].data, env);
    assert!(c.store.emitted().is_empty());
}

#[tokio::test]
async fn listener_tempfail_makes_the_filter_tempfail_with_the_receipt_staged() {
    let c = chain(FilterReply::Tempfail("queue full".into()), true).await;
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();
    let err = c.deliver(SENDER, &rcpt, &env).await.unwrap_err();
    assert!(
        matches!(&err, InjectError::Temporary { reason, .. } if reason.starts_with("end of data: 451")),
        "{err:?}"
    );
    // Recorded with the staged receipt before the injection (the outbox sweep sends it).
    assert_eq!(c.store.emitted().len(), 1);
    assert!(c.store.pending_acceptance(PEC_ID).unwrap().is_none());
    // Only the acceptance was attempted; the envelope was not passed on.
    let got = c.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, vec![SENDER.to_string()]);
}

#[tokio::test]
async fn listener_down_makes_the_filter_tempfail() {
    let c = chain(FilterReply::Accept, false).await;
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();
    let err = c.deliver(SENDER, &rcpt, &env).await.unwrap_err();
    assert!(
        matches!(&err, InjectError::Temporary { reason, .. } if reason.contains("451")),
        "{err:?}"
    );
    // Staged and recorded; the outbox sweep injects it.
    assert_eq!(c.store.emitted().len(), 1);
    // Ordinary mail too.
    let err = c
        .deliver(
            "a@example.org",
            &["b@example.net".into()],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, InjectError::Temporary { .. }), "{err:?}");
}

#[tokio::test]
async fn store_failure_makes_the_filter_tempfail_before_anything_is_sent() {
    let c = chain(FilterReply::Accept, true).await;
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();
    c.store.fail.store(true, Ordering::SeqCst);
    let err = c.deliver(SENDER, &rcpt, &env).await.unwrap_err();
    assert!(
        matches!(&err, InjectError::Temporary { reason, .. } if reason.contains("451 4.3.0")),
        "{err:?}"
    );
    assert!(c.got().is_empty());
    // Back up: the retry emits the acceptance.
    c.store.fail.store(false, Ordering::SeqCst);
    c.deliver(SENDER, &rcpt, &env).await.unwrap();
    assert_eq!(c.got().len(), 2);
    assert_eq!(c.store.emitted().len(), 1);
}

#[tokio::test]
async fn permanent_refusal_of_a_pass_through_is_a_reject() {
    let c = chain(FilterReply::Reject("no such domain".into()), true).await;
    let err = c
        .deliver(
            "a@example.org",
            &["b@example.net".into()],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InjectError::Permanent { reason, .. } if reason.contains("554 5.7.1") && reason.contains("no such domain")),
        "{err:?}"
    );
}

#[tokio::test]
async fn permanent_refusal_of_the_acceptance_is_a_tempfail() {
    let c = chain(FilterReply::Reject("refused".into()), true).await;
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();
    let err = c.deliver(SENDER, &rcpt, &env).await.unwrap_err();
    assert!(matches!(err, InjectError::Temporary { .. }), "{err:?}");
    // Staged and recorded; the outbox sweep tries it again.
    assert_eq!(c.store.emitted().len(), 1);
}

#[tokio::test]
async fn envelope_tempfail_after_the_acceptance_retries_only_the_envelope() {
    let c = chain(FilterReply::Accept, true).await;
    c.listener
        .script
        .lock()
        .unwrap()
        .extend([FilterReply::Accept, FilterReply::Tempfail("busy".into())]);
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();
    let err = c.deliver(SENDER, &rcpt, &env).await.unwrap_err();
    assert!(matches!(err, InjectError::Temporary { .. }), "{err:?}");
    // The receipt is in the MTA's hands and the store says so.
    assert_eq!(c.store.emitted().len(), 1);
    // Postfix retries: the envelope goes on, no second acceptance.
    c.deliver(SENDER, &rcpt, &env).await.unwrap();
    let got = c.got();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].rcpt_to, vec![SENDER.to_string()]);
    assert_eq!(got[1].data, env);
    assert_eq!(got[2].data, env);
    assert_eq!(c.store.emitted().len(), 1);
}

#[tokio::test]
async fn envelope_refused_after_the_acceptance_is_a_reject() {
    let c = chain(FilterReply::Accept, true).await;
    c.listener.script.lock().unwrap().extend([
        FilterReply::Accept,
        FilterReply::Reject("message too big".into()),
    ]);
    let (env, rcpt, accepted) = envelope();
    c.store.record_accepted(&accepted).unwrap();
    let err = c.deliver(SENDER, &rcpt, &env).await.unwrap_err();
    assert!(
        matches!(&err, InjectError::Permanent { reason, .. } if reason.contains("message too big")),
        "{err:?}"
    );
    assert_eq!(c.store.emitted().len(), 1);
}

#[tokio::test]
async fn local_ordinary_mail_comes_out_of_the_chain_as_an_anomaly_envelope_remote_unchanged() {
    let c = chain(FilterReply::Accept, true).await;
    let ordinary = fixture("ordinary.eml");
    let rcpt = vec![
        "ugo@pec.example.it".to_string(),
        "x@example.org".to_string(),
    ];
    c.deliver("someone@example.org", &rcpt, &ordinary)
        .await
        .unwrap();
    let got = c.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].rcpt_to, vec!["x@example.org"]);
    assert_eq!(got[0].data, ordinary);
    assert_eq!(got[1].rcpt_to, vec!["ugo@pec.example.it"]);
    assert_eq!(got[1].mail_from, "someone@example.org");
    let text = String::from_utf8_lossy(&got[1].data);
    assert!(text.contains("X-Trasporto: errore"), "{text}");
    // Signed by us.
    assert!(classify(&got[1].data, &trust(), later())
        .verified()
        .is_some());
}
