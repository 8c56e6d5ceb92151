// SPDX-License-Identifier: GPL-3.0-or-later
//! The LMTP server of the delivery point, at the protocol level, with a scripted handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pec::smtp::lmtp::{serve, serve_stream, LmtpHandler, LmtpServerOptions, Reply, Transaction};
use pec::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Answers each recipient with the scripted reply (or panics when told to).
struct Scripted {
    replies: Vec<Reply>,
    panic: bool,
    got: Mutex<Vec<Transaction>>,
}

impl LmtpHandler for Scripted {
    fn deliver<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            self.got.lock().unwrap().push(tx.clone());
            if self.panic {
                panic!("handler bug");
            }
            self.replies.clone()
        })
    }
}

async fn run(handler: Arc<Scripted>) -> (String, oneshot::Sender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (stop, rx) = oneshot::channel::<()>();
    let opts = LmtpServerOptions {
        hostname: "test".into(),
        shutdown_grace: Duration::from_secs(1),
        ..LmtpServerOptions::default()
    };
    tokio::spawn(serve(l, handler, opts, async move {
        let _ = rx.await;
    }));
    (addr, stop)
}

/// Sends `script` in one write (pipelined) and returns everything the server said until
/// it closed the connection.
async fn talk(addr: &str, script: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(script.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

const TX: &str = "LHLO postfix\r\nMAIL FROM:<a@x.it> BODY=8BITMIME\r\nRCPT TO:<b@y.it>\r\n\
RCPT TO:<c@y.it>\r\nDATA\r\nSubject: t\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";

#[tokio::test]
async fn pipelined_transaction_gets_one_reply_per_recipient_in_order() {
    let h = Arc::new(Scripted {
        replies: vec![
            Reply::new(250, "2.0.0 <b@y.it> Saved"),
            Reply::new(452, "4.2.2 <c@y.it> Mailbox full"),
        ],
        panic: false,
        got: Mutex::new(Vec::new()),
    });
    let (addr, _stop) = run(h.clone()).await;
    let out = talk(&addr, TX).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("220 "), "{out}");
    assert!(out.contains("250-PIPELINING"), "{out}");
    assert!(out.contains("250 ENHANCEDSTATUSCODES"), "{out}");
    assert!(!out.contains("CHUNKING"), "{out}");
    let after = out.split("354 ").nth(1).unwrap();
    let replies: Vec<&str> = after.lines().skip(1).collect();
    assert_eq!(
        replies,
        vec![
            "250 2.0.0 <b@y.it> Saved",
            "452 4.2.2 <c@y.it> Mailbox full",
            "221 2.0.0 Bye"
        ]
    );
    let got = h.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "a@x.it");
    assert_eq!(got[0].rcpt_to, vec!["b@y.it", "c@y.it"]);
    assert!(got[0].eight_bit);
    assert_eq!(&got[0].data[..], b"Subject: t\r\n\r\n.dot\r\nbody\r\n");
}

#[tokio::test]
async fn a_panicking_or_miscounting_handler_gives_451_to_every_recipient_left() {
    for (replies, panic) in [(vec![], true), (vec![Reply::new(250, "2.0.0 ok")], false)] {
        let h = Arc::new(Scripted {
            replies,
            panic,
            got: Mutex::new(Vec::new()),
        });
        let (addr, _stop) = run(h).await;
        let out = talk(&addr, TX).await;
        let after = out.split("354 ").nth(1).unwrap();
        let replies: Vec<&str> = after.lines().skip(1).collect();
        assert_eq!(replies.len(), 3, "{out}");
        assert!(replies[1].starts_with("451 4.3.0"), "{out}");
        if panic {
            assert!(replies[0].starts_with("451 4.3.0"), "{out}");
        } else {
            assert_eq!(replies[0], "250 2.0.0 ok");
        }
    }
}

#[tokio::test]
async fn smtp_greetings_and_out_of_order_commands_are_refused() {
    let h = Arc::new(Scripted {
        replies: vec![],
        panic: false,
        got: Mutex::new(Vec::new()),
    });
    let (addr, _stop) = run(h.clone()).await;
    let out = talk(
        &addr,
        "EHLO x\r\nMAIL FROM:<a@x.it>\r\nLHLO x\r\nDATA\r\nRCPT TO:<b@y.it>\r\nBDAT 3 LAST\r\nNOOP\r\nRSET\r\nQUIT\r\n",
    )
    .await;
    let codes: Vec<&str> = out.lines().map(|l| &l[..3]).collect();
    assert_eq!(codes[0], "220");
    assert_eq!(codes[1], "500", "EHLO: {out}");
    assert_eq!(codes[2], "503", "MAIL before LHLO: {out}");
    let rest: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("250 ENHANCEDSTATUSCODES"))
        .skip(1)
        .map(|l| &l[..3])
        .collect();
    assert_eq!(
        rest,
        vec!["503", "503", "502", "250", "250", "221"],
        "{out}"
    );
    assert!(h.got.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_session_runs_on_any_byte_stream() {
    let h = Arc::new(Scripted {
        replies: vec![
            Reply::new(250, "2.0.0 Saved"),
            Reply::new(250, "2.0.0 Saved"),
        ],
        panic: false,
        got: Mutex::new(Vec::new()),
    });
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(serve_stream(
        server,
        "127.0.0.1:1".parse().unwrap(),
        h.clone(),
        LmtpServerOptions::default(),
    ));
    client.write_all(TX.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    session.await.unwrap();
    assert!(out.ends_with("221 2.0.0 Bye\r\n"), "{out}");
    assert_eq!(out.matches("250 2.0.0 Saved").count(), 2, "{out}");
    let got = h.got.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].data[..], b"Subject: t\r\n\r\n.dot\r\nbody\r\n");
}

#[tokio::test]
async fn the_client_probe_greets_with_lhlo_and_leaves() {
    let h = Arc::new(Scripted {
        replies: Vec::new(),
        panic: false,
        got: Mutex::new(Vec::new()),
    });
    let (addr, stop) = run(h.clone()).await;
    let client =
        pec::smtp::lmtp::LmtpClient::new(pec::smtp::lmtp::LmtpAddr::Tcp(addr), "pec-check".into());
    client.probe().await.unwrap();
    assert!(h.got.lock().unwrap().is_empty());
    let _ = stop.send(());

    let refused = pec::smtp::lmtp::LmtpClient::new(
        pec::smtp::lmtp::LmtpAddr::Tcp("127.0.0.1:9".into()),
        "pec-check".into(),
    );
    let e = refused.probe().await.unwrap_err();
    assert!(e.starts_with("connect to 127.0.0.1:9"), "{e}");
}
