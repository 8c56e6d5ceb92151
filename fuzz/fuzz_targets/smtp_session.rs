// SPDX-License-Identifier: GPL-3.0-or-later
//! The content filter's SMTP server (src/smtp/server.rs): arbitrary client bytes over an
//! in-memory pipe. The session must answer only well-formed replies and end without
//! panicking once the client closes.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pec::smtp::server::{serve_stream, FilterHandler, FilterReply, ServerOptions, Transaction};
use pec::BoxFuture;

include!("session.inc.rs");

/// Answers by the data's length, so that all three replies are exercised.
struct Handler;

impl FilterHandler for Handler {
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply> {
        Box::pin(async move {
            assert!(!tx.rcpt_to.is_empty() && tx.rcpt_to.len() <= 20);
            assert!(tx.data.len() <= 4096);
            match tx.data.len() % 3 {
                0 => FilterReply::Accept,
                1 => FilterReply::Tempfail("busy\r\nwith\0controls".into()),
                _ => FilterReply::Reject(String::new()),
            }
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let opts = ServerOptions {
        max_message_size: 4096,
        max_line_length: 512,
        max_recipients: 20,
        max_errors: 50,
        ..ServerOptions::default()
    };
    let out = drive(data, move |s| {
        serve_stream(s, peer(), Arc::new(Handler), opts)
    });
    assert!(out.starts_with(b"220 "));
    check_replies(&out);
});
