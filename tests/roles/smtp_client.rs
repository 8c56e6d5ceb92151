// SPDX-License-Identifier: GPL-3.0-or-later
//! `SmtpInjector` against an in-process fake SMTP server that scripts its replies and
//! records what the client sent.

use std::time::{Duration, Instant};

use pec::smtp::{ClientTimeouts, InjectError, Injector, SmtpInjector};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The replies of the fake server, each written as is (CRLF included).
#[derive(Clone)]
struct Script {
    greeting: &'static str,
    ehlo: &'static str,
    helo: &'static str,
    mail: &'static str,
    /// Reply to RCPT TO for an address containing `bad`; others get 250.
    bad_rcpt: &'static str,
    data: &'static str,
    end: &'static str,
    /// Close the connection after reading a few bytes of the message.
    close_in_data: bool,
    /// Accept the connection and never say anything.
    silent: bool,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 fake.example ESMTP\r\n",
            ehlo: "250-fake.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
            helo: "250 fake.example\r\n",
            mail: "250 2.1.0 Ok\r\n",
            bad_rcpt: "550 5.1.1 User unknown\r\n",
            data: "354 End data with <CR><LF>.<CR><LF>\r\n",
            end: "250 2.0.0 Ok: queued as 4XyZ\r\n",
            close_in_data: false,
            silent: false,
        }
    }
}

/// What the client sent: command lines (without CRLF) and the raw DATA bytes (up to and
/// including the final `.` line).
#[derive(Debug, Default)]
struct Transcript {
    commands: Vec<String>,
    data: Vec<u8>,
}

async fn fake_server(script: Script) -> (String, JoinHandle<Transcript>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut t = Transcript::default();
        if script.silent {
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink).await;
            return t;
        }
        w.write_all(script.greeting.as_bytes()).await.unwrap();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return t;
            }
            let line = line.trim_end().to_string();
            let verb = line
                .split([' ', ':'])
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            t.commands.push(line.clone());
            let reply = match verb.as_str() {
                "EHLO" => script.ehlo,
                "HELO" => script.helo,
                "MAIL" => script.mail,
                "RCPT" if line.contains("bad") => script.bad_rcpt,
                "RCPT" => "250 2.1.5 Ok\r\n",
                "DATA" => script.data,
                "RSET" => "250 2.0.0 Ok\r\n",
                "QUIT" => {
                    let _ = w.write_all(b"221 2.0.0 Bye\r\n").await;
                    return t;
                }
                _ => "502 5.5.2 Error\r\n",
            };
            w.write_all(reply.as_bytes()).await.unwrap();
            if verb == "DATA" && reply.starts_with("354") {
                loop {
                    let mut buf = Vec::new();
                    if r.read_until(b'\n', &mut buf).await.unwrap_or(0) == 0 {
                        return t;
                    }
                    t.data.extend_from_slice(&buf);
                    if script.close_in_data {
                        return t;
                    }
                    if buf == b".\r\n" {
                        break;
                    }
                }
                w.write_all(script.end.as_bytes()).await.unwrap();
            }
        }
    });
    (addr, handle)
}

fn injector(addr: String) -> SmtpInjector {
    SmtpInjector::new(addr, "filter.example".into()).with_timeouts(ClientTimeouts {
        connect: Duration::from_secs(2),
        command: Duration::from_millis(500),
        data_end: Duration::from_secs(2),
    })
}

/// Sends MESSAGE from a@example.it to b@example.it through a fake server playing `script`.
async fn send_with(script: Script) -> Result<String, InjectError> {
    let (addr, _server) = fake_server(script).await;
    injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const MESSAGE: &[u8] = b"From: a@example.it\r\nSubject: t\r\n\r\nHello\r\n";

#[tokio::test]
async fn success_sends_the_whole_dialogue() {
    let (addr, server) = fake_server(Script::default()).await;
    let reply = injector(addr)
        .send(
            "a@example.it",
            &rcpts(&["b@example.it", "c@example.it"]),
            MESSAGE,
        )
        .await
        .unwrap();
    assert_eq!(reply, "250 2.0.0 Ok: queued as 4XyZ");
    let t = server.await.unwrap();
    assert_eq!(
        t.commands,
        vec![
            "EHLO filter.example".to_string(),
            format!("MAIL FROM:<a@example.it> SIZE={}", MESSAGE.len()),
            "RCPT TO:<b@example.it>".into(),
            "RCPT TO:<c@example.it>".into(),
            "DATA".into(),
        ],
        "a successful connection is kept for the next message, not closed with QUIT"
    );
    let mut expected = MESSAGE.to_vec();
    expected.extend_from_slice(b".\r\n");
    assert_eq!(t.data, expected);
}

#[tokio::test]
async fn a_kept_connection_is_reused_after_rset() {
    let (addr, server) = fake_server(Script::default()).await;
    let inj = injector(addr);
    inj.send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
    inj.send("a@example.it", &rcpts(&["c@example.it"]), MESSAGE)
        .await
        .unwrap();
    drop(inj);
    let t = server.await.unwrap();
    let size = format!("MAIL FROM:<a@example.it> SIZE={}", MESSAGE.len());
    assert_eq!(
        t.commands,
        vec![
            "EHLO filter.example".to_string(),
            size.clone(),
            "RCPT TO:<b@example.it>".into(),
            "DATA".into(),
            "RSET".into(),
            size,
            "RCPT TO:<c@example.it>".into(),
            "DATA".into(),
        ]
    );
}

/// A listener that advertises PIPELINING and reads `n` command lines before it answers
/// any of them (their replies then go out together), as RFC 2920 lets it: a client that
/// waited for each reply would wait forever. Serves `transactions` transactions on one
/// connection, then hangs up; returns the command lines it read.
async fn batching_server(n: usize, transactions: usize) -> (String, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut seen = Vec::new();
        w.write_all(b"220 fake\r\n").await.unwrap();
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        seen.push(line.trim_end().to_string());
        w.write_all(b"250-fake\r\n250 PIPELINING\r\n")
            .await
            .unwrap();
        for t in 0..transactions {
            // The first group has no RSET; each later one starts with it.
            let group = if t == 0 { n } else { n + 1 };
            let mut replies = String::new();
            for _ in 0..group {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return seen;
                }
                seen.push(line.trim_end().to_string());
                replies.push_str("250 Ok\r\n");
            }
            w.write_all(replies.as_bytes()).await.unwrap();
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
            w.write_all(b"250 queued\r\n").await.unwrap();
        }
        seen
    });
    (addr, handle)
}

#[tokio::test]
async fn with_pipelining_mail_and_rcpts_go_out_before_any_reply() {
    // MAIL and two RCPTs: the server answers only once it has read all three.
    let (addr, server) = batching_server(3, 2).await;
    let inj = injector(addr);
    let to = rcpts(&["b@example.it", "c@example.it"]);
    inj.send("a@example.it", &to, MESSAGE).await.unwrap();
    // The kept connection: RSET goes out with the next group, not alone.
    inj.send("a@example.it", &to, MESSAGE).await.unwrap();
    drop(inj);
    let seen = server.await.unwrap();
    let mail = "MAIL FROM:<a@example.it>".to_string();
    let group = vec![
        mail,
        "RCPT TO:<b@example.it>".into(),
        "RCPT TO:<c@example.it>".into(),
    ];
    let mut expected = vec!["EHLO filter.example".to_string()];
    expected.extend(group.clone());
    expected.push("DATA".into());
    expected.push("RSET".into());
    expected.extend(group);
    expected.push("DATA".into());
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_kept_pipelining_connection_closed_by_the_listener_is_replaced() {
    // Each connection serves one transaction and hangs up; the second message finds the
    // kept connection dead at its RSET and goes out on a new one, once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let mut delivered = 0;
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 fake\r\n").await.unwrap();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-fake\r\n250 PIPELINING\r\n",
                    "DATA" => b"354 go\r\n",
                    _ => b"250 Ok\r\n",
                };
                w.write_all(reply).await.unwrap();
                if verb == "DATA" {
                    loop {
                        let mut buf = Vec::new();
                        r.read_until(b'\n', &mut buf).await.unwrap();
                        if buf == b".\r\n" {
                            break;
                        }
                    }
                    w.write_all(b"250 queued\r\n").await.unwrap();
                    delivered += 1;
                    break; // hang up after the transaction
                }
            }
        }
        delivered
    });
    let inj = injector(addr);
    inj.send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
    inj.send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
    assert_eq!(server.await.unwrap(), 2);
}

#[tokio::test]
async fn a_kept_connection_closed_by_the_listener_is_replaced() {
    // The listener serves one transaction per connection and then hangs up.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let mut connections = 0;
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            connections += 1;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 fake\r\n").await.unwrap();
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250 fake\r\n",
                    "DATA" => b"354 go\r\n",
                    _ => b"250 Ok\r\n",
                };
                w.write_all(reply).await.unwrap();
                if verb == "DATA" {
                    loop {
                        let mut buf = Vec::new();
                        r.read_until(b'\n', &mut buf).await.unwrap();
                        if buf == b".\r\n" {
                            break;
                        }
                    }
                    w.write_all(b"250 queued\r\n").await.unwrap();
                    break; // hang up after the transaction
                }
            }
        }
        connections
    });
    let inj = injector(addr);
    inj.send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
    // The kept connection is dead: RSET fails, a fresh connection carries the message.
    inj.send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
    assert_eq!(server.await.unwrap(), 2);
}

#[tokio::test]
async fn trait_impl_and_null_sender_and_eight_bit() {
    let (addr, server) = fake_server(Script::default()).await;
    let msg = "Subject: caffè\r\n\r\nperché\r\n".as_bytes();
    injector(addr)
        .inject("", &rcpts(&["b@example.it"]), msg)
        .await
        .unwrap();
    let t = server.await.unwrap();
    assert_eq!(
        t.commands[1],
        format!("MAIL FROM:<> SIZE={} BODY=8BITMIME", msg.len())
    );
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo_without_extensions() {
    let script = Script {
        ehlo: "502 5.5.2 Error: command not recognized\r\n",
        ..Script::default()
    };
    let (addr, server) = fake_server(script).await;
    injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
    let t = server.await.unwrap();
    assert_eq!(t.commands[0], "EHLO filter.example");
    assert_eq!(t.commands[1], "HELO filter.example");
    assert_eq!(t.commands[2], "MAIL FROM:<a@example.it>");
}

#[tokio::test]
async fn temporary_failure_at_rcpt_names_the_recipient() {
    let script = Script {
        bad_rcpt: "450 4.2.1 Mailbox busy\r\n",
        ..Script::default()
    };
    let (addr, server) = fake_server(script).await;
    let err = injector(addr)
        .send(
            "a@example.it",
            &rcpts(&["ok@example.it", "bad@example.it"]),
            MESSAGE,
        )
        .await
        .unwrap_err();
    match &err {
        InjectError::Temporary { reason, .. } => {
            assert!(reason.contains("bad@example.it"), "{reason}");
            assert!(reason.contains("450 4.2.1"), "{reason}");
        }
        other => panic!("expected temporary, got {other:?}"),
    }
    let t = server.await.unwrap();
    assert!(!t.commands.iter().any(|c| c == "DATA"), "{:?}", t.commands);
    assert_eq!(t.commands.last().map(String::as_str), Some("QUIT"));
}

#[tokio::test]
async fn permanent_failure_at_rcpt() {
    let (addr, _server) = fake_server(Script::default()).await;
    let err = injector(addr)
        .send("a@example.it", &rcpts(&["bad@example.it"]), MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InjectError::Permanent { reason, .. } if reason.contains("bad@example.it")),
        "{err:?}"
    );
}

#[tokio::test]
async fn permanent_failure_at_end_of_data() {
    let script = Script {
        end: "554 5.7.1 Content rejected\r\n",
        ..Script::default()
    };
    let err = send_with(script).await.unwrap_err();
    assert!(
        matches!(&err, InjectError::Permanent { reason, .. } if reason.contains("554 5.7.1 Content rejected")),
        "{err:?}"
    );
}

#[tokio::test]
async fn temporary_failure_at_end_of_data() {
    let script = Script {
        end: "451 4.3.0 Try later\r\n",
        ..Script::default()
    };
    let err = send_with(script).await.unwrap_err();
    assert!(matches!(err, InjectError::Temporary { .. }), "{err:?}");
}

#[tokio::test]
async fn server_closing_mid_data_is_temporary() {
    let script = Script {
        close_in_data: true,
        ..Script::default()
    };
    let (addr, _server) = fake_server(script).await;
    let big: Vec<u8> = b"line of text\r\n".repeat(100_000);
    let err = injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), &big)
        .await
        .unwrap_err();
    assert!(matches!(err, InjectError::Temporary { .. }), "{err:?}");
}

#[tokio::test]
async fn lines_starting_with_a_dot_are_stuffed() {
    let (addr, server) = fake_server(Script::default()).await;
    let msg = b".first\r\nSubject: x\r\n\r\n.\r\n..two\r\nend.\r\n.";
    injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), msg)
        .await
        .unwrap();
    let t = server.await.unwrap();
    assert_eq!(
        t.data,
        b"..first\r\nSubject: x\r\n\r\n..\r\n...two\r\nend.\r\n..\r\n.\r\n".to_vec()
    );
}

#[tokio::test]
async fn bare_line_feeds_are_normalised() {
    let (addr, server) = fake_server(Script::default()).await;
    let msg = b"Subject: x\n\nline one\nline two\n";
    injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), msg)
        .await
        .unwrap();
    let t = server.await.unwrap();
    assert_eq!(
        t.data,
        b"Subject: x\r\n\r\nline one\r\nline two\r\n.\r\n".to_vec()
    );
    assert_eq!(
        t.commands[1],
        format!(
            "MAIL FROM:<a@example.it> SIZE={}",
            b"Subject: x\r\n\r\nline one\r\nline two\r\n".len()
        )
    );
}

#[tokio::test]
async fn multi_line_greeting() {
    let script = Script {
        greeting: "220-fake.example first line\r\n220-second line\r\n220 ready\r\n",
        ..Script::default()
    };
    let (addr, _server) = fake_server(script).await;
    injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap();
}

#[tokio::test]
async fn refused_greeting_is_temporary() {
    let script = Script {
        greeting: "554 5.3.2 No service\r\n",
        ..Script::default()
    };
    let err = send_with(script).await.unwrap_err();
    assert!(matches!(err, InjectError::Temporary { .. }), "{err:?}");
}

#[tokio::test]
async fn malformed_reply_is_temporary() {
    let script = Script {
        mail: "hello there\r\n",
        ..Script::default()
    };
    let err = send_with(script).await.unwrap_err();
    assert!(
        matches!(&err, InjectError::Temporary { reason, .. } if reason.contains("malformed")),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_server_times_out_as_temporary() {
    let (addr, _server) = fake_server(Script {
        silent: true,
        ..Script::default()
    })
    .await;
    let started = Instant::now();
    let err = injector(addr)
        .send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "took too long");
    assert!(
        matches!(&err, InjectError::Temporary { reason, .. } if reason.contains("greeting")),
        "{err:?}"
    );
}

#[tokio::test]
async fn connection_refused_is_temporary() {
    // Bind, learn the port, close: nothing listens there any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = injector(addr.clone())
        .send("a@example.it", &rcpts(&["b@example.it"]), MESSAGE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, InjectError::Temporary { addr: a, .. } if *a == addr),
        "{err:?}"
    );
}

#[tokio::test]
async fn addresses_that_would_inject_commands_are_refused() {
    let (addr, _server) = fake_server(Script::default()).await;
    let err = injector(addr)
        .send(
            "a@example.it",
            &rcpts(&["b@example.it>\r\nRCPT TO:<evil@example.it"]),
            MESSAGE,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, InjectError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn a_probe_says_ehlo_and_quit_and_names_a_refused_greeting() {
    let (addr, server) = fake_server(Script::default()).await;
    injector(addr).probe().await.unwrap();
    let t = server.await.unwrap();
    assert_eq!(t.commands, ["EHLO filter.example", "QUIT"]);

    let script = Script {
        greeting: "554 5.3.2 not now\r\n",
        ..Script::default()
    };
    let (addr, _server) = fake_server(script).await;
    let e = injector(addr).probe().await.unwrap_err();
    assert!(e.contains("greeting refused: 554"), "{e}");
}
