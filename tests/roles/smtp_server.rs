// SPDX-License-Identifier: GPL-3.0-or-later
//! The content-filter SMTP server, driven by `SmtpInjector` and by raw scripted clients.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pec::smtp::{
    serve, ClientTimeouts, FilterHandler, FilterReply, InjectError, ServerOptions, SmtpInjector,
    Transaction,
};
use pec::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// How the recording handler answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Accept,
    Tempfail,
    Reject,
    /// Panics on the first call, accepts afterwards.
    PanicOnce,
    /// Waits for a while before accepting.
    Slow,
}

struct Recorder {
    mode: Mode,
    seen: Mutex<Vec<Transaction>>,
    panicked: Mutex<bool>,
}

impl Recorder {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Recorder {
            mode,
            seen: Mutex::new(Vec::new()),
            panicked: Mutex::new(false),
        })
    }
    fn seen(&self) -> Vec<Transaction> {
        self.seen.lock().unwrap().clone()
    }
}

impl FilterHandler for Recorder {
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        Box::pin(async move {
            self.seen.lock().unwrap().push(tx.clone());
            match self.mode {
                Mode::Accept => FilterReply::Accept,
                Mode::Tempfail => FilterReply::Tempfail("store\r\nunavailable".into()),
                Mode::Reject => FilterReply::Reject("not wanted".into()),
                Mode::PanicOnce => {
                    let first = {
                        let mut p = self.panicked.lock().unwrap();
                        !std::mem::replace(&mut *p, true)
                    };
                    if first {
                        panic!("handler bug");
                    }
                    FilterReply::Accept
                }
                Mode::Slow => {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    FilterReply::Accept
                }
            }
        })
    }
}

struct Server {
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), self.done)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}

async fn start(handler: Arc<Recorder>, opts: ServerOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, handler, opts, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        done,
    }
}

fn opts() -> ServerOptions {
    ServerOptions {
        hostname: "filter.test".into(),
        max_message_size: 100_000,
        shutdown_grace: Duration::from_secs(2),
        ..ServerOptions::default()
    }
}

fn injector(addr: &str) -> SmtpInjector {
    SmtpInjector::new(addr.to_string(), "postfix.test".into()).with_timeouts(ClientTimeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_secs(2),
        data_end: Duration::from_secs(5),
    })
}

/// A raw SMTP client: sends lines, reads whole replies.
struct Raw {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Raw {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    /// One reply, all its lines joined with '\n'; empty at end of stream.
    async fn reply(&mut self) -> String {
        let mut all = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(5), self.r.read_line(&mut line))
                .await
                .expect("reply in time")
                .unwrap();
            if n == 0 {
                return all.join("\n");
            }
            let line = line.trim_end().to_string();
            let more = line.as_bytes().get(3) == Some(&b'-');
            all.push(line);
            if !more {
                return all.join("\n");
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

async fn greeted(addr: &str) -> Raw {
    let mut c = Raw::connect(addr).await;
    let g = c.reply().await;
    assert!(g.starts_with("220 filter.test"), "{g}");
    let e = c.cmd("EHLO postfix.test").await;
    assert!(e.starts_with("250-filter.test"), "{e}");
    c
}

#[tokio::test]
async fn transaction_reaches_the_handler_with_exact_bytes() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec.clone(), opts()).await;
    let msg = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n";
    injector(&srv.addr)
        .send(
            "alice@example.it",
            &["bob@example.it".into(), "carol@example.it".into()],
            msg,
        )
        .await
        .unwrap();
    let seen = rec.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].mail_from, "alice@example.it");
    assert_eq!(seen[0].rcpt_to, vec!["bob@example.it", "carol@example.it"]);
    assert_eq!(seen[0].data, msg.to_vec());
    assert_eq!(seen[0].queue_id, None);
    srv.shutdown().await;
}

#[tokio::test]
async fn ehlo_advertises_only_what_is_handled() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec, opts()).await;
    let mut c = Raw::connect(&srv.addr).await;
    c.reply().await;
    let e = c.cmd("EHLO postfix.test").await;
    assert!(e.contains("250-PIPELINING"), "{e}");
    assert!(e.contains("250-SIZE 100000"), "{e}");
    assert!(e.contains("250-8BITMIME"), "{e}");
    assert!(
        e.ends_with("250 XFORWARD NAME ADDR PROTO HELO SOURCE IDENT"),
        "{e}"
    );
    assert!(!e.contains("CHUNKING") && !e.contains("STARTTLS") && !e.contains("DSN"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    srv.shutdown().await;
}

#[tokio::test]
async fn first_line_dot_and_empty_message_are_unstuffed() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec.clone(), opts()).await;
    let mut c = greeted(&srv.addr).await;
    assert!(c.cmd("MAIL FROM:<>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"..x\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b".\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    let seen = rec.seen();
    assert_eq!(seen[0].mail_from, "");
    assert_eq!(seen[0].data, b".x\r\n".to_vec());
    assert_eq!(seen[1].data, b"".to_vec());
    srv.shutdown().await;
}

#[tokio::test]
async fn two_transactions_on_one_connection_with_rset() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec.clone(), opts()).await;
    let mut c = greeted(&srv.addr).await;
    // An abandoned transaction, reset.
    assert!(c.cmd("MAIL FROM:<x@example.it>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<y@example.it>").await.starts_with("250"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    for (i, from) in ["a@example.it", "c@example.it"].iter().enumerate() {
        assert!(c
            .cmd(&format!("MAIL FROM:<{from}>"))
            .await
            .starts_with("250"));
        assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
        assert!(c.cmd("DATA").await.starts_with("354"));
        c.send(format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n").as_bytes())
            .await;
        assert_eq!(c.reply().await, "250 2.0.0 Ok");
        assert!(c.cmd("RSET").await.starts_with("250"));
    }
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let seen = rec.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].mail_from, "a@example.it");
    assert_eq!(seen[0].rcpt_to, vec!["b@example.it"]);
    assert_eq!(seen[0].data, b"Subject: 0\r\n\r\nbody 0\r\n".to_vec());
    assert_eq!(seen[1].mail_from, "c@example.it");
    assert_eq!(seen[1].data, b"Subject: 1\r\n\r\nbody 1\r\n".to_vec());
    srv.shutdown().await;
}

#[tokio::test]
async fn xforward_ident_is_captured_as_the_queue_id() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec.clone(), opts()).await;
    let mut c = greeted(&srv.addr).await;
    // What Postfix's smtp client sends with smtp_send_xforward_command=yes.
    assert!(c
        .cmd("XFORWARD NAME=mua.example.it ADDR=192.0.2.7 PORT=4711 PROTO=ESMTP HELO=mua")
        .await
        .starts_with("250"));
    assert!(c
        .cmd("XFORWARD IDENT=4F2Tq85dWhz1xyZ SOURCE=REMOTE")
        .await
        .starts_with("250"));
    assert!(c
        .cmd("MAIL FROM:<a@example.it> SIZE=20 BODY=8BITMIME")
        .await
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: x\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    // XFORWARD attributes last one transaction.
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: y\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    // Unavailable values and inside a transaction.
    assert!(c
        .cmd("XFORWARD NAME=[UNAVAILABLE] ADDR=2001:db8::1 IDENT=ABC+2BD")
        .await
        .starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("250"));
    assert!(c.cmd("XFORWARD IDENT=late").await.starts_with("503"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: z\r\n\r\nhi\r\n.\r\n").await;
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    assert!(c.cmd("XFORWARD BOGUS=1").await.starts_with("501"));
    assert!(c.cmd("XFORWARD NAME").await.starts_with("501"));

    let seen = rec.seen();
    assert_eq!(seen[0].queue_id.as_deref(), Some("4F2Tq85dWhz1xyZ"));
    assert_eq!(seen[0].client.as_deref(), Some("mua.example.it[192.0.2.7]"));
    assert_eq!(seen[1].queue_id, None);
    assert_eq!(seen[1].client, None);
    assert_eq!(seen[2].queue_id.as_deref(), Some("ABC+D"));
    assert_eq!(seen[2].client.as_deref(), Some("[2001:db8::1]"));
    srv.shutdown().await;
}

#[tokio::test]
async fn oversize_message_gets_552_and_never_reaches_the_handler() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(
        rec.clone(),
        ServerOptions {
            max_message_size: 1000,
            ..opts()
        },
    )
    .await;
    // Declared too big at MAIL.
    let mut c = greeted(&srv.addr).await;
    assert!(c
        .cmd("MAIL FROM:<a@example.it> SIZE=5000")
        .await
        .starts_with("552 5.3.4"));
    // Not declared: discovered during DATA, the rest is read and discarded.
    let big = b"0123456789012345678901234567890123456789\r\n".repeat(200);
    let err = injector(&srv.addr)
        .send("a@example.it", &["b@example.it".into()], &big)
        .await;
    // The injector declares SIZE, so this one is refused at MAIL.
    assert!(matches!(err, Err(InjectError::Permanent { .. })), "{err:?}");
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(&big).await;
    c.send(b".\r\n").await;
    assert!(c.reply().await.starts_with("552 5.3.4"));
    // The session goes on.
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(rec.seen().is_empty());
    srv.shutdown().await;
}

#[tokio::test]
async fn handler_tempfail_is_451_for_the_client() {
    let rec = Recorder::new(Mode::Tempfail);
    let srv = start(rec.clone(), opts()).await;
    let err = injector(&srv.addr)
        .send(
            "a@example.it",
            &["b@example.it".into()],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    match err {
        InjectError::Temporary { reason, .. } => {
            assert!(reason.contains("451 4.3.0 store  unavailable"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rec.seen().len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn handler_reject_is_554_for_the_client() {
    let rec = Recorder::new(Mode::Reject);
    let srv = start(rec, opts()).await;
    let err = injector(&srv.addr)
        .send(
            "a@example.it",
            &["b@example.it".into()],
            b"Subject: x\r\n\r\nx\r\n",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InjectError::Permanent { reason, .. } if reason.contains("554 5.7.1 not wanted")),
        "{err:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn handler_panic_is_451_and_the_server_goes_on() {
    let rec = Recorder::new(Mode::PanicOnce);
    let srv = start(rec.clone(), opts()).await;
    let mut c = greeted(&srv.addr).await;
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"Subject: x\r\n\r\nx\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("451 4.3.0"));
    // Same session still usable, and a new connection works.
    assert!(c.cmd("NOOP").await.starts_with("250"));
    injector(&srv.addr)
        .send(
            "a@example.it",
            &["b@example.it".into()],
            b"Subject: y\r\n\r\ny\r\n",
        )
        .await
        .unwrap();
    assert_eq!(rec.seen().len(), 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn garbage_gets_5xx_without_crashing() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec.clone(), opts()).await;
    let mut c = Raw::connect(&srv.addr).await;
    c.reply().await;
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("503"));
    assert!(c.cmd("EHLO postfix.test").await.starts_with("250"));
    for line in [
        "HELLO",
        "\u{1}\u{2}\u{3}",
        "MAIL FROM:",
        "MAIL FROM:<a@b> SMTPUTF8",
        "RCPT TO:<b@example.it>",
        "DATA",
        "BDAT 10 LAST",
        "STARTTLS",
        "AUTH PLAIN AGFAYg==",
        "LHLO x",
        "",
        "MAIL FROM:<a@example.it> FOO=BAR",
    ] {
        let r = c.cmd(line).await;
        assert!(r.starts_with('5'), "{line:?} → {r}");
    }
    // Binary junk and an over-long line.
    c.send(&[0xff, 0xfe, 0x00, b'\r', b'\n']).await;
    assert!(c.reply().await.starts_with('5'));
    let long = format!("NOOP {}\r\n", "x".repeat(10_000));
    c.send(long.as_bytes()).await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    // Still serving.
    assert!(c.cmd("MAIL FROM:<a@example.it>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(b"x\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    assert_eq!(rec.seen().len(), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn too_many_errors_close_the_session() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(
        rec,
        ServerOptions {
            max_errors: 3,
            ..opts()
        },
    )
    .await;
    let mut c = greeted(&srv.addr).await;
    for _ in 0..3 {
        assert!(c.cmd("JUNK").await.starts_with("502"));
    }
    assert!(c.cmd("JUNK").await.starts_with("421"));
    assert_eq!(c.reply().await, "", "connection closed");
    srv.shutdown().await;
}

#[tokio::test]
async fn pipelined_commands_get_their_replies_in_order() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(rec.clone(), opts()).await;
    let mut c = Raw::connect(&srv.addr).await;
    c.reply().await;
    c.send(
        b"EHLO p\r\nMAIL FROM:<a@example.it>\r\nRCPT TO:<b@example.it>\r\n\
          RCPT TO:<c@example.it>\r\nDATA\r\nSubject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    )
    .await;
    assert!(c.reply().await.starts_with("250-filter.test"));
    assert!(c.reply().await.starts_with("250 2.1.0"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("250 2.1.5"));
    assert!(c.reply().await.starts_with("354"));
    assert_eq!(c.reply().await, "250 2.0.0 Ok");
    assert!(c.reply().await.starts_with("221"));
    let seen = rec.seen();
    assert_eq!(seen[0].rcpt_to, vec!["b@example.it", "c@example.it"]);
    assert_eq!(seen[0].data, b"Subject: p\r\n\r\nbody\r\n".to_vec());
    srv.shutdown().await;
}

#[tokio::test]
async fn excess_connections_get_421() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(
        rec,
        ServerOptions {
            max_sessions: 1,
            ..opts()
        },
    )
    .await;
    let mut first = greeted(&srv.addr).await;
    let mut second = Raw::connect(&srv.addr).await;
    assert!(second.reply().await.starts_with("421 4.3.2"));
    assert!(first.cmd("QUIT").await.starts_with("221"));
    drop(first);
    // The slot is free again.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = Raw::connect(&srv.addr).await;
    assert!(third.reply().await.starts_with("220"));
    srv.shutdown().await;
}

#[tokio::test]
async fn idle_clients_are_dropped() {
    let rec = Recorder::new(Mode::Accept);
    let srv = start(
        rec,
        ServerOptions {
            idle_timeout: Duration::from_millis(200),
            ..opts()
        },
    )
    .await;
    let mut c = greeted(&srv.addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.reply().await.starts_with("421 4.4.2"));
    assert_eq!(c.reply().await, "");
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_waits_for_busy_ones() {
    let rec = Recorder::new(Mode::Slow);
    let srv = start(rec.clone(), opts()).await;
    let mut idle = greeted(&srv.addr).await;
    let mut busy = greeted(&srv.addr).await;
    assert!(busy
        .cmd("MAIL FROM:<a@example.it>")
        .await
        .starts_with("250"));
    assert!(busy.cmd("RCPT TO:<b@example.it>").await.starts_with("250"));
    assert!(busy.cmd("DATA").await.starts_with("354"));
    busy.send(b"x\r\n.\r\n").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = srv.addr.clone();
    let stopping = tokio::spawn(srv.shutdown());
    assert!(idle.reply().await.starts_with("421 4.3.2"));
    // The transaction in progress completes normally.
    assert_eq!(busy.reply().await, "250 2.0.0 Ok");
    stopping.await.unwrap();
    assert_eq!(rec.seen().len(), 1);
    assert!(TcpStream::connect(&addr).await.is_err(), "listener closed");
}
