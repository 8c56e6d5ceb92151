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

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::{Error as ProtoError, Request, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, error, info, warn};

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
    pub data: Vec<u8>,
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

/// Limits and names of the server.
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
    let max = opts.max_sessions.clamp(1, u32::MAX as usize / 2);
    let sessions = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                warn!("content filter: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let handler = handler.clone();
                let opts = opts.clone();
                let stop = stop_rx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    run_session(stream, peer, handler, opts, stop).await;
                });
            }
            Err(_) => {
                warn!(%peer, "content filter: too many sessions ({max}), refusing");
                tokio::spawn(refuse(stream));
            }
        }
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(opts.shutdown_grace, sessions.acquire_many(all)).await;
    match drained {
        Ok(_) => debug!("content filter: every session closed"),
        Err(_) => warn!(
            "content filter: sessions still running after {:?}, leaving them",
            opts.shutdown_grace
        ),
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        stream.write_all(b"421 4.3.2 Too many connections, try again later\r\n"),
    )
    .await;
}

/// Serves one SMTP session on an already connected `stream` (any byte stream, e.g. an
/// in-memory pipe) until the client quits or closes; `peer` only names it in the logs.
pub async fn serve_stream<S>(
    stream: S,
    peer: SocketAddr,
    handler: Arc<dyn FilterHandler>,
    opts: ServerOptions,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // The sender stays alive for the whole session: no shutdown is ever announced.
    let (_stop_tx, stop_rx) = watch::channel(false);
    run_session(stream, peer, handler, Arc::new(opts), stop_rx).await;
}

async fn run_session<S>(
    stream: S,
    peer: SocketAddr,
    handler: Arc<dyn FilterHandler>,
    opts: Arc<ServerOptions>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut session = Session {
        reader: Box::new(reader),
        writer: Box::new(writer),
        inbuf: Vec::with_capacity(4096),
        out: Vec::with_capacity(1024),
        opts,
        handler,
        stop,
        peer,
        helo: None,
        xforward: XForward::default(),
        envelope: None,
        errors: 0,
    };
    debug!(%peer, "content filter: session opened");
    match session.run().await {
        Ok(()) => debug!(%peer, "content filter: session closed"),
        Err(e) => debug!(%peer, "content filter: session ended: {e}"),
    }
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("idle for {0:?}")]
    Timeout(Duration),
    #[error("connection closed during DATA")]
    ClosedInData,
}

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

struct Envelope {
    mail_from: String,
    rcpt_to: Vec<String>,
    /// `SIZE=` of `MAIL FROM` (0 when not given): the data buffer is sized for it once.
    size: usize,
}

enum Next {
    Continue,
    Close,
}

struct Session {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// Bytes read and not yet processed.
    inbuf: Vec<u8>,
    /// Replies not yet written.
    out: Vec<u8>,
    opts: Arc<ServerOptions>,
    handler: Arc<dyn FilterHandler>,
    stop: watch::Receiver<bool>,
    peer: SocketAddr,
    helo: Option<String>,
    xforward: XForward,
    envelope: Option<Envelope>,
    errors: usize,
}

impl Session {
    async fn run(&mut self) -> Result<(), SessionError> {
        self.reply(&format!(
            "220 {} ESMTP pec content filter",
            self.opts.hostname
        ));
        let mut discarding = false;
        loop {
            if let Some(pos) = self.inbuf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
                if discarding {
                    // The tail of an over-long line, already answered.
                    discarding = false;
                    continue;
                }
                let next = if line.len() > self.opts.max_line_length {
                    self.error("500 5.5.2 Line too long")
                } else {
                    self.command(&line).await?
                };
                if let Next::Close = next {
                    self.flush().await?;
                    return Ok(());
                }
                continue;
            }
            if self.inbuf.len() > self.opts.max_line_length {
                self.inbuf.clear();
                if !discarding {
                    discarding = true;
                    if let Next::Close = self.error("500 5.5.2 Line too long") {
                        self.flush().await?;
                        return Ok(());
                    }
                }
            }
            if !self.fill(true).await? {
                return Ok(());
            }
        }
    }

    /// Queues one reply line (CRLF added).
    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Replies to a bad command and closes the session after too many.
    fn error(&mut self, line: &str) -> Next {
        self.errors += 1;
        if self.errors > self.opts.max_errors {
            self.reply("421 4.7.0 Too many errors, closing connection");
            return Next::Close;
        }
        self.reply(line);
        Next::Continue
    }

    async fn flush(&mut self) -> Result<(), SessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let idle = self.opts.idle_timeout;
        tokio::time::timeout(idle, async {
            self.writer.write_all(&self.out).await?;
            self.writer.flush().await
        })
        .await
        .map_err(|_| SessionError::Timeout(idle))??;
        self.out.clear();
        Ok(())
    }

    /// Flushes pending replies and reads more input. Returns false at the end of the
    /// stream, or (when `interruptible`) after answering 421 to a shutdown.
    async fn fill(&mut self, interruptible: bool) -> Result<bool, SessionError> {
        self.flush().await?;
        let idle = self.opts.idle_timeout;
        self.inbuf.reserve(16 * 1024);
        let mut stop = self.stop.clone();
        let read = tokio::select! {
            r = tokio::time::timeout(idle, self.reader.read_buf(&mut self.inbuf)) => Some(r),
            r = stop.wait_for(|s| *s), if interruptible => {
                drop(r);
                None
            }
        };
        let Some(read) = read else {
            self.reply("421 4.3.2 Service shutting down");
            self.flush().await?;
            return Ok(false);
        };
        match read {
            Err(_) => {
                self.reply("421 4.4.2 Idle timeout, closing connection");
                let _ = self.flush().await;
                Err(SessionError::Timeout(idle))
            }
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
        }
    }

    fn reset(&mut self) {
        self.envelope = None;
        self.xforward = XForward::default();
    }

    async fn command(&mut self, line: &[u8]) -> Result<Next, SessionError> {
        if is_command(line, b"XFORWARD") {
            return Ok(self.xforward(line));
        }
        let parsed = Request::parse(&mut line.iter()).map(|r| r.into_owned());
        let request = match parsed {
            Ok(r) => r,
            Err(e) => return Ok(self.parse_error(e)),
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
                self.reply(&ehlo);
                Next::Continue
            }
            Request::Helo { host } => {
                self.reset();
                self.helo = Some(host);
                let line = format!("250 {}", self.opts.hostname);
                self.reply(&line);
                Next::Continue
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return Ok(self.error("503 5.5.1 Send EHLO first"));
                }
                if self.envelope.is_some() {
                    return Ok(self.error("503 5.5.1 Nested MAIL command"));
                }
                if from.flags & (MAIL_SMTPUTF8 | MAIL_BODY_BINARYMIME) != 0 {
                    return Ok(self.error("555 5.5.4 Unsupported MAIL parameter"));
                }
                if from.size > self.opts.max_message_size {
                    return Ok(
                        self.error("552 5.3.4 Message size exceeds fixed maximum message size")
                    );
                }
                self.envelope = Some(Envelope {
                    mail_from: from.address,
                    rcpt_to: Vec::new(),
                    size: from.size,
                });
                self.reply("250 2.1.0 Ok");
                Next::Continue
            }
            Request::Rcpt { to } => {
                let max = self.opts.max_recipients;
                let Some(env) = self.envelope.as_mut() else {
                    return Ok(self.error("503 5.5.1 Need MAIL command"));
                };
                if env.rcpt_to.len() >= max {
                    self.reply("452 4.5.3 Too many recipients");
                    return Ok(Next::Continue);
                }
                env.rcpt_to.push(to.address);
                self.reply("250 2.1.5 Ok");
                Next::Continue
            }
            Request::Data => return self.data().await,
            Request::Rset => {
                self.reset();
                self.reply("250 2.0.0 Ok");
                Next::Continue
            }
            Request::Noop { .. } => {
                self.reply("250 2.0.0 Ok");
                Next::Continue
            }
            Request::Quit => {
                self.reply("221 2.0.0 Bye");
                Next::Close
            }
            other => {
                let line = format!("502 5.5.1 {} not implemented", other.name());
                self.error(&line)
            }
        })
    }

    fn parse_error(&mut self, e: ProtoError) -> Next {
        let line = match e {
            ProtoError::UnknownCommand => "502 5.5.2 Command not recognized".to_string(),
            ProtoError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".into(),
            ProtoError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address syntax".into(),
            ProtoError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
            ProtoError::InvalidParameter { param } => {
                format!("501 5.5.4 Invalid parameter {param}")
            }
            ProtoError::UnsupportedParameter { .. } => {
                "555 5.5.4 Unsupported parameter".to_string()
            }
            _ => "501 5.5.2 Syntax error".to_string(),
        };
        self.error(&line)
    }

    /// `XFORWARD attr=value ...` (values xtext-encoded; `[UNAVAILABLE]` and `[TEMPUNAVAIL]`
    /// mean unknown). Only before `MAIL`.
    fn xforward(&mut self, line: &[u8]) -> Next {
        if self.helo.is_none() {
            return self.error("503 5.5.1 Send EHLO first");
        }
        if self.envelope.is_some() {
            return self.error("503 5.5.1 XFORWARD inside a mail transaction");
        }
        let text = String::from_utf8_lossy(line);
        let mut attrs = text.split_ascii_whitespace().skip(1).peekable();
        if attrs.peek().is_none() {
            return self.error("501 5.5.4 Syntax: XFORWARD attribute=value...");
        }
        let mut update = self.xforward.clone();
        for attr in attrs {
            let Some((name, value)) = attr.split_once('=') else {
                return self.error("501 5.5.4 Syntax: XFORWARD attribute=value...");
            };
            let Some(value) = xtext_decode(value) else {
                return self.error("501 5.5.4 Bad XFORWARD attribute value");
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
                    return self.error(&line);
                }
            }
        }
        self.xforward = update;
        self.reply("250 2.0.0 Ok");
        Next::Continue
    }

    async fn data(&mut self) -> Result<Next, SessionError> {
        let Some(env) = self.envelope.as_ref() else {
            return Ok(self.error("503 5.5.1 Need MAIL command"));
        };
        if env.rcpt_to.is_empty() {
            return Ok(self.error("554 5.5.1 No valid recipients"));
        }
        let announced = env.size;
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        let data = self.receive_data(announced).await?;
        let Some(env) = self.envelope.take() else {
            return Ok(self.error("503 5.5.1 Need MAIL command"));
        };
        let xforward = std::mem::take(&mut self.xforward);
        let Some(data) = data else {
            warn!(
                queue_id = xforward.ident.as_deref().unwrap_or("-"),
                from = %env.mail_from,
                limit = self.opts.max_message_size,
                "content filter: message over the size limit, refused"
            );
            self.reply("552 5.3.4 Message size exceeds fixed maximum message size");
            return Ok(Next::Continue);
        };
        let tx = Transaction {
            mail_from: env.mail_from,
            rcpt_to: env.rcpt_to,
            data,
            queue_id: xforward.ident.clone(),
            client: xforward.client(),
        };
        // Nothing else to say while the handler works: let the client see the data was
        // received, and keep the connection's replies in order.
        self.flush().await?;
        let reply = self.run_handler(tx).await;
        self.reply(&reply);
        Ok(Next::Continue)
    }

    /// Reads the data up to the final `.` line, dot-unstuffed. `None` when it exceeded the
    /// size limit (the rest is read and discarded).
    async fn receive_data(&mut self, announced: usize) -> Result<Option<Vec<u8>>, SessionError> {
        let mut receiver = DataReceiver::new();
        // Start the receiver as if a CRLF had just been seen, so that a dot on the very
        // first line is unstuffed and an empty message (`.` right away) ends the data.
        let mut scratch = Vec::new();
        receiver.ingest(&mut b"\r\n".iter(), &mut scratch);
        let max = self.opts.max_message_size;
        // Sized once for the announced size (within the limit): no doubling as it grows.
        let mut data = Vec::with_capacity(announced.min(max).saturating_add(4096));
        let mut discard: Option<DummyDataReceiver> = None;
        loop {
            let mut it = self.inbuf.iter();
            let done = match discard.as_mut() {
                Some(d) => d.ingest(&mut it),
                None => receiver.ingest(&mut it, &mut data),
            };
            let used = self.inbuf.len() - it.as_slice().len();
            self.inbuf.drain(..used);
            if discard.is_none() && data.len() > max {
                discard = Some(DummyDataReceiver::new_data(&receiver));
                data = Vec::new();
            }
            if done {
                return Ok(if discard.is_some() { None } else { Some(data) });
            }
            if !self.fill(false).await? {
                return Err(SessionError::ClosedInData);
            }
        }
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
