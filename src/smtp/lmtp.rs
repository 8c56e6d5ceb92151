// SPDX-License-Identifier: GPL-3.0-or-later
//! LMTP (RFC 2033) on both sides of the delivery point ([`crate::delivery`]): the server Postfix's `lmtp` client
//! delivers to, and the client that hands each message to Dovecot's LMTP. Generic: no PEC
//! rule lives here.
//!
//! **Server.** `LHLO`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT` (every other command
//! gets 502). Commands are parsed with `smtp-proto` (as the content filter does), the data
//! is dot-unstuffed by its `DataReceiver` (started as if a CRLF had just been seen, the
//! same workaround as [`crate::smtp::server`]). Recipients are accepted at `RCPT` time and
//! the whole transaction goes to the [`LmtpHandler`] after the end of data, which answers
//! **one reply per recipient, in order** (RFC 2033 §4.2). `PIPELINING`, `8BITMIME`, `SIZE`
//! and `ENHANCEDSTATUSCODES` are advertised; `CHUNKING` is not (Postfix's lmtp client never
//! sends BDAT). A handler that panics, or that returns the wrong number of replies, gives
//! 451 for every recipient it did not answer.
//!
//! **Client.** [`LmtpClient`] connects (TCP or Unix socket), reads the greeting, `LHLO`,
//! `MAIL FROM` (`BODY=8BITMIME` when the server advertises it), one `RCPT TO` per recipient,
//! `MAIL` and the `RCPT`s in one write when the server advertises `PIPELINING` (RFC 2033
//! requires it of every LMTP server), `DATA` when at least one was accepted, the message
//! dot-stuffed byte for byte (no line-end conversion), then one reply per accepted
//! recipient. A recipient refused at `RCPT` keeps that reply. Every step has a timeout;
//! any connection failure gives a 4xx for every recipient without a reply yet, so Postfix
//! retries.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use smtp_proto::Request;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, info, warn};

use super::session::{self, Conn, Dialect, Envelope, Next, SessionError};
use crate::BoxFuture;

/// One reply line: the basic code and the rest of the (last) line, which starts with the
/// enhanced status code when the server uses them (`5.1.1 <u> User doesn't exist`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// 2, 4 or 5.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// The enhanced status code (`x.y.z`) at the start of the text, if any.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.text.split_ascii_whitespace().next()?;
        let mut parts = first.split('.');
        let ok = parts
            .next()
            .is_some_and(|p| p.len() == 1 && p.bytes().all(|b| b.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && parts
                .next()
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && parts.next().is_none();
        ok.then_some(first)
    }

    /// The reply as one line (no CRLF), control characters replaced, bounded.
    pub fn line(&self) -> String {
        let text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(400)
            .collect();
        format!("{} {}", self.code, text)
    }
}

/// One LMTP transaction as received from Postfix.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transaction {
    /// Reverse path, empty for `<>`.
    pub mail_from: String,
    /// Forward paths, in the order accepted.
    pub rcpt_to: Vec<String>,
    /// `BODY=8BITMIME` was given.
    pub eight_bit: bool,
    /// The message, dot-unstuffed, byte for byte as sent. Shared ([`Bytes`]): what is
    /// verified in it is sliced out of it, not copied.
    pub data: Bytes,
}

/// What the LMTP server does with each transaction.
pub trait LmtpHandler: Send + Sync {
    /// Called once per transaction after the end of data; returns one reply per recipient
    /// of `tx.rcpt_to`, in order. A 2xx must mean the recipient's copy is taken care of.
    fn deliver<'a>(&'a self, tx: &'a Transaction) -> BoxFuture<'a, Vec<Reply>>;
}

/// Limits and names of the server: the same as the content filter's.
pub use super::server::ServerOptions as LmtpServerOptions;

/// Serves LMTP on `listener` until `shutdown` completes, then closes idle sessions (421)
/// and waits up to the grace time for the others.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn LmtpHandler>,
    opts: LmtpServerOptions,
    shutdown: impl Future,
) {
    let opts = Arc::new(opts);
    session::serve(listener, &opts, ROLE, shutdown, |peer| {
        Session::open(&opts, &handler, peer)
    })
    .await
}

/// Runs one LMTP session on `stream` (any byte stream: the listener passes its TCP
/// connections, tests and fuzzing an in-memory pipe) until the client quits or the
/// connection ends; `peer` only names the client in the log.
pub async fn serve_stream(
    stream: impl AsyncRead + AsyncWrite + Send + 'static,
    peer: SocketAddr,
    handler: Arc<dyn LmtpHandler>,
    opts: LmtpServerOptions,
) {
    let opts = Arc::new(opts);
    let session = Session::open(&opts, &handler, peer);
    session::serve_stream(stream, peer, &opts, ROLE, session).await
}

const ROLE: &str = "delivery point";

/// The LMTP dialect of the delivery point: the state of one session.
struct Session {
    opts: Arc<LmtpServerOptions>,
    handler: Arc<dyn LmtpHandler>,
    peer: SocketAddr,
    lhlo: bool,
    envelope: Option<Envelope>,
}

impl Dialect for Session {
    async fn command(&mut self, conn: &mut Conn, line: &[u8]) -> Result<Next, SessionError> {
        let request = match Request::parse(&mut line.iter()).map(|r| r.into_owned()) {
            Ok(r) => r,
            Err(e) => return Ok(conn.parse_error(e)),
        };
        Ok(match request {
            Request::Lhlo { .. } => {
                self.envelope = None;
                self.lhlo = true;
                let lhlo = format!(
                    "250-{}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES",
                    self.opts.hostname, self.opts.max_message_size
                );
                conn.reply(&lhlo);
                Next::Continue
            }
            Request::Ehlo { .. } | Request::Helo { .. } => {
                conn.error("500 5.5.1 This is LMTP: use LHLO")
            }
            Request::Data => return self.data(conn).await,
            other => {
                let hello = (!self.lhlo).then_some("LHLO");
                let max = self.opts.max_recipients;
                session::envelope_command(conn, other, &mut self.envelope, hello, max)
            }
        })
    }
}

impl Session {
    /// A new session's state and greeting.
    fn open(
        opts: &Arc<LmtpServerOptions>,
        handler: &Arc<dyn LmtpHandler>,
        peer: SocketAddr,
    ) -> (Self, String) {
        let session = Session {
            opts: opts.clone(),
            handler: handler.clone(),
            peer,
            lhlo: false,
            envelope: None,
        };
        (
            session,
            format!("220 {} LMTP pec delivery point", opts.hostname),
        )
    }

    async fn data(&mut self, conn: &mut Conn) -> Result<Next, SessionError> {
        let Some(env) = self.envelope.as_ref() else {
            return Ok(conn.error("503 5.5.1 Need MAIL command"));
        };
        if env.rcpt_to.is_empty() {
            return Ok(conn.error("503 5.5.1 Need RCPT command"));
        }
        let announced = env.size;
        conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let data = conn.receive_data(announced).await?;
        let Some(env) = self.envelope.take() else {
            return Ok(conn.error("503 5.5.1 Need MAIL command"));
        };
        let n = env.rcpt_to.len();
        let Some(data) = data else {
            for _ in 0..n {
                conn.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            }
            return Ok(Next::Continue);
        };
        let tx = Transaction {
            mail_from: env.mail_from,
            rcpt_to: env.rcpt_to,
            eight_bit: env.eight_bit,
            data: Bytes::from(data),
        };
        conn.flush().await?;
        let replies = self.run_handler(tx).await;
        for r in replies {
            conn.reply(&r.line());
        }
        Ok(Next::Continue)
    }

    /// Runs the handler in its own task (a panic becomes 451 for everyone) and makes sure
    /// there is exactly one reply per recipient.
    async fn run_handler(&mut self, tx: Transaction) -> Vec<Reply> {
        let n = tx.rcpt_to.len();
        let from = tx.mail_from.clone();
        let size = tx.data.len();
        let handler = self.handler.clone();
        let outcome = tokio::spawn(async move { handler.deliver(&tx).await }).await;
        let mut replies = match outcome {
            Ok(r) => r,
            Err(e) => {
                error!(peer = %self.peer, "delivery point: handler failed: {e}");
                Vec::new()
            }
        };
        if replies.len() != n {
            if !replies.is_empty() {
                error!(
                    got = replies.len(),
                    want = n,
                    "delivery point: handler answered the wrong number of recipients"
                );
            }
            replies.truncate(n);
            while replies.len() < n {
                replies.push(Reply::new(451, "4.3.0 Internal error, try again later"));
            }
        }
        info!(
            from = %from,
            nrcpt = n,
            size,
            replies = %replies.iter().map(|r| r.code.to_string()).collect::<Vec<_>>().join(","),
            "delivery point: transaction done"
        );
        replies
    }
}

// ---------------------------------------------------------------------------------------
// Client

/// Where the LMTP server (Dovecot) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpAddr {
    /// `host:port`.
    Tcp(String),
    /// A Unix socket path (`/run/dovecot/lmtp`).
    Unix(PathBuf),
}

impl std::fmt::Display for LmtpAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LmtpAddr::Tcp(a) => f.write_str(a),
            LmtpAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Per-step timeouts of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmtpTimeouts {
    pub connect: Duration,
    pub command: Duration,
    /// Sending the data and reading every per-recipient reply.
    pub data_end: Duration,
}

impl Default for LmtpTimeouts {
    fn default() -> Self {
        LmtpTimeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(60),
            data_end: Duration::from_secs(600),
        }
    }
}

/// The mailbox store's delivery agent, as the delivery point sees it (style rule 7).
pub trait LocalDelivery: Send + Sync {
    /// Delivers `data` to each of `rcpt_to`; one reply per recipient, in order. Never
    /// fails as a whole: an unreachable server gives a 4xx for every recipient.
    fn deliver<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        data: &'a [u8],
        eight_bit: bool,
    ) -> BoxFuture<'a, Vec<Reply>>;
}

/// LMTP client to Dovecot. A connection that served a transaction with a server that
/// advertises `PIPELINING` is kept for the next one (at most [`MAX_IDLE`], each for at
/// most [`MAX_IDLE_TIME`]), reset with `RSET` pipelined with its `MAIL`; one that does not
/// answer that `RSET` with 2xx is dropped before any data and a new one takes over. Clones
/// share the kept connections.
#[derive(Clone)]
pub struct LmtpClient {
    addr: LmtpAddr,
    lhlo: String,
    timeouts: LmtpTimeouts,
    idle: Arc<std::sync::Mutex<Vec<Kept>>>,
}

impl std::fmt::Debug for LmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmtpClient")
            .field("addr", &self.addr)
            .field("lhlo", &self.lhlo)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// An open session past `LHLO`, between transactions.
struct Kept {
    r: Reader,
    w: Writer,
    caps: Vec<String>,
    since: std::time::Instant,
}

/// Most idle connections kept to the server (each holds one of Dovecot's lmtp processes).
const MAX_IDLE: usize = 4;
/// A kept connection idle longer than this is closed instead of reused (Dovecot's own
/// idle limit is minutes).
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// Longest reply line we read.
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 100;

type Reader = BufReader<Box<dyn AsyncRead + Unpin + Send>>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

impl LmtpClient {
    pub fn new(addr: LmtpAddr, lhlo: String) -> Self {
        LmtpClient {
            addr,
            lhlo,
            timeouts: LmtpTimeouts::default(),
            idle: Arc::default(),
        }
    }

    pub fn with_timeouts(mut self, timeouts: LmtpTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The transaction; see the module documentation.
    pub async fn send(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        data: &[u8],
        eight_bit: bool,
    ) -> Vec<Reply> {
        let mut replies: Vec<Option<Reply>> = vec![None; rcpt_to.len()];
        if let Err(reason) = self
            .dialogue(mail_from, rcpt_to, data, eight_bit, &mut replies)
            .await
        {
            warn!(server = %self.addr, "lmtp client: {reason}");
            let text = format!("4.4.2 Local delivery failed, try again later ({reason})");
            for r in replies.iter_mut().filter(|r| r.is_none()) {
                *r = Some(Reply::new(451, text.clone()));
            }
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Reply::new(451, "4.3.0 No reply")))
            .collect()
    }

    /// Greeting, LHLO and QUIT: the server speaks LMTP (`pec check-config --live`).
    pub async fn probe(&self) -> Result<(), String> {
        let (mut r, mut w, _) = self.greeted().await?;
        let _ = command(&mut r, &mut w, "QUIT", self.timeouts.command).await;
        Ok(())
    }

    /// Connects, reads the greeting and says LHLO: the open session and the server's
    /// capabilities; an error when either reply is not 2xx.
    async fn greeted(&self) -> Result<(Reader, Writer, Vec<String>), String> {
        let cmd = self.timeouts.command;
        let (mut r, mut w) = self.connect().await?;
        let greeting = read_reply(&mut r, cmd).await?;
        if greeting.class() != 2 {
            return Err(format!("greeting: {}", greeting.line()));
        }
        let (lhlo, caps) = command(&mut r, &mut w, &format!("LHLO {}", self.lhlo), cmd).await?;
        if lhlo.class() != 2 {
            return Err(format!("LHLO: {}", lhlo.line()));
        }
        Ok((r, w, caps))
    }

    async fn connect(&self) -> Result<(Reader, Writer), String> {
        let t = self.timeouts.connect;
        let timed_out = |_| format!("connect to {} timed out after {t:?}", self.addr);
        match &self.addr {
            LmtpAddr::Tcp(a) => {
                let s = tokio::time::timeout(t, TcpStream::connect(a))
                    .await
                    .map_err(timed_out)?
                    .map_err(|e| format!("connect to {a}: {e}"))?;
                // As the SMTP client (crate::smtp::client): no Nagle delay on the last segment.
                let _ = s.set_nodelay(true);
                let (r, w) = s.into_split();
                Ok((BufReader::new(Box::new(r) as _), Box::new(w)))
            }
            LmtpAddr::Unix(p) => {
                let s = tokio::time::timeout(t, tokio::net::UnixStream::connect(p))
                    .await
                    .map_err(timed_out)?
                    .map_err(|e| format!("connect to unix:{}: {e}", p.display()))?;
                let (r, w) = s.into_split();
                Ok((BufReader::new(Box::new(r) as _), Box::new(w)))
            }
        }
    }

    async fn dialogue(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        data: &[u8],
        eight_bit: bool,
        replies: &mut [Option<Reply>],
    ) -> Result<(), String> {
        loop {
            let session = match self.kept() {
                Some(k) => (k.r, k.w, k.caps, true),
                None => {
                    let (r, w, caps) = self.greeted().await?;
                    (r, w, caps, false)
                }
            };
            match self
                .transaction(session, mail_from, rcpt_to, data, eight_bit, replies)
                .await
            {
                // A kept connection that no longer answers RSET: only commands were sent
                // on it, dropped with it; the next (or a new) one takes over.
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    /// A kept connection not idle for too long, if any.
    fn kept(&self) -> Option<Kept> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(k) = idle.pop() {
            if k.since.elapsed() <= MAX_IDLE_TIME {
                return Some(k);
            }
        }
        None
    }

    /// One transaction on `session` (after `RSET` when it is a kept one): `Err(None)`
    /// when that `RSET` is not answered 2xx, nothing else having been decided.
    async fn transaction(
        &self,
        (mut r, mut w, caps, reset): (Reader, Writer, Vec<String>, bool),
        mail_from: &str,
        rcpt_to: &[String],
        data: &[u8],
        eight_bit: bool,
        replies: &mut [Option<Reply>],
    ) -> Result<(), Option<String>> {
        let cmd = self.timeouts.command;
        let body = if eight_bit && caps.iter().any(|c| c.eq_ignore_ascii_case("8BITMIME")) {
            " BODY=8BITMIME"
        } else {
            ""
        };
        let mail_line = format!("MAIL FROM:<{mail_from}>{body}");
        // RFC 2033 requires PIPELINING of every LMTP server: MAIL and every RCPT go out in
        // one write and their replies are read in order (RFC 2920), one round trip instead
        // of one per command; DATA waits for them (only when a recipient was accepted). A
        // server that does not advertise it gets them one at a time.
        let pipelining = caps.iter().any(|c| c.eq_ignore_ascii_case("PIPELINING"));
        let (mail, rcpt_replies) = if pipelining {
            let group = super::pipelined_group(reset, &mail_line, rcpt_to);
            let sent = write_group(&mut w, &group, "MAIL", cmd).await;
            if reset {
                let rset = match &sent {
                    Ok(()) => read_reply(&mut r, cmd).await.ok(),
                    Err(_) => None,
                };
                if rset.is_none_or(|x| x.class() != 2) {
                    return Err(None);
                }
            }
            sent?;
            let mail = read_reply(&mut r, cmd)
                .await
                .map_err(|e| format!("MAIL: {e}"))?;
            if mail.class() != 2 {
                // A refused sender concerns every recipient alike; the replies to the rest
                // of the group (if the server still sends them) say nothing more.
                for slot in replies.iter_mut() {
                    *slot = Some(mail.clone());
                }
                for _ in rcpt_to {
                    if read_reply(&mut r, cmd).await.is_err() {
                        return Ok(());
                    }
                }
                let _ = command(&mut r, &mut w, "QUIT", cmd).await;
                return Ok(());
            }
            let mut rcpt_replies = Vec::with_capacity(rcpt_to.len());
            for _ in rcpt_to {
                rcpt_replies.push(
                    read_reply(&mut r, cmd)
                        .await
                        .map_err(|e| format!("RCPT: {e}"))?,
                );
            }
            (mail, rcpt_replies)
        } else {
            let (mail, _) = command(&mut r, &mut w, &mail_line, cmd).await?;
            let mut rcpt_replies = Vec::with_capacity(rcpt_to.len());
            if mail.class() == 2 {
                for rcpt in rcpt_to {
                    let (reply, _) =
                        command(&mut r, &mut w, &format!("RCPT TO:<{rcpt}>"), cmd).await?;
                    rcpt_replies.push(reply);
                }
            }
            (mail, rcpt_replies)
        };
        if mail.class() != 2 {
            // A refused sender concerns every recipient alike.
            let _ = command(&mut r, &mut w, "QUIT", cmd).await;
            for slot in replies.iter_mut() {
                *slot = Some(mail.clone());
            }
            return Ok(());
        }
        let mut accepted = Vec::new();
        for (i, reply) in rcpt_replies.into_iter().enumerate() {
            if reply.class() == 2 {
                accepted.push(i);
            } else {
                replies[i] = Some(reply);
            }
        }
        if accepted.is_empty() {
            let _ = command(&mut r, &mut w, "QUIT", cmd).await;
            return Ok(());
        }
        let (go, _) = command(&mut r, &mut w, "DATA", cmd).await?;
        if go.code != 354 {
            let _ = command(&mut r, &mut w, "QUIT", cmd).await;
            for i in accepted {
                replies[i] = Some(go.clone());
            }
            return Ok(());
        }
        let end = self.timeouts.data_end;
        tokio::time::timeout(end, async {
            crate::smtp::stuffing::write(&mut w, &[data], crate::smtp::stuffing::LineEnds::Keep)
                .await
        })
        .await
        .map_err(|_| format!("sending the data timed out after {end:?}"))?
        .map_err(|e| format!("sending the data: {e}"))?;
        let deadline = tokio::time::Instant::now() + end;
        for i in accepted {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let reply = read_reply(&mut r, left)
                .await
                .map_err(|e| format!("reply for <{}> after DATA: {e}", rcpt_to[i]))?;
            replies[i] = Some(reply);
        }
        if pipelining {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(Kept {
                    r,
                    w,
                    caps,
                    since: std::time::Instant::now(),
                });
                return Ok(());
            }
        }
        let _ = command(&mut r, &mut w, "QUIT", Duration::from_secs(5)).await;
        Ok(())
    }
}

impl LocalDelivery for LmtpClient {
    fn deliver<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        data: &'a [u8],
        eight_bit: bool,
    ) -> BoxFuture<'a, Vec<Reply>> {
        Box::pin(self.send(mail_from, rcpt_to, data, eight_bit))
    }
}

/// Sends one command line and reads its reply; also returns the text of every line (the
/// capabilities, for LHLO).
async fn command(
    r: &mut Reader,
    w: &mut Writer,
    line: &str,
    t: Duration,
) -> Result<(Reply, Vec<String>), String> {
    let verb = line.split(' ').next().unwrap_or(line);
    // The line and its CRLF in one write: the socket has no Nagle delay, so two writes
    // would be two segments.
    let mut out = Vec::with_capacity(line.len() + 2);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_group(w, &out, verb, t).await?;
    read_reply_lines(r, t)
        .await
        .map_err(|e| format!("{verb}: {e}"))
}

/// Writes `bytes` (one or more command lines) in one write, within `t`.
async fn write_group(w: &mut Writer, bytes: &[u8], verb: &str, t: Duration) -> Result<(), String> {
    tokio::time::timeout(t, async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await
    .map_err(|_| format!("{verb}: timed out"))?
    .map_err(|e| format!("{verb}: {e}"))
}

async fn read_reply(r: &mut Reader, t: Duration) -> Result<Reply, String> {
    read_reply_lines(r, t).await.map(|(reply, _)| reply)
}

/// Reads one (possibly multi-line) reply.
async fn read_reply_lines(r: &mut Reader, t: Duration) -> Result<(Reply, Vec<String>), String> {
    tokio::time::timeout(t, async {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = (&mut *r)
                .take(MAX_REPLY_LINE as u64)
                .read_until(b'\n', &mut buf)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".to_string());
            }
            if !buf.ends_with(b"\n") {
                return Err("reply line too long".into());
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| format!("malformed reply \"{line}\""))?;
            let sep = line.as_bytes().get(3).copied();
            let text = line.get(4..).unwrap_or("").to_string();
            lines.push(text.clone());
            match sep {
                Some(b'-') if lines.len() < MAX_REPLY_LINES => continue,
                Some(b'-') => return Err("reply has too many lines".into()),
                _ => return Ok((Reply::new(code, text), lines)),
            }
        }
    })
    .await
    .map_err(|_| format!("no reply within {t:?}"))?
}

/// The data as sent after `DATA`: a `.` doubled at the start of every line, the final
/// line end added when missing, then `.` CRLF. Nothing else changes.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    crate::smtp::stuffing::stuffed(&[data], crate::smtp::stuffing::LineEnds::Keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_codes() {
        assert_eq!(
            Reply::new(550, "5.1.1 <u> User doesn't exist").enhanced(),
            Some("5.1.1")
        );
        assert_eq!(Reply::new(250, "2.0.0 <u> Saved").enhanced(), Some("2.0.0"));
        assert_eq!(Reply::new(550, "User unknown").enhanced(), None);
        assert_eq!(Reply::new(550, "").enhanced(), None);
    }

    #[test]
    fn stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
