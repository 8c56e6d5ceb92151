// SPDX-License-Identifier: GPL-3.0-or-later
//! A small SMTP client that hands a message to Postfix's reinjection listener: greeting,
//! EHLO (HELO when EHLO is refused), `MAIL FROM` (with `SIZE=` and `BODY=8BITMIME` when
//! advertised), one `RCPT TO` per recipient, `DATA`, the dot-stuffed message with CRLF line
//! ends. When the listener advertises `PIPELINING` (RFC 2920; Postfix's smtpd does), the
//! commands up to `DATA` go out in one write and their replies are read in order: one round
//! trip instead of one per command. After a successful transaction the connection is kept
//! for the next message (a few idle connections, reset with `RSET` before reuse, pipelined
//! with the commands); a kept connection that turns out to be closed, or does not answer
//! `RSET` with 2xx, is replaced by a fresh one before the message was sent. Connections that
//! failed are closed with `QUIT`.
//!
//! Every step has a timeout, so a silent or stuck listener never hangs the caller. Failures
//! are classified for the caller (who turns them into an SMTP answer to Postfix):
//!
//! * connection refused or lost, timeouts, malformed replies, a refused greeting or
//!   EHLO/HELO, and every 4xx: [`InjectError::Temporary`];
//! * a 5xx to `MAIL`, any `RCPT`, `DATA` or the end of data: [`InjectError::Permanent`]
//!   (the listener will never take this message as it is). One refused recipient fails the
//!   whole injection: the message is handed over for all recipients or for none.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::stuffing::{self, LineEnds};
use super::{InjectError, Injector};
use crate::BoxFuture;

/// Longest reply line we read (RFC 5321 says 512; be lenient, but bounded).
const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one multi-line reply.
const MAX_REPLY_LINES: usize = 100;
/// How long we wait for the answer to `QUIT` (the message is already handed over).
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-step timeouts of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Establishing the TCP connection.
    pub connect: Duration,
    /// Each command and its reply, the greeting included.
    pub command: Duration,
    /// Sending the message and waiting for the reply to the final `.`.
    pub data_end: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> Self {
        ClientTimeouts {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(60),
            data_end: Duration::from_secs(600),
        }
    }
}

/// Idle connections kept for reuse. Each one holds one of the listener's smtpd processes
/// (Postfix's master.cf `maxproc`, 20 in our snippet, 10 in the test harness): with more
/// kept than the listener runs, a new connection would wait for a greeting that never
/// comes. Keep this well below the listener's `maxproc`.
pub const MAX_IDLE: usize = 4;
/// A kept connection idle longer than this is closed instead of reused (Postfix's smtpd
/// drops idle clients after 300 s).
const MAX_IDLE_TIME: Duration = Duration::from_secs(60);

/// Injects messages into an SMTP listener (Postfix's reinjection `smtpd`).
#[derive(Clone)]
pub struct SmtpInjector {
    addr: String,
    helo: String,
    timeouts: ClientTimeouts,
    idle: std::sync::Arc<std::sync::Mutex<Vec<(Conn, Capabilities, std::time::Instant)>>>,
}

impl std::fmt::Debug for SmtpInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpInjector")
            .field("addr", &self.addr)
            .field("helo", &self.helo)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl SmtpInjector {
    /// `addr` is `host:port` (e.g. `127.0.0.1:10027`), `helo` the name we greet with.
    pub fn new(addr: String, helo: String) -> Self {
        SmtpInjector {
            addr,
            helo,
            timeouts: ClientTimeouts::default(),
            idle: Default::default(),
        }
    }

    /// Replaces the default timeouts (10 s connect, 60 s per command, 10 min data end).
    pub fn with_timeouts(mut self, timeouts: ClientTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn timeouts(&self) -> ClientTimeouts {
        self.timeouts
    }

    /// Sends `message` to `rcpt_to` with reverse path `mail_from` (empty for `<>`). Returns
    /// the listener's reply to the end of data (Postfix puts its queue id there) once the
    /// listener has answered 2xx, i.e. has taken responsibility for the message.
    pub async fn send(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[u8],
    ) -> Result<String, InjectError> {
        self.send_parts(mail_from, rcpt_to, &[message]).await
    }

    /// As [`SmtpInjector::send`], for the message made of `parts` one after the other
    /// (written to the socket as they are stuffed, never joined in memory).
    pub async fn send_parts(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        parts: &[&[u8]],
    ) -> Result<String, InjectError> {
        self.transaction(mail_from, rcpt_to, parts)
            .await
            .map_err(|f| match f {
                Failure::Temporary(reason) => InjectError::Temporary {
                    addr: self.addr.clone(),
                    reason,
                },
                Failure::Permanent(reason) => InjectError::Permanent {
                    addr: self.addr.clone(),
                    reason,
                },
            })
    }

    /// Greeting, EHLO (HELO when EHLO is refused) and QUIT on a new connection: the
    /// listener speaks SMTP (`pec check-config --live`). The reason of a failure, as the
    /// client reports it.
    pub async fn probe(&self) -> Result<(), String> {
        let (mut conn, _, _) = self.connection().await.map_err(|f| match f {
            Failure::Temporary(reason) | Failure::Permanent(reason) => reason,
        })?;
        conn.quit().await;
        Ok(())
    }

    async fn transaction(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[&[u8]],
    ) -> Result<String, Failure> {
        check_address(mail_from)?;
        if rcpt_to.is_empty() {
            return Err(Failure::Permanent("no recipients".into()));
        }
        for r in rcpt_to {
            if r.is_empty() {
                return Err(Failure::Permanent("empty recipient address".into()));
            }
            check_address(r)?;
        }

        loop {
            let (mut conn, caps, reset) = self.connection().await?;
            let result = match self
                .dialogue(&mut conn, &caps, reset, mail_from, rcpt_to, message)
                .await
            {
                // A kept connection that no longer answers RSET: nothing was sent on it
                // but commands, dropped with it; the next (or a new) one takes over.
                Err(Stale) => continue,
                Ok(result) => result,
            };
            if result.is_ok() && conn.usable {
                self.keep(conn, caps);
            } else if conn.usable {
                // After a reply we did not want, the dialogue is still in step: say goodbye.
                conn.quit().await;
            }
            return result;
        }
    }

    /// A kept connection or a new one past greeting and EHLO; `true` when it still needs
    /// its `RSET`, sent by the dialogue with its pipelined commands (a kept connection
    /// without `PIPELINING` is reset here, one at a time).
    async fn connection(&self) -> Result<(Conn, Capabilities, bool), Failure> {
        loop {
            let kept = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.pop()
            };
            let Some((mut conn, caps, since)) = kept else {
                break;
            };
            if since.elapsed() > MAX_IDLE_TIME {
                conn.quit().await;
                continue;
            }
            if caps.pipelining {
                return Ok((conn, caps, true));
            }
            match conn.command("RSET", "RSET").await {
                Ok(reply) if reply.class() == 2 => return Ok((conn, caps, false)),
                Ok(_) => conn.quit().await,
                Err(_) => {}
            }
        }
        let stream = tokio::time::timeout(self.timeouts.connect, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| {
                Failure::Temporary(format!(
                    "connect timed out after {:?}",
                    self.timeouts.connect
                ))
            })?
            .map_err(|e| Failure::Temporary(format!("connect: {e}")))?;
        // Commands and data are written whole; Nagle's algorithm would only hold back the
        // last short segment of each until the server's delayed acknowledgement.
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(r),
            writer: w,
            timeouts: self.timeouts,
            usable: true,
        };
        match self.open(&mut conn).await {
            Ok(caps) => Ok((conn, caps, false)),
            Err(e) => {
                if conn.usable {
                    conn.quit().await;
                }
                Err(e)
            }
        }
    }

    /// Keeps a connection after a successful transaction, within the idle limit.
    fn keep(&self, conn: Conn, caps: Capabilities) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, caps, std::time::Instant::now()));
        }
        // Otherwise the connection is dropped; the listener sees the client go away.
    }

    /// Greeting and EHLO (HELO when EHLO is refused) on a new connection.
    async fn open(&self, conn: &mut Conn) -> Result<Capabilities, Failure> {
        let greeting = conn.read_reply(conn.timeouts.command, "greeting").await?;
        if greeting.class() != 2 {
            return Err(Failure::Temporary(format!(
                "greeting refused: {}",
                greeting.text()
            )));
        }

        let ehlo = conn.command(&format!("EHLO {}", self.helo), "EHLO").await?;
        match ehlo.class() {
            2 => Ok(Capabilities::from_ehlo(&ehlo)),
            5 => {
                let helo = conn.command(&format!("HELO {}", self.helo), "HELO").await?;
                if helo.class() != 2 {
                    return Err(Failure::Temporary(format!("HELO refused: {}", helo.text())));
                }
                Ok(Capabilities::default())
            }
            _ => Err(Failure::Temporary(format!("EHLO refused: {}", ehlo.text()))),
        }
    }

    /// The transaction on `conn`, after `RSET` when `reset` (a kept connection with
    /// `PIPELINING`): [`Stale`] when that `RSET` is not answered 2xx.
    async fn dialogue(
        &self,
        conn: &mut Conn,
        caps: &Capabilities,
        reset: bool,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[&[u8]],
    ) -> Result<Result<String, Failure>, Stale> {
        let mut mail = format!("MAIL FROM:<{mail_from}>");
        if caps.size {
            mail.push_str(&format!(
                " SIZE={}",
                stuffing::size(message, LineEnds::Crlf)
            ));
        }
        if caps.eight_bit_mime && message.iter().any(|p| p.iter().any(|b| *b >= 0x80)) {
            mail.push_str(" BODY=8BITMIME");
        }
        if caps.pipelining {
            return self
                .pipelined(conn, reset, &mail, mail_from, rcpt_to, message)
                .await;
        }
        Ok(async {
            let reply = conn.command(&mail, "MAIL FROM").await?;
            expect(&reply, 2, &format!("MAIL FROM:<{mail_from}>"))?;

            for rcpt in rcpt_to {
                let reply = conn
                    .command(&format!("RCPT TO:<{rcpt}>"), "RCPT TO")
                    .await?;
                expect(&reply, 2, &format!("RCPT TO:<{rcpt}>"))?;
            }

            let reply = conn.command("DATA", "DATA").await?;
            expect(&reply, 3, "DATA")?;
            conn.data(message).await
        }
        .await)
    }

    /// [`SmtpInjector::dialogue`] with `PIPELINING`: (`RSET`,) `MAIL` and every `RCPT` in
    /// one write, then their replies in order; the first unwanted one decides. `DATA` waits
    /// for them: it is never sent after a refused recipient (all recipients or none).
    async fn pipelined(
        &self,
        conn: &mut Conn,
        reset: bool,
        mail: &str,
        mail_from: &str,
        rcpt_to: &[String],
        message: &[&[u8]],
    ) -> Result<Result<String, Failure>, Stale> {
        let group = super::pipelined_group(reset, mail, rcpt_to);
        let limit = conn.timeouts.command;
        let sent = conn.write(&group, limit, "MAIL FROM").await;
        if reset {
            let rset = match &sent {
                Ok(()) => conn.read_reply(limit, "RSET").await.ok(),
                Err(_) => None,
            };
            if rset.is_none_or(|r| r.class() != 2) {
                conn.usable = false;
                return Err(Stale);
            }
        }
        Ok(async {
            sent?;
            let mut replies = Vec::with_capacity(rcpt_to.len() + 2);
            replies.push((
                conn.read_reply(limit, "MAIL FROM").await?,
                2,
                format!("MAIL FROM:<{mail_from}>"),
            ));
            for rcpt in rcpt_to {
                replies.push((
                    conn.read_reply(limit, "RCPT TO").await?,
                    2,
                    format!("RCPT TO:<{rcpt}>"),
                ));
            }
            for (reply, class, what) in &replies {
                expect(reply, *class, what)?;
            }
            let reply = conn.command("DATA", "DATA").await?;
            expect(&reply, 3, "DATA")?;
            conn.data(message).await
        }
        .await)
    }
}

impl Injector for SmtpInjector {
    fn inject<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            let reply = self.send(mail_from, rcpt_to, message).await?;
            debug!(addr = %self.addr, %reply, "message injected");
            Ok(())
        })
    }

    fn inject_parts<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        parts: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<(), InjectError>> {
        Box::pin(async move {
            let reply = self.send_parts(mail_from, rcpt_to, parts).await?;
            debug!(addr = %self.addr, %reply, "message injected");
            Ok(())
        })
    }
}

/// Why an injection failed, before the listener's address is added.
#[derive(Debug)]
enum Failure {
    Temporary(String),
    Permanent(String),
}

/// Refuses addresses that would break the command line (CR, LF, angle brackets).
fn check_address(addr: &str) -> Result<(), Failure> {
    if addr
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == b'<' || b == b'>' || b == 0)
    {
        return Err(Failure::Permanent(format!(
            "invalid address \"{}\"",
            addr.escape_debug()
        )));
    }
    Ok(())
}

/// Maps an unexpected reply to a failure: 4xx temporary, 5xx permanent, anything else (a
/// reply of the wrong kind) temporary.
fn expect(reply: &Reply, class: u16, what: &str) -> Result<(), Failure> {
    if reply.class() == class {
        return Ok(());
    }
    let reason = format!("{what}: {}", reply.text());
    match reply.class() {
        5 => Err(Failure::Permanent(reason)),
        _ => Err(Failure::Temporary(reason)),
    }
}

/// One SMTP reply: the code and the text of every line.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / 100
    }

    /// `code text`, the lines of a multi-line reply joined by " / ".
    fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
            .trim_end()
            .to_string()
    }
}

/// What the listener advertised in its EHLO reply that we use.
#[derive(Debug, Default)]
struct Capabilities {
    size: bool,
    eight_bit_mime: bool,
    pipelining: bool,
}

impl Capabilities {
    fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        // The first line is the greeting name; the others are keywords.
        for line in reply.lines.iter().skip(1) {
            let keyword = line
                .split_ascii_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            match keyword.as_str() {
                "SIZE" => caps.size = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "PIPELINING" => caps.pipelining = true,
                _ => {}
            }
        }
        caps
    }
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeouts: ClientTimeouts,
    /// False after an i/o error, a timeout or a malformed reply: the dialogue is out of
    /// step and the connection is only good for closing.
    usable: bool,
}

/// A kept connection that did not answer `RSET` with 2xx.
struct Stale;

impl Conn {
    /// The message and the reply to its end.
    async fn data(&mut self, message: &[&[u8]]) -> Result<String, Failure> {
        let limit = self.timeouts.data_end;
        self.write_stuffed(message, limit).await?;
        let reply = self.read_reply(limit, "end of data").await?;
        expect(&reply, 2, "end of data")?;
        Ok(reply.text())
    }

    /// Writes `bytes` within `limit`.
    async fn write(&mut self, bytes: &[u8], limit: Duration, what: &str) -> Result<(), Failure> {
        let sent = tokio::time::timeout(limit, async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        })
        .await;
        let reason = match sent {
            Ok(Ok(())) => return Ok(()),
            Err(_) => format!("sending {what} timed out after {limit:?}"),
            Ok(Err(e)) => format!("connection lost sending {what}: {e}"),
        };
        self.usable = false;
        Err(Failure::Temporary(reason))
    }

    /// Writes the message made of `parts`, stuffed and CRLF, with the final `.` line,
    /// within `limit`.
    async fn write_stuffed(&mut self, parts: &[&[u8]], limit: Duration) -> Result<(), Failure> {
        let sent = tokio::time::timeout(
            limit,
            stuffing::write(&mut self.writer, parts, LineEnds::Crlf),
        )
        .await;
        let reason = match sent {
            Ok(Ok(())) => return Ok(()),
            Err(_) => format!("sending the message timed out after {limit:?}"),
            Ok(Err(e)) => format!("connection lost sending the message: {e}"),
        };
        self.usable = false;
        Err(Failure::Temporary(reason))
    }

    /// Sends one command line and reads its reply, within the command timeout.
    async fn command(&mut self, line: &str, what: &str) -> Result<Reply, Failure> {
        let limit = self.timeouts.command;
        let mut out = Vec::with_capacity(line.len() + 2);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.write(&out, limit, what).await?;
        self.read_reply(limit, what).await
    }

    /// Reads one (possibly multi-line) reply within `limit`.
    async fn read_reply(&mut self, limit: Duration, what: &str) -> Result<Reply, Failure> {
        let reply = tokio::time::timeout(limit, self.read_reply_inner(what))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Temporary(format!(
                    "no reply to {what} within {limit:?}"
                )))
            });
        if reply.is_err() {
            self.usable = false;
        }
        reply
    }

    async fn read_reply_inner(&mut self, what: &str) -> Result<Reply, Failure> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let line = read_line(&mut self.reader, MAX_REPLY_LINE)
                .await
                .map_err(|e| Failure::Temporary(format!("reading the reply to {what}: {e}")))?
                .ok_or_else(|| {
                    Failure::Temporary(format!("connection closed before the reply to {what}"))
                })?;
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let bad = || {
                Failure::Temporary(format!(
                    "malformed reply to {what}: \"{}\"",
                    line.escape_debug()
                ))
            };
            let digits = line.get(..3).ok_or_else(bad)?;
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let this: u16 = digits.parse().map_err(|_| bad())?;
            if !(200..600).contains(&this) {
                return Err(bad());
            }
            if *code.get_or_insert(this) != this {
                return Err(bad());
            }
            let (more, text) = match line.as_bytes().get(3) {
                None => (false, ""),
                Some(b' ') => (false, &line[4..]),
                Some(b'-') => (true, &line[4..]),
                Some(_) => return Err(bad()),
            };
            lines.push(text.to_string());
            if !more {
                return Ok(Reply { code: this, lines });
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(Failure::Temporary(format!(
                    "reply to {what} longer than {MAX_REPLY_LINES} lines"
                )));
            }
        }
    }

    /// Best-effort `QUIT`: the outcome is already decided.
    async fn quit(&mut self) {
        let r = tokio::time::timeout(QUIT_TIMEOUT, async {
            self.writer.write_all(b"QUIT\r\n").await?;
            self.writer.flush().await?;
            read_line(&mut self.reader, MAX_REPLY_LINE).await
        })
        .await;
        if let Ok(Err(e)) = r {
            debug!("QUIT: {e}");
        }
    }
}

/// Reads one line (up to and including LF) of at most `max` bytes. `None` at a clean end
/// of stream; an error for a longer line or a stream that ends inside a line.
async fn read_line(
    reader: &mut BufReader<OwnedReadHalf>,
    max: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let (found, used) = {
            let buf = reader.fill_buf().await?;
            if buf.is_empty() {
                if line.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside a reply line",
                ));
            }
            match buf.iter().position(|b| *b == b'\n') {
                Some(p) => {
                    line.extend_from_slice(&buf[..=p]);
                    (true, p + 1)
                }
                None => {
                    line.extend_from_slice(buf);
                    (false, buf.len())
                }
            }
        };
        reader.consume(used);
        if line.len() > max {
            warn!(len = line.len(), "SMTP reply line too long");
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("reply line longer than {max} bytes"),
            ));
        }
        if found {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing_and_line_ends() {
        let s = |m: &[u8]| stuffing::stuffed(&[m], LineEnds::Crlf);
        assert_eq!(s(b".a\nb\r\n..c\rd"), b"..a\r\nb\r\n...c\r\nd\r\n.\r\n");
        assert_eq!(
            stuffing::size(&[b".a\nb\r\n..c\rd"], LineEnds::Crlf),
            b".a\r\nb\r\n..c\r\nd\r\n".len() as u64
        );
        assert_eq!(s(b""), b".\r\n");
        assert_eq!(s(b"x\r\n.\r\n"), b"x\r\n..\r\n.\r\n");
    }

    #[test]
    fn addresses_with_line_breaks_are_refused() {
        assert!(check_address("a@b").is_ok());
        assert!(check_address("").is_ok());
        assert!(check_address("a@b>\r\nRCPT TO:<c@d").is_err());
    }
}
