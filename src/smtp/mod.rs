// SPDX-License-Identifier: GPL-3.0-or-later
//! The small SMTP pieces the roles share: a client that injects generated messages into
//! Postfix's reinjection listener, the server side of the after-queue content filter, and
//! LMTP (server and client, on the same session core as the SMTP server).

use thiserror::Error;

use crate::BoxFuture;

pub mod client;
pub mod lmtp;
pub mod server;
pub(crate) mod session;
pub mod stuffing;

pub use client::{ClientTimeouts, SmtpInjector};
pub use server::{serve, FilterHandler, FilterReply, ServerOptions, Transaction};

/// The commands of a pipelined transaction up to `DATA`, for one write (RFC 2920; RFC 2033
/// for LMTP): `RSET` first when `reset` (a kept connection), the `MAIL FROM` line `mail`,
/// one `RCPT TO` per recipient, each ended by CRLF. The reinjection client and the LMTP
/// client both send it.
pub(crate) fn pipelined_group(reset: bool, mail: &str, rcpt_to: &[String]) -> Vec<u8> {
    let mut group = Vec::with_capacity(mail.len() + 64 * rcpt_to.len() + 32);
    if reset {
        group.extend_from_slice(b"RSET\r\n");
    }
    group.extend_from_slice(mail.as_bytes());
    group.extend_from_slice(b"\r\n");
    for rcpt in rcpt_to {
        group.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
    }
    group
}

#[derive(Debug, Error)]
pub enum InjectError {
    /// Connection, timeout or 4xx: try again later (the caller tempfails).
    #[error("temporary failure injecting into {addr}: {reason}")]
    Temporary { addr: String, reason: String },
    /// 5xx from the listener: the message will never be accepted as is.
    #[error("permanent failure injecting into {addr}: {reason}")]
    Permanent { addr: String, reason: String },
}

/// Hands a message to the MTA for queueing and delivery. Returns only once the MTA has
/// answered 250 to the end of data, i.e. has taken responsibility for the message.
pub trait Injector: Send + Sync {
    fn inject<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<(), InjectError>>;

    /// As [`Injector::inject`], for the message made of `parts` one after the other (a
    /// header built apart and a large body, say): an injector that writes to a socket
    /// sends them as they are, without joining them in memory.
    fn inject_parts<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        parts: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            let message = parts.concat();
            self.inject(mail_from, rcpt_to, &message).await
        })
    }
}
