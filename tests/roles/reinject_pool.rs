// SPDX-License-Identifier: GPL-3.0-or-later
//! The reinjection connection pool against a listener that, like Postfix's `smtpd` under
//! master.cf `maxproc`, serves only a few connections at a time: a connection beyond the
//! limit is accepted by the kernel but greeted only when a process is free. Kept (idle)
//! connections hold processes, so the pool must never keep as many as the listener runs —
//! under load, a delivery point whose notice waited a minute for a greeting answered 4xx
//! and Postfix delivered the envelope a second time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pec::smtp::client::MAX_IDLE;
use pec::smtp::{ClientTimeouts, SmtpInjector};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// A listener with `maxproc` "processes": it greets a connection only once a process is
/// free, and a process stays busy until its client goes away. Returns the address and the
/// count of messages taken.
async fn limited_listener(maxproc: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let taken = Arc::new(AtomicUsize::new(0));
    let procs = Arc::new(Semaphore::new(maxproc));
    let counter = taken.clone();
    tokio::spawn(async move {
        loop {
            let permit = procs.clone().acquire_owned().await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                if w.write_all(b"220 limited.example ESMTP\r\n").await.is_err() {
                    return;
                }
                let mut in_data = false;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let reply: &[u8] = if in_data {
                        if line.trim_end() != "." {
                            continue;
                        }
                        in_data = false;
                        counter.fetch_add(1, Ordering::SeqCst);
                        b"250 2.0.0 Ok: queued\r\n"
                    } else {
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        match verb.as_str() {
                            "EHLO" => b"250-limited.example\r\n250 8BITMIME\r\n",
                            "DATA" => {
                                in_data = true;
                                b"354 go ahead\r\n"
                            }
                            "QUIT" => {
                                let _ = w.write_all(b"221 bye\r\n").await;
                                return;
                            }
                            _ => b"250 2.0.0 Ok\r\n",
                        }
                    };
                    if w.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, taken)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_through_a_listener_with_few_processes_all_get_through() {
    // Fewer processes than the old pool kept idle; more than the pool keeps now.
    let maxproc = MAX_IDLE + 2;
    let (addr, taken) = limited_listener(maxproc).await;
    let injector = Arc::new(SmtpInjector::new(addr, "pec.test".into()).with_timeouts(
        ClientTimeouts {
            connect: Duration::from_secs(5),
            command: Duration::from_secs(5),
            data_end: Duration::from_secs(5),
        },
    ));
    let message = b"Subject: pool\r\n\r\nbody\r\n".to_vec();
    let mut sent = 0;
    // Several bursts, each wider than the listener: every burst leaves connections idle in
    // the pool, and the next one must still find processes for its new connections.
    for burst in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..3 * maxproc {
            let (injector, message) = (injector.clone(), message.clone());
            tasks.push(tokio::spawn(async move {
                injector
                    .send("a@pec.test", &[format!("r{burst}.{i}@pec.test")], &message)
                    .await
            }));
        }
        for t in tasks {
            let r = t.await.unwrap();
            assert!(r.is_ok(), "burst {burst}: {r:?}");
            sent += 1;
        }
    }
    assert_eq!(taken.load(Ordering::SeqCst), sent);
}
