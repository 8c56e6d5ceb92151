// SPDX-License-Identifier: GPL-3.0-or-later
//! Antivirus: clamd over its INSTREAM protocol (TCP or unix socket), behind a trait.
//!
//! The wire protocol (clamd(8), "INSTREAM"): the client sends `zINSTREAM\0`, then the data as
//! chunks, each prefixed by its length as a big-endian `u32`, then a zero-length chunk. clamd
//! answers one NUL-terminated line: `stream: OK`, `stream: <signature> FOUND`, or a line ending
//! in `ERROR` (for instance `INSTREAM size limit exceeded. ERROR` once the data passes clamd's
//! `StreamMaxLength`, after which clamd closes the connection).

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::BoxFuture;

/// What the scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanVerdict {
    Clean,
    /// Infected, with the signature name exactly as the scanner reports it (for clamd with a
    /// third-party database, e.g. `Eicar-Test-Signature.UNOFFICIAL`).
    Infected(String),
}

#[derive(Debug, Error)]
pub enum AvError {
    #[error("antivirus unreachable at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("antivirus timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("antivirus protocol error: {0}")]
    Protocol(String),
    /// The configured address is neither `tcp:HOST:PORT` nor `unix:/path`.
    #[error("invalid clamd address \"{0}\": expected \"tcp:HOST:PORT\" or \"unix:/path\"")]
    InvalidAddress(String),
}

/// A virus scanner. Every error is a reason to tempfail (fail closed), never to accept.
pub trait Antivirus: Send + Sync {
    fn scan<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<ScanVerdict, AvError>>;
}

/// Largest INSTREAM chunk we send. clamd accepts any chunk up to `StreamMaxLength`; 64 KiB
/// keeps memory flat on both sides.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Longest reply we accept from clamd (a signature name is far shorter).
const MAX_REPLY: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `HOST:PORT`, as `TcpStream::connect` takes it (`[::1]:3310` for IPv6).
    Tcp(String),
    Unix(PathBuf),
}

/// The clamd client: one connection per scan, the whole exchange (connect, send, reply)
/// under one timeout.
///
/// Signature names are reported as clamd sends them, suffix included
/// (`Eicar-Test-Signature.UNOFFICIAL`, `PEC.Test.Marker.UNOFFICIAL`): the suffix tells the
/// operator which database matched, and the name then reads the same in our notices, in the
/// legal log and in clamd's own log.
#[derive(Debug, Clone)]
pub struct Clamd {
    endpoint: Endpoint,
    /// The address as configured, for messages.
    addr: String,
    timeout: Duration,
}

impl Clamd {
    /// `addr` is `tcp:HOST:PORT` or `unix:/path/to/clamd.sock`; `timeout` bounds each whole
    /// scan or ping. Nothing is connected yet.
    pub fn new(addr: &str, timeout: Duration) -> Result<Self, AvError> {
        let invalid = || AvError::InvalidAddress(addr.to_string());
        let endpoint = if let Some(rest) = addr.strip_prefix("tcp:") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(invalid)?;
            let host_ok = !host.is_empty() && host != "[]";
            if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(invalid());
            }
            Endpoint::Tcp(rest.to_string())
        } else if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(invalid());
            }
            Endpoint::Unix(PathBuf::from(path))
        } else {
            return Err(invalid());
        };
        Ok(Clamd {
            endpoint,
            addr: addr.to_string(),
            timeout,
        })
    }

    /// The address as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `zPING\0` → `PONG`: whether clamd is up and answering.
    pub async fn ping(&self) -> Result<(), AvError> {
        self.with_timeout(async {
            let reply = match &self.endpoint {
                Endpoint::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str())
                        .await
                        .map_err(|e| self.unreachable(e))?;
                    ping_on(s).await
                }
                Endpoint::Unix(p) => {
                    let s = UnixStream::connect(p)
                        .await
                        .map_err(|e| self.unreachable(e))?;
                    ping_on(s).await
                }
            }?;
            if reply == "PONG" {
                Ok(())
            } else {
                Err(AvError::Protocol(format!(
                    "unexpected reply to PING: \"{reply}\""
                )))
            }
        })
        .await
    }

    async fn scan_data(&self, data: &[u8]) -> Result<ScanVerdict, AvError> {
        let verdict = self
            .with_timeout(async {
                match &self.endpoint {
                    Endpoint::Tcp(a) => {
                        let s = TcpStream::connect(a.as_str())
                            .await
                            .map_err(|e| self.unreachable(e))?;
                        // INSTREAM is written in short pieces (command, lengths, the end);
                        // with Nagle's algorithm each waits for clamd's delayed ack.
                        let _ = s.set_nodelay(true);
                        instream_on(s, data).await
                    }
                    Endpoint::Unix(p) => {
                        let s = UnixStream::connect(p)
                            .await
                            .map_err(|e| self.unreachable(e))?;
                        instream_on(s, data).await
                    }
                }
            })
            .await;
        match &verdict {
            Ok(v) => {
                tracing::debug!(clamd = %self.addr, size = data.len(), verdict = ?v, "scanned")
            }
            Err(e) => {
                tracing::warn!(clamd = %self.addr, size = data.len(), error = %e, "scan failed")
            }
        }
        verdict
    }

    async fn with_timeout<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, AvError>>,
    ) -> Result<T, AvError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .unwrap_or(Err(AvError::Timeout(self.timeout)))
    }

    fn unreachable(&self, e: std::io::Error) -> AvError {
        AvError::Unreachable {
            addr: self.addr.clone(),
            reason: e.to_string(),
        }
    }
}

impl Antivirus for Clamd {
    fn scan<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<ScanVerdict, AvError>> {
        Box::pin(self.scan_data(data))
    }
}

async fn ping_on<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<String, AvError> {
    s.write_all(b"zPING\0").await.map_err(io_protocol)?;
    s.flush().await.map_err(io_protocol)?;
    read_reply(&mut s).await
}

/// Sends `data` with INSTREAM and reads the verdict. Reading runs alongside writing, so that a
/// reply clamd sends early (the size-limit error, after which it closes the connection) is
/// seen instead of the broken pipe it causes on our side.
async fn instream_on<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    data: &[u8],
) -> Result<ScanVerdict, AvError> {
    let (mut rd, wr) = tokio::io::split(s);
    // The command, the lengths and the data go out in as few writes as fit the buffer (one
    // for a message up to a chunk): without it, four writes and segments for every scan.
    let mut wr = tokio::io::BufWriter::with_capacity(CHUNK_SIZE + 16, wr);
    let send = async {
        wr.write_all(b"zINSTREAM\0").await?;
        for chunk in data.chunks(CHUNK_SIZE) {
            // chunks are at most CHUNK_SIZE long, so the length fits in a u32
            let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            wr.write_all(&len.to_be_bytes()).await?;
            wr.write_all(chunk).await?;
        }
        wr.write_all(&0u32.to_be_bytes()).await?;
        wr.flush().await
    };
    let receive = read_reply(&mut rd);
    tokio::pin!(send, receive);

    let mut sent: Option<std::io::Result<()>> = None;
    let reply = loop {
        tokio::select! {
            r = &mut send, if sent.is_none() => sent = Some(r),
            r = &mut receive => break r,
        }
    };
    match (reply, sent) {
        (Ok(reply), sent) => {
            let verdict = parse_instream_reply(&reply)?;
            match (verdict, sent) {
                // clamd cannot have judged data it has not received in full
                (ScanVerdict::Clean, None | Some(Err(_))) => Err(AvError::Protocol(format!(
                    "clamd answered \"{reply}\" before the end of the stream"
                ))),
                (v, _) => Ok(v),
            }
        }
        (Err(e), Some(Err(w))) => Err(AvError::Protocol(format!(
            "connection lost while sending: {w}; then: {e}"
        ))),
        (Err(e), _) => Err(e),
    }
}

/// Reads one NUL-terminated reply (end of stream also ends it, if something was read).
async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Result<String, AvError> {
    let mut buf = Vec::with_capacity(64);
    let mut byte = [0u8; 256];
    loop {
        let n = r.read(&mut byte).await.map_err(io_protocol)?;
        if n == 0 {
            if buf.is_empty() {
                return Err(AvError::Protocol(
                    "connection closed without a reply".into(),
                ));
            }
            break;
        }
        if let Some(pos) = byte[..n].iter().position(|b| *b == 0) {
            buf.extend_from_slice(&byte[..pos]);
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.len() > MAX_REPLY {
            return Err(AvError::Protocol(format!(
                "reply longer than {MAX_REPLY} bytes"
            )));
        }
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// `stream: OK` → clean, `stream: NAME FOUND` → infected, anything else (`… ERROR`) → error.
fn parse_instream_reply(reply: &str) -> Result<ScanVerdict, AvError> {
    if reply.ends_with("ERROR") {
        return Err(AvError::Protocol(format!("clamd: \"{reply}\"")));
    }
    let Some(result) = reply.strip_prefix("stream: ") else {
        return Err(AvError::Protocol(format!(
            "unexpected reply to INSTREAM: \"{reply}\""
        )));
    };
    if result == "OK" {
        return Ok(ScanVerdict::Clean);
    }
    match result.strip_suffix(" FOUND") {
        Some(name) if !name.trim().is_empty() => Ok(ScanVerdict::Infected(name.trim().to_string())),
        _ => Err(AvError::Protocol(format!(
            "unexpected reply to INSTREAM: \"{reply}\""
        ))),
    }
}

fn io_protocol(e: std::io::Error) -> AvError {
    AvError::Protocol(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let t = Duration::from_secs(1);
        assert!(Clamd::new("tcp:127.0.0.1:3310", t).is_ok());
        assert!(Clamd::new("tcp:[::1]:3310", t).is_ok());
        assert!(Clamd::new("tcp:localhost:3310", t).is_ok());
        assert!(Clamd::new("unix:/run/clamav/clamd.ctl", t).is_ok());
        for bad in [
            "",
            "127.0.0.1:3310",
            "tcp:127.0.0.1",
            "tcp::3310",
            "tcp:127.0.0.1:0",
            "tcp:127.0.0.1:99999",
            "tcp:127.0.0.1:x",
            "unix:",
            "inet:127.0.0.1:3310",
        ] {
            match Clamd::new(bad, t) {
                Err(AvError::InvalidAddress(a)) => assert_eq!(a, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_instream_reply("stream: OK").unwrap(),
            ScanVerdict::Clean
        );
        assert_eq!(
            parse_instream_reply("stream: Eicar-Test-Signature.UNOFFICIAL FOUND").unwrap(),
            ScanVerdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        for bad in [
            "INSTREAM size limit exceeded. ERROR",
            "stream: Can't allocate memory ERROR",
            "stream: FOUND",
            "stream:",
            "PONG",
            "",
        ] {
            assert!(
                matches!(parse_instream_reply(bad), Err(AvError::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}
