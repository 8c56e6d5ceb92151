// SPDX-License-Identifier: GPL-3.0-or-later
//! The SMTP server side of the after-queue content filter: Postfix's `smtp` client (the
//! `content_filter` transport) delivers every queued message here. Generic: it collects
//! one transaction (envelope, XFORWARD attributes, dot-unstuffed data) and asks a
//! [`FilterHandler`] once per transaction what to answer. No PEC rule lives here.
//!
//! Protocol: `EHLO`/`HELO`, `XFORWARD`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`; every
//! other command gets 502. Commands are parsed with `smtp-proto`, the data is dot-unstuffed
//! by its `DataReceiver`. Pipelined commands are handled (replies are buffered and flushed
//! whenever the server would wait for input), so `PIPELINING` is advertised; `CHUNKING`,
//! `DSN`, `SMTPUTF8` and `STARTTLS` are not.
//!
//! Fail closed: a handler that panics, or any internal failure while the message is in our
//! hands, gives 451 so that Postfix keeps the message and retries.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smtp_proto::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::{error, info, warn};

use super::session::{self, Conn, Dialect, Envelope, Next, SessionError};
use crate::BoxFuture;

/// One mail transaction as received from Postfix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    /// Reverse path, empty for the null sender `<>`.
    pub mail_from: String,
    /// Forward paths, in the order received.
    pub rcpt_to: Vec<String>,
    /// The message: dot-unstuffed, exactly the bytes the client sent (CRLF line ends when
    /// the client sent them, as Postfix does), ending with the last line's CRLF.
    /// Shared ([`Bytes`]): what is verified in it is sliced out of it, not copied.
    pub data: Bytes,
    /// Postfix queue id (`XFORWARD IDENT`), when the client sent it.
    pub queue_id: Option<String>,
    /// Original client (`XFORWARD NAME` and `ADDR`, as `name[addr]`), when sent.
    pub client: Option<String>,
}

/// The handler's answer to one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterReply {
    /// `250 2.0.0 Ok`: the message is taken care of (Postfix removes it from its queue).
    Accept,
    /// `451 4.3.0 <reason>`: Postfix keeps the message and retries later.
    Tempfail(String),
    /// `554 5.7.1 <reason>`: Postfix bounces the message.
    Reject(String),
}

/// What the content filter does with each transaction.
pub trait FilterHandler: Send + Sync {
    /// Called once per transaction, after the end of data. Must not return
    /// [`FilterReply::Accept`] before the message has been durably handed on.
    fn handle<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, FilterReply>;
}

/// Limits and names of a listener (the content filter's SMTP, the delivery point's LMTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// Name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message (after dot-unstuffing), advertised as `SIZE`; larger ones get 552.
    pub max_message_size: usize,
    /// Concurrent sessions; further connections get 421 and are closed.
    pub max_sessions: usize,
    /// Time allowed for each command line (and each read during DATA).
    pub idle_timeout: Duration,
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
    /// Recipients per transaction; more get 452.
    pub max_recipients: usize,
    /// Bad commands per session before it is closed with 421.
    pub max_errors: usize,
    /// After shutdown, how long to wait for sessions that are still working.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            hostname: "localhost".into(),
            max_message_size: 160 * 1024 * 1024,
            max_sessions: 100,
            idle_timeout: Duration::from_secs(300),
            max_line_length: 2048,
            max_recipients: 1000,
            max_errors: 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves SMTP on `listener` until `shutdown` completes; then stops accepting, tells idle
/// sessions to close (421) and waits up to [`ServerOptions::shutdown_grace`] for the
/// others. Accept errors (e.g. out of file descriptors) are logged and retried.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn FilterHandler>,
    opts: ServerOptions,
    shutdown: impl Future,
) {
    let opts = Arc::new(opts);
    session::serve(listener, &opts, ROLE, shutdown, |peer| {
        Session::open(&opts, &handler, peer)
    })
    .await
}

/// Runs one SMTP session on `stream` (any byte stream: the listener passes its TCP
/// connections, tests and fuzzing an in-memory pipe) until the client quits or the
/// connection ends; `peer` only names the client in the log.
pub async fn serve_stream(
    stream: impl AsyncRead + AsyncWrite + Send + 'static,
    peer: SocketAddr,
    handler: Arc<dyn FilterHandler>,
    opts: ServerOptions,
) {
    let opts = Arc::new(opts);
    let session = Session::open(&opts, &handler, peer);
    session::serve_stream(stream, peer, &opts, ROLE, session).await
}

const ROLE: &str = "content filter";

/// XFORWARD attributes for the next transaction (Postfix `XFORWARD_README`).
#[derive(Debug, Default, Clone)]
struct XForward {
    name: Option<String>,
    addr: Option<String>,
    ident: Option<String>,
}

impl XForward {
    fn client(&self) -> Option<String> {
        match (&self.name, &self.addr) {
            (Some(n), Some(a)) => Some(format!("{n}[{a}]")),
            (None, Some(a)) => Some(format!("[{a}]")),
            (Some(n), None) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// The SMTP dialect of the content filter: the state of one session.
struct Session {
    opts: Arc<ServerOptions>,
    handler: Arc<dyn FilterHandler>,
    peer: SocketAddr,
    helo: Option<String>,
    xforward: XForward,
    envelope: Option<Envelope>,
}

impl Dialect for Session {
    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Result<Next, SessionError> {
        if is_command(line, b"XFORWARD") {
            return Ok(self.xforward(conn, line));
        }
        let parsed = Request::parse(&mut line.iter()).map(|r| r.into_owned());
        let request = match parsed {
            Ok(r) => r,
            Err(e) => return Ok(conn.parse_error(e)),
        };
        Ok(match request {
            Request::Ehlo { host } => {
                self.reset();
                self.helo = Some(host);
                let ehlo = format!(
                    "250-{}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
                     250-ENHANCEDSTATUSCODES\r\n250 XFORWARD NAME ADDR PROTO HELO SOURCE IDENT",
                    self.opts.hostname, self.opts.max_message_size
                );
                conn.reply(&ehlo);
                Next::Continue
            }
            Request::Helo { host } => {
                self.reset();
                self.helo = Some(host);
                let line = format!("250 {}", self.opts.hostname);
                conn.reply(&line);
                Next::Continue
            }
            Request::Data => return self.data(conn).await,
            Request::Rset => {
                self.reset();
                conn.reply("250 2.0.0 Ok");
                Next::Continue
            }
            other => {
                let hello = self.helo.is_none().then_some("EHLO");
                let max = self.opts.max_recipients;
                session::envelope_command(conn, other, &mut self.envelope, hello, max)
            }
        })
    }
}

impl Session {
    /// A new session's state and greeting.
    fn open(
        opts: &Arc<ServerOptions>,
        handler: &Arc<dyn FilterHandler>,
        peer: SocketAddr,
    ) -> (Self, String) {
        let session = Session {
            opts: opts.clone(),
            handler: handler.clone(),
            peer,
            helo: None,
            xforward: XForward::default(),
            envelope: None,
        };
        (
            session,
            format!("220 {} ESMTP pec content filter", opts.hostname),
        )
    }

    fn reset(&mut self) {
        self.envelope = None;
        self.xforward = XForward::default();
    }

    /// `XFORWARD attr=value ...` (values xtext-encoded; `[UNAVAILABLE]` and `[TEMPUNAVAIL]`
    /// mean unknown). Only before `MAIL`.
    fn xforward(&mut self, conn: &mut Conn, line: &[u8]) -> Next {
        if self.helo.is_none() {
            return conn.error("503 5.5.1 Send EHLO first");
        }
        if self.envelope.is_some() {
            return conn.error("503 5.5.1 XFORWARD inside a mail transaction");
        }
        let text = String::from_utf8_lossy(line);
        let mut attrs = text.split_ascii_whitespace().skip(1).peekable();
        if attrs.peek().is_none() {
            return conn.error("501 5.5.4 Syntax: XFORWARD attribute=value...");
        }
        let mut update = self.xforward.clone();
        for attr in attrs {
            let Some((name, value)) = attr.split_once('=') else {
                return conn.error("501 5.5.4 Syntax: XFORWARD attribute=value...");
            };
            let Some(value) = xtext_decode(value) else {
                return conn.error("501 5.5.4 Bad XFORWARD attribute value");
            };
            let value = match value.as_str() {
                "" | "[UNAVAILABLE]" | "[TEMPUNAVAIL]" => None,
                _ => Some(value),
            };
            match name.to_ascii_uppercase().as_str() {
                "NAME" => update.name = value,
                "ADDR" => update.addr = value,
                "IDENT" => update.ident = value,
                "PROTO" | "HELO" | "SOURCE" | "PORT" => {}
                other => {
                    let line = format!("501 5.5.4 Bad XFORWARD attribute name: {other}");
                    return conn.error(&line);
                }
            }
        }
        self.xforward = update;
        conn.reply("250 2.0.0 Ok");
        Next::Continue
    }

    async fn data(&mut self, conn: &mut Conn) -> Result<Next, SessionError> {
        let Some(env) = self.envelope.as_ref() else {
            return Ok(conn.error("503 5.5.1 Need MAIL command"));
        };
        if env.rcpt_to.is_empty() {
            return Ok(conn.error("554 5.5.1 No valid recipients"));
        }
        let announced = env.size;
        conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let data = conn.receive_data(announced).await?;
        let Some(env) = self.envelope.take() else {
            return Ok(conn.error("503 5.5.1 Need MAIL command"));
        };
        let xforward = std::mem::take(&mut self.xforward);
        let Some(data) = data else {
            warn!(
                queue_id = xforward.ident.as_deref().unwrap_or("-"),
                from = %env.mail_from,
                limit = self.opts.max_message_size,
                "content filter: message over the size limit, refused"
            );
            conn.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(Next::Continue);
        };
        let tx = Transaction {
            mail_from: env.mail_from,
            rcpt_to: env.rcpt_to,
            data: Bytes::from(data),
            queue_id: xforward.ident.clone(),
            client: xforward.client(),
        };
        // Nothing else to say while the handler works: let the client see the data was
        // received, and keep the connection's replies in order.
        conn.flush().await?;
        let reply = self.run_handler(tx).await;
        conn.reply(&reply);
        Ok(Next::Continue)
    }

    /// Runs the handler in its own task, so that a panic becomes a 451 instead of the end
    /// of the session (or of the server).
    async fn run_handler(&mut self, tx: Transaction) -> String {
        let queue_id = tx.queue_id.clone().unwrap_or_else(|| "-".into());
        let from = tx.mail_from.clone();
        let nrcpt = tx.rcpt_to.len();
        let size = tx.data.len();
        let handler = self.handler.clone();
        let outcome = tokio::spawn(async move { handler.handle(&tx).await }).await;
        let (line, verdict) = match outcome {
            Ok(FilterReply::Accept) => ("250 2.0.0 Ok".to_string(), "accepted"),
            Ok(FilterReply::Tempfail(reason)) => {
                (format!("451 4.3.0 {}", reply_text(&reason)), "tempfail")
            }
            Ok(FilterReply::Reject(reason)) => {
                (format!("554 5.7.1 {}", reply_text(&reason)), "rejected")
            }
            Err(e) => {
                error!(
                    queue_id = %queue_id,
                    peer = %self.peer,
                    "content filter: handler failed: {e}"
                );
                (
                    "451 4.3.0 Internal error, try again later".to_string(),
                    "tempfail",
                )
            }
        };
        info!(
            queue_id = %queue_id,
            from = %from,
            nrcpt,
            size,
            reply = %line,
            "content filter: transaction {verdict}"
        );
        line
    }
}

/// Whether `line` is the command `name` (case-insensitive), followed by white space or the
/// end of the line.
fn is_command(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len()
        && line[..name.len()].eq_ignore_ascii_case(name)
        && line.get(name.len()).is_none_or(|b| b.is_ascii_whitespace())
}

/// Decodes RFC 3461 xtext (`+XX` hexadecimal escapes).
fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'+' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A reason made safe for one reply line: no control characters, bounded length.
fn reply_text(reason: &str) -> String {
    let mut s: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    if s.trim().is_empty() {
        s = "Try again later".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("a+2Bb").as_deref(), Some("a+b"));
        assert_eq!(xtext_decode("plain").as_deref(), Some("plain"));
        assert_eq!(xtext_decode("bad+2"), None);
        assert_eq!(xtext_decode("bad+ZZ"), None);
    }

    #[test]
    fn command_names() {
        assert!(is_command(b"xforward NAME=a\r\n", b"XFORWARD"));
        assert!(is_command(b"XFORWARD\r\n", b"XFORWARD"));
        assert!(!is_command(b"XFORWARDX\r\n", b"XFORWARD"));
        assert!(!is_command(b"XFOR\r\n", b"XFORWARD"));
    }

    #[test]
    fn reply_text_is_one_line() {
        assert_eq!(reply_text("a\r\nb"), "a  b");
        assert_eq!(reply_text(""), "Try again later");
    }
}
