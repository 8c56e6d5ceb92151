// SPDX-License-Identifier: GPL-3.0-or-later
//! The delivery point's LMTP server (src/delivery/lmtp.rs): arbitrary client bytes over an
//! in-memory pipe. The session must answer only well-formed replies and end without
//! panicking once the client closes.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pec::smtp::lmtp::{serve_stream, LmtpHandler, LmtpServerOptions, Reply, Transaction};
use pec::BoxFuture;

include!("session.inc.rs");

/// Answers every recipient, or (by the data's length) one reply too few or too many, which
/// the server must make up for.
struct Handler;

impl LmtpHandler for Handler {
    fn deliver<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(async move {
            assert!(!tx.rcpt_to.is_empty() && tx.rcpt_to.len() <= 20);
            assert!(tx.data.len() <= 4096);
            let n = match tx.data.len() % 3 {
                0 => tx.rcpt_to.len(),
                1 => tx.rcpt_to.len() - 1,
                _ => tx.rcpt_to.len() + 1,
            };
            (0..n)
                .map(|i| Reply::new(250 + (i as u16 % 2) * 200, "2.0.0 ok\r\nsplit"))
                .collect()
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let opts = LmtpServerOptions {
        max_message_size: 4096,
        max_line_length: 512,
        max_recipients: 20,
        max_errors: 50,
        ..LmtpServerOptions::default()
    };
    let out = drive(data, move |s| {
        serve_stream(s, peer(), Arc::new(Handler), opts)
    });
    assert!(out.starts_with(b"220 "));
    check_replies(&out);
});
