// SPDX-License-Identifier: GPL-3.0-or-later
//! What the content filter's SMTP server and the delivery point's LMTP server share: the
//! accept loop with its session limit and graceful shutdown, and one connection's line
//! handling (buffered, pipelined replies; over-long lines; idle timeouts; the error budget;
//! dot-unstuffed data with a size limit). Each server keeps only its dialect: the commands
//! it accepts and what it does with a transaction ([`Dialect`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::request::receiver::{DataReceiver, DummyDataReceiver};
use smtp_proto::Error as ProtoError;
use smtp_proto::{Request, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME, MAIL_SMTPUTF8};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

use super::ServerOptions;

/// The limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Time allowed for each command line, each read during DATA and each write.
    pub idle_timeout: Duration,
    /// Longest command line, CRLF included.
    pub max_line_length: usize,
    /// Bad commands before the session is closed with 421.
    pub max_errors: usize,
    /// Largest message after dot-unstuffing.
    pub max_message_size: usize,
}

impl Limits {
    pub fn of(opts: &ServerOptions) -> Self {
        Limits {
            idle_timeout: opts.idle_timeout,
            max_line_length: opts.max_line_length,
            max_errors: opts.max_errors,
            max_message_size: opts.max_message_size,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("idle for {0:?}")]
    Timeout(Duration),
    #[error("connection closed during DATA")]
    ClosedInData,
}

/// What the session does after a command.
pub(crate) enum Next {
    Continue,
    Close,
}

/// One server's commands. `command` gets each complete line (CRLF included, never longer
/// than the limit) and answers through [`Conn::reply`] / [`Conn::error`].
pub(crate) trait Dialect {
    fn command(
        &mut self,
        conn: &mut Conn,
        line: &[u8],
    ) -> impl Future<Output = Result<Next, SessionError>> + Send;
}

/// The transaction a `MAIL` command opened, as both dialects keep it.
pub(crate) struct Envelope {
    pub mail_from: String,
    /// `SIZE=` of `MAIL FROM` (0 when not given): the data buffer is sized for it once.
    pub size: usize,
    /// `BODY=8BITMIME` was given.
    pub eight_bit: bool,
    pub rcpt_to: Vec<String>,
}

/// What both dialects answer alike: `MAIL`, `RCPT`, `RSET`, `NOOP`, `QUIT` and commands
/// neither implements. `hello` names the greeting command when none was given yet (`MAIL`
/// then answers 503); `RSET` clears `envelope` (the caller clears any state of its own).
/// The greetings and `DATA` stay with each dialect.
pub(crate) fn envelope_command(
    conn: &mut Conn,
    request: Request<String>,
    envelope: &mut Option<Envelope>,
    hello: Option<&str>,
    max_recipients: usize,
) -> Next {
    match request {
        Request::Mail { from } => {
            if let Some(hello) = hello {
                return conn.error(&format!("503 5.5.1 Send {hello} first"));
            }
            if envelope.is_some() {
                return conn.error("503 5.5.1 Nested MAIL command");
            }
            if from.flags & (MAIL_SMTPUTF8 | MAIL_BODY_BINARYMIME) != 0 {
                return conn.error("555 5.5.4 Unsupported MAIL parameter");
            }
            if from.size > conn.limits.max_message_size {
                return conn.error("552 5.3.4 Message size exceeds fixed maximum message size");
            }
            *envelope = Some(Envelope {
                mail_from: from.address,
                size: from.size,
                eight_bit: from.flags & MAIL_BODY_8BITMIME != 0,
                rcpt_to: Vec::new(),
            });
            conn.reply("250 2.1.0 Ok");
        }
        Request::Rcpt { to } => {
            let Some(env) = envelope.as_mut() else {
                return conn.error("503 5.5.1 Need MAIL command");
            };
            if env.rcpt_to.len() >= max_recipients {
                conn.reply("452 4.5.3 Too many recipients");
            } else {
                env.rcpt_to.push(to.address);
                conn.reply("250 2.1.5 Ok");
            }
        }
        Request::Rset => {
            *envelope = None;
            conn.reply("250 2.0.0 Ok");
        }
        Request::Noop { .. } => conn.reply("250 2.0.0 Ok"),
        Request::Quit => {
            conn.reply("221 2.0.0 Bye");
            return Next::Close;
        }
        other => {
            let line = format!("502 5.5.1 {} not implemented", other.name());
            return conn.error(&line);
        }
    }
    Next::Continue
}

/// One client connection: input not yet processed, replies not yet written.
pub(crate) struct Conn {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    limits: Limits,
    stop: watch::Receiver<bool>,
    errors: usize,
}

impl Conn {
    pub fn new(
        reader: Box<dyn AsyncRead + Unpin + Send>,
        writer: Box<dyn AsyncWrite + Unpin + Send>,
        limits: Limits,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Conn {
            reader,
            writer,
            inbuf: Vec::with_capacity(4096),
            out: Vec::with_capacity(1024),
            limits,
            stop,
            errors: 0,
        }
    }

    /// Sends `greeting`, then hands every command line to `dialect` until the client quits,
    /// the connection ends, the error budget is spent or the server shuts down.
    pub async fn run(
        &mut self,
        greeting: &str,
        dialect: &mut impl Dialect,
    ) -> Result<(), SessionError> {
        self.reply(greeting);
        let mut discarding = false;
        loop {
            if let Some(pos) = self.inbuf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
                if discarding {
                    // The tail of an over-long line, already answered.
                    discarding = false;
                    continue;
                }
                let next = if line.len() > self.limits.max_line_length {
                    self.error("500 5.5.2 Line too long")
                } else {
                    dialect.command(self, &line).await?
                };
                if let Next::Close = next {
                    self.flush().await?;
                    return Ok(());
                }
                continue;
            }
            if self.inbuf.len() > self.limits.max_line_length {
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
    pub fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// Replies to a bad command, and closes the session after too many.
    pub fn error(&mut self, line: &str) -> Next {
        self.errors += 1;
        if self.errors > self.limits.max_errors {
            self.reply("421 4.7.0 Too many errors, closing connection");
            return Next::Close;
        }
        self.reply(line);
        Next::Continue
    }

    /// Replies to a command `smtp-proto` could not parse.
    pub fn parse_error(&mut self, e: ProtoError) -> Next {
        let line = match e {
            ProtoError::UnknownCommand => "502 5.5.2 Command not recognized".to_string(),
            ProtoError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".into(),
            ProtoError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address syntax".into(),
            ProtoError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
            ProtoError::InvalidParameter { param } => {
                format!("501 5.5.4 Invalid parameter {param}")
            }
            ProtoError::UnsupportedParameter { .. } => "555 5.5.4 Unsupported parameter".into(),
            _ => "501 5.5.2 Syntax error".to_string(),
        };
        self.error(&line)
    }

    /// Writes the queued replies.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let idle = self.limits.idle_timeout;
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
        let idle = self.limits.idle_timeout;
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

    /// Reads the data up to the final `.` line, dot-unstuffed. `None` when it exceeded the
    /// size limit (the rest is read and discarded). `announced` is the client's `SIZE=`
    /// (0 when not given).
    pub async fn receive_data(
        &mut self,
        announced: usize,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let mut receiver = DataReceiver::new();
        // smtp-proto's receiver only unstuffs a dot after a CRLF it has seen: start it as if
        // one had just been seen, so that a dot on the very first line is unstuffed and an
        // empty message (`.` right away) ends the data.
        let mut scratch = Vec::new();
        receiver.ingest(&mut b"\r\n".iter(), &mut scratch);
        let max = self.limits.max_message_size;
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
}

/// How many sessions at once, and how long to wait for them at shutdown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission {
    pub max_sessions: usize,
    pub shutdown_grace: Duration,
}

impl Admission {
    pub fn of(opts: &ServerOptions) -> Self {
        Admission {
            max_sessions: opts.max_sessions,
            shutdown_grace: opts.shutdown_grace,
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, running `session` for
/// each (with a receiver that turns true at shutdown) while fewer than `max_sessions` run;
/// further connections get 421. Then tells the sessions to stop and waits up to the grace
/// time for them. Accept errors (e.g. out of file descriptors) are logged and retried.
/// `role` names the server in the log.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    admission: Admission,
    role: &'static str,
    shutdown: impl Future,
    session: F,
) where
    F: Fn(TcpStream, SocketAddr, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = admission.max_sessions.clamp(1, u32::MAX as usize / 2);
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
                warn!("{role}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match sessions.clone().try_acquire_owned() {
            Ok(permit) => {
                let work = session(stream, peer, stop_rx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    work.await;
                });
            }
            Err(_) => {
                warn!(%peer, "{role}: too many sessions ({max}), refusing");
                tokio::spawn(refuse(stream));
            }
        }
    }
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(admission.shutdown_grace, sessions.acquire_many(all)).await;
    match drained {
        Ok(_) => debug!("{role}: every session closed"),
        Err(_) => warn!(
            "{role}: sessions still running after {:?}, leaving them",
            admission.shutdown_grace
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

/// Serves `role`'s dialect on `listener` until `shutdown` completes (see [`accept_loop`]):
/// `open` gives each new session its dialect state and greeting.
pub(crate) async fn serve<D, F>(
    listener: TcpListener,
    opts: &ServerOptions,
    role: &'static str,
    shutdown: impl Future,
    open: F,
) where
    D: Dialect + Send + 'static,
    F: Fn(SocketAddr) -> (D, String),
{
    let limits = Limits::of(opts);
    accept_loop(
        listener,
        Admission::of(opts),
        role,
        shutdown,
        |stream, peer, stop| {
            let (reader, writer) = stream.into_split();
            let conn = Conn::new(Box::new(reader), Box::new(writer), limits, stop);
            run_session(conn, peer, role, open(peer))
        },
    )
    .await
}

/// Runs one session of `role`'s dialect on `stream` (any byte stream: tests and fuzzing
/// use an in-memory pipe) until the client quits or the connection ends.
pub(crate) async fn serve_stream<D: Dialect + Send>(
    stream: impl AsyncRead + AsyncWrite + Send + 'static,
    peer: SocketAddr,
    opts: &ServerOptions,
    role: &'static str,
    session: (D, String),
) {
    let (reader, writer) = tokio::io::split(stream);
    // Never told to stop: it ends with the connection.
    let (_keep, stop) = watch::channel(false);
    let conn = Conn::new(Box::new(reader), Box::new(writer), Limits::of(opts), stop);
    run_session(conn, peer, role, session).await
}

async fn run_session<D: Dialect + Send>(
    mut conn: Conn,
    peer: SocketAddr,
    role: &'static str,
    (mut dialect, greeting): (D, String),
) {
    debug!(%peer, "{role}: session opened");
    match conn.run(&greeting, &mut dialect).await {
        Ok(()) => debug!(%peer, "{role}: session closed"),
        Err(e) => debug!(%peer, "{role}: session ended: {e}"),
    }
}
