// SPDX-License-Identifier: GPL-3.0-or-later
//! Hostile input, each attack with its asserted outcome (the table is tests/HOSTILE.md).
//! Attacks already covered elsewhere are listed there with their test; this file holds the
//! rest. In process: the reception point (`AfterQueue`) with the in-memory store and a
//! recording injector, the builders, and the SMTP/LMTP session loops over an in-memory
//! pipe. Provider A is pec.example.it, provider B (us, unless said otherwise) is
//! pec.example.net, both signed by the test PKI.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pec::crypto::{smime, Signer};
use pec::message::breve::breve_original;
use pec::message::build::{Certification, Generated, OriginalInfo};
use pec::message::classify::{classify, Classification};
use pec::message::kind::{RecipientType, Ricevuta};
use pec::message::mime::base64_lines;
use pec::reception::Local;
use pec::smtp::lmtp::{self, LmtpHandler, LmtpServerOptions, Reply};
use pec::smtp::server::{serve_stream, FilterHandler, ServerOptions};
use pec::smtp::{FilterReply, Transaction};
use pec::store::{Store, TrackingState};
use pec::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::two_providers;
use two_providers::*;

fn envelope_a_to_b(original: &[u8]) -> (Generated, Certification) {
    let info = OriginalInfo::parse(original).unwrap();
    let cert = Certification::for_submission(
        &info,
        "alice@pec.example.it",
        &[("bob@pec.example.net".into(), RecipientType::Certificato)],
        A_ID,
    );
    let env = Provider::A.build(|b| b.transport_envelope(original, &cert, at()).unwrap());
    (env, cert)
}

/// A message signed by `signer` whose signed content is the usual envelope shape with
/// `xml` as daticert, under the header `class` (e.g. `X-Trasporto: posta-certificata`).
fn signed_with_daticert(signer: &dyn Signer, class: &str, xml: &[u8]) -> Vec<u8> {
    let mut entity = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nMessaggio di posta certificata\r\n--b1\r\nContent-Type: message/rfc822; name=\"postacert.eml\"\r\nContent-Disposition: inline; filename=\"postacert.eml\"\r\n\r\n".to_vec();
    entity.extend_from_slice(&fixture("ordinary.eml"));
    entity.extend_from_slice(b"\r\n--b1\r\nContent-Type: application/xml; name=\"daticert.xml\"\r\nContent-Disposition: inline; filename=\"daticert.xml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    entity.extend_from_slice(&base64_lines(xml));
    entity.extend_from_slice(b"\r\n--b1--\r\n");
    let sealed = smime::seal(signer, &entity, at()).unwrap();
    let mut out = format!("From: \"Per conto di: alice@pec.example.it\" <posta-certificata@pec.example.it>\r\nTo: bob@pec.example.net\r\nSubject: POSTA CERTIFICATA: x\r\nMessage-ID: <opec1.h@pec.example.it>\r\n{class}\r\n").into_bytes();
    for (n, v) in sealed.headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&sealed.body);
    out
}

fn daticert(tipo: &str, mittente: &str) -> Vec<u8> {
    format!(r#"<?xml version="1.0" encoding="UTF-8"?>
<postacert tipo="{tipo}" errore="nessuno"><intestazione><mittente>{mittente}</mittente><destinatari tipo="certificato">bob@pec.example.net</destinatari><risposte>{mittente}</risposte><oggetto>x</oggetto></intestazione><dati><gestore-emittente>PEC Example IT S.p.A.</gestore-emittente><data zona="+0200"><giorno>03/06/2025</giorno><ora>10:11:12</ora></data><identificativo>opec1.h@pec.example.it</identificativo><msgid>&lt;x@y&gt;</msgid><ricevuta tipo="completa"/></dati></postacert>"#).into_bytes()
}

/// Asserts that `data` to bob was wrapped in an anomaly envelope (and nothing else was
/// sent), and that the reason mentions `why`.
async fn assert_anomaly(r: &Rx, data: &[u8], why: &str) {
    let before = r.sent().len();
    match r
        .local("alice@pec.example.it", &["bob@pec.example.net"], data)
        .await
    {
        Local::NotPec { reason, .. } => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected an anomaly ({why}), got {other:?}"),
    }
    let sent = r.sent();
    assert_eq!(sent.len(), before + 1);
    assert_eq!(
        header(&sent[before].message, "X-Trasporto").as_deref(),
        Some("errore")
    );
    assert_eq!(sent[before].rcpt_to, vec!["bob@pec.example.net"]);
}

#[tokio::test]
async fn an_altered_daticert_under_a_valid_signature_is_an_anomaly() {
    let r = rx(Provider::B);
    // 1. A's genuine envelope, one character of its (base64) daticert changed afterwards:
    //    the signature no longer matches.
    let (env, _) = envelope_a_to_b(&fixture("ordinary.eml"));
    let mut data = env.to_bytes();
    let part = find(&data, b"name=\"daticert.xml\"").unwrap();
    let body = part + find(&data[part..], b"\r\n\r\n").unwrap() + 4;
    data[body + 10] = if data[body + 10] == b'A' { b'B' } else { b'A' };
    assert_anomaly(&r, &data, "signature").await;

    // 2. Signed by A, but the daticert says "accettazione" under X-Trasporto.
    let data = signed_with_daticert(
        &*pki().it,
        "X-Trasporto: posta-certificata",
        &daticert("accettazione", "alice@pec.example.it"),
    );
    assert_anomaly(&r, &data, "does not match").await;

    // 3. Signed by A for a sender of B's domain: A cannot certify B's users.
    let data = signed_with_daticert(
        &*pki().it,
        "X-Trasporto: posta-certificata",
        &daticert("posta-certificata", "mallory@pec.example.net"),
    );
    assert_anomaly(&r, &data, "pec.example.net").await;

    // Nothing was taken in charge.
    assert!(!r.store.is_verified(A_ID, "bob@pec.example.net").unwrap());
    assert!(r
        .sent()
        .iter()
        .all(|m| m.rcpt_to == ["bob@pec.example.net"]));
}

/// An original whose Subject decodes to text with CR LF and a would-be `Bcc:` field, and
/// with XML markup in it, from a sender whose Reply-To tries the same.
fn injecting_original() -> Vec<u8> {
    b"From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\n\
Subject: =?utf-8?Q?ciao=0D=0ABcc:_eve@example.org=0D=0A=0D=0Abody?= </oggetto><mittente>eve@pec.example.it</mittente>\r\n\
Reply-To: \"x\r\n Bcc: eve@example.org\" <alice@pec.example.it>\r\n\
Date: Tue, 3 Jun 2025 10:11:09 +0200\r\nMessage-ID: <inj@client>\r\n\r\nciao\r\n"
        .to_vec()
}

#[tokio::test]
async fn header_injection_through_the_subject_and_addresses_stays_inside_its_field() {
    let original = injecting_original();
    let info = OriginalInfo::parse(&original).unwrap();
    assert!(
        info.subject.contains("\r\nBcc:") || info.subject.contains("\nBcc:"),
        "the decoded subject carries the line break: {:?}",
        info.subject
    );
    let (env, cert) = envelope_a_to_b(&original);
    let receipt_to = "alice@pec.example.it";
    let generated = vec![
        ("envelope", env),
        (
            "acceptance",
            Provider::A.build(|b| b.acceptance(&cert, at()).unwrap()),
        ),
        (
            "take charge",
            Provider::B.build(|b| {
                b.take_charge(
                    &cert,
                    at(),
                    &["bob@pec.example.net".into()],
                    &Provider::A.mail_receipt(),
                )
                .unwrap()
            }),
        ),
        (
            "delivery",
            Provider::B.build(|b| {
                b.delivery(&cert, at(), "bob@pec.example.net", &original)
                    .unwrap()
            }),
        ),
        (
            "anomaly",
            Provider::B.build(|b| {
                b.anomaly_envelope(
                    &original,
                    receipt_to,
                    &["bob@pec.example.net".into()],
                    at(),
                    "test",
                )
                .unwrap()
            }),
        ),
    ];
    for (what, g) in generated {
        let raw = g.to_bytes();
        let names = header_names(&raw);
        assert!(!names.contains(&"bcc".to_string()), "{what}: {names:?}");
        for once in ["subject", "from", "to", "message-id"] {
            assert!(
                names.iter().filter(|n| *n == once).count() <= 1,
                "{what}: {once} twice in {names:?}"
            );
        }
        // The daticert keeps the subject as data: it parses back to the same text.
        match classify(&raw, index().trust(), now()) {
            Classification::TransportEnvelope(m) | Classification::Receipt(_, m) => {
                assert_eq!(
                    m.daticert.oggetto.as_deref(),
                    Some(info.subject.as_str()),
                    "{what}"
                );
                assert_eq!(m.daticert.mittente, "alice@pec.example.it", "{what}");
            }
            Classification::SignedButWrong { reason, .. } if what == "anomaly" => {
                assert!(reason.contains("X-Trasporto"), "{reason}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// A multipart/mixed message of `n` small attachments.
fn many_parts(n: usize) -> Vec<u8> {
    let mut m = b"From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: parts\r\nMessage-ID: <parts@client>\r\nDate: Tue, 3 Jun 2025 10:11:09 +0200\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n".to_vec();
    for i in 0..n {
        m.extend_from_slice(
            format!(
                "--p\r\nContent-Type: application/octet-stream; name=\"f{i}.bin\"\r\nContent-Disposition: attachment; filename=\"f{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"--p--\r\n");
    m
}

#[tokio::test]
async fn ten_thousand_mime_parts_are_handled_whole() {
    let original = many_parts(10_000);
    // Breve: every part replaced by its hash.
    let b = breve_original(&original).unwrap();
    assert_eq!(b.hashes.len(), 10_000);
    assert_eq!(b.hashes[9_999].file_name, "f9999.bin");

    let r = rx(Provider::B);
    // Unsigned: an anomaly, no panic.
    assert_anomaly(&r, &original, "").await;
    // Inside A's envelope: taken in charge and delivered like any other.
    let (env, _) = envelope_a_to_b(&original);
    match r
        .local(
            "alice@pec.example.it",
            &["bob@pec.example.net"],
            &env.to_bytes(),
        )
        .await
    {
        Local::TakenInCharge { pec_id, .. } => assert_eq!(pec_id, A_ID),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn nul_bytes_are_wrapped_or_carried_never_a_failure() {
    let r = rx(Provider::B);
    // Received with NUL bytes in the header and the body (Postfix passes them by default).
    let with_nul = b"From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: a\0b\r\nX-Nul: \0\0\r\nMessage-ID: <nul@client>\r\n\r\nbody \0 with\0 NUL\r\n".to_vec();
    assert_eq!(
        r.run("x@example.org", &["bob@pec.example.net"], &with_nul)
            .await,
        FilterReply::Accept
    );
    let sent = r.sent();
    assert_eq!(sent.len(), 1);
    let m = &sent[0].message;
    assert_eq!(header(m, "X-Trasporto").as_deref(), Some("errore"));
    // Our own header is clean; the body's NULs are quoted-printable encoded; the received
    // header is carried byte for byte inside postacert.eml, labelled 8bit, not 7bit.
    let names = header_names(m);
    assert!(names.contains(&"x-trasporto".to_string()));
    let top = find(m, b"\r\n\r\n").unwrap();
    assert!(!m[..top].contains(&0), "no NUL in the generated header");
    assert!(find(m, b"body =00 with=00 NUL").is_some());
    let part = find(m, b"name=\"postacert.eml\"").unwrap();
    let part_head = &m[part..part + find(&m[part..], b"\r\n\r\n").unwrap()];
    assert!(find(part_head, b"Content-Transfer-Encoding: 8bit").is_some());
    assert!(find(m, b"Subject: a\0b").is_some());

    // Submitted with NULs in the body (the milter never sees NUL in a header): A's
    // envelope carries them encoded, and it is taken in charge here.
    let body_nul = b"From: alice@pec.example.it\r\nTo: bob@pec.example.net\r\nSubject: nul\r\nMessage-ID: <nul@client>\r\n\r\nbody \0 with\0 NUL\r\n".to_vec();
    let (env, _) = envelope_a_to_b(&body_nul);
    assert!(!env.to_bytes().contains(&0));
    assert!(matches!(
        r.local(
            "alice@pec.example.it",
            &["bob@pec.example.net"],
            &env.to_bytes()
        )
        .await,
        Local::TakenInCharge { .. }
    ));
}
#[tokio::test]
async fn a_receipt_replayed_to_another_mailbox_is_an_anomaly() {
    let r = rx(Provider::B);
    let cert = our_envelope_b_to_a(&r.store);
    let receipt = Provider::A.build(|b| {
        b.delivery(
            &cert,
            at(),
            "alice@pec.example.it",
            &fixture("ordinary.eml"),
        )
        .unwrap()
    });
    let data = receipt.to_bytes();
    // The genuine delivery, to bob: tracking moves once.
    match r
        .local(&receipt.mail_from, &["bob@pec.example.net"], &data)
        .await
    {
        Local::Receipt {
            kind,
            tracking_updated,
            notices,
            ..
        } => {
            assert_eq!(kind, Ricevuta::AvvenutaConsegna);
            assert_eq!(tracking_updated, 1);
            assert!(notices.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // The same bytes replayed to mallory (case 7 of tests/HOSTILE.md): a receipt is
    // delivered only to the sender it names; for mallory it is not valid PEC, wrapped in an
    // anomaly envelope, and it certifies nothing new and triggers nothing.
    match r
        .local(&receipt.mail_from, &["mallory@pec.example.net"], &data)
        .await
    {
        Local::NotPec {
            reason, anomaly, ..
        } => {
            assert!(reason.contains("mallory@pec.example.net"), "{reason}");
            assert!(anomaly.is_some());
        }
        other => panic!("{other:?}"),
    }
    let sent = r.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].rcpt_to, vec!["mallory@pec.example.net"]);
    assert_ne!(sent[1].message, data, "not passed on as a receipt");
    assert_eq!(
        header(&sent[1].message, "X-Trasporto").as_deref(),
        Some("errore")
    );
    let rows = r.store.tracking_for(B_ID).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, TrackingState::Delivered);
}

// ---------------------------------------------------------------------------------------
// The SMTP and LMTP front ends: whatever the client sends, a defined reply.

struct Accepting;

impl FilterHandler for Accepting {
    fn handle<'a>(&'a self, _tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        Box::pin(async { FilterReply::Accept })
    }
}

struct Delivering;

impl LmtpHandler for Delivering {
    fn deliver<'a>(&'a self, tx: &'a lmtp::Transaction) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            tx.rcpt_to
                .iter()
                .map(|_| Reply::new(250, "2.0.0 Ok"))
                .collect()
        })
    }
}

/// Sends `input` to a session served by `serve` over an in-memory pipe, closes, and
/// returns everything the server answered.
async fn talk<F, Fut>(input: &[u8], serve: F) -> String
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, server) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(serve(server));
    let (mut rd, mut wr) = tokio::io::split(client);
    let write = async {
        let _ = wr.write_all(input).await;
        let _ = wr.shutdown().await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let (_, out) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(write, read) })
            .await
            .expect("the session ends");
    session.await.expect("no panic");
    String::from_utf8(out).expect("replies are text")
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 2525))
}

#[tokio::test]
async fn smtp_and_lmtp_sessions_answer_nul_bytes_long_lines_and_garbage() {
    let mut input = b"EHLO x\0y\r\nMAIL FROM:<a\0@b>\r\n\0\0\0\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'A', 1 << 20));
    input.extend_from_slice(b"\r\n\xff\xfe garbage\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\0y\r\n.\r\nQUIT\r\n");
    let smtp = talk(&input, |s| {
        serve_stream(s, peer(), Arc::new(Accepting), ServerOptions::default())
    })
    .await;
    assert!(smtp.starts_with("220 "), "{smtp}");
    assert!(smtp.contains("500 5.5.2 Line too long"), "{smtp}");
    assert!(smtp.contains("\r\n250 2.0.0 Ok\r\n221 "), "{smtp}");

    let lmtp_input = String::from_utf8_lossy(&input).replace("EHLO", "LHLO");
    let lmtp_out = talk(lmtp_input.as_bytes(), |s| {
        lmtp::serve_stream(
            s,
            peer(),
            Arc::new(Delivering),
            LmtpServerOptions::default(),
        )
    })
    .await;
    assert!(lmtp_out.starts_with("220 "), "{lmtp_out}");
    assert!(lmtp_out.contains("500 5.5.2 Line too long"), "{lmtp_out}");
    assert!(
        lmtp_out.ends_with("250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n"),
        "{lmtp_out}"
    );
}
