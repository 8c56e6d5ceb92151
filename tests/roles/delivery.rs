// SPDX-License-Identifier: GPL-3.0-or-later
//! The delivery point in process: a client playing Postfix's `lmtp` transport → the LMTP
//! proxy (`pec::delivery`) → `LmtpClient` → a fake Dovecot LMTP server scripted per
//! recipient. Generated notices go to a `RecordingInjector` and are verified with
//! `classify` against the test PKI.

use crate::pem;

use pem::{fixture, issuer, pki, PROVIDER};

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pec::crypto::Signer;
use pec::delivery::DeliveryPoint;
use pec::doubles::{RecordingInjector, TestStore};
use pec::index::{IndexHandle, ProviderIndex, ProviderInfo, ProviderRecord};
use pec::message::build::{Builder, Certification, OriginalInfo};
use pec::message::classify::{classify, Classification, PecMessage};
use pec::message::ids::SequentialIds;
use pec::message::kind::{Errore, MessageKind, ReceiptType, RecipientType, Ricevuta};
use pec::message::time::{FixedClock, Instant};
use pec::smtp::lmtp::{serve, LmtpAddr, LmtpClient, LmtpServerOptions, LmtpTimeouts};
use pec::smtp::InjectError;
use pec::store::{ArrivalNotice, EventKind, Store};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const PEC_ID: &str = "opec1.20250603101112.1.1.test@pec.example.it";
const SENDER: &str = "alice@pec.example.it";
const BOB: &str = "bob@pec.example.net"; // To: of the original
const DAVE: &str = "dave@pec.example.net"; // Cc: of the original
const ERIN: &str = "erin@pec.example.net"; // To: (added by `original`)
const FRANK: &str = "frank@pec.example.net"; // To: (added by `original`)

fn at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:12Z").unwrap()
}

fn delivered_at() -> Instant {
    Instant::parse_cli("2025-06-03T08:11:20Z").unwrap()
}

fn index() -> ProviderIndex {
    ProviderIndex::from_records(vec![ProviderRecord {
        info: ProviderInfo {
            name: PROVIDER.into(),
            mail_receipt: "ricevute@pec.example.it".into(),
            managed_domains: vec!["pec.example.it".into()],
        },
        certificates: vec![pki().signer.certificate_der().to_vec()],
    }])
}

/// The original: `contratto.eml` (X-TipoRicevuta: breve), or without the header, with
/// ERIN and FRANK added to its To (every certified recipient is one the message shows).
fn original(breve: bool) -> Vec<u8> {
    let text = String::from_utf8(fixture("contratto.eml")).unwrap();
    let to = "To: Bob Bianchi <bob@pec.example.net>, carol@example.com";
    assert!(text.contains(to));
    let text = text.replace(to, &format!("{to}, {ERIN}, {FRANK}"));
    if breve {
        return text.into_bytes();
    }
    text.replace("X-TipoRicevuta: breve\r\n", "").into_bytes()
}

/// A transport envelope for BOB, DAVE, ERIN, FRANK wrapping the original.
fn envelope(breve: bool) -> Vec<u8> {
    let orig = original(breve);
    let info = OriginalInfo::parse(&orig).unwrap();
    let rcpts: Vec<(String, RecipientType)> = [BOB, DAVE, ERIN, FRANK]
        .iter()
        .map(|r| (r.to_string(), RecipientType::Certificato))
        .collect();
    let cert = Certification::for_submission(&info, SENDER, &rcpts, PEC_ID);
    let ids = SequentialIds::new("opec1.envelope", "pec.example.it");
    let iss = issuer();
    let builder = Builder {
        issuer: &iss,
        signer: &*pki().signer,
        ids: &ids,
    };
    builder
        .transport_envelope(&orig, &cert, at())
        .unwrap()
        .to_bytes()
}

// ---- fake Dovecot -------------------------------------------------------------------

#[derive(Default)]
struct DovecotScript {
    /// RCPT reply line per recipient (default `250 2.1.5 OK`).
    rcpt: HashMap<String, String>,
    /// Reply after DATA per recipient (default `250 2.0.0 <r> Saved`).
    after: HashMap<String, String>,
    /// Close the connection after the data instead of answering.
    drop_after_data: bool,
}

/// MAIL FROM, accepted recipients, data (unstuffed).
type Delivered = (String, Vec<String>, Vec<u8>);

#[derive(Default)]
struct FakeDovecot {
    script: Mutex<DovecotScript>,
    /// (MAIL FROM, accepted recipients, data unstuffed) of every completed DATA.
    got: Mutex<Vec<Delivered>>,
}

fn angle(line: &str) -> String {
    let s = line.find('<').map(|i| i + 1).unwrap_or(0);
    let e = line.rfind('>').unwrap_or(line.len());
    line[s..e].to_string()
}

impl FakeDovecot {
    async fn session<S>(self: Arc<Self>, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (r, mut w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        w.write_all(b"220 fake Dovecot ready.\r\n").await.unwrap();
        let mut from = String::new();
        let mut rcpts: Vec<String> = Vec::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let upper = line.to_ascii_uppercase();
            let reply = if upper.starts_with("LHLO") {
                "250-fake\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING".to_string()
            } else if upper.starts_with("MAIL FROM:") {
                from = angle(&line);
                rcpts.clear();
                "250 2.1.0 OK".into()
            } else if upper.starts_with("RCPT TO:") {
                let a = angle(&line);
                let reply = self.script.lock().unwrap().rcpt.get(&a).cloned();
                match reply {
                    Some(x) => x,
                    None => {
                        rcpts.push(a);
                        "250 2.1.5 OK".into()
                    }
                }
            } else if upper.starts_with("DATA") {
                w.write_all(b"354 OK\r\n").await.unwrap();
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    if l.starts_with(b".") {
                        l.remove(0);
                    }
                    data.extend_from_slice(&l);
                }
                let (drop_it, replies) = {
                    let s = self.script.lock().unwrap();
                    let replies: Vec<String> = rcpts
                        .iter()
                        .map(|a| {
                            s.after
                                .get(a)
                                .cloned()
                                .unwrap_or_else(|| format!("250 2.0.0 <{a}> Saved"))
                        })
                        .collect();
                    (s.drop_after_data, replies)
                };
                if drop_it {
                    return;
                }
                self.got
                    .lock()
                    .unwrap()
                    .push((from.clone(), rcpts.clone(), data));
                let mut out = String::new();
                for x in replies {
                    out.push_str(&x);
                    out.push_str("\r\n");
                }
                w.write_all(out.as_bytes()).await.unwrap();
                continue;
            } else if upper.starts_with("QUIT") {
                let _ = w.write_all(b"221 2.0.0 Bye\r\n").await;
                return;
            } else {
                "250 2.0.0 OK".into()
            };
            w.write_all(format!("{reply}\r\n").as_bytes())
                .await
                .unwrap();
        }
    }
}

// ---- the chain --------------------------------------------------------------------

struct Chain {
    store: Arc<TestStore>,
    injector: Arc<RecordingInjector>,
    dovecot: Arc<FakeDovecot>,
    proxy: String,
    _stop: oneshot::Sender<()>,
}

async fn chain() -> Chain {
    chain_with(false).await
}

async fn chain_with(arrival_notices: bool) -> Chain {
    let dovecot = Arc::new(FakeDovecot::default());
    let dl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daddr = dl.local_addr().unwrap().to_string();
    let d = dovecot.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = dl.accept().await {
            tokio::spawn(d.clone().session(s));
        }
    });
    let store = Arc::new(TestStore::new());
    let injector = Arc::new(RecordingInjector::new());
    let client = LmtpClient::new(LmtpAddr::Tcp(daddr), "test".into()).with_timeouts(LmtpTimeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(5),
        data_end: Duration::from_secs(10),
    });
    let signer: Arc<dyn Signer> = pki().signer.clone();
    let dp = DeliveryPoint::new(
        store.clone(),
        injector.clone(),
        Arc::new(client),
        Arc::new(IndexHandle::new(index())),
        issuer(),
        signer,
        Arc::new(SequentialIds::new("opec1.notice", "pec.example.it")),
    )
    .with_clock(Arc::new(FixedClock::new(delivered_at())))
    .with_arrival_notices(arrival_notices);
    let pl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = pl.local_addr().unwrap().to_string();
    let (stop, rx) = oneshot::channel::<()>();
    let opts = LmtpServerOptions {
        hostname: "test".into(),
        shutdown_grace: Duration::from_secs(1),
        ..LmtpServerOptions::default()
    };
    tokio::spawn(serve(pl, Arc::new(dp), opts, async move {
        let _ = rx.await;
    }));
    Chain {
        store,
        injector,
        dovecot,
        proxy,
        _stop: stop,
    }
}

async fn read_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    let mut last;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(20), r.read_line(&mut line))
            .await
            .expect("reply in time")
            .unwrap();
        assert!(n > 0, "connection closed");
        last = line.trim_end().to_string();
        if last.as_bytes().get(3) != Some(&b'-') {
            return last;
        }
    }
}

impl Chain {
    /// Postfix's lmtp client: one transaction; the replies after DATA, one per recipient.
    async fn postfix(&self, rcpts: &[&str], data: &[u8]) -> Vec<String> {
        let s = TcpStream::connect(&self.proxy).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        assert!(read_reply(&mut r).await.starts_with("220"));
        w.write_all(b"LHLO postfix\r\n").await.unwrap();
        let lhlo = read_reply(&mut r).await;
        assert!(lhlo.starts_with("250 "), "{lhlo}");
        w.write_all((format!("MAIL FROM:<{SENDER}> BODY=8BITMIME\r\n")).as_bytes())
            .await
            .unwrap();
        assert!(read_reply(&mut r).await.starts_with("250"));
        for a in rcpts {
            w.write_all((format!("RCPT TO:<{a}>\r\n")).as_bytes())
                .await
                .unwrap();
            assert!(read_reply(&mut r).await.starts_with("250"));
        }
        w.write_all(b"DATA\r\n").await.unwrap();
        assert!(read_reply(&mut r).await.starts_with("354"));
        let mut stuffed = Vec::new();
        for line in data.split_inclusive(|b| *b == b'\n') {
            if line.starts_with(b".") {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        if !stuffed.ends_with(b"\n") {
            stuffed.extend_from_slice(b"\r\n"); // as Postfix does
        }
        stuffed.extend_from_slice(b".\r\n");
        w.write_all(&stuffed).await.unwrap();
        let mut out = Vec::new();
        for _ in rcpts {
            out.push(read_reply(&mut r).await);
        }
        w.write_all(b"QUIT\r\n").await.unwrap();
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest).await;
        out
    }

    fn verify(&self, rcpts: &[&str]) {
        let rcpts: Vec<String> = rcpts.iter().map(|s| s.to_string()).collect();
        let event = pec::store::LogEvent {
            pec_id: PEC_ID.into(),
            at: at(),
            kind: pec::store::EventKind::Issued(pec::message::kind::MessageKind::TakeCharge),
            sender: "alice@pec.example.it".into(),
            recipients: Vec::new(),
            subject: String::new(),
            related_ids: vec!["take-charge@pec.example.net".into()],
            provider: "test".into(),
            queue_id: None,
            outcome: "ok".into(),
            reason: None,
        };
        self.store.record_verified(PEC_ID, &rcpts, &event).unwrap();
    }

    /// Legal-log events about PEC_ID other than the reception point's presa in carico
    /// (which `verify` records): the delivery point's own.
    fn delivery_events(&self) -> Vec<pec::store::LogEvent> {
        self.store
            .events_for(PEC_ID)
            .unwrap()
            .into_iter()
            .filter(|e| {
                e.kind != pec::store::EventKind::Issued(pec::message::kind::MessageKind::TakeCharge)
            })
            .collect()
    }

    /// Every injected notice, classified.
    fn notices(&self) -> Vec<(Ricevuta, PecMessage, Vec<u8>)> {
        self.injector
            .messages()
            .into_iter()
            .filter(|m| m.rcpt_to == [SENDER.to_string()])
            .map(|m| {
                assert_eq!(m.mail_from, "posta-certificata@pec.example.it");
                assert_eq!(m.rcpt_to, vec![SENDER.to_string()]);
                match classify(&m.message, index().trust(), delivered_at()) {
                    Classification::Receipt(k, p) => (k, p, m.message),
                    other => panic!("not a valid receipt: {other:?}"),
                }
            })
            .collect()
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn breve_for_the_to_recipient_and_sintetica_for_the_cc_recipient() {
    let c = chain().await;
    c.verify(&[BOB, DAVE]);
    let env = envelope(true);
    let replies = c.postfix(&[BOB, DAVE], &env).await;
    assert!(replies[0].starts_with("250 2.0.0 <bob@"), "{replies:?}");
    assert!(replies[1].starts_with("250 2.0.0 <dave@"), "{replies:?}");

    // Dovecot got the envelope byte for byte, for both.
    let got = c.dovecot.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, SENDER);
    assert_eq!(got[0].1, vec![BOB.to_string(), DAVE.to_string()]);
    assert_eq!(got[0].2, env);

    let notices = c.notices();
    assert_eq!(notices.len(), 2);
    let (k, bob, raw) = &notices[0];
    assert_eq!(*k, Ricevuta::AvvenutaConsegna);
    assert_eq!(bob.daticert.consegna.as_deref(), Some(BOB));
    assert_eq!(bob.daticert.ricevuta, Some(ReceiptType::Breve));
    assert_eq!(bob.daticert.identificativo, PEC_ID);
    assert!(bob.has_postacert);
    assert!(
        contains(raw, "contratto.pdf.hash"),
        "attachments replaced by hashes"
    );
    assert!(contains(raw, "fattura.txt.hash"));
    let (k, dave, _) = &notices[1];
    assert_eq!(*k, Ricevuta::AvvenutaConsegna);
    assert_eq!(dave.daticert.consegna.as_deref(), Some(DAVE));
    assert_eq!(dave.daticert.ricevuta, Some(ReceiptType::Sintetica));
    assert!(!dave.has_postacert);

    // Logged, one event per recipient, with the receipt's Message-ID.
    let events = c.delivery_events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].kind,
        EventKind::Issued(MessageKind::Delivery(ReceiptType::Breve))
    );
    assert_eq!(
        events[1].kind,
        EventKind::Issued(MessageKind::Delivery(ReceiptType::Sintetica))
    );
    assert_eq!(
        Some(events[0].related_ids[0].clone()),
        bob.message_id.clone()
    );
    assert_eq!(events[0].at, delivered_at());
}

#[tokio::test]
async fn completa_carries_the_original_when_no_receipt_type_is_asked() {
    let c = chain().await;
    c.verify(&[BOB]);
    let replies = c.postfix(&[BOB], &envelope(false)).await;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let notices = c.notices();
    assert_eq!(notices.len(), 1);
    let (_, p, raw) = &notices[0];
    assert_eq!(p.daticert.ricevuta, Some(ReceiptType::Completa));
    assert!(p.has_postacert);
    assert!(!contains(raw, ".hash"));
}

#[tokio::test]
async fn per_recipient_mix_of_delivered_unknown_tempfail_and_full() {
    let c = chain().await;
    c.verify(&[BOB, DAVE, ERIN, FRANK]);
    {
        let mut s = c.dovecot.script.lock().unwrap();
        s.rcpt.insert(
            DAVE.into(),
            format!("550 5.1.1 <{DAVE}> User doesn't exist: {DAVE}"),
        );
        s.after.insert(
            ERIN.into(),
            format!("452 4.2.2 <{ERIN}> Quota exceeded (mailbox for user is full)"),
        );
        s.after.insert(
            FRANK.into(),
            format!("552 5.2.2 <{FRANK}> Quota exceeded (mailbox for user is full)"),
        );
    }
    let replies = c.postfix(&[BOB, DAVE, ERIN, FRANK], &envelope(true)).await;
    assert!(replies[0].starts_with("250 2.0.0 <bob@"), "{replies:?}");
    assert!(
        replies[1].starts_with("250 2.0.0"),
        "PEC notice instead of a DSN: {replies:?}"
    );
    assert!(replies[2].starts_with("452 4.2.2"), "{replies:?}");
    assert!(replies[3].starts_with("250 2.0.0"), "{replies:?}");

    let notices = c.notices();
    assert_eq!(
        notices.len(),
        3,
        "receipt for bob, notices for dave and frank"
    );
    let (k, p, _) = &notices[0];
    assert_eq!(
        (*k, p.daticert.consegna.as_deref()),
        (Ricevuta::AvvenutaConsegna, Some(BOB))
    );
    let (k, p, raw) = &notices[1];
    assert_eq!(*k, Ricevuta::ErroreConsegna);
    assert_eq!(p.daticert.consegna.as_deref(), Some(DAVE));
    assert_eq!(p.daticert.errore, Errore::NoDest);
    let coded = format!("5.1.1 - {PROVIDER} - indirizzo non valido");
    assert_eq!(p.daticert.errore_esteso.as_deref(), Some(coded.as_str()));
    assert!(contains(raw, "AVVISO DI MANCATA CONSEGNA"));
    let (k, p, _) = &notices[2];
    assert_eq!(*k, Ricevuta::ErroreConsegna);
    assert_eq!(p.daticert.consegna.as_deref(), Some(FRANK));
    assert_eq!(p.daticert.errore, Errore::Altro);
    let coded = format!("5.2.2 - {PROVIDER} - casella piena");
    assert_eq!(p.daticert.errore_esteso.as_deref(), Some(coded.as_str()));

    let events = c.delivery_events();
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Issued(MessageKind::Delivery(ReceiptType::Breve)),
            EventKind::Issued(MessageKind::NonDelivery),
            EventKind::Issued(MessageKind::NonDelivery),
        ]
    );
    assert_eq!(c.store.delivery_notice(PEC_ID, ERIN).unwrap(), None);
}

#[tokio::test]
async fn dovecot_dropping_the_connection_tempfails_and_the_retry_certifies() {
    let c = chain().await;
    c.verify(&[BOB, DAVE]);
    c.dovecot.script.lock().unwrap().drop_after_data = true;
    let env = envelope(true);
    let replies = c.postfix(&[BOB, DAVE], &env).await;
    assert!(
        replies.iter().all(|r| r.starts_with("451 4.4.2")),
        "{replies:?}"
    );
    assert!(c.injector.messages().is_empty());
    assert!(c.delivery_events().is_empty());

    c.dovecot.script.lock().unwrap().drop_after_data = false;
    let replies = c.postfix(&[BOB, DAVE], &env).await;
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    assert_eq!(c.notices().len(), 2);
}

#[tokio::test]
async fn dovecot_unreachable_tempfails_without_notices() {
    let c = chain().await;
    c.verify(&[BOB]);
    // A proxy pointed at a closed port.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = l.local_addr().unwrap().to_string();
    drop(l);
    let client = LmtpClient::new(LmtpAddr::Tcp(closed), "test".into());
    let replies = client
        .send(SENDER, &[BOB.to_string()], &envelope(true), false)
        .await;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].class(), 4);
}

#[tokio::test]
async fn a_repeated_delivery_gets_no_second_receipt() {
    let c = chain().await;
    c.verify(&[BOB]);
    let env = envelope(true);
    assert!(c.postfix(&[BOB], &env).await[0].starts_with("250"));
    // Postfix retries (e.g. we crashed before it read our 250): the delivery was recorded,
    // Dovecot does not get it again, the claim refuses a second receipt.
    assert!(c.postfix(&[BOB], &env).await[0].starts_with("250"));
    assert_eq!(c.dovecot.got.lock().unwrap().len(), 1);
    assert_eq!(c.notices().len(), 1);
    assert_eq!(c.delivery_events().len(), 1);
}

#[tokio::test]
async fn a_failed_injection_tempfails_and_does_not_block_the_retry() {
    let c = chain().await;
    c.verify(&[BOB, FRANK]);
    c.dovecot
        .script
        .lock()
        .unwrap()
        .after
        .insert(FRANK.into(), format!("552 5.2.2 <{FRANK}> Mailbox is full"));
    *c.injector.fail_with.lock().unwrap() = Some(InjectError::Temporary {
        addr: "test".into(),
        reason: "421 down".into(),
    });
    let env = envelope(true);
    let replies = c.postfix(&[BOB, FRANK], &env).await;
    assert!(replies.iter().all(|r| r.starts_with("451")), "{replies:?}");
    // Built, signed and recorded with their events before the injection (the outbox).
    assert_eq!(c.delivery_events().len(), 2);

    *c.injector.fail_with.lock().unwrap() = None;
    let replies = c.postfix(&[BOB, FRANK], &env).await;
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    // The retry builds no new notice: the outbox sweep injects the staged ones.
    assert!(c.notices().is_empty());
    assert_eq!(c.delivery_events().len(), 2);
    let store: Arc<dyn Store> = c.store.clone();
    let clock = FixedClock::new(Instant::from_unix(delivered_at().unix() + 60));
    let sent = pec::outbox::sweep_once(&store, &*c.injector, &clock)
        .await
        .unwrap();
    assert_eq!(sent, 2);
    let kinds: Vec<_> = c.notices().iter().map(|n| n.0).collect();
    assert_eq!(
        kinds,
        vec![Ricevuta::AvvenutaConsegna, Ricevuta::ErroreConsegna]
    );
}

#[tokio::test]
async fn an_unverified_envelope_is_only_proxied() {
    let c = chain().await;
    c.verify(&[BOB]); // verified for bob only
    c.dovecot.script.lock().unwrap().rcpt.insert(
        DAVE.into(),
        format!("550 5.1.1 <{DAVE}> User doesn't exist: {DAVE}"),
    );
    let env = envelope(true);
    let replies = c.postfix(&[ERIN, DAVE], &env).await;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    assert!(
        replies[1].starts_with("550 5.1.1"),
        "passed through: {replies:?}"
    );
    assert!(c.injector.messages().is_empty());
    assert_eq!(c.dovecot.got.lock().unwrap()[0].2, env);
}

#[tokio::test]
async fn ordinary_mail_is_proxied_byte_for_byte() {
    let c = chain().await;
    c.verify(&[BOB]);
    let mut mail = fixture("ordinary.eml");
    mail.extend_from_slice(b".leading dot\r\n..two\r\n.\r\nlast line without end");
    let replies = c.postfix(&[BOB], &mail).await;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let mut want = mail.clone();
    want.extend_from_slice(b"\r\n"); // the client (Postfix here) ends the last line
    assert_eq!(c.dovecot.got.lock().unwrap()[0].2, want);
    assert!(c.injector.messages().is_empty());
}

#[tokio::test]
async fn a_store_failure_tempfails_every_recipient_before_delivery() {
    let c = chain().await;
    c.store.fail.store(true, Ordering::SeqCst);
    let replies = c.postfix(&[BOB, DAVE], &envelope(true)).await;
    assert!(replies.iter().all(|r| r.starts_with("451")), "{replies:?}");
    assert!(c.dovecot.got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn arrival_notices_go_to_the_configured_address_for_chosen_senders() {
    let c = chain_with(true).await;
    c.verify(&[BOB, DAVE, ERIN]);
    let to_bob = ArrivalNotice {
        notify: "bob@gmail.example".into(),
        senders: vec![],
    };
    c.store.set_arrival_notice(BOB, Some(&to_bob)).unwrap();
    let only_carl = ArrivalNotice {
        notify: "dave@gmail.example".into(),
        senders: vec!["carl@pec.example.it".into()],
    };
    c.store.set_arrival_notice(DAVE, Some(&only_carl)).unwrap();
    let replies = c.postfix(&[BOB, DAVE, ERIN], &envelope(true)).await;
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    assert_eq!(c.notices().len(), 3);
    let arrivals: Vec<_> = c
        .injector
        .messages()
        .into_iter()
        .filter(|m| m.rcpt_to != [SENDER.to_string()])
        .collect();
    assert_eq!(
        arrivals.len(),
        1,
        "only bob's (dave's is for another sender)"
    );
    assert_eq!(arrivals[0].rcpt_to, vec!["bob@gmail.example".to_string()]);
    let text = String::from_utf8(arrivals[0].message.clone()).unwrap();
    assert!(text.contains("Mittente: alice@pec.example.it"), "{text}");
    assert!(!text.contains("contratto.pdf"), "never the content");
    // A repeated delivery sends neither a receipt nor an arrival notice again.
    c.postfix(&[BOB], &envelope(true)).await;
    assert_eq!(c.injector.messages().len(), 4);
}

#[tokio::test]
async fn dovecot_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let dovecot = Arc::new(FakeDovecot::default());
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    let d = dovecot.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(d.clone().session(s));
        }
    });
    let client = LmtpClient::new(LmtpAddr::Unix(path), "test".into());
    let data = b"Subject: x\r\n\r\n.dot\r\n".to_vec();
    let replies = client
        .send(SENDER, &[BOB.to_string(), DAVE.to_string()], &data, true)
        .await;
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r.code == 250), "{replies:?}");
    assert_eq!(dovecot.got.lock().unwrap()[0].2, data);
}

#[tokio::test]
async fn the_lmtp_client_pipelines_mail_and_rcpts() {
    // An LMTP server that reads MAIL and both RCPTs before it answers any (RFC 2033 makes
    // PIPELINING mandatory): a client that waited for each reply would wait forever. Dave
    // is refused at RCPT; bob's delivery goes on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut seen = Vec::new();
        let mut line = String::new();
        w.write_all(b"220 fake\r\n").await.unwrap();
        r.read_line(&mut line).await.unwrap();
        w.write_all(b"250-fake\r\n250 PIPELINING\r\n")
            .await
            .unwrap();
        for _ in 0..3 {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            seen.push(line.trim_end().to_string());
        }
        w.write_all(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 <dave> unknown\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        seen.push(line.trim_end().to_string());
        w.write_all(b"354 go\r\n").await.unwrap();
        loop {
            let mut buf = Vec::new();
            r.read_until(b'\n', &mut buf).await.unwrap();
            if buf == b".\r\n" {
                break;
            }
        }
        w.write_all(b"250 2.0.0 <bob> Saved\r\n").await.unwrap();
        seen
    });
    let client = LmtpClient::new(LmtpAddr::Tcp(addr.to_string()), "test".into()).with_timeouts(
        LmtpTimeouts {
            connect: Duration::from_secs(2),
            command: Duration::from_secs(5),
            data_end: Duration::from_secs(10),
        },
    );
    let replies = client
        .send(
            SENDER,
            &[BOB.to_string(), DAVE.to_string()],
            b"Subject: x\r\n\r\nx\r\n",
            false,
        )
        .await;
    assert_eq!(replies[0].code, 250, "{replies:?}");
    assert_eq!(replies[1].code, 550, "{replies:?}");
    assert_eq!(
        server.await.unwrap(),
        vec![
            format!("MAIL FROM:<{SENDER}>"),
            format!("RCPT TO:<{BOB}>"),
            format!("RCPT TO:<{DAVE}>"),
            "DATA".to_string(),
        ]
    );
}

#[tokio::test]
async fn the_lmtp_client_keeps_its_connection_and_replaces_a_closed_one() {
    let dovecot = Arc::new(FakeDovecot::default());
    let dl = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let daddr = dl.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (d, n) = (dovecot.clone(), accepted.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = dl.accept().await {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(d.clone().session(s));
        }
    });
    let client = LmtpClient::new(LmtpAddr::Tcp(daddr), "test".into());
    let data = b"Subject: x\r\n\r\nx\r\n".to_vec();
    for _ in 0..3 {
        let replies = client.send(SENDER, &[BOB.to_string()], &data, false).await;
        assert_eq!(replies[0].code, 250, "{replies:?}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(dovecot.got.lock().unwrap().len(), 3);
    // The server drops the session after the next data: that delivery fails (4xx, Postfix
    // retries) and the one after it finds no kept connection, or a dead one, and opens a
    // new one.
    dovecot.script.lock().unwrap().drop_after_data = true;
    let replies = client.send(SENDER, &[BOB.to_string()], &data, false).await;
    assert_eq!(replies[0].class(), 4, "{replies:?}");
    dovecot.script.lock().unwrap().drop_after_data = false;
    let replies = client.send(SENDER, &[BOB.to_string()], &data, false).await;
    assert_eq!(replies[0].code, 250, "{replies:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(dovecot.got.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_mailbox_that_does_not_receive_gets_a_casella_disattivata_notice() {
    use pec::store::{MailboxSettings, MailboxState, Retired};
    let c = chain().await;
    c.verify(&[BOB, DAVE, ERIN, FRANK]);
    for (who, state) in [
        (DAVE, MailboxState::Suspended),
        (ERIN, MailboxState::ReadOnly),
    ] {
        let s = MailboxSettings {
            state,
            ..MailboxSettings::default()
        };
        c.store
            .set_mailbox_settings(&who.to_uppercase(), &s)
            .unwrap();
    }
    c.store
        .retire_mailbox(&Retired {
            mailbox: FRANK.into(),
            holder: "RSSMRA80A01H501U".into(),
            at: at(),
        })
        .unwrap();
    let replies = c.postfix(&[BOB, DAVE, ERIN, FRANK], &envelope(true)).await;
    assert!(replies[0].starts_with("250 2.0.0 <bob@"), "{replies:?}");
    for r in &replies[1..] {
        assert!(
            r.starts_with("250 2.0.0"),
            "PEC notice instead of a DSN: {replies:?}"
        );
        assert!(
            r.contains("Non-delivery notice sent (550 5.2.1"),
            "{replies:?}"
        );
    }
    // Only bob's copy reached Dovecot.
    let got = c.dovecot.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec![BOB.to_string()]);
    let notices = c.notices();
    assert_eq!(notices.len(), 4);
    assert_eq!(notices[0].0, Ricevuta::AvvenutaConsegna);
    let coded = format!("5.2.1 - {PROVIDER} - casella disattivata");
    for (who, (k, p, _)) in [DAVE, ERIN, FRANK].iter().zip(&notices[1..]) {
        assert_eq!(*k, Ricevuta::ErroreConsegna);
        assert_eq!(p.daticert.consegna.as_deref(), Some(*who));
        assert_eq!(p.daticert.errore, Errore::Altro);
        assert_eq!(p.daticert.errore_esteso.as_deref(), Some(coded.as_str()));
    }
}

#[tokio::test]
async fn arrival_notices_go_to_every_address_given() {
    let c = chain_with(true).await;
    c.verify(&[BOB]);
    let two = ArrivalNotice {
        notify: "bob@gmail.example, segreteria@example.org".into(),
        senders: vec![],
    };
    c.store.set_arrival_notice(BOB, Some(&two)).unwrap();
    let replies = c.postfix(&[BOB], &envelope(true)).await;
    assert!(replies[0].starts_with("250"), "{replies:?}");
    let arrivals: Vec<_> = c
        .injector
        .messages()
        .into_iter()
        .filter(|m| m.rcpt_to != [SENDER.to_string()])
        .collect();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(
        arrivals[0].rcpt_to,
        vec![
            "bob@gmail.example".to_string(),
            "segreteria@example.org".to_string()
        ]
    );
    let text = String::from_utf8(arrivals[0].message.clone()).unwrap();
    assert!(
        text.contains("To: bob@gmail.example, segreteria@example.org\r\n"),
        "{text}"
    );
}
